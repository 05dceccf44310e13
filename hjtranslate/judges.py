"""Judges: timm classifiers of MNIST and Fashion-MNIST that score translated images.

A judge folder holds ``model.safetensors``, ``config.json`` (the timm architecture name and
keyword arguments, the input normalisation, the class names) and a model card. ``load_judge``
takes a folder or one of the shipped names, ``"mnist"`` and ``"fashion-mnist"``
(``judge-<name>`` in ``hjtranslate.shipped.models_dir()``). Images are float
``(n, 1, 28, 28)`` (or ``(n, 28, 28)``) in [0, 1]; uint8 images are divided by 255.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checks import (
    dry_build_misfit,
    is_real,
    non_finite_tensors,
    safetensors_shapes,
    shared_as_umask_says,
    unusable_file,
)
from .data import to_float
from .images import IMAGE_SIZE
from .shipped import models_dir

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}
# The architecture used by `hjtranslate train judges`: a narrow ResNet-10-T (1.3M parameters),
# whose stride-4 stem leaves 7x7 maps at 28x28 input; fast enough to train on a CPU in minutes.
DEFAULT_ARCH = "resnet10t"
DEFAULT_KWARGS: dict[str, Any] = {"channels": [32, 64, 128, 256]}
#: timm.create_model keywords that load weights or settings from elsewhere
REACHING_KWARGS = {"checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                   "cache_dir", "pretrained_strict"}


def build_classifier(arch: str = DEFAULT_ARCH, **kwargs: Any) -> nn.Module:
    """A randomly initialised one-channel, ten-class timm model."""
    import timm

    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items() if v is not None}
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("in_chans", 1)
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown model names
        raise ValueError(f"Cannot build timm model {arch!r}: {exc}") from exc


def _as_images(images: torch.Tensor) -> torch.Tensor:
    x = to_float(images)
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"Judges take grey 28x28 images shaped (n, 1, 28, 28) or (n, 28, 28), got "
            f"{tuple(images.shape)}."
        )
    return x


def _check_sizes(config: dict[str, Any], weights: Path, redo: str) -> None:
    """Refuse a judge config whose model would not have the weights file's tensor shapes before
    the model is built (:func:`dry_build_misfit`, every name compared); where that cannot be
    judged, the real build and the strict loading judge as before."""
    from .hjmap import CheckpointError

    saved = safetensors_shapes(weights)
    if saved is None:  # a damaged file: the loading names it
        return
    misfit = dry_build_misfit(
        lambda: build_classifier(config["architecture"], **config.get("model_kwargs", {})),
        saved, all_names=True)
    if misfit:
        raise CheckpointError(
            f"The weights in {weights} do not fit {config['architecture']} "
            f"{config.get('model_kwargs', {})} of its {CONFIG_FILE} ({misfit}). {redo}")


class Judge(nn.Module):
    """A classifier with its input normalisation; ``predict``, ``features``, ``accuracy``."""

    def __init__(self, model: nn.Module, config: dict[str, Any], batch_size: int = 256) -> None:
        super().__init__()
        self.model = model
        self.config = dict(config)
        norm = self.config.get("normalize", {"mean": 0.5, "std": 0.5})
        self.mean, self.std = float(norm["mean"]), float(norm["std"])
        self.batch_size = batch_size
        self.classes = list(self.config.get("classes", [str(i) for i in range(10)]))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_classes(self) -> int | None:
        """How many classes the classifier scores (its logits' width): the timm model's own
        count, else its config's; None where neither says."""
        n = getattr(self.model, "num_classes", None)
        if n is None:
            n = (self.config.get("model_kwargs") or {}).get("num_classes")
        return int(n) if isinstance(n, int) and not isinstance(n, bool) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images already in [0, 1], ``(n, 1, 28, 28)`` (no checks; for training)."""
        return self.model((x - self.mean) / self.std)

    def _batched(self, images: torch.Tensor, fn) -> torch.Tensor:
        x = _as_images(images)
        out = [fn(x[i: i + self.batch_size].to(self.device)) for i in range(0, len(x), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched(images, self.forward)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted labels ``(n,)`` and their softmax probabilities ``(n,)``."""
        conf, labels = self.logits(images).softmax(-1).max(-1)
        return labels, conf

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(n, f)`` (the pooled input of the classifier layer)."""

        def fn(x: torch.Tensor) -> torch.Tensor:
            feats = self.model.forward_features((x - self.mean) / self.std)
            return self.model.forward_head(feats, pre_logits=True)

        return self._batched(images, fn)

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        pred, _ = self.predict(images)
        return float((pred.cpu() == labels.cpu()).float().mean())

    def save_pretrained(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        shared_as_umask_says(folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        return folder


def load_judge(name_or_path: str | Path, device: str | torch.device = "cpu",
               remedy: str | None = None) -> Judge:
    """A judge from a folder, or a shipped one by name: ``"mnist"`` or ``"fashion-mnist"``.
    ``remedy``: what a damaged folder's error advises (by default: retrain the shipped judges)."""
    from .hjmap import CheckpointError, load_safetensors, read_json_object

    key = str(name_or_path)
    folder = models_dir() / f"judge-{key}" if key in CLASSES else Path(key).expanduser()
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        for file in (folder / CONFIG_FILE, folder / WEIGHTS_FILE):
            if why := unusable_file(file):
                raise CheckpointError(f"{why}.")
        if key in CLASSES:
            raise FileNotFoundError(
                f"The shipped {key} judge is missing from {folder} (it needs {CONFIG_FILE} and "
                f"{WEIGHTS_FILE}): reinstall hjtranslate, or train it with `hjtranslate train "
                "judges`, or pass a judge folder.")
        raise FileNotFoundError(
            f"No judge in {folder} (it needs {CONFIG_FILE} and {WEIGHTS_FILE}). Pass a judge "
            f"folder or one of {', '.join(CLASSES)} (the shipped judges).")
    redo = remedy or ("Download it again, or retrain it: `hjtranslate train judges` writes the "
                      "shipped ones (models/judge-mnist, models/judge-fashion-mnist).")
    config = read_json_object(folder / CONFIG_FILE, redo)
    normalize = config.get("normalize", {"mean": 0.5, "std": 0.5})
    if (not isinstance(config.get("architecture"), str)
            or not isinstance(config.get("model_kwargs", {}), dict)
            or not (isinstance(normalize, dict) and {"mean", "std"} <= set(normalize))):
        raise CheckpointError(
            f"{folder / CONFIG_FILE} does not describe a judge (it needs an 'architecture' name, "
            f"'model_kwargs' settings and, if any, a 'normalize' with 'mean' and 'std'). {redo}"
        )
    # timm reads files and Hub repos that a model name or keyword points it to: a judge's
    # config (a stranger's folder) names a model of timm's registry and its shape, no more
    reaching = sorted(set(config.get("model_kwargs", {})) & REACHING_KWARGS)
    if ":" in config["architecture"] or reaching:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: a judge names a timm model and its settings; "
            + (f"{config['architecture']!r} names a source instead (hf-hub:, local-dir:)"
               if ":" in config["architecture"] else
               f"model_kwargs {reaching} would make timm read other files")
            + f", which a judge folder may not. {redo}")
    _check_settings(config, folder / CONFIG_FILE, redo)
    _check_sizes(config, folder / WEIGHTS_FILE, redo)
    try:
        model = build_classifier(config["architecture"], **config.get("model_kwargs", {}))
    except (TypeError, ValueError) as exc:  # an unknown architecture or setting
        raise CheckpointError(f"{folder / CONFIG_FILE}: {exc} {redo}") from None
    state = load_safetensors(folder / WEIGHTS_FILE, redo)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise CheckpointError(
            f"The weights in {folder / WEIGHTS_FILE} do not fit {config['architecture']} "
            f"{config.get('model_kwargs', {})} of its {CONFIG_FILE}: {' '.join(first)} {redo}"
        ) from exc
    broken = non_finite_tensors(state.items())
    if broken:  # every image would be judged class 0, with confidence NaN
        raise CheckpointError(f"The weights in {folder / WEIGHTS_FILE} hold NaN or infinite values "
                              f"({broken}). {redo}")
    judge = Judge(model, config).to(device).eval()
    for p in judge.parameters():
        p.requires_grad_(False)
    return judge


def _check_settings(config: dict[str, Any], path: Path, redo: str) -> None:
    """The input normalisation (finite numbers, a positive spread) and the class names (a list
    of names) of a judge's config: a spread of 0 judged every image class 0."""
    from .hjmap import CheckpointError

    norm = config.get("normalize", {"mean": 0.5, "std": 0.5})
    if not (isinstance(norm, dict) and all(is_real(norm.get(k)) and math.isfinite(norm[k])
                                           for k in ("mean", "std")) and norm["std"] > 0):
        raise CheckpointError(f"{path}: 'normalize' must hold a finite 'mean' and a positive "
                              f"'std' (numbers), got {norm!r}. {redo}")
    classes = config.get("classes", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: 'classes' must be a list of class names, got "
                              f"{classes!r}. {redo}")


class _JudgeFeatures(nn.Module):
    """Adapter: torchmetrics' FID calls ``feature(images) -> (n, f)``."""

    def __init__(self, judge: Judge) -> None:
        super().__init__()
        self.judge = judge
        with torch.no_grad():
            self.num_features = int(judge.features(torch.zeros(1, 1, 28, 28)).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.judge.features(x).double().cpu()  # the metric's running sums are on the CPU


def frechet_distance(judge: Judge, real_images: torch.Tensor, fake_images: torch.Tensor,
                     batch_size: int = 256) -> float:
    """Frechet distance between the judge's penultimate features of two image sets, computed by
    torchmetrics' ``FrechetInceptionDistance`` with the judge as its feature extractor."""
    return frechet_distances(judge, real_images, [fake_images], batch_size)[0]


def frechet_distances(judge: Judge, real_images: torch.Tensor, fakes: list[torch.Tensor],
                      batch_size: int = 256) -> list[float]:
    """``frechet_distance`` of each image set in ``fakes`` to the same real images, whose
    features are computed once."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real = _as_images(real_images)
    fakes = [_as_images(f) for f in fakes]
    if len(real) < 2 or any(len(f) < 2 for f in fakes):
        raise ValueError("The Frechet distance needs at least 2 real and 2 fake images.")
    if not all(torch.isfinite(x).all() for x in (real, *fakes)):
        # LAPACK crashes the process on NaN (a segmentation fault in its matrix square root)
        raise ValueError("The Frechet distance got images with NaN or infinite pixels (a map or "
                         "VAE that gives NaN).")
    # sync_on_compute=False: evaluation runs on one process of a multi-process job, and a
    # cross-process sync there would wait for ranks that are not computing it.
    # reset_real_features=False: reset() forgets the fakes only.
    metric = FrechetInceptionDistance(feature=_JudgeFeatures(judge), normalize=True,
                                      input_img_size=(1, 28, 28), sync_on_compute=False,
                                      reset_real_features=False)
    for i in range(0, len(real), batch_size):
        metric.update(real[i: i + batch_size], real=True)
    out = []
    for fake in fakes:
        metric.reset()
        for i in range(0, len(fake), batch_size):
            metric.update(fake[i: i + batch_size], real=False)
        out.append(float(metric.compute()))
    return out
