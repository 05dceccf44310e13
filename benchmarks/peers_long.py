"""A kept 2-D map against OT-CFM trained as long, read over fresh draws (issue #6's 10x goal).

``peers.py --table frontier-toy2d`` trains both methods for 30-120 s and reads the energy on one
held-out draw, where OT-CFM ends the more accurate. The maps kept in ``benchmarks/maps/`` trained
for 20-45 minutes and sit at the level of two independent target samples. This script trains an
OT-CFM velocity network of the map's own size (width, depth, Fourier features) on the same
training points (toy2d's seeds), with the same stages of wall-clock time, learning rate and batch
size and the same weight averaging, then reads every ODE configuration (Euler / RK4, 1-64
steps) and the map on the same fresh draws as toy2d's energy goal, and times each on one thread:

    OMP_NUM_THREADS=1 python benchmarks/peers_long.py benchmarks/maps/8gaussians-circles-s35-b2048 \\
        --stages 1200:1e-3:512 1500:3e-4:2048

"Equal accuracy" is the map's mean energy over the draws: the fastest ODE configuration whose
mean is at or below it. Where none is, the level is 1.05x the ODE's best, as in peers.py.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from peers import RESULTS, VelocityMLP, cfm_mapper, meta, speed, standardiser, table_head, train_cfm
from toy2d_large_n import load_run

from hjtranslate.tasks.toy2d import energies_over_draws, toy_samples, training_points


def stage(text: str) -> tuple[float, float, int]:
    """``SECONDS:LR:BATCH``, one training stage."""
    try:
        seconds, lr, batch = text.split(":")
        return float(seconds), float(lr), int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a stage is SECONDS:LR:BATCH, e.g. 1200:1e-3:512") from None


def equal_accuracy(hj: dict, ode: list[dict], key: str = "energy_draws_pushed") -> dict:
    """Where the map and the ODE configurations meet: the map's own accuracy when some ODE
    configuration reaches it, else 1.05x the ODE's best (which the map then beats); the fastest
    ODE configuration at that level, and the map's samples/s over it."""
    as_good = [c for c in ode if c[key] <= hj[key]]
    level = hj[key] if as_good else 1.05 * min(c[key] for c in ode)
    fastest = max((c for c in ode if c[key] <= level), key=lambda c: c["samples_per_s"])
    return {"equal_accuracy": "the map's own energy" if as_good else "1.05x the ODE's best",
            "level_over_two_target_samples": level / hj["energy_draws_two_targets"],
            "fastest_ode_at_level": fastest, "ratio": hj["samples_per_s"] / fastest["samples_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("map", type=Path, help="a kept toy2d map (benchmarks/maps/NAME)")
    ap.add_argument("--stages", type=stage, nargs="+", required=True,
                    help="the map's training stages, SECONDS:LR:BATCH each, for OT-CFM to repeat")
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--train-n", type=int, default=1_000_000, help="training points per side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=4000, help="points per side in each draw")
    ap.add_argument("--draws", type=int, default=64)
    ap.add_argument("--ode-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--speed-n", type=int, default=10000)
    ap.add_argument("--suffix", default="s36")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--cfm-weights", type=Path, default=None,
                    help="where the trained OT-CFM network is kept (default runs/peers-long/"
                    "PAIR-SUFFIX.pt); when it exists, it is read instead of trained again")
    args = ap.parse_args()

    cfg, m, _, _ = load_run(args.map, 2)
    source, target = cfg["source"], cfg["target"]
    hk = m.config_dict()["head_kwargs"]
    x, y = training_points(source, target, args.train_n, args.seed)
    torch.manual_seed(args.seed)
    net = VelocityMLP(2, hk["width"], hk["depth"], hk.get("fourier_features", 0),
                      hk.get("fourier_scale", 1.0))
    weights = args.cfm_weights or Path(f"runs/peers-long/{source}-{target}-{args.suffix}.pt")
    if weights.is_file():  # trained by an earlier run of the same command: read it again
        saved = torch.load(weights)
        curve = saved["stages"]
        if [(c["lr"], c["batch_size"]) for c in curve] != [(lr, b) for _, lr, b in args.stages]:
            sys.exit(f"{weights} holds an OT-CFM network trained in other stages ({curve}); give "
                     "another --suffix or --cfm-weights to train one for these, or delete it.")
        net.load_state_dict(saved["state_dict"])
        print(f"OT-CFM read from {weights}", flush=True)
    else:
        curve = []
        for k, (seconds, lr, batch) in enumerate(args.stages):
            t0 = time.perf_counter()
            _, net, c, _ = train_cfm(x, y, seconds, [1.0], batch, args.seed + k, lambda fn: {},
                                     lr=lr, ema_decay=args.ema_decay, net=net)
            curve.append({"stage": k + 1, "seconds": time.perf_counter() - t0, "steps": c[-1]["steps"],
                          "lr": lr, "batch_size": batch})
            print(json.dumps(curve[-1]), flush=True)
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": net.state_dict(), "stages": curve}, weights)
    mapper = cfm_mapper(net, *standardiser(x, y))
    n_params = sum(p.numel() for p in net.parameters())

    # each configuration beside the function that pushes source points through it
    runs = [({"method": "HJ closed form", "params": sum(p.numel() for p in m.parameters())}, m.forward)]
    runs += [({"method": f"OT-CFM {method}", "steps": steps, "nfe": steps * (4 if method == "rk4" else 1),
               "params": n_params}, functools.partial(mapper, steps=steps, method=method))
             for method in ("euler", "rk4") for steps in args.ode_steps]
    energies = energies_over_draws({str(k): fn for k, (_, fn) in enumerate(runs)}, source, target,
                                   args.n, draws=args.draws, keep_raw=True)
    xb = toy_samples(source, args.speed_n, seed=7)
    configs = [{**c, **energies[str(k)]} for k, (c, _) in enumerate(runs)]
    for c, (_, fn) in zip(configs, runs, strict=True):
        c["samples_per_s"] = speed(lambda fn=fn: fn(xb), len(xb))
        print(c["method"], c.get("steps", ""), c["energy_forward_over_two_target_samples"],
              c["samples_per_s"], flush=True)
    hj = configs[0]
    # paired against the map: the same draws for every configuration
    for c in configs[1:]:
        diff = [a - b for a, b in zip(c["raw"]["pushed"], hj["raw"]["pushed"], strict=True)]
        level = c["energy_draws_two_targets"]
        c["minus_hj_over_two_target_samples"] = statistics.fmean(diff) / level
        c["minus_hj_se"] = statistics.stdev(diff) / len(diff) ** 0.5 / level
    summary = {"pair": f"{source}->{target}", "map": str(args.map), "cfm_stages": curve,
               **equal_accuracy(hj, configs[1:])}
    fastest = summary["fastest_ode_at_level"]
    for c in configs:
        c.pop("raw")
    name = f"peers-long-{source}-{target}-{args.suffix}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.json").write_text(json.dumps({**meta_of(args), **summary, "configs": configs},
                                                          indent=2, default=float))
    md = [f"# {source} -> {target}: the kept map against OT-CFM of its size, trained as long", "",
          f"- command: `{' '.join(['python', *sys.argv])}`", "",
          *table_head("method", "steps", "NFE", "energy / two target samples", "minus the map's (se)",
                      "samples/s")]
    for c in configs:
        d = (f"{c['minus_hj_over_two_target_samples']:+.3f} ({c['minus_hj_se']:.3f})"
             if "minus_hj_se" in c else "-")
        md.append(f"| {c['method']} | {c.get('steps', '-')} | {c.get('nfe', '1 + gradient')} | "
                  f"{c['energy_forward_over_two_target_samples']:.3f} | {d} | {c['samples_per_s']:.0f} |")
    md += ["", f"Equal accuracy ({summary['equal_accuracy']}, "
           f"{summary['level_over_two_target_samples']:.3f} two target samples): fastest ODE "
           f"{fastest['method']} {fastest['steps']} steps, {fastest['samples_per_s']:.0f} samples/s; "
           f"ratio {summary['ratio']:.1f}x."]
    (args.out_dir / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def meta_of(args: argparse.Namespace) -> dict:
    """peers.py's run header (command, date, machine, settings) for this script's arguments."""
    info = meta(argparse.Namespace(**vars(args), table="long-toy2d", semidual_weight=None))
    info.pop("hj_semidual_weight")  # the map was trained before, with its own (its card has it)
    info["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in info["settings"].items()
                        if k not in ("table", "semidual_weight")}
    return info


if __name__ == "__main__":
    main()
