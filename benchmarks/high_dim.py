"""Which quadratic part `fit` should default to in high dimensions: time, peak memory and L2-UVP
of a quadratic-cost map between correlated Gaussians (the closed-form OT map is known).

    OMP_NUM_THREADS=1 python benchmarks/high_dim.py --dims 64 128 --parts hopf_lax_spd hopf_lax_basis

Each configuration runs in a process of its own (its peak memory is its own); results go to
benchmarks/results/high_dim.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "high_dim.json"


def one(dim: int, part: str, steps: int, gain: float | None, n: int) -> dict:
    import torch

    import hjtranslate as hjt
    from hjtranslate.metrics import gaussian_ot_map

    g = torch.Generator().manual_seed(1)
    b = torch.randn(dim, dim, generator=g) / dim**0.5 * 0.5
    cov = (b @ b.T + 0.5 * torch.eye(dim)) @ (b @ b.T + 0.5 * torch.eye(dim))
    mean = torch.ones(dim)
    x = torch.randn(n, dim, generator=g)
    y = mean + torch.randn(n, dim, generator=g) @ torch.linalg.cholesky(cov).T
    _, true = gaussian_ot_map(torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64),
                              mean.double(), cov.double())
    head_kwargs = {"quadratic": part, **({"quadratic_gain": gain} if gain is not None else {})}
    start = time.perf_counter()
    m = hjt.fit(x, y, steps=steps, head_kwargs=head_kwargs, seed=0)
    seconds = time.perf_counter() - start
    xt = torch.randn(2000, dim, generator=g)
    uvp = float((m.forward(xt).double() - true(xt.double())).pow(2).sum(1).mean() / cov.trace())
    return {"dim": dim, "part": part, "gain": gain, "steps": steps, "n": n, "seconds": seconds,
            "seconds_per_step": seconds / steps, "uvp_percent": 100 * uvp,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--parts", nargs="+", default=["hopf_lax_spd", "hopf_lax_basis"])
    p.add_argument("--gains", type=float, nargs="+", default=None,
                   help="quadratic_gain per part (default: each part's own default in fit)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--one", nargs=5, help=argparse.SUPPRESS)  # dim part steps gain n, in a child
    args = p.parse_args()
    if args.one:
        dim, part, steps, gain, n = args.one
        print(json.dumps(one(int(dim), part, int(steps), None if gain == "-" else float(gain), int(n))))
        return
    rows = []
    for dim in args.dims:
        for i, part in enumerate(args.parts):
            gain = "-" if args.gains is None else str(args.gains[i])
            run = subprocess.run([sys.executable, __file__, "--one", str(dim), part, str(args.steps),
                                  gain, str(args.n)], capture_output=True, text=True)
            if run.returncode != 0:
                rows.append({"dim": dim, "part": part, "gain": None if gain == "-" else float(gain),
                             "steps": args.steps, "failed": run.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    # merged with earlier runs' rows (one row per dim, part, gain and steps)
    def key(row: dict) -> tuple:
        return row["dim"], row["part"], row.get("gain"), row.get("steps")

    earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    merged = {key(r): r for r in earlier} | {key(r): r for r in rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(sorted(merged.values(), key=lambda r: (r["dim"], r["part"])),
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
