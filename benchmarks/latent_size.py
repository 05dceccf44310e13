r"""Which VAE latent is best for transport? Train the digits-to-fashion map in the latent of each
given VAE with the same settings, and tabulate reconstruction quality, the judges' accuracy on
VAE reconstructions (the ceiling any latent map can reach through that VAE) and the accuracy
and Frechet distances the map reaches.

    hjtranslate train vae --output-dir runs/vae64 --latent-size 4 --latent-channels 4 ...
    hjtranslate train vae --output-dir runs/vae128 --latent-size 8 --latent-channels 2 ...
    python benchmarks/latent_size.py --vaes runs/vae64 runs/vae128 --jobs 2

With ``--jobs 2`` the runs share the machine, so each sees the same contention.

``--map DIR`` trains nothing: it evaluates that trained map through each VAE, for decoders
fine-tuned with ``hjtranslate train vae --init-from VAE --decoder-only`` (same latent space):

    python benchmarks/latent_size.py --vaes models/vae runs/vae-ft-dec \
        --map models/digits-to-fashion/map --out benchmarks/results/vae_decoder.json

``--yardsticks`` trains nothing either: it asks which goals of the task a *perfect* latent map
(decodes of the target's training latents, ``perfect_map_images``) would meet through each VAE,
over ``--draws`` draws, beside the judges' accuracy on reconstructions and the Frechet floors:

    python benchmarks/latent_size.py --yardsticks --vaes models/vae runs/vae128 \
        --out benchmarks/results/vae_yardsticks.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from side_by_side import run_side_by_side

KEYS = ("accuracy_forward", "accuracy_backward", "judge_accuracy_reconstructed_fashion",
        "judge_accuracy_reconstructed_mnist", "fd_forward_over_floor", "fd_backward_over_floor",
        "cost_ratio_max_deviation", "duality_gap_max", "round_trip_rel_error", "steps", "train_seconds",
        "fd_forward", "fd_forward_floor", "fd_backward", "fd_backward_floor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vaes", nargs="+", required=True, help="VAE folders (hjtranslate train vae outputs)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each with one torch thread)")
    ap.add_argument("--out", default="benchmarks/results/latent_size.json")
    ap.add_argument("--map", default=None, help="evaluate this trained map (no training)")
    ap.add_argument("--yardsticks", action="store_true",
                    help="what a perfect latent map scores through each VAE (no training)")
    ap.add_argument("--draws", type=int, default=3, help="with --yardsticks: perfect-map draws")
    ap.add_argument("--eval-n", type=int, default=10000, help="with --yardsticks: test images per side")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train options")
    args = ap.parse_args()
    for vae in args.vaes:
        if not (Path(vae) / "config.json").is_file():
            sys.exit(f"error: {vae} is not a VAE folder (no config.json); train one with "
                     "`hjtranslate train vae --output-dir FOLDER`.")
    if args.yardsticks:
        results = {vae: yardsticks(vae, args.draws, args.eval_n) for vae in args.vaes}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True))
        print(yardstick_table(results))
        return
    if args.map:
        results = {vae: evaluate_map(vae, Path(args.map)) for vae in args.vaes}
        save(results, Path(args.out))
        return
    jobs = [(vae, [sys.executable, "-m", "hjtranslate", "train", "digits-to-fashion", "--vae", vae,
                   "--output-dir", str(run_dir(vae)), "--no-progress", *args.extra])
            for vae in args.vaes]
    results: dict = {}
    for vae, cmd, seconds in run_side_by_side(jobs, args.jobs):
        results[vae] = collect(vae, json.loads((run_dir(vae) / "metrics.json").read_text()), cmd, seconds)
        print(f"{vae}: {results[vae]}", flush=True)
    save(results, Path(args.out))


def save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(table(results))


def evaluate_map(vae: str, map_dir: Path) -> dict:
    """The translation metrics of a trained map decoded through ``vae`` (grids in runs/bench)."""
    from hjtranslate_plugins.vae import VAEEncoder

    from hjtranslate.hjmap import HJMap
    from hjtranslate.pipeline import check_same_latent
    from hjtranslate.tasks.digits_to_fashion import evaluate_translation

    t0 = time.perf_counter()
    hjmap, enc = HJMap.from_pretrained(map_dir), VAEEncoder(vae)
    check_same_latent(hjmap, enc)
    m = evaluate_translation(hjmap, enc, argparse.Namespace(eval_n=10000, data_dir=None),
                             Path("runs/bench") / f"decoder-{Path(vae).name}")
    m["steps"], m["train_seconds"] = None, 0.0
    print(f"{vae}: accuracy {m['accuracy_forward']:.2%} / {m['accuracy_backward']:.2%}", flush=True)
    return collect(vae, m, ["python", "benchmarks/latent_size.py", "--map", str(map_dir)],
                   time.perf_counter() - t0)


# The task's goals (issue #3) that a perfect latent map's figures can be read against.
ACCURACY_GOAL, FRECHET_GOAL = 0.90, 1.5


def yardsticks(vae: str, draws: int, eval_n: int = 10000) -> dict:
    """The map-independent figures of the evaluation (``reference_metrics``) through ``vae`` on
    the first ``eval_n`` test images per side, for ``draws`` draws of a perfect map's decodes,
    and which goals those decodes meet."""
    from hjtranslate_plugins.vae import VAEEncoder

    import hjtranslate as hjt
    from hjtranslate.tasks.digits_to_fashion import _eval_inputs, reference_metrics

    t0 = time.perf_counter()
    enc = VAEEncoder(vae)
    ns = argparse.Namespace(eval_n=eval_n, data_dir=None, seed=0)
    inputs = _eval_inputs(enc, ns)
    refs = []
    for seed in range(draws):
        ns.seed = seed
        refs.append(reference_metrics(enc, ns, hjt.get_cost("quadratic"), 1.0, inputs))
        print(f"{vae}, draw {seed}: " + ", ".join(
            f"{k} {refs[-1][k]:.4g}" for k in ("accuracy_forward_of_a_perfect_map",
                                              "accuracy_backward_of_a_perfect_map",
                                              "fd_forward_of_a_perfect_map",
                                              "fd_backward_of_a_perfect_map")), flush=True)
    first = refs[0]
    out = {k: first[k] for k in ("judge_accuracy_real_fashion", "judge_accuracy_real_mnist",
                                 "judge_accuracy_reconstructed_fashion",
                                 "judge_accuracy_reconstructed_mnist", "fd_forward_floor",
                                 "fd_backward_floor")}
    for side in ("forward", "backward"):
        acc = [r[f"accuracy_{side}_of_a_perfect_map"] for r in refs]
        ratio = [r[f"fd_{side}_of_a_perfect_map"] / r[f"fd_{side}_floor"] for r in refs]
        out[f"accuracy_{side}_of_a_perfect_map"] = [min(acc), max(acc)]
        out[f"fd_{side}_of_a_perfect_map_over_floor"] = [min(ratio), max(ratio)]
        out[f"a_perfect_map_meets_the_accuracy_goal_{side}"] = min(acc) >= ACCURACY_GOAL
        out[f"a_perfect_map_meets_the_frechet_goal_{side}"] = max(ratio) <= FRECHET_GOAL
    v = json.loads((Path(vae) / "training_metrics.json").read_text())
    out.update({
        "latent_dim": v["latent_dim"], "latent_shape": v["latent_shape"], "vae_steps": v.get("steps"),
        "vae_command": v.get("command"), "psnr_mnist": v["metrics"]["mnist"]["psnr"],
        "psnr_fashion": v["metrics"]["fashion-mnist"]["psnr"], "draws": draws,
        "wall_seconds": time.perf_counter() - t0, "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()} ({os.cpu_count()} cores)",
    })
    return out


def yardstick_table(results: dict) -> str:
    def span(pair: list[float], fmt: str) -> str:
        return format(pair[0], fmt) if f"{pair[0]:{fmt}}" == f"{pair[1]:{fmt}}" else \
            f"{pair[0]:{fmt}}–{pair[1]:{fmt}}"

    lines = ["| VAE | latent | steps | PSNR mnist / fashion (dB) | judge on reconstructions "
             "fashion / mnist | a perfect map: accuracy fwd / bwd | a perfect map: Frechet / "
             "floor fwd / bwd | Frechet floor fwd / bwd |",
             "|---|---|---|---|---|---|---|---|"]
    for vae, r in results.items():
        lines.append(
            f"| {vae} | {r['latent_dim']} | {r['vae_steps']} | {r['psnr_mnist']:.2f} / "
            f"{r['psnr_fashion']:.2f} | {r['judge_accuracy_reconstructed_fashion']:.2%} / "
            f"{r['judge_accuracy_reconstructed_mnist']:.2%} | "
            f"{span(r['accuracy_forward_of_a_perfect_map'], '.2%')} / "
            f"{span(r['accuracy_backward_of_a_perfect_map'], '.2%')} | "
            f"{span(r['fd_forward_of_a_perfect_map_over_floor'], '.2f')}× / "
            f"{span(r['fd_backward_of_a_perfect_map_over_floor'], '.2f')}× | "
            f"{r['fd_forward_floor']:.3g} / {r['fd_backward_floor']:.3g} |")
    return "\n".join(lines)


def run_dir(vae: str) -> Path:
    return Path("runs/bench") / f"latent-{Path(vae).name}"


def collect(vae: str, m: dict, cmd: list[str], seconds: float) -> dict:
    v = json.loads((Path(vae) / "training_metrics.json").read_text())
    return {
        "latent_dim": v["latent_dim"], "latent_shape": v["latent_shape"],
        "vae_steps": v.get("steps"), "vae_command": v.get("command"),
        "psnr_mnist": v["metrics"]["mnist"]["psnr"], "psnr_fashion": v["metrics"]["fashion-mnist"]["psnr"],
        **{k: m[k] for k in KEYS},
        "wall_seconds": seconds, "command": " ".join(cmd[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} ({os.cpu_count()} cores)",
    }


def table(results: dict) -> str:
    lines = ["| latent | PSNR mnist / fashion (dB) | judge on reconstructions mnist / fashion | "
             "map accuracy fwd / bwd | FD / floor fwd / bwd | map steps |",
             "|---|---|---|---|---|---|"]
    for r in results.values():
        shape = "x".join(str(s) for s in r["latent_shape"])
        lines.append(
            f"| {r['latent_dim']} ({shape}) | {r['psnr_mnist']:.2f} / {r['psnr_fashion']:.2f} | "
            f"{r['judge_accuracy_reconstructed_mnist']:.2%} / "
            f"{r['judge_accuracy_reconstructed_fashion']:.2%} | "
            f"{r['accuracy_forward']:.2%} / {r['accuracy_backward']:.2%} | "
            f"{r['fd_forward_over_floor']:.2f} / {r['fd_backward_over_floor']:.2f} | {r['steps'] or '-'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
