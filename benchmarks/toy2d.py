"""2-D pairs: transport cost of the learned map against exact discrete OT (POT) on the same
4,000 held-out samples (and extrapolated past discrete OT's sampling bias), and the energy
distance of pushed samples to the target beside its floor: the value expected at the same
sample sizes if the pushed samples followed the target law. One `hjtranslate train toy2d` run
per pair; the run's own evaluation gives the figures.

    python benchmarks/toy2d.py --steps 6000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

PAIRS = [("swissroll", "moons"), ("8gaussians", "circles"), ("gaussian", "checkerboard"),
         ("spirals", "8gaussians")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds per pair (0: none, --steps rules)")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--out", default="benchmarks/results/toy2d.json")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train options")
    ap.add_argument("--jobs", type=int, default=1, help="pairs at once (each with one torch thread)")
    ap.add_argument("--tag", default="", help="run folders runs/bench/toy2d-TAG-... (side-by-side sweeps)")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.jobs > 1 else None
    results = {}
    pending, running = list(PAIRS), []
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            src, tgt = pending.pop(0)
            run_dir = Path("runs/bench") / "-".join(filter(None, ["toy2d", args.tag, src, tgt]))
            cmd = [sys.executable, "-m", "hjtranslate", "train", "toy2d", "--source", src,
                   "--target", tgt,
                   *(["--time-budget", str(args.time_budget)] if args.time_budget else []),
                   "--steps", str(args.steps),
                   "--output-dir", str(run_dir), "--no-progress", *args.extra]
            running.append((src, tgt, run_dir, cmd, subprocess.Popen(cmd, env=env), time.perf_counter()))
        time.sleep(1)
        for item in list(running):
            src, tgt, run_dir, cmd, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode:
                sys.exit(f"error: {' '.join(cmd)} exited with {proc.returncode}")
            m = json.loads((run_dir / "metrics.json").read_text())
            results[f"{src}->{tgt}"] = {
                **{k: m[k] for k in ("cost_ratio", "cost_ratio_extrapolated", "optimality_ratio",
                                     "map_cost", "exact_ot_cost", "exact_ot_cost_half_n",
                                     "energy_forward", "energy_floor_forward", "energy_backward",
                                     "energy_floor_backward", "duality_gap", "monotone_share",
                                     "steps", "train_seconds")},
                "wall_seconds": time.perf_counter() - t0, "command": " ".join(cmd[1:]),
                "png": str(run_dir / "transport.png"),
            }
            print(f"{src}->{tgt}: {results[f'{src}->{tgt}']}", flush=True)
    results = {f"{s}->{t}": results[f"{s}->{t}"] for s, t in PAIRS}
    report = {"date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()} ({os.cpu_count()} cores)", "pairs": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True))
    print("| pair | cost ratio (n = 4,000) | extrapolated | optimality | energy fwd / floor | "
          "energy bwd / floor | duality gap | steps |")
    print("|---|---|---|---|---|---|---|---|")
    for k, r in results.items():
        print(f"| {k} | {r['cost_ratio']:.3f} | {r['cost_ratio_extrapolated']:.3f} | "
              f"{r['optimality_ratio']:.3f} | "
              f"{r['energy_forward']:.5f} / {r['energy_floor_forward']:.5f} | "
              f"{r['energy_backward']:.5f} / {r['energy_floor_backward']:.5f} | "
              f"{r['duality_gap']:.3f} | {r['steps']} |")


if __name__ == "__main__":
    main()
