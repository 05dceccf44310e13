"""The potential-head interface: a network ``u(x, t)`` or ``u(x, t; k)`` returning shape (n,).

Heads need smooth activations: the HJ loss differentiates through ``grad_x u``.
"""

from __future__ import annotations

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
