"""Synthetic MNIST and Fashion-MNIST IDX files (random strokes, the real counts and labels) for
checking code paths where the real files cannot go, such as a GPU machine reached with a
64 MiB upload. Not for any figure: the images are noise.

    python scripts/fake_datasets.py ../shared/datasets
"""

import gzip
import sys
from pathlib import Path

import numpy as np


def _header(magic: int, dims: tuple[int, ...]) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


def write(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("mnist", "fashion-mnist"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", 60000), ("t10k", 10000)):
            images = np.zeros((n, 28, 28), np.uint8)
            images[:, 6:22, 10:18] = rng.integers(0, 256, (n, 16, 8), dtype=np.uint8)
            files = {"images-idx3-ubyte": _header(0x0803, (n, 28, 28)) + images.tobytes(),
                     "labels-idx1-ubyte": _header(0x0801, (n,))
                     + (np.arange(n) % 10).astype(np.uint8).tobytes()}
            for stem, data in files.items():
                with gzip.open(root / name / f"{prefix}-{stem}.gz", "wb", compresslevel=1) as f:
                    f.write(data)


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets"))
