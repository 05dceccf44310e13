"""hjtranslate: optimal transport maps with Hamilton-Jacobi characteristic flows."""

from __future__ import annotations

__version__ = "0.3.0"

from typing import Any  # noqa: E402

from . import registry  # noqa: E402
from .api import fit  # noqa: E402
from .costs import Cost  # noqa: E402
from .encoders import Encoder  # noqa: E402
from .heads import PotentialHead  # noqa: E402
from .hjmap import CheckpointError, HJMap  # noqa: E402
from .registry import PluginError  # noqa: E402


def get_cost(name: str, **kwargs: Any) -> Cost:
    """A registered cost by name, e.g. ``get_cost("pnorm", p=3)``."""
    return registry.create("cost", name, **kwargs)


def get_encoder(name: str, **kwargs: Any) -> Encoder:
    return registry.create("encoder", name, **kwargs)


def get_head(name: str, **kwargs: Any) -> PotentialHead:
    return registry.create("head", name, **kwargs)


__all__ = [
    "CheckpointError", "Cost", "Encoder", "HJMap", "PluginError", "PotentialHead",
    "__version__", "fit", "get_cost", "get_encoder", "get_head", "registry",
]
