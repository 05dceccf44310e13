"""The potential-head interface: a network ``u(x, t)`` or ``u(x, t; k)`` returning shape (n,).

Heads need smooth activations: the HJ loss differentiates through ``grad_x u``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


class PotentialHead(nn.Module):
    """Base class of every head plugin.

    Subclasses take ``dim`` (and ``num_classes`` when ``conditional``) in ``__init__``, store
    their constructor arguments in ``self.head_config`` and implement ``forward(x, t, k)``.
    ``forward`` returns one potential per point, shape (n,), and must be twice differentiable
    in ``x`` (the HJ loss differentiates through ``grad_x u``). A head whose gradient has a
    closed form may also define ``momentum(x, t, k) -> (u, grad_x u)``: the maps use it when no
    graph is needed, instead of autograd. Every map checks these once when it is built
    (:mod:`hjtranslate.contracts`).
    """

    conditional: bool = False
    #: ``fit`` passes its dimension-dependent defaults (``width``, ``depth``, ``quadratic``, ...,
    #: see :func:`~hjtranslate.api.default_head_kwargs`) to a head that sets this and takes them;
    #: any other head gets only the options its caller gives.
    uses_fit_defaults: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.head_config: dict[str, Any] = {}

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


class ComputedOnce:
    """For the parts of a head that derive tensors from their parameters alone (a matrix
    exponential, a rotation solved from its generator): within :func:`parameters_fixed` each is
    computed once per key and grad mode and reused by every call. A training step evaluates
    the head about eight times (collocation points, both maps, the round trip, the gaps); on a
    GPU every extra solve is a chain of small kernels."""

    _once: dict[Any, Any] | None = None

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        if self._once is None:  # outside a training step: always afresh
            return make()
        key = (key, torch.is_grad_enabled())  # a value made without a graph cannot train
        if key not in self._once:
            self._once[key] = make()
        return self._once[key]


@contextlib.contextmanager
def parameters_fixed(module: nn.Module) -> Iterator[None]:
    """While ``module``'s parameters stay as they are (one forward pass of a training step, which
    builds one graph), its :class:`ComputedOnce` parts compute what they derive from them once."""
    parts = [m for m in module.modules() if isinstance(m, ComputedOnce)]
    for part in parts:
        part._once = {}
    try:
        yield
    finally:
        for part in parts:
            part._once = None
