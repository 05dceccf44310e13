"""What one training step asks of the device, counted on any machine: its tensor operations (on a
GPU each is a kernel launch, the cost that made a GPU step host-bound) and the operations that
read a value back to the host (on a GPU each waits for the device), for digits-to-fashion's
step (a conditional head, one Hopf-Lax part per class, the Gaussian match) and fit's defaults.

    python benchmarks/step_ops.py --out benchmarks/results/step_ops.json

Counted with a TorchDispatchMode over the third step of a 4-step fit (64-d, 10 classes, batch
512); views (reshape, transpose, ...) launch nothing and are counted apart.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hjtranslate as hjt
from hjtranslate import objective

VIEWS = ("view", "reshape", "expand", "_unsafe_view", "aten.t.", "transpose", "permute", "select",
         "slice", "squeeze", "unsqueeze", "detach", "alias", "as_strided", "split", "chunk",
         "unbind", "lift_fresh", "_local_scalar")
# operations that read device values on the host (or need to know a size the data decides)
HOST_READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.equal", "aten._linalg_check_errors",
              "aten.masked_select", "aten.unique", "aten._unique2", "aten.bincount")
SETTINGS = {
    "digits-to-fashion": dict(conditional=True, mmd="gaussian", head_kwargs={
        "width": 256, "depth": 3, "quadratic": "hopf_lax_per_class", "quadratic_gain": 1.0}),
    "fit-defaults": {},
}


def count(settings: dict, step: int = 2) -> dict[str, int]:
    """Operations of training step ``step`` (from its forward to the next one)."""
    g = torch.Generator().manual_seed(0)
    k = torch.arange(1500) % 10
    x = torch.randn(1500, 64, generator=g) + 0.3 * k[:, None]
    y = torch.randn(1500, 64, generator=g) * 1.5 - 0.2 * k[:, None]
    ops: collections.Counter = collections.Counter()
    seen = {"step": -1}

    class Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if seen["step"] == step:
                name = str(func)
                is_mask_index = name.startswith("aten.index.Tensor") and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or []))
                ops["view" if any(v in name for v in VIEWS) else "launch"] += 1
                ops["host_read"] += name.startswith(HOST_READS) or is_mask_index
            return func(*args, **(kwargs or {}))

    forward = objective.HJObjective.forward

    def counted(self, *a, **kw):
        seen["step"] += 1
        return forward(self, *a, **kw)

    objective.HJObjective.forward = counted
    try:
        with Counting():
            hjt.fit(x, y, labels=(k, k), steps=step + 2, batch_size=512, seed=0, **settings)
    finally:
        objective.HJObjective.forward = forward
    return {"operations": ops["launch"], "views": ops["view"], "host_reads": ops["host_read"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the counts as JSON here")
    args = p.parse_args(argv)
    out = {name: count(settings) for name, settings in SETTINGS.items()}
    for name, c in out.items():
        print(f"{name}: {c['operations']} operations, {c['views']} views, "
              f"{c['host_reads']} host reads a step", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"torch": torch.__version__, **out}, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
