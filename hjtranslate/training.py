"""One accelerate training loop for every task.

The model passed in computes its whole objective in ``forward(**batch)`` and returns a dict
with ``"loss"`` plus scalar terms to log. Checkpoints (``accelerate`` state: safetensors weights,
optimizer, step) are written to a temporary folder and renamed into place, so a kill never leaves
a half-written checkpoint; ``resume=True`` continues from the latest one.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checks import (
    folder_config,
    is_real,
    process_alive,
    process_start,
    real_number,
    scalar,
    shared_as_umask_says,
    whole_number,
)
from .registry import _outside_package
from .stopping import Terminated


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, misconfigured launch); the message says why."""


@dataclass
class TrainConfig:
    steps: int = 2000
    time_budget: float | None = None  # seconds; stops early, all ranks together
    lr: float = 1e-3
    lr_final: float = 1e-5  # cosine decay to this learning rate
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    output_dir: str | None = None
    checkpoint_every: int = 500
    #: also checkpoint after this much training time (seconds; 0 = by steps only), so that a
    #: run stopped by its time budget long before ``steps`` still has checkpoints to resume
    checkpoint_seconds: float = 600.0
    keep_checkpoints: int = 2
    resume: bool = False
    log_every: int = 10
    progress: bool = True
    ema_decay: float | None = None  # Polyak averaging of the weights (e.g. 0.999 for long runs)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps = whole_number("steps", self.steps, 1)
        self.seed = whole_number("seed", self.seed, 0, 2**32 - 1)  # numpy's seed range
        self.checkpoint_every = whole_number("checkpoint_every", self.checkpoint_every, 0)
        self.time_budget = scalar(self.time_budget)
        if self.time_budget is not None and not (is_real(self.time_budget) and self.time_budget > 0):
            raise ValueError(f"time_budget must be a positive number of seconds (or None: no "
                             f"budget; on the command line, leave --time-budget out), got "
                             f"{self.time_budget!r}.")
        self.lr = real_number("lr", self.lr)
        self.ema_decay = scalar(self.ema_decay)
        if self.ema_decay is not None and not (is_real(self.ema_decay) and 0 < self.ema_decay < 1):
            raise ValueError(f"ema_decay must lie strictly between 0 and 1 (e.g. 0.999), or be None "
                             f"for no averaging; got {self.ema_decay!r}.")


def _tracked_config(config: TrainConfig, out: Path | None) -> dict[str, Any]:
    """The run's settings as a tracker's hyperparameters (numbers, strings and booleans): the
    training loop's, and the task's options its run record (config.json) holds."""
    flat = {k: v for k, v in asdict(config).items() if k != "extra"}
    flat.update({f"extra/{k}": v for k, v in config.extra.items()})
    record = folder_config(out) if out is not None else {}
    flat.update({k: v for k, v in record.items() if not k.startswith("_") and k not in flat})
    return {k: v for k, v in flat.items() if isinstance(v, (bool, int, float, str))}


def finish_run(acc: Any) -> None:
    """End a run on every rank together: wait until all ranks (rank 0 evaluates and writes while
    the others idle) are done, then destroy the process group. A rank that tears its gloo group
    down and exits while a peer still holds it can abort with "terminate called without an
    active exception" (seen in CI)."""
    acc.wait_for_everyone()
    acc.end_training()


def check_tracker(report_to: str | None) -> str | None:
    """``--report-to``: an accelerate tracker whose package is installed, or None (``none``
    turns a recorded one off on ``--resume``). Checked before any data is read."""
    if report_to is None or str(report_to).lower() == "none":
        return None
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    known = sorted(t.value for t in LoggerType)
    if report_to not in known:
        raise ValueError(f"--report-to {report_to}: accelerate knows {', '.join(known)} (or none).")
    available = [str(getattr(t, "value", t)) for t in get_available_trackers()]
    if report_to == "all" and not available or report_to != "all" and report_to not in available:
        package = "tensorboard" if report_to == "all" else report_to
        raise ValueError(f"--report-to {report_to}: its package is not installed (pip install "
                         f"{package}), or leave the option out (--report-to none on a --resume).")
    return report_to


def make_accelerator(cpu: bool | None = None, report_to: str | None = None,
                     logging_dir: str | Path | None = None, **kwargs: Any) -> Any:
    """An ``Accelerator`` that also gives several gloo processes on a CPU-only machine, and
    refuses a launch that would silently train the same model several times. ``report_to``:
    an accelerate tracker (``tensorboard``, ``wandb``, ... or ``all``) that ``train`` logs the
    curves to, under ``logging_dir``."""
    from accelerate import Accelerator

    if cpu is None:
        cpu = not torch.cuda.is_available()
    report_to = check_tracker(report_to)
    if report_to:
        kwargs.update(log_with=report_to, project_dir=str(logging_dir or "logs"))
    acc = Accelerator(cpu=cpu, **kwargs)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and acc.num_processes == 1:
        raise TrainingError(
            f"WORLD_SIZE={world} but accelerate sees one process: every process would train "
            "alone and duplicate the work. Launch with `accelerate launch --multi_gpu "
            "--num_processes N ...` (on a CPU machine hjtranslate builds Accelerator(cpu=True), "
            "which makes that use gloo)."
        )
    check_accelerator(acc, stacklevel=3)
    return acc


def check_accelerator(acc: Any, stacklevel: int = 2) -> None:
    """Refuse the accelerate settings the loop does not follow, and warn of those that do
    nothing here: every Accelerator ``train`` uses is checked, a caller's own too (once)."""
    if getattr(acc, "_hjtranslate_checked", False):
        return
    if acc.gradient_accumulation_steps > 1:
        # accelerate's optimizer would step every N batches, while --steps, the learning-rate
        # schedule, the weight average and the MMD weight's updates count every batch (a
        # caller's Accelerator(gradient_accumulation_steps=4) left a 3-step fit untrained)
        raise TrainingError(
            f"accelerate asks for gradient accumulation over {acc.gradient_accumulation_steps} "
            "steps (Accelerator(gradient_accumulation_steps=...), ACCELERATE_GRADIENT_ACCUMULATION"
            "_STEPS or a config file), which hjtranslate's training does not follow: --steps, the "
            "learning-rate schedule and the MMD weight would count micro-batches. Give a larger "
            "batch size instead, and leave accumulation off.")
    if precision_that_runs(acc) != acc.mixed_precision:
        warnings.warn("fp16 mixed precision does nothing on a CPU (accelerate trains in float32 "
                      "there): use --mixed_precision bf16, or leave it off.", UserWarning,
                      stacklevel=stacklevel)
    acc._hjtranslate_checked = True


def precision_that_runs(acc: Any) -> str:
    """accelerate's mixed precision as it trains: fp16 asked on a CPU runs in float32 ("no")."""
    return "no" if acc.mixed_precision == "fp16" and acc.device.type == "cpu" else str(acc.mixed_precision)


#: run folders this process holds (open, locked files): a command holds its run folder until it
#: ends, since it goes on writing outputs after training; ``train`` alone, until it returns
_held: dict[Path, Any] = {}
_kept: set[Path] = set()
LOCK_FILE = ".hjtranslate.lock"
#: a run's config.json, kept with its checkpoints when a fresh start moves them aside
RUN_RECORD = "run-config.json"


def lock_folder(out: Path) -> bool:
    """Hold ``out`` for this process: a second run started in the same folder (which would move
    this one's checkpoints aside and mix its files with them) is refused while this one holds
    it. An advisory ``flock``, released by :func:`release_folder` or by the system when the
    process ends, however it ends. Returns whether this call took it (False: already held)."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        return False
    key = out.resolve()
    if key in _held:
        return False
    try:
        out.mkdir(parents=True, exist_ok=True)
        open(key / LOCK_FILE, "a+").close()
    except OSError as exc:  # read-only, no permission, ...
        raise TrainingError(f"Cannot write in {out} ({exc.strerror or exc}): name an output "
                            "folder this process can write to.") from None
    while True:
        handle = open(key / LOCK_FILE, "a+")  # noqa: SIM115 - held open while the folder is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip().partition(" started ")[0] or "another process"
            handle.close()
            raise TrainingError(f"{out} is in use by a running hjtranslate process ({holder}): "
                                "wait for it to end, or name another output folder.") from None
        try:  # the file locked is still the one in the folder (not unlinked by its last holder)
            if os.fstat(handle.fileno()).st_ino == os.stat(key / LOCK_FILE).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    started = process_start(os.getpid())
    handle.write(f"pid {os.getpid()}" + (f" started {started}" if started else ""))
    handle.flush()
    _held[key] = handle
    return True


def folder_holder(out: Path) -> str | None:
    """Who holds ``out`` (``"pid N"``) while a run trains or writes there; None when no one.
    Read from the lock file without locking it (a probe could make a run starting that moment
    find the folder busy): a holder's file names its live process; a killed one's names a dead
    one (the system released its lock), or one started since with the same pid."""
    try:
        text = (Path(out) / LOCK_FILE).read_text().strip()
        pid_text, _, started = text.removeprefix("pid ").partition(" started ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if not process_alive(pid) or started and process_start(pid) not in (None, started):
        return None
    return f"pid {pid}"


def keep_folder(out: Path) -> None:
    """Hold ``out`` until the process ends (a command that writes outputs after training)."""
    lock_folder(out)
    _kept.add(out.resolve())


def release_folder(out: Path) -> None:
    """Let ``out`` go (the lock file goes too, so a finished run leaves no trace of it)."""
    key = out.resolve()
    _kept.discard(key)
    handle = _held.pop(key, None)
    if handle is not None:
        try:
            (key / LOCK_FILE).unlink(missing_ok=True)
        except OSError:  # the folder turned read-only: the lock file stays (an error says why)
            pass
        handle.close()  # closing the file releases its flock


@atexit.register
def release_all() -> None:
    """Let every held folder go (a command's end; the process's at the latest)."""
    for key in list(_held):
        release_folder(key)


def _checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The finished checkpoints of a run folder, oldest first."""
    return _checkpoints(Path(output_dir) / "checkpoints")


def last_checkpoint_json(output_dir: str | Path, name: str) -> tuple[dict[str, Any], Path] | None:
    """The JSON object in ``name`` (``trainer_state.json``, ``model/config.json``) of the newest
    checkpoint where it reads as one, and its path; None when no checkpoint has it (a damaged
    one is passed over, as resuming passes over it)."""
    for last in reversed(checkpoints(output_dir)):
        try:
            value = json.loads((last / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            return value, last / name
    return None


def trained_seconds(output_dir: str | Path) -> float:
    """The training seconds the run in ``output_dir`` has behind it (its last checkpoint's)."""
    found = last_checkpoint_json(output_dir, "trainer_state.json")
    try:
        return float(found[0].get("seconds", 0.0)) if found else 0.0
    except (TypeError, ValueError):
        return 0.0


def _set_aside_failed_checkpoint(out: Path | None, step: int, start_step: int, main: bool) -> str:
    """The checkpoint words of a non-finite loss at ``step``. A checkpoint of that very step that
    this launch's updates made holds the weights that gave the loss (after a huge update, say):
    resuming from it would fail the same way, so it is set aside (kept, under another name, not
    read by --resume), and --resume continues from the one before it where there is one. The
    checkpoint a launch resumed from (``start_step``) stays: its options may be the cause."""
    found = checkpoints(out) if out is not None else []
    if not found or found[-1].name != f"step-{step:07d}" or step <= start_step:
        return f" The last good checkpoint is kept: {found[-1]}." if found else ""
    failed = found[-1].with_name(f"nonfinite-{found[-1].name}")
    if main:
        shutil.rmtree(failed, ignore_errors=True)  # one of an earlier failure at this step
        try:
            found[-1].rename(failed)
        except OSError as exc:  # read-only now, say: name it, and let --resume meet it
            return (f" The checkpoint of step {step} holds the weights that gave it and could not "
                    f"be set aside ({exc.strerror or exc}): move {found[-1]} away before --resume.")
    before = found[:-1]
    return (f" The checkpoint of step {step} holds the weights that gave it, so it is set aside "
            f"as {failed}; " + (f"--resume continues from {before[-1]}." if before else
                                "no earlier checkpoint is left: train again without --resume."))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def train(
    model: nn.Module,
    batch_fn: Callable[[int, int], dict[str, Any]],
    config: TrainConfig,
    accelerator: Any = None,
    after_step: Callable[[nn.Module, dict[str, float]], None] | None = None,
    save_fn: Callable[[nn.Module, Path], None] | None = None,
    parameters: list[nn.Parameter] | None = None,
    on_start: Callable[[], None] | None = None,
    keep_lock: bool = False,
) -> dict[str, Any]:
    """Train ``model`` for ``config.steps`` steps.

    ``batch_fn(step, rank)`` returns the keyword arguments of ``model.forward`` for this step
    and process (seeded by step and rank, so a resumed run sees the batches it would have seen).
    ``after_step(model, logs)`` runs on every rank with all-reduced logs (e.g. to adapt lambda).
    ``save_fn(model, folder)`` writes a loadable model (``save_pretrained``) beside each checkpoint.
    ``on_start()`` runs on the main process before the first step, once every argument is checked
    and any checkpoint loaded (task runs write their config.json there).
    The output folder is held (:func:`lock_folder`) while it trains, and with ``keep_lock``
    until the process (or the command, :func:`release_all`) ends.
    """
    acc = accelerator or make_accelerator()
    check_accelerator(acc, stacklevel=3)
    out = Path(config.output_dir) if config.output_dir else None
    locked, refused = False, None
    if out is not None and acc.is_main_process:
        try:
            locked = lock_folder(out)
        except TrainingError as exc:
            refused = exc
    if out is not None and acc.num_processes > 1:  # every rank stops, not only the main one
        flag = acc.reduce(torch.tensor([1.0 if refused else 0.0], device=acc.device), "sum")
        if float(flag) > 0 and refused is None:
            raise TrainingError(f"The main process could not hold {out} (see its message).")
    if refused is not None:
        raise refused
    if locked and keep_lock:
        _kept.add(out.resolve())
    try:
        return _train(model, batch_fn, config, acc, after_step, save_fn, parameters, on_start, out)
    finally:
        if locked and out.resolve() not in _kept:  # not kept by a command that writes more
            release_folder(out)


def _set_aside_earlier_checkpoints(out: Path | None, resume: bool, acc: Any
                                   ) -> tuple[Path | None, Path | None]:
    """Before training in ``out``: clear half-written checkpoints, and move an earlier run's
    checkpoints aside for a fresh start (they would outrank this run's). Returns ``previous``
    (checkpoints set aside, removed at this run's first regular checkpoint) and
    ``previous_at_end`` (the run before a fresh start that a resume continues: removed when
    this run finishes)."""
    previous = previous_at_end = None
    if out is not None and acc.is_main_process and (out / "checkpoints").is_dir():
        for stale in (out / "checkpoints").glob("step-*.tmp"):  # a kill during a checkpoint
            shutil.rmtree(stale, ignore_errors=True)
    if resume and out is not None and acc.is_main_process and (
            out / "checkpoints-previous").is_dir():
        # a fresh start moved them aside and was stopped before it could remove them: they are
        # the run before it. Resuming that fresh start's own checkpoints (the stop may have been
        # meant to undo it: say so) removes them once it finishes; with none, they stay
        if checkpoints(out):
            previous_at_end = out / "checkpoints-previous"
        else:
            warnings.warn(f"{out / 'checkpoints-previous'} holds the checkpoints of the run "
                          "before the last fresh start here. To resume that run instead (its "
                          f"options come back with it): rm -r {out / 'checkpoints'} && mv "
                          f"{out / 'checkpoints-previous'} {out / 'checkpoints'}, then --resume; "
                          "or delete it.", stacklevel=_outside_package())
    if not resume and out is not None and acc.is_main_process and checkpoints(out):
        # A fresh run in the folder of an earlier one replaces it: the old checkpoints would
        # outrank this run's own (they are pruned by step) and a later --resume would pick them.
        # They move aside, and go once this run has a checkpoint of its own. The run's record
        # goes with them: this run writes its own config.json, and moved back, the checkpoints
        # must resume with the options they were trained with (restore_recorded_options).
        previous = out / "checkpoints-previous"
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(out / "checkpoints", previous)
        if "task" in folder_config(out):  # a VAE folder's is diffusers' config
            shutil.copy2(out / "config.json", previous / RUN_RECORD)
        acc.print(f"Starting afresh (no --resume): the earlier run's checkpoints moved to "
                  f"{previous}, removed once this run writes its first regular checkpoint (not "
                  "one written on stopping it).")
    elif not resume and out is not None and (out / "checkpoints-previous").is_dir():
        previous = out / "checkpoints-previous"  # left by a fresh start stopped before its first
    return previous, previous_at_end


def _resume_from_checkpoints(acc: Any, out: Path, config: TrainConfig,
                             previous_at_end: Path | None) -> tuple[int, list[dict[str, float]], float]:
    """``--resume``: load the newest checkpoint in ``out`` that loads (a damaged one falls back
    to the one before it). Returns the step, the logged history and the training seconds
    spent so far (0, [], 0.0 with none)."""
    start_step, history, spent = 0, [], 0.0
    found = checkpoints(out)
    if not found and acc.is_main_process:
        warnings.warn(f"--resume: no checkpoint in {out / 'checkpoints'}; starting afresh.",
                      stacklevel=_outside_package())
    # Checkpoints are written atomically, but a disk can still damage one: fall back to
    # the one before it rather than lose the run.
    for last in reversed(found):
        try:
            state = json.loads((last / "trainer_state.json").read_text())
            start_step, history = int(state["step"]), state.get("history", [])
            spent = float(state.get("seconds", 0.0))
            acc.load_state(str(last))
        except Exception as exc:  # torch, safetensors, accelerate and json each raise their own
            acc.print(f"--resume: cannot load the checkpoint {last} ({type(exc).__name__}: "
                      f"{exc}); trying the one before it.")
            continue
        acc.print(f"Resuming from {last} (step {start_step}).")
        if previous_at_end is not None:
            acc.print(f"{previous_at_end} holds the run before the last fresh start here: "
                      "it is removed when this run finishes. To resume that run instead, "
                      f"stop now: rm -r {out / 'checkpoints'} && mv {previous_at_end} "
                      f"{out / 'checkpoints'}, then --resume.")
        if start_step >= config.steps:
            acc.print(f"The checkpoint is at step {start_step}, not before --steps "
                      f"{config.steps}: no further training (raise --steps to train longer).")
        break
    else:
        if found:
            raise TrainingError(
                f"--resume: none of the {len(found)} checkpoints in {out / 'checkpoints'} "
                "can be loaded (the reasons are above). If this launch's options differ from "
                "the run's (the head, --ema-decay, ...), launch with the run's own; if the "
                "checkpoints are damaged, move that folder away and train without --resume.")
    return start_step, history, spent


def _train(model, batch_fn, config, acc, after_step, save_fn, parameters, on_start,
           out: Path | None) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    set_seed(config.seed)
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(progress: float) -> float:
        # Cosine decay over the run; progress counts steps or, with a time budget, time too.
        cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        final = min(config.lr_final, config.lr)  # a run asked for a smaller lr never rises above it
        return final + (config.lr - final) * cos

    model, opt = acc.prepare(model, opt)
    inner = acc.unwrap_model(model)
    ema = WeightAverage(params, config.ema_decay) if config.ema_decay else None
    if ema is not None:
        acc.register_for_checkpointing(ema)

    start_step = 0
    spent = 0.0  # training seconds of earlier launches of this run (a resumed time budget)
    history: list[dict[str, float]] = []
    previous, previous_at_end = _set_aside_earlier_checkpoints(out, config.resume, acc)
    if config.resume and out is not None:
        start_step, history, spent = _resume_from_checkpoints(acc, out, config, previous_at_end)
    if on_start is not None and acc.is_main_process:
        on_start()

    def checkpoint(step: int, stopping: bool = False) -> None:
        root = out / "checkpoints"
        final = root / f"step-{step:07d}"
        tmp = root / f"step-{step:07d}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        # Every rank writes its RNG state into tmp: rename only once all have finished.
        acc.wait_for_everyone()
        if acc.is_main_process:
            if save_fn is not None:
                save_fn(inner, tmp / "model")
            (tmp / "trainer_state.json").write_text(json.dumps(
                {"step": step, "seconds": clock, "history": history, "config": asdict(config)},
                default=str))
            shared_as_umask_says(tmp, recursive=True)  # another user's --resume reads them
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in _checkpoints(root)[: -config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            if previous is not None and not stopping:  # a stopped fresh start may be a mistake
                shutil.rmtree(previous, ignore_errors=True)
        acc.wait_for_everyone()

    bar = tqdm(
        total=config.steps, initial=start_step, disable=not (config.progress and acc.is_main_process),
        dynamic_ncols=True, desc="train",
    )
    if acc.log_with and not acc.trackers:  # --report-to (a caller's own trackers stay its own)
        name = Path(config.output_dir).resolve().name if config.output_dir else "hjtranslate"
        run_logs = Path(acc.logging_dir or ".") / name
        if (previous is not None and acc.is_main_process and run_logs.is_dir()
                and out is not None and run_logs.resolve().is_relative_to(out.resolve())
                and run_logs.resolve() != out.resolve()):
            # this fresh start replaces a run here: its curves would mix with this run's
            shutil.rmtree(run_logs)
        acc.init_trackers(name, config=_tracked_config(config, out))
    t0 = time.perf_counter()
    step = start_step
    logs: dict[str, float] = {}
    clock = spent  # training seconds of the run so far, the same on every rank
    saved_at, saved_step = clock, (start_step if start_step else None)
    model.train()
    spent_out = config.time_budget is not None and spent >= config.time_budget
    if spent_out and step < config.steps:
        acc.print(f"The time budget of {config.time_budget:.0f} s was spent before this launch "
                  f"(at step {step}): no further training (raise --time-budget to train longer).")
    stop = _StopRequest()
    warned_grace, step_started = False, None
    try:
        while step < config.steps and not spent_out:
            batch = batch_fn(step, acc.process_index)
            batch = {k: (v.to(acc.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            with acc.accumulate(model):
                terms = model(**batch)
                loss = terms["loss"]
                # One all-reduce carries the logs, a non-finite flag and the time-budget decision.
                names = sorted(k for k, v in terms.items() if torch.is_tensor(v) and v.numel() == 1)
                vec = torch.stack([terms[k].detach().double().reshape(()) for k in names])
                elapsed = time.perf_counter() - t0
                flags = torch.tensor([float(stop.requested), 0.0 if torch.isfinite(loss) else 1.0,
                                      elapsed], dtype=torch.float64, device=vec.device)
                packed = acc.reduce(torch.cat([vec, flags]).to(acc.device), reduction="sum")
                packed = packed.cpu()
                nproc = acc.num_processes
                # Every rank derives the same schedule and stop decision from the reduced clock.
                clock = spent + float(packed[-1]) / nproc
                stopping = bool(packed[-3] > 0)  # Ctrl-C or SIGTERM on any rank
                progress = step / config.steps
                if config.time_budget is not None:
                    progress = max(progress, clock / config.time_budget)
                for group in opt.param_groups:
                    group["lr"] = lr_at(progress)
                if packed[-2] > 0:
                    bar.close()
                    keep = _set_aside_failed_checkpoint(out, step, start_step, acc.is_main_process)
                    # before any update of this launch the learning rate cannot be the cause
                    remedy = ("Lower the learning rate (--lr), or check the data and the loss weights."
                              if step > start_step else
                              "No update has been made yet, so the learning rate is not the cause: "
                              "check the data, the loss weights, and the cost and head (a plugin's "
                              "own code) on these samples." if step == 0 else
                              "This launch has made no update yet, so its learning rate is not the "
                              "cause: check the options given with --resume (a loss weight, say), "
                              "the data, and the cost and head on these samples.")
                    raise TrainingError(
                        f"The loss became NaN/Inf at step {step} "
                        f"({', '.join(f'{k}={float(terms[k].detach()):.4g}' for k in names)}).{keep} "
                        f"{remedy}"
                    )
                logs = {k: float(packed[i]) / nproc for i, k in enumerate(names)}
                acc.backward(loss)
                if config.grad_clip and acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update()
            if after_step is not None:
                after_step(inner, logs)
            step += 1
            if step % config.log_every == 0 or step == config.steps:
                history.append({"step": step, **logs})
                if acc.log_with:
                    acc.log({**logs, "lr": opt.param_groups[0]["lr"], "seconds": clock}, step=step)
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k != "loss"}, refresh=False)
            bar.update(1)
            by_time = bool(config.checkpoint_seconds) and clock - saved_at >= config.checkpoint_seconds
            if out is not None and (stopping or by_time or (
                    config.checkpoint_every and step % config.checkpoint_every == 0)):
                started = time.perf_counter()
                checkpoint(step, stopping)
                if not warned_grace:
                    warned_grace = True  # once: the first checkpoint's step is a typical one
                    note = grace_warning(0.0 if step_started is None else clock - step_started,
                                         time.perf_counter() - started, launcher_grace_seconds())
                    if note:
                        acc.print(note)
                saved_at, saved_step = clock, step
            step_started = clock
            if stopping:
                bar.close()
                if acc.is_main_process:
                    where = (f": checkpoint {out / 'checkpoints' / f'step-{step:07d}'} written"
                             if out is not None else "")
                    print(f"Stopped at step {step}{where}.", file=sys.stderr)
                raise stop.interrupt()
            if progress >= 1.0 and config.time_budget is not None and step < config.steps:
                acc.print(f"Time budget of {config.time_budget:.0f} s reached at step {step}.")
                break
    finally:  # also when training fails or is stopped
        stop.restore()
    bar.close()
    if out is not None and step != saved_step:
        checkpoint(step, stop.requested)
    if stop.requested:  # came after the last step's all-reduce: stop before the evaluation
        raise stop.interrupt()
    if previous_at_end is not None:  # the resumed fresh start has finished: it replaced them
        shutil.rmtree(previous_at_end, ignore_errors=True)
    if ema is not None:
        ema.copy_to_params()
    model.eval()
    return {
        "ranks_in_sync": _ranks_in_sync(acc, inner),
        "steps": step,
        "seconds": spent + (time.perf_counter() - t0),
        "final": logs,
        "history": history,
        "num_processes": acc.num_processes,
        "mixed_precision": precision_that_runs(acc),
    }


#: signals this close to the first are the same request: a one-process `accelerate launch`
#: passes the terminal's Ctrl-C on as a SIGTERM of its own
SAME_REQUEST_SECONDS = 2.0


def launcher_grace_seconds() -> float | None:
    """Seconds a launcher gives this process between passing on a stop signal (Ctrl-C,
    SIGTERM) and killing it; None when no launcher will (``hjtranslate train`` run directly).
    torchrun, which ``accelerate launch --multi_gpu`` runs, waits 30 s unless
    ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` (or ``PET_SHUTDOWN_TIMEOUT``) says otherwise;
    ``accelerate launch`` with one process waits 5 s, a constant of accelerate's."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env:
        for name in ("PET_SHUTDOWN_TIMEOUT", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"):
            try:
                return float(env[name])
            except (KeyError, ValueError):
                pass
        return 30.0
    if "ACCELERATE_MIXED_PRECISION" in env:  # set by accelerate's one-process launcher
        return 5.0
    return None


def grace_warning(step_seconds: float, checkpoint_seconds: float,
                  grace: float | None) -> str | None:
    """What to say when a step and a checkpoint would not fit in the launcher's grace."""
    need = step_seconds + checkpoint_seconds
    if grace is None or need <= 0.8 * grace:
        return None
    how = ("set TORCH_ELASTIC_SHUTDOWN_TIMEOUT to more seconds before accelerate launch"
           if "TORCHELASTIC_RUN_ID" in os.environ else
           "run `hjtranslate train ...` without accelerate launch for one process")
    return (f"note: a step and a checkpoint take about {need:.1f} s, more than the "
            f"{grace:.0f} s the launcher waits after Ctrl-C or SIGTERM before it kills this run: "
            f"a stop may then lose the steps since the last checkpoint ({how}).")


class _StopRequest:
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal closed; torchrun passes it on) during
    training asks for a stop at the end of the current step,
    where every rank writes a checkpoint together (the request rides on the step's all-reduce);
    a second signal, more than SAME_REQUEST_SECONDS later, stops at once. Installed only in the
    main thread; ``restore()`` puts the earlier handlers back."""

    def __init__(self) -> None:
        self.requested = False
        self.first = 0.0
        self.signum = signal.SIGINT
        self._old: dict[int, Any] = {}
        hangup = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()  # not on Windows
        for sig in (signal.SIGINT, signal.SIGTERM, *hangup):
            if sig in hangup and signal.getsignal(sig) is signal.SIG_IGN:
                continue  # `nohup` ignores SIGHUP so that the run outlives its terminal
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: the default behaviour stays
                break

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.requested and now - self.first > SAME_REQUEST_SECONDS:
            self.restore()
            self.signum = signum
            raise self.interrupt()
        if not self.requested:
            self.requested, self.first, self.signum = True, now, signum

    def interrupt(self) -> KeyboardInterrupt:
        return KeyboardInterrupt() if self.signum == signal.SIGINT else Terminated(self.signum)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


class WeightAverage:
    """Exponential moving average of parameters (Polyak averaging, as diffusers' ``EMAModel``).
    Minibatch MMD gradients are noisy; the average of the last ~1/(1-decay) steps is a markedly
    more precise map than the last iterate on long runs (on a 60 s 2-D run it was worse: it
    still averages early iterates). Checkpointed with the run, so resume is exact."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]
        self.num_updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params, strict=True):
            p.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": [s.clone() for s in self.shadow], "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, v in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(v)
        self.num_updates = int(state["num_updates"])


def _ranks_in_sync(acc, model: nn.Module) -> bool:
    """Whether every process ends with the same weights (a cheap checksum all-gather)."""
    if acc.num_processes == 1:
        return True
    with torch.no_grad():
        flat = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
        ramp = torch.arange(len(flat), dtype=flat.dtype, device=flat.device)
        sums = torch.stack([flat.sum(), (flat * flat).sum(), (flat * ramp).sum()])
    gathered = acc.gather(sums[None].to(acc.device)).cpu()
    return bool(torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=0, atol=0))
