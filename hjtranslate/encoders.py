"""The encoder interface: images (or raw vectors) to flat latent vectors and back."""

from __future__ import annotations

from typing import Any

import torch


class Encoder:
    """Base class of every encoder plugin."""

    name: str = "encoder"
    latent_dim: int | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {}
