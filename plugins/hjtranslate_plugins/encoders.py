"""The identity encoder: raw vectors are their own latents."""

from __future__ import annotations

from typing import Any

import torch

from hjtranslate.encoders import Encoder


class IdentityEncoder(Encoder):
    name = "identity"

    def __init__(self, dim: int | None = None) -> None:
        self.latent_dim = dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def config(self) -> dict[str, Any]:
        return {"dim": self.latent_dim}
