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
    A head whose gradient has a closed form may also define ``momentum(x, t, k) -> (u,
    grad_x u)``: the maps use it when no graph is needed, instead of autograd.
    """

    conditional: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.head_config: dict[str, Any] = {}

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError
