"""The encoder interface: images (or raw vectors) to flat latent vectors and back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Encoder:
    """Base class of every encoder plugin.

    In a :class:`~hjtranslate.pipeline.TranslationPipeline` an encoder is the part in ``vae/``:
    ``encode`` takes grey images ``(n, 1, 28, 28)`` in ``[0, 1]`` and returns ``(n,
    latent_dim)`` latents, ``decode`` the reverse. It is saved with ``save_pretrained(folder)``
    (JSON and safetensors files only: those are what the Hub publishing uploads) and loaded
    with the classmethod ``from_pretrained(folder, device=...)``; ``to(device)`` moves it. The
    pipeline's index records the plugin's name, so the same plugin loads it again."""

    name: str = "encoder"
    latent_dim: int | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _label(cls) -> str:
        """Its name in messages: the plugin's own ``name``, else its class's."""
        return repr(cls.name) if cls.name != Encoder.name else cls.__name__

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> Encoder:
        raise NotImplementedError(
            f"The {cls._label()} encoder cannot be loaded from a folder: an encoder that is part "
            "of a pipeline defines from_pretrained(folder, device) and save_pretrained(folder).")

    def save_pretrained(self, folder: str | Path) -> None:
        raise NotImplementedError(
            f"The {self._label()} encoder cannot be saved: an encoder that is part of a pipeline "
            "defines save_pretrained(folder) and from_pretrained(folder, device).")

    def to(self, device: str | torch.device) -> Encoder:
        return self
