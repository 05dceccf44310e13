"""``hjtranslate train color-transfer --source A.png --target B.png``: colour transfer between
two images as optimal transport between their RGB pixel distributions (method.md section 8).

Pixels are points of ``[0, 1]^3`` (identity encoder, d = 3). The map is trained on a random
subsample of ``--pixels`` pixels per image and applied to every pixel:

- ``forward``  recolours the source image with the target's palette (``T(x)``),
- ``backward`` recolours the target image with the source's palette (``T^-1(y)``).

Results are clipped to ``[0, 1]`` before they are saved and scored.

Colour-histogram metrics (what ``metrics.json`` reports, for both directions):

- histogram: a 3-D histogram of the RGB pixels with ``B`` (``--bins``, default 16) equal bins per
  channel on ``[0, 1]``, normalised to sum 1;
- EMD: the exact earth mover's distance (POT ``ot.emd2``) between two such histograms, with the
  **squared Euclidean** distance between bin centres (in ``[0, 1]^3`` units) as ground cost, i.e.
  the squared 2-Wasserstein distance between the binned colour distributions (0 for identical
  histograms; lower is better);
- intersection: ``sum_b min(h1[b], h2[b])`` (1 for identical histograms, 0 for disjoint ones;
  higher is better);
- off-palette share: the share of recoloured pixels farther than ``OFF_PALETTE_RADIUS`` (0.1,
  Euclidean in ``[0, 1]^3``) from every colour of the reference image. Histograms barely see a
  few hundred pixels painted a colour the reference never has (a violet streak on a white body);
  this does (0 for a result that only uses the reference's colours; lower is better).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checks import missing_reason, resolved, written_whole
from ..images import bit_depth_peak
from ..training import finish_run
from .common import (
    add_map_arguments,
    check_count,
    fit_from_args,
    output_dir,
    require_at_least,
    run_figures,
    write_outputs,
)

#: the pictures the task writes beside the map (removed when a run starts afresh)
OUTPUTS = ("source_recoloured.png", "target_recoloured.png", "panel.png")

DEFAULT_BINS = 16
#: The most ``--bins``: the exact EMD is a transport problem between the occupied bins (up to
#: bins**3 per image) with a dense cost matrix; at 32 bins that matrix can already reach 8 GB.
MAX_BINS = 32
OFF_PALETTE_RADIUS = 0.1

#: The colour task's map settings with the quadratic cost. A pixel cloud has sharp folds and
#: far-flung clusters: random Fourier features of scale 4 let the potential bend at them, and the
#: batch semi-dual carries the clusters that the energy distance lets go (BENCHMARKS.md, colour
#: transfer, session 22: astronaut -> coffee, 1,500 steps, forward EMD 0.0041 -> 0.0014).
COLOUR_HEAD_KWARGS = {"fourier_features": 128, "fourier_scale": 4.0}
COLOUR_SEMIDUAL_WEIGHT = 10.0
COLOUR_SEMIDUAL_SIDE = "both"
#: The match: the debiased Sinkhorn divergence (blur 0.1 per unit of sqrt(2 d)) instead of the
#: energy distance, whose pull on a few pixels pushed off the palette vanishes once the bulk
#: agrees. It took the pink off the astronaut's visor and cut the off-palette share in every
#: direction (1.5-12.5x), for 2.2-2.8x the fitting time (BENCHMARKS.md, colour transfer,
#: session 23).
COLOUR_MMD = "sinkhorn"
COLOUR_SINKHORN_BLUR = 0.1
#: Training steps: 3,000 against 1,500 lowered the EMD in all six directions of the colour
#: benchmark and put the histogram intersection above POT's exact EMD transport in five of six
#: (two of six at 1,500), for about 1.5x the fitting time (BENCHMARKS.md, colour transfer).
COLOUR_STEPS = 3000


# -- images ----------------------------------------------------------------------------------
def load_image(path: str | Path, what: str = "") -> np.ndarray:
    """An RGB image as a float32 array ``(H, W, 3)`` in ``[0, 1]`` (``load_image_alpha`` also
    gives its transparency)."""
    return load_image_alpha(path, what)[0]


def load_image_alpha(path: str | Path, what: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """An RGB image as a float32 array ``(H, W, 3)`` in ``[0, 1]``, and its alpha channel
    ``(H, W)`` in ``[0, 1]`` (None for an opaque image).

    Greyscale images are converted to RGB (all three channels equal), with a note on stderr.
    16-bit greyscale is scaled by 1/65535; 32-bit integer (mode ``I``) and float (mode ``F``)
    greyscale by the range their values fit: ``[0, 1]`` (floats only), ``0..255`` or
    ``0..65535`` (values outside are clipped; NaN or Inf refused). An image with transparent
    pixels says how many, with a note: the task leaves them out of training and metrics.
    Missing, unreadable or too large files (over twice ``PIL.Image.MAX_IMAGE_PIXELS``) raise
    clear errors."""
    from PIL import Image, UnidentifiedImageError

    from ..images import READ_ERRORS, frame_count, image_too_large, upright

    label = f"{what} image" if what else "image"

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"The {label} {str(path)!r} {missing_reason(path)}.")
    if path.is_dir():
        raise ValueError(f"The {label} {str(path)!r} is a folder; pass an image file.")
    try:
        # PIL warns past 89 megapixels and refuses twice that; in between the image is taken
        # (a 64-megapixel photo fits in 1.5 GB), with a note rather than PIL's warning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as img:
            if Image.MAX_IMAGE_PIXELS and img.width * img.height > Image.MAX_IMAGE_PIXELS:
                print(f"note: the {label} {path.name} is {img.width}x{img.height} pixels; "
                      "reading it takes a while and several GB of memory.", file=sys.stderr)
            img.load()
            mode = img.mode
            frames = frame_count(img)
            if frames > 1:
                print(f"note: the {label} {path.name} has {frames} frames; the first is "
                      "used.", file=sys.stderr)
            img, turned = upright(img)  # a phone photo, stored sideways and tagged
            if turned:
                print(f"note: the {label} {path.name} is {turned}.", file=sys.stderr)
            if mode in ("L", "LA", "1") or mode.startswith(("I", "F")):
                scale = ""
                if mode.startswith(("I", "F")):  # 16/32-bit greyscale: rescale to 8 bits first
                    a = np.asarray(img, dtype=np.float64)
                    top = _grey_peak(a, mode, f"The {label} {str(path)!r}")
                    img = Image.fromarray((np.clip(a / top, 0, 1) * 255 + 0.5).astype(np.uint8))
                    scale = f", {mode} values scaled by 1/{top:g}"
                    if mode.startswith("I") and top < 65535:  # 16-bit files hold 10-14-bit data
                        scale += f" (its values fit {int(top).bit_length()} bits)"
                print(f"note: the {label} {path.name} is greyscale ({mode}); converting it to "
                      f"RGB (three equal channels{scale}).", file=sys.stderr)
            alpha = None
            if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
                alpha = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255
                if alpha.min() == 1.0:
                    alpha = None  # an alpha channel with nothing transparent
            rgb = img.convert("RGB")
    except Image.DecompressionBombError as exc:  # not an OSError: caught on its own
        raise image_too_large(path, exc, label) from None
    except UnidentifiedImageError:
        raise ValueError(
            f"The {label} {str(path)!r} is not a readable image (PNG, JPEG, ...)."
        ) from None
    except READ_ERRORS as exc:  # a damaged file: PIL raises more than OSError
        raise ValueError(f"The {label} {str(path)!r} could not be read ({type(exc).__name__}: "
                         f"{exc}); is it a whole image file?") from None
    arr = np.asarray(rgb, dtype=np.float32)
    arr /= 255.0  # in place: a 64-megapixel photo is 768 MB in float32
    if arr.shape[0] * arr.shape[1] < 2:
        raise ValueError(f"The {label} {str(path)!r} has fewer than 2 pixels.")
    if alpha is not None:
        hidden = int((alpha == 0).sum())
        if alpha.size - hidden < 2:
            raise ValueError(f"The {label} {str(path)!r} is transparent all over (fewer than 2 "
                             "visible pixels): there are no colours to transfer.")
        print(f"note: the {label} {path.name} has transparency: its {hidden} fully transparent "
              "pixels are left out of the training and the metrics, and its recoloured image "
              "keeps the alpha channel.", file=sys.stderr)
    return arr, alpha


def _grey_peak(a: np.ndarray, mode: str, what: str) -> float:
    """The value that stands for white in a 16/32-bit or float greyscale image."""
    if not np.isfinite(a).all():
        raise ValueError(f"{what} holds NaN or infinite pixel values.")
    peak = float(a.max()) if a.size else 0.0
    if mode == "F" and peak <= 1.0:  # floats in [0, 1], the usual float image
        return 1.0
    return bit_depth_peak(peak)  # a 12-bit camera's 0..4095 in a 16-bit file is not black


def save_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
    """``rgb`` ``(H, W, 3)`` in ``[0, 1]`` as an 8-bit image (its format from the suffix),
    RGBA where ``alpha`` is given."""
    from PIL import Image

    path = Path(path)
    if alpha is not None and path.suffix.lower() in (".jpg", ".jpeg"):
        raise ValueError(f"{path}: JPEG holds no transparency; save it as .png (or without "
                         "its alpha).")
    with written_whole(path) as tmp:
        Image.fromarray((np.clip(with_alpha(rgb, alpha), 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp)


def with_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``(H, W, 3)`` RGB with its alpha as a fourth channel (the RGB itself without one)."""
    return rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=2)


def pixels_of(img: np.ndarray, alpha: np.ndarray | None = None) -> torch.Tensor:
    """The image's pixels ``(n, 3)``; with ``alpha``, its visible ones only (alpha above 0)."""
    px = np.ascontiguousarray(img.reshape(-1, 3), dtype=np.float32)
    if alpha is not None:
        px = px[alpha.reshape(-1) > 0]
    return torch.from_numpy(px)


def subsample(px: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    if n >= len(px):
        return px
    g = torch.Generator().manual_seed(seed)
    return px[torch.randperm(len(px), generator=g)[:n]]


#: images with more pixels than this get a progress bar as the map recolours them: a
#: 48-megapixel photo takes minutes on a CPU, far longer than the training
APPLY_PROGRESS_PIXELS = 1_000_000


def apply_map(fn: Callable[[torch.Tensor], torch.Tensor], px: torch.Tensor, chunk: int = 65536,
              desc: str | None = None) -> torch.Tensor:
    """Apply a map to all pixels in chunks, clipped to ``[0, 1]`` (filled in place: a list of
    chunks and their concatenation would hold a 64-megapixel photo twice). ``desc``: a progress
    bar with this label, for images above ``APPLY_PROGRESS_PIXELS``."""
    from tqdm.auto import tqdm

    out = torch.empty_like(px, device="cpu")
    starts = range(0, len(px), chunk)
    bar = tqdm(starts, desc=desc, unit="chunk", dynamic_ncols=True,
               disable=desc is None or len(px) <= APPLY_PROGRESS_PIXELS)
    for i in bar:
        out[i:i + chunk] = fn(px[i:i + chunk]).detach().clamp(0, 1).cpu()  # a map may sit on a GPU
    return out


# -- colour-histogram metrics ----------------------------------------------------------------
def as_pixels(px: Any) -> np.ndarray:
    """RGB pixels (a tensor or an array of any shape ending in 3) as a float array ``(n, 3)``:
    a view where they are float already (a 64-megapixel photo is 768 MB in float32), else a
    float64 copy."""
    px = px.detach().cpu().numpy() if isinstance(px, torch.Tensor) else np.asarray(px)
    if not np.issubdtype(px.dtype, np.floating):
        px = px.astype(np.float64)
    return px.reshape(-1, 3)


#: pixels per block in the histogram metrics: their temporaries stay near 100 MB at any size
_BLOCK = 1 << 22


def _blocks(px: np.ndarray):
    for i in range(0, len(px), _BLOCK):
        yield px[i:i + _BLOCK]


def colour_histogram(px: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """3-D histogram of RGB pixels ``(n, 3)`` in ``[0, 1]`` with ``bins`` equal bins per channel,
    flattened to ``(bins**3,)`` and normalised to sum 1 (values outside ``[0, 1]`` are clipped)."""
    px = as_pixels(px)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}.")
    if len(px) == 0:
        raise ValueError("colour_histogram needs at least one pixel.")
    h = np.zeros(bins**3, np.float64)
    for block in _blocks(px):
        idx = np.clip((np.clip(block, 0, 1) * bins).astype(np.int64), 0, bins - 1)
        h += np.bincount((idx[:, 0] * bins + idx[:, 1]) * bins + idx[:, 2], minlength=bins**3)
    return h / h.sum()


def bin_centres(bins: int) -> np.ndarray:
    c = (np.arange(bins) + 0.5) / bins
    r, g, b = np.meshgrid(c, c, c, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], 1)


def histogram_emd(h1: np.ndarray, h2: np.ndarray, bins: int | None = None,
                  ground: str = "sqeuclidean") -> float:
    """Exact EMD (POT ``ot.emd2``) between two normalised colour histograms of ``bins**3`` bins,
    ground cost between bin centres: ``"sqeuclidean"`` (default) or ``"euclidean"``. Only the
    occupied bins enter the LP."""
    import ot

    h1, h2 = np.asarray(h1, np.float64), np.asarray(h2, np.float64)
    if h1.shape != h2.shape or h1.ndim != 1:
        raise ValueError(f"Histograms must be flat and alike, got {h1.shape} and {h2.shape}.")
    bins = bins or round(len(h1) ** (1 / 3))
    if bins**3 != len(h1):
        raise ValueError(f"A histogram of {len(h1)} entries is not bins**3 for any bins.")
    if ground not in ("sqeuclidean", "euclidean"):
        raise ValueError(f"ground must be 'sqeuclidean' or 'euclidean', got {ground!r}.")
    i, j = np.flatnonzero(h1 > 0), np.flatnonzero(h2 > 0)
    a, b = h1[i] / h1[i].sum(), h2[j] / h2[j].sum()
    centres = bin_centres(bins)
    m = ot.dist(centres[i], centres[j], metric="sqeuclidean")
    if ground == "euclidean":
        m = np.sqrt(m)
    return float(ot.emd2(a, b, m, numItermax=10_000_000))


def histogram_intersection(h1: np.ndarray, h2: np.ndarray) -> float:
    """``sum_b min(h1[b], h2[b])`` of two normalised histograms: 1 if equal, 0 if disjoint."""
    return float(np.minimum(np.asarray(h1, np.float64), np.asarray(h2, np.float64)).sum())


def off_palette_share(result: Any, reference: Any, radius: float = OFF_PALETTE_RADIUS) -> float:
    """Share of the pixels of ``result`` ``(n, 3)`` farther than ``radius`` (Euclidean, in
    ``[0, 1]^3``) from every pixel colour of ``reference`` (its colours rounded to 8 bits)."""
    from scipy.spatial import cKDTree

    res, ref = as_pixels(result), as_pixels(reference)
    if len(res) == 0 or len(ref) == 0:
        raise ValueError("off_palette_share needs at least one pixel on each side.")
    present = np.zeros(1 << 24, bool)  # every 8-bit colour of the reference, marked
    for block in _blocks(ref):
        rgb = np.round(np.clip(block, 0, 1) * 255).astype(np.int64)
        present[(rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]] = True
    codes = np.flatnonzero(present)
    palette = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], 1) / 255
    tree = cKDTree(palette)
    off = sum(int((tree.query(block, k=1)[0] > radius).sum()) for block in _blocks(res))
    return off / len(res)


def colour_metrics(result: Any, reference: Any, bins: int = DEFAULT_BINS) -> dict[str, float]:
    """EMD (squared Euclidean ground cost) and intersection between the colour histograms of a
    recoloured image and the image whose palette it should have, and the share of the recoloured
    pixels off that image's palette."""
    h1, h2 = colour_histogram(result, bins), colour_histogram(reference, bins)
    return {"emd": histogram_emd(h1, h2, bins), "intersection": histogram_intersection(h1, h2),
            "off_palette": off_palette_share(result, reference)}


# -- the task --------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    # required, but checked in run(): a --resume takes them from the run's config.json
    p.add_argument("--source", help="source image file (PNG, JPEG, ...); required")
    p.add_argument("--target", help="target image file whose palette to take; required")
    p.add_argument("--pixels", type=int, default=20000,
                   help="random pixels per image to train on (the map is applied to all)")
    p.add_argument("--bins", type=int, default=DEFAULT_BINS,
                   help=f"histogram bins per RGB channel for the EMD / intersection metrics "
                   f"(1..{MAX_BINS})")
    add_map_arguments(p, steps=COLOUR_STEPS, batch_size=512, mmd=COLOUR_MMD,
                      sinkhorn_blur=COLOUR_SINKHORN_BLUR)
    p.epilog = (
        f"This task's own defaults: --mmd {COLOUR_MMD} with blur {COLOUR_SINKHORN_BLUR:g} and "
        f"--semidual-weight {COLOUR_SEMIDUAL_WEIGHT:g} on both sides; for a new map with the "
        f"quadratic cost and the mlp head also {COLOUR_HEAD_KWARGS['fourier_features']} Fourier "
        f"features of scale {COLOUR_HEAD_KWARGS['fourier_scale']:g}. --fourier-features 0 --mmd "
        "energy --semidual-weight 0 give fit()'s defaults.")
    # mmd=None: resolved in run(), after --resume has restored a run's recorded match
    p.set_defaults(semidual_weight=COLOUR_SEMIDUAL_WEIGHT, semidual_side=COLOUR_SEMIDUAL_SIDE,
                   mmd=None)


def _colour_head_defaults(args: argparse.Namespace) -> None:
    """COLOUR_HEAD_KWARGS where the command line leaves them unset, for a new map of the default
    (mlp) head with the quadratic cost (the Fourier features' wiggles cost p-norm maps their
    optimality; other heads have other options; a resumed or fine-tuned map keeps its head)."""
    if (args.cost != "quadratic" or args.head not in (None, "mlp") or args.resume
            or getattr(args, "init_from", None)):
        return
    if args.fourier_features is None:
        args.fourier_features = COLOUR_HEAD_KWARGS["fourier_features"]
    if args.fourier_features and args.fourier_scale is None:
        args.fourier_scale = COLOUR_HEAD_KWARGS["fourier_scale"]


def _colour_match_defaults(args: argparse.Namespace) -> None:
    """``--mmd`` and ``--sinkhorn-blur`` where the command line leaves them unset: COLOUR_MMD
    with COLOUR_SINKHORN_BLUR (a resumed run has its recorded match by now: runs from before
    the Sinkhorn default trained with the energy distance, and the checkpoint's MMD weight is
    on that match's scale)."""
    if args.mmd is None:
        args.mmd = COLOUR_MMD
    if args.mmd == "sinkhorn" and args.sinkhorn_blur is None:
        args.sinkhorn_blur = COLOUR_SINKHORN_BLUR


PANEL_PIXELS = 1024  # the most pixels a side an image is drawn with in a panel


def panel(path: Path, images: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray | None]],
          title: str = "") -> None:
    """The images side by side, each given as RGB or as ``(rgb, alpha)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.4), dpi=110)
    for ax, (name, img) in zip(np.atleast_1d(axes), images.items(), strict=True):
        img, alpha = img if isinstance(img, tuple) else (img, None)
        # a panel shows about 350 pixels a side: matplotlib would make a float64 RGBA copy of a
        # 64-megapixel photo (2 GB) to show it (the alpha joins the shrunk copy)
        step = max(1, -(-max(img.shape[:2]) // PANEL_PIXELS))
        ax.imshow(np.clip(with_alpha(img[::step, ::step],
                                     None if alpha is None else alpha[::step, ::step]), 0, 1))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with written_whole(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = [f"--{k}" for k in ("source", "target") if getattr(args, k, None) is None]
    if missing:
        raise ValueError(f"the following arguments are required: {', '.join(missing)} (a "
                         "--resume of a color-transfer run takes them from its config.json).")
    require_at_least(args, pixels=2)
    check_count("--bins", args.bins, 1, MAX_BINS,
                " (the exact EMD between histograms of bins**3 cells outgrows memory above it)")
    _colour_head_defaults(args)
    _colour_match_defaults(args)
    out = output_dir(args, "color-transfer")
    for flag in ("source", "target"):
        image = resolved(Path(getattr(args, flag)).expanduser())  # through links too
        for name in OUTPUTS:
            if image is not None and image == resolved(out / name):
                raise ValueError(f"--{flag} {getattr(args, flag)} is where the run writes its "
                                 f"{name}: it would be replaced. Move the image, or pick another "
                                 "--output-dir.")
    for flag in ("source", "target"):
        recorded = args.resume and flag not in getattr(args, "_typed", {flag})
        if recorded and not Path(getattr(args, flag)).exists():
            raise FileNotFoundError(
                f"--resume: the run's {flag} image {getattr(args, flag)!r} (recorded in "
                f"{out / 'config.json'}) does not exist. If it moved, resume with --{flag} "
                "and its new path.")
    src, src_alpha = load_image_alpha(args.source, "source")
    tgt, tgt_alpha = load_image_alpha(args.target, "target")
    ps, pt = pixels_of(src, src_alpha), pixels_of(tgt, tgt_alpha)  # the visible ones
    if ps.shape == pt.shape and torch.equal(ps, pt):
        print("note: the source and target images have the same pixels: the optimal map is the "
              "identity (the learned one comes near it).", file=sys.stderr)
    xs = subsample(ps, args.pixels, seed=1 + 2 * args.seed)
    yt = subsample(pt, args.pixels, seed=2 + 2 * args.seed)
    t0 = time.perf_counter()
    m, result, acc = fit_from_args(
        args, xs, yt, "color-transfer", outputs=OUTPUTS,
        encoder={"name": "identity", "kwargs": {"dim": 3}, "space": "RGB in [0, 1]"},
    )
    metrics: dict[str, Any] = {
        # as config.json records them: absolute, so that a --resume from elsewhere finds them
        "source": str(Path(args.source).expanduser().resolve()),
        "target": str(Path(args.target).expanduser().resolve()),
        "source_shape": list(src.shape), "target_shape": list(tgt.shape),
        "train_pixels": [len(xs), len(yt)], "visible_pixels": [len(ps), len(pt)],
        **run_figures(result, t0), **result["final"],
        "histogram": f"{args.bins}^3 RGB bins on [0,1], normalised to sum 1",
        "emd_ground_cost": "squared Euclidean between bin centres (POT ot.emd2)",
    }
    if acc.is_main_process:
        t1 = time.perf_counter()
        show = not args.no_progress
        # every pixel is recoloured (a hidden one may be shown by another program); the
        # metrics read the visible ones
        fwd = apply_map(m.forward, pixels_of(src), desc="recolour source" if show else None)
        bwd = apply_map(m.backward, pixels_of(tgt), desc="recolour target" if show else None)
        metrics["apply_seconds"] = time.perf_counter() - t1
        src_rec = fwd.reshape(src.shape).numpy()
        tgt_rec = bwd.reshape(tgt.shape).numpy()
        if src_alpha is not None:
            fwd = fwd[torch.from_numpy(src_alpha.reshape(-1) > 0)]
        if tgt_alpha is not None:
            bwd = bwd[torch.from_numpy(tgt_alpha.reshape(-1) > 0)]
        for key, (res, ref) in {
            "forward": (fwd, pt), "backward": (bwd, ps), "before": (ps, pt),
        }.items():
            for name, v in colour_metrics(res, ref, args.bins).items():
                metrics[f"{name}_{key}"] = v
        out.mkdir(parents=True, exist_ok=True)
        save_image(out / "source_recoloured.png", src_rec, src_alpha)
        save_image(out / "target_recoloured.png", tgt_rec, tgt_alpha)
        panel(out / "panel.png", {
            "source": (src, src_alpha), "target": (tgt, tgt_alpha),
            "source -> target palette": (src_rec, src_alpha),
            "target -> source palette": (tgt_rec, tgt_alpha),
        }, f"EMD {metrics['emd_before']:.4g} -> {metrics['emd_forward']:.4g} (forward), "
           f"intersection {metrics['intersection_before']:.3f} -> "
           f"{metrics['intersection_forward']:.3f}")
    write_outputs(out, m, metrics, acc)
    finish_run(acc)
    return metrics
