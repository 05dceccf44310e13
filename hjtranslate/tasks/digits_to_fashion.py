"""``hjtranslate train digits-to-fashion``: digit k <-> clothing class k, transported in the
latent space of the shipped VAE (method.md sections 5 and 6).

Two class-conditional modes: ``shared`` (one potential for all classes, class-wise MMD, as the
paper) and ``conditional`` (a FiLM-conditioned head ``u(x, t; k)``: one exact OT map per class).
The run folder gets ``map/`` (``HJMap.from_pretrained``), ``metrics.json``, PNG grids and, with
``--export DIR``, a complete translation pipeline (VAE, map, judges) such as the one shipped in
``models/digits-to-fashion``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import registry
from ..checks import process_alive, written_whole
from ..costs import Cost
from ..data import DATA_DIR_HELP, user_cache_root
from ..hjmap import HJMap
from ..metrics import exact_ot_cost
from ..shipped import models_dir
from .common import (
    add_map_arguments,
    check_count,
    cost_from_args,
    fit_from_args,
    init_map_from_args,
    output_dir,
    require_at_least,
    run_figures,
    write_outputs,
)

if TYPE_CHECKING:  # the plugin imports hjtranslate: loaded where a run needs it
    from hjtranslate_plugins.vae import VAEEncoder

#: the pictures the task writes beside the map (removed when a run starts afresh)
OUTPUTS = ("grid_forward.png", "grid_backward.png")

MNIST_CLASSES = [str(k) for k in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
TEST_IMAGES = 10_000  # per side: the MNIST and Fashion-MNIST test sets
_TEST_SETS = " (the MNIST and Fashion-MNIST test sets hold 10,000 images each)"

PRESETS: dict[str, dict[str, Any]] = {
    # The whole run (encoding, training, evaluation) ends within 14.5 minutes on a 2-core CPU:
    # training gets the time the rest leaves.
    "cpu": {"steps": 6000, "deadline": 870.0, "batch_size": 512, "train_per_class": 2000,
            "width": 256, "depth": 3},
    # A GPU trains longer, on all training images, with a wider head.
    "gpu": {"steps": 40000, "deadline": None, "batch_size": 2048, "train_per_class": 6000,
            "width": 512, "depth": 4},
}
# A deadline that leaves less trains this long anyway (and says the run will end late).
MIN_TRAINING_SECONDS = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="cpu: about 15 minutes on 2 cores; gpu: longer and larger")
    p.add_argument("--mode", choices=["shared", "conditional"], default="conditional",
                   help="shared potential with class-wise MMD (the paper) or a conditional head")
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--download", action="store_true",
                   help="let torchvision download missing MNIST / Fashion-MNIST files (online)")
    p.add_argument("--vae", default=None, help="VAE folder or Hub id (default: models/vae)")
    p.add_argument("--train-per-class", type=int, default=None, help="training images per class and side")
    p.add_argument("--eval-n", type=int, default=10000, help="test images per side to evaluate on")
    p.add_argument("--deadline", type=float, default=None,
                   help="end the whole run (encoding, training, evaluation) within this many seconds "
                   "from its start; training gets the time the rest leaves (cpu preset: 870)")
    p.add_argument("--export", default=None,
                   help="also write a translation pipeline folder here (e.g. models/digits-to-fashion)")
    p.add_argument("--manifold-weight", type=float, default=0.0, metavar="W",
                   help="keep translated latents as close to the VAE's own (encode(decode(z)) "
                   "moves them no further than real latents) with this weight; 0 = off")
    p.add_argument("--manifold-samples", type=int, default=16, metavar="N",
                   help="translated latents per direction and step that the --manifold-weight "
                   "term reads (a VAE round trip with its gradient is costly on a CPU)")
    p.add_argument("--manifold-gradient", choices=["through", "toward"], default="through",
                   help="through: differentiate the term through the VAE; toward: pull each "
                   "translated latent toward its round trip, held fixed")
    # The match: the multi-bandwidth Gaussian-kernel MMD. Beside the energy distance (540 s, one
    # thread) it gave 84.6 % / 93.6 % accuracy and Frechet ratios 1.52x / 7.6x against 83.4 % /
    # 93.3 % and 1.65x / 9.3x, at a larger duality gap (10.9 % against 6.6 %).
    add_map_arguments(p, steps=0, batch_size=0, mmd="gaussian")
    # One Hopf-Lax quadratic per class, each warm-started at its class's Gaussian OT map (the
    # network learns the rest). `make train` in a fresh clone: 83.5 % / 93.1 % accuracy
    # (forward / backward), round-trip error 0.084, against 81.7 % / 89.2 % and 0.43 with one
    # shared eigenbasis part from the identity (hopf_lax); one shared part warm-started at the
    # pooled Gaussian map did worse still (BENCHMARKS.md). The shared mode (one potential,
    # no class input) keeps the shared eigenbasis part.
    p.set_defaults(steps=None, batch_size=None, width=None, depth=None, no_progress=False)
    for action in p._actions:  # the preset decides these: --help says so
        if action.dest in PRESETS["cpu"] and action.dest != "deadline":
            shown = " / ".join(f"{name} {preset[action.dest]:,}" for name, preset in PRESETS.items())
            action.help = f"{action.help or ''} (default: the --preset's, {shown})".strip()


def _apply_preset(args: argparse.Namespace) -> None:
    preset = PRESETS[args.preset]
    args._deadline_typed = args.deadline is not None  # recorded: a resume keeps a typed one
    for key, value in preset.items():
        if key != "deadline" and getattr(args, key, None) is None:
            setattr(args, key, value)
    # The preset's deadline belongs to its step count: `--steps N` (or `--time-budget S`) alone
    # runs N steps (or S seconds of training).
    if (args.deadline is None and args.time_budget is None
            and args.steps == PRESETS[args.preset]["steps"]):
        args.deadline = preset["deadline"]
    if args.deadline is not None and not args.deadline > 0:
        raise ValueError(f"--deadline must be a positive number of seconds, got {args.deadline}.")
    if args.quadratic is None:
        args.quadratic = "hopf_lax_per_class" if args.mode == "conditional" else "hopf_lax"
    # A warm-started part takes small steps; one that starts at the identity must travel far.
    if args.quadratic_gain is None:
        cold = args.no_warm_start or args.quadratic == "hopf_lax" or args.cost != "quadratic"
        args.quadratic_gain = 10.0 if cold else 1.0
    require_at_least(args, train_per_class=2)
    check_count("--eval-n", args.eval_n, 10, TEST_IMAGES, _TEST_SETS)


def _digest(state: dict[str, torch.Tensor], extra: Any = None) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().float().numpy().tobytes()[:4096])
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _images_digest(names: tuple[str, ...], split: str, data_dir: str | None) -> str:
    """A digest of the images and labels of a split of the datasets ``names``."""
    from ..data import load_dataset

    h = hashlib.sha256()
    for name in names:
        images, labels = load_dataset(name, split, data_dir)
        h.update(images.numpy().tobytes())
        h.update(labels.numpy().tobytes())
    return h.hexdigest()[:16]


def _vae_digest(enc) -> str:
    return _digest(enc.vae.state_dict(), enc.latent_stats)


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = [torch.nonzero(labels == k)[:, 0] for k in range(10)]
    return torch.cat([i[torch.randperm(len(i), generator=g)[:per_class]] for i in idx])


def encoded(enc: VAEEncoder, name: str, split: str, data_dir: str | None, index: torch.Tensor | None,
            cache: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, latents, labels) of a dataset split (or a subset), latents cached on disk."""
    from safetensors.torch import load_file, save_file

    from ..data import load_dataset, to_float

    images, labels = load_dataset(name, split, data_dir)
    if index is not None:
        images, labels = images[index], labels[index]
    # The key names the images by their bytes (other files with the same labels, as an edited
    # copy of a dataset, must not read these latents) and the subset taken.
    h = hashlib.sha256(labels.numpy().tobytes())
    h.update(images.numpy().tobytes())
    if index is not None:
        h.update(torch.as_tensor(index).numpy().tobytes())
    key = h.hexdigest()[:12]
    path = cache / f"{_vae_digest(enc)}-{name}-{split}-{len(labels)}-{key}.safetensors"
    if path.is_file():
        z = load_file(str(path))["z"]
    else:
        z = enc.encode(to_float(images)).cpu()
        cache.mkdir(parents=True, exist_ok=True)
        for stale in cache.glob("*.tmp"):  # left by an encoding that was killed
            pid = stale.name.rsplit(".", 2)[-2]
            try:  # an hour old too: the cache may be shared with other machines' processes
                old = time.time() - stale.stat().st_mtime > 3600
                if old and pid.isdigit() and not process_alive(int(pid)):
                    stale.unlink(missing_ok=True)
            except OSError:
                pass
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file({"z": z.contiguous()}, str(tmp))
        os.replace(tmp, path)
    return to_float(images), z, labels


def _cache_dir() -> Path:
    """Where encoded latents (``latents/``) and map-independent figures (``references/``) are
    kept: ``$HJT_CACHE_DIR``, else ``$XDG_CACHE_HOME/hjtranslate`` (``~/.cache/hjtranslate``).
    Entries are keyed by what they were computed from and never go stale; delete the folder to
    free the space."""
    return Path(os.environ.get("HJT_CACHE_DIR") or user_cache_root()) / "latents"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..data import load_dataset
    from ..training import finish_run, make_accelerator, trained_seconds

    _apply_preset(args)
    if args.export:
        from ..pipeline import check_pipeline_destination

        check_pipeline_destination(args.export, "--export")  # before training, not after
    out = output_dir(args, "digits-to-fashion")
    export = Path(args.export).resolve() if args.export else None
    if export is not None and (export.is_relative_to(out.resolve())
                               or out.resolve().is_relative_to(export)):
        # the export replaces its whole folder: it must neither be nor hold nor sit in the run
        raise ValueError(f"--export {args.export} and --output-dir {out} overlap: a pipeline "
                         "needs a folder of its own (e.g. --export models/digits-to-fashion).")
    acc = make_accelerator()
    enc = registry.create("encoder", "vae", pretrained=args.vae, device=acc.device)
    init = init_map_from_args(args)
    if init is not None:
        from ..pipeline import check_same_latent

        if init.dim != enc.latent_dim:
            raise ValueError(f"--init-from {args.init_from} is a {init.dim}-d map; this VAE's "
                             f"latents are {enc.latent_dim}-d.")
        check_same_latent(init, enc)
        mode = "conditional" if init.conditional else "shared"
        if mode != args.mode:
            raise ValueError(f"--init-from {args.init_from} is a {mode}-mode map; pass --mode {mode}.")
    # Encode once (rank 0 first, the others read its cache).
    with acc.main_process_first():
        if getattr(args, "download", False):
            for name in ("mnist", "fashion-mnist"):
                for split in ("train", "test"):
                    load_dataset(name, split, args.data_dir, download=True)
        _, ls_img = load_dataset("mnist", "train", args.data_dir)
        _, lt_img = load_dataset("fashion-mnist", "train", args.data_dir)
        i_s = balanced_subset(ls_img, args.train_per_class, seed=args.seed)
        i_t = balanced_subset(lt_img, args.train_per_class, seed=args.seed + 1)
        _, zs, ks = encoded(enc, "mnist", "train", args.data_dir, i_s, _cache_dir())
        _, zt, kt = encoded(enc, "fashion-mnist", "train", args.data_dir, i_t, _cache_dir())
        if acc.is_main_process:  # before training, so that the deadline can count the rest
            reference_metrics(enc, args, cost_from_args(args), args.t_f)
    # The budget this launch's deadline leaves; args.time_budget (and config.json) keep what was
    # typed, so that a resumed launch derives its own from its own deadline. Budgets count the
    # run's training time (a resume carries the earlier launches'): this launch's part is added.
    budget = args.time_budget
    if args.deadline is not None:
        left = training_budget(args, acc, enc, zs) + (trained_seconds(out) if args.resume else 0.0)
        budget = left if budget is None else min(budget, left)
    t0 = time.perf_counter()
    m, result, acc = fit_from_args(
        args, zs, zt, "digits-to-fashion", labels=(ks, kt), outputs=OUTPUTS,
        conditional=args.mode == "conditional",
        class_names=MNIST_CLASSES, target_class_names=FASHION_CLASSES,
        encoder=encoder_record(enc, args.vae), init_from=init, time_budget=budget,
        manifold_weight=args.manifold_weight, manifold_samples=args.manifold_samples,
        manifold_gradient=args.manifold_gradient,
        projection=enc.round_trip if args.manifold_weight else None,
    )
    metrics: dict[str, Any] = {
        "mode": args.mode, "preset": args.preset, "seed": args.seed,
        **run_figures(result, t0), "training_budget_seconds": budget,
        **{f"train_{k}": v for k, v in result["final"].items()},
    }
    if acc.is_main_process:
        t1 = time.perf_counter()
        metrics.update(evaluate_translation(m, enc, args, out))
        metrics["eval_seconds"] = time.perf_counter() - t1
    metrics["run_seconds"] = run_seconds()  # the deadline's clock (an --export comes after)
    write_outputs(out, m, metrics, acc)
    if acc.is_main_process and args.export:
        export_pipeline(out / "map", args, Path(args.export))
    finish_run(acc)
    return metrics


def run_seconds() -> float:
    """Seconds since this process started (imports included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


def training_budget(args: argparse.Namespace, acc: Any, enc: VAEEncoder, z: torch.Tensor) -> float:
    """The training seconds that end the run by ``args.deadline``: what is left after the time
    spent so far and the evaluation to come. Rank 0, which evaluates, decides for all ranks."""
    from accelerate.utils import broadcast_object_list

    budget: list[float | None] = [None]
    if acc.is_main_process:
        spent, evaluation = run_seconds(), estimate_eval_seconds(enc, z, args.eval_n)
        left = args.deadline - spent - evaluation
        budget[0] = max(left, MIN_TRAINING_SECONDS)
        acc.print(f"Deadline {args.deadline:.0f} s: {spent:.0f} s spent, about {evaluation:.0f} s "
                  f"of evaluation to come; training for {budget[0]:.0f} s.")
        if left < MIN_TRAINING_SECONDS:
            acc.print(f"Warning: the deadline leaves under {MIN_TRAINING_SECONDS:.0f} s of training; "
                      "the run will end late. Raise --deadline or lower --eval-n.")
    if acc.num_processes > 1:
        broadcast_object_list(budget)
    return float(budget[0])


@torch.no_grad()
def estimate_eval_seconds(enc: VAEEncoder, z: torch.Tensor, n: int) -> float:
    """About how long the evaluation takes once ``reference_metrics`` is cached: per direction,
    n decodes and three judge passes (accuracy, fake and real features), timed on a probe of
    256 latents, plus a margin for the per-class metrics, the grids and saving."""
    from ..judges import load_judge

    judge = load_judge("fashion-mnist")
    probe = z[:256]
    timings = []
    for _ in range(2):  # the faster of two: the first pays one-off costs, and a busy moment
        t0 = time.perf_counter()  # on a shared machine took 6x the time (session 44)
        images = enc.decode(probe).cpu()
        judge.predict(images)
        judge.features(images)
        judge.features(images)
        timings.append(time.perf_counter() - t0)
    per_image = min(timings) / len(probe)
    return 1.25 * 2 * n * per_image + 30.0


def encoder_record(enc: VAEEncoder, vae: str | None) -> dict[str, Any]:
    """What the map's config.json records of its encoder: the VAE and its latent scale/shift."""
    stats = enc.latent_stats or {}
    return {"name": "vae", "pretrained": vae or "models/vae", "latent_dim": enc.latent_dim,
            "latent_shift": stats.get("shift"), "latent_scale": stats.get("scale"),
            "input_transform": stats.get("input_transform"), "datasets": ["mnist", "fashion_mnist"]}


def evaluate(m: HJMap, args: argparse.Namespace, n: int = 10000) -> dict[str, Any]:
    """``hjtranslate evaluate RUN``: the translation metrics of a saved run."""
    from ..pipeline import check_same_latent

    check_count("--n", n, 10, TEST_IMAGES, _TEST_SETS)
    args.eval_n = n
    enc = registry.create("encoder", "vae", pretrained=getattr(args, "vae", None))
    check_same_latent(m, enc)  # another VAE must share the map's latent space
    return evaluate_translation(m, enc, args, None)


def _eval_inputs(enc, args: argparse.Namespace) -> tuple:
    """What every evaluation reads: (images, latents, labels) of the first ``--eval-n`` MNIST,
    then Fashion-MNIST, test images, then the MNIST and Fashion-MNIST judges."""
    from ..judges import load_judge

    index = torch.arange(args.eval_n)
    # A shipped pipeline folder brings its own judges (`hjtranslate evaluate models/digits-to-fashion`).
    judges = (getattr(args, "judge_source", None) or "mnist",
              getattr(args, "judge_target", None) or "fashion-mnist")
    return (*encoded(enc, "mnist", "test", args.data_dir, index, _cache_dir()),
            *encoded(enc, "fashion-mnist", "test", args.data_dir, index, _cache_dir()),
            *(load_judge(j) for j in judges))


@torch.no_grad()
def reference_metrics(enc: VAEEncoder, args: argparse.Namespace, cost: Cost, t_f: float,
                      inputs: tuple | None = None) -> dict[str, Any]:
    """The evaluation's figures that do not depend on the map: the judges' accuracy on the real
    test images and on their VAE reconstructions, the Frechet floors, the accuracy and Frechet
    distances of a perfect map and, per class, the exact OT cost (POT) on up to 1,000 test
    latents. Cached beside the latents (keyed by VAE, judges, test images and labels, --eval-n,
    seed, cost and t_f): a second run pays for its own map only. ``inputs``: ``_eval_inputs`` when already
    read."""
    from ..judges import frechet_distances

    xs_img, zs, ks, xt_img, zt, kt, judge_m, judge_f = inputs or _eval_inputs(enc, args)
    seed = getattr(args, "seed", 0)
    try:  # the training images a perfect map's decodes are drawn from
        train_images = _images_digest(("mnist", "fashion-mnist"), "train", args.data_dir)
    except FileNotFoundError as exc:  # `evaluate` beside the test sets alone: all but those
        train_images = None
        warnings.warn(f"The perfect-map yardsticks are not measured (they decode training "
                      f"images): {exc}", stacklevel=1)  # hjtranslate's: a note in the CLI
    key = {"version": 2, "vae": _vae_digest(enc), "judge_mnist": _digest(judge_m.state_dict()),
           "judge_fashion": _digest(judge_f.state_dict()), "n": len(ks), "seed": seed,
           "cost": repr(cost), "t_f": t_f,
           "labels": hashlib.sha256(ks.numpy().tobytes() + kt.numpy().tobytes()).hexdigest(),
           # the test images, through their latents (whose cache key holds their bytes)
           "latents": hashlib.sha256(zs.numpy().tobytes() + zt.numpy().tobytes()).hexdigest(),
           "train_images": train_images}
    path = _cache_dir().parent / "references" / f"{_digest({}, key)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    # Translations are VAE decodes: the judge's accuracy on VAE reconstructions of real test
    # images is the ceiling a perfect latent map could reach through this VAE, and their Frechet
    # distance the floor.
    rec_s, rec_t = enc.decode(zs).cpu(), enc.decode(zt).cpu()
    ref: dict[str, Any] = {
        "judge_accuracy_real_fashion": judge_f.accuracy(xt_img, kt),
        "judge_accuracy_real_mnist": judge_m.accuracy(xs_img, ks),
        "judge_accuracy_reconstructed_fashion": judge_f.accuracy(rec_t, kt),
        "judge_accuracy_reconstructed_mnist": judge_m.accuracy(rec_s, ks),
    }
    for direction, name, judge, real, rec, source_labels in (
            ("forward", "fashion-mnist", judge_f, xt_img, rec_t, ks),
            ("backward", "mnist", judge_m, xs_img, rec_s, kt)):
        perfect = None if train_images is None else perfect_map_images(enc, args, name,
                                                                        source_labels, seed)
        fakes = [rec] if perfect is None else [rec, perfect[0]]
        fds = frechet_distances(judge, real, fakes) if len(real) >= 2 else []
        ref[f"fd_{direction}_floor"], ref[f"fd_{direction}_of_a_perfect_map"] = (fds + [None, None])[:2]
        # The accuracy goal's yardstick: above the ceiling, since the judge was trained on the
        # training images that a perfect map's decodes come from.
        ref[f"accuracy_{direction}_of_a_perfect_map"] = (
            None if perfect is None else judge.accuracy(*perfect))
    exact = []
    for k in range(10):
        xk, yk = zs[ks == k][:1000], zt[kt == k][:1000]
        exact.append(exact_ot_cost(xk, yk, cost, t_f) if len(xk) >= 2 and len(yk) >= 2 else None)
    ref["exact_ot_cost_per_class"] = exact
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ref, indent=1))
    os.replace(tmp, path)
    return ref


@torch.no_grad()
def evaluate_translation(m: HJMap, enc: VAEEncoder, args: argparse.Namespace,
                         out: Path | None) -> dict[str, Any]:
    """Class accuracy under the judges, Frechet distances with their VAE floors, per-class
    latent cost against exact OT, duality gaps and the round-trip error, both directions."""
    from ..judges import frechet_distance
    from ..metrics import certified_dual, duality_gap, monotone_share, perfect_map_max_gap

    inputs = _eval_inputs(enc, args)
    xs_img, zs, ks, xt_img, zt, kt, judge_m, judge_f = inputs
    ref = reference_metrics(enc, args, m.cost, m.t_f, inputs)
    n = len(ks)
    cond = m.conditional
    fwd = torch.cat([m.forward(zs[i:i + 2000], ks[i:i + 2000] if cond else None) for i in range(0, n, 2000)])
    bwd = torch.cat([m.backward(zt[i:i + 2000], kt[i:i + 2000] if cond else None) for i in range(0, n, 2000)])
    fwd_img, bwd_img = enc.decode(fwd).cpu(), enc.decode(bwd).cpu()
    res: dict[str, Any] = {
        "accuracy_forward": judge_f.accuracy(fwd_img, ks),
        "accuracy_backward": judge_m.accuracy(bwd_img, kt),
        "fd_forward": frechet_distance(judge_f, xt_img, fwd_img),
        "fd_backward": frechet_distance(judge_m, xs_img, bwd_img),
        **{k: v for k, v in ref.items() if k != "exact_ot_cost_per_class"},
    }
    res["fd_forward_over_floor"] = res["fd_forward"] / max(res["fd_forward_floor"], 1e-12)
    res["fd_backward_over_floor"] = res["fd_backward"] / max(res["fd_backward_floor"], 1e-12)
    # Per class: learned latent transport cost against exact discrete OT (POT) on 1,000 samples.
    ratios, gaps, gap_sds, monotone, certified = [], [], [], [], []
    for k, exact in enumerate(ref["exact_ot_cost_per_class"]):
        xk, yk = zs[ks == k][:1000], zt[kt == k][:1000]
        if exact is None or not exact > 0:  # a small --eval-n can miss a class; the same
            # points on both sides cost nothing to move, and no ratio to that exists
            for values in (ratios, gaps, gap_sds, monotone, certified):
                values.append(None)
            continue
        kk = torch.full((len(xk),), k) if cond else None
        ky = torch.full((len(yk),), k) if cond else None
        gap = duality_gap(m, xk, yk, kk, ky)  # its primal is the learned map's mean cost
        ratios.append(gap["primal"] / exact)
        gaps.append(gap["duality_gap"])
        gap_sds.append(gap["duality_gap_sd"])
        # a lower bound on the exact cost that training cannot inflate (metrics.certified_dual)
        certified.append(certified_dual(m, xk, yk, kk) / exact)
        # share of digits where the map is locally (c-)monotone
        monotone.append(monotone_share(m, xk, kk, max_n=256))
    res["classes_evaluated"] = evaluated = sum(r is not None for r in ratios)
    if evaluated < len(ratios):
        warnings.warn(f"The evaluation sample ({n} images a side) holds 2 or more images of only "
                      f"{evaluated} of the {len(ratios)} classes on both sides: the per-class "
                      "figures, and their max and min, cover those classes only (evaluate on 200 "
                      "images or more).", stacklevel=1)  # a note of ours (under no_grad's wrapper)
    res["cost_ratio_per_class"] = ratios
    res["cost_ratio_max_deviation"] = max((abs(r - 1) for r in ratios if r is not None), default=None)
    res["duality_gap_per_class"] = gaps
    res["duality_gap_max"] = max((g for g in gaps if g is not None), default=None)
    # The gap's standard error from the finite test samples (about 1.5 % at 1,000 per class),
    # and the max over classes that a perfect map would show from that error alone.
    res["duality_gap_sd_per_class"] = gap_sds
    sds = [sd for sd in gap_sds if sd is not None]
    res["duality_gap_max_of_a_perfect_map"] = perfect_map_max_gap(sds)["median_max_gap"] if sds else None
    res["monotone_share_per_class"] = monotone
    res["dual_certified_over_exact_ot_per_class"] = certified
    res["dual_certified_over_exact_ot_min"] = min((c for c in certified if c is not None), default=None)
    back = m.backward(fwd, ks if cond else None).cpu()  # the map may sit on a GPU
    res["round_trip_rel_error"] = float((back - zs).norm(dim=1).mean() / zs.norm(dim=1).mean())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_grid(out / "grid_forward.png", m, enc, xs_img, zs, ks, "forward")
        save_grid(out / "grid_backward.png", m, enc, xt_img, zt, kt, "backward")
    return res


@torch.no_grad()
def perfect_map_images(enc: VAEEncoder, args: argparse.Namespace, name: str, source_labels: torch.Tensor,
                       seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """What a map whose pushed latents had exactly the target's law would produce: decodes of
    the target's *training* latents, drawn with the class counts of the translated test set
    (``source_labels``), and their classes; None with under 2 images."""
    from ..data import load_dataset

    counts = torch.bincount(source_labels, minlength=10)
    if int(counts.sum()) < 2:
        return None
    _, labels = load_dataset(name, "train", args.data_dir)
    index = balanced_subset(labels, int(counts.max()), seed=seed + 2)
    _, z, k = encoded(enc, name, "train", args.data_dir, index, _cache_dir())
    keep = torch.cat([torch.nonzero(k == c)[: int(counts[c]), 0] for c in range(10)])
    return enc.decode(z[keep]).cpu(), k[keep]  # decode batches itself


@torch.no_grad()
def save_grid(path: Path, m: HJMap, enc: VAEEncoder, images: torch.Tensor, z: torch.Tensor,
              labels: torch.Tensor, direction: str, per_class: int = 4,
              frames: int = 8) -> None:
    """One row per class: sources, their translations, then the morph of the first source."""
    from torchvision.utils import save_image

    rows = []
    for k in range(10):
        idx = torch.nonzero(labels == k)[:per_class, 0]
        if len(idx) == 0:  # a small --eval-n can miss a class
            continue
        idx = idx[torch.arange(per_class) % len(idx)]
        kk = torch.full((len(idx),), k) if m.conditional else None
        zk = z[idx]
        moved = (m.forward(zk, kk) if direction == "forward" else m.backward(zk, kk)).cpu()
        ts = torch.linspace(0, m.t_f, frames)
        if direction == "forward":
            path_z = m.interpolate(zk[:1], ts, kk[:1] if kk is not None else None)[:, 0]
        else:  # the backward characteristic: from the clothing at t_f back to its digit
            path_z = torch.stack([zk[0] + (moved[0] - zk[0]) * (float(t) / m.t_f) for t in ts])
        rows.append(torch.cat([images[idx], enc.decode(moved).cpu(), enc.decode(path_z).cpu()]))
    grid = torch.cat(rows)
    with written_whole(path) as tmp:
        save_image(grid, str(tmp), nrow=2 * per_class + frames, padding=1, pad_value=0.5)


def export_pipeline(map_dir: Path, args: argparse.Namespace, dest: Path) -> None:
    from ..data import load_dataset
    from ..hjmap import HJMap
    from ..pipeline import TranslationPipeline

    pipe = TranslationPipeline.from_components(
        vae=args.vae or models_dir() / "vae", map=HJMap.from_pretrained(map_dir),
        judge_source=models_dir() / "judge-mnist", judge_target=models_dir() / "judge-fashion-mnist",
        source_dataset="mnist", target_dataset="fashion-mnist",
        source_class_names=MNIST_CLASSES, target_class_names=FASHION_CLASSES,
    )
    # the app's hint for an input given as the wrong side, measured on the test sets
    tests = [load_dataset(name, "test", args.data_dir)[0][:, None].float() / 255
             for name in ("mnist", "fashion-mnist")]
    found = pipe.calibrate_other_side(*tests)
    pipe.save_pretrained(dest)
    print(f"Wrote the translation pipeline {dest} (its judges take "
          f"{found['caught_target_as_source']:.0%} of clothes given as digits, and "
          f"{found['caught_source_as_target']:.0%} of digits given as clothes, for the other side's)")
