"""``TranslationPipeline``: the VAE, the transport map and (optionally) two judges, as one folder.

Like a diffusers pipeline, a saved pipeline is a folder of parts plus an index::

    hjtranslate_pipeline.json   {"_class_name": "TranslationPipeline", "vae": "vae", "map": "map",
                                 "encoder": "vae" (the encoder plugin that loads vae/),
                                 "judge_source": "judge_source" | null, "judge_target": ... | null,
                                 "source_dataset", "target_dataset", "source_class_names", ...}
    vae/                        a diffusers AutoencoderKL folder with latent_stats.json (or
                                another encoder plugin's save_pretrained folder)
    map/                        an HJMap folder (config.json, model.safetensors)
    judge_source/, judge_target/  judge folders as ``hjtranslate.judges.load_judge`` reads them
    README.md                   a model card with Hub metadata

Translation: images -> VAE latents (``VAEEncoder.encode``) -> ``map.forward(z, k)`` (or
``map.backward`` for target -> source) -> ``VAEEncoder.decode``. Class ``k`` goes to class ``k``.

Input conversion (files, arrays, photos of a page -> 28x28 grey images) is ``hjtranslate.images``;
its rules are that module's docstring.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import __version__, registry
from .checks import (
    check_device,
    check_dtype,
    check_folder_path,
    hub_refusal_advice,
    hub_unreachable,
    is_int,
    is_real,
    missing_reason,
    network_errors,
    process_alive,
    refuse_offline_force_download,
    settings_text,
    shared_as_umask_says,
    stays_inside,
    unusable_file,
)
from .contracts import check_image_encoder
from .encoders import Encoder
from .hjmap import (
    PIPELINE_INDEX_FILE,
    CheckpointError,
    HJMap,
    as_hub_id,
    describes_a_map,
    folder_config,
    is_run_folder,
    read_json_object,
    refuse_newer,
)
from .images import FRAMINGS, IMAGE_SIZE, is_blank, preprocess, to_pil
from .modelcard import HUB_DATASETS, card_name, hub_metric_names, plugin_line, revision_argument
from .shipped import models_dir

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from .judges import Judge

INDEX_FILE = PIPELINE_INDEX_FILE
CLASS_NAME = "TranslationPipeline"
VAE_STATS_FILE = "latent_stats.json"
#: files that unpickle on load: never copied into a pipeline folder
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: what ``from_pretrained`` downloads from a Hub repo (the same patterns online and offline)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.md"]


#: the share of real inputs of each side that ``calibrate_other_side`` lets be taken for the
#: other side's
OTHER_SIDE_FALSE_ALARMS = 0.01
#: the most frames ``morph_steps`` asks for (the app shows 8; each frame is a VAE decode)
MAX_MORPH_STEPS = 256
#: what ``TranslationPipeline.__call__`` returns its translations as (diffusers' output_type)
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def default_model_path() -> Path:
    """The shipped pipeline: ``digits-to-fashion`` in the shipped models' folder."""
    return models_dir() / "digits-to-fashion"


def shipped_pipeline(option: str = "--model") -> Path:
    """The shipped pipeline's folder, or a ``FileNotFoundError`` that says how to do without it;
    ``option``: how the caller names another pipeline."""
    folder = default_model_path()
    if not (folder / INDEX_FILE).is_file():
        raise FileNotFoundError(
            f"The shipped pipeline {folder} is missing. Pass {option} a pipeline folder or Hub id "
            "(`hjtranslate train digits-to-fashion --export DIR` writes one), or reinstall "
            "hjtranslate (a clone's models/, or the wheel, holds it).")
    return folder


@dataclass
class TranslationOutput:
    """What ``TranslationPipeline.__call__`` returns, one entry per input image.

    ``images``: translations, 28x28 grey PIL images (``output_type="pil"``), or one array
    ``(n, 28, 28, 1)`` in [0, 1] (``"np"``), one tensor ``(n, 1, 28, 28)`` (``"pt"``) or the
    latents ``(n, latent_dim)`` (``"latent"``). ``frames``: with ``morph_steps=N``, N decoded
    frames per image from the input (t=0) to the translation (t=t_f), a list of N images per
    image, or an array ``(n, N, 28, 28, 1)`` / tensor ``(n, N, 1, 28, 28)`` / latents ``(n, N,
    latent_dim)`` for the other output types. ``source_classes`` / ``target_classes``: the class
    of each input and of its translation (identical: class k goes to class k). ``confidences``:
    the probability that the output side's judge (the target judge forward, the source judge
    backward) gives that class to each translation (``None`` without that judge).
    ``detection_confidences``: the input side's judge's probability of each detected class
    (``None`` when classes were given). ``notes``: per image, the conversions applied to it
    (the rules of ``hjtranslate.images``). ``latents``: the translations' latents ``(n, latent_dim)``, on
    the pipeline's device.

    As diffusers' outputs, it reads by name (``out["images"]``) or position (``out[0]``: the
    images), and ``to_tuple()`` gives the fields that are set, in order.
    """

    images: list[PILImage]
    source_classes: list[int]
    target_classes: list[int]
    confidences: list[float] | None = None
    frames: list[list[PILImage]] | None = None
    detection_confidences: list[float] | None = None
    notes: list[list[str]] = field(default_factory=list)
    latents: torch.Tensor | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in their order (``images`` first)."""
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key not in {f.name for f in fields(self)} or getattr(self, key) is None:
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]



def _check_other_side(other_side: Any) -> dict[str, float] | None:
    """A pipeline's ``other_side`` thresholds (or None), checked: two finite numbers at least."""
    if other_side is None:
        return None
    if not isinstance(other_side, dict) or not all(
            is_real(other_side.get(k)) and np.isfinite(other_side[k])
            for k in ("source_below", "target_above")):
        raise ValueError(f"other_side must hold the numbers source_below and target_above "
                         f"(from calibrate_other_side), got {other_side!r}.")
    return {k: float(v) for k, v in other_side.items() if is_real(v)}


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)



# -- loading helpers ----------------------------------------------------------------------------
def _subpath(root: Path, name: Any, key: str) -> Path:
    """A part's folder named in the index; refuses names, and links, that leave the pipeline
    folder."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{INDEX_FILE}: {key!r} must be a subfolder name, got {name!r}.")
    part = root / name
    if part.exists() and not stays_inside(part, root):
        raise CheckpointError(f"{part} ({key!r}) is a link to {part.resolve()}, outside the "
                              "pipeline folder: copy that folder in instead of linking it.")
    return part


def _check_vae_folder(folder: Path, what: str) -> None:
    if why := unusable_file(folder / "config.json"):
        raise CheckpointError(f"{what}: {why}.")
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{what}: {folder} holds no config.json; expected a diffusers AutoencoderKL folder."
        )
    if not (folder / VAE_STATS_FILE).is_file():
        raise CheckpointError(
            f"{what}: {folder} holds no {VAE_STATS_FILE}: the map works in the VAE's "
            "standardised latents, so the pipeline needs the statistics it was trained with "
            "(VAEEncoder.fit_latent_stats / save_latent_stats)."
        )


def _hub_snapshot(repo_id: str, revision: str | None, cache_dir: Any, local_files_only: bool,
                  token: Any, force_download: bool = False) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import HFValidationError

    try:
        refuse_offline_force_download(force_download, repr(repo_id))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    unreachable = hub_unreachable(local_files_only)
    if unreachable and force_download:
        raise CheckpointError(f"force_download: {repo_id!r} cannot be downloaded ({unreachable}).")
    local_files_only = local_files_only or unreachable is not None
    try:
        return Path(snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            token=token, allow_patterns=HUB_PATTERNS, force_download=force_download,
        ))
    except HFValidationError:
        raise CheckpointError(
            f"{repo_id!r} is neither a local folder nor a valid Hub repo id."
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{repo_id!r} is neither a local folder nor a Hub repository that exists "
            "(or you lack access to it)."
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"Revision {revision!r} does not exist in {repo_id!r}.") from None
    except LocalEntryNotFoundError:
        if local_files_only and unreachable is None:
            raise CheckpointError(
                f"{repo_id!r} is not in the local cache, and local_files_only=True kept it from "
                "being downloaded: drop local_files_only, or pass a local folder."
            ) from None
        raise CheckpointError(
            f"{repo_id!r} is not in the local cache and the Hub cannot be reached "
            f"({unreachable or 'offline mode?'}). Download it once while online, or pass a local "
            "folder."
        ) from None
    except (HfHubHTTPError, *network_errors(os_errors=False)) as exc:  # e.g. the server is down
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"Could not download {repo_id!r}: {first}{hub_refusal_advice(exc)}") from None


_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _interrupted_saves(folder: Path) -> list[tuple[Path, str]]:
    """The leftovers of saves of ``folder`` whose process has gone (killed between its steps):
    ``(path, "tmp" | "old")``, the earlier pipeline being an "old" one."""
    found: list[tuple[Path, str]] = []
    if not folder.parent.is_dir():
        return found
    prefix = f".{folder.name}."
    for path in folder.parent.iterdir():
        if not path.name.startswith(prefix):
            continue
        kind, _, tag = path.name[len(prefix):].partition("-")
        pid, _, rest = tag.partition("-")
        host = rest.partition("-")[2]  # a writer on another machine may be alive: not ours
        if (kind in ("tmp", "old") and pid.isdigit() and host in (_HOST, "")
                and not process_alive(int(pid))):
            found.append((path, kind))
    return found


def _clear_interrupted_saves(folder: Path) -> None:
    """Put back an earlier pipeline that a killed save had moved aside (a kill between its two
    renames left no ``folder``), and remove what killed saves left."""
    for path, kind in sorted(_interrupted_saves(folder), key=lambda p: _mtime(p[0])):
        try:
            if kind == "old" and not folder.exists():
                path.rename(folder)
            else:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:  # a save beside this one cleared it first
            pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def looks_like_hub_id(text: str) -> bool:
    """``user/name``: one slash, not a relative, absolute or home path, no OS separator."""
    return not (text.count("/") != 1 or text.startswith((".", "/", "~"))
                or os.path.sep != "/" and os.path.sep in text)


def _resolve_folder(name_or_path: str | Path, what: str, **hub: Any) -> Path:
    """A local folder, or a Hub id downloaded into the cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists():
        raise CheckpointError(f"{what}: {text} is a file, not a folder.")
    if path.is_symlink():  # a link that leads nowhere: not a Hub id either
        raise CheckpointError(f"{what}: {text} {missing_reason(path)}.")
    if not looks_like_hub_id(text):
        moved = [p for p, kind in _interrupted_saves(path) if kind == "old"]
        hint = (f" (a save into it was killed: {moved[-1]} holds the pipeline it replaced; "
                f"rename it back to {path.name}, or save again)" if moved else "")
        raise CheckpointError(f"{what}: no such folder: {text}{hint}")
    try:
        return _hub_snapshot(text, **hub)
    except CheckpointError as exc:  # name both readings of the argument, each once
        raise CheckpointError(
            f"{what}: there is no local folder {path.absolute()}, and as a Hub id: "
            f"{as_hub_id(exc)}") from None


#: the names of a pipeline's sides where no dataset is known (from_components)
NEUTRAL_DATASETS = ("source", "target")


def _default_datasets(map: HJMap, encoder: Any) -> tuple[str, str]:
    """The datasets a pipeline translates between, where from_components is not told them."""
    recorded = map.encoder_config.get("datasets") if isinstance(map.encoder_config, dict) else None
    if isinstance(recorded, list) and len(recorded) == 2 and all(isinstance(d, str) for d in recorded):
        return recorded[0].replace("_", "-"), recorded[1].replace("_", "-")  # fashion_mnist
    stats = getattr(encoder, "latent_stats", None) or {}
    if isinstance(stats, dict) and stats.get("input_transform") == "pad":
        return "mnist", "fashion-mnist"  # `train vae`'s kind: 28x28, both datasets
    return NEUTRAL_DATASETS


def _sentence(exc: BaseException) -> str:
    """An error's message ending in a full stop, to append advice to."""
    text = str(exc).strip()
    return text if text.endswith(".") else f"{text}."


def _copy_part(src: Path, dst: Path) -> None:
    """Copy a part's folder over ``dst`` (the part as saved from memory: the same tensors and
    settings), following symlinks (Hub cache), skipping pickles and hidden files, and skipping
    links to what lies outside it: a folder from a stranger can link a secret or a device into
    a part, which a copy would write out in full. A skipped file that ``dst`` holds (weights
    linked from git-annex, DVC or an old ``--local-dir`` download) stays as saved; the others
    are named in a warning."""
    left_out: list[str] = []

    def ignore(folder: str, names: list[str]) -> list[str]:
        skip = [n for n in names if n.startswith(".") or n.lower().endswith(PICKLE_SUFFIXES)]
        links_out = [n for n in names if n not in skip and not stays_inside(Path(folder, n), src)]
        left_out.extend(rel for n in links_out
                        if not (dst / (rel := str(Path(folder, n).relative_to(src)))).exists())
        return skip + links_out

    shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)
    if left_out:
        warnings.warn(f"Not copied from {src}: {', '.join(left_out)} (links to what lies outside "
                      "the folder, or not regular files).", stacklevel=registry._outside_package())


def _same_part(written: Path, source: Path) -> bool:
    """Whether a part saved from memory into ``written`` is what ``source`` holds: every
    safetensors file has the same tensors there, every JSON file the same settings (keys that
    start with "_", such as diffusers' version, aside); other files (cards) are not compared."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def settings(path: Path) -> Any:
        value = json.loads(settings_text(path))
        return ({k: v for k, v in value.items() if not str(k).startswith("_")}
                if isinstance(value, dict) else value)

    try:
        for path in written.iterdir():
            theirs = source / path.name
            if path.suffix == ".safetensors":
                mine, other = load_file(str(path)), load_file(str(theirs))
                if mine.keys() != other.keys() or not all(
                        mine[k].dtype == other[k].dtype and torch.equal(mine[k], other[k])
                        for k in mine):
                    return False
            elif path.suffix == ".json" and settings(path) != settings(theirs):
                return False
    except (OSError, ValueError, RuntimeError, SafetensorError):  # missing or unreadable there
        return False
    return True


def _flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_metrics(value, name + "/"))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
    return out


def check_pipeline_destination(folder: str | Path, flag: str = "") -> None:
    """Saving replaces the whole folder: it must be new, empty or an earlier pipeline, so that
    no other file in it is lost. ``flag`` names the option in the error (``--export``)."""
    folder = Path(folder)
    name = f"{flag} {folder}" if flag else str(folder)
    check_folder_path(folder, flag or "The pipeline folder")
    if folder.is_dir() and not (folder / INDEX_FILE).is_file() and any(folder.iterdir()):
        raise ValueError(f"{name} holds files and is not a translation pipeline folder; saving "
                         "replaces the whole folder, so name a new or empty one.")
    # the save writes a sibling folder and renames it: the parent (or the nearest folder that
    # exists above it) must take new files, known before a training run, not after it
    anchor = folder.expanduser().absolute().parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    try:
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as exc:
        raise ValueError(f"Cannot write in {anchor} ({exc.strerror or exc}): {name} must lie in a "
                         "folder this process can write to.") from None


def _judge_too_small(side: str, judged: int, k: int) -> str:
    return (f"The {side}-side judge scores {judged} classes and the map has {k}: class k goes to "
            f"class k, so the judge must know all {k} (bundle one trained on them as "
            f"judge_{side}=..., or none).")


class TranslationPipeline:
    """Translate images between two datasets through a VAE's latent space (see the module
    docstring). Build one with :meth:`from_components` or :meth:`from_pretrained`."""

    def __init__(
        self,
        vae: Any,
        map: HJMap,
        judge_source: Any = None,
        judge_target: Any = None,
        source_dataset: str = "mnist",
        target_dataset: str = "fashion-mnist",
        source_class_names: list[str] | None = None,
        target_class_names: list[str] | None = None,
        sources: dict[str, Path | None] | None = None,
        other_side: dict[str, float] | None = None,
        light_on_dark: bool = True,
    ) -> None:
        from .judges import CLASSES

        if not isinstance(map, HJMap):
            raise TypeError(f"map must be an HJMap, got {type(map).__name__}.")
        check_image_encoder(vae, f"The encoder {type(vae).__name__}", map.shift.device,
                            map.shift.dtype)
        if map.dim != vae.latent_dim:
            what = "VAE" if getattr(vae, "name", None) == "vae" else "encoder"
            raise CheckpointError(
                f"The map works in dimension {map.dim} but the {what}'s latent has {vae.latent_dim} "
                f"dimensions {tuple(getattr(vae, 'latent_shape', (vae.latent_dim,)))}: they do not "
                f"belong together (train the map on this {what}'s latents)."
            )
        check_same_latent(map, vae)
        self.vae, self.map = vae, map.eval()
        self.judge_source, self.judge_target = judge_source, judge_target
        for side, dataset in (("source", source_dataset), ("target", target_dataset)):
            if not isinstance(dataset, str) or not dataset:
                raise ValueError(f"{side}_dataset must be a dataset's name, got {dataset!r}.")
        self.source_dataset, self.target_dataset = source_dataset, target_dataset
        judged = [(getattr(j, "config", None) or {}).get("dataset") for j in (judge_source,
                                                                          judge_target)]
        if source_dataset != target_dataset and judged == [target_dataset, source_dataset]:
            raise ValueError(f"the source judge was trained on {target_dataset} and the target "
                             f"judge on {source_dataset}: the two judges are swapped.")

        def names(given: Any, from_map: Any, dataset: str, judge: Any) -> list[str] | None:
            for cand in (given, from_map, CLASSES.get(dataset), getattr(judge, "classes", None)):
                if cand is not None and (not isinstance(cand, (list, tuple)) or not all(
                        isinstance(c, (str, int)) and not isinstance(c, bool) for c in cand)):
                    raise ValueError(f"class names must be a list of names, got {cand!r}.")
                if cand:
                    return [str(c) for c in cand]
            return None

        self.source_class_names = names(source_class_names, map.class_names, self.source_dataset,
                                        judge_source)
        self.target_class_names = names(target_class_names, map.target_class_names,
                                        self.target_dataset, judge_target)
        k = self.num_classes
        for side, lst in (("source", self.source_class_names), ("target", self.target_class_names)):
            if k is not None and lst is not None and len(lst) < k:
                raise ValueError(f"{side}_class_names has {len(lst)} names for {k} classes.")
            # the logits' width where the judge says it (a Judge's class names may be a
            # default), else its class names' count
            judge = self._judge(side)
            judged = getattr(judge, "num_classes", None)
            if not isinstance(judged, int) and isinstance(getattr(judge, "classes", None), list):
                judged = len(judge.classes)
            if k is not None and isinstance(judged, int) and judged < k:
                raise ValueError(_judge_too_small(side, judged, k))
        #: folders the parts were loaded from (copied by save_pretrained to keep their cards,
        #: where the parts are unchanged)
        self._sources = dict(sources or {})
        #: where ``source_likeness`` says an input looks like the other side's, measured on
        #: real test images by ``calibrate_other_side`` (None: not measured)
        self.other_side = _check_other_side(other_side)
        #: inputs on a light background are inverted (rule 3 of ``hjtranslate.images``): the
        #: datasets' pictures are light on dark, as MNIST's and Fashion-MNIST's are
        self.light_on_dark = _check_bool(light_on_dark, "light_on_dark")

    # -- properties ------------------------------------------------------------------------------
    @property
    def components(self) -> dict[str, Any]:
        """The parts, by the names ``from_components`` and the saved folder use."""
        return {"vae": self.vae, "map": self.map, "judge_source": self.judge_source,
                "judge_target": self.judge_target}

    @property
    def num_classes(self) -> int | None:
        """K: class labels are 0..K-1 (the map's classes, else the class names' count)."""
        if self.map.num_classes:
            return int(self.map.num_classes)
        for lst in (getattr(self, "source_class_names", None),
                    getattr(self, "target_class_names", None)):
            if lst:
                return len(lst)
        return None

    @property
    def device(self) -> torch.device:
        return self.map.shift.device

    @property
    def encoder_name(self) -> str:
        """The encoder's plugin name, which a saved pipeline records (``vae`` for the VAE)."""
        return encoder_plugin_name(self.vae)

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> TranslationPipeline:
        """Move every part to ``device`` and/or the map to ``dtype`` (float32 or float64; the VAE
        and judges compute in float32), as a diffusers pipeline's ``to``; returns self."""
        if isinstance(device, torch.dtype):  # pipe.to(torch.float64), as diffusers takes it
            device, dtype = None, device
        dtype = None if dtype is None else check_dtype(dtype)
        device = None if device is None else check_device(device)
        if dtype is not None:
            self.map.to(dtype=dtype)
        if device is not None:
            self.map.to(device)
            self.vae = self.vae.to(device)  # an encoder may return a moved copy
            for judge in (self.judge_source, self.judge_target):
                if judge is not None:
                    judge.to(device)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.map.shift.dtype

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source_dataset} -> {self.target_dataset}, "
            f"latent_dim={self.map.dim}, classes={self.num_classes}, "
            f"conditional={self.map.conditional}, judges=("
            f"{'source' if self.judge_source is not None else '-'}, "
            f"{'target' if self.judge_target is not None else '-'}), device={self.device})"
        )

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_components(
        cls,
        vae: str | Path | Encoder,
        map: HJMap | str | Path,
        judge_source: str | Path | Judge | None = None,
        judge_target: str | Path | Judge | None = None,
        source_dataset: str | None = None,
        target_dataset: str | None = None,
        source_class_names: list[str] | None = None,
        target_class_names: list[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        light_on_dark: bool = True,
    ) -> TranslationPipeline:
        """Bundle parts: ``vae`` an AutoencoderKL folder (or Hub id) with ``latent_stats.json``,
        or an encoder plugin's instance (see :class:`~hjtranslate.encoders.Encoder`);
        ``map`` an :class:`HJMap` or its folder / Hub id; judges a judge folder, a shipped
        judge's name (``"mnist"``, ``"fashion-mnist"``), a ``Judge`` or ``None``.
        ``light_on_dark=False`` keeps inputs' polarity (a light picture is not inverted): for
        datasets whose pictures are dark on light, as the encoder learnt them.
        ``source_dataset``, ``target_dataset`` (which give class names and the framing of
        pictures): by default the datasets the map records (digits-to-fashion's do), else
        MNIST and Fashion-MNIST for a VAE of this package's 28x28 kind, else the neutral
        ``"source"`` and ``"target"`` (no dataset's names or framing)."""
        from hjtranslate_plugins.vae import VAEEncoder

        from .judges import CLASSES, Judge, load_judge

        dtype, device = check_dtype(dtype), check_device(device)

        if isinstance(vae, Encoder):
            vae_dir, encoder = None, vae.to(device)
            if isinstance(vae, VAEEncoder) and vae.latent_stats is None:
                raise CheckpointError(
                    "vae: this VAEEncoder has no latent statistics: the map works in the VAE's "
                    "standardised latents, so the pipeline needs the statistics it was trained "
                    "with (VAEEncoder.fit_latent_stats, or a folder with latent_stats.json).")
        else:
            vae_dir = _resolve_folder(vae, "vae", revision=None, cache_dir=None,
                                      local_files_only=False, token=None)
            _check_vae_folder(vae_dir, "vae")
            encoder = VAEEncoder(str(vae_dir), device=device)
        map_dir: Path | None = None
        if not isinstance(map, HJMap):
            map_dir = Path(map) if Path(map).is_dir() else None
            map = HJMap.from_pretrained(map, map_location=str(device))
        map = map.to(device=device, dtype=dtype).eval()

        sources: dict[str, Path | None] = {"vae": vae_dir}
        judges: dict[str, Any] = {}
        for key, judge in (("judge_source", judge_source), ("judge_target", judge_target)):
            if judge is None or isinstance(judge, Judge):
                judges[key], sources[key] = judge, None
                if judge is not None:
                    judges[key] = judge.to(device).eval()
                continue
            folder = models_dir() / f"judge-{judge}" if str(judge) in CLASSES else Path(judge)
            judges[key], sources[key] = load_judge(folder, device=device), folder
        sources["map"] = map_dir
        default = _default_datasets(map, encoder)
        return cls(encoder, map, judges["judge_source"], judges["judge_target"],
                   source_dataset or default[0], target_dataset or default[1],
                   source_class_names, target_class_names, sources=sources,
                   light_on_dark=light_on_dark)

    @classmethod
    def from_pretrained(
        cls,
        folder_or_hub_id: str | Path,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        force_download: bool = False,
        torch_dtype: torch.dtype | None = None,
    ) -> TranslationPipeline:
        """Load a saved pipeline from a folder or a Hub repo id (``revision``, ``cache_dir``,
        ``local_files_only``, ``token``, ``force_download`` and ``HF_HUB_OFFLINE=1`` work as in
        huggingface_hub).
        ``dtype`` (or diffusers' name for it, ``torch_dtype``) is the map's; the VAE and judges
        compute in float32 (as ``VAEEncoder`` and the judges require)."""
        if torch_dtype is not None:
            try:
                named = check_dtype(torch_dtype)
            except ValueError:
                raise ValueError(f"torch_dtype must be torch.float32 or torch.float64 (the map's "
                                 f"precision; the VAE and judges compute in float32), got "
                                 f"{torch_dtype!r}.") from None
            if dtype is not torch.float32 and check_dtype(dtype) != named:
                raise ValueError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree: pass one.")
            dtype = named
        from hjtranslate_plugins.vae import VAEEncoder

        from .judges import load_judge

        dtype, device = check_dtype(dtype), check_device(device)
        root = _resolve_folder(folder_or_hub_id, "pipeline", revision=revision,
                               cache_dir=cache_dir, local_files_only=local_files_only, token=token,
                               force_download=force_download)
        index_file = root / INDEX_FILE
        if not index_file.is_file():
            hint = ""
            if why := unusable_file(index_file):
                raise CheckpointError(f"{why}.")
            if is_run_folder(root):
                hint = (f" It looks like a training run folder: its map is {root / 'map'} "
                        "(HJMap.from_pretrained); bundle it with a VAE into a pipeline with "
                        "TranslationPipeline.from_components(...).save_pretrained(DIR), or "
                        "train with `hjtranslate train digits-to-fashion --export DIR`.")
            elif describes_a_map(config := folder_config(root)) and (
                    root / "model.safetensors").is_file():
                hint = " It looks like a bare HJMap folder: load it with HJMap.from_pretrained."
            elif {"architecture", "classes"} <= config.keys():
                hint = (" It looks like a judge (a classifier, hjtranslate.judges.load_judge): "
                        "a pipeline takes it as judge_source or judge_target of "
                        "TranslationPipeline.from_components.")
            elif inside := sorted(str(p.parent) for p in root.glob(f"*/{INDEX_FILE}")):
                hint = f" It holds {'a pipeline' if len(inside) == 1 else 'pipelines'}: {', '.join(inside)}."
            elif not Path(folder_or_hub_id).expanduser().is_dir() and not (
                    root.is_dir() and any(root.iterdir())):
                # a Hub repo with nothing at this revision: pushed to a branch only?
                hint = (f" The repo holds no .json or .safetensors files at revision "
                        f"{revision or 'main'!r}: if the pipeline was pushed to a branch, pass "
                        "revision= (--revision) with its name.")
            raise CheckpointError(
                f"{folder_or_hub_id} has no {INDEX_FILE}: not a saved TranslationPipeline.{hint}"
            )
        index = read_json_object(index_file, "Download or save the pipeline again.")
        if index.get("_class_name") != CLASS_NAME:
            raise CheckpointError(
                f"{index_file} does not describe a {CLASS_NAME} (_class_name is "
                f"{index.get('_class_name')!r}, not {CLASS_NAME!r}). Download or save the "
                "pipeline again."
            )
        refuse_newer(index.get("_hjtranslate_version"), "pipeline")
        parts: dict[str, Path | None] = {}
        for key in ("vae", "map", "judge_source", "judge_target"):
            name = index.get(key)
            if name is None:
                if key in ("vae", "map"):
                    raise CheckpointError(f"{index_file} names no {key!r} subfolder.")
                parts[key] = None
                continue
            folder = _subpath(root, name, key)
            if not folder.is_dir():
                raise CheckpointError(
                    f"The {key} subfolder {name!r} named in {INDEX_FILE} is missing from "
                    f"{folder_or_hub_id}."
                )
            parts[key] = folder
        assert parts["vae"] is not None and parts["map"] is not None
        encoder_name = index.get("encoder", "vae")  # pipelines saved before 2026-12-05: the VAE
        if encoder_name == "vae":
            _check_vae_folder(parts["vae"], "vae")
        if root.resolve() == default_model_path().resolve():
            redo = (f"If {folder_or_hub_id} is damaged, restore it (git checkout) or write it "
                    "again (`hjtranslate train digits-to-fashion --mode conditional --export "
                    "models/digits-to-fashion`).")
        elif Path(folder_or_hub_id).expanduser().is_dir():
            redo = (f"If {folder_or_hub_id} is damaged, copy it again, or save it again where "
                    "it was made (TranslationPipeline.save_pretrained, or the --export of the "
                    "run that wrote it).")
        else:
            redo = (f"If the cached copy of {folder_or_hub_id} is damaged, download it again "
                    "(force_download=True; --force-download on the command line).")
        # another encoder's plugin speaks for itself (a missing one is not a damaged folder)
        encoder = None if encoder_name == "vae" else _load_encoder(
            encoder_name, parts["vae"], device, index.get("encoder_package"))
        try:
            encoder = encoder or VAEEncoder(str(parts["vae"]), device=device)
            hjmap = HJMap.from_pretrained(parts["map"], map_location=str(device))
        except (CheckpointError, FileNotFoundError) as exc:
            raise CheckpointError(f"{_sentence(exc)} {redo}") from None
        hjmap = hjmap.to(device=device, dtype=dtype).eval()
        judges: dict[str, Any] = {}
        for key in ("judge_source", "judge_target"):
            folder = parts[key]
            if folder is None:
                judges[key] = None
                continue
            try:
                judges[key] = load_judge(folder, device=device, remedy=redo)
            except (FileNotFoundError, ValueError) as exc:
                raise CheckpointError(f"The {key} subfolder cannot be loaded: {exc}") from None
        try:
            return cls(
                encoder, hjmap, judges["judge_source"], judges["judge_target"],
                index.get("source_dataset", "mnist"), index.get("target_dataset", "fashion-mnist"),
                index.get("source_class_names"), index.get("target_class_names"), sources=parts,
                other_side=index.get("other_side"),
                light_on_dark=index.get("light_on_dark", True),  # older pipelines: they were
            )
        except CheckpointError:
            raise  # about a part (the map, the VAE), which it names
        except ValueError as exc:  # what the index says does not fit its parts
            raise CheckpointError(f"{index_file}: {_sentence(exc)} Download or save the "
                                  "pipeline again.") from None

    # -- saving and publishing ------------------------------------------------------------------
    def index(self) -> dict[str, Any]:
        """The content of ``hjtranslate_pipeline.json``."""
        return {
            "_class_name": CLASS_NAME,
            "_hjtranslate_version": __version__,
            "vae": "vae",
            "encoder": self.encoder_name,
            # the package that provides it: a machine without it is told what to install
            "encoder_package": (None if self.encoder_name == "vae"
                                else registry.plugins("encoder")[self.encoder_name].package),
            "map": "map",
            "judge_source": "judge_source" if self.judge_source is not None else None,
            "judge_target": "judge_target" if self.judge_target is not None else None,
            "source_dataset": self.source_dataset,
            "target_dataset": self.target_dataset,
            "source_class_names": self.source_class_names,
            "target_class_names": self.target_class_names,
            "other_side": self.other_side,
            "light_on_dark": self.light_on_dark,
        }

    def save_pretrained(self, folder: str | Path, repo_id: str | None = None,
                        push_to_hub: bool = False, **push_kwargs: Any) -> Path:
        """Write the pipeline folder atomically: everything goes into a temporary sibling folder,
        which then replaces ``folder`` by two renames (a failure leaves ``folder`` as it was).
        ``repo_id`` changes the model card's usage snippet; with ``push_to_hub=True`` the saved
        folder is also published there (``private``, ``revision``, ``commit_message``,
        ``token``: as :meth:`push_to_hub`)."""
        unknown = sorted(set(push_kwargs) - {"private", "revision", "commit_message", "token"})
        if unknown or (push_kwargs and not push_to_hub):
            raise TypeError(f"save_pretrained got unexpected keyword arguments "
                            f"{unknown or sorted(push_kwargs)}; with push_to_hub=True it takes "
                            "private, revision, commit_message and token.")
        if push_to_hub and not repo_id:
            raise ValueError("save_pretrained(..., push_to_hub=True) needs repo_id='user/name': "
                             "the repo is not named after the folder.")
        if push_to_hub:
            from .hub import check_repo_id, check_revision

            check_repo_id(repo_id)  # before anything is written
            check_revision(push_kwargs.get("revision"))
        folder = Path(folder).expanduser()
        check_pipeline_destination(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        _clear_interrupted_saves(folder)
        # the writer's pid in the names: a later save tells a killed one's leftovers from a
        # save running beside it
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}-{_HOST}"
        tmp, old = (folder.parent / f".{folder.name}.{kind}-{tag}" for kind in ("tmp", "old"))
        try:
            tmp.mkdir()
            self._write_parts(tmp, card_name(folder, repo_id), on_hub=repo_id is not None)
            if folder.exists():
                folder.rename(old)
            tmp.rename(folder)
        finally:  # also on Ctrl-C between the two renames: the earlier pipeline comes back
            if old.exists() and not folder.exists():
                old.rename(folder)
            for leftover in (tmp, old):
                if leftover.exists():
                    shutil.rmtree(leftover, ignore_errors=True)
        if push_to_hub:
            from .hub import push_folder

            push_folder(folder, repo_id, private=bool(push_kwargs.get("private", False)),
                        revision=push_kwargs.get("revision"),
                        commit_message=(push_kwargs.get("commit_message")
                                        or "Upload hjtranslate TranslationPipeline"),
                        token=push_kwargs.get("token"))
        return folder

    def _write_part(self, key: str, part: Any, out: Path) -> Path | None:
        """Write ``part`` (the VAE or a judge) as it is in memory into ``out / key``; where that
        is what its source folder holds (same tensors and settings: loaded and not changed since),
        the source folder's copy instead, which keeps its model card and training record. Returns
        the folder copied, or None."""
        (out / key).mkdir()
        part.save_pretrained(out / key)
        src = self._sources.get(key)
        if src is None or not Path(src).is_dir() or not _same_part(out / key, Path(src)):
            return None
        _copy_part(Path(src), out / key)
        return Path(src)

    def _write_parts(self, out: Path, name: str, on_hub: bool = False) -> None:
        vae_src = self._write_part("vae", self.vae, out)
        dropped = []
        if vae_src is not None:
            written = {p.name for p in (out / "vae").iterdir()}
            dropped = sorted(p.name for p in vae_src.iterdir()
                             if not p.name.startswith(".") and p.name not in written)
        # another encoder's part must load from what a pipeline keeps and a push publishes (the
        # VAE loads its config, weights and statistics; a training folder's extras can stay)
        foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in (out / "vae").iterdir()
                         if not p.name.startswith(".")
                         and (p.is_dir() or not any(p.match(g) for g in HUB_PATTERNS)))
        if self.encoder_name != "vae" and (dropped or foreign):
            raise registry.PluginError(
                f"The pipeline's encoder ({self.encoder_name!r}) keeps "
                f"{', '.join(dropped + foreign)} in its folder: a pipeline part is one flat folder "
                "of JSON and safetensors files (pickles can run code; the Hub publishing uploads "
                "*.json, *.safetensors and *.md at its top), so the saved pipeline could not be "
                "loaded or published. Save the encoder's state so in its save_pretrained.")
        hjmap = self.map
        if hjmap.shift.dtype != torch.float32 or hjmap.shift.device.type != "cpu":
            hjmap = copy.deepcopy(hjmap).to("cpu", torch.float32)
        # the map's card loads it from its own folder, or through the pipeline's Hub repo
        hjmap.save_pretrained(out / "map", model_card_kwargs=(
            {"pipeline": name} if on_hub else {"name": f"{name}/map"}))
        for key in ("judge_source", "judge_target"):
            if getattr(self, key) is not None:
                self._write_part(key, getattr(self, key), out)
        text = json.dumps(self.index(), indent=2, sort_keys=True) + "\n"
        (out / INDEX_FILE).write_text(text)
        shared_as_umask_says(out, recursive=True)  # copied 0600 parts would stay 0600
        self._write_model_card(out, name)

    def _write_model_card(self, out: Path, name: str, revision: str | None = None) -> Path:
        from huggingface_hub import ModelCard, ModelCardData

        metrics = _flat_metrics(self.map.metrics)
        datasets = [HUB_DATASETS.get(d, d) for d in (self.source_dataset, self.target_dataset)
                    if d not in NEUTRAL_DATASETS]
        data = ModelCardData(
            library_name="hjtranslate",
            license="apache-2.0",
            pipeline_tag="image-to-image",
            tags=["optimal-transport", "hamilton-jacobi", "image-to-image", "hjtranslate",
                  *(d for d in (self.source_dataset, self.target_dataset)
                    if d not in NEUTRAL_DATASETS)],
            datasets=list(dict.fromkeys(datasets)),
            metrics=hub_metric_names(metrics),
        )
        parts = [f"`{part}/`" for part, judge in (("judge_source", self.judge_source),
                                                     ("judge_target", self.judge_target))
                 if judge is not None]
        judges = f"judge classifier{'s' if len(parts) > 1 else ''} ({', '.join(parts)})" if parts else ""
        pairs = []
        if self.source_class_names and self.target_class_names:
            pairs = [f"| {k} | {s} | {t} |" for k, (s, t) in
                     enumerate(zip(self.source_class_names, self.target_class_names, strict=False))]
        lines = [
            "---", data.to_yaml(), "---", "",
            f"# {self.source_dataset} -> {self.target_dataset} translation pipeline", "",
            "A [hjtranslate](https://github.com/hjtranslate/hjtranslate) pipeline: "
            + ("a VAE" if self.encoder_name == "vae" else f"an encoder (the `{self.encoder_name}` plugin)")
            + f" (`vae/`), a Hamilton-Jacobi optimal transport map in its {self.map.dim}-dimensional "
            "latent space (`map/`)"
            + (f" and {judges}" if judges else "")
            + f". Class k of {self.source_dataset} is translated to class k of "
            f"{self.target_dataset}, and back.", "",
            "```python",
            "from hjtranslate.pipeline import TranslationPipeline",
            f"pipe = TranslationPipeline.from_pretrained({name!r}{revision_argument(revision)})",
            ("out = pipe(images, classes=None)  # classes detected by the judge when None"
             if self.judge_source is not None else
             "out = pipe(images, classes=[0] * len(images))  # each image's class: no judge detects it"),
            "out.images[0].save('translated.png')",
            "back = pipe(out.images, classes=out.target_classes, direction='backward')",
            "```", "",
            "Command line: `hjtranslate translate --model " + name
            + (f" --revision {revision}" if revision_argument(revision) else "")
            + " --input IMG_OR_FOLDER "
            "--out DIR [--morph-steps 8]`.", "",
            f"- map: cost {self.map.cost_name}, head {self.map.head_name} "
            f"({'class-conditional' if self.map.conditional else 'shared'}), t_f {self.map.t_f}",
        ]
        packages = dict(self.map.plugin_packages)
        if self.encoder_name != "vae":
            packages["encoder"] = registry.plugins("encoder")[self.encoder_name].package
        needs = plugin_line(packages, {"cost": self.map.cost_name, "head": self.map.head_name,
                                       "encoder": self.encoder_name})
        if needs:
            lines.append(needs)
        if pairs:
            lines += ["", "## Classes", "", f"| k | {self.source_dataset} | {self.target_dataset} |",
                      "|---|---|---|", *pairs]
        if metrics:
            lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
            for key in sorted(metrics):
                value = metrics[key]
                lines.append(f"| {key} | {f'{value:.6g}' if isinstance(value, float) else value} |")
        text = "\n".join(lines) + "\n"
        ModelCard(text)  # validates the YAML header
        path = out / "README.md"
        path.write_text(text)
        return path

    def push_to_hub(self, repo_id: str, private: bool = False, revision: str | None = None,
                    commit_message: str | None = None, token: str | bool | None = None,
                    branch: str | None = None) -> Any:
        """Save into a temporary folder and upload it as one commit (creating the repo, and the
        branch ``revision``, or huggingface_hub's ``branch``, if needed). Returns the
        ``CommitInfo`` (a str: the commit URL)."""
        from .hub import push_saved

        return push_saved(lambda folder: self.save_pretrained(folder, repo_id=repo_id), repo_id,
                          what="pipeline", private=private, revision=revision, branch=branch,
                          token=token,
                          commit_message=commit_message or "Upload hjtranslate TranslationPipeline")

    # -- use ---------------------------------------------------------------------------------
    @staticmethod
    def preprocess(images: Any, framing: str | None = None) -> tuple[torch.Tensor, list[list[str]]]:
        """Images of any supported kind -> ``(n, 1, 28, 28)`` in [0, 1] and per-image notes
        (``framing``: see :meth:`framing`)."""
        return preprocess(images, framing)

    def _preprocess(self, images: Any, side: str, frame: Any) -> tuple[torch.Tensor, list[list[str]]]:
        """:func:`preprocess` with the framing of ``side``'s dataset, or none (``frame=False``),
        and the pipeline's polarity (``light_on_dark``)."""
        return preprocess(images, self.framing(side) if _check_bool(frame, "frame") else None,
                          light_on_dark=self.light_on_dark)

    def framing(self, side: str) -> str | None:
        """The framing that pictures of ``side`` (``"source"`` or ``"target"``) get: their
        dataset's, where it is one of ``FRAMINGS``, else None."""
        dataset = (self.source_dataset if side == "source" else self.target_dataset).lower()
        return dataset if dataset in FRAMINGS else None

    def _judge(self, side: str):
        if side not in ("source", "target"):
            raise ValueError(f"side must be 'source' or 'target', got {side!r}.")
        return self.judge_source if side == "source" else self.judge_target

    @torch.no_grad()
    def _probabilities(self, judge: Any, x: torch.Tensor) -> torch.Tensor:
        return judge.logits(x).float().softmax(-1).cpu()

    def classify(self, images: Any, side: str = "source",
                 frame: bool = True) -> tuple[list[int], list[float]]:
        """Labels and confidences (softmax probabilities) of the ``side`` judge
        (``"source"``: ``judge_source``, ``"target"``: ``judge_target``); ``frame=False`` keeps
        pictures that are not 28x28 unframed (rule 5 of ``hjtranslate.images``)."""
        judge = self._judge(side)
        if judge is None:
            raise ValueError(f"This pipeline bundles no {side}-side judge (judge_{side}).")
        x = self._preprocess(images, side, frame)[0]
        conf, labels = self._probabilities(judge, x).max(-1)
        return labels.tolist(), conf.tolist()

    def source_likeness(self, images: Any, frame: bool = True) -> list[float]:
        """How much more the source judge than the target judge takes each picture for one of
        its own: the difference of their log-sum-exp logits (the judges' "energies", Liu et al.
        2020), high for source pictures, low for target ones. Needs both judges. The app uses
        it to say when an input looks like the other side's (``benchmarks/input_side.py``)."""
        if self.judge_source is None or self.judge_target is None:
            raise ValueError("source_likeness needs both judges (judge_source, judge_target).")
        # each judge sees the picture framed as its dataset frames them
        return self._likeness(*(self._preprocess(images, side, frame)[0]
                                for side in ("source", "target")))

    @torch.no_grad()
    def _likeness(self, x_source: torch.Tensor, x_target: torch.Tensor) -> list[float]:
        """``source_likeness`` of pictures already framed for each side, ``(n, 1, 28, 28)``."""
        energy = [judge.logits(x).float().logsumexp(-1).cpu()
                  for judge, x in ((self.judge_source, x_source), (self.judge_target, x_target))]
        return (energy[0] - energy[1]).tolist()

    def calibrate_other_side(self, source_images: Any, target_images: Any,
                             false_alarms: float = OTHER_SIDE_FALSE_ALARMS) -> dict[str, float]:
        """Measure where ``source_likeness`` tells the sides apart, on real images of each side
        (the test sets; ``save_pretrained`` keeps the result): an input of the source side
        below the ``false_alarms`` quantile of the source images' likeness, or one of the target
        side above the ``1 - false_alarms`` quantile of the target images', looks like the other
        side's (``looks_like_other_side``), which ``false_alarms`` of real inputs do."""
        if not 0.0 < false_alarms < 0.5:
            raise ValueError(f"false_alarms must lie in (0, 0.5), got {false_alarms!r}.")
        likeness = {}
        for side, images in (("source", source_images), ("target", target_images)):
            if isinstance(images, (torch.Tensor, np.ndarray)) and len(images) > 1000:
                values = [v for i in range(0, len(images), 1000)
                          for v in self.source_likeness(images[i:i + 1000])]
            else:
                values = self.source_likeness(images)
            if len(values) < 100:
                raise ValueError(f"Calibrating needs at least 100 {side} images, got {len(values)}.")
            likeness[side] = torch.tensor(values, dtype=torch.float64)
        below = float(torch.quantile(likeness["source"], false_alarms))
        above = float(torch.quantile(likeness["target"], 1 - false_alarms))
        self.other_side = {
            "source_below": below, "target_above": above, "false_alarms": float(false_alarms),
            "caught_target_as_source": float((likeness["target"] < below).double().mean()),
            "caught_source_as_target": float((likeness["source"] > above).double().mean()),
        }
        return self.other_side

    @property
    def tells_sides_apart(self) -> bool:
        """Whether ``looks_like_other_side`` can answer: both judges, and their thresholds
        measured (``calibrate_other_side``)."""
        return (self.other_side is not None and self.judge_source is not None
                and self.judge_target is not None)

    def looks_like_other_side(self, images: Any, side: str = "source",
                              frame: bool = True) -> list[bool]:
        """For inputs given as ``side``'s, whether each looks like the other side's to the
        judges (beyond the thresholds ``calibrate_other_side`` measured)."""
        if side not in ("source", "target"):
            raise ValueError(f"side must be 'source' or 'target', got {side!r}.")
        if self.other_side is None:
            raise ValueError("This pipeline has not measured where its judges tell the sides "
                             "apart: call calibrate_other_side(source_images, target_images).")
        return self._beyond_thresholds(self.source_likeness(images, frame), side)

    def _beyond_thresholds(self, likeness: list[float], side: str) -> list[bool]:
        """``looks_like_other_side`` from the ``source_likeness`` of inputs given as ``side``'s."""
        if side == "source":
            return [v < self.other_side["source_below"] for v in likeness]
        return [v > self.other_side["target_above"] for v in likeness]

    def _classes(self, classes: Any, n: int) -> list[int]:
        if isinstance(classes, (torch.Tensor, np.ndarray, np.generic)):
            # a 0-d one (or a numpy scalar) gives a Python scalar, broadcast below
            classes = classes.item() if classes.ndim == 0 else classes.reshape(-1).tolist()
        if is_real(classes):
            classes = [classes] * n
        if not isinstance(classes, (list, tuple)):
            raise ValueError(f"classes must be an int (for every image) or one int per image "
                             f"({n}), got {classes!r}.")
        if len(classes) != n:
            raise ValueError(f"Got {len(classes)} classes for {n} images.")
        out = []
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) and not (
                isinstance(c, float) and c.is_integer()
            ):
                raise ValueError(f"classes must be integers, got {c!r}.")
            out.append(int(c))
        k = self.num_classes
        bad = [c for c in out if c < 0 or (k is not None and c >= k)]
        if bad:
            span = f"0..{k - 1}" if k is not None else ">= 0"
            raise ValueError(f"Class {bad[0]} is out of range: classes must lie in {span}.")
        self._check_trained(out)
        return out

    @property
    def trained_classes(self) -> list[int] | None:
        """The classes the map was trained on, which it translates (None: classes unknown)."""
        k = self.num_classes
        return None if k is None else [c for c in range(k) if c not in self.map.untrained_classes]

    def _check_trained(self, labels: list[int], detected_by: str | None = None) -> None:
        """Refuse, before any image is encoded, a class the map had no samples of
        (``detected_by``: the side whose judge gave the labels)."""
        trained = self.trained_classes
        missing = sorted(set(labels) - set(trained)) if trained is not None else []
        if missing:
            what = (f"The {detected_by}-side judge detected class {missing[0]}, which"
                    if detected_by else f"Class {missing[0]}")
            raise ValueError(f"{what} had no samples when this pipeline's map was trained, so "
                             f"it is not translated; the map translates classes "
                             f"{', '.join(map(str, trained))}"
                             + (": pass classes= explicitly." if detected_by else "."))

    def __call__(
        self,
        images: Any,
        classes: int | Sequence[int] | None = None,
        direction: str = "forward",
        morph_steps: int = 0,
        batch_size: int = 256,
        frame: bool = True,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> TranslationOutput | tuple[Any, ...]:
        """Translate ``images`` (source -> target with ``direction="forward"``, target -> source
        with ``"backward"``). ``classes``: an int for all images, one per image, or ``None`` to
        let the input side's judge detect them. ``morph_steps=N`` (0, or 2..256) also returns N
        frames per image from the input (t=0) to the translation (t=t_f). Pictures that are not
        28x28 are framed as the input side's dataset framed its own (``frame=False`` does not:
        rule 5 of ``hjtranslate.images``). ``batch_size``: images encoded, mapped and decoded
        at a time. ``output_type``: ``"pil"`` (default), ``"np"``, ``"pt"`` or ``"latent"``
        (:class:`TranslationOutput` says what each gives). ``return_dict=False`` returns
        ``(images, frames)`` (``frames`` None without ``morph_steps``), as diffusers does."""
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(map(repr, OUTPUT_TYPES))}, "
                             f"got {output_type!r}.")
        check_morph_steps(morph_steps, "morph_steps")
        morph_steps = int(morph_steps)
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        batch_size = int(batch_size)
        in_side, out_side = ("source", "target") if direction == "forward" else ("target", "source")
        x, notes = self._preprocess(images, in_side, frame)
        n = x.shape[0]
        for picture, said in zip(x, notes, strict=True):  # the app and `translate` refuse these
            if is_blank(picture):
                said.append("blank once shrunk to 28x28 (no strokes): its class and translation "
                            "mean little")
        detection = None
        if classes is None:
            judge = self._judge(in_side)
            if judge is None:
                raise ValueError(
                    f"classes=None, but this pipeline bundles no {in_side}-side judge "
                    f"(judge_{in_side}) to detect them: pass classes= (an int, or one per image)."
                )
            else:
                conf, lab = self._probabilities(judge, x).max(-1)
                labels, detection = lab.tolist(), conf.tolist()
                k = self.num_classes
                if k is not None and max(labels) >= k:
                    raise ValueError(
                        f"The {in_side}-side judge predicted class {max(labels)}, outside the "
                        f"map's 0..{k - 1}: pass classes= explicitly."
                    )
                self._check_trained(labels, detected_by=in_side)
        else:
            labels = self._classes(classes, n)

        step = self.map.forward if direction == "forward" else self.map.backward
        outs, frames_latents = [], []
        ts = None
        if morph_steps:
            ts = torch.linspace(0.0, self.map.t_f, morph_steps, dtype=self.dtype, device=self.device)
        for i in range(0, n, batch_size):
            xb = x[i: i + batch_size]
            kb = torch.tensor(labels[i: i + batch_size], device=self.device)
            z = self.vae.encode(xb).to(self.device, self.dtype)
            y = step(z, kb)
            outs.append(y.detach())
            if ts is not None:
                if direction == "forward":  # x(t) = x + t grad H(grad u(x, 0))
                    path = self.map.interpolate(z, ts, kb)
                else:  # the characteristic through y, a straight line from y back to T^-1(y)
                    s = (ts / self.map.t_f)[:, None, None]
                    path = z[None] + s * (y.detach() - z)[None]
                frames_latents.append(path.detach())
        latents = torch.cat(outs)
        with torch.no_grad():  # an encoder plugin's decode may build a graph
            decoded = torch.cat([self.vae.decode(latents[i: i + batch_size])
                                 for i in range(0, n, batch_size)]).cpu()
        frames = dec = path = None
        if frames_latents:
            path = torch.cat(frames_latents, dim=1)  # (T, n, d)
        if path is not None and output_type != "latent":
            flat = path.reshape(-1, path.shape[-1])
            with torch.no_grad():
                dec = torch.cat([self.vae.decode(flat[i: i + batch_size])
                                 for i in range(0, len(flat), batch_size)]).cpu()
            dec = dec.reshape(morph_steps, n, 1, IMAGE_SIZE, IMAGE_SIZE)
        confidences = None
        out_judge = self._judge(out_side)
        if out_judge is not None:
            probs = self._probabilities(out_judge, decoded)
            if max(labels) >= probs.shape[1]:  # a judge without `classes` to check up front
                raise ValueError(_judge_too_small(out_side, probs.shape[1],
                                                  self.num_classes or max(labels) + 1))
            confidences = probs[torch.arange(n), torch.tensor(labels)].tolist()
        images_out: Any
        if output_type == "pil":
            images_out = to_pil(decoded)
            frames = None if dec is None else [to_pil(dec[:, j]) for j in range(n)]
        elif output_type == "np":
            images_out = decoded.permute(0, 2, 3, 1).numpy()
            frames = None if dec is None else dec.permute(1, 0, 3, 4, 2).numpy()
        elif output_type == "pt":
            images_out, frames = decoded, None if dec is None else dec.transpose(0, 1)
        else:  # "latent": the frames' latents, not decoded
            images_out, frames = latents, None if path is None else path.transpose(0, 1)
        result = TranslationOutput(
            images=images_out, source_classes=list(labels), target_classes=list(labels),
            confidences=confidences, frames=frames, detection_confidences=detection, notes=notes,
            latents=latents,
        )
        return result if return_dict else (result.images, result.frames)


def check_morph_steps(value: Any, name: str = "morph_steps") -> None:
    """A clear error unless ``value`` is 0 (no frames) or an int in 2..MAX_MORPH_STEPS."""
    if not is_int(value) or value < 0 or value == 1 or value > MAX_MORPH_STEPS:
        raise ValueError(f"{name} must be 0 (no frames) or an int from 2 to {MAX_MORPH_STEPS} "
                         f"(frames from the input to the translation), got {value!r}.")



def encoder_plugin_name(encoder: Any) -> str:
    """The registered name of ``encoder``'s plugin, which a saved pipeline records to load it."""
    from hjtranslate_plugins.vae import VAEEncoder

    if isinstance(encoder, VAEEncoder):
        return "vae"  # loaded as the VAE, whatever else claims the name
    for name, plugin in registry.plugins("encoder").items():
        if plugin.obj is type(encoder):
            return name
    raise registry.PluginError(
        f"The pipeline's encoder ({type(encoder).__name__}) is not a registered encoder plugin, "
        "so a saved pipeline could not load it again: register its class under the "
        "hjtranslate.encoders entry point (or registry.register('encoder', NAME, cls)).")


def _load_encoder(name: str, folder: Path, device: Any, package: Any = None) -> Any:
    """A pipeline's encoder, by the plugin its index names."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"The pipeline's {INDEX_FILE} names no encoder plugin (\"encoder\": "
                              f"{name!r}). Download or save the pipeline again.")
    missing = registry.missing_plugin("encoder", name, package, what="pipeline")
    if missing:
        raise CheckpointError(f"{missing} `hjtranslate plugins` lists those installed.")
    try:
        return registry.resolve("encoder", name).obj.from_pretrained(folder, device=device)
    except Exception as exc:  # the plugin's own code: any error is its own
        raise CheckpointError(f"The encoder plugin {name!r} could not load {folder}: "
                              f"{type(exc).__name__}: {exc}") from None


def check_same_latent(map: HJMap, vae: Any) -> None:
    """A map records the latent statistics of the VAE it was trained with; another encoder
    (a retrained VAE) gives another latent space, where the map would translate into noise."""
    record = map.encoder_config or {}
    if not isinstance(record, dict) or record.get("latent_shift") is None:
        return
    stats = getattr(vae, "latent_stats", None) or {}
    same = stats.get("shift") is not None
    for key, ours in (("latent_shift", "shift"), ("latent_scale", "scale")):
        if same and record.get(key) is not None:
            try:
                a = torch.as_tensor(record[key], dtype=torch.float64).flatten()
            except (TypeError, ValueError, RuntimeError):  # not a list of numbers
                raise CheckpointError(f"The map's config.json records encoder.{key} "
                                      f"{record[key]!r}, not a list of numbers: it was edited "
                                      "or damaged. Save or download the map again.") from None
            b = torch.as_tensor(stats[ours], dtype=torch.float64).flatten()
            unit = torch.as_tensor(stats["scale"], dtype=torch.float64).flatten()
            same = a.shape == b.shape == unit.shape and float(((a - b).abs() / unit).max()) <= 1e-3
    if not same:
        raise CheckpointError(
            "The map was trained in another latent space: the latent statistics it records "
            "differ from this VAE's latent_stats.json (or the VAE has none). Use the VAE the map "
            "was trained with, train the map on this VAE's latents, or sharpen a VAE without "
            "moving its latent space with `hjtranslate train vae --init-from VAE --decoder-only`."
        )
