"""Input conversion: any picture a user gives (a file, a PIL image, an array, a tensor, a photo of a
page) -> the ``(n, 1, 28, 28)`` grey images in [0, 1] that the VAE and the judges take.

Rules (``preprocess``, which ``TranslationPipeline.preprocess`` calls; each change is reported in
``TranslationOutput.notes``):

1. Types. A PIL image, a path to an image file, a numpy array, a torch tensor, or a list of
   these (each item then one image). Arrays: numpy ``(H, W)`` and ``(H, W, C)`` (C in 1, 2, 3, 4:
   grey, grey+alpha, RGB, RGBA) are one image, ``(N, H, W)`` and ``(N, H, W, C)`` a batch; torch
   tensors follow the torch layout: ``(H, W)`` one image, ``(N, H, W)`` a batch of grey images
   (as ``VAEEncoder`` and the judges take them), ``(N, C, H, W)`` a batch; a list item
   ``(C, H, W)``, a tensor or a numpy array whose last axis is too long for channels, is one
   image. A batch of 2 to 4 pictures other than 28x28 may be one colour
   picture with channels first: it is read as a batch, with a note saying how to pass the
   other. uint8 and other integer arrays are on the 0..255 scale, or, holding larger values
   (up to 65535), on the white level of the smallest bit depth that holds them (as 16-bit files,
   rule 2); floats must lie in [0, 1] (else ``ValueError``), bools are 0/1.
2. Colour. RGB becomes grey by the ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (as PIL's
   ``convert("L")`` and the VAE). Transparency: the image is composited onto white if its
   visible strokes are dark (mean luma under 0.5, weighted by alpha), else onto black, so the
   strokes survive either way. 16-bit and 32-bit integer PIL images are scaled by the white
   level of the smallest bit depth (8, 10, 12, 14 or 16) that holds their largest value.
3. Polarity. MNIST and Fashion-MNIST are light on dark. If the mean of the image's border
   (the outer ``max(1, min(H, W) // 14)`` pixels) exceeds 0.5, the image is inverted
   (``light_on_dark=False`` keeps it: a pipeline built with ``light_on_dark=False``, for
   datasets of dark pictures on light, passes that).
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

import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 28
LUMA = (0.299, 0.587, 0.114)
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
#: a numpy (A, B, C) array with a last axis this short (and shorter than B) is refused as
# ambiguous rather than read as A images C pixels wide: (28, 28, 5) is more likely one
# image with 5 channels.
MAX_AMBIGUOUS_CHANNELS = 16


# -- input conversion ---------------------------------------------------------------------------
def _to_float01(a: np.ndarray, what: str, notes: list[str]) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        top = int(a.max()) if a.size else 0
        if a.size and (a.min() < 0 or top > BIT_DEPTH_PEAKS[-1]):
            raise ValueError(
                f"{what}: integer pixel values must lie in 0..255 (or 0..65535 for 10- to 16-bit "
                f"pictures), got {a.min()}..{top}; pass floats in [0, 1] for other ranges."
            )
        # as for 16-bit image files: 0..255 is 8-bit, larger values the white level of the
        # smallest bit depth holding them (a 12-bit camera's 0..4095)
        peak = bit_depth_peak(top)
        if peak > 255:
            notes.append(f"scaled integer values up to {top} as {int(peak).bit_length()}-bit "
                         f"pixels (by 1/{peak:g})")
        return a.astype(np.float32) / peak
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
    if getattr(img, "format", None) == "MPO":
        return 1
    try:
        return int(getattr(img, "n_frames", 1))
    except READ_ERRORS:  # a damaged later frame (a TIFF page without its size): 2 at least
        try:
            img.seek(0)  # counting left the file at the damaged frame
        except READ_ERRORS:
            pass
        return 2


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
        a = np.asarray(img, dtype=np.float32)
        peak = bit_depth_peak(float(a.max()) if a.size else 0.0)
        depth = "" if peak == 65535 else f" holding {int(peak).bit_length()}-bit values"
        notes.append(f"scaled 16-bit image (mode {mode}){depth} by 1/{peak:g}")
        return np.clip(a / peak, 0.0, 1.0)
    if mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if not np.isfinite(a).all():  # np.clip below would keep a NaN
            raise ValueError("The image has NaN or infinite pixel values.")
        peak = 1.0 if a.size and a.max() <= 1.0 else bit_depth_peak(float(a.max()))
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


#: the white levels of the sensors' bit depths that 16-bit files carry (8, 10, 12, 14, 16 bits)
BIT_DEPTH_PEAKS = (255.0, 1023.0, 4095.0, 16383.0, 65535.0)


def bit_depth_peak(top: float) -> float:
    """The white level of the smallest common bit depth that holds ``top``: a 12-bit camera's
    picture in a 16-bit file reaches at most 4095, which on the 16-bit scale reads as black."""
    return next((p for p in BIT_DEPTH_PEAKS if top <= p), BIT_DEPTH_PEAKS[-1])


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


#: what PIL raises for a damaged file: UnidentifiedImageError (an OSError), SyntaxError ("broken
#: PNG file"), and from a damaged TIFF page TypeError ("Missing dimensions") or KeyError
READ_ERRORS = (OSError, SyntaxError, TypeError, KeyError, IndexError, EOFError, struct.error)
_READ_ERRORS = (*READ_ERRORS, ValueError)


def image_size(path: str | Path) -> tuple[int, int]:
    """The (width, height) of an image file, read from its header (nothing is decoded): a
    ValueError naming the file where it is no readable image or too large to open safely."""
    from PIL import Image

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder, not an image file: pass the image files in it "
                         "(`hjtranslate translate --input` also takes a folder on its own).")
    if not p.is_file():
        raise FileNotFoundError(f"No such image file: {p}")
    try:
        with Image.open(p) as img:
            size = img.size  # read from the header: nothing is decoded yet
    except Image.DecompressionBombError as exc:
        raise image_too_large(p, exc) from None
    except _READ_ERRORS as exc:
        raise ValueError(f"{p} is not a readable image ({type(exc).__name__}: {exc}).") from None
    # a few kB of PNG can decode to gigabytes: past PIL's warning level (89 megapixels; it
    # refuses twice that), refused before anything is decoded
    limit = Image.MAX_IMAGE_PIXELS
    if limit and size[0] * size[1] > limit:
        raise ValueError(f"The image {str(p)!r} is {size[0]}x{size[1]} pixels, more than {limit:,}: "
                         "too large to open safely. Downscale it and try again (it is translated "
                         "at 28x28 anyway).")
    return size


def open_image(path: str | Path) -> Any:
    """An image file as a PIL image, checked first (:func:`image_size`) and decoded at most
    ``MAX_OPEN_SIDE`` a side (large JPEGs decoded at a fraction of their size)."""
    from PIL import Image

    p = Path(path)
    size = image_size(p)
    try:
        with Image.open(p) as img:
            factor = -(-max(size) // MAX_OPEN_SIDE)
            if factor > 1 and img.format == "JPEG":  # decoded at 1/2, 1/4 or 1/8 of its size
                img.draft(img.mode, (max(1, size[0] // factor), max(1, size[1] // factor)))
            img.load()
            drafted = round(max(size) / max(img.size))  # 1, 2, 4 or 8
            left = -(-max(img.size) // MAX_OPEN_SIDE)  # what the draft left to reduce
            out = _reduced(img, left) if left > 1 else img.copy()
            if factor > 1:
                out.info[REDUCED_KEY] = (*size, drafted * left)
            # a copy forgets the frames; pil_to_array notes that only the first was used
            out.info[FRAMES_KEY] = frame_count(img)
            return out
    except Image.DecompressionBombError as exc:
        raise image_too_large(p, exc) from None
    except _READ_ERRORS as exc:
        raise ValueError(f"{p} is not a readable image ({type(exc).__name__}: {exc}).") from None


def _note_channels_first(shape: tuple[int, ...], notes: list[str], remedy: str) -> None:
    """A batch (N, H, W) of 2 to 4 pictures may be one colour picture, channels first (as
    torchvision's ToTensor gives it): it is read as a batch, and the notes say how to pass the
    other. A batch of 28x28 pictures is the datasets' own kind: no note."""
    if shape[0] in (2, 3, 4) and min(shape[1:]) > 4 and tuple(shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        notes.append(f"read {shape} as {shape[0]} grey images; if it is one colour image with "
                     f"channels first, {remedy}")


def _as_array(item: Any, notes: list[str], single: bool, what: str) -> list[np.ndarray]:
    """One input (or a batch when ``single`` is False) -> list of ``(H, W[, C])`` float arrays."""
    from PIL import Image

    if isinstance(item, (str, Path)):
        item = open_image(item)
    if isinstance(item, Image.Image):
        return [pil_to_array(item, notes)]
    if torch.is_tensor(item):
        t = item.detach().cpu()
        if t.dim() == 2:
            return [_to_float01(t.numpy(), what, notes)]
        if t.dim() == 3 and single:  # (C, H, W)
            if t.shape[0] not in (1, 2, 3, 4):
                raise ValueError(f"{what}: a tensor image must be (C, H, W) with C <= 4, got "
                                 f"{tuple(t.shape)}.")
            return [_to_float01(t.permute(1, 2, 0).numpy(), what, notes)]
        if t.dim() == 3:  # (N, H, W)
            _note_channels_first(tuple(t.shape), notes, "pass it in a list, or as (1, C, H, W)")
            a = _to_float01(t.numpy(), what, notes)
            return list(a)
        if t.dim() == 4 and not single:  # (N, C, H, W)
            if t.shape[1] not in (1, 2, 3, 4):
                raise ValueError(f"{what}: tensors must be (N, C, H, W) with C in 1..4, got "
                                 f"{tuple(t.shape)}.")
            a = _to_float01(t.permute(0, 2, 3, 1).numpy(), what, notes)
            return list(a)
        raise ValueError(
            f"{what}: cannot read a tensor of shape {tuple(t.shape)} as "
            + ("one image (each item of a list is one image); use (H, W) or (C, H, W) with C in "
               "1..4, or pass a batch by itself, not in a list." if single else
               "images; use (H, W), (N, H, W) or (N, C, H, W), or a list of (C, H, W) images.")
        )
    if isinstance(item, np.ndarray):
        a = item
        if a.ndim == 2:
            return [_to_float01(a, what, notes)]
        if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):  # (H, W, C)
            return [_to_float01(a, what, notes)]
        if a.ndim == 3 and not single and a.shape[2] <= MAX_AMBIGUOUS_CHANNELS and a.shape[2] < a.shape[1]:
            raise ValueError(
                f"{what}: an array of shape {a.shape} reads as one image with {a.shape[2]} "
                f"channels (at most 4 are supported) or as {a.shape[0]} images {a.shape[2]} "
                "pixels wide: pass (H, W, C) with C in 1..4, or a list of (H, W) images."
            )
        if a.ndim == 3 and not single:  # (N, H, W)
            _note_channels_first(a.shape, notes, "pass it as (H, W, C): a.transpose(1, 2, 0)")
            return list(_to_float01(a, what, notes))
        if a.ndim == 4 and not single and a.shape[3] in (1, 2, 3, 4):  # (N, H, W, C)
            return list(_to_float01(a, what, notes))
        if single and a.ndim == 3 and a.shape[0] in (1, 2, 3, 4):
            # channels first, as a torch image is: unambiguous, the last axis being no channels
            notes.append(f"read {a.shape} as one image with its {a.shape[0]} channel(s) first")
            return [_to_float01(a.transpose(1, 2, 0), what, notes)]
        if single:
            raise ValueError(
                f"{what}: cannot read an array of shape {a.shape} as one image (each item of a "
                "list is one image); use (H, W) or (H, W, C) with C in 1..4, or pass a batch by "
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
    threshold = levels[0]
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


def _normalise(a: np.ndarray, notes: list[str], framing: str | None = None,
               light_on_dark: bool = True) -> torch.Tensor:
    """``(H, W[, C])`` float in [0, 1] -> ``(28, 28)`` grey (rules 2-5), light on dark unless
    ``light_on_dark`` is False."""
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
    if light_on_dark and level > 0.5:
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


def preprocess(images: Any, framing: str | None = None,
               light_on_dark: bool = True) -> tuple[torch.Tensor, list[list[str]]]:
    """Any supported input -> ``(n, 1, 28, 28)`` float in [0, 1] and per-image notes;
    ``framing``: a dataset of ``FRAMINGS`` whose framing pictures that are not 28x28 get (rule
    5), or None; ``light_on_dark``: invert pictures on a light background (rule 3)."""
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
            out.append(_normalise(a, own, framing, light_on_dark))
            notes.append(own)
    if not out:
        raise ValueError("No images given.")
    return torch.stack(out)[:, None], notes


def to_pil(x: torch.Tensor) -> list:
    """``(n, 1, 28, 28)`` in [0, 1] -> grey PIL images."""
    from PIL import Image

    arr = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(a[0]) for a in arr]  # 2-D uint8: mode "L"

