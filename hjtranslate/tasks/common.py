"""What every map-training task shares: options, the accelerate run, and the output folder
(``map/`` loadable with ``from_pretrained``, ``config.json``, ``metrics.json``, PNGs)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..api import fit
from ..checks import (
    check_folder_path,
    missing_reason,
    real_number,
    settings_text,
    shared_as_umask_says,
    write_json_atomically,
    written_whole,
)
from ..hjmap import HJMap, describes_a_map, folder_config, read_json_object
from ..losses import MMDS, SINKHORN_BLUR
from ..objective import MONOTONE_DIRECTIONS, SEMIDUAL_SIDES
from ..pipeline import INDEX_FILE
from ..training import RUN_RECORD, checkpoints, keep_folder, last_checkpoint_json, make_accelerator

# The built-in heads' quadratic parts (plugins/hjtranslate_plugins/heads.py).
QUADRATIC_KINDS = ["none", "affine", "hopf_lax", "hopf_lax_spd", "hopf_lax_basis", "hopf_lax_per_class"]


def add_map_arguments(p: argparse.ArgumentParser, steps: int = 3000, batch_size: int = 512,
                      mmd: str = "energy", sinkhorn_blur: float = SINKHORN_BLUR) -> None:
    """The map options every task shares, with the task's defaults for ``--steps``,
    ``--batch-size`` and ``--mmd``; ``sinkhorn_blur``: the blur ``--help`` names (fit's, unless
    the task resolves its own in its ``run``)."""
    p.add_argument("--output-dir", default=None, help="where to write the run (default: runs/TASK)")
    p.add_argument("--steps", type=int, default=steps, help="training steps")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--batch-size", type=int, default=batch_size, help="samples per side per step, in each "
                   "process: N processes (accelerate launch --multi_gpu --num_processes N) train "
                   "on N times that, each matching its own batch")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (Adam, cosine decay)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, the batches and the task's data draws (training "
                   "points and subsets, held-out points)")
    p.add_argument("--cost", default="quadratic", help="a cost plugin (see `hjtranslate plugins`)")
    p.add_argument("--p", type=float, default=None,
                   help="exponent of the pnorm / lp costs (default 2, the quadratic's)")
    p.add_argument("--cost-options", default=None, metavar="JSON",
                   help="other options of the cost plugin, as a JSON object, e.g. '{\"scale\": 2}'")
    p.add_argument("--head", default=None,
                   help="a head plugin (default: mlp; digits-to-fashion --mode conditional: conditional)")
    p.add_argument("--head-options", default=None, metavar="JSON",
                   help="other options of the head plugin, as a JSON object (beside --width, ...)")
    p.add_argument("--width", type=int, default=None, help="units per hidden layer of the head")
    p.add_argument("--depth", type=int, default=None, help="layers of the head")
    p.add_argument("--quadratic", default=None, choices=QUADRATIC_KINDS,
                   help="quadratic part of the potential (default: hopf_lax_spd for the quadratic "
                   "cost, hopf_lax_basis above 64 dimensions, else affine; digits-to-fashion: "
                   "hopf_lax_per_class, one per class, with the conditional head, hopf_lax with "
                   "--mode shared)")
    p.add_argument("--quadratic-gain", type=float, default=None,
                   help="the Hopf-Lax quadratic learns this many times faster than the network "
                   "(default: gaussians 1, or 300 with --no-warm-start; digits-to-fashion 1 from "
                   "its warm start, 10 from a cold one, with hopf_lax or another cost; otherwise "
                   "1 for fit's hopf_lax_basis above 64 dimensions, else the head's 10)")
    p.add_argument("--fourier-features", type=int, default=None,
                   help="mlp head: add sin/cos of this many random projections of x to its "
                   "inputs (sharper maps in low dimensions; default 128 in 2-D with the "
                   "quadratic cost and in color-transfer, else 0 = none)")
    p.add_argument("--fourier-scale", type=float, default=None,
                   help="standard deviation of those projections in standardised data units "
                   "(default 8; color-transfer: 4)")
    p.add_argument("--lambda", dest="lambda_mmd", default="auto",
                   help="MMD weight: 'auto' (adaptive, default) or a number")
    p.add_argument("--lambda-slack", type=float, default=0.05, metavar="S",
                   help="with --lambda auto: the weight rises until the batch's match is within "
                   "1 + S of its statistical floor; a smaller S asks for a closer match "
                   "(default %(default)s)")
    p.add_argument("--mmd", default=mmd, choices=sorted(MMDS),
                   help=f"the match between pushed and target samples (default {mmd})")
    p.add_argument("--sinkhorn-blur", type=float, default=None,
                   help="--mmd sinkhorn: entropic blur per unit of sqrt(2 d), the typical distance "
                   f"between two standardised points (default {sinkhorn_blur:g})")
    p.add_argument("--no-backward-mmd", action="store_true",
                   help="match only the forward map's pushed samples to the target (by default "
                        "the backward map's to the source too)")
    p.add_argument("--monotone-weight", type=float, default=0.0,
                   help="weight of a penalty on non-monotone (for a non-quadratic cost: not "
                   "c-monotone) directions of the "
                   "forward map (0 = off)")
    p.add_argument("--monotone-directions", default="random", choices=MONOTONE_DIRECTIONS,
                   help="directions the monotone penalty sees: one random per sample, all "
                   "eigenvalues of the Jacobian (d extra backward passes: for low d), or the least "
                   "monotone one found by power iterations (8 extra backward passes; quadratic cost only)")
    p.add_argument("--cycle-weight", type=float, default=1.0,
                   help="weight of the round-trip term |T^-1(T(x)) - x|^2 (0 = off)")
    p.add_argument("--cycle-share", type=float, default=1.0,
                   help="share of each batch whose round trip is penalised (every 1/share-th sample)")
    p.add_argument("--semidual-weight", type=float, default=0.0,
                   help="weight of the batch semi-dual E_y min_i [u(x_i, 0) + c(x_i, y)] - E_x u(x, 0), "
                   "maximised (0 = off; default %(default)s)")
    p.add_argument("--semidual-side", choices=SEMIDUAL_SIDES, default="source",
                   help="the potential the semi-dual certifies: u(., 0) (source), u(., t_f), which "
                   "the backward map reads (target), or both (their mean)")
    p.add_argument("--match-pool", type=int, default=0, metavar="N",
                   help="samples of earlier batches the match also compares against (energy or "
                   "gaussian match), so it resolves the target (N + batch) / batch times finer "
                   "(0 = the batch alone; default %(default)s)")
    p.add_argument("--report-to", default=None, metavar="TRACKER",
                   help="log the training curves with an accelerate tracker: tensorboard (into "
                   "OUTPUT_DIR/logs), wandb, mlflow, ... or all, its package installed; none "
                   "turns a recorded one off on --resume")
    p.add_argument("--ema-decay", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (Polyak averaging, "
                   "as diffusers' --use_ema) and save it as the map, e.g. 0.999 for the last "
                   "~1,000 steps; steadies where a long run ends (default: off)")
    p.add_argument("--no-warm-start", action="store_true",
                   help="start the quadratic part at the identity map, not at the OT map between "
                   "Gaussians fitted to the data")
    p.add_argument("--t-f", type=float, default=1.0, help="time horizon t_f of the characteristics")
    p.add_argument("--init-from", default=None, metavar="MAP",
                   help="fine-tune a trained map (a map folder, a run or pipeline folder holding "
                   "map/, or a Hub id) instead of starting afresh; a smaller --lr (e.g. 3e-4) suits")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint, with the options the run's config.json "
                   "records for those not typed again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# What a run's config.json records that belongs to one launch rather than to the run
# (digits-to-fashion's --deadline ends a whole launch and follows from its preset at each one,
# unless it was typed: `_deadline_typed`).
LAUNCH_OPTIONS = {"task", "command", "func", "num_processes", "resume", "output_dir",
                  "print_metrics", "no_progress", "deadline"}


#: options that may name a local file or folder (toy2d's --source/--target name datasets;
#: color-transfer's are image files)
PATH_OPTIONS = ("vae", "data_dir", "init_from", "export")


def note_started_as(args: argparse.Namespace) -> None:
    """Set ``args._started_as``, which the run's record keeps: the command the run started with
    (a resume keeps its record's; a resume of a run recorded before this was leaves it None)."""
    args._started_as = getattr(args, "_started_as", None) or (
        None if args.resume else getattr(args, "_command", None))


def run_commands(args: argparse.Namespace, task: str) -> dict[str, str]:
    """For a model card: ``command``, the command the run started with, and for a resumed run
    ``resumed_with``, the one that finished it (``cli.main`` sets ``args._command``)."""
    launched = getattr(args, "_command", None) or f"hjtranslate train {task}"
    started = getattr(args, "_started_as", None)
    out = {"command": started or launched}
    if args.resume and started and launched != started:
        out["resumed_with"] = launched
    return out


def resumed_line(info: dict[str, Any]) -> str:
    """The model card's line under the command for a resumed run (empty for one launch)."""
    return f"\nResumed with `{info['resumed_with']}`.\n" if info.get("resumed_with") else ""


def recorded_options(args: argparse.Namespace) -> dict[str, Any]:
    """What a run records of its options: local paths made absolute, so that a --resume
    launched from another folder finds the same images, VAE and data."""
    record = {k: v for k, v in vars(args).items() if k not in ("func", "_typed")}
    paths = PATH_OPTIONS + (("source", "target") if getattr(args, "task", None) == "color-transfer"
                            else ())
    for k in paths:
        value = record.get(k)
        if isinstance(value, str) and value and os.path.exists(os.path.expanduser(value)):
            record[k] = str(Path(value).expanduser().resolve())
    return record


def _checkpoint_record(out: Path) -> tuple[dict[str, Any], Path]:
    """The options the last checkpoint of ``out`` records (``TrainConfig.extra``), and where."""
    found = last_checkpoint_json(out, "trainer_state.json")
    extra = (found[0].get("config") or {}).get("extra") if found else None
    return (extra, found[1]) if isinstance(extra, dict) else ({}, out / "checkpoints")


# Options a checkpoint belongs to: a resume may not change them (--init-from may, where it fits).
# "widths" to "model_kwargs" are the VAE's and the judges' architectures.
IDENTITY_OPTIONS = ("cost", "p", "cost_options", "vae", "source", "target", "dim", "mode",
                    "head", "head_options", "t_f", "data_seed", "width", "depth", "quadratic",
                    "quadratic_gain", "fourier_features", "fourier_scale",
                    "widths", "latent_channels", "latent_size", "decoder_only", "arch",
                    "model_kwargs", "seed", "no_warm_start")
#: the head's architecture as the task options name it (and its head_kwargs do)
HEAD_SETTINGS = ("width", "depth", "quadratic", "quadratic_gain", "fourier_features", "fourier_scale")
_IDENTITY_WHAT = {"cost": "cost", "p": "cost", "cost_options": "cost",
                  "vae": "latent space (VAE)", "source": "data",
                  "target": "data", "dim": "data", "data_seed": "data", "mode": "mode",
                  "t_f": "time horizon", "widths": "VAE", "latent_channels": "VAE",
                  "latent_size": "VAE", "decoder_only": "VAE training (decoder only or whole)",
                  "arch": "judge architecture",
                  "model_kwargs": "judge architecture",
                  "seed": "seed (it drew the run's first weights, its batches and, but for "
                          "gaussians, its data)",
                  "no_warm_start": "start (with or without the linear warm start)",
                  }  # the rest: the head's architecture


def _same_option(name: str, typed: Any, recorded: Any) -> bool:
    if name == "vae":  # a path; None stands for the shipped VAE
        from hjtranslate_plugins.vae import default_vae_path

        return Path(typed or default_vae_path()).resolve() == Path(recorded or default_vae_path()).resolve()
    if name.endswith(("_options", "_kwargs")):  # JSON objects, however spaced
        try:
            return json.loads(typed) == json.loads(recorded)
        except (TypeError, ValueError):
            return typed == recorded
    if isinstance(typed, (int, float)) and isinstance(recorded, (int, float)):
        return float(typed) == float(recorded)
    if isinstance(typed, str) and isinstance(recorded, str) and Path(typed).is_file():
        # an image, named another way; or moved, where the run's path holds nothing now (the
        # resumed data's mean and spread are then checked against the run's coordinates)
        return (Path(typed).resolve() == Path(recorded).resolve()
                or not Path(recorded).expanduser().exists())
    return typed == recorded


def held_out_seeds(seed: int) -> tuple[int, int]:
    """The seeds of a run's held-out draw (source, target) for a run whose training draws use
    ``2 seed + 1`` and ``2 seed + 2``: 10,001 and 10,002 + ``seed`` (every recorded figure used
    them), moved on by 4 for the few seeds (9,999 to 10,001) where they would meet the training
    seeds, so that held-out points are never training points. Compared modulo 2**32: a CPU
    generator keeps a seed's low 32 bits."""
    training = {(2 * seed + 1) % 2**32, (2 * seed + 2) % 2**32}
    offset = 0
    while {(10_001 + seed + offset) % 2**32, (10_002 + seed + offset) % 2**32} & training:
        offset += 4
    return 10_001 + seed + offset, 10_002 + seed + offset


def restore_recorded_options(args: argparse.Namespace, explicit: set[str],
                             actions: dict[str, argparse.Action] | None = None) -> dict[str, Any]:
    """``--resume``: every option the command line leaves unset (not in ``explicit``) takes the
    value the run's ``config.json`` records, so a resumed run trains on as it started (a
    ``--width 256`` run resumed without ``--width`` keeps 256; a task default changed since
    does not switch the match under a checkpoint). Options typed again win, e.g. ``--steps``
    to train longer. ``actions`` (the task parser's, by dest) check each recorded value as its
    option would have: a hand-edited ``"lr": null`` is a clear error, not a crash later.
    Returns what was restored; nothing without a recorded run of this task."""
    if args.task == "judges":
        recorded, recorded_path, run_dir = _judges_record(args)
    else:
        if args.task == "vae":  # where `train vae` trains without --output-dir
            from ..shipped import training_root

            run_dir = Path(args.output_dir or training_root() / "vae")
        else:
            run_dir = Path(args.output_dir or Path("runs") / args.task)
        if not run_dir.exists():  # a typo would start a whole new run
            raise ValueError(f"--resume: there is no run in {run_dir} (no such folder): check "
                             "--output-dir, or leave --resume out to start a run there.")
        _refuse_resuming_a_finished_map(run_dir, args.task)
        recorded_path = run_dir / "config.json"
        if (run_dir / "checkpoints" / RUN_RECORD).is_file():
            # checkpoints moved back after a fresh start: their own run's record, not the fresh one's
            recorded_path = run_dir / "checkpoints" / RUN_RECORD
        try:
            recorded = json.loads(recorded_path.read_text())
        except (FileNotFoundError, NotADirectoryError):
            if args.task != "vae" and checkpoints(run_dir):
                raise ValueError(
                    f"--resume: {run_dir} holds checkpoints (the newest {checkpoints(run_dir)[-1].name}) "
                    f"but no {recorded_path.name}, the record of the run's options: resumed "
                    "with this command line alone, it would train on with the task's defaults "
                    "for every option not typed. Put the run's config.json back, or start a new "
                    "run without --resume.") from None
            if args.task != "vae":
                return {}
            recorded = {}  # a VAE killed before its first output: its checkpoints hold the record
        except (OSError, ValueError) as exc:
            raise ValueError(f"--resume: cannot read {recorded_path} ({exc}); repeat the run's "
                             "options on the command line and move that file away.") from exc
    if isinstance(recorded, dict) and "task" not in recorded and args.task == "vae":
        # a VAE folder's config.json is diffusers': the run's options are in its checkpoints
        recorded, recorded_path = _checkpoint_record(run_dir)
    if not isinstance(recorded, dict) or "task" not in recorded:
        return {}  # not a run record
    if recorded["task"] != args.task:
        raise ValueError(f"--resume: {run_dir} is a {recorded['task']} run, not "
                         f"{args.task}; resume it with `hjtranslate train {recorded['task']} "
                         "--resume`, or give this run its own --output-dir.")
    current = vars(args)
    skip = set(LAUNCH_OPTIONS)
    if recorded.get("deadline") is not None and not recorded.get("_time_budget_typed"):
        # records written before 2026-12-03 hold the budget their deadline left, not a typed one
        skip.add("time_budget")
    if recorded.get("_deadline_typed"):
        skip.discard("deadline")  # typed for the run (`--deadline 60`), not the preset's
    where = dict.fromkeys(IDENTITY_OPTIONS, recorded_path)
    if recorded.get("head") in (None, "") and "head" in explicit:
        # the task chose the head (mlp, or conditional by --mode): its checkpoints name it
        found = last_checkpoint_json(run_dir, "model/config.json")
        if found and isinstance(found[0].get("head"), str):
            recorded, where["head"] = {**recorded, "head": found[0]["head"]}, found[1]
    if any(recorded.get(k) in (None, "") for k in HEAD_SETTINGS if k in explicit):
        # left to the task's or fit's defaults when the run started: its checkpoints' map has
        # them (a typed --depth 5 went unchecked, and the record said 5 of a depth-3 map)
        found = last_checkpoint_json(run_dir, "model/config.json")
        kwargs = found[0].get("head_kwargs") if found else None
        if isinstance(kwargs, dict):
            for k in HEAD_SETTINGS:  # the typed ones only: the others stay as recorded
                if k in explicit and recorded.get(k) in (None, "") and kwargs.get(k) is not None:
                    recorded, where[k] = {**recorded, k: kwargs[k]}, found[1]
    for k in IDENTITY_OPTIONS:
        if k == "seed" and args.task in ("vae", "judges"):
            continue  # there it draws batches only; a finished model's own check names it
        unrecorded = recorded.get(k) in (None, "") and k != "vae"  # None: the shipped VAE
        if not unrecorded and actions and k in actions:
            try:  # a damaged record ("width": "wide") is replaced by the typed value
                _recorded_value(k, recorded.get(k), actions[k], recorded_path)
            except ValueError:
                unrecorded = True
        if k in explicit and k in current and not unrecorded and not _same_option(
                k, current[k], recorded[k]):
            flag = "--" + k.replace("_", "-")
            theirs = ("shipped VAE (models/vae)" if k == "vae" and recorded[k] is None
                      else recorded[k])
            what = _IDENTITY_WHAT.get(k, "head")
            # --init-from keeps a map's cost, data, mode and head: it serves only another VAE
            # of the same latent space (a decoder-only fine-tune)
            tune = (f", or fine-tune this map there with --init-from {run_dir} (where that VAE "
                    "shares its latent space: a --decoder-only fine-tune)" if k == "vae" else "")
            differs = (f"{flag} was not given when the run started" if current[k] is True
                       and recorded[k] is False else  # a flag: --no-warm-start, --decoder-only
                       f"{flag} {current[k]} differs from the run's {theirs}")
            raise ValueError(
                f"--resume: {differs} (recorded in {where[k]}); its checkpoints belong to that "
                f"{what}. Resume without {flag}, or start a new run in another --output-dir{tune}.")
    if "ema_decay" in explicit and "ema_decay" in recorded and recorded["ema_decay"] is None:
        # the checkpoints hold the average, or none: accelerate cannot load them across the change
        raise ValueError(
            f"--resume: --ema-decay {current.get('ema_decay')} turns weight averaging on, and the "
            f"run trained without it (recorded in {recorded_path}): its checkpoints hold no "
            f"average. Resume without --ema-decay, or fine-tune with averaging: --init-from "
            f"{run_dir} --ema-decay {current.get('ema_decay')} --output-dir NEW_FOLDER.")
    typed_init = current.get("init_from") if "init_from" in explicit else None
    if typed_init and not (isinstance(recorded.get("init_from"), str) and recorded["init_from"]
                           and Path(typed_init).expanduser().resolve()
                           == Path(recorded["init_from"]).expanduser().resolve()):
        raise ValueError(
            f"--resume continues the run in {run_dir} from its own checkpoints, and --init-from "
            "starts a new one from a trained map: together --init-from would be ignored. Drop "
            "--init-from to resume, or fine-tune in another --output-dir.")
    restored = {k: v for k, v in recorded.items()
                if k in current and k not in explicit and k not in skip and not k.startswith("_")}
    for k, v in restored.items():
        if actions and k in actions:
            restored[k] = _recorded_value(k, v, actions[k], recorded_path)
    changed = {k: v for k, v in restored.items() if current[k] != v}
    current.update(restored)
    if isinstance(recorded.get("_started_as"), str):  # the command the run started with
        args._started_as = recorded["_started_as"]
    args._recorded_num_processes = recorded.get("num_processes")
    _check_run_plugins(current, run_dir)
    if changed and os.environ.get("RANK", "0") == "0":
        print(f"--resume: as recorded in {recorded_path}: "
              + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())), file=sys.stderr)
    return restored


def _refuse_resuming_a_finished_map(run_dir: Path, task: str) -> None:
    """A map task's finished run whose checkpoints are gone: --resume would train a new map
    from step 0 over it (as `train vae` and `train judges` refuse to)."""
    if (task in ("vae", "judges") or checkpoints(run_dir) or (run_dir / "checkpoints-previous").is_dir()
            or not (run_dir / "map" / "config.json").is_file() or not (run_dir / "metrics.json").is_file()):
        return
    raise ValueError(
        f"--resume: {run_dir} holds a finished map and no checkpoint to resume ({run_dir / 'checkpoints'} "
        "is gone): resumed, a new map would train from step 0 over it. To train it further: "
        f"--init-from {run_dir} --output-dir NEW_FOLDER; to train a new map in its place: the "
        "same command without --resume.")


def _judges_record(args: argparse.Namespace) -> tuple[dict[str, Any], Path, Path]:
    """``train judges --resume``: the options recorded in the checkpoints of the judge that was
    in training (one folder per judge), else the training options a finished judge records (a
    run stopped before the next judge's first checkpoint); where, and in which folder."""
    from ..shipped import training_root

    root = Path(args.output_root) if args.output_root else training_root()
    if not root.exists():  # a typo would train both judges afresh
        raise ValueError(f"--resume: there are no judges in {root} (no such folder): check "
                         "--output-root, or leave --resume out to train judges there.")
    names = [n.strip() for n in str(getattr(args, "datasets", "") or "").split(",") if n.strip()]
    folders = [root / f"judge-{name}" for name in names or ("mnist", "fashion-mnist")]
    for folder in folders:
        recorded, where = _checkpoint_record(folder)
        if recorded:
            return recorded, where, folder
    for folder in folders:
        config = folder_config(folder)
        training = config.get("training")
        if isinstance(training, dict):
            return ({"task": "judges", **training, "_started_as": config.get("started_as")},
                    folder / "config.json", folder)
    return {}, root, root


def _check_run_plugins(options: dict[str, Any], run_dir: Path) -> None:
    """A resumed run's cost and head plugins are installed; else the error names the package
    its checkpoints record, as loading a saved map does."""
    from .. import registry

    for kind in ("cost", "head"):
        name = options.get(kind)
        if isinstance(name, str) and name and name not in registry.plugins(kind):
            found = last_checkpoint_json(run_dir, "model/config.json")
            packages = found[0].get("plugin_packages") if found else None
            package = packages.get(kind) if isinstance(packages, dict) else None
            why = registry.missing_plugin(kind, name, package, what="run")
            if why:
                raise registry.PluginError(f"--resume: {why}")


def _recorded_value(key: str, value: Any, action: argparse.Action, path: Path,
                    command: str = "--resume") -> Any:
    """``value``, as recorded for ``key`` in a run's config.json, as its option reads it; a clear
    error when the option could not have produced it."""
    flag = action.option_strings[0] if action.option_strings else key
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        ok = isinstance(value, bool)
    elif value is None:
        ok = action.default is None
    elif isinstance(value, (bool, dict, list)):
        ok = False
    elif action.type is None and isinstance(value, (int, float)):  # a hand-written "--lambda": 30
        value, ok = str(value), action.choices is None or str(value) in action.choices
    else:
        ok = action.type is not None or (isinstance(value, str) and value.strip() != "")
        if ok and action.type is not None:
            try:
                value = action.type(str(value))
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                ok = False
        ok = ok and (action.choices is None or value in action.choices)
    if ok and key == "seed" and isinstance(value, int) and not 0 <= value < 2**32:
        ok = False  # --seed refuses it typed (numpy's seed range)
    if not ok:
        again = "type {flag} again (it wins over the record), or " if command == "--resume" else ""
        raise ValueError(f"{command}: {path} records {key}={json.dumps(value)}, which {flag} cannot "
                         f"take; {again.format(flag=flag)}correct that entry.")
    return value


def require_at_least(args: argparse.Namespace, **minimums: int) -> None:
    """A clear error for the first option (``eval_n`` is ``--eval-n``) below its minimum."""
    for name, minimum in minimums.items():
        check_count(f"--{name.replace('_', '-')}", getattr(args, name), minimum)


def check_count(flag: str, value: int, low: int, high: int | None = None, why: str = "") -> None:
    """A clear error for a count outside ``[low, high]`` (``why`` explains the bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{flag} must be a whole number, got {value!r}.")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{flag} must be {bound}{why}, got {value}.")


def remove_path(path: Path) -> None:
    """Remove ``path``, a file, a link or a folder, where it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def output_dir(args: argparse.Namespace, task: str) -> Path:
    """The run folder, ``--output-dir`` or ``runs/TASK``: new, or a run of this same task."""
    out = Path(args.output_dir or Path("runs") / task)
    check_output_folder(out, "--output-dir", lambda cfg: cfg.get("task") == task, f"a {task} run",
                        task=task)
    return out


#: what a run or training writes in its folder before its config.json (a killed start)
RUN_BOOKKEEPING = ("checkpoints", "logs")


def check_output_folder(out: Path, flag: str, ours: Callable[[dict[str, Any]], bool],
                        what: str, task: str | None = None) -> None:
    """``out`` must be new, or hold what this command writes there (``ours(config)`` of its
    config.json): a run rewrites its config.json, README and map and removes old checkpoints, so
    another run's, a model's or a pipeline's folder would lose files or be mixed with ``what``."""
    check_folder_path(out, flag)
    new_folder = f"name a new folder with {flag}"
    if (out / INDEX_FILE).is_file():
        raise ValueError(f"{flag} {out} is a translation pipeline folder, which {what} would "
                         f"overwrite in part: {new_folder} (--export writes pipelines).")
    config = out / "config.json"
    if not config.is_file():
        # a run writes config.json first: a folder without one holds no run, and its files
        # (a map/ of notes, a README.md) would be removed or overwritten
        theirs = sorted(p.name for p in out.iterdir()
                        if not p.name.startswith(".") and p.name not in RUN_BOOKKEEPING
                        ) if out.is_dir() else []
        if theirs:
            shown = ", ".join(theirs[:4]) + (", ..." if len(theirs) > 4 else "")
            raise ValueError(f"{flag} {out} holds files but no config.json of {what} ({shown}), "
                             f"which it could overwrite or remove: {new_folder}, or an empty "
                             "one.")
        # `train vae` and `train judges` write theirs at the end: until then their checkpoints
        # say which command trains there (an interrupted run of another would be set aside)
        state = last_checkpoint_json(out, "trainer_state.json") if task else None
        extra = ((state[0].get("config") or {}).get("extra") or {}) if state else {}
        other = extra.get("task") if isinstance(extra, dict) else None
        if isinstance(other, str) and other != task:
            raise ValueError(f"{flag} {out} holds the checkpoints of an unfinished `hjtranslate "
                             f"train {other}` run, which {what} would set aside: {new_folder}, "
                             f"or continue that run (`hjtranslate train {other} --resume` with "
                             "its folder).")
        return
    try:
        recorded = json.loads(settings_text(config))
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        raise ValueError(f"{flag} {out} holds a config.json that is not a JSON object (another "
                         f"program's, or damaged), which {what} would overwrite: {new_folder}; "
                         "if it is a damaged run's, remove the folder first.")
    if ours(recorded):
        return
    if "task" in recorded:
        raise ValueError(f"{flag} {out} holds a {recorded['task']} run, which {what} would mix "
                         f"its files with: {new_folder}, or continue that run with `hjtranslate "
                         f"train {recorded['task']} --resume --output-dir {out}`.")
    kind = recorded.get("_class_name") or recorded.get("architecture") or "another model"
    raise ValueError(f"{flag} {out} holds a config.json that is not {what}'s ({kind}), which "
                     f"would be overwritten: {new_folder}.")


def refuse_to_replace(out: Path, flag: str, what: str, weights: str,
                      args: argparse.Namespace, further: str = "") -> None:
    """A run into a folder that holds a trained ``what`` (a readable ``weights`` file) and no
    checkpoint of a run in progress would train a new one over it from step 0 (``--resume``
    too, where this run never wrote a checkpoint), the shipped models by default: refused
    unless ``--overwrite``. ``flag`` is the option and the value that named ``out``."""
    from safetensors import SafetensorError, safe_open

    if getattr(args, "overwrite", False) or not (out / weights).is_file() or (
            getattr(args, "resume", False) and checkpoints(out)):
        return  # (a finished model kept with its checkpoints is replaced only on --overwrite)
    try:
        with safe_open(str(out / weights), "pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError):
        return  # damaged weights: nothing to keep
    raise ValueError(f"{flag} holds a trained {what} ({out}), which this run would replace "
                     f"by training a new one from step 0: name a new folder{further}, or pass "
                     "--overwrite to replace it.")


def cost_from_args(args: argparse.Namespace) -> Any:
    """The cost plugin named by ``--cost`` (with ``--p``)."""
    from .. import registry

    registry.resolve("cost", args.cost)  # an unknown name is its own error
    options = json_options(args, "cost_options")
    if args.p is not None:
        if "p" in options and options["p"] != args.p:
            raise ValueError(f"--p {args.p} and --cost-options p={options['p']} disagree: give "
                             "the exponent once.")
        options["p"] = args.p
    elif args.cost in ("pnorm", "lp") and "p" not in options:
        warnings.warn(f"--cost {args.cost} without --p uses its default exponent p = 2, which "
                      "the quadratic cost has too: give --p (e.g. --p 1.5 or --p 3) for another "
                      "cost.", stacklevel=2)
    try:
        return registry.create("cost", args.cost, **options)
    except registry.PluginOptionError as exc:
        if isinstance(exc, registry.PluginValueError):  # a value the plugin refused, not a name
            given = " and ".join(f for f, v in (("--p", args.p), ("--cost-options",
                                                                  getattr(args, "cost_options", None)))
                                 if v is not None)
            hint = (f"Check the values of {given}." if given else
                    f"Its defaults do not build it: the cost plugin {args.cost!r} is at fault.")
            raise registry.PluginOptionError(f"{str(exc).rstrip('.')}. {hint}") from None
        if args.p is None:
            hint = ("Check --cost-options against them." if getattr(args, "cost_options", None)
                    else "Give its options with --cost-options '{\"name\": value}'.")
            raise registry.PluginOptionError(f"{exc} {hint}") from None
        raise registry.PluginOptionError(f"{exc} Drop --p, or choose a cost that takes it "
                                         "(--cost pnorm or lp).") from None


def json_options(args: argparse.Namespace, dest: str) -> dict[str, Any]:
    """``--cost-options`` / ``--head-options``: a JSON object of a plugin's options."""
    text = getattr(args, dest, None)
    if text is None:
        return {}
    flag = "--" + dest.replace("_", "-")
    shown = text if len(text) <= 200 else text[:200] + "..."
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{flag} must be a JSON object, e.g. '{{\"scale\": 2}}'; got {shown!r} "
                         f"({exc}).") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object (name: value), got {shown!r}.")
    return value


def init_map_from_args(args: argparse.Namespace) -> HJMap | None:
    """The map ``--init-from`` names (None without it). A run or pipeline folder stands for
    the ``map/`` inside it."""
    source = getattr(args, "init_from", None)
    if source is None:
        return None
    if (Path(source) / "map" / "config.json").is_file():
        source = str(Path(source) / "map")
    elif "task" in folder_config(Path(source)):  # a run that has not saved its map
        from ..training import folder_holder

        holder = folder_holder(Path(source))
        state = (f"still running ({holder}): its map is written when it ends" if holder else
                 "stopped before its end: finish it with --resume")
        raise ValueError(f"--init-from {source} is a run that has not saved its map yet, "
                         f"{state}; or fine-tune from a finished run or a map folder.")
    return HJMap.from_pretrained(source)


def _fixed_lambda(args: argparse.Namespace) -> bool:
    """Whether --lambda is a number (a misspelt 'auto' is the option's own error, later)."""
    try:
        float(args.lambda_mmd)
    except (TypeError, ValueError):
        return False
    return True


# (option, the setting that turns it off, whether it is off): an option typed while the
# setting it belongs to is off would be accepted and do nothing. --fourier-scale where the
# task's own head has no Fourier features is refused in fit_from_args, which knows the data.
_INERT = (
    ("lambda_slack", "--lambda auto", _fixed_lambda),
    ("manifold_samples", "--manifold-weight > 0", lambda a: not a.manifold_weight),
    ("manifold_gradient", "--manifold-weight > 0", lambda a: not a.manifold_weight),
    ("semidual_side", "--semidual-weight > 0", lambda a: not a.semidual_weight),
    ("cycle_share", "--cycle-weight > 0", lambda a: not a.cycle_weight),
    ("monotone_directions", "--monotone-weight > 0", lambda a: not a.monotone_weight),
    ("fourier_scale", "--fourier-features > 0", lambda a: a.fourier_features == 0),
    ("quadratic_gain", "a quadratic part (not --quadratic none)", lambda a: a.quadratic == "none"),
    # a fine-tune starts from the trained map's weights: there is nothing to warm-start
    ("no_warm_start", "a run from scratch (not --init-from)",
     lambda a: getattr(a, "init_from", None) is not None and not getattr(a, "resume", False)),
    # train vae: a VAE started from --init-from keeps its architecture
    *((name, "a new VAE (--init-from keeps the trained VAE's)", lambda a: a.init_from is not None)
      for name in ("latent_channels", "latent_size", "widths")),
)


def check_inert_options(args: argparse.Namespace, typed: set[str] | None) -> None:
    """Refuse an option typed beside the setting that switches it off (as --sinkhorn-blur
    without --mmd sinkhorn is refused), rather than accept it and ignore it."""
    for name, applies, off in _INERT:
        if typed is not None and name in typed and hasattr(args, name) and off(args):
            raise ValueError(f"--{name.replace('_', '-')} applies with {applies}: as given it "
                             "would change nothing. Drop it, or turn on what it belongs to.")


def run_figures(result: dict[str, Any], t0: float) -> dict[str, Any]:
    """What every map task's metrics.json says of its training: this launch's wall time since
    ``t0`` (set-up included), the training loop's seconds over all launches of the run (a
    ``--resume`` counts the earlier ones), steps, processes, whether the ranks agree, and
    accelerate's mixed precision (``no``, ``bf16``: a launch option that changes the figures)."""
    return {"train_seconds": time.perf_counter() - t0,
            "train_loop_seconds_all_launches": result["seconds"], "steps": result["steps"],
            "num_processes": result["num_processes"], "ranks_in_sync": result["ranks_in_sync"],
            "mixed_precision": result["mixed_precision"]}


def fit_from_args(
    args: argparse.Namespace, xs: torch.Tensor, yt: torch.Tensor, task: str,
    labels: tuple[torch.Tensor, torch.Tensor] | None = None, outputs: tuple[str, ...] = (),
    **kwargs: Any,
) -> tuple[HJMap, dict[str, Any], Any]:
    """Train through accelerate (one or many processes) with the CLI options; ``kwargs`` go to
    ``fit`` (``time_budget`` replaces ``--time-budget`` there, config.json records the typed one).
    ``outputs``: the files the task writes beside the map, removed when the run starts so that
    they cannot pass for this run's."""
    cost = cost_from_args(args)
    if labels is None and args.head and getattr(args, "init_from", None) is None:
        from .. import registry

        if getattr(registry.resolve("head", args.head).obj, "conditional", False):
            raise ValueError(f"--head {args.head} is a class-conditional head, and the "
                             f"{task} task's samples have no classes: choose another --head "
                             "(digits-to-fashion trains a conditional one with --mode conditional).")
    # Options left unset keep the head's (or fit's) defaults; the heads take QUADRATIC_KINDS for
    # `quadratic` as given.
    head_kwargs = json_options(args, "head_options")
    given = {k: getattr(args, k) for k in HEAD_SETTINGS if getattr(args, k, None) is not None}
    for key in ("dim", "num_classes"):
        if key in head_kwargs:
            raise ValueError(f"--head-options {key}: the data sets it (the samples' dimension "
                             "and the classes); leave it out.")
    typed = getattr(args, "_typed", None)  # what the command line typed (cli.main sets it)
    typed_given = {k: v for k, v in given.items() if typed is None or k in typed}
    clash = sorted(k for k in typed_given if k in head_kwargs and head_kwargs[k] != given[k])
    if clash:
        raise ValueError(f"--head-options and --{clash[0].replace('_', '-')} disagree on "
                         f"{', '.join(clash)}: give each setting once.")
    # a task's own default (not typed) gives way to --head-options
    head_kwargs = {**{k: v for k, v in given.items() if k not in typed_given},
                   **head_kwargs, **typed_given}
    head_kwargs.update(kwargs.pop("head_kwargs", {}))
    if (typed is not None and "fourier_scale" in typed and args.head in (None, "mlp")
            and getattr(args, "init_from", None) is None):
        from ..api import default_head_kwargs

        features = head_kwargs.get("fourier_features", default_head_kwargs(
            xs.shape[1], getattr(cost, "name", "")).get("fourier_features", 0))
        if not features:  # the task's head has none here (e.g. above 2-D, or a p-norm cost)
            raise ValueError("--fourier-scale applies with --fourier-features > 0, and this "
                             "run's head has no Fourier features: as given it would change "
                             "nothing. Drop it, or add --fourier-features N.")
    mmd_options = {}
    if getattr(args, "sinkhorn_blur", None) is not None:
        if args.mmd != "sinkhorn":
            raise ValueError(f"--sinkhorn-blur applies to --mmd sinkhorn, not --mmd {args.mmd}.")
        real_number("--sinkhorn-blur", args.sinkhorn_blur)
        mmd_options["blur"] = args.sinkhorn_blur
    out = output_dir(args, task)
    acc = make_accelerator(report_to=getattr(args, "report_to", None), logging_dir=out / "logs")
    note_started_as(args)  # config.json records it: a resumed run's card shows it
    before = getattr(args, "_recorded_num_processes", None)
    if args.resume and isinstance(before, int) and before != acc.num_processes:
        acc.print(f"note: this run trained on {before} process(es) and goes on with "
                  f"{acc.num_processes}: a step now takes {acc.num_processes} x --batch-size "
                  f"{args.batch_size} samples per side (it took {before} x).", file=sys.stderr)

    def start_run() -> None:
        """Once fit has accepted every option: record them and take away a finished-looking
        map, so that a folder without a new map does not look complete."""
        out.mkdir(parents=True, exist_ok=True)
        keep_folder(out)  # train() holds it already; now until the outputs are written
        for name in ("map", "metrics.json", *outputs):  # the task's pictures of the run it replaces
            remove_path(out / name)
        # atomic: the other ranks of a resumed run read it (restore_recorded_options)
        write_json_atomically(out / "config.json", {
            "task": task, **recorded_options(args), "num_processes": acc.num_processes,
            "_time_budget_typed": True})
        (out / "checkpoints" / RUN_RECORD).unlink(missing_ok=True)  # config.json holds it now

    # The tasks make (n, d) samples themselves: fit's hint to transpose (d, n) data is for
    # Python callers, and its batch note names the option as the CLI does
    if args.batch_size > min(len(xs), len(yt)) and labels is None:
        warnings.warn(f"--batch-size {args.batch_size} is more than the training samples "
                      f"({len(xs)} source, {len(yt)} target): each batch draws "
                      f"{min(args.batch_size, len(xs))} and {min(args.batch_size, len(yt))} (with "
                      "repeats; a larger batch would only repeat points).", stacklevel=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no more samples than dimensions")
        warnings.filterwarnings("ignore", message="batch_size .* is more than the samples")
        m, result = fit(
            xs, yt, cost=cost, labels=labels, head=args.head, head_kwargs=head_kwargs or None,
            t_f=args.t_f, steps=args.steps, batch_size=args.batch_size,
            time_budget=kwargs.pop("time_budget", args.time_budget),
            lr=args.lr, lambda_mmd=args.lambda_mmd, lambda_slack=args.lambda_slack, mmd=args.mmd,
            mmd_options=mmd_options,
            backward_mmd=not args.no_backward_mmd, monotone_weight=args.monotone_weight,
            monotone_directions=args.monotone_directions, seed=args.seed,
            cycle_weight=args.cycle_weight, cycle_share=args.cycle_share,
            semidual_weight=args.semidual_weight, semidual_side=args.semidual_side,
            match_pool=args.match_pool, warm_start=not args.no_warm_start,
            ema_decay=args.ema_decay,
            output_dir=str(out), resume=args.resume, progress=not args.no_progress,
            accelerator=acc, return_history=True, on_start=start_run,
            init_from=kwargs.pop("init_from") if "init_from" in kwargs else init_map_from_args(args),
            **kwargs,
        )
    if getattr(args, "init_from", None):
        m.metrics["init_from"] = args.init_from
    m.metrics.update(run_commands(args, task))
    return m, result, acc


def staged_outputs(out: Path) -> Path:
    """A fresh hidden folder in ``out`` to write a model's files into before
    :func:`move_outputs` puts them in place: until then the folder keeps the earlier model whole
    (a kill while statistics, metrics or the card are computed leaves no mixture)."""
    stage = out / ".outputs.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def move_outputs(stage: Path, out: Path, weights: str) -> None:
    """Move every file of ``stage`` into ``out`` (renames within one folder: a moment, where
    writing them took the whole evaluation), then remove ``stage``. The earlier ``weights`` go
    first and the new ones come last, so a kill between two renames leaves a folder that does
    not load (and ``--resume`` finishes), never new settings beside old weights or the reverse."""
    shared_as_umask_says(stage)
    (out / weights).unlink(missing_ok=True)
    for f in sorted(stage.iterdir(), key=lambda f: (f.name == weights, f.name)):
        os.replace(f, out / f.name)
    stage.rmdir()


def write_outputs(out: Path, m: HJMap, metrics: dict[str, Any], acc: Any) -> None:
    """Save the final map and metrics (rank 0 only); the map folder appears complete or not
    at all (written to a temporary folder, then renamed)."""
    if not acc.is_main_process:
        return
    # The card of every saved map records how it was made.
    metrics.setdefault("command", m.metrics.get("command") or "hjtranslate " + shlex.join(sys.argv[1:]))
    if "resumed_with" in m.metrics:
        metrics.setdefault("resumed_with", m.metrics["resumed_with"])
    metrics.setdefault("date", time.strftime("%Y-%m-%d"))
    # (fit's own record, such as the MMD weight a fine-tune starts from, stays unless replaced)
    m.metrics = {**m.metrics, **{k: v for k, v in metrics.items()
                                 if isinstance(v, (int, float, str)) and v is not None}}
    tmp = out / "map.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    m.save_pretrained(tmp)  # its card names map/, where the rename leaves it (card_name)
    # an earlier run's metrics must not sit beside this map: gone first, the new ones written
    # whole (a kill in between leaves the map without metrics, which `evaluate` writes again)
    (out / "metrics.json").unlink(missing_ok=True)
    remove_path(out / "map")
    os.replace(tmp, out / "map")
    write_json_atomically(out / "metrics.json", metrics)
    print(f"Wrote {out / 'map'} and {out / 'metrics.json'}")


def draw_transport(ax: Any, x: torch.Tensor, y: torch.Tensor, pushed: torch.Tensor, title: str,
                   n_lines: int = 300) -> None:
    """Source, target, pushed samples and straight transport segments on a matplotlib axis."""
    from matplotlib.collections import LineCollection

    x, y, pushed = (v.detach().cpu() for v in (x, y, pushed))  # a map may sit on a GPU
    k = min(n_lines, len(x))
    segs = torch.stack([x[:k], pushed[:k]], 1).numpy()
    ax.add_collection(LineCollection(segs, colors="0.6", linewidths=0.5, alpha=0.6))
    ax.scatter(*x.T.numpy(), s=2, c="tab:blue", alpha=0.4, label="source")
    ax.scatter(*y.T.numpy(), s=2, c="tab:orange", alpha=0.4, label="target")
    ax.scatter(*pushed.T.numpy(), s=2, c="tab:green", alpha=0.4, label="T(source)")
    ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title)
    ax.set_aspect("equal")


def plot_2d(path: Path, x: torch.Tensor, y: torch.Tensor, pushed: torch.Tensor, title: str,
            n_lines: int = 300) -> None:
    """:func:`draw_transport` alone in a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    draw_transport(ax, x, y, pushed, title, n_lines)
    fig.tight_layout()
    with written_whole(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


_REDO_RUN = "Restore it from a copy, or train (or export) again."


def evaluate_folder(args: argparse.Namespace) -> dict[str, Any]:
    """``hjtranslate evaluate FOLDER``: re-run a task's evaluation from its saved config."""
    folder = Path(args.folder)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else missing_reason(folder)
        hub = (" evaluate reads local folders: for a Hub repo, download it first (`hf download "
               f"{args.folder} --local-dir DIR`)." if not folder.exists()
               and str(args.folder).count("/") == 1 and not str(args.folder).startswith((".", "/", "~"))
               else "")
        raise FileNotFoundError(f"{folder} {what}: pass the output folder of `hjtranslate train` "
                                "or a translation pipeline folder (e.g. models/digits-to-fashion)."
                                f"{hub}")
    if (folder / INDEX_FILE).is_file():
        return _evaluate_pipeline(folder, args)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing: pass the output folder of `hjtranslate train`.")
    cfg = read_json_object(cfg_path, _REDO_RUN)
    if "task" not in cfg and (folder.parent / INDEX_FILE).is_file() and describes_a_map(cfg):
        return _evaluate_pipeline(folder.parent, args)  # the map folder of a pipeline
    if (folder.parent / INDEX_FILE).is_file():  # its VAE's or a judge's folder
        raise ValueError(f"{args.folder} is the {folder.name} part of the translation pipeline "
                         f"{folder.parent}, not a map: evaluate the pipeline "
                         f"(`hjtranslate evaluate {folder.parent}`).")
    if "task" not in cfg and (folder.parent / "config.json").is_file():
        folder = folder.parent  # the map folder of a run: its run's config says which task
        cfg_path = folder / "config.json"
        cfg = read_json_object(cfg_path, _REDO_RUN)
    if "task" in cfg and not (folder / "map").is_dir():
        from ..training import folder_holder

        holder = folder_holder(folder)
        if holder:
            raise FileNotFoundError(f"{folder} is in use by a running hjtranslate process "
                                    f"({holder}): its map is written when the run ends; "
                                    "evaluate it then.")
        redo = (f"`hjtranslate train {cfg['task']} --output-dir {folder} --resume` trains it on to "
                "its --steps from the last checkpoint and writes it (add --steps N to stop "
                "sooner)." if checkpoints(folder) else _REDO_RUN)
        raise FileNotFoundError(f"{folder / 'map'} is missing: the {cfg['task']} run in {folder} "
                                f"has no saved map (unfinished, or moved away). {redo}")
    if "task" not in cfg and (cfg.get("_class_name") == "AutoencoderKL" or "dataset" in cfg):
        what = "VAE" if cfg.get("_class_name") == "AutoencoderKL" else "judge"
        raise ValueError(
            f"{args.folder} holds a {what} (`hjtranslate train {what.lower()}"
            f"{'s' if what == 'judge' else ''}`), not a map: its test figures are in its "
            "README.md, written when it was trained. `evaluate` reads a map's run or pipeline "
            "folder.")
    if "task" not in cfg:
        raise ValueError(
            f"{args.folder} is not the output folder of `hjtranslate train` (its config.json and "
            "map/ say which task and data the map was trained on), the map folder inside one, nor a "
            "translation pipeline folder (e.g. models/digits-to-fashion). A map alone loads with "
            "HJMap.from_pretrained; to evaluate it, pass the run or pipeline folder it belongs to."
        )
    return _evaluate(cfg, folder / "map", args, cfg_path)


def _evaluate_pipeline(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A translation pipeline folder (``save_pretrained`` of digits-to-fashion, e.g. the shipped
    ``models/digits-to-fashion``): its map through its own VAE and judges, on the test sets."""
    spec = read_json_object(folder / INDEX_FILE, _REDO_RUN)
    if (spec.get("source_dataset"), spec.get("target_dataset")) != ("mnist", "fashion-mnist"):
        raise ValueError(f"{folder} translates {spec.get('source_dataset')!r} to "
                         f"{spec.get('target_dataset')!r}; `evaluate` knows only digits-to-fashion.")
    if spec.get("encoder", "vae") != "vae":
        raise ValueError(f"{folder} encodes with the {spec.get('encoder')!r} encoder plugin; "
                         "`evaluate` scores pipelines built on a VAE (digits-to-fashion) only.")
    from ..pipeline import _subpath

    cfg = {"task": "digits-to-fashion", "data_dir": None,
           "vae": str(_subpath(folder, spec["vae"], "vae")) if spec.get("vae") else None,
           **{k: str(_subpath(folder, spec[k], k)) for k in ("judge_source", "judge_target")
              if spec.get(k)}}
    return _evaluate(cfg, _subpath(folder, spec.get("map", "map"), "map"), args, folder / INDEX_FILE)


def _evaluate(cfg: dict[str, Any], map_dir: Path, args: argparse.Namespace,
              cfg_path: Path) -> dict[str, Any]:
    from . import load_task

    if getattr(args, "data_dir", None):
        if "data_dir" not in cfg:
            raise ValueError(f"--data-dir: task {cfg.get('task')!r} reads no dataset folder.")
        cfg["data_dir"] = args.data_dir
    if getattr(args, "vae", None):
        if "vae" not in cfg:
            raise ValueError(f"--vae: task {cfg.get('task')!r} does not decode through a VAE.")
        cfg["vae"] = args.vae
    task = load_task(cfg["task"])
    if not hasattr(task, "evaluate"):
        raise ValueError(f"Task {cfg['task']!r} has no stand-alone evaluation.")
    if cfg_path.name == "config.json":  # a run's record, perhaps edited: read as its options would
        parser = argparse.ArgumentParser(add_help=False)
        task.add_arguments(parser)
        actions = {a.dest: a for a in parser._actions}
        cfg = {k: _recorded_value(k, v, actions[k], cfg_path, "evaluate")
               if k in actions and k != "eval_n" else v  # eval_n: checked below, --n replaces it
               for k, v in cfg.items()}
    m = HJMap.from_pretrained(map_dir)
    if isinstance(cfg.get("dim"), int) and cfg["dim"] != m.dim:
        raise ValueError(f"evaluate: {cfg_path} records dim={cfg['dim']}, and its map {map_dir} is "
                         f"{m.dim}-dimensional: one of them was edited or replaced. {_REDO_RUN}")
    t0 = time.perf_counter()
    try:
        # no --n: as many samples as the run evaluated on when it trained, else the task's default
        n = args.n if args.n is not None else cfg.get("eval_n")
        if args.n is None and n is not None and (isinstance(n, bool) or not isinstance(n, int)):
            raise ValueError(f"{cfg_path} records eval_n {n!r}, not a whole number (edited?): "
                             "pass --n, or set it right there.")
        metrics = task.evaluate(m, argparse.Namespace(**cfg), **({} if n is None else {"n": n}))
    except AttributeError as exc:
        if not isinstance(exc.obj, argparse.Namespace):
            raise
        raise ValueError(f"{cfg_path} lacks {exc.name!r}, which the {cfg['task']} evaluation "
                         f"needs. {_REDO_RUN}") from None
    metrics["eval_seconds"] = time.perf_counter() - t0
    return metrics
