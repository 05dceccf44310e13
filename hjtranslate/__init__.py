"""hjtranslate: optimal transport maps with Hamilton-Jacobi characteristic flows."""

from __future__ import annotations

__version__ = "0.3.0"

import importlib  # noqa: E402
import importlib.util  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from . import registry  # noqa: E402
from .registry import PluginError  # noqa: E402

if TYPE_CHECKING:
    from .api import fit
    from .costs import Cost
    from .encoders import Encoder
    from .heads import PotentialHead
    from .hjmap import CheckpointError, HJMap

# Imported on first use (PEP 562): the command line starts without torch, so that a Ctrl-C
# while torch loads is the CLI's one-line "interrupted", not a traceback through the import.
_LAZY = {"fit": ".api", "Cost": ".costs", "Encoder": ".encoders", "PotentialHead": ".heads",
         "CheckpointError": ".hjmap", "HJMap": ".hjmap"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)  # hjtranslate.costs, .metrics, ...
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def get_cost(name: str, **kwargs: Any) -> Cost:
    """A registered cost by name, e.g. ``get_cost("pnorm", p=3)``."""
    return registry.create("cost", name, **kwargs)


def get_encoder(name: str, **kwargs: Any) -> Encoder:
    """A registered encoder by name, e.g. ``get_encoder("vae")`` (the shipped VAE) or
    ``get_encoder("identity", dim=3)``."""
    return registry.create("encoder", name, **kwargs)


def get_head(name: str, **kwargs: Any) -> PotentialHead:
    """A registered potential head by name, e.g. ``get_head("mlp", dim=2, width=64)``."""
    return registry.create("head", name, **kwargs)


__all__ = [
    "CheckpointError", "Cost", "Encoder", "HJMap", "PluginError", "PotentialHead",
    "__version__", "fit", "get_cost", "get_encoder", "get_head", "registry",
]
