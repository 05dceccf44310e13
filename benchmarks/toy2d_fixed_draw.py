"""How typical is toy2d's fixed held-out draw? Exact OT cost (POT ``emd``, quadratic cost)
between 16,000 points per side of a pair on the fixed draw (seeds 10,001 / 10,002, which
``hjtranslate train toy2d`` and ``toy2d_large_n.py --blocks 4`` evaluate on) and on three fresh
draws (``toy2d_large_n.py --cost-draws``'s first three). A fixed draw whose exact cost sits above
the fresh ones reads every map's cost ratio low, and one below reads it high.

    OMP_NUM_THREADS=1 python benchmarks/toy2d_fixed_draw.py 8gaussians circles
"""

from __future__ import annotations

import json
import sys

from toy2d_large_n import fresh_seeds  # the script's folder is on sys.path

import hjtranslate as hjt
from hjtranslate.metrics import exact_ot_cost
from hjtranslate.tasks.toy2d import toy_samples


def exact_cost(source: str, target: str, seeds: tuple[int, int], n: int = 16_000) -> float:
    x, y = toy_samples(source, n, seed=seeds[0]), toy_samples(target, n, seed=seeds[1])
    return exact_ot_cost(x, y, hjt.get_cost("quadratic"), 1.0)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/toy2d_fixed_draw.py SOURCE TARGET")
    source, target = sys.argv[1:]
    fixed = exact_cost(source, target, (10_001, 10_002))
    fresh = [exact_cost(source, target, fresh_seeds(k)) for k in range(3)]
    print(json.dumps({"pair": f"{source}-{target}", "fixed": fixed, "fresh": fresh}))


if __name__ == "__main__":
    main()
