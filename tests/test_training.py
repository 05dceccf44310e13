"""The accelerate loop: checkpoints, resume, the NaN guard, several processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import hjtranslate as hjt
from hjtranslate.training import (
    LOCK_FILE,
    TrainConfig,
    TrainingError,
    checkpoints,
    folder_holder,
    latest_checkpoint,
    train,
)

ROOT = Path(__file__).resolve().parents[1]


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) + 1


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_checkpoints_are_atomic_and_resume_continues(tmp_path, ema_decay):
    import shutil

    x, y = _data()
    m_full = hjt.fit(x, y, steps=30, batch_size=64, output_dir=str(tmp_path), ema_decay=ema_decay)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step-0000028", "step-0000030"]  # every steps//4, the last two kept
    last = latest_checkpoint(tmp_path)
    assert (last / "model.safetensors").is_file() and (last / "model" / "config.json").is_file()
    hjt.HJMap.from_pretrained(last / "model")  # every checkpoint is loadable
    # Pretend the run was killed after step 28 (the step-30 checkpoint never finished: only
    # its temporary folder exists) and resume: the result equals the uninterrupted run.
    os.replace(last, tmp_path / "checkpoints" / "step-0000030.tmp")
    m_res, res = hjt.fit(x, y, steps=30, batch_size=64, output_dir=str(tmp_path), resume=True,
                         return_history=True, ema_decay=ema_decay)
    assert res["steps"] == 30 and res["history"][-1]["step"] == 30
    torch.testing.assert_close(m_res.forward(x[:10]), m_full.forward(x[:10]))
    assert not (tmp_path / "checkpoints" / "step-0000030.tmp").exists()
    shutil.rmtree(tmp_path)


def test_a_resume_keeps_the_runs_coordinates_and_warns_of_other_data(tmp_path, recwarn):
    """The checkpoint's map reads points in the run's standardised coordinates: the resumed
    batches were standardised by the new samples' own mean and spread, silently."""
    x, y = _data()
    first = hjt.fit(x, y, steps=8, batch_size=64, output_dir=str(tmp_path))
    hjt.fit(x, y, steps=10, batch_size=64, output_dir=str(tmp_path), resume=True)
    assert not [w for w in recwarn if "resume:" in str(w.message)]  # the same data: no word
    with pytest.warns(UserWarning, match=r"resume: these samples' mean and spread differ .*"
                      r"spread 2\.225 against 1\.113.*the map keeps the run's coordinates"):
        again = hjt.fit(2 * x, 2 * y, steps=12, batch_size=64, output_dir=str(tmp_path),
                        resume=True)
    torch.testing.assert_close(again.scale, first.scale)
    torch.testing.assert_close(again.shift, first.shift)
    # what trains: the resumed batches are in the run's coordinates, not the new samples' own
    from hjtranslate.api import _new_map

    with pytest.warns(UserWarning, match="the map keeps the run's coordinates"):
        _, zs, zt = _new_map(2 * x, 2 * y, "quadratic", {}, 1.0, None, None, False, None, 0,
                             True, str(tmp_path), None, None, None)
    torch.testing.assert_close(zs, (2 * x - first.shift) / first.scale)
    torch.testing.assert_close(zt, (2 * y - first.shift) / first.scale)


def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path, capsys):
    x, y = _data()
    m_full = hjt.fit(x, y, steps=30, batch_size=64, output_dir=str(tmp_path))
    root = tmp_path / "checkpoints"
    weights = root / "step-0000030" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a damaged disk: truncated
    m_res = hjt.fit(x, y, steps=30, batch_size=64, output_dir=str(tmp_path), resume=True)
    printed = capsys.readouterr().out
    assert "cannot load the checkpoint" in printed and "step-0000030" in printed
    assert "Resuming from" in printed and "step 28" in printed
    torch.testing.assert_close(m_res.forward(x[:10]), m_full.forward(x[:10]))
    # The newest checkpoint's saved head settings damaged: the same fallback.
    (root / "step-0000030" / "model" / "config.json").write_text("{not json")
    m_res = hjt.fit(x, y, steps=30, batch_size=64, output_dir=str(tmp_path), resume=True)
    torch.testing.assert_close(m_res.forward(x[:10]), m_full.forward(x[:10]))
    # Options the run did not have (weight averaging): an error that says so, not "damaged".
    with pytest.raises(TrainingError, match="options differ from the run's"):
        hjt.fit(x, y, steps=30, batch_size=64, output_dir=str(tmp_path), resume=True, ema_decay=0.9)
    # With every checkpoint unreadable, a clear error instead of a traceback.
    for ckpt in root.iterdir():
        (ckpt / "trainer_state.json").write_text("{not json")
    with pytest.raises(TrainingError, match="none of the 2 checkpoints .* can be loaded"):
        hjt.fit(x, y, steps=40, batch_size=64, output_dir=str(tmp_path), resume=True)


def test_resume_keeps_the_checkpoints_head_settings(tmp_path):
    """The quadratic parameters are stored divided by the gain: resuming with another gain (or
    another quadratic kind) must not silently rescale the map; the checkpoint's settings win."""
    x, y = _data()
    full = hjt.fit(x, y, steps=12, batch_size=64, output_dir=str(tmp_path),
                   head_kwargs={"quadratic_gain": 10.0})
    with pytest.warns(UserWarning, match="quadratic_gain=1.0 -> 10.0"):
        again = hjt.fit(x, y, steps=12, batch_size=64, output_dir=str(tmp_path), resume=True,
                        head_kwargs={"quadratic_gain": 1.0})
    assert again.head.quadratic.gain == 10.0
    torch.testing.assert_close(again.forward(x[:10]), full.forward(x[:10]))


def test_resume_does_not_add_a_newer_default_to_the_checkpoints_head(tmp_path):
    """A 2-D run saved without Fourier features (older, or turned off) resumes as it was,
    although 2-D runs now get them by default."""
    x, y = _data()
    full = hjt.fit(x, y, steps=12, batch_size=64, output_dir=str(tmp_path),
                   head_kwargs={"fourier_features": 0})
    assert full.head.fourier is None
    with pytest.warns(UserWarning, match="fourier_features=128 -> None"):
        again = hjt.fit(x, y, steps=12, batch_size=64, output_dir=str(tmp_path), resume=True)
    assert again.head.fourier is None
    torch.testing.assert_close(again.forward(x[:10]), full.forward(x[:10]))


def test_fit_refuses_a_folder_whose_checkpoints_are_another_runs(tmp_path):
    """fit from Python writes only checkpoints/: in an `hjtranslate train` run's folder, a VAE's
    or a pipeline's, it would move their checkpoints aside; it refuses them before any work."""
    x, y = _data()
    run = tmp_path / "run"
    (run / "checkpoints" / "step-0000010").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "toy2d"}))
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "hjtranslate_pipeline.json").write_text("{}")
    for folder, match in ((run, r"holds an `hjtranslate train toy2d` run.*--resume --output-dir"),
                          (vae, "holds a AutoencoderKL model"), (pipe, "is a translation pipeline")):
        for resume in (False, True):
            with pytest.raises(ValueError, match=match):
                hjt.fit(x, y, steps=2, output_dir=str(folder), resume=resume)
    assert (run / "checkpoints" / "step-0000010").is_dir() and not (run / "checkpoints-previous").exists()
    assert not (vae / "checkpoints").exists() and not (pipe / "checkpoints").exists()
    # fit's own folder, with a map saved beside its checkpoints, stays usable
    own = tmp_path / "own"
    hjt.fit(x, y, steps=2, batch_size=64, output_dir=str(own)).save_pretrained(own)
    hjt.fit(x, y, steps=4, batch_size=64, output_dir=str(own), resume=True)


def test_resume_without_a_checkpoint_warns_and_starts_afresh(tmp_path):
    x, y = _data()
    with pytest.warns(UserWarning, match="--resume: no checkpoint in .*starting afresh"):
        hjt.fit(x, y, steps=2, batch_size=64, output_dir=str(tmp_path / "new"), resume=True)
    assert (tmp_path / "new" / "checkpoints").is_dir()


class _Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, step):
        loss = (self.w ** 2).sum() * (float("nan") if step >= 7 else 1.0)
        return {"loss": loss, "term": loss.detach()}


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model = _Exploding()
    cfg = TrainConfig(steps=20, checkpoint_every=5, output_dir=str(tmp_path), progress=False)
    with pytest.raises(TrainingError, match=r"NaN/Inf at step 7.*step-0000005"):
        train(model, lambda step, rank: {"step": step}, cfg)
    assert latest_checkpoint(tmp_path).name == "step-0000005"


@pytest.mark.parametrize("earlier", [True, False])
def test_a_checkpoint_of_the_failing_step_is_set_aside_not_called_good(tmp_path, earlier):
    # (a huge update leaves finite weights whose loss is NaN) the checkpoint written after the
    # update holds them: --resume from it would fail again, and the message called it good
    cfg = TrainConfig(steps=20, checkpoint_every=1 if earlier else 7, keep_checkpoints=3,
                      output_dir=str(tmp_path), progress=False)
    said = ("--resume continues from .*step-0000006" if earlier else
            "no earlier checkpoint is left: train again without --resume")
    with pytest.raises(TrainingError, match=r"NaN/Inf at step 7 .*The checkpoint of step 7 holds "
                       rf"the weights that gave it, so it is set aside as .*nonfinite-step-0000007; {said}"):
        train(_Exploding(), lambda step, rank: {"step": step}, cfg)
    left = [p.name for p in checkpoints(tmp_path)]
    assert left == (["step-0000005", "step-0000006"] if earlier else [])
    assert (tmp_path / "checkpoints" / "nonfinite-step-0000007").is_dir()


def test_the_checkpoint_a_launch_resumed_from_is_kept_when_its_first_loss_fails(tmp_path):
    # no update of this launch made it: an option typed with --resume may be the cause, and
    # setting it aside lost a finished run's last checkpoint
    train(_Exploding(), lambda step, rank: {"step": step},
          TrainConfig(steps=7, checkpoint_every=7, output_dir=str(tmp_path), progress=False))
    with pytest.raises(TrainingError, match=r"at step 7 .*The last good checkpoint is kept: .*"
                       r"step-0000007\. This launch has made no update yet"):
        train(_Exploding(), lambda step, rank: {"step": step},
              TrainConfig(steps=20, output_dir=str(tmp_path), resume=True, progress=False))
    assert [p.name for p in checkpoints(tmp_path)] == ["step-0000007"]


def test_nan_at_the_first_step_does_not_blame_the_learning_rate(tmp_path):
    cfg = TrainConfig(steps=5, output_dir=str(tmp_path), progress=False)
    with pytest.raises(TrainingError, match="at step 0 .*No update has been made yet, so the "
                       "learning rate is not the cause"):
        train(_Exploding(), lambda step, rank: {"step": step + 7}, cfg)


class _Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, step):
        loss = (self.w ** 2).sum()
        return {"loss": loss, "term": loss.detach()}


def test_a_time_budget_run_checkpoints_by_time_and_its_resume_keeps_the_budget(tmp_path):
    """A run stopped by its time budget long before ``steps`` has checkpoints to resume from
    (checkpoint_seconds), and a resume counts the time already spent."""
    import time

    def slow(step, rank):
        time.sleep(0.02)
        return {"step": step}

    cfg = TrainConfig(steps=100000, time_budget=0.6, checkpoint_every=0, checkpoint_seconds=0.15,
                      output_dir=str(tmp_path), progress=False, keep_checkpoints=10)
    first = train(_Quadratic(), slow, cfg)
    steps = sorted(int(p.name[5:]) for p in (tmp_path / "checkpoints").iterdir())
    assert len(steps) >= 3 and steps[-1] == first["steps"]  # several on the way, then the last
    state = json.loads((tmp_path / "checkpoints" / f"step-{steps[-1]:07d}" / "trainer_state.json")
                       .read_text())
    assert state["seconds"] >= 0.6
    from hjtranslate.training import trained_seconds

    assert trained_seconds(tmp_path) == state["seconds"]
    again = train(_Quadratic(), slow, TrainConfig(**{**cfg.__dict__, "resume": True}))
    assert again["steps"] == first["steps"]  # the budget was spent: no further training
    assert sorted(int(p.name[5:]) for p in (tmp_path / "checkpoints").iterdir()) == steps


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_ctrl_c_or_sigterm_stops_at_the_step_end_with_a_checkpoint(tmp_path, signum):
    import signal

    # the suite may run under nohup, which ignores SIGHUP (and a run keeps it ignored)
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        _stop_at_a_step_end(tmp_path, signum)
    finally:
        signal.signal(signal.SIGHUP, hangup)


def _stop_at_a_step_end(tmp_path, signum: str) -> None:
    import signal

    from hjtranslate.training import Terminated

    def interrupted(step, rank):
        if step == 5:
            os.kill(os.getpid(), getattr(signal, signum))
        return {"step": step}

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cfg = TrainConfig(steps=40, checkpoint_every=100, output_dir=str(tmp_path), progress=False)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(_Quadratic(), interrupted, cfg)
    assert isinstance(stopped.value, Terminated) == (signum != "SIGINT")
    assert getattr(stopped.value, "signum", signal.SIGINT) == getattr(signal, signum)
    assert latest_checkpoint(tmp_path).name == "step-0000006"  # step 5 finished, then saved
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    resumed = train(_Quadratic(), lambda step, rank: {"step": step},
                    TrainConfig(**{**cfg.__dict__, "resume": True}))
    assert resumed["steps"] == 40


def test_an_ignored_sighup_stays_ignored(tmp_path):
    """Under `nohup` SIGHUP is ignored: a training run keeps it so (the terminal may close)."""
    import signal

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        def hang_up(step, rank):
            if step == 2:
                os.kill(os.getpid(), signal.SIGHUP)
            return {"step": step}

        result = train(_Quadratic(), hang_up, TrainConfig(steps=5, progress=False))
        assert result["steps"] == 5 and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_the_launchers_grace_is_known_and_a_step_that_outlasts_it_is_told(tmp_path, monkeypatch,
                                                                           capsys):
    """accelerate launch kills a run 5 s (one process) or 30 s (torchrun, settable) after it
    passes a Ctrl-C on: a run whose step and checkpoint take longer says so, once."""
    from hjtranslate.training import grace_warning, launcher_grace_seconds

    for name in ("TORCHELASTIC_RUN_ID", "PET_SHUTDOWN_TIMEOUT", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT",
                 "ACCELERATE_MIXED_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    assert launcher_grace_seconds() is None  # run directly: nothing kills it
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert launcher_grace_seconds() == 5.0
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert launcher_grace_seconds() == 30.0
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "120")
    assert launcher_grace_seconds() == 120.0
    assert grace_warning(1.0, 2.0, 120.0) is None and grace_warning(1.0, 2.0, None) is None
    assert "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" in grace_warning(60.0, 50.0, 120.0)
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "0.001")
    cfg = TrainConfig(steps=6, checkpoint_every=2, output_dir=str(tmp_path), progress=False)
    train(_Quadratic(), lambda step, rank: {"step": step}, cfg)
    said = capsys.readouterr()
    assert (said.out + said.err).count("more than the 0 s the launcher waits") == 1


def test_a_failure_is_named_in_torchruns_error_file(tmp_path, monkeypatch, capsys):
    """Under torchrun each rank leaves its one-line error where the launcher's failure table
    reads it (instead of "To enable traceback see: ...")."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from hjtranslate.cli import main

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    assert main(["train", "toy2d", "--steps", "0", "--output-dir", str(tmp_path / "run")]) == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith("error: ") and "--steps" in said
    failure = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file=str(error_file))
    assert failure.message["message"] == said


def test_leftovers_of_a_killed_run_are_cleared(tmp_path):
    """A half-written checkpoint (killed before its rename) goes; the earlier run's checkpoints
    that a stopped fresh start had moved aside are named by a --resume and kept, and removed by
    the next fresh start's first checkpoint."""
    (tmp_path / "checkpoints" / "step-0000003.tmp").mkdir(parents=True)
    (tmp_path / "checkpoints-previous" / "step-0000009").mkdir(parents=True)
    cfg = TrainConfig(steps=4, checkpoint_every=2, output_dir=str(tmp_path), progress=False,
                      resume=True)
    with pytest.warns(UserWarning, match="checkpoints-previous holds the checkpoints of the run "
                      "before the last fresh start"):
        train(_Quadratic(), lambda step, rank: {"step": step}, cfg)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-0000002", "step-0000004"]
    assert (tmp_path / "checkpoints-previous" / "step-0000009").is_dir()
    shutil.rmtree(tmp_path / "checkpoints")
    train(_Quadratic(), lambda step, rank: {"step": step}, TrainConfig(**{**cfg.__dict__, "resume": False}))
    assert not (tmp_path / "checkpoints-previous").exists()


def test_ctrl_c_right_after_a_fresh_start_keeps_the_earlier_runs_checkpoints(tmp_path):
    import signal

    train(_Quadratic(), lambda step, rank: {"step": step},
          TrainConfig(steps=4, checkpoint_every=2, output_dir=str(tmp_path), progress=False))

    def interrupted(step, rank):
        if step == 0:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)  # as accelerate's launcher passes it on
        return {"step": step}

    with pytest.raises(KeyboardInterrupt):
        train(_Quadratic(), interrupted,
              TrainConfig(steps=8, checkpoint_every=4, output_dir=str(tmp_path), progress=False))
    assert latest_checkpoint(tmp_path).name == "step-0000001"  # one stop, one checkpoint
    assert sorted(p.name for p in (tmp_path / "checkpoints-previous").iterdir()) == [
        "step-0000002", "step-0000004"]
    # a resume of the stopped fresh start names them and keeps them until it finishes (the
    # stop may have been meant to undo the fresh start); then they go
    stopped_again = []

    def stop_once(step, rank):
        if step == 2 and not stopped_again:
            stopped_again.append(step)
            os.kill(os.getpid(), signal.SIGINT)
        return {"step": step}

    resume = TrainConfig(steps=8, checkpoint_every=2, output_dir=str(tmp_path), progress=False,
                         resume=True)
    with pytest.raises(KeyboardInterrupt):
        train(_Quadratic(), stop_once, resume)
    assert (tmp_path / "checkpoints-previous" / "step-0000004").is_dir()
    train(_Quadratic(), lambda step, rank: {"step": step}, resume)
    assert not (tmp_path / "checkpoints-previous").exists()


def test_sigterm_is_told_apart_and_an_unwritable_folder_is_a_message(tmp_path, monkeypatch, capsys):
    from hjtranslate.cli import main
    from hjtranslate.tasks import toy2d
    from hjtranslate.training import Terminated, lock_folder

    def terminated(*args, **kwargs):
        raise Terminated

    monkeypatch.setattr(toy2d, "toy_samples", terminated)
    assert main(["train", "toy2d"]) == 143  # 128 + SIGTERM, as a shell reports it
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TrainingError, match="Cannot write in .*name an output folder"):
        lock_folder(tmp_path / "afile" / "run")


def test_a_folder_turned_read_only_keeps_the_real_error(tmp_path, monkeypatch):
    """Letting a folder go cannot fail in its turn (the lock file left behind) and so hide the
    error that stopped the run: the folder turned read-only under it."""
    from hjtranslate.training import LOCK_FILE, _held, lock_folder, release_folder

    assert lock_folder(tmp_path)
    real_unlink = Path.unlink

    def refuse(self, *args, **kwargs):
        if self.name == LOCK_FILE:
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    release_folder(tmp_path)
    assert tmp_path.resolve() not in _held


def test_a_second_run_in_a_folder_in_use_is_refused(tmp_path):
    """Two runs in one folder would move each other's checkpoints aside and mix their files:
    while one process trains there, another is refused; the lock goes with its process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from hjtranslate.training import lock_folder; lock_folder(Path(sys.argv[1])); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = TrainConfig(steps=2, output_dir=str(tmp_path), progress=False)
        with pytest.raises(TrainingError, match=f"is in use by a running hjtranslate process "
                           f"\\(pid {holder.pid}\\)"):
            train(_Quadratic(), lambda step, rank: {"step": step}, cfg)
        assert not (tmp_path / "checkpoints").exists()
        assert folder_holder(tmp_path) == f"pid {holder.pid}"
    finally:
        holder.kill()
        holder.wait()
    train(_Quadratic(), lambda step, rank: {"step": step}, cfg)  # free again
    assert latest_checkpoint(tmp_path).name == "step-0000002"


def test_a_lock_left_by_a_killed_run_is_not_held_by_a_new_process_of_its_pid(tmp_path):
    """The lock file names its holder's pid and start time: a process that got the pid of a
    killed run later (a reboot, pid wrap-around) does not hold the folder."""
    from hjtranslate.checks import process_start

    started = process_start(os.getpid())
    if started is None:
        pytest.skip("no /proc here: the pid alone is checked")
    (tmp_path / LOCK_FILE).write_text(f"pid {os.getpid()} started {started}")
    assert folder_holder(tmp_path) == f"pid {os.getpid()}"
    (tmp_path / LOCK_FILE).write_text(f"pid {os.getpid()} started {int(started) - 1}")
    assert folder_holder(tmp_path) is None
    (tmp_path / LOCK_FILE).write_text(f"pid {os.getpid()}")  # written before start times were
    assert folder_holder(tmp_path) == f"pid {os.getpid()}"


def test_world_size_without_processes_refuses_to_start(tmp_path):
    # A plain Accelerator() under `accelerate launch --multi_gpu` on a CPU machine: each process
    # sees WORLD_SIZE=2 but believes it is alone, so both would train the same model.
    script = tmp_path / "train.py"
    script.write_text("from hjtranslate.training import make_accelerator\nmake_accelerator(cpu=False)\n")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "0", str(script)]
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and "duplicate the work" in proc.stderr


def test_two_cpu_processes_train_one_model(tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on the CPU: two gloo ranks, identical
    weights at the end, and only rank 0 writes."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "0", "-m", "hjtranslate", "train", "gaussians", "--dim", "2",
           "--steps", "30", "--n", "2000", "--eval-n", "1000", "--batch-size", "128",
           "--output-dir", str(out), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["ranks_in_sync"] is True
    # the card's command says how the run was launched (it lacked the launcher and its flags)
    assert metrics["command"].startswith(
        "accelerate launch --multi_gpu --num_processes 2 hjtranslate train gaussians --dim 2 ")
    assert proc.stdout.count("Wrote ") == 1  # one writer
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "map", "metrics.json"]


def test_report_to_logs_the_curves_with_an_accelerate_tracker(tmp_path, capsys):
    """--report-to tensorboard writes the losses, the learning rate and the run's settings
    under OUTPUT_DIR/logs, as diffusers' training scripts do; an unknown tracker is named."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hjtranslate.cli import main

    out = tmp_path / "run"
    assert main(["train", "toy2d", "--n", "500", "--eval-n", "100", "--steps", "20", "--output-dir",
                 str(out), "--no-progress", "--report-to", "tensorboard"]) == 0
    events = EventAccumulator(str(out / "logs" / "run")).Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "lr", "seconds"} <= set(tags)
    assert [e.step for e in events.Scalars("loss")] == [10, 20]
    hparams = (out / "logs" / "run").glob("*/hparams.yml")
    assert "source: swissroll" in next(hparams).read_text()  # the task's options too
    # a resume can turn a recorded tracker off; a fresh start replaces the old run's curves
    assert main(["train", "toy2d", "--output-dir", str(out), "--resume", "--steps", "30",
                 "--report-to", "none", "--no-progress"]) == 0
    events = EventAccumulator(str(out / "logs" / "run")).Reload()
    assert [e.step for e in events.Scalars("loss")] == [10, 20]  # step 30 was not logged
    (out / "logs" / "notes.txt").write_text("the user's")  # not the run's: kept
    assert main(["train", "toy2d", "--n", "500", "--eval-n", "100", "--steps", "10", "--output-dir",
                 str(out), "--no-progress", "--report-to", "tensorboard"]) == 0
    events = EventAccumulator(str(out / "logs" / "run")).Reload()
    assert [e.step for e in events.Scalars("loss")] == [10]
    assert (out / "logs" / "notes.txt").read_text() == "the user's"
    capsys.readouterr()
    for name, message in (("tensorbord", "accelerate knows"), ("wandb", "its package is not installed")):
        assert main(["train", "toy2d", "--steps", "2", "--output-dir", str(tmp_path / "x"),
                     "--report-to", name]) == 2
        assert f"--report-to {name}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything


def test_held_out_draws_never_reuse_a_runs_training_seeds():
    """toy2d and gaussians evaluate on seeds 10,001 / 10,002 + seed; for the seeds where those
    are the run's own training seeds (2 seed + 1, 2 seed + 2) the held-out draw moves away."""
    from hjtranslate.tasks.common import held_out_seeds
    from hjtranslate.tasks.toy2d import held_out, training_points

    assert held_out_seeds(0) == (10_001, 10_002) and held_out_seeds(7) == (10_008, 10_009)
    for seed in [*range(9_990, 10_010), 2**31 + 5_000]:
        low32 = {s % 2**32 for s in held_out_seeds(seed)}
        assert not low32 & {(2 * seed + 1) % 2**32, (2 * seed + 2) % 2**32}
    x, y = training_points("gaussian", "moons", 500, 10_000)
    a, b = held_out("gaussian", "moons", 500, 10_000)
    assert not torch.equal(x, a) and not torch.equal(y, b)
