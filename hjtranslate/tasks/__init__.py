"""Training tasks of ``hjtranslate train NAME``: each module defines ``add_arguments(parser)``
and ``run(args) -> dict`` (the metrics it wrote). Modules are imported only when chosen."""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, tuple[str, str]] = {
    "gaussians": ("gaussians", "Gaussian pair with a known OT map (L2-UVP benchmark)"),
    "toy2d": ("toy2d", "2-D pairs: swissroll, moons, 8gaussians, checkerboard, circles, ..."),
    "digits-to-fashion": ("digits_to_fashion", "class-conditional MNIST <-> Fashion-MNIST in a VAE latent"),
    "vae": ("vae", "the shared AutoencoderKL for MNIST and Fashion-MNIST"),
    "judges": ("judges", "timm classifiers that score translations"),
    "color-transfer": ("color_transfer", "RGB colour transfer between two images"),
}


def load_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}. Available tasks: {', '.join(TASKS)}.")
    return importlib.import_module(f"hjtranslate.tasks.{TASKS[name][0]}")
