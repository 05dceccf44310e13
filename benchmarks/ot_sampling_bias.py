"""How far exact discrete OT on n samples sits above the true transport cost in the 64-d VAE
latent: the yardstick of digits-to-fashion's "latent cost within 5 % of exact OT on 1,000-sample
subsets" goal.

For each class k, fit Gaussians to the MNIST digit-k and Fashion-MNIST class-k latents of the
shipped VAE (their means and covariances). Between those Gaussians the quadratic OT cost is known
in closed form (``|m0 - m1|^2 + tr(S0 + S1 - 2 (S0^1/2 S1 S0^1/2)^1/2)``, halved for
``c = |x - y|^2 / 2``), so the exact map's cost is known. Draw n samples of each and compute the
exact discrete OT cost between them (POT ``emd``), as digits-to-fashion's evaluation does. The
ratio true / discrete is what a *perfect* map scores on that goal. (Discrete OT's bias grows
with the data's intrinsic dimension; the real latents may be lower-dimensional than these
full-rank Gaussian stand-ins, so read it as a yardstick, not as the exact bias.)

It also evaluates the per-class Gaussian maps themselves (``fit``'s warm start, no training:
exact HJ solutions) on the test latents as the task does, to show what the duality-gap goal
measures for an exact potential.

    python benchmarks/ot_sampling_bias.py --n 250 500 1000 2000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="benchmarks/results/ot_sampling_bias.json")
    args = ap.parse_args()

    from hjtranslate_plugins.vae import VAEEncoder

    import hjtranslate as hjt
    from hjtranslate.data import load_dataset
    from hjtranslate.metrics import _sqrtm_psd, exact_ot_cost
    from hjtranslate.tasks.digits_to_fashion import _cache_dir, balanced_subset, encoded

    enc = VAEEncoder(None)
    _, ls = load_dataset("mnist", "train", args.data_dir)
    _, lt = load_dataset("fashion-mnist", "train", args.data_dir)
    _, zs, ks = encoded(enc, "mnist", "train", args.data_dir, balanced_subset(ls, 2000, 0), _cache_dir())
    _, zt, kt = encoded(enc, "fashion-mnist", "train", args.data_dir, balanced_subset(lt, 2000, 1),
                        _cache_dir())
    cost = hjt.get_cost("quadratic")
    g = torch.Generator().manual_seed(0)
    rows = {}
    for k in range(10):
        x, y = zs[ks == k].double(), zt[kt == k].double()
        m0, m1, s0, s1 = x.mean(0), y.mean(0), torch.cov(x.T), torch.cov(y.T)
        r = _sqrtm_psd(s0)
        w2 = float((m0 - m1).pow(2).sum() + torch.trace(s0 + s1 - 2 * _sqrtm_psd(r @ s1 @ r)))
        true = 0.5 * w2  # c(x, y) = |x - y|^2 / 2
        l0, l1 = torch.linalg.cholesky(s0), torch.linalg.cholesky(s1)
        ratios = {}
        for n in args.n:
            vals = []
            for _ in range(args.repeats):
                a = m0 + torch.randn(n, len(m0), generator=g, dtype=torch.float64) @ l0.T
                b = m1 + torch.randn(n, len(m1), generator=g, dtype=torch.float64) @ l1.T
                vals.append(true / exact_ot_cost(a, b, cost))
            ratios[n] = sum(vals) / len(vals)
        rows[k] = {"true_cost": true, "true_over_discrete": ratios}
        print(k, {n: round(v, 3) for n, v in ratios.items()}, flush=True)
    warm = warm_start_map_metrics(zs, zt, ks, kt, args.data_dir, enc)
    print("untrained per-class Gaussian maps on test latents:", warm)
    report = {"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
              "machine": f"{platform.machine()} ({os.cpu_count()} cores)", "classes": rows,
              "warm_start_map_on_test_latents": warm}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("| n | " + " | ".join(str(k) for k in range(10)) + " |")
    print("|---" * 11 + "|")
    for n in args.n:
        print(f"| {n} | " + " | ".join(f"{rows[k]['true_over_discrete'][n]:.3f}" for k in range(10)) + " |")


def warm_start_map_metrics(zs, zt, ks, kt, data_dir, enc) -> dict:
    """Duality gap and cost / exact OT per class of the untrained per-class Gaussian maps, on
    1,000 test latents per class (the task's evaluation)."""
    import hjtranslate as hjt
    from hjtranslate.api import linear_warm_start, standardise
    from hjtranslate.metrics import duality_gap, exact_ot_cost
    from hjtranslate.tasks.digits_to_fashion import _cache_dir, encoded

    _, xe, ke = encoded(enc, "mnist", "test", data_dir, torch.arange(10000), _cache_dir())
    _, ye, le = encoded(enc, "fashion-mnist", "test", data_dir, torch.arange(10000), _cache_dir())
    m = hjt.HJMap(xe.shape[1], head="conditional", num_classes=10,
                  head_kwargs={"quadratic": "hopf_lax_per_class", "quadratic_gain": 1.0})
    linear_warm_start(m, *standardise(m, zs, zt), ks, kt)  # as fit does
    m.eval()
    gaps, ratios = [], []
    for k in range(10):
        x, y = xe[ke == k][:1000], ye[le == k][:1000]
        kx, ky = torch.full((len(x),), k), torch.full((len(y),), k)
        gaps.append(duality_gap(m, x, y, kx, ky)["duality_gap"])
        ratios.append(float(m.transport_cost(x, kx).mean()) / exact_ot_cost(x, y, m.cost, m.t_f))
    return {"duality_gap_per_class": gaps, "cost_ratio_per_class": ratios}


if __name__ == "__main__":
    main()
