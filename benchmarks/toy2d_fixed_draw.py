"""How typical is toy2d's fixed held-out draw? Exact OT cost (POT ``emd``, quadratic cost)
between 16,000 points per side of a pair on the fixed draw (seeds 10,001 / 10,002, which
``hjtranslate train toy2d`` and ``toy2d_large_n.py --blocks 4`` evaluate on) and on ``--draws``
fresh draws (``toy2d_large_n.py --cost-draws``'s first ones). A fixed draw whose exact cost sits
above the fresh ones reads every map's cost ratio low, and one below reads it high.

The fresh draws' exact costs go to ``toy2d_large_n.py``'s cache, so running this before a map
of the pair is trained makes its ``--cost-draws`` reading take seconds.

    OMP_NUM_THREADS=1 python benchmarks/toy2d_fixed_draw.py 8gaussians circles --draws 8
"""

from __future__ import annotations

import argparse
import json

from toy2d_large_n import fresh_exact_cost  # the script's folder is on sys.path

import hjtranslate as hjt
from hjtranslate.metrics import exact_ot_cost
from hjtranslate.tasks.toy2d import held_out

N = 16_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--draws", type=int, default=3, help="fresh draws to compare the fixed one with")
    args = ap.parse_args()
    cost = hjt.get_cost("quadratic")
    fixed = exact_ot_cost(*held_out(args.source, args.target, N), cost, 1.0)
    fresh = [fresh_exact_cost(args.source, args.target, N, k, cost, 1.0) for k in range(args.draws)]
    print(json.dumps({"pair": f"{args.source}-{args.target}", "fixed": fixed, "fresh": fresh}))


if __name__ == "__main__":
    main()
