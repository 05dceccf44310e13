"""The HJ map beside its peers. One table per call (each a few minutes on one thread):

    OMP_NUM_THREADS=1 python benchmarks/peers.py --table pnorm      # (a) non-quadratic costs
    OMP_NUM_THREADS=1 python benchmarks/peers.py --table gaussians  # (b) vs OT-CFM, Gaussians
    OMP_NUM_THREADS=1 python benchmarks/peers.py --table toy2d      # (b) vs OT-CFM, 2-D pairs
    OMP_NUM_THREADS=1 python benchmarks/peers.py --table discrete   # (c) vs POT emd / Sinkhorn
    OMP_NUM_THREADS=1 python benchmarks/peers.py --table frontier-gaussians  # (b) over widths
    OMP_NUM_THREADS=1 python benchmarks/peers.py --table frontier-toy2d

(a) pnorm: cost ``|y - x|^p / p`` for p = 1.5 and 3 on 2-D toy pairs and an 8-D Gaussian pair;
    cost ratio ``E c(x, T(x))`` over the exact discrete OT cost with that cost (POT emd2 on a
    custom cost matrix) and the energy distance of ``T#mu`` to ``nu``; ``docs/pnorm_lines.png``
    shows the transport lines for p = 1.5, 2, 3. The 2-D pairs train with toy2d's semi-dual.
(b) OT conditional flow matching (torchcfm's ``ExactOptimalTransportConditionalFlowMatcher``,
    sigma = 0) with a velocity MLP of the same width/depth as our potential head, same data,
    batch size, optimiser and wall-clock budget. Accuracy (L2-UVP on Gaussians, energy distance
    in 2-D) at fractions of the budget; then inference: the ODE integrated with Euler / RK4 at
    1..64 steps against our closed-form map (one network evaluation plus its gradient).
(c) POT ``ot.da.EMDTransport`` (exact OT) and ``ot.da.SinkhornTransport`` fitted on n samples
    vs the HJ map trained on the same n samples (fixed step budget): fit time vs n, out-of-sample
    accuracy on fresh samples (UVP against the closed-form Gaussian map), and the n at which the
    learned map becomes cheaper to fit.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hjtranslate_plugins.heads import fourier_matrix, with_fourier_features
from torch import nn

import hjtranslate as hjt
from hjtranslate.api import default_head_kwargs
from hjtranslate.metrics import energy, evaluate_map, gaussian_ot_map, l2_uvp
from hjtranslate.tasks.gaussians import gaussian_pair, sample
from hjtranslate.tasks.toy2d import toy_samples

RESULTS = Path("benchmarks/results")


def meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.node()} ({os.cpu_count()} cores, "
                   f"torch threads {torch.get_num_threads()}, torch {torch.__version__})",
        "settings": {k: v for k, v in vars(args).items() if k != "table"},
        "hj_semidual_weight": semidual_weight(args, "(2-D)" if args.table == "pnorm" else ""),
    }


def write(name: str, info: dict[str, Any], rows: list[dict], md_lines: list[str], title: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    if info["settings"].get("suffix"):  # another run of the same table beside the first
        name = f"{name}-{info['settings']['suffix']}"
    (RESULTS / f"peers-{name}.json").write_text(json.dumps({**info, "rows": rows}, indent=2, default=float))
    head = [f"# {title}", "", f"- command: `{info['command']}`", f"- date: {info['date']}",
            f"- machine: {info['machine']}", f"- settings: `{json.dumps(info['settings'])}`", ""]
    text = "\n".join(head + md_lines) + "\n"
    (RESULTS / f"peers-{name}.md").write_text(text)
    print(text)


def problems(which: str, n: int, seed: int = 0):
    """(name, x_train, y_train, x_test, y_test, true forward map or None)."""
    out = []
    if which in ("toy2d", "pnorm"):
        for s, t in (("8gaussians", "moons"), ("gaussian", "checkerboard")):
            out.append((f"{s}->{t} (2-D)", toy_samples(s, n, 1 + seed), toy_samples(t, n, 2 + seed),
                        toy_samples(s, 4000, 101 + seed), toy_samples(t, 8000, 102 + seed), None))
    if which in ("gaussians", "pnorm"):
        dims = (2, 8) if which == "gaussians" else (8,)
        for d in dims:
            pair = gaussian_pair(d, 0)
            _, tmap = gaussian_ot_map(pair["m0"], pair["s0"], pair["m1"], pair["s1"])
            out.append((f"Gaussians d={d}", sample(pair, 0, n, 1), sample(pair, 1, n, 2),
                        sample(pair, 0, 10000, 10_001), sample(pair, 1, 10000, 10_002), tmap))
    return out


# -- (a) p-norm costs ---------------------------------------------------------------------
def table_pnorm(args: argparse.Namespace) -> None:
    rows = []
    lines_maps = {}
    for name, x, y, xt, yt, _ in problems("pnorm", args.n):
        if args.only and not any(o in name for o in args.only):
            continue
        for p in args.ps:
            cost = hjt.get_cost("pnorm", p=p)
            t0 = time.perf_counter()
            m = hjt.fit(x, y, cost=cost, steps=args.steps, time_budget=args.time_budget,
                        batch_size=args.batch_size, seed=args.seed,
                        semidual_weight=semidual_weight(args, name))
            fit_s = time.perf_counter() - t0
            ev = evaluate_map(m, xt, yt, exact_n=args.exact_n)
            row = {"problem": name, "p": p, "exact_ot_cost": ev["exact_ot_cost"],
                   "map_cost": ev["map_cost"], "cost_ratio": ev["cost_ratio"],
                   "cost_ratio_extrapolated": ev["cost_ratio_extrapolated"],
                   "optimality_ratio": ev["optimality_ratio"],
                   "ot_match_forward": ev.get("ot_match_forward"),
                   "ot_match_floor_forward": ev.get("ot_match_floor_forward"),
                   "energy_forward": energy(m.forward(xt), yt),
                   "energy_backward": energy(m.backward(yt), xt),
                   "energy_floor": energy(yt[:4000], yt[4000:8000]) if len(yt) >= 8000 else None,
                   "fit_seconds": fit_s}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if name.startswith(args.lines_problem):
                lines_maps[p] = (xt[:2000], yt[:2000], m.forward(xt[:2000]))
        if name.startswith(args.lines_problem) and 2.0 not in args.ps:  # quadratic for reference
            m = hjt.fit(x, y, cost=hjt.get_cost("pnorm", p=2.0), steps=args.steps,
                        time_budget=args.time_budget, batch_size=args.batch_size, seed=args.seed,
                        semidual_weight=semidual_weight(args, name))
            lines_maps[2.0] = (xt[:2000], yt[:2000], m.forward(xt[:2000]))
    if lines_maps:  # --only may leave the lines problem out
        plot_lines(Path(args.lines_png), lines_maps, args.lines_problem)
    md = [f"Cost `|y-x|^p / p`; exact OT on {args.exact_n} held-out samples per side (POT emd2), "
          "extrapolated past its sampling bias (2 c(n) - c(n/2)); cost / best pairing: the map's "
          "cost over exact OT between the same points and their images (1 = optimal on this "
          "sample); OT match: exact OT between pushed and held-out target samples, beside two "
          "target samples (its floor); energy distances on held-out samples (floor: two "
          "independent target samples).", "",
          "| problem | p | exact OT cost | map cost | cost ratio | extrapolated | cost / best pairing "
          "| OT match (floor) | energy fwd | energy bwd | floor | fit s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    for r in rows:
        md.append(f"| {r['problem']} | {r['p']} | {r['exact_ot_cost']:.4f} | {r['map_cost']:.4f} | "
                  f"{r['cost_ratio']:.3f} | {r['cost_ratio_extrapolated']:.3f} | "
                  f"{r['optimality_ratio']:.3f} | {fmt(r['ot_match_forward'])} "
                  f"({fmt(r['ot_match_floor_forward'])}) | {r['energy_forward']:.4f} | "
                  f"{r['energy_backward']:.4f} | {fmt(r['energy_floor'])} | {r['fit_seconds']:.0f} |")
    if lines_maps:
        md += ["", f"Transport lines: `{args.lines_png}`."]
    write("pnorm", meta(args), rows, md, "p-norm costs: HJ map vs exact discrete OT")


def plot_lines(path: Path, maps: dict, problem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    ps = sorted(maps)
    fig, axes = plt.subplots(1, len(ps), figsize=(4.2 * len(ps), 4.3), dpi=100, squeeze=False)
    for ax, p in zip(axes[0], ps, strict=True):
        x, y, tx = (a.numpy() for a in maps[p])
        k = 250
        ax.add_collection(LineCollection(np.stack([x[:k], tx[:k]], 1), colors="0.45",
                                         linewidths=0.5, alpha=0.7))
        ax.scatter(*y.T, s=1.5, c="tab:orange", alpha=0.3, label="target")
        ax.scatter(*x[:k].T, s=3, c="tab:blue", label="source")
        ax.scatter(*tx[:k].T, s=3, c="tab:green", label="T(source)")
        ax.set_title(f"p = {p:g}" + (" (quadratic)" if p == 2 else ""))
        ax.set_aspect("equal")
    axes[0, 0].legend(loc="lower left", markerscale=3, fontsize=7)
    fig.suptitle(f"{problem}: transport lines under the cost |y - x|^p / p")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# -- (b) OT conditional flow matching -------------------------------------------------------
class VelocityMLP(nn.Module):
    """The same residual MLP as our potential head (width, depth, SiLU, the same Fourier
    features of x in 2-D) with a d-dim output."""

    def __init__(self, dim: int, width: int, depth: int, fourier_features: int = 0,
                 fourier_scale: float = 1.0) -> None:
        super().__init__()
        self.fourier = fourier_matrix(dim, fourier_features, fourier_scale) if fourier_features else None
        self.inp = nn.Linear(dim + 1 + 2 * fourier_features, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, dim)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xt = torch.cat([x, t.reshape(-1, 1).expand(len(x), 1)], -1)
        h = self.act(self.inp(with_fourier_features(xt, x, self.fourier)))
        for layer in self.hidden:
            h = h + self.act(layer(h))
        return self.out(h)


def integrate(v: nn.Module, x: torch.Tensor, steps: int, method: str) -> torch.Tensor:
    h = 1.0 / steps
    with torch.no_grad():
        for i in range(steps):
            t = torch.tensor(i * h)
            if method == "euler":
                x = x + h * v(x, t)
            else:
                k1 = v(x, t)
                k2 = v(x + 0.5 * h * k1, t + 0.5 * h)
                k3 = v(x + 0.5 * h * k2, t + 0.5 * h)
                k4 = v(x + h * k3, t + h)
                x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def standardiser(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The similarity transform hjt.fit trains in: the pooled mean and RMS radius per axis."""
    both = torch.cat([x, y])
    shift = both.mean(0)
    return shift, float(((both - shift) ** 2).sum(1).mean().sqrt() / x.shape[1] ** 0.5)


def cfm_mapper(net: nn.Module, shift: torch.Tensor, scale: float):
    """The flow of ``net`` (trained in standardised coordinates) as a map on data units, taking
    the step count and the integrator."""
    def mapper(xx, steps=32, method="rk4"):
        return integrate(net, (xx - shift) / scale, steps, method) * scale + shift

    return mapper


def train_cfm(x, y, budget: float, checkpoints: list[float], batch_size: int, seed: int, evaluate,
              width: int | None = None, lr: float = 1e-3, ema_decay: float | None = None,
              net: VelocityMLP | None = None):
    """OT-CFM in standardised coordinates (the same similarity transform as hjt.fit); returns
    the map (a callable on data units taking steps/method) and the accuracy at checkpoints.
    ``width``: the velocity network's (default: our head's default for that dimension).
    ``ema_decay``: end on the weights' moving average, as ``--ema-decay`` does for our maps.
    ``net``: continue training this network (a second stage) instead of a new one."""
    from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

    from hjtranslate.training import WeightAverage

    torch.manual_seed(seed)
    dim = x.shape[1]
    shift, scale = standardiser(x, y)
    zx, zy = (x - shift) / scale, (y - shift) / scale
    hk = default_head_kwargs(dim)
    if net is None:
        net = VelocityMLP(dim, width or hk["width"], hk["depth"], hk.get("fourier_features", 0),
                          hk.get("fourier_scale", 1.0))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ema = WeightAverage(list(net.parameters()), ema_decay) if ema_decay else None
    fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    g = torch.Generator().manual_seed(seed)

    mapper = cfm_mapper(net, shift, scale)
    curve, elapsed, step, todo = [], 0.0, 0, sorted(checkpoints)
    while todo:
        t0 = time.perf_counter()
        i = torch.randint(len(zx), (batch_size,), generator=g)
        j = torch.randint(len(zy), (batch_size,), generator=g)
        t, xt, ut = fm.sample_location_and_conditional_flow(zx[i], zy[j])
        loss = ((net(xt, t) - ut) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update()
        step += 1
        elapsed += time.perf_counter() - t0
        if elapsed >= todo[0] * budget:
            todo.pop(0)
            if ema is not None and not todo:  # the last checkpoint ends on the average
                ema.copy_to_params()
            curve.append({"seconds": elapsed, "steps": step, **evaluate(lambda xx: mapper(xx, 32, "rk4"))})
    n_params = sum(p.numel() for p in net.parameters())
    return mapper, net, curve, n_params


def semidual_weight(args: argparse.Namespace, problem: str = "") -> float:
    """The HJ maps' semi-dual weight: as given, else the task's default (10 for the 2-D pairs,
    as `hjtranslate train toy2d`; 0 for the Gaussians, as `fit`). ``problem`` names the pair
    in the pnorm table, which holds both kinds."""
    if args.semidual_weight is not None:
        return args.semidual_weight
    return 10.0 if args.table.endswith("toy2d") or "(2-D)" in problem else 0.0


def table_cfm(args: argparse.Namespace) -> None:
    rows = []
    for name, x, y, xt, yt, tmap in problems(args.table, args.n):
        gauss = tmap is not None
        true = tmap(xt.double()) if gauss else None

        evaluate = functools.partial(accuracy, xt=xt, yt=yt, true=true)

        # our map, one run per budget fraction (hjt.fit stops at time_budget); the default
        # starts from the Gaussian OT map of the sample moments, the cold start from the identity
        # (OT-CFM has no such start, so both are shown)
        hj_curve, cold_curve = [], []
        for warm, curve in ((False, cold_curve), (True, hj_curve)):
            for frac in args.fractions:
                t0 = time.perf_counter()
                m, res = hjt.fit(x, y, steps=10**7, time_budget=frac * args.budget,
                                 batch_size=args.batch_size, seed=args.seed, return_history=True,
                                 warm_start=warm, semidual_weight=semidual_weight(args))
                curve.append({"seconds": time.perf_counter() - t0, "steps": res["steps"],
                              **evaluate(m.forward)})
                print(name, "HJ" if warm else "HJ cold start", curve[-1], flush=True)
        mapper, net, cfm_curve, cfm_params = train_cfm(
            x, y, args.budget, args.fractions, args.batch_size, args.seed, evaluate)
        print(name, "CFM", cfm_curve, flush=True)
        hj_params = sum(p.numel() for p in m.parameters())
        # inference: closed form vs ODE steps
        key = "uvp" if gauss else "energy"
        hj_acc = hj_curve[-1][key]
        xb = xt[: args.speed_n]
        hj_sps = speed(lambda m=m, xb=xb: m.forward(xb), len(xb))
        ode = ode_sweep(mapper, evaluate, key, xb, args.ode_steps)
        match = {}
        for method in ("euler", "rk4"):
            best = min(o[key] for o in ode if o["method"] == method)
            ok = [o for o in ode if o["method"] == method and o[key] <= hj_acc]
            near = [o for o in ode if o["method"] == method and o[key] <= 1.05 * best]
            match[method] = {"reaches_hj_accuracy": bool(ok),
                             "first_at_hj_accuracy": ok[0] if ok else None,
                             "first_within_5pct_of_best": near[0] if near else None}
        rows.append({"problem": name, "metric": key, "budget_s": args.budget,
                     "hj_params": hj_params, "cfm_params": cfm_params,
                     "hj_curve": hj_curve, "hj_cold_curve": cold_curve, "cfm_curve": cfm_curve,
                     "hj_inference": {"nfe": "1 potential evaluation + its gradient (autograd)",
                                      "samples_per_s": hj_sps, key: hj_acc},
                     "ode": ode, "ode_match": match})
    md = [f"OT-CFM: torchcfm ExactOptimalTransportConditionalFlowMatcher (sigma=0), velocity MLP "
          f"with our head's width/depth, Adam 1e-3, batch {args.batch_size}, same data "
          f"({args.n} per side) and wall-clock budget ({args.budget:g} s). CFM accuracy during "
          "training is measured with RK4, 32 steps. Metric: "
          + ("L2-UVP % forward vs the closed-form map" if args.table == "gaussians"
             else "energy distance of T#mu to held-out target samples") + ".", "",
          "## Accuracy vs training time", "",
          "| problem | method | params | seconds | steps | "
          + ("UVP % | " if args.table == "gaussians" else "")
          + "energy |", "|---|---|---|---|---|" + ("---|" if args.table == "gaussians" else "") + "---|"]
    for r in rows:
        for meth, curve, npar in (("HJ (ours)", r["hj_curve"], r["hj_params"]),
                                  ("HJ (ours), cold start", r["hj_cold_curve"], r["hj_params"]),
                                  ("OT-CFM", r["cfm_curve"], r["cfm_params"])):
            for c in curve:
                uvp = f"{c['uvp']:.3f} | " if "uvp" in c else ""
                md.append(f"| {r['problem']} | {meth} | {npar} | {c['seconds']:.0f} | {c['steps']} | "
                          f"{uvp}{c['energy']:.5f} |")
    md += ["", "## Inference: closed form vs ODE integration (after the full budget)", "",
           f"samples/s on {args.speed_n} samples, one thread.", "",
           "| problem | method | steps | NFE | metric | samples/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        k = r["metric"]
        md.append(f"| {r['problem']} | HJ closed form | - | 1 (+grad) | {k} {r['hj_inference'][k]:.4g} | "
                  f"{r['hj_inference']['samples_per_s']:.0f} |")
        for o in r["ode"]:
            md.append(f"| {r['problem']} | OT-CFM {o['method']} | {o['steps']} | {o['nfe']} | "
                      f"{k} {o[k]:.4g} | "
                      f"{o['samples_per_s']:.0f} |")
    md += ["", "## ODE steps needed to match", "",
           "| problem | integrator | reaches HJ accuracy? | first steps at HJ accuracy | "
           "first steps within 5% of the ODE's best |", "|---|---|---|---|---|"]
    for r in rows:
        for meth, mm in r["ode_match"].items():
            a = mm["first_at_hj_accuracy"]
            b = mm["first_within_5pct_of_best"]
            md.append(f"| {r['problem']} | {meth} | {'yes' if mm['reaches_hj_accuracy'] else 'no'} | "
                      f"{'-' if a is None else str(a['steps']) + ' (NFE ' + str(a['nfe']) + ')'} | "
                      f"{'-' if b is None else str(b['steps']) + ' (NFE ' + str(b['nfe']) + ')'} |")
    write(args.table, meta(args), rows, md,
          f"HJ map vs OT conditional flow matching ({args.table})")


def table_frontier(args: argparse.Namespace) -> None:
    """Accuracy against inference speed over network widths, for both methods: at equal
    accuracy, how many more samples per second the closed-form map transports than the ODE.
    Every model trains for the same wall-clock budget; the ODE is integrated at every step count
    and integrator; "equal accuracy" is 1.05x the best accuracy any ODE configuration reaches."""
    which = args.table.split("-", 1)[1]
    rows = []
    for name, x, y, xt, yt, tmap in problems(which, args.n):
        gauss = tmap is not None
        key = "uvp" if gauss else "energy"
        true = tmap(xt.double()) if gauss else None
        xb = xt[: args.speed_n]

        evaluate = functools.partial(accuracy, xt=xt, yt=yt, true=true)

        configs = []
        heads = [("mlp", w) for w in args.widths] + ([("affine", None)] if gauss else [])
        for head, w in heads:
            m = hjt.fit(x, y, steps=10**7, time_budget=args.budget, batch_size=args.batch_size,
                        seed=args.seed, head=head, head_kwargs={"width": w} if w else None,
                        semidual_weight=semidual_weight(args))
            configs.append({"method": "HJ closed form", "head": head, "width": w,
                            "params": sum(p.numel() for p in m.parameters()),
                            key: evaluate(m.forward)[key],
                            "samples_per_s": speed(lambda m=m, xb=xb: m.forward(xb), len(xb))})
            print(name, configs[-1], flush=True)
        for w in args.widths:
            mapper, net, _, n_params = train_cfm(x, y, args.budget, [1.0], args.batch_size, args.seed,
                                                 lambda fn: {}, width=w)
            configs += [{**o, "method": f"OT-CFM {o['method']}", "width": w, "params": n_params}
                        for o in ode_sweep(mapper, evaluate, key, xb, args.ode_steps)]
            print(name, "CFM width", w, flush=True)
        hj = [c for c in configs if c["method"] == "HJ closed form"]
        ode = [c for c in configs if c["method"] != "HJ closed form"]
        level = 1.05 * min(c[key] for c in ode)

        def fastest(cs, at, key=key):
            ok = [c for c in cs if c[key] <= at]
            return max(ok, key=lambda c: c["samples_per_s"]) if ok else None

        per_hj = []
        for c in hj:  # the fastest ODE configuration at least as accurate as this map
            o = fastest(ode, c[key])
            ratio = c["samples_per_s"] / o["samples_per_s"] if o else None
            per_hj.append({"hj": c, "ode": o, "ratio": ratio})
        best_hj, best_ode = fastest(hj, level), fastest(ode, level)
        rows.append({"problem": name, "metric": key, "budget_s": args.budget, "configs": configs,
                     "equal_accuracy_level": level, "fastest_hj_at_level": best_hj,
                     "fastest_ode_at_level": best_ode,
                     "ratio_at_level": (best_hj["samples_per_s"] / best_ode["samples_per_s"]
                                        if best_hj and best_ode else None),
                     "per_hj_config": per_hj})

    def label(c):
        if c is None:
            return "none reaches it"
        if c["method"] == "HJ closed form":
            return f"HJ {c['head']}" + (f" w{c['width']}" if c["width"] else "")
        return f"{c['method']} w{c['width']}, {c['steps']} steps"

    md = [f"Each model trains {args.budget:g} s (one thread, batch {args.batch_size}, {args.n} samples "
          f"per side); widths {args.widths}, depth and Fourier features as our head's defaults; "
          f"OT-CFM integrated with Euler / RK4 at {args.ode_steps} steps. samples/s on "
          f"{args.speed_n} samples. Metric: " + ("L2-UVP %" if which == "gaussians" else
                                                 "energy distance to held-out target samples")
          + ", lower is better.", "",
          "## At equal accuracy (1.05x the best any ODE configuration reaches)", "",
          *table_head("problem", "level", "fastest HJ map there", "samples/s", "fastest ODE there",
                      "samples/s", "ratio")]
    for r in rows:
        h, o = r["fastest_hj_at_level"], r["fastest_ode_at_level"]
        hs, os_ = (f"{c['samples_per_s']:.0f}" if c else "-" for c in (h, o))
        ratio = f"{r['ratio_at_level']:.1f}x" if r["ratio_at_level"] else "-"
        md.append(f"| {r['problem']} | {r['equal_accuracy_level']:.4g} | {label(h)} | {hs} | "
                  f"{label(o)} | {os_} | {ratio} |")
    md += ["", "## Each HJ map against the fastest ODE configuration at least as accurate", "",
           *table_head("problem", "HJ map", "params", "metric", "samples/s", "fastest ODE as accurate",
                       "samples/s", "ratio")]
    for r in rows:
        k = r["metric"]
        for e in r["per_hj_config"]:
            c, o = e["hj"], e["ode"]
            ode_sps = "-" if o is None else f"{o['samples_per_s']:.0f}"
            ratio = "-" if e["ratio"] is None else f"{e['ratio']:.1f}x"
            md.append(f"| {r['problem']} | {label(c)} | {c['params']} | {c[k]:.4g} | "
                      f"{c['samples_per_s']:.0f} | {label(o)} | {ode_sps} | {ratio} |")
    md += ["", "## Every configuration", "",
           *table_head("problem", "method", "width", "steps", "params", "metric", "samples/s")]
    for r in rows:
        for c in r["configs"]:
            md.append(f"| {r['problem']} | {c['method']}{' (' + c['head'] + ')' if 'head' in c else ''} | "
                      f"{c['width'] or '-'} | {c.get('steps', '-')} | {c['params']} | {c[r['metric']]:.4g} | "
                      f"{c['samples_per_s']:.0f} |")
    write(args.table, meta(args), rows, md, f"Accuracy against inference speed over widths ({which})")


def accuracy(fn, xt: torch.Tensor, yt: torch.Tensor, true: torch.Tensor | None) -> dict[str, float]:
    """Energy distance of ``fn(xt)`` to ``yt``, and its L2-UVP against ``true`` (the closed-form
    map's output) when there is one."""
    with torch.enable_grad():  # our map differentiates its potential
        out = fn(xt).detach()
    res = {"energy": energy(out, yt)}
    if true is not None:
        res["uvp"] = l2_uvp(out, true, yt)
    return res


def ode_sweep(mapper, evaluate, key: str, xb: torch.Tensor, ode_steps: list[int]) -> list[dict]:
    """The trained flow integrated with Euler and RK4 at each step count: accuracy ``key`` and
    samples/s on ``xb``."""
    out = []
    for method in ("euler", "rk4"):
        for steps in ode_steps:
            def run(xx, s=steps, me=method, f=mapper):
                return f(xx, s, me)

            out.append({"method": method, "steps": steps, "nfe": steps * (4 if method == "rk4" else 1),
                        key: evaluate(run)[key],
                        "samples_per_s": speed(lambda run=run, xb=xb: run(xb), len(xb))})
    return out


def table_head(*columns: str) -> list[str]:
    """A markdown table's header and rule."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def speed(fn, n: int, repeats: int = 5) -> float:
    """Samples per second of the fastest of ``repeats`` passes (after a warm-up): the least
    disturbed by other work on a shared machine."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


# -- (c) discrete OT ------------------------------------------------------------------------
def table_discrete(args: argparse.Namespace) -> None:
    import ot

    pair = gaussian_pair(args.dim, 0)
    _, tmap = gaussian_ot_map(pair["m0"], pair["s0"], pair["m1"], pair["s1"])
    xt, yt = sample(pair, 0, args.test_n, 10_001), sample(pair, 1, args.test_n, 10_002)
    true = tmap(xt.double())
    rows, skip = [], set()
    for n in args.ns:
        x, y = sample(pair, 0, n, 1), sample(pair, 1, n, 2)
        for method in ("POT emd", "POT Sinkhorn", "HJ (ours)"):
            if method in skip:
                continue
            t0 = time.perf_counter()
            if method == "HJ (ours)":
                m = hjt.fit(x, y, steps=args.hj_steps, batch_size=args.batch_size, seed=args.seed)
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = m.forward(xt)
            else:
                da = (ot.da.EMDTransport(max_iter=10**8) if method == "POT emd"
                      else ot.da.SinkhornTransport(reg_e=args.reg, norm="max",
                                                    out_of_sample_map="ferradans"))
                da.fit(Xs=x.double().numpy(), Xt=y.double().numpy())
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = torch.from_numpy(da.transform(Xs=xt.double().numpy(), batch_size=4096)).float()
            apply_s = time.perf_counter() - t0
            row = {"n": n, "method": method, "fit_seconds": fit_s, "apply_seconds": apply_s,
                   "uvp_out_of_sample": l2_uvp(out, true, yt),
                   "cost_out_of_sample": float(((out.double() - xt.double()) ** 2).sum(1).mean() / 2),
                   "energy_out_of_sample": energy(out, yt)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if method != "HJ (ours)" and fit_s > args.max_solver_seconds:
                skip.add(method)
    true_cost = float(((true - xt.double()) ** 2).sum(1).mean() / 2)
    hj_fit = float(np.mean([r["fit_seconds"] for r in rows if r["method"] == "HJ (ours)"]))
    crossover = {}
    for method in ("POT emd", "POT Sinkhorn"):
        pts = [(r["n"], r["fit_seconds"]) for r in rows if r["method"] == method and r["fit_seconds"] > 0.05]
        measured = [n for n, s in pts if s > hj_fit]
        if len(pts) >= 2:
            b, a = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)
            n_star = float(math.exp((math.log(hj_fit) - a) / b)) if b > 0 else None
        else:
            b, n_star = None, None
        crossover[method] = {"power_law_exponent": b, "n_where_fit_time_equals_hj": n_star,
                             "first_measured_n_slower_than_hj": measured[0] if measured else None}
    info = {**meta(args), "true_map_cost_out_of_sample": true_cost, "hj_mean_fit_seconds": hj_fit,
            "crossover": crossover}
    md = [f"Gaussian pair d={args.dim}; fitted on n samples per side; evaluated out of sample on "
          f"{args.test_n} fresh source samples against the closed-form map (UVP %), transport "
          f"cost E|T(x)-x|^2/2 (true map: {true_cost:.4f}) and energy distance to fresh target "
          "samples. POT maps new points with the barycentric out-of-sample map (nearest "
          "training point + its barycentric displacement) for both solvers; emd with max_iter "
          f"1e8; Sinkhorn: reg {args.reg} on the cost matrix normalised by its max. HJ: "
          f"{args.hj_steps} steps, batch {args.batch_size}. Solvers are skipped at larger "
          f"n once a fit took > {args.max_solver_seconds:g} s.", "",
          "| n | method | fit s | apply s | UVP % | cost | energy |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['n']} | {r['method']} | {r['fit_seconds']:.2f} | {r['apply_seconds']:.2f} | "
                  f"{r['uvp_out_of_sample']:.3f} | {r['cost_out_of_sample']:.4f} | "
                  f"{r['energy_out_of_sample']:.5f} |")
    md += ["", f"Crossover (HJ mean fit time {hj_fit:.1f} s; power law t = a n^b fitted to each "
           "solver's fit times):", ""]
    for method, c in crossover.items():
        b = "-" if c["power_law_exponent"] is None else f"{c['power_law_exponent']:.2f}"
        ns = "-" if c["n_where_fit_time_equals_hj"] is None else f"{c['n_where_fit_time_equals_hj']:.0f}"
        md.append(f"- {method}: b = {b}; fit time equals the HJ fit at n ~ {ns}; first measured n "
                  f"slower than HJ: {c['first_measured_n_slower_than_hj'] or 'none'}")
    write("discrete", info, rows, md, "Learned HJ map vs discrete OT (POT emd / Sinkhorn)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, choices=["gaussians", "toy2d", "pnorm", "discrete",
                                                        "frontier-gaussians", "frontier-toy2d"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--n", type=int, default=20000, help="training samples per side (a, b)")
    ap.add_argument("--suffix", default=None,
                    help="write results/peers-TABLE-SUFFIX.{md,json} instead of peers-TABLE.*")
    g = ap.add_argument_group("(a) pnorm")
    g.add_argument("--ps", type=float, nargs="+", default=[1.5, 3.0])
    g.add_argument("--steps", type=int, default=800, help="HJ steps per fit")
    g.add_argument("--time-budget", type=float, default=25.0, help="seconds per fit (cap)")
    g.add_argument("--exact-n", type=int, default=4000, help="samples per side for exact OT")
    g.add_argument("--only", nargs="+", default=None,
                   help="run only the problems whose name contains one of these, e.g. 'd=8'")
    g.add_argument("--lines-problem", default="8gaussians->moons")
    g.add_argument("--lines-png", default="docs/pnorm_lines.png")
    g = ap.add_argument_group("(b) OT-CFM")
    g.add_argument("--budget", type=float, default=30.0, help="training seconds per method")
    g.add_argument("--fractions", type=float, nargs="+", default=[1 / 3, 1.0],
                   help="budget fractions at which accuracy is recorded")
    g.add_argument("--ode-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    g.add_argument("--speed-n", type=int, default=10000)
    g.add_argument("--semidual-weight", type=float, default=None,
                   help="the HJ maps' semi-dual weight (default: 10 on the 2-D pairs, as "
                   "`hjtranslate train toy2d`; 0 on the Gaussians; pnorm table too since "
                   "session 33, give 0 to repeat its earlier rows)")
    g.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64],
                   help="frontier tables: the network widths of both methods")
    g = ap.add_argument_group("(c) discrete")
    g.add_argument("--dim", type=int, default=2)
    g.add_argument("--ns", type=int, nargs="+", default=[500, 1000, 2000, 5000, 10000])
    g.add_argument("--test-n", type=int, default=5000)
    g.add_argument("--hj-steps", type=int, default=600)
    g.add_argument("--reg", type=float, default=0.05, help="Sinkhorn regularisation")
    g.add_argument("--max-solver-seconds", type=float, default=40.0)
    args = ap.parse_args()
    if args.table not in ("pnorm", "discrete") and importlib.util.find_spec("torchcfm") is None:
        # checked before any training: the OT-CFM half comes after minutes of HJ fits
        ap.exit(2, f"--table {args.table} compares against torchcfm, which is not installed: "
                "pip install -e '.[bench]' (or run it through `make bench`).\n")
    if args.table == "pnorm":
        table_pnorm(args)
    elif args.table == "discrete":
        table_discrete(args)
    elif args.table.startswith("frontier"):
        table_frontier(args)
    else:
        table_cfm(args)


if __name__ == "__main__":
    main()
