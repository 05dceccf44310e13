"""Redraw the README's digits-to-fashion pictures: a map's grids (`save_grid`, as a training run
writes them: per class the first test images, their translations and the morph) through a VAE.

    OMP_NUM_THREADS=1 python benchmarks/d2f_grids.py   # the shipped map and VAE -> docs/*.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hjtranslate_plugins.vae import VAEEncoder

from hjtranslate.data import load_dataset, to_float
from hjtranslate.hjmap import HJMap
from hjtranslate.tasks.digits_to_fashion import save_grid

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--map", default=str(ROOT / "models" / "digits-to-fashion" / "map"))
    p.add_argument("--vae", default=str(ROOT / "models" / "vae"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", default=str(ROOT / "docs"))
    p.add_argument("--n", type=int, default=10000, help="test images per side to pick from")
    args = p.parse_args(argv)
    m, enc = HJMap.from_pretrained(args.map), VAEEncoder(args.vae)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    for name, direction, file in (("mnist", "forward", "digits_to_fashion.png"),
                                  ("fashion-mnist", "backward", "fashion_to_digits.png")):
        images, labels = load_dataset(name, "test", args.data_dir)
        x = to_float(images[:args.n])
        save_grid(Path(args.out_dir) / file, m, enc, x, enc.encode(x), labels[:args.n], direction)
        print(f"wrote {Path(args.out_dir) / file}")


if __name__ == "__main__":
    main()
