"""2-D pairs: transport cost of the learned map against exact discrete OT (POT) on the same
4,000 held-out samples (and extrapolated past discrete OT's sampling bias), and the energy
distance of pushed samples to the target beside its floor: the value expected at the same
sample sizes if the pushed samples followed the target law (the goal's own yardstick, two
independent target samples, over 16 fresh draws: see toy2d_large_n.py --draws); and the exact
OT cost between pushed and target samples beside the same between two target samples (a sharper
match test). One `hjtranslate train toy2d` run per pair; the run's own evaluation gives the
figures.

    python benchmarks/toy2d.py --steps 6000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

from side_by_side import run_side_by_side
from toy2d_large_n import measure

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
    ap.add_argument("--large-n", action="store_true",
                    help="also the cost ratio against exact OT on 16,000 samples per side (about 2 "
                    "minutes and 2 GB per pair; one draw of 4,000 moves by 1-7 %%)")
    args = ap.parse_args()
    dirs = {f"{src}->{tgt}": Path("runs/bench") / "-".join(filter(None, ["toy2d", args.tag, src, tgt]))
            for src, tgt in PAIRS}
    jobs = [(key, [sys.executable, "-m", "hjtranslate", "train", "toy2d", "--source", key.split("->")[0],
                   "--target", key.split("->")[1],
                   *(["--time-budget", str(args.time_budget)] if args.time_budget else []),
                   "--steps", str(args.steps), "--output-dir", str(folder), "--no-progress", *args.extra])
            for key, folder in dirs.items()]
    results = {}
    for key, cmd, seconds in run_side_by_side(jobs, args.jobs, one_thread=args.jobs > 1):
        m = json.loads((dirs[key] / "metrics.json").read_text())
        results[key] = {
            **{k: m[k] for k in ("cost_ratio", "cost_ratio_extrapolated", "optimality_ratio",
                                 "map_cost", "exact_ot_cost", "exact_ot_cost_half_n",
                                 "energy_forward", "energy_floor_forward", "energy_backward",
                                 "energy_floor_backward", "ot_match_forward",
                                 "ot_match_floor_forward", "duality_gap", "monotone_share",
                                 "energy_forward_over_two_target_samples",
                                 "energy_forward_over_two_target_samples_se",
                                 "energy_forward_over_perfect_map", "steps", "train_seconds")},
            "wall_seconds": seconds, "command": " ".join(cmd[1:]),
            "png": str(dirs[key] / "transport.png"),
        }
        if args.large_n:
            large = measure(dirs[key])
            results[key].update({k: large[k] for k in ("cost_ratio_mean", "cost_ratio_sd",
                                                        "cost_ratio_union")})
        print(f"{key}: {results[key]}", flush=True)
    results = {f"{s}->{t}": results[f"{s}->{t}"] for s, t in PAIRS}
    report = {"date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()} ({os.cpu_count()} cores)", "pairs": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True))
    print("| pair | cost ratio (n = 4,000) | extrapolated | optimality | energy fwd / two target "
          "samples (16 draws) | energy fwd / floor | energy bwd / floor | OT match fwd / floor | "
          "duality gap | steps |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, r in results.items():
        print(f"| {k} | {r['cost_ratio']:.3f} | {r['cost_ratio_extrapolated']:.3f} | "
              f"{r['optimality_ratio']:.3f} | "
              f"{r['energy_forward_over_two_target_samples']:.2f} "
              f"(se {r['energy_forward_over_two_target_samples_se']:.2f}) | "
              f"{r['energy_forward']:.5f} / {r['energy_floor_forward']:.5f} | "
              f"{r['energy_backward']:.5f} / {r['energy_floor_backward']:.5f} | "
              f"{r['ot_match_forward']:.4f} / {r['ot_match_floor_forward']:.4f} | "
              f"{r['duality_gap']:.3f} | {r['steps']} |")
    if args.large_n:
        print("\n| pair | cost ratio, 4 draws of 4,000: mean +- sd | n = 16,000 |\n|---|---|---|")
        for k, r in results.items():
            print(f"| {k} | {r['cost_ratio_mean']:.3f} +- {r['cost_ratio_sd']:.3f} | "
                  f"{r['cost_ratio_union']:.3f} |")


if __name__ == "__main__":
    main()
