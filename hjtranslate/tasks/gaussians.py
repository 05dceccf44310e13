"""``hjtranslate train gaussians --dim D``: a Gaussian pair whose OT map is known in closed form."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from ..checks import whole_number
from ..hjmap import HJMap
from ..metrics import cosine_similarity, evaluate_map, gaussian_ot_map, l2_uvp
from ..training import finish_run
from .common import (
    add_map_arguments,
    check_count,
    fit_from_args,
    held_out_seeds,
    output_dir,
    require_at_least,
    run_figures,
    write_outputs,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dim", type=int, default=2, help="dimension d of the Gaussians")
    # The benchmark figures train on 200,000 (BENCHMARKS.md): 20,000 leave a finite-sample floor of
    # 0.015-0.14 % L2-UVP in the warm start (as in toy2d, a map fits the sample it trains on).
    p.add_argument("--n", type=int, default=200_000, help="training samples per side")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the Gaussian pair")
    p.add_argument("--eval-n", type=int, default=10000,
                   help="fresh samples per side to evaluate on (BENCHMARKS.md figures use 10,000)")
    add_map_arguments(p, steps=3000)
    # Gaussian OT maps are affine: the Hopf-Lax quadratic of the head carries them. It starts at
    # the Gaussian map of the sample moments (the warm start), so it takes small steps (gain 1);
    # from a cold start (--no-warm-start) it must travel far (gain 300; on the 16-D pair, 1,000
    # steps: L2-UVP 1.8 % at gain 1,000, 9.6 % at 30). The network, which should stay near
    # zero, learns at 1e-4.
    p.set_defaults(lr=1e-4)


def _default_gain(args: argparse.Namespace) -> None:
    if args.quadratic_gain is None:
        args.quadratic_gain = 300.0 if args.no_warm_start else 1.0


def gaussian_pair(dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Means and well-conditioned random covariances (float64)."""
    if dim < 1:
        raise ValueError(f"--dim must be >= 1, got {dim}.")
    g = torch.Generator().manual_seed(seed)

    def cov() -> torch.Tensor:
        a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
        return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)

    return {
        "m0": torch.randn(dim, generator=g, dtype=torch.float64),
        "m1": torch.randn(dim, generator=g, dtype=torch.float64),
        "s0": cov(), "s1": cov(),
    }


def sample(pair: dict[str, torch.Tensor], side: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m, s = pair[f"m{side}"], pair[f"s{side}"]
    z = torch.randn(n, len(m), generator=g, dtype=torch.float64)
    return (m + z @ torch.linalg.cholesky(s).T).float()


MAX_EVAL_N = 1_000_000  # fresh samples per side, held in memory with their true maps


def evaluate(m: HJMap, args: argparse.Namespace, n: int = 10000) -> dict[str, Any]:
    check_count("--n", n, 20, MAX_EVAL_N)
    pair = gaussian_pair(args.dim, args.data_seed)
    seed_x, seed_y = held_out_seeds(args.data_seed)  # never the training seeds
    x, y = sample(pair, 0, n, seed=seed_x), sample(pair, 1, n, seed=seed_y)
    _, t_fwd = gaussian_ot_map(pair["m0"], pair["s0"], pair["m1"], pair["s1"])
    _, t_bwd = gaussian_ot_map(pair["m1"], pair["s1"], pair["m0"], pair["s0"])
    fwd, bwd = m.forward(x).cpu(), m.backward(y).cpu()  # the map may sit on a GPU
    true_fwd, true_bwd = t_fwd(x.double()), t_bwd(y.double())
    out = {
        "dim": args.dim,
        "uvp_forward": l2_uvp(fwd, true_fwd, y),
        "uvp_backward": l2_uvp(bwd, true_bwd, x),
        "cos_forward": cosine_similarity(x, fwd, true_fwd.float()),
        "cos_backward": cosine_similarity(y, bwd, true_bwd.float()),
    }
    out.update(evaluate_map(m, x, y))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    _default_gain(args)
    require_at_least(args, n=2)
    check_count("--eval-n", args.eval_n, 20, MAX_EVAL_N)
    whole_number("--data-seed", args.data_seed, 0, 2**32 - 1)  # the range of --seed
    pair = gaussian_pair(args.dim, args.data_seed)
    x = sample(pair, 0, args.n, seed=args.data_seed * 2 + 1)
    y = sample(pair, 1, args.n, seed=args.data_seed * 2 + 2)
    t0 = time.perf_counter()
    m, result, acc = fit_from_args(args, x, y, "gaussians")
    metrics: dict[str, Any] = {**run_figures(result, t0), **result["final"]}
    if acc.is_main_process:
        metrics.update(evaluate(m, args, n=args.eval_n))
    write_outputs(output_dir(args, "gaussians"), m, metrics, acc)
    finish_run(acc)
    return metrics
