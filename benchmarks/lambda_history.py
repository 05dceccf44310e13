"""How the adaptive MMD weight moved during training runs, read from their last checkpoint.

The adaptive lambda (objective.py) rises while the batch's match, over its statistical floor,
stays above ``1 + slack`` and falls below it. This prints, for each run, lambda and the mean
ratio over windows of the run, so one can see whether the constraint was binding (lambda rising
or steady) or slack (lambda falling toward its lower bound: the batch no longer sees the excess,
and the HJ term alone shapes the map).

    python benchmarks/lambda_history.py runs/bench/toy2d-s30-st1-sd10-swissroll-moons --windows 8
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def last_history(run: Path) -> list[dict[str, float]]:
    """The logged history of ``run`` (a training output folder) from its latest checkpoint."""
    states = sorted(run.glob("checkpoints/step-*/trainer_state.json"))
    if not states:
        raise SystemExit(f"{run}: no checkpoints/step-*/trainer_state.json; pass a training output "
                         "folder (runs keep their checkpoints there).")
    history = json.loads(states[-1].read_text()).get("history", [])
    if not history or "lambda" not in history[0]:
        raise SystemExit(f"{run}: its history has no 'lambda' (not an HJ map run?).")
    return history


def summarise(history: list[dict[str, float]], windows: int) -> list[dict[str, float]]:
    """Per window of the run: its last step, lambda there, and the mean and median ratio."""
    size = max(1, len(history) // windows)
    rows = []
    for start in range(0, len(history), size):
        part = history[start:start + size]
        ratios = [r["ratio"] for r in part if "ratio" in r]
        rows.append({"step": part[-1]["step"], "lambda": part[-1]["lambda"],
                     "ratio_mean": statistics.fmean(ratios), "ratio_median": statistics.median(ratios)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="training output folders")
    p.add_argument("--windows", type=int, default=8, help="windows per run (default %(default)s)")
    args = p.parse_args()
    for run in args.runs:
        print(run)
        for row in summarise(last_history(run), max(1, args.windows)):
            print(f"  to step {row['step']:>6}: lambda {row['lambda']:9.3f}   match / floor: mean "
                  f"{row['ratio_mean']:.3f}, median {row['ratio_median']:.3f}")


if __name__ == "__main__":
    main()
