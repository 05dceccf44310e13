"""Evaluation: L2-UVP, cosine similarity, energy distance, exact OT (POT), certificates."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .costs import Cost
from .hjmap import HJMap, _class_ids, as_sample_tensor
from .losses import batch_jacobian, cost_monotone_matrix, energy_distance, energy_floor


def _samples(fn: str, **sides: Any) -> list[torch.Tensor]:
    """Each sample set as a tensor (an array or a nested list as ``fit`` takes them), checked by
    :func:`_need_samples`."""
    tensors = {name: as_sample_tensor(t, f"{fn}'s {name}") for name, t in sides.items()}
    _need_samples(fn, **tensors)
    return list(tensors.values())


def _need_samples(fn: str, **sides: torch.Tensor) -> None:
    """Refuse an empty sample: a mean over none is NaN and a minimum over none an IndexError."""
    for name, t in sides.items():
        if len(t) == 0:
            raise ValueError(f"{fn} needs at least one sample in {name}, got an empty one "
                             f"(shape {tuple(t.shape)}): pass the samples to evaluate.")


def _classes(fn: str, x: torch.Tensor, y: torch.Tensor, kx: Any, ky: Any
             ) -> list[tuple[int, torch.Tensor, torch.Tensor]] | None:
    """With samples of several classes, each class's id and masks of its rows of ``x`` and
    ``y`` (the classes found on both sides); None for one class or no labels. A class-
    conditional map is judged class by class: an exact plan or a dual over the mixed classes
    would pair samples of different classes (it made a map correct in each class read 111 times
    the exact cost)."""
    if kx is None:
        return None
    kx = _class_ids(kx, x.device)
    if kx.numel() <= 1 or bool((kx == kx[0]).all()):
        return None
    if kx.numel() != len(x):
        raise ValueError(f"{fn}: got {kx.numel()} class labels for {len(x)} samples of x.")
    if ky is None or _class_ids(ky, y.device).numel() != len(y):
        raise ValueError(f"{fn}: x holds samples of several classes; pass ky, the class of each "
                         f"of the {len(y)} samples of y, so that each class is compared with its "
                         "own (or call it once per class).")
    ky = _class_ids(ky, y.device)
    groups = [(c, kx == c, ky == c) for c in torch.unique(kx).tolist()]
    groups = [(c, ix, iy) for c, ix, iy in groups if bool(iy.any())]
    if not groups:
        raise ValueError(f"{fn}: no class of x is found in y.")
    return groups


def _shares(groups: list[tuple[int, torch.Tensor, torch.Tensor]]) -> dict[int, float]:
    """Each class's share of ``x``: the weight of its figures in the class-conditional ones."""
    counts = {c: float(ix.sum()) for c, ix, _ in groups}
    return {c: n / sum(counts.values()) for c, n in counts.items()}


def _class_weighted(per: dict[int, dict[str, Any]], weights: dict[int, float], key: str) -> float:
    return sum(weights[c] * per[c][key] for c in per)


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def gaussian_ot_map(m0: torch.Tensor, s0: torch.Tensor, m1: torch.Tensor, s1: torch.Tensor
                    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The quadratic-cost OT map between Gaussians, ``T*(x) = m1 + A (x - m0)`` with
    ``A = S0^-1/2 (S0^1/2 S1 S0^1/2)^1/2 S0^-1/2``. Returns ``(A, T*)``."""
    r = _sqrtm_psd(s0)
    r_inv = torch.linalg.inv(r)
    a = r_inv @ _sqrtm_psd(r @ s1 @ r) @ r_inv
    a = 0.5 * (a + a.T)
    return a, (lambda x: m1 + (x - m0) @ a.T)


def l2_uvp(pred: torch.Tensor, true: torch.Tensor, target: torch.Tensor) -> float:
    """``100 * E|T(x) - T*(x)|^2 / Var(nu)`` with ``Var(nu) = trace(Cov(nu))``."""
    pred, true, target = _samples("l2_uvp", pred=pred, true=true, target=target)
    if pred.shape != true.shape:
        raise ValueError(f"l2_uvp compares each prediction with the true map's image of the same "
                         f"point: pred and true must have one shape, got {tuple(pred.shape)} and "
                         f"{tuple(true.shape)}.")
    if len(target) < 2:  # its variance is undefined (NaN)
        raise ValueError("l2_uvp needs at least 2 target samples for the target's variance, "
                         f"got {len(target)}.")
    pred, true, target = (t.detach().double().cpu() for t in (pred, true, target))  # any devices
    var = target.var(0).sum()
    return float(100 * (pred - true).pow(2).sum(1).mean() / var)


def cosine_similarity(x: torch.Tensor, pred: torch.Tensor, true: torch.Tensor) -> float:
    """Cosine between the displacements ``T(x) - x`` and ``T*(x) - x`` (as in the W2 benchmark)."""
    x, pred, true = _samples("cosine_similarity", x=x, pred=pred, true=true)
    if not x.shape == pred.shape == true.shape:
        raise ValueError(f"cosine_similarity needs x, pred and true of one shape, got "
                         f"{tuple(x.shape)}, {tuple(pred.shape)} and {tuple(true.shape)}.")
    x, pred, true = (t.detach().double().cpu() for t in (x, pred, true))  # any devices
    a, b = pred - x, true - x
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def _subsamples(x: torch.Tensor, y: torch.Tensor, max_n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (x[torch.randperm(len(x), generator=g)[:max_n]].double(),
            y[torch.randperm(len(y), generator=g)[:max_n]].double().to(x.device))


def energy(x: torch.Tensor, y: torch.Tensor, max_n: int = 4000, seed: int = 0) -> float:
    """Energy distance (V-statistic) between subsamples of at most ``max_n`` points."""
    x, y = _samples("energy", x=x, y=y)
    return float(energy_distance(*_subsamples(x, y, max_n, seed)))


def energy_with_floor(pred: torch.Tensor, ref: torch.Tensor, max_n: int = 4000,
                      seed: int = 0) -> tuple[float, float]:
    """Energy distance of ``pred`` to ``ref`` and its floor: the value expected, at the same
    sample sizes, when ``pred`` is a sample of the law of ``ref`` (``E|Y-Y'| (1/n + 1/m)``).
    The V-statistic's floor shrinks as 1/n, so it is only comparable at equal sizes; its spread
    between samples is about the floor itself, so both are averaged over disjoint blocks of at
    most ``max_n`` points (as many as the samples hold)."""
    _need_samples("energy_with_floor", pred=pred, ref=ref)
    a, b = _subsamples(pred, ref, len(pred) + len(ref), seed)
    s = min(max_n, len(a), len(b))
    blocks = [(a[i * s:(i + 1) * s], b[i * s:(i + 1) * s]) for i in range(min(len(a), len(b)) // s)]
    e = torch.stack([energy_distance(pa, pb) for pa, pb in blocks]).mean()
    floor = torch.stack([energy_floor(pb, s) for _, pb in blocks]).mean()
    return float(e), float(floor)


def exact_ot_cost(x: torch.Tensor, y: torch.Tensor, cost: Cost, t_f: float = 1.0) -> float:
    """Exact discrete OT cost between equal-weight samples (POT ``emd``). A cost that is infinite
    off a bounded domain (a bounded speed) is infinite for the pairs out of reach: they stay
    unused, and the answer is ``inf`` only when no plan avoids them."""
    import ot

    _need_samples("exact_ot_cost", x=x, y=y)
    c = pairwise_float64(cost, x, y.to(x.device), t_f).cpu().numpy()
    if (not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(y).all())) or t_f == 0
            or np.isnan(c).any() or (c == -np.inf).any()):  # POT would answer 0.0 ("unbounded")
        raise ValueError("exact_ot_cost: the cost matrix holds NaN or infinite values (NaN or "
                         "Inf in the samples, or t_f = 0): clean the samples, use t_f > 0.")
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(y), 1.0 / len(y))
    out_of_reach = np.isinf(c)
    if not out_of_reach.any():
        return float(ot.emd2(a, b, c, numItermax=10_000_000))
    if out_of_reach.all():
        return math.inf
    # out-of-reach pairs priced above any plan of reachable ones: a plan that still uses one
    # has no alternative
    reachable = c[~out_of_reach]
    c = np.where(out_of_reach, (np.abs(reachable).max() + 1.0) * 1e6, c)
    plan = ot.emd(a, b, c, numItermax=10_000_000)
    if plan[out_of_reach].sum() > 1e-9:
        return math.inf
    return float((plan * c).sum())


def in_float64(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)`` computed in float64 (``|d|**p / p`` of a large move overflows float32),
    or, for a cost plugin that only runs in float32 (a float32 matrix inside), in float32 and
    returned as float64."""
    try:
        return fn(*(t.double() for t in tensors))
    except RuntimeError:  # "expected ... the same dtype": the plugin's own float32 tensors
        return fn(*(t.float() for t in tensors)).double()


def pairwise_float64(cost: Cost, x: torch.Tensor, y: torch.Tensor, t_f: float = 1.0) -> torch.Tensor:
    """The cost matrix ``C[i, j] = c(x_i, y_j)`` in float64 (see :func:`in_float64`)."""
    return in_float64(lambda a, b: cost.pairwise(a, b, t_f), x, y)


def _cost_in_float64(m: HJMap, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``c(x, y)`` per pair in float64, as the dual side is (see :func:`in_float64`)."""
    return in_float64(lambda a, b: m.cost.cost(a, b, m.t_f), x, y)


def _potential_in_data_units(m: HJMap, x: torch.Tensor, t: float, k=None) -> torch.Tensor:
    """``u(x, t)`` in float64 and data units: u lives in standardised units, and costs scale by
    ``scale ** degree``."""
    x = m._check(x, "x")  # the map's device and dtype, as forward takes it
    return m.potential((x - m.shift) / m.scale, t, k).double() * float(m.scale) ** m.cost.degree


def duality_gap(m: HJMap, x: torch.Tensor, y: torch.Tensor, kx: Any = None,
                ky: Any = None) -> dict[str, float]:
    """Primal ``P = E c(x, T(x))``, dual ``D = E u(y, t_f) - E u(x, 0)`` (method.md section 7),
    in data units, and the relative gap ``|P - D| / P``.

    ``(P - D) / P = gap_match - gap_residual``, both parts relative to ``P``: ``gap_residual``, the mean of
    ``u(T(x), t_f) - u(x, 0) - c(x, T(x))`` (zero along exact characteristics), and
    ``gap_match``, ``E u(T(x), t_f) - E u(y, t_f)`` (zero when the pushed samples match the
    target as ``u`` sees them). ``duality_gap_sd`` is the standard error of ``(P - D) / P`` from
    the finite samples, ``x`` and ``y`` drawn independently: a gap below about twice it is not
    distinguishable from zero. ``kx``, ``ky``: the class labels of ``x`` and ``y`` for a
    conditional head (one class per call, as the task evaluates per class).
    """
    x, y = m._check(x, "x"), m._check(y, "y")
    _need_samples("duality_gap", x=x, y=y)
    groups = _classes("duality_gap", x, y, kx, ky)
    if groups:  # the class-conditional problem: each class's gap, weighted by its share of x
        per = {c: duality_gap(m, x[ix], y[iy], c, c) for c, ix, iy in groups}
        w = _shares(groups)
        primal, dual = _class_weighted(per, w, "primal"), _class_weighted(per, w, "dual")
        scale = max(abs(primal), 1e-12)
        return {
            "primal": primal, "dual": dual, "duality_gap": abs(primal - dual) / scale,
            # (each class's parts are relative to its own primal, clamped as there)
            "duality_gap_sd": sum((w[c] * g["duality_gap_sd"] * max(abs(g["primal"]), 1e-12)) ** 2
                                  for c, g in per.items()) ** 0.5 / scale,
            **{part: sum(w[c] * g[part] * max(abs(g["primal"]), 1e-12) for c, g in per.items())
               / scale for part in ("gap_residual", "gap_match")},
            "duality_gap_max": max(g["duality_gap"] for g in per.values()),
        }
    with torch.no_grad():
        pushed = m.forward(x, kx)
        cost = _cost_in_float64(m, x, pushed)
        ux = _potential_in_data_units(m, x, 0.0, kx)
        uy = _potential_in_data_units(m, y, m.t_f, ky)
        up = _potential_in_data_units(m, pushed, m.t_f, kx)
    primal, dual = float(cost.mean()), float(uy.mean() - ux.mean())
    scale = max(abs(primal), 1e-12)
    # P - D = mean over x of (c + u(x, 0)) - mean over y of u(y, t_f): two independent means.
    var = float((cost + ux).var() / len(x) + uy.var() / len(y)) if min(len(x), len(y)) > 1 else 0.0
    return {
        "primal": primal, "dual": dual, "duality_gap": abs(primal - dual) / scale,
        "duality_gap_sd": var ** 0.5 / scale,
        **{k: float(v) for k, v in gap_parts(cost, ux, up, uy, scale).items()},
    }


def certified_dual(m: HJMap, x: torch.Tensor, y: torch.Tensor, kx: Any = None, ky: Any = None) -> float:
    """``D_c = E_y min_i [u(x_i, 0) + c(x_i, y)] - E_x u(x, 0)``, in data units.

    ``u(., 0)`` and its c-transform over the sample ``x`` are feasible for the discrete dual
    (``psi(y) - phi(x_i) <= c(x_i, y)`` for every pair), so ``D_c`` never exceeds the exact
    discrete OT cost between ``x`` and ``y``, however ``u`` was trained: a lower bound that
    training cannot inflate, unlike the dual value of :func:`duality_gap` (which certifies only
    if ``u`` solves the HJ equation everywhere). ``D_c`` over the exact cost is 1 exactly when
    ``u(., 0)`` is an optimal Kantorovich potential for the sample. ``kx``: labels of ``x`` for
    a conditional head; with several classes, ``ky`` too: the minimum then runs over each
    ``y``'s own class (the class-conditional problem's dual).
    """
    x, y = m._check(x, "x"), m._check(y, "y")
    _need_samples("certified_dual", x=x, y=y)
    groups = _classes("certified_dual", x, y, kx, ky)
    if groups:  # each class's certificate, weighted by its share of x: a lower bound on the
        # class-conditional exact cost (one c-transform over the mixed classes, weighted by y's
        # shares, moved with a constant added to one class's potential)
        w = _shares(groups)
        return sum(w[c] * certified_dual(m, x[ix], y[iy], c) for c, ix, iy in groups)
    with torch.no_grad():
        ux = _potential_in_data_units(m, x, 0.0, kx)
        return float(_c_transform(ux, x.double(), y.double(),
                                  lambda a, b, t: pairwise_float64(m.cost, a, b, t), m.t_f,
                                  None, None))


def c_transform_dual(ux: torch.Tensor, x: torch.Tensor, y: torch.Tensor, cost: Cost, t_f: float = 1.0,
                     kx: torch.Tensor | None = None, ky: torch.Tensor | None = None) -> torch.Tensor:
    """``mean_j min_i [ux_i + c(x_i, y_j)] - mean_i ux_i`` from potential values ``ux`` at ``x``,
    differentiable through ``ux`` (the batch semi-dual of objective.py; :func:`certified_dual`).
    With labels ``kx``, ``ky`` the minimum runs over ``y_j``'s class, and a class found on one
    side only is left out of both means (masked, so no host synchronisation)."""
    return _c_transform(ux, x, y, cost.pairwise, t_f, kx, ky)


def c_transform_dual_target(uy: torch.Tensor, x: torch.Tensor, y: torch.Tensor, cost: Cost,
                            t_f: float = 1.0, kx: torch.Tensor | None = None,
                            ky: torch.Tensor | None = None) -> torch.Tensor:
    """The same dual read from the target side: ``mean_j uy_j - mean_i max_j [uy_j - c(x_i,
    y_j)]`` from values ``uy = u(y_j, t_f)``, differentiable through them. ``u(., t_f)`` and its
    c-transform over the sample ``y`` are feasible too, so it never exceeds the exact discrete
    cost either; it certifies the potential the backward map reads."""
    def pairwise(a, b, t):  # rows: the y_j, columns: the x_i
        return cost.pairwise(b, a, t).T
    return _c_transform(-uy, y, x, pairwise, t_f, ky, kx)


def _c_transform(va: torch.Tensor, a: torch.Tensor, b: torch.Tensor, pairwise, t_f: float,
                 ka: torch.Tensor | None, kb: torch.Tensor | None) -> torch.Tensor:
    """``mean_j min_i [va_i + C(a_i, b_j)] - mean_i va_i`` with ``C = pairwise(a, b, t_f)``."""
    block = max(1, 2**22 // max(len(a) * a.shape[1], 1))  # bounds the pairwise tensor
    labelled = ka is not None and kb is not None
    psi = []
    for j in range(0, len(b), block):
        c = pairwise(a, b[j:j + block], t_f)
        if labelled:
            c = c.masked_fill(ka[:, None] != kb[None, j:j + block], math.inf)
        psi.append((va[:, None] + c).min(0).values)
    psi = torch.cat(psi)
    if not labelled:
        return psi.mean() - va.mean()
    seen = torch.isfinite(psi)
    used = ((ka[:, None] == kb[None, :]) & seen[None, :]).any(1)
    return psi.where(seen, 0).sum() / seen.sum() - va.where(used, 0).sum() / used.sum()


def gap_parts(cost: torch.Tensor, ux: torch.Tensor, up: torch.Tensor, uy: torch.Tensor,
              scale: float | torch.Tensor) -> dict[str, torch.Tensor]:
    """The two parts of ``P - D`` over ``scale`` (see :func:`duality_gap`), from per-sample
    ``c(x, T(x))``, ``u(x, 0)``, ``u(T(x), t_f)`` and ``u(y, t_f)``: ``gap_residual`` (the
    HJ term's) and ``gap_match`` (the match's)."""
    return {"gap_residual": (up - ux - cost).mean() / scale, "gap_match": (up.mean() - uy.mean()) / scale}


def perfect_map_max_gap(sds: Sequence[float], draws: int = 100000, seed: int = 0) -> dict[str, float]:
    """The largest of several duality gaps (e.g. one per class, with standard errors ``sds``
    from :func:`duality_gap`) that a *perfect* map shows from sampling alone, ``max_k |N(0,
    sd_k)|``: its median, and the chance that it stays under 2 %."""
    g = torch.Generator().manual_seed(seed)
    sd = torch.tensor(list(sds), dtype=torch.float64)
    top = (torch.randn(draws, len(sd), generator=g, dtype=torch.float64) * sd).abs().max(1).values
    return {"median_max_gap": float(top.median()), "p_max_under_2pct": float((top < 0.02).double().mean())}


def forward_jacobian(m: HJMap, x: torch.Tensor, k: Any = None) -> torch.Tensor:
    """The matrix whose positivity makes the forward map locally optimal, in standardised
    coordinates, shape ``(n, dim, dim)``, float64: for the quadratic cost the symmetric part of
    the map's Jacobian ``I + t_f Hess u(x, 0)``; for any cost that of the Jacobian times
    ``D^2H(p)`` (see :func:`~hjtranslate.losses.cost_monotone_matrix`)."""
    z = ((m._check(x, "x") - m.shift) / m.scale).detach().requires_grad_(True)
    with torch.enable_grad():
        p = m.momentum(z, 0.0, k, create_graph=True)[1]
        dv = batch_jacobian(m.cost.grad_hamiltonian(p), z)
    jac = torch.eye(m.dim, dtype=torch.float64, device=dv.device) + m.t_f * dv.detach().double()
    return in_float64(lambda q, j: cost_monotone_matrix(m.cost, q, j), p.detach(), jac)


def monotone_share(m: HJMap, x: torch.Tensor, k: Any = None, max_n: int = 512) -> float:
    """Share of samples where :func:`forward_jacobian` is positive definite: where the map is
    locally monotone (its Jacobian ``I + t_f Hess u`` symmetric positive definite) for the
    quadratic cost, locally c-monotone for another cost. Read on the first ``max_n`` samples
    (a Jacobian each); ``k``: their classes for a conditional head."""
    if k is not None:  # labels in any form the map takes (a list, numpy, a tensor, one class)
        k = _class_ids(k, m.shift.device)
        k = k[:max_n] if k.numel() > 1 else k
    _need_samples("monotone_share", x=x)
    jac = forward_jacobian(m, x[:max_n], k)
    return float((torch.linalg.eigvalsh(jac).min(1).values > 0).double().mean())


def evaluate_map(
    m: HJMap, x: torch.Tensor, y: torch.Tensor, kx: Any = None, ky: Any = None, exact_n: int = 1000,
    energy_n: int = 4000, seed: int = 0,
) -> dict[str, Any]:
    """The sample-based metrics of a map (no ground truth needed).

    With labels of several classes (``kx`` and ``ky``) the map is judged as a class-conditional
    transport: ``per_class`` holds each class's own metrics, and the cost, dual and gap figures
    are those of the class-conditional problem (each class's, weighted by its share of ``x``;
    ``duality_gap_max`` the largest class's). The energy distances compare the whole laws."""
    out: dict[str, Any] = {}
    x, y = m._check(x, "x"), m._check(y, "y")  # on the map's device, in its dtype
    _need_samples("evaluate_map", x=x, y=y)
    groups = _classes("evaluate_map", x, y, kx, ky)
    kx, ky = (None if k is None else _class_ids(k, m.shift.device) for k in (kx, ky))
    for side, pred, ref in (("forward", m.forward(x, kx), y), ("backward", m.backward(y, ky), x)):
        e, floor = energy_with_floor(pred, ref, energy_n, seed)
        out.update({f"energy_{side}": e, f"energy_floor_{side}": floor,
                    f"energy_{side}_over_floor": e / max(floor, 1e-300)})
    if groups:
        per = {c: evaluate_map(m, x[ix], y[iy], c, c, exact_n, energy_n, seed) for c, ix, iy in groups}
        w = _shares(groups)
        exact, learned = _class_weighted(per, w, "exact_ot_cost"), _class_weighted(per, w, "map_cost")
        own = sum(w[c] * r["map_cost"] / max(r["optimality_ratio"], 1e-300) for c, r in per.items())
        extrapolated = sum(w[c] * (2 * r["exact_ot_cost"] - r["exact_ot_cost_half_n"])
                           for c, r in per.items())
        dual_c = _class_weighted(per, w, "dual_certified")
        out.update({"exact_ot_cost": exact, "map_cost": learned,
                    "exact_ot_cost_half_n": _class_weighted(per, w, "exact_ot_cost_half_n"),
                    "cost_ratio": learned / exact if math.isfinite(exact) else math.nan,
                    "cost_ratio_extrapolated": (learned / max(extrapolated, 1e-300)
                                                if math.isfinite(extrapolated) else math.nan),
                    "optimality_ratio": learned / max(own, 1e-300), "dual_certified": dual_c,
                    "dual_certified_over_exact_ot": dual_c / exact if math.isfinite(exact) else math.nan,
                    **duality_gap(m, x, y, kx, ky),
                    "monotone_share": _class_weighted(per, w, "monotone_share"),
                    "per_class": per})
        return out
    g = torch.Generator().manual_seed(seed)
    n = min(exact_n, len(x), len(y))
    i, j = torch.randperm(len(x), generator=g)[:n], torch.randperm(len(y), generator=g)[:n]
    xs, ys = x[i], y[j]
    exact = exact_ot_cost(xs, ys, m.cost, m.t_f)
    pushed_s = m.forward(xs, None if kx is None else kx if kx.numel() == 1 else kx[i])
    learned = float(_cost_in_float64(m, xs, pushed_s).mean())
    # Discrete OT between finite samples overestimates the population cost (sampling bias), so
    # cost_ratio < 1 need not mean undershoot. optimality_ratio compares the map's own pairing
    # with the best pairing of the same points and pushed points: >= 1, and 1 iff the map is
    # cyclically monotone (optimal) on this sample.
    own = exact_ot_cost(xs, pushed_s, m.cost, m.t_f)
    # The bias shrinks about as 1/n (measured on the 2-D pairs between n = 1,000 and 4,000), so
    # 2 c(n) - c(n/2) estimates the population cost (Richardson extrapolation).
    half = exact_ot_cost(xs[: n // 2], ys[: n // 2], m.cost, m.t_f) if n >= 4 else exact
    # a cost infinite off a bounded domain: no plan between these samples keeps every move in
    # reach, and a ratio to it says nothing (NaN, not 0)
    over_exact = (lambda a: a / exact) if math.isfinite(exact) else (lambda a: math.nan)
    dual_c = certified_dual(m, xs, ys, None if kx is None else kx if kx.numel() == 1 else kx[i])
    out.update({"dual_certified": dual_c, "dual_certified_over_exact_ot": over_exact(dual_c)})
    out.update({"exact_ot_cost": exact, "exact_ot_cost_half_n": half, "map_cost": learned,
                "cost_ratio": over_exact(learned),
                "cost_ratio_extrapolated": (learned / max(2 * exact - half, 1e-300)
                                            if math.isfinite(exact + half) else math.nan),
                "optimality_ratio": learned / max(own, 1e-300)})
    if len(y) >= 2 * n:
        # A sharper match test than the energy distance (which barely sees a few points left
        # between or outside the target's pieces): exact OT between pushed and target samples,
        # beside the same between two disjoint target samples (its floor at this size).
        rest = torch.ones(len(y), dtype=torch.bool)
        rest[j] = False
        others = rest.nonzero()[:, 0]
        y2 = y[others[torch.randperm(len(others), generator=g)[:n]]]
        out["ot_match_forward"] = exact_ot_cost(pushed_s, ys, m.cost, m.t_f)
        out["ot_match_floor_forward"] = exact_ot_cost(y2, ys, m.cost, m.t_f)
    out.update(duality_gap(m, x, y, kx, ky))
    out["monotone_share"] = monotone_share(m, x, kx)
    return out
