"""What one closed-form HJ evaluation costs in Euler steps of a same-width OT-CFM network.

Our map is ``x -> x - grad u`` (a forward and a backward pass); one Euler step of the flow is
one forward pass. Throughput does not depend on the weights, so both networks are built with a
token amount of training (8gaussians -> moons, 2-D, Fourier features as our head's default) and
timed on 10,000 points, the fastest of ``--repeats`` passes, one thread. At equal accuracy our
map is 10x faster only if the ODE needs 10x this many steps there.

    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import meta, problems, speed, train_cfm  # noqa: E402


def main() -> None:
    import hjtranslate as hjt

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default="benchmarks/results/eval_cost.json")
    args = ap.parse_args()
    _, x, y, xt, _, _ = problems("toy2d", 20000)[0]
    xb = xt[:10000]
    rows = []
    for w in args.widths:
        m = hjt.fit(x, y, steps=2, batch_size=512, seed=0, head="mlp", head_kwargs={"width": w},
                    progress=False)
        mapper, _, _, n_params = train_cfm(x, y, 0.2, [1.0], 512, 0, lambda f: {}, width=w)
        with torch.no_grad():
            euler = speed(lambda mapper=mapper: mapper(xb, 1, "euler"), len(xb), args.repeats)
        hj = speed(lambda m=m: m.forward(xb), len(xb), args.repeats)
        rows.append({"width": w, "params_hj": sum(p.numel() for p in m.parameters()),
                     "params_cfm": n_params, "hj_samples_per_s": hj, "euler_step_samples_per_s": euler,
                     "euler_steps_per_hj_evaluation": euler / hj})
        print(f"width {w}: HJ map {hj:,.0f}/s, one Euler step {euler:,.0f}/s: "
              f"one HJ evaluation costs {euler / hj:.2f} Euler steps", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**meta(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
