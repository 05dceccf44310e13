"""MNIST and Fashion-MNIST as uint8 tensors, read from local IDX files (no network at run time).

Where the files are looked for, first match wins:

1. the ``data_dir`` argument (``--data-dir`` on the command line);
2. the environment variable ``HJT_DATA_DIR``;
3. the user cache folder ``~/.cache/hjtranslate/datasets`` (``$XDG_CACHE_HOME`` honoured);
4. for Fashion-MNIST only, the Debian/Ubuntu package ``dataset-fashion-mnist``
   (``apt-get install dataset-fashion-mnist``).

Inside a folder, each dataset may be laid out as

- ``mnist/`` and ``fashion-mnist/`` subfolders with the four IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``), gzip-compressed (``.gz``) or plain;
- torchvision's layout, ``MNIST/raw/`` and ``FashionMNIST/raw/``;
- the four files directly in the folder given (only when it is passed explicitly), which
  then holds Fashion-MNIST if its name says "fashion", else MNIST (the two datasets' files have
  the same names: a folder of one must not serve as both).

Parsed tensors are cached in memory per (file path, size, mtime). ``download=True`` fetches the
files through torchvision into the cache folder, for machines with internet access.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .checks import missing_reason

DATASETS: dict[str, dict[str, list[str]]] = {
    # dataset name -> folder names to try (ours first, then torchvision's `<Class>/raw`)
    "mnist": {"folders": ["mnist", "MNIST/raw"]},
    "fashion-mnist": {"folders": ["fashion-mnist", "FashionMNIST/raw", "fashion_mnist"]},
}
SPLITS = {"train": "train", "test": "t10k"}
SIZES = {"train": 60000, "test": 10000}
ENV_VAR = "HJT_DATA_DIR"

# Where Debian's `dataset-fashion-mnist` package (0.0~git20200523.55506a9-1, bookworm) puts the
# four .gz files, as `dpkg -c` of its .deb lists them.
DEBIAN_FASHION_DIRS = [Path("/usr/share/datasets/fashion-mnist")]

_cache: dict[tuple[str, int, float], np.ndarray] = {}


def file_names(split: str) -> tuple[str, str]:
    """The IDX file names (without ``.gz``) of one split's images and labels."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use 'train' or 'test'.")
    prefix = SPLITS[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


#: the help of every --data-dir (the order resolve_data_dir follows)
DATA_DIR_HELP = ("the MNIST / Fashion-MNIST folder (default: $HJT_DATA_DIR, else "
                 "$XDG_CACHE_HOME/hjtranslate/datasets, i.e. ~/.cache/hjtranslate/datasets; "
                 "Fashion-MNIST is also looked for where Debian's dataset-fashion-mnist installs it)")


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/hjtranslate``, i.e. ``~/.cache/hjtranslate`` by default."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hjtranslate"


def default_cache_dir() -> Path:
    return user_cache_root() / "datasets"


def resolve_data_dir(data_dir: str | os.PathLike | None = None, create: bool = False) -> Path:
    """The folder that holds the datasets: ``data_dir``, else ``$HJT_DATA_DIR``, else the user
    cache folder. An explicitly given folder must exist, unless ``create`` (a download into it)."""
    for given, source in ((data_dir, "--data-dir"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")):
        if given is None:
            continue
        path = Path(given).expanduser()
        if create and not path.exists():
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise FileNotFoundError(f"Cannot create the data folder {str(path)!r} (from "
                                        f"{source}) to download into: {exc.strerror}.") from None
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else missing_reason(path)
            raise FileNotFoundError(f"Data folder {str(path)!r} (from {source}) {what}.")
        return path
    return default_cache_dir()


def _check_name(name: str) -> str:
    key = name.lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; available: {', '.join(DATASETS)}.")
    return key


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def names_fashion(folder: Path) -> bool:
    """Whether a folder's name says it holds Fashion-MNIST (``fashion-mnist``, ``FashionMNIST``,
    ``fashion``): MNIST and Fashion-MNIST files have the same names, so a folder holding the four
    files directly counts as the dataset its name says (MNIST unless it says fashion)."""
    names = set()
    for path in (folder.absolute(), folder.resolve()):  # as given, and through a link
        names.add(path.name.lower())
        if path.name.lower() == "raw":  # torchvision's FashionMNIST/raw
            names.add(path.parent.name.lower())
    return any("fashion" in name for name in names)


def _candidate_folders(name: str, root: Path, explicit: bool) -> list[Path]:
    folders = [root / sub for sub in DATASETS[name]["folders"]]
    if explicit and names_fashion(root) == (name == "fashion-mnist"):
        folders.append(root)
    if name == "fashion-mnist":
        folders += DEBIAN_FASHION_DIRS
    return folders


GZIP_MAGIC = b"\x1f\x8b"


def _read_idx(path: Path, ndim: int, count: int | None = None) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (``.gz`` or plain), checking its header and size."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key in _cache:
        return _cache[key]
    hint = (
        "Replace it with an intact copy (the files are those of torchvision / "
        "http://yann.lecun.com/exdb/mnist/ and https://github.com/zalandoresearch/fashion-mnist)."
    )
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:  # a .gz, or one saved without its suffix
            raw = gzip.decompress(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"Cannot read {path}: it is not a valid gzip file ({exc}). {hint}") from exc
    except OSError as exc:  # permissions, a disk error: the file may well be intact
        raise ValueError(f"Cannot read {path}: {exc.strerror or exc}. Check that this process may "
                         "read it (its permissions, the disk), or replace it.") from exc
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than its header. {hint}")
    magic = int.from_bytes(raw[:4], "big")
    expected = 0x0800 + ndim  # 0x00 0x00, type 0x08 = unsigned byte, number of dimensions
    if magic != expected:
        raise ValueError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes (magic number {magic:#010x}, "
            f"expected {expected:#010x}). {hint}"
        )
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    n_bytes = int(np.prod(dims))
    payload = raw[4 + 4 * ndim:]
    if len(payload) != n_bytes:
        raise ValueError(
            f"{path} is truncated or corrupt: its header announces shape {tuple(dims)} "
            f"({n_bytes} bytes) but it holds {len(payload)} bytes of data. {hint}"
        )
    if count is not None and dims[0] != count:
        raise ValueError(f"{path} holds {dims[0]} items, expected {count}. {hint}")
    array = np.frombuffer(payload, dtype=np.uint8).reshape(dims)
    _cache[key] = array
    return array


def _download(name: str, root: Path) -> None:
    """Fetch the files with torchvision (needs internet) into torchvision's layout under root."""
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except (RuntimeError, OSError) as exc:  # torchvision: "Error downloading ...", for every mirror
        reason = str(exc).splitlines()[0][:300].rstrip(".:") if str(exc) else type(exc).__name__
        raise FileNotFoundError(
            f"Could not download {name} into {root}: {reason}. Without internet access, put the "
            f"four IDX .gz files of {name} in {root / DATASETS[name]['folders'][0]} (or choose "
            f"the folder with --data-dir or ${ENV_VAR})."
        ) from None


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` int64 of ``name`` ('mnist' or
    'fashion-mnist'), split 'train' (60,000) or 'test' (10,000).

    ``download=True`` lets torchvision download missing files into the data folder (online
    machines only); by default nothing is downloaded and a missing file is an error that says
    which files to put where.
    """
    key = _check_name(name)
    images_stem, labels_stem = file_names(split)
    root = resolve_data_dir(data_dir, create=download)
    explicit = data_dir is not None or bool(os.environ.get(ENV_VAR))
    folders = _candidate_folders(key, root, explicit)

    def locate() -> tuple[Path, Path] | None:
        for folder in folders:
            images, labels = _find(folder, images_stem), _find(folder, labels_stem)
            if images is not None and labels is not None:
                return images, labels
        return None

    found = locate()
    if found is None and download:
        _download(key, root)
        found = locate()
    if found is None:
        sub = DATASETS[key]["folders"][0]
        extra = (
            " On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` also provides them."
            if key == "fashion-mnist" else ""
        )
        if explicit and root not in folders and _find(root, images_stem) is not None:
            other = "mnist" if key == "fashion-mnist" else "fashion-mnist"
            extra += (f" {root} holds the files itself, which count as {other}'s (its name "
                      f"{'says' if other == 'fashion-mnist' else 'does not say'} fashion): name "
                      "the folder above it, holding mnist/ and fashion-mnist/.")
        raise FileNotFoundError(
            f"{key} ({split}) not found. Looked in: {', '.join(str(f) for f in folders)}. "
            f"Put the files {images_stem}.gz and {labels_stem}.gz (gzip or uncompressed) in "
            f"{root / sub} -- or choose the folder with --data-dir or ${ENV_VAR}, holding "
            f"mnist/ and fashion-mnist/ subfolders. With internet access, `--download` (the "
            f"train commands) or load_dataset(..., download=True) fetches them through "
            f"torchvision.{extra}"
        )
    images_path, labels_path = found
    images = _read_idx(images_path, 3, SIZES[split])
    labels = _read_idx(labels_path, 1, SIZES[split])
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path} holds images of shape {images.shape[1:]}, expected 28x28.")
    if labels.max() > 9:
        raise ValueError(f"{labels_path} holds labels above 9; the file is corrupt.")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(n, 28, 28)`` -> float ``(n, 1, 28, 28)`` in [0, 1]."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x.unsqueeze(1) if x.dim() == 3 else x
