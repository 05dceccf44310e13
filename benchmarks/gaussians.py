"""Gaussian L2-UVP table (method.md section 9): one `hjtranslate train gaussians` run per
dimension, forward and backward UVP with wall time, beside the paper's rows.

    python benchmarks/gaussians.py --dims 2 4 8 16 32 64 --time-budget 840
    python benchmarks/gaussians.py --out benchmarks/results/gaussians-affine.json --extra --head affine
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

PAPER = {  # forward L2-UVP %, d = 2, 4, 8, 16, 32, 64
    "NCF (paper)": [0.010, 0.021, 0.086, 0.15, 0.44, 0.86],
    "NCF-Adaptive (paper)": [0.010, 0.022, 0.090, 0.16, 0.31, 0.41],
    "MM:R": [0.012, 0.048, 0.012, 0.20, 0.35, 0.60],
    "best published": [0.010, 0.021, 0.012, 0.15, 0.31, 0.41],
}
DIMS = [2, 4, 8, 16, 32, 64]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dims", type=int, nargs="+", default=DIMS)
    ap.add_argument("--time-budget", type=float, default=840.0,
                    help="seconds per dimension (0: none, --steps rules)")
    ap.add_argument("--steps", type=int, default=200_000, help="steps per dimension (upper bound)")
    ap.add_argument("--out", default="benchmarks/results/gaussians.json")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train options")
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for d in args.dims:
        run_dir = Path("runs/bench") / f"{out.stem}-d{d}"
        budget = ["--time-budget", str(args.time_budget)] if args.time_budget else []
        cmd = [sys.executable, "-m", "hjtranslate", "train", "gaussians", "--dim", str(d), *budget,
               "--steps", str(args.steps), "--output-dir", str(run_dir), "--no-progress", *args.extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        m = json.loads((run_dir / "metrics.json").read_text())
        results[str(d)] = {
            "uvp_forward": m["uvp_forward"], "uvp_backward": m["uvp_backward"],
            "cos_forward": m["cos_forward"], "cost_ratio": m["cost_ratio"],
            "duality_gap": m["duality_gap"], "steps": m["steps"],
            "train_seconds": m["train_seconds"], "wall_seconds": time.perf_counter() - t0,
            "command": " ".join(cmd[1:]), "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()} {platform.node()} ({__import__('os').cpu_count()} cores)",
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, sort_keys=True))
        print(f"d={d}: {results[str(d)]}", flush=True)
    print(table(results))


def table(results: dict) -> str:
    dims = [d for d in DIMS if str(d) in results]
    head = "| method | " + " | ".join(str(d) for d in dims) + " |"
    lines = [head, "|---" * (len(dims) + 1) + "|"]
    for name, row in PAPER.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[DIMS.index(d)]:.3g}" for d in dims) + " |")
    for key, label in (("uvp_forward", "hjtranslate forward"), ("uvp_backward", "hjtranslate backward")):
        lines.append(f"| **{label}** | " + " | ".join(f"{results[str(d)][key]:.3g}" for d in dims) + " |")
    secs = " | ".join(f"{results[str(d)]['train_seconds']:.0f}" for d in dims)
    lines.append(f"| train seconds | {secs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
