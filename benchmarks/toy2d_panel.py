"""One PNG of several saved toy2d maps side by side (source, target, pushed samples and
transport segments on 2,000 held-out points per side, the plot each toy2d run writes).

    python benchmarks/toy2d_panel.py benchmarks/maps/swissroll-moons-s33-b2048 \\
        benchmarks/maps/8gaussians-circles-s35-b2048 --out docs/toy2d_pairs.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from toy2d_large_n import load_run  # noqa: E402  (the script's folder is on sys.path)

from hjtranslate.tasks.common import draw_transport  # noqa: E402
from hjtranslate.tasks.toy2d import plot_points  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("maps", nargs="+", help="saved toy2d maps or run folders")
    ap.add_argument("--out", default="docs/toy2d_pairs.png")
    args = ap.parse_args()
    fig, axes = plt.subplots(1, len(args.maps), figsize=(4.5 * len(args.maps), 4.8), dpi=100, squeeze=False)
    for ax, folder in zip(axes[0], args.maps, strict=True):
        cfg, m, _, _ = load_run(Path(folder), 2)
        x, y = plot_points(cfg["source"], cfg["target"])
        with torch.no_grad():
            pushed = m.forward(x)
        draw_transport(ax, x, y, pushed, f"{cfg['source']} → {cfg['target']}")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
