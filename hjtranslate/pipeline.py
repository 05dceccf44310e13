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

Input conversion rules (``TranslationPipeline.preprocess``; each change is reported in
``TranslationOutput.notes``):

1. Types. A PIL image, a path to an image file, a numpy array, a torch tensor, or a list of
   these (each item then one image). Arrays: numpy ``(H, W)`` and ``(H, W, C)`` (C in 1, 2, 3, 4:
   grey, grey+alpha, RGB, RGBA) are one image, ``(N, H, W)`` and ``(N, H, W, C)`` a batch; torch
   tensors follow the torch layout: ``(H, W)`` one image, ``(N, H, W)`` a batch of grey images
   (as ``VAEEncoder`` and the judges take them), ``(N, C, H, W)`` a batch; a list item tensor
   ``(C, H, W)`` is one image. uint8 and other integer arrays are on the 0..255 scale, floats
   must lie in [0, 1] (else ``ValueError``), bools are 0/1.
2. Colour. RGB becomes grey by the ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (as PIL's
   ``convert("L")`` and the VAE). Transparency: the image is composited onto white if its
   visible strokes are dark (mean luma under 0.5, weighted by alpha), else onto black, so the
   strokes survive either way. 16-bit PIL images are scaled by 65535.
3. Polarity. MNIST and Fashion-MNIST are light on dark. If the mean of the image's border
   (the outer ``max(1, min(H, W) // 14)`` pixels) exceeds 0.5, the image is inverted.
4. Size. A non-square image is padded to a square with its (post-inversion) border value,
   keeping the aspect ratio; then it is resized to 28x28 (bilinear with antialiasing). A
   non-square image longer than ``MAX_PAD_SIDE`` (4096) pixels is first shrunk to fit it, so
   that the padded square stays small (a 1x40000 strip would otherwise take 6 GB).

5. Framing (``framing=`` a dataset of ``FRAMINGS``; the pipeline passes the input side's own
   dataset, ``frame=False`` turns it off). A picture that is not 28x28 already (a photo, a scan,
   a drawing) is framed as its dataset framed its pictures: the ink is told from the paper by
   Otsu's threshold, the box around it is cut out, its background is taken to 0 and its ink
   to 1 (a faint pencil or uneven light), and the box is scaled into 20x20 pixels centred by
   mass in 28x28 (MNIST) or into 28x28 centred (Fashion-MNIST). A picture without two clear
   levels (fine noise is judged with the shorter side at 28, where it has averaged out), or
   whose ink box is a speck, is only padded and resized (rule 4). 28x28 pictures are taken as
   framed already. The box is the subject's: the largest blot of ink and the blots near it
   (specks of dust elsewhere are left out). Before rule 3 reads the border, light paper lit
   unevenly (from one side, or brighter in the middle) is divided by its light, a quadratic
   surface fitted to the paper. Where the dataset's pictures are written on paper (MNIST), a
   light page photographed on a darker desk has the desk painted over in the page's paper, and
   the printed lines of ruled or squared paper (at least three thin lines across the picture,
   tilted by up to 15 degrees) are taken out, keeping the strokes that cross them. Known
   limits (crop the photo to the page, or to the subject): a page on a desk as light as the
   page; a page that fills the photo but for a dark corner of desk; a hard shadow across the
   page; dotted lines; a clothes picture on a page, on a desk or on ruled paper.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__, registry
from .checks import (
    check_device,
    check_folder_path,
    hub_unreachable,
    is_int,
    is_real,
    process_alive,
    shared_as_umask_says,
)
from .contracts import check_image_encoder
from .encoders import Encoder
from .hjmap import (
    PIPELINE_INDEX_FILE,
    CheckpointError,
    HJMap,
    _version_tuple,
    describes_a_map,
    folder_config,
    is_run_folder,
    read_json_object,
)
from .modelcard import HUB_DATASETS, card_name, hub_metric_names, revision_argument

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

INDEX_FILE = PIPELINE_INDEX_FILE
CLASS_NAME = "TranslationPipeline"
IMAGE_SIZE = 28
LUMA = (0.299, 0.587, 0.114)
VAE_STATS_FILE = "latent_stats.json"
#: files that unpickle on load: never copied into a pipeline folder
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: what ``from_pretrained`` downloads from a Hub repo (the same patterns online and offline)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.md"]
#: a non-square image longer than this is shrunk to fit it before it is padded to a square
MAX_PAD_SIDE = 4096


class Framing(NamedTuple):
    """How a dataset framed its pictures (rule 5)."""

    box_side: int  #: the side of the box the ink's bounding box is scaled into
    by_mass: bool  #: centred by its centre of mass (MNIST), else by its box
    #: written on paper: a page on a desk is found, ruled lines are taken out
    on_paper: bool = False


FRAMINGS = {"mnist": Framing(20, True, True), "fashion-mnist": Framing(28, False, False)}
#: framing works on a copy shrunk to this side at most (a phone photo is 4000 pixels wide)
FRAME_WORK_SIDE = 1024
#: an ink box smaller than this share of the picture's shorter side is a speck, not a subject
MIN_FRAME_SHARE = 0.02
#: the share of real inputs of each side that ``calibrate_other_side`` lets be taken for the
#: other side's
OTHER_SIDE_FALSE_ALARMS = 0.01
#: the most frames ``morph_steps`` asks for (the app shows 8; each frame is a VAE decode)
MAX_MORPH_STEPS = 256
#: what ``TranslationPipeline.__call__`` returns its translations as (diffusers' output_type)
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
#: a numpy (A, B, C) array with a last axis this short (and shorter than B) is refused as
# ambiguous rather than read as A images C pixels wide: (28, 28, 5) is more likely one
# image with 5 channels.
MAX_AMBIGUOUS_CHANNELS = 16
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm", ".pnm"}


def default_model_path() -> Path:
    """The pipeline shipped with the repository: ``<repo>/models/digits-to-fashion``."""
    import hjtranslate

    return Path(hjtranslate.__file__).resolve().parents[1] / "models" / "digits-to-fashion"


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
    (see the module docstring). ``latents``: the translations' latents ``(n, latent_dim)``, on
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


# -- input conversion ---------------------------------------------------------------------------
def _to_float01(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(
                f"{what}: integer pixel values must lie in 0..255, got {a.min()}..{a.max()}."
            )
        return a.astype(np.float32) / 255.0
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"{what} contains NaN or Inf values.")
        if a.size and (a.min() < -1e-3 or a.max() > 1 + 1e-3):
            raise ValueError(
                f"{what}: float pixel values must lie in [0, 1], got {a.min():.3g}..{a.max():.3g}"
                " (divide 0..255 values by 255, or pass uint8)."
            )
        return np.clip(a, 0.0, 1.0)
    raise ValueError(f"{what}: unsupported pixel type {a.dtype}.")


def _grey_from_channels(a: np.ndarray, notes: list[str]) -> np.ndarray:
    """``(H, W, C)`` float in [0, 1] with C in 1..4 -> ``(H, W)`` grey."""
    c = a.shape[2]
    if c == 1:
        return a[..., 0]
    colour, alpha = (a[..., :3], a[..., 3]) if c == 4 else (a[..., :1], a[..., 1]) if c == 2 else (a, None)
    if colour.shape[2] == 3:
        grey = colour @ np.asarray(LUMA, dtype=np.float32)
        notes.append("converted colour to grey (BT.601 luma)")
    else:
        grey = colour[..., 0]
    if alpha is not None and alpha.size and alpha.min() < 1.0:
        weight = float(alpha.sum())
        strokes = float((grey * alpha).sum() / weight) if weight > 0 else 0.0
        background = 1.0 if strokes < 0.5 else 0.0
        grey = alpha * grey + (1.0 - alpha) * background
        notes.append(
            f"composited transparency onto {'white' if background else 'black'} "
            f"({'dark' if background else 'light'} strokes)"
        )
    return grey


FRAMES_KEY = "hjtranslate_frames"  # frames of an opened file, kept in the copy's info
REDUCED_KEY = "hjtranslate_reduced"  # (width, height, factor) of a file reduced as it opened
#: a file larger than this on a side is reduced (averaging factor x factor blocks) as it is
#: opened: framing works at FRAME_WORK_SIDE anyway, and a 12000x12000 PNG as floats takes GBs
MAX_OPEN_SIDE = 4096
#: a preprocessed 28x28 image whose pixel range (0..1) is below this is blank: nothing to
#: translate (the app refuses it, ``translate`` skips it)
BLANK_RANGE = 0.1


def is_blank(x: torch.Tensor) -> bool:
    """Whether a preprocessed picture holds nothing to translate (``BLANK_RANGE``)."""
    return float(x.max() - x.min()) < BLANK_RANGE


def frame_count(img: Any) -> int:
    """Frames of an opened image (animations, multi-page TIFFs). A phone's JPEG that PIL opens
    as MPO counts as one: its other frames are previews or depth maps of the same photo."""
    return 1 if getattr(img, "format", None) == "MPO" else int(getattr(img, "n_frames", 1))


EXIF_ORIENTATION = 0x0112


def upright(img: Any) -> tuple[Any, str | None]:
    """A PIL image turned as its EXIF orientation tag says (phones store photos sideways or
    upside down and tag them), with a note; the image itself when it has no such tag."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: show the pixels as stored
        return img, None
    if orientation in (None, 1) or orientation not in range(2, 9):
        return img, None
    return ImageOps.exif_transpose(img), f"turned upright (EXIF orientation {orientation})"


def pil_to_array(img: Any, notes: list[str]) -> np.ndarray:
    """A PIL image -> ``(H, W)`` or ``(H, W, C)`` float in [0, 1] (an animated one's current
    frame, the first of a file), turned upright by its EXIF orientation."""
    frames = frame_count(img) if hasattr(img, "n_frames") else img.info.get(FRAMES_KEY, 1)
    if frames > 1:
        index = img.tell() if hasattr(img, "n_frames") else 0
        notes.append(f"used frame {index + 1} of {frames}")
    if REDUCED_KEY in img.info:
        w, h, factor = img.info[REDUCED_KEY]
        notes.append(f"reduced {w}x{h} by 1/{factor} as it was opened")
    img, note = upright(img)
    if note:
        notes.append(note)
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        notes.append(f"scaled 16-bit image (mode {mode}) by 1/65535")
        return np.asarray(img, dtype=np.float32) / 65535.0
    if mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if not np.isfinite(a).all():  # np.clip below would keep a NaN
            raise ValueError("The image has NaN or infinite pixel values.")
        peak = 1.0 if a.size and a.max() <= 1.0 else 255.0 if a.max() <= 255 else 65535.0
        notes.append(f"scaled mode-{mode} image by 1/{peak:g}")
        return np.clip(a / peak, 0.0, 1.0)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        img = img.convert("LA" if mode in ("LA", "La") else "RGBA")
    elif mode not in ("L", "RGB"):
        img = img.convert("RGB" if mode not in ("1",) else "L")
    return np.asarray(img).astype(np.float32) / 255.0


def image_too_large(path: str | Path, exc: Exception, what: str = "image") -> ValueError:
    """The error for an image that PIL refuses to decode (``Image.DecompressionBombError``: more
    than twice ``Image.MAX_IMAGE_PIXELS`` pixels, a possible decompression bomb)."""
    return ValueError(
        f"The {what} {str(path)!r} is too large to open safely ({exc}). Downscale it and try again."
    )


def _reduced(img: Any, factor: int) -> Any:
    """``img`` with every ``factor`` x ``factor`` block of pixels averaged."""
    from PIL import Image

    if img.mode.startswith("I;16"):  # reduce() does not take 16-bit modes: averaged here
        a = np.asarray(img, dtype=np.uint16)
        f_h, f_w = min(factor, a.shape[0]), min(factor, a.shape[1])  # a strip keeps its 1 pixel
        h, w = a.shape[0] - a.shape[0] % f_h, a.shape[1] - a.shape[1] % f_w
        blocks = a[:h, :w].reshape(h // f_h, f_h, w // f_w, f_w)
        return Image.fromarray(blocks.mean(axis=(1, 3)).round().astype(np.uint16))
    flat = img.convert("RGBA") if img.mode in ("P", "PA") else (
        img.convert("L") if img.mode == "1" else img)
    return flat.reduce(factor)


def _open_image(path: str | Path):
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    errors = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
    if p.is_dir():
        raise ValueError(f"{p} is a folder, not an image file: pass the image files in it "
                         "(`hjtranslate translate --input` also takes a folder on its own).")
    if not p.is_file():
        raise FileNotFoundError(f"No such image file: {p}")
    try:
        with Image.open(p) as img:
            img.load()
            factor = -(-max(img.size) // MAX_OPEN_SIDE)
            out = img.copy()
            if factor > 1:
                out = _reduced(out, factor)
                out.info[REDUCED_KEY] = (*img.size, factor)
            # a copy forgets the frames; pil_to_array notes that only the first was used
            out.info[FRAMES_KEY] = frame_count(img)
            return out
    except Image.DecompressionBombError as exc:
        raise image_too_large(p, exc) from None
    except errors as exc:
        raise ValueError(f"{p} is not a readable image ({type(exc).__name__}: {exc}).") from None


def _as_array(item: Any, notes: list[str], single: bool, what: str) -> list[np.ndarray]:
    """One input (or a batch when ``single`` is False) -> list of ``(H, W[, C])`` float arrays."""
    from PIL import Image

    if isinstance(item, (str, Path)):
        item = _open_image(item)
    if isinstance(item, Image.Image):
        return [pil_to_array(item, notes)]
    if torch.is_tensor(item):
        t = item.detach().cpu()
        if t.dim() == 2:
            return [_to_float01(t.numpy(), what)]
        if t.dim() == 3 and single:  # (C, H, W)
            if t.shape[0] not in (1, 2, 3, 4):
                raise ValueError(f"{what}: a tensor image must be (C, H, W) with C <= 4, got "
                                 f"{tuple(t.shape)}.")
            return [_to_float01(t.permute(1, 2, 0).numpy(), what)]
        if t.dim() == 3:  # (N, H, W)
            a = _to_float01(t.numpy(), what)
            return list(a)
        if t.dim() == 4 and not single:  # (N, C, H, W)
            if t.shape[1] not in (1, 2, 3, 4):
                raise ValueError(f"{what}: tensors must be (N, C, H, W) with C in 1..4, got "
                                 f"{tuple(t.shape)}.")
            a = _to_float01(t.permute(0, 2, 3, 1).numpy(), what)
            return list(a)
        raise ValueError(
            f"{what}: cannot read a tensor of shape {tuple(t.shape)} as "
            + ("one image (a list holds one image an item); use (H, W) or (C, H, W) with C in "
               "1..4, or pass a batch by itself, not in a list." if single else
               "images; use (H, W), (N, H, W) or (N, C, H, W), or a list of (C, H, W) images.")
        )
    if isinstance(item, np.ndarray):
        a = item
        if a.ndim == 2:
            return [_to_float01(a, what)]
        if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):  # (H, W, C)
            return [_to_float01(a, what)]
        if a.ndim == 3 and not single and a.shape[2] <= MAX_AMBIGUOUS_CHANNELS and a.shape[2] < a.shape[1]:
            raise ValueError(
                f"{what}: an array of shape {a.shape} reads as one image with {a.shape[2]} "
                f"channels (at most 4 are supported) or as {a.shape[0]} images {a.shape[2]} "
                "pixels wide: pass (H, W, C) with C in 1..4, or a list of (H, W) images."
            )
        if a.ndim == 3 and not single:  # (N, H, W)
            return list(_to_float01(a, what))
        if a.ndim == 4 and not single and a.shape[3] in (1, 2, 3, 4):  # (N, H, W, C)
            return list(_to_float01(a, what))
        if single:
            chw = (" (channels first? a numpy image is (H, W, C): a.transpose(1, 2, 0))"
                   if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) else "")
            raise ValueError(
                f"{what}: cannot read an array of shape {a.shape} as one image (a list holds one "
                f"image an item){chw}; use (H, W) or (H, W, C) with C in 1..4, or pass a batch by "
                "itself, not in a list."
            )
        raise ValueError(
            f"{what}: cannot read an array of shape {a.shape} as images; use (H, W), (H, W, C), "
            "(N, H, W) or (N, H, W, C) with C in 1..4."
        )
    raise ValueError(
        f"{what}: expected a PIL image, a file path, a numpy array or a torch tensor, got "
        f"{type(item).__name__}."
    )


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A grey ``(H, W)`` image resized to ``(h, w)``, bilinear with antialiasing."""
    if w == 1 and h != 1:  # torch's antialiased CPU kernel copies the first row into every row
        return _resize(x.T, 1, h).T
    return F.interpolate(x[None, None], size=(h, w), mode="bilinear", antialias=True,
                         align_corners=False)[0, 0].clamp(0.0, 1.0)


def _otsu(x: torch.Tensor) -> tuple[float, float, float] | None:
    """Otsu's threshold of a grey image in [0, 1] and the mean levels below and above it; None
    for an image of one level (no threshold leaves pixels on both sides)."""
    p = torch.histc(x, 256, 0.0, 1.0).double()
    p /= p.sum()
    levels = torch.linspace(0.0, 1.0, 256, dtype=torch.float64)
    w0, m0 = p.cumsum(0), (p * levels).cumsum(0)
    mean, w1 = m0[-1], 1.0 - w0
    both = (w0 > 1e-12) & (w1 > 1e-12)
    if not bool(both.any()):
        return None
    between = torch.where(both, (mean * w0 - m0) ** 2 / (w0 * w1).clamp_min(1e-12), -1.0)
    i = int(between.argmax())
    return float(levels[i]), float(m0[i] / w0[i]), float((mean - m0[i]) / w1[i])


def _subject(mask: torch.Tensor) -> torch.Tensor:
    """The part of an ink mask that is the subject: its largest 8-connected blot, and the blots
    that reach into that blot's box grown by half its size on every side."""
    from scipy import ndimage

    labels, sizes, largest = _blots(mask.numpy())
    if len(sizes) <= 2:  # one blot or none
        return mask
    boxes = ndimage.find_objects(labels)
    main = boxes[largest - 1]
    grow = [max(1, (s.stop - s.start) // 2) for s in main]
    near = [i + 1 for i, b in enumerate(boxes) if b is not None and all(
        b[d].start < main[d].stop + grow[d] and b[d].stop > main[d].start - grow[d]
        for d in (0, 1))]
    return torch.from_numpy(np.isin(labels, near))


#: the coarse side at which the page and the light are found (they vary slowly)
PAPER_WORK_SIDE = 256


def _coarse(x: torch.Tensor, side: int = PAPER_WORK_SIDE) -> torch.Tensor:
    h, w = x.shape
    if max(h, w) <= side:
        return x
    scale = side / max(h, w)
    return _resize(x, max(1, round(h * scale)), max(1, round(w * scale)))


def _border_mask(h: int, w: int) -> torch.Tensor:
    """The outer ``max(1, min(H, W) // 14)`` pixels of an ``(h, w)`` picture (rule 3)."""
    b = max(1, min(h, w) // 14)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = True, True, True, True
    return mask


def _border(x: torch.Tensor) -> torch.Tensor:
    """The picture's border pixels (rule 3)."""
    return x[_border_mask(*x.shape)]


def _blots(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The 8-connected blots of ``mask``: their labels, sizes (0 for the background) and the
    label of the largest (0 where there is none)."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels, sizes, int(sizes.argmax())


def _smallest_rectangle(points: np.ndarray) -> float:
    """The area of the smallest rectangle, at any angle, around 2-D ``points`` (one side lies
    along an edge of their convex hull); 0 for points on a line."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = points[ConvexHull(points).vertices].astype(np.float64)
    except (QhullError, ValueError):
        return 0.0
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    best = np.inf
    for a in angles:
        turn = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        r = hull @ turn.T
        best = min(best, float(np.ptp(r[:, 0]) * np.ptp(r[:, 1])))
    return best


def _page(x: torch.Tensor, notes: list[str]) -> torch.Tensor:
    """A photo of a light page on a darker desk with the desk painted over in the page's paper
    (rule 5), so that the page's border decides the polarity and its ink is the subject; the
    picture as it is where no page is found. The desk is the picture's border (its median),
    the paper the picture's lightest tenth, at least 0.15 apart; a page is then the largest blot
    lighter than half way between them, filled: at least a fifth of the picture, a
    quadrilateral (it fills 85 % of the smallest rectangle around it, at any slant; a disc fills
    79 %), and mostly paper (what is written on it is dark, thin and inside it; a light digit
    drawn on black, even a 0, has wide holes or is no quadrilateral)."""
    from scipy import ndimage

    c = _coarse(x)
    desk, paper_level = float(_border(c).median()), float(torch.quantile(c, 0.9))
    if paper_level - desk < 0.15:
        return x
    light = (c > (desk + paper_level) / 2).numpy()
    labels, _, largest = _blots(light)
    if largest == 0:
        return x
    paper = labels == largest
    page = ndimage.binary_fill_holes(paper)
    dark = page & ~light  # what is written on the page (or the dark inside a light 0 or 8)
    area, written = int(page.sum()), int(dark.sum())
    if not 0.2 <= area / page.size <= 0.97 or not 0 < written <= 0.15 * area:
        return x
    if ndimage.distance_transform_edt(dark).max() > 0.07 * area ** 0.5:
        return x  # no pen stroke is that wide: the holes of a light digit drawn on black
    if area < 0.85 * _smallest_rectangle(np.argwhere(page & ~ndimage.binary_erosion(page))):
        return x
    # the desk and the page's blurred edge (two coarse pixels in) become paper
    inside = ndimage.binary_erosion(page, iterations=2)
    if not inside.any():  # a page two coarse pixels thin: nothing of it is sure to be paper
        return x
    mask = F.interpolate(torch.from_numpy(inside)[None, None].float(), size=x.shape,
                         mode="nearest")[0, 0] > 0.5
    shade = float(x[mask].median())
    notes.append(f"painted the desk around the page with its paper ({shade:.2f})")
    return torch.where(mask, x, torch.tensor(shade))


def _even_light(x: torch.Tensor, notes: list[str]) -> torch.Tensor:
    """Paper lit unevenly (from one side, or brighter in the middle) divided by its light
    (rule 5): a quadratic surface fitted to the paper, first along the border, then to every
    pixel close to it. Only light paper whose light varies by more than 0.15 is changed."""
    c = _coarse(x, 128).double()
    h, w = c.shape

    def terms(rows: int, cols: int) -> list[torch.Tensor]:
        v = torch.linspace(-1.0, 1.0, rows, dtype=torch.float64)[:, None].expand(rows, cols)
        u = torch.linspace(-1.0, 1.0, cols, dtype=torch.float64)[None, :].expand(rows, cols)
        return [torch.ones_like(u), u, v, u * u, u * v, v * v]

    basis = torch.stack([t.flatten() for t in terms(h, w)], 1)
    border = _border_mask(h, w)
    use, values = border, c.flatten()
    for _ in range(4):
        coef = torch.linalg.lstsq(basis[use.flatten()], values[use.flatten()]).solution
        residual = values - basis @ coef
        spread = 1.4826 * float(residual[use.flatten()].abs().median())
        use = (residual.abs() <= max(0.04, 3 * spread)).reshape(h, w)
        if int(use.sum()) < 6 * len(coef):
            return x
    surface = (basis @ coef).reshape(h, w)
    low, high, mean = float(surface.min()), float(surface.max()), float(surface.mean())
    # where no paper shows (a garment filling the picture) the surface is a guess: it may not
    # reach beyond what it takes where paper was fitted, nor above white; the paper is the
    # border's (a garment up to the picture's edges leaves too little of it); and the light
    # explains the paper: what it leaves is small beside what it changes (a faint garment taken
    # in as paper leaves a wide spread)
    fitted = surface[use]
    if (mean <= 0.5 or high - low <= 0.15 or low <= 0.1 or high > 1.05 or spread > (high - low) / 12
            or low < float(fitted.min()) - 0.05 or high > float(fitted.max()) + 0.05
            or int((use & border).sum()) < 0.8 * int(border.sum())):
        return x
    # the smooth surface, bilinear from the coarse grid (its corners are the picture's corners)
    light = F.interpolate(surface[None, None].float(), size=x.shape, mode="bilinear",
                          align_corners=True)[0, 0].clamp_min(low)
    notes.append(f"evened out the light on the paper ({low:.2f} to {high:.2f})")
    return (x / light).clamp(0.0, 1.0)


def _ink_at(m: np.ndarray, rr: np.ndarray) -> np.ndarray:
    """Ink of the mask ``m`` at row ``rr[c]`` of each column ``c``; outside it: paper."""
    h, w = m.shape
    inside = (rr >= 0) & (rr < h)
    out = np.zeros(w, dtype=bool)
    out[inside] = m[rr[inside], np.arange(w)[inside]]
    return out


def _ruled_lines(ink: np.ndarray) -> np.ndarray:
    """The pixels of ruled (or squared) paper's printed lines in an ink mask: thin rows of ink,
    tilted by up to 15 degrees, that cover at least 40 % of the picture's width, run across at
    least 45 % of it and have paper above and below most of their length; at least three of
    them (a digit's long stroke is not a ruling). A line pixel where ink goes on above and
    below the line (a stroke crossing it) is kept; the rows just beside a line (its soft
    edges) go with it."""
    left = ink.copy()  # squared paper: the columns' pass sees the rows' lines gone
    for transposed in (False, True):
        m = left.T if transposed else left
        h, w = m.shape
        rows, cols = np.nonzero(m)
        everywhere = np.arange(w)
        best, best_shift, peak = None, None, -1
        for angle in np.deg2rad(np.arange(-15.0, 15.01, 0.5)):
            shift = np.round(np.tan(angle) * (everywhere - w / 2)).astype(np.int64)
            counts = np.bincount(rows - shift[cols] + w, minlength=h + 2 * w + 1)
            if counts.max() > peak:
                best, best_shift, peak = counts, shift, counts.max()
        on = best >= 0.4 * w
        starts = np.flatnonzero(on & ~np.r_[False, on[:-1]])
        ends = np.flatnonzero(on & ~np.r_[on[1:], False])
        bands = []
        for a, e in zip(starts, ends, strict=True):
            if e - a + 1 > 0.015 * h + 2:
                continue  # too thick for a printed line
            band = [(a + r - w + best_shift) for r in range(e - a + 1)]  # its row in each column
            inked = np.zeros(w, dtype=bool)
            for rr in band:
                inked |= _ink_at(m, rr)
            reach = np.flatnonzero(inked)
            beside = _ink_at(m, band[0] - 2) | _ink_at(m, band[-1] + 2)
            # a printed line has paper above and below it, but where a stroke crosses it; a
            # digit's curved stroke goes on above or below
            if (reach.max() - reach.min() >= 0.45 * w
                    and (beside & inked).sum() <= 0.4 * inked.sum()):
                bands.append(band)
        if len(bands) < 3:
            continue
        found = np.zeros_like(m)
        for band in bands:
            crossing = _ink_at(m, band[0] - 2) & _ink_at(m, band[-1] + 2)
            for rr in [band[0] - 1, *band, band[-1] + 1]:
                take = (rr >= 0) & (rr < h) & ~crossing
                found[rr[take], everywhere[take]] = True
        m &= ~found  # a view of ``left``
    return ink & ~left


def _frame(x: torch.Tensor, framing: str, notes: list[str]) -> torch.Tensor | None:
    """A light-on-dark picture framed as the dataset ``framing`` framed its own (rule 5), or
    None where it has no clear ink or its ink box is a speck."""
    box_side, by_mass, on_paper = FRAMINGS[framing]
    h, w = x.shape
    shown = 1.0  # the notes give the box in the picture's own pixels
    if max(h, w) > FRAME_WORK_SIDE:
        scale = FRAME_WORK_SIDE / max(h, w)
        x = _resize(x, max(1, round(h * scale)), max(1, round(w * scale)))
        shown = max(h, w) / max(x.shape)
    levels = _otsu(x)
    if levels is None or levels[2] - levels[1] < 0.1:
        return None
    if on_paper:
        lines = torch.from_numpy(_ruled_lines((x > levels[0]).numpy()))
        if bool(lines.any()):
            x = torch.where(lines, x[~lines].median(), x)
            notes.append("took out the paper's ruled lines")
            levels = _otsu(x)
            if levels is None or levels[2] - levels[1] < 0.1:
                return None
    # two clear levels once the shorter side is shrunk to the final size, where fine noise has
    # averaged out (not the longer: a digit in a long strip would average out too); after the
    # ruled lines went, whose haze would hide a small digit there
    if min(h, w) > IMAGE_SIZE:
        scale = IMAGE_SIZE / min(h, w)
        coarse = _otsu(_resize(x, max(1, round(h * scale)), max(1, round(w * scale))))
        if coarse is None or coarse[2] - coarse[1] < 0.05:  # uniform noise, 300x300: 0.04
            return None
    threshold, paper, ink_level = levels
    ink = x > threshold
    background = float(x[~ink].median()) if bool((~ink).any()) else 0.0
    # the box takes in the strokes' soft edges (half way to the threshold) of the subject: the
    # largest blot of ink and what lies near it (a digit's or a sandal's separate strokes), not
    # specks of dust elsewhere; its extreme 0.2 % of ink pixels at each side are left out
    soft = _subject(x > (background + threshold) / 2)
    rows, cols = torch.nonzero(soft, as_tuple=True)
    q = torch.tensor([0.002, 0.998])
    (top, bottom), (left, right) = (torch.quantile(v.float(), q).round().long().tolist()
                                    for v in (rows, cols))
    box_h, box_w = bottom - top + 1, right - left + 1
    if max(box_h, box_w) < MIN_FRAME_SHARE * min(x.shape):
        return None
    bright = float(torch.quantile(x[ink], 0.99))
    crop = ((x[top:bottom + 1, left:right + 1] - background) / max(bright - background, 1e-6))
    scale = box_side / max(box_h, box_w)
    nh, nw = max(1, round(box_h * scale)), max(1, round(box_w * scale))
    small = _resize(crop.clamp(0.0, 1.0), nh, nw)
    if by_mass:  # MNIST: the centre of mass at the centre of the 28x28 field
        total = float(small.sum()) or 1.0
        cy = float((small.sum(1) * torch.arange(nh)).sum()) / total
        cx = float((small.sum(0) * torch.arange(nw)).sum()) / total
        y0 = min(max(round(IMAGE_SIZE / 2 - 0.5 - cy), 0), IMAGE_SIZE - nh)
        x0 = min(max(round(IMAGE_SIZE / 2 - 0.5 - cx), 0), IMAGE_SIZE - nw)
    else:
        y0, x0 = (IMAGE_SIZE - nh) // 2, (IMAGE_SIZE - nw) // 2
    out = torch.zeros(IMAGE_SIZE, IMAGE_SIZE)
    out[y0:y0 + nh, x0:x0 + nw] = small
    if background > 0.05 or bright < 0.9:
        notes.append(f"stretched the contrast (background {background:.2f} to 0, ink "
                     f"{bright:.2f} to 1)")
    shown_w, shown_h = min(w, round(box_w * shown)), min(h, round(box_h * shown))
    notes.append(f"framed the {shown_w}x{shown_h} box around the ink as {framing} does "
                 f"({box_side}x{box_side}, centred{' by mass' if by_mass else ''})"
                 + (f", out of {w}x{h}" if (shown_w, shown_h) != (w, h) else ""))
    return out


def _normalise(a: np.ndarray, notes: list[str], framing: str | None = None) -> torch.Tensor:
    """``(H, W[, C])`` float in [0, 1] -> ``(28, 28)`` light-on-dark grey (rules 2-5)."""
    if a.ndim == 3:
        a = _grey_from_channels(a, notes)
    h, w = a.shape
    if h < 1 or w < 1:
        raise ValueError(f"Empty image of size {w}x{h}.")
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    framed = framing is not None and (h, w) != (IMAGE_SIZE, IMAGE_SIZE)
    if framed:  # rule 5's paper, before rule 3 reads the border; the light first, so that
        x = _even_light(x, notes)  # paper lit from one side is not taken for a page on a desk
        if FRAMINGS[framing].on_paper:
            x = _page(x, notes)
    level = float(_border(x).mean())
    if level > 0.5:
        x = 1.0 - x
        level = 1.0 - level
        notes.append(f"inverted (light background, border mean {1 - level:.2f}; MNIST is light on dark)")
    if framed:
        out = _frame(x, framing, notes)
        if out is not None:
            return out
    if h != w and max(h, w) > MAX_PAD_SIDE:
        h2, w2 = (max(1, round(n * MAX_PAD_SIDE / max(h, w))) for n in (h, w))
        x = _resize(x, h2, w2)
        notes.append(f"shrank {w}x{h} to {w2}x{h2} (to pad it to a square)")
        h, w = h2, w2
    if h != w:
        s = max(h, w)
        top, left = (s - h) // 2, (s - w) // 2
        x = F.pad(x[None, None], (left, s - w - left, top, s - h - top), value=level)[0, 0]
        notes.append(f"padded {w}x{h} to {s}x{s}")
    if x.shape[0] != IMAGE_SIZE:
        s = x.shape[0]
        x = _resize(x, IMAGE_SIZE, IMAGE_SIZE)
        notes.append(f"resized {s}x{s} to {IMAGE_SIZE}x{IMAGE_SIZE}")
    return x


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


def _check_frame(frame: Any) -> bool:
    if not isinstance(frame, (bool, np.bool_)):
        raise ValueError(f"frame must be True or False, got {frame!r}.")
    return bool(frame)


def preprocess(images: Any, framing: str | None = None) -> tuple[torch.Tensor, list[list[str]]]:
    """Any supported input -> ``(n, 1, 28, 28)`` float in [0, 1] and per-image notes;
    ``framing``: a dataset of ``FRAMINGS`` whose framing pictures that are not 28x28 get (rule
    5), or None."""
    if framing is not None and framing not in FRAMINGS:
        raise ValueError(f"framing={framing!r}: use one of {sorted(FRAMINGS)} or None.")
    if isinstance(images, (list, tuple)):
        items = [(item, True, f"image {i}") for i, item in enumerate(images)]
    else:
        items = [(images, False, "images")]
    out: list[torch.Tensor] = []
    notes: list[list[str]] = []
    for item, single, what in items:
        shared: list[str] = []
        arrays = _as_array(item, shared, single, what)
        for a in arrays:
            own = list(shared)
            out.append(_normalise(a, own, framing))
            notes.append(own)
    if not out:
        raise ValueError("No images given.")
    return torch.stack(out)[:, None], notes


def to_pil(x: torch.Tensor) -> list:
    """``(n, 1, 28, 28)`` in [0, 1] -> grey PIL images."""
    from PIL import Image

    arr = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(a[0]) for a in arr]  # 2-D uint8: mode "L"


# -- loading helpers ----------------------------------------------------------------------------
def _subpath(root: Path, name: Any, key: str) -> Path:
    """A part's folder named in the index; refuses names that leave the pipeline folder."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{INDEX_FILE}: {key!r} must be a subfolder name, got {name!r}.")
    return root / name


def _check_vae_folder(folder: Path, what: str) -> None:
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
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"Could not download {repo_id!r}: {first}") from None


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


def _looks_like_hub_id(text: str) -> bool:
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
    if not _looks_like_hub_id(text):
        moved = [p for p, kind in _interrupted_saves(path) if kind == "old"]
        hint = (f" (a save into it was killed: {moved[-1]} holds the pipeline it replaced; "
                f"rename it back to {path.name}, or save again)" if moved else "")
        raise CheckpointError(f"{what}: no such folder: {text}{hint}")
    try:
        return _hub_snapshot(text, **hub)
    except CheckpointError as exc:  # name both readings of the argument
        raise CheckpointError(
            f"{what}: there is no local folder {path.absolute()}, and as a Hub id: {exc}"
        ) from None


def _sentence(exc: BaseException) -> str:
    """An error's message ending in a full stop, to append advice to."""
    text = str(exc).strip()
    return text if text.endswith(".") else f"{text}."


def _copy_part(src: Path, dst: Path) -> None:
    """Copy a part's folder, following symlinks (Hub cache), skipping pickles and hidden files."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n.startswith(".") or n.lower().endswith(PICKLE_SUFFIXES)]

    shutil.copytree(src, dst, ignore=ignore)


def _same_part(written: Path, source: Path) -> bool:
    """Whether a part saved from memory into ``written`` is what ``source`` holds: every
    safetensors file has the same tensors there, every JSON file the same settings (keys that
    start with "_", such as diffusers' version, aside); other files (cards) are not compared."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def settings(path: Path) -> Any:
        value = json.loads(path.read_text())
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
        self.source_dataset, self.target_dataset = str(source_dataset), str(target_dataset)

        def names(given: Any, from_map: Any, dataset: str, judge: Any) -> list[str] | None:
            for cand in (given, from_map, CLASSES.get(dataset), getattr(judge, "classes", None)):
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
        #: folders the parts were loaded from (copied by save_pretrained to keep their cards,
        #: where the parts are unchanged)
        self._sources = dict(sources or {})
        #: where ``source_likeness`` says an input looks like the other side's, measured on
        #: real test images by ``calibrate_other_side`` (None: not measured)
        self.other_side = _check_other_side(other_side)

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
        vae: str | Path,
        map: HJMap | str | Path,
        judge_source: str | Path | None = None,
        judge_target: str | Path | None = None,
        source_dataset: str = "mnist",
        target_dataset: str = "fashion-mnist",
        source_class_names: list[str] | None = None,
        target_class_names: list[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> TranslationPipeline:
        """Bundle parts: ``vae`` an AutoencoderKL folder (or Hub id) with ``latent_stats.json``,
        or an encoder plugin's instance (see :class:`~hjtranslate.encoders.Encoder`);
        ``map`` an :class:`HJMap` or its folder / Hub id; judges a judge folder, a shipped
        judge's name (``"mnist"``, ``"fashion-mnist"``), a ``Judge`` or ``None``."""
        from hjtranslate_plugins.vae import VAEEncoder

        from .judges import CLASSES, Judge, load_judge, models_dir

        dtype, device = check_dtype(dtype), check_device(device)

        if isinstance(vae, Encoder):
            vae_dir, encoder = None, vae.to(device)
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
        return cls(encoder, map, judges["judge_source"], judges["judge_target"], source_dataset,
                   target_dataset, source_class_names, target_class_names, sources=sources)

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
        saved = str(index.get("_hjtranslate_version", "0"))
        if _version_tuple(saved) > _version_tuple(__version__):
            raise CheckpointError(
                f"This pipeline was written by hjtranslate {saved}, newer than the installed "
                f"{__version__}. Upgrade with: pip install -U 'hjtranslate>={saved}'."
            )
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
            )
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
        shutil.rmtree(out / key)
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
        datasets = [HUB_DATASETS.get(d, d) for d in (self.source_dataset, self.target_dataset)]
        data = ModelCardData(
            library_name="hjtranslate",
            license="apache-2.0",
            pipeline_tag="image-to-image",
            tags=["optimal-transport", "hamilton-jacobi", "image-to-image", "hjtranslate",
                  self.source_dataset, self.target_dataset],
            datasets=list(dict.fromkeys(datasets)),
            metrics=hub_metric_names(metrics),
        )
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
            + (" and judge classifiers (`judge_source/`, `judge_target/`)"
               if self.judge_source is not None or self.judge_target is not None else "")
            + f". Class k of {self.source_dataset} is translated to class k of "
            f"{self.target_dataset}, and back.", "",
            "```python",
            "from hjtranslate.pipeline import TranslationPipeline",
            f"pipe = TranslationPipeline.from_pretrained({name!r}{revision_argument(revision)})",
            "out = pipe(images, classes=None)  # classes detected by the judge when None",
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
                    commit_message: str | None = None, token: str | bool | None = None):
        """Save into a temporary folder and upload it as one commit (creating the repo, and the
        branch ``revision``, if needed). Returns the ``CommitInfo`` (a str: the commit URL)."""
        import tempfile

        from .hub import push_folder

        with tempfile.TemporaryDirectory(prefix="hjt-pipeline-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "pipeline", repo_id=repo_id)
            return push_folder(
                folder, repo_id, private=private, revision=revision,
                commit_message=commit_message or "Upload hjtranslate TranslationPipeline",
                token=token,
            )

    # -- use ---------------------------------------------------------------------------------
    @staticmethod
    def preprocess(images: Any, framing: str | None = None) -> tuple[torch.Tensor, list[list[str]]]:
        """Images of any supported kind -> ``(n, 1, 28, 28)`` in [0, 1] and per-image notes
        (``framing``: see :meth:`framing`)."""
        return preprocess(images, framing)

    def _preprocess(self, images: Any, side: str, frame: Any) -> tuple[torch.Tensor, list[list[str]]]:
        """:func:`preprocess` with the framing of ``side``'s dataset, or none (``frame=False``)."""
        return preprocess(images, self.framing(side) if _check_frame(frame) else None)

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
        pictures that are not 28x28 unframed (rule 5 of the module's docstring)."""
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
        energy = []
        with torch.no_grad():  # each judge sees the picture framed as its dataset frames them
            for side, judge in (("source", self.judge_source), ("target", self.judge_target)):
                x = self._preprocess(images, side, frame)[0]
                energy.append(judge.logits(x).float().logsumexp(-1).cpu())
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
        likeness = self.source_likeness(images, frame)
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
            raise ValueError(f"classes must be an int or a list of {n} ints, got {classes!r}.")
        if len(classes) != n:
            raise ValueError(f"Got {len(classes)} classes for {n} images.")
        out = []
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) and not (
                isinstance(c, float) and c.is_integer()
            ):
                raise ValueError(f"Classes must be integers, got {c!r}.")
            out.append(int(c))
        k = self.num_classes
        bad = [c for c in out if c < 0 or (k is not None and c >= k)]
        if bad:
            span = f"0..{k - 1}" if k is not None else ">= 0"
            raise ValueError(f"Class {bad[0]} is out of range: classes must lie in {span}.")
        return out

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
        rule 5 of the module's docstring). ``batch_size``: images encoded, mapped and decoded
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
            k_idx = torch.tensor(labels).clamp_max(probs.shape[1] - 1)
            confidences = probs[torch.arange(n), k_idx].tolist()
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


def check_dtype(dtype: Any) -> torch.dtype:
    """The map's dtype: float32 or float64 (as a torch dtype or its name). Half precision
    cannot run the heads' matrix inverses on the CPU."""
    named = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if named not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64 (the map's precision), "
                         f"got {dtype!r}.")
    return named


def check_morph_steps(value: Any, name: str = "morph_steps") -> None:
    """A clear error unless ``value`` is 0 (no frames) or an int in 2..MAX_MORPH_STEPS."""
    if not is_int(value) or value < 0 or value == 1 or value > MAX_MORPH_STEPS:
        raise ValueError(f"{name} must be 0 (no frames) or an int from 2 to {MAX_MORPH_STEPS} "
                         f"(frames from the input to the translation), got {value!r}.")


# -- the `hjtranslate translate` command -------------------------------------------------------
def _collect_inputs(path: Path, one_of_many: bool = False
                    ) -> tuple[list[tuple[Path, Any]], list[dict[str, str]]]:
    """Images of a file or a folder (not recursive, sorted by name), and the skipped files. A
    file that is not an image is an error when it is the only input, else skipped (a shell glob
    picks up a README as a folder would hold one)."""
    if not path.exists():
        raise FileNotFoundError(f"--input {path}: no such file or folder.")
    if path.is_file():
        if not one_of_many:
            return [(path, _open_image(path))], []
        try:
            return [(path, _open_image(path))], []
        except ValueError as exc:
            return [], [{"input": str(path), "reason": str(exc)}]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images, skipped = [], []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        skipped.append({"input": str(sub), "reason": "a folder inside the --input folder (not "
                        "searched: name it as an --input of its own)"})
    for p in files:
        try:
            images.append((p, _open_image(p)))
        except ValueError as exc:
            skipped.append({"input": str(p), "reason": str(exc)})
    if not images:
        folders = sum(1 for s in skipped if Path(s["input"]).is_dir())
        detail = "; ".join(([f"{len(skipped) - folders} files skipped: not images"]
                            if len(skipped) > folders else [])
                           + ([f"{folders} folders inside, not searched: name them as --input"]
                              if folders else []))
        raise ValueError(f"--input {path}: the folder holds no images"
                         + (f" ({detail})." if detail else "."))
    return images, skipped


def _strip(frames: list) -> Any:
    from PIL import Image

    strip = Image.new("L", (IMAGE_SIZE * len(frames), IMAGE_SIZE))
    for i, frame in enumerate(frames):
        strip.paste(frame, (IMAGE_SIZE * i, 0))
    return strip


def hub_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--revision`` and ``--force-download`` of `translate` and `app`, for a Hub ``--model``;
    a local folder takes neither."""
    hub = {"revision": getattr(args, "revision", None),
           "force_download": bool(getattr(args, "force_download", False))}
    model = getattr(args, "model", None)
    if (hub["revision"] or hub["force_download"]) and (model is None or Path(model).expanduser().is_dir()):
        raise ValueError(f"--revision and --force-download apply to a Hub --model; "
                         f"{model or 'the shipped pipeline'} is a local folder.")
    return hub


def cmd_translate(args: argparse.Namespace) -> int:
    """``hjtranslate translate --model ID_OR_FOLDER --input IMG_OR_FOLDER [--class K]
    [--direction forward|backward] [--morph-steps N] --out DIR``."""
    morph_steps = int(getattr(args, "morph_steps", 0) or 0)
    check_morph_steps(morph_steps, "--morph-steps")
    model = args.model
    if model is None:
        model = default_model_path()
        if not (model / INDEX_FILE).is_file():
            raise FileNotFoundError(
                f"The shipped pipeline {model} is missing: train it (digits-to-fashion) or pass "
                "--model a pipeline folder or Hub id."
            )
    out_dir = Path(args.out).expanduser()
    check_folder_path(out_dir, "--out")
    in_paths = [Path(p).expanduser() for p in
                ([args.input] if isinstance(args.input, (str, Path)) else args.input)]
    for in_path in in_paths:
        folder = in_path if in_path.is_dir() else in_path.parent
        if out_dir.resolve() == folder.resolve():
            raise ValueError(f"--out {out_dir} is the folder of the --input images: a later run "
                             "would translate these translations too. Write them to another folder.")
    inputs, skipped, seen = [], [], set()
    for in_path in in_paths:
        try:
            found, passed_over = _collect_inputs(in_path, one_of_many=len(in_paths) > 1)
        except ValueError as exc:  # a folder without images, among several paths
            if len(in_paths) == 1:
                raise
            found, passed_over = [], [{"input": str(in_path), "reason": str(exc)}]
        for path, image in found:  # an image named twice (a file and its folder) is done once
            if path.resolve() not in seen:
                seen.add(path.resolve())
                inputs.append((path, image))
        skipped += passed_over
    if not inputs:
        raise ValueError(f"--input: none of the {len(in_paths)} paths holds an image "
                         f"({len(skipped)} files skipped: not images).")
    from huggingface_hub import constants

    if (not constants.HF_HUB_OFFLINE and not Path(model).expanduser().exists()
            and _looks_like_hub_id(str(model))):
        # the Hub lookup can take a while where the network is slow or blocked: say what is asked
        print(f"note: no local folder {model}; looking it up as a Hub repo id "
              "(HF_HUB_OFFLINE=1 keeps to the local cache).", file=sys.stderr)
    pipe = TranslationPipeline.from_pretrained(model, **hub_options(args))
    in_side = "source" if args.direction == "forward" else "target"
    pictures, conv = pipe._preprocess([img for _, img in inputs], in_side, args.frame)
    blank = [is_blank(x) for x in pictures]
    for (path, _), empty, notes in zip(inputs, blank, conv, strict=True):
        if empty:
            skipped.append({"input": str(path), "reason": "blank once framed and shrunk to 28x28 "
                            "(no ink or strokes to translate)" + (f"; {', '.join(notes)}"
                                                                   if notes else "")})
    kept = [i for i, empty in enumerate(blank) if not empty]
    inputs = [inputs[i] for i in kept]
    if not inputs:
        raise ValueError(f"--input: every image is blank once shrunk to 28x28 ({len(blank)}): "
                         "nothing to translate.")
    # the pictures as preprocessed above (28x28: not framed again), their notes kept
    result = pipe(pictures[kept], classes=args.klass, direction=args.direction,
                  morph_steps=morph_steps)
    result.notes = [conv[i] + notes for i, notes in zip(kept, result.notes, strict=True)]
    other = (pipe.looks_like_other_side([img for _, img in inputs], in_side, args.frame)
             if pipe.tells_sides_apart else [False] * len(inputs))
    other_dataset = pipe.target_dataset if in_side == "source" else pipe.source_dataset
    other_direction = "backward" if args.direction == "forward" else "forward"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"Cannot create --out {out_dir} ({exc.strerror}): name a folder this "
                         "process can write to.") from None
    in_names, out_names = ((pipe.source_class_names, pipe.target_class_names)
                           if args.direction == "forward"
                           else (pipe.target_class_names, pipe.source_class_names))
    earlier = _earlier_translations(out_dir)
    # an earlier run's output of another input keeps its name; the same input's is replaced
    done = {path.resolve() for path, _ in inputs}  # what this run translates
    taken = {Path(item["output"]).name for item in earlier
             if Path(item["input"]).resolve() not in done}
    used: set[str] = set()
    items = []
    for i, (path, _) in enumerate(inputs):
        stem = path.stem if path.stem not in used else f"{path.stem}_{path.suffix.lstrip('.')}"
        while stem in used or f"{stem}_{args.direction}.png" in taken:
            stem = f"{stem}_{i}"
        used.add(stem)
        target = out_dir / f"{stem}_{args.direction}.png"
        result.images[i].save(target)
        morph = None
        if result.frames is not None:
            morph = out_dir / f"{stem}_{args.direction}_morph.png"
            _strip(result.frames[i]).save(morph)
        k_in, k_out = result.source_classes[i], result.target_classes[i]
        items.append({
            "input": str(path),
            "direction": args.direction,
            "output": str(target),
            "morph": None if morph is None else str(morph),
            "input_class": k_in,
            "input_class_name": in_names[k_in] if in_names and k_in < len(in_names) else None,
            "output_class": k_out,
            "output_class_name": out_names[k_out] if out_names and k_out < len(out_names) else None,
            "class_detected": args.klass is None,
            "detection_confidence": (None if result.detection_confidences is None
                                     else result.detection_confidences[i]),
            "confidence": None if result.confidences is None else result.confidences[i],
            "notes": result.notes[i],
            "looks_like_other_side": other[i],
        })
        conf = ("" if result.confidences is None
                else f" (target judge's confidence {result.confidences[i]:.2f})")
        converted = f"; {', '.join(result.notes[i])}" if result.notes[i] else ""
        warn = (f"; looks more like {other_dataset} to the judges: if so, use --direction "
                f"{other_direction}" if other[i] else "")
        print(f"{path.name}: class {k_in} -> {target.name}{conf}{warn}{converted}")
    report = {
        "model": str(model),
        "direction": args.direction,
        "source_dataset": pipe.source_dataset,
        "target_dataset": pipe.target_dataset,
        "morph_steps": morph_steps,
        "items": items,
        "skipped": skipped,
    }
    # the earlier runs' translations still in the folder stay listed, after this run's; one of
    # an input translated again (the same way) is replaced, its files removed
    written = {item["output"] for item in items} | {item["morph"] for item in items}
    kept = []
    for item in earlier:
        if (Path(item["input"]).resolve() in done
                and item.get("direction", args.direction) == args.direction):
            for old in (item["output"], item.get("morph")):  # its files this run did not rewrite
                if isinstance(old, str) and old not in written and Path(old).parent == out_dir:
                    Path(old).unlink(missing_ok=True)
            continue
        if item["output"] not in written and Path(item["output"]).is_file():
            kept.append(item)
    if kept:
        report["earlier_items"] = kept
    tmp = out_dir / "translations.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out_dir / "translations.json")
    for s in skipped:
        print(f"skipped {s['input']}: {s['reason']}", file=sys.stderr)
    print(f"Wrote {len(items)} translation{'s' if len(items) != 1 else ''} to {out_dir} "
          "(translations.json" + (f"; it lists {len(kept)} from earlier runs too)" if kept else ")"))
    return 0


def _earlier_translations(out_dir: Path) -> list[dict[str, Any]]:
    """The items of an earlier run's ``translations.json`` in ``out_dir`` (its ``items`` and the
    ``earlier_items`` it kept), or none where there is no readable one."""
    try:
        report = json.loads((out_dir / "translations.json").read_text())
        items = [*report.get("items", []), *report.get("earlier_items", [])]
        return [item for item in items
                if isinstance(item, dict) and isinstance(item.get("input"), str)
                and isinstance(item.get("output"), str)]
    except (OSError, ValueError, AttributeError):
        return []


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
    if record.get("latent_shift") is None:
        return
    stats = getattr(vae, "latent_stats", None) or {}
    same = stats.get("shift") is not None
    for key, ours in (("latent_shift", "shift"), ("latent_scale", "scale")):
        if same and record.get(key) is not None:
            a = torch.as_tensor(record[key], dtype=torch.float64).flatten()
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
