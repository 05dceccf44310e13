"""The training step's time and the forward map's throughput where `fit` trains (a GPU when torch
sees one), on digits-to-fashion's problem shape: 64-d, 10 classes, a class-conditional map.

    python benchmarks/gpu_step.py --batches 512 2048 8192 --out benchmarks/results/gpu_step.json
    python benchmarks/gpu_step.py --settings digits-to-fashion   # the task's head and match

Each batch size trains a short and a long run and reports their difference per step, so that
the set-up (building the map, the warm start, the first kernels) is left out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from step_ops import SETTINGS  # (benchmarks/ is on the path: run as a script, or by the tests)

import hjtranslate as hjt


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _fit_seconds(x, y, k, steps: int, batch: int, settings: dict) -> tuple[float, hjt.HJMap]:
    _sync()
    t = time.perf_counter()
    m = hjt.fit(x, y, labels=(k, k), steps=steps, batch_size=batch, seed=0, **settings)
    _sync()
    return time.perf_counter() - t, m


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--steps", type=int, default=100, help="steps between the short and long run")
    p.add_argument("--n", type=int, default=60000, help="samples per side")
    p.add_argument("--settings", choices=sorted(SETTINGS), default="fit-defaults",
                   help="fit's defaults with labels, or digits-to-fashion's head and match")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    settings = SETTINGS[args.settings]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 64, generator=g)
    y = torch.randn(args.n, 64, generator=g) * 0.7 + 0.5
    k = torch.arange(args.n) % 10
    rows = []
    for batch in args.batches:
        _fit_seconds(x, y, k, 5, batch, settings)  # warm-up: kernels, allocator
        short, _ = _fit_seconds(x, y, k, 5, batch, settings)
        long, m = _fit_seconds(x, y, k, 5 + args.steps, batch, settings)
        per = max(long - short, 1e-9) / args.steps
        rows.append({"batch": batch, "ms_per_step": 1000 * per, "steps_per_s": 1 / per})
        print(f"batch {batch}: {1000 * per:.1f} ms a step ({1 / per:.1f} steps/s)", flush=True)
    dev = m.shift.device
    xs, ks = x[:50000].to(dev), k[:50000].to(dev)
    m.forward(xs[:1000], ks[:1000])
    _sync()
    t = time.perf_counter()
    for _ in range(10):
        m.forward(xs, ks)
    _sync()
    rate = 10 * len(xs) / (time.perf_counter() - t)
    print(f"forward map: {rate:,.0f} samples/s on {dev}", flush=True)
    device = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    out = {"device": device, "torch": torch.__version__, "settings": args.settings, "steps": rows,
           "forward_samples_per_s": rate}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
