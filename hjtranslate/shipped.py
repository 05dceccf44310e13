"""Where the shipped models are (the VAE, the two judges and the digits-to-fashion pipeline).

In a checkout (a clone, or its editable install) they are the checkout's ``models/``; a wheel
installs the same folder as the data of the ``hjtranslate_models`` package, so that the app,
``translate`` and the task defaults work after ``pip install`` as on a fresh clone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_root() -> Path:
    import hjtranslate

    return Path(hjtranslate.__file__).resolve().parents[1]


def is_checkout() -> bool:
    """Whether hjtranslate runs from a source checkout (its ``pyproject.toml`` beside the package)."""
    return (_package_root() / "pyproject.toml").is_file()


def models_dir() -> Path:
    """The folder of the shipped models: the checkout's ``models/``, else the installed copy."""
    if not is_checkout():
        spec = importlib.util.find_spec("hjtranslate_models")
        if spec is not None and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations))).resolve()
    return _package_root() / "models"


def training_root() -> Path:
    """Where ``train vae`` and ``train judges`` write by default: the checkout's ``models/`` (they
    replace the shipped models, which a checkout's commands read), else ``./models`` (never into
    an installed package)."""
    return models_dir() if is_checkout() else Path("models").resolve()
