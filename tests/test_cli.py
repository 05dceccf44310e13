"""The hjtranslate command: outputs of a run, and clear errors without tracebacks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from hjtranslate.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=ROOT, module=True):
    cmd = [sys.executable, "-m", "hjtranslate", *args] if module else [sys.executable, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_toy2d_run_writes_everything(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["train", "toy2d", "--source", "8gaussians", "--target", "circles", "--steps", "40",
                 "--n", "2000", "--batch-size", "128", "--eval-n", "500", "--output-dir", str(out),
                 "--no-progress"]) == 0
    assert {"config.json", "metrics.json", "transport.png", "map", "checkpoints"} <= {
        p.name for p in out.iterdir()}
    # the map is written atomically through map.tmp, and its card names where it ends up
    assert "HJMap.from_pretrained('map')" in (out / "map" / "README.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("cost_ratio", "cost_ratio_extrapolated", "energy_forward", "energy_floor_forward",
                "duality_gap", "monotone_share", "ot_match_forward", "ot_match_floor_forward",
                "dual_certified_over_exact_ot", "energy_forward_over_two_target_samples",
                "energy_forward_over_perfect_map"):
        assert key in metrics
    assert metrics["energy_draws"] == 16 and metrics["energy_draws_n"] == 500
    assert metrics["ot_match_floor_forward"] > 0
    assert 0 < metrics["dual_certified_over_exact_ot"] <= 1 + 1e-9  # a lower bound, always
    config = json.loads((out / "config.json").read_text())
    assert config["source"] == "8gaussians" and config["steps"] == 40 and config["eval_n"] == 500
    # in 2-D the head reads random Fourier features by default
    assert json.loads((out / "map" / "config.json").read_text())["head_kwargs"]["fourier_features"] == 128
    # evaluate re-runs the task's evaluation from the saved folder, or from the map inside it
    capsys.readouterr()
    assert main(["evaluate", str(out), "--n", "300"]) == 0
    assert json.loads(capsys.readouterr().out)["energy_draws_n"] == 300
    assert main(["evaluate", str(out / "map")]) == 0  # without --n: the run's own --eval-n
    assert json.loads(capsys.readouterr().out)["energy_draws_n"] == 500
    # fine-tuning starts from the run's map (the run folder stands for its map/)
    tuned = tmp_path / "tuned"
    assert main(["train", "toy2d", "--source", "8gaussians", "--target", "circles", "--steps", "2",
                 "--n", "500", "--batch-size", "64", "--eval-n", "100", "--lr", "1e-12",
                 "--init-from", str(out), "--output-dir", str(tuned), "--no-progress"]) == 0
    from hjtranslate import HJMap

    a, b = HJMap.from_pretrained(out / "map"), HJMap.from_pretrained(tuned / "map")
    x = torch.randn(50, 2)
    torch.testing.assert_close(a.forward(x), b.forward(x), atol=1e-4, rtol=0)
    assert b.metrics["init_from"] == str(out) and b.metrics["init_from_command"] == a.metrics["command"]
    # --resume continues a run from its own checkpoints: another --init-from would be ignored
    assert main(["train", "toy2d", "--output-dir", str(out), "--resume", "--init-from", str(tuned)]) == 2
    assert "--init-from would be ignored. Drop --init-from to resume" in capsys.readouterr().err
    assert main(["train", "toy2d", "--output-dir", str(tuned), "--resume", "--init-from", str(out),
                 "--no-progress"]) == 0  # the run's own --init-from, typed again: resumed
    # a map alone has no config to say which task and data it was trained on
    shutil.copytree(out / "map", tmp_path / "alone")
    assert main(["evaluate", str(tmp_path / "alone")]) == 2
    assert "pass the run or pipeline folder" in capsys.readouterr().err
    # damaged or out-of-range inputs to evaluate: clear errors that name the file or the option
    assert main(["evaluate", str(out), "--n", "5"]) == 2
    assert "--n must be between 20 and 16000" in capsys.readouterr().err
    config_text = (out / "config.json").read_text()
    for damaged, message in (("3", "config.json holds a JSON int"),
                             ("{not json", "config.json is not readable JSON"),
                             (json.dumps({k: v for k, v in config.items() if k != "source"}),
                              "config.json lacks 'source'")):
        (out / "config.json").write_text(damaged)
        assert main(["evaluate", str(out), "--n", "500"]) == 2
        assert message in capsys.readouterr().err
    (out / "config.json").write_text(config_text)
    (out / "map" / "config.json").write_text("[]")
    assert main(["evaluate", str(out), "--n", "500"]) == 2
    assert "holds a JSON list, not an object of settings" in capsys.readouterr().err
    shutil.rmtree(out / "map")
    assert main(["evaluate", str(out)]) == 2
    assert f"{out / 'map'} is missing: the toy2d run" in capsys.readouterr().err


def test_fourier_features_can_be_turned_off(tmp_path):
    assert main(["train", "toy2d", "--steps", "2", "--n", "200", "--batch-size", "32", "--eval-n", "100",
                 "--fourier-features", "0", "--output-dir", str(tmp_path), "--no-progress"]) == 0
    head = json.loads((tmp_path / "map" / "config.json").read_text())["head_kwargs"]
    assert "fourier_features" not in head


def test_pnorm_cost_from_the_cli(tmp_path):
    assert main(["train", "gaussians", "--dim", "3", "--cost", "pnorm", "--p", "3", "--steps", "10",
                 "--n", "500", "--eval-n", "1000", "--batch-size", "64", "--output-dir", str(tmp_path),
                 "--no-progress"]) == 0
    cfg = json.loads((tmp_path / "map" / "config.json").read_text())
    assert cfg["cost"] == "pnorm" and cfg["cost_kwargs"] == {"p": 3.0}


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "toy2d", "--source", "donut"], "Unknown 2-D dataset 'donut'. Available: swissroll"),
        (["train", "gaussians", "--cost", "hinge"],
         "Unknown cost 'hinge'. Available costs: lp, pnorm, quadratic"),
        (["train", "gaussians", "--head", "resnet"], "Available heads: affine, conditional, mlp"),
        (["train", "gaussians", "--cost", "pnorm", "--p", "0.5"], "must be finite and > 1"),
        (["train", "gaussians", "--t-f", "0"], "--t-f must be a finite number > 0"),
        (["train", "gaussians", "--dim", "0"], "--dim must be >= 1"),
        (["train", "toy2d", "--n", "1"], "--n must be >= 2"),
        (["train", "gaussians", "--n", "-1"], "--n must be >= 2"),
        (["train", "toy2d", "--p", "3"], "Drop --p, or choose a cost that takes it"),
        (["train", "toy2d", "--batch-size", "0"], "--batch-size must be >= 2"),
        (["train", "gaussians", "--batch-size", "-5"], "--batch-size must be >= 2"),
        (["train", "toy2d", "--width", "-1"], "--width must be a positive integer, got -1"),
        (["train", "toy2d", "--depth", "0"], "--depth must be a positive integer, got 0"),
        (["train", "toy2d", "--steps", "0"], "--steps must be >= 1"),
        (["train", "toy2d", "--ema-decay", "1"], "--ema-decay must lie strictly between 0 and 1"),
        (["train", "toy2d", "--lr", "inf"], "--lr must be a finite number > 0, got inf"),
        (["train", "toy2d", "--t-f", "inf"], "--t-f must be a finite number > 0"),
        (["train", "toy2d", "--lambda", "inf"], "--lambda must be a finite number > 0"),
        (["train", "toy2d", "--cycle-weight", "inf"], "--cycle-weight must be a finite number >= 0"),
        (["train", "toy2d", "--monotone-weight", "inf"], "--monotone-weight must be a finite"),
        (["train", "toy2d", "--lambda-slack", "-0.1"], "--lambda-slack must be a finite number >= 0"),
        (["train", "toy2d", "--quadratic-gain", "inf"], "--quadratic-gain must be a finite number"),
        (["train", "toy2d", "--mmd", "sinkhorn", "--sinkhorn-blur", "inf"], "--sinkhorn-blur must be"),
        (["train", "toy2d", "--eval-n", "100000"], "--eval-n must be between 20 and 16000"),
        (["train", "gaussians", "--eval-n", "100000000000"], "--eval-n must be between 20 and 1000000"),
        (["train", "digits-to-fashion", "--export", __file__], "--export"),
        (["train", "toy2d", "--eval-n", "5"], "--eval-n must be between 20 and 16000"),
        (["evaluate", "/nonexistent/run"], "/nonexistent/run does not exist: pass the output folder"),
        (["evaluate", str(ROOT / "models" / "digits-to-fashion"), "--n", "10001"],
         "--n must be between 10 and 10000 (the MNIST and Fashion-MNIST test sets"),
        (["evaluate", str(ROOT / "models" / "digits-to-fashion"), "--n", "1"], "got 1"),
        (["train", "digits-to-fashion", "--eval-n", "20000"], "--eval-n must be between 10 and 10000"),
        (["train", "toy2d", "--init-from", "/nonexistent/run"], "No such folder: /nonexistent/run"),
        (["translate", "--revision", "dev", "--input", str(ROOT / "apps" / "examples" / "digit_3.png"),
          "--out", "/nonexistent/out"], "--revision and --force-download apply to a Hub --model"),
        (["evaluate", "user/d2f"], "for a Hub repo, download it first (`hf download user/d2f"),
        # past 64 bits: an overflow inside torch.randn (a huge --steps or --pixels is a cap, and fine)
        (["train", "gaussians", "--dim", "1" + "0" * 22], "a size or count given is beyond what torch"),
        (["train", "toy2d", "--n", "1" + "0" * 22], "a size or count given is beyond what torch can take"),
        (["train", "toy2d", "--width", "1" + "0" * 22], 'error "Overflow when unpacking long long'),
        # hjt.fit's hint (labels=...) is no use on the command line
        (["train", "gaussians", "--head", "conditional"], "--head conditional is a class-conditional "
         "head, and the gaussians task's samples have no classes"),
        (["evaluate", ""], "FOLDER is empty: give it a value."),  # read ./config.json
        # the API's check names its argument with a value: the option's form on the command line
        (["train", "toy2d", "--cost", "pnorm", "--p", "3", "--monotone-weight", "1",
          "--monotone-directions", "power"], "error: --monotone-directions power needs the quadratic"),
    ],
)
def test_bad_input_gives_a_clear_error_and_no_traceback(args, message, tmp_path, capsys):
    # In process: an exception that main() lets through would fail this test, as a traceback
    # would in a shell. test_unknown_task_lists_the_choices checks a real process too.
    capsys.readouterr()
    # A finished run is in the folder: a rejected option must leave it as it was.
    task = args[1] if args[0] == "train" else "earlier"
    finished = {"config.json": json.dumps({"task": task}), "metrics.json": "{}", "map/config.json": "{}"}
    for name, text in finished.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    code = main([*args, "--output-dir", str(tmp_path)] if args[0] == "train" else args)
    assert code == 2
    assert message in capsys.readouterr().err
    assert {name: (tmp_path / name).read_text() for name in finished} == finished


def test_link_loops_and_broken_links_are_named_as_such(tmp_path, capsys, monkeypatch):
    # ls shows the name, so "does not exist" would mislead; Path.resolve() raised a bare
    # RuntimeError for a loop (Python < 3.13) where a path was not checked first
    monkeypatch.chdir(tmp_path)
    os.symlink("loop", "loop")
    os.symlink("nowhere", "broken.png")
    image = str(ROOT / "apps" / "examples" / "digit_3.png")
    loop = "is a loop of symbolic links"
    for args, message in [
        (["train", "color-transfer", "--source", "loop", "--target", image], loop),
        (["train", "color-transfer", "--source", "broken.png", "--target", image],
         "is a broken link (to nowhere, which does not exist)"),
        (["train", "digits-to-fashion", "--data-dir", "loop"],
         f"Data folder 'loop' (from --data-dir) {loop}"),
        (["train", "digits-to-fashion", "--vae", "loop"], f"The VAE 'loop' {loop}"),
        (["train", "toy2d", "--init-from", "loop"], f"loop {loop}"),
        (["train", "vae", "--init-from", "loop"], loop),
        (["translate", "--input", "loop", "--out", "out"], f"--input loop {loop}"),
        (["translate", "--model", "loop", "--input", image, "--out", "out"], f"pipeline: loop {loop}"),
        (["evaluate", "loop"], f"loop {loop} (a link that leads back to itself): pass the output"),
        (["push", "loop", "--repo-id", "user/x"], f"loop {loop}"),
        (["push", "broken.png", "--repo-id", "user/x"], "broken.png is a broken link"),
        (["push", image, "--repo-id", "user/x"], f"{image} is a file: pass the folder"),
    ]:
        capsys.readouterr()
        extra = ["--output-dir", "run", "--steps", "2"] if args[0] == "train" else []
        assert main([*args, *extra]) == 2, args
        assert message in capsys.readouterr().err, args
    assert sorted(os.listdir()) == ["broken.png", "loop"]  # no output folder left behind


def test_resume_without_the_run_record_is_refused_not_run_on_defaults(tmp_path, capsys):
    # a killed run whose config.json went missing resumed with the task's defaults (another
    # --steps, --batch-size, --n) over checkpoints of other settings
    (tmp_path / "checkpoints" / "step-0000007").mkdir(parents=True)
    assert main(["train", "toy2d", "--resume", "--output-dir", str(tmp_path)]) == 2
    assert "holds checkpoints (the newest step-0000007) but no config.json" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["checkpoints"]


def test_resume_of_a_finished_map_without_checkpoints_is_refused(tmp_path, capsys):
    # it trained a new map from step 0 over the finished one, after a note
    out = tmp_path / "run"
    assert main(["train", "toy2d", "--n", "500", "--eval-n", "100", "--steps", "3", "--output-dir",
                 str(out), "--no-progress"]) == 0
    shutil.rmtree(out / "checkpoints")
    weights = (out / "map" / "model.safetensors").read_bytes()
    assert main(["train", "toy2d", "--resume", "--steps", "5", "--output-dir", str(out)]) == 2
    assert f"--resume: {out} holds a finished map and no checkpoint to resume" in capsys.readouterr().err
    assert (out / "map" / "model.safetensors").read_bytes() == weights


def test_the_cli_notes_speak_of_options_not_python(tmp_path):
    # a batch larger than the data was cut silently (config.json kept 1000); fit's hint to pass
    # x_source.T is meaningless for a task's own samples
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "gaussians", "--dim", "300", "--n", "100", "--eval-n", "50", "--steps",
                     "2", "--batch-size", "1000", "--output-dir", str(tmp_path / "g"),
                     "--no-progress"]) == 0
    said = [str(w.message) for w in caught]
    assert any(m.startswith("--batch-size 1000 is more than the training samples (100 source, 100 "
                            "target): each batch draws 100 and 100") for m in said), said
    assert not any("x_source.T" in m or "batch_size 1000" in m for m in said), said


def test_print_metrics_writes_json_alone_on_stdout(tmp_path, capsys):
    assert main(["train", "gaussians", "--steps", "2", "--n", "200", "--eval-n", "100",
                 "--batch-size", "32", "--output-dir", str(tmp_path / "g"), "--no-progress",
                 "--print-metrics"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["steps"] == 2  # `> metrics.json` gives the JSON alone
    assert "Wrote " in said.err


def test_print_metrics_prints_once_for_several_processes(tmp_path, capsys, monkeypatch):
    """Every rank returns the metrics; two JSON documents on stdout made `> metrics.json` fail."""
    import types

    import hjtranslate.tasks

    task = types.SimpleNamespace(run=lambda args: {"steps": 2}, add_arguments=lambda p: None)
    monkeypatch.setattr(hjtranslate.tasks, "load_task", lambda name: task)
    args = ["train", "gaussians", "--print-metrics"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, printed in (("1", ""), ("0", '{\n  "steps": 2\n}\n')):
        monkeypatch.setenv("RANK", rank)
        assert main(args) == 0
        assert capsys.readouterr().out == printed


def test_accelerate_launch_settings_the_loop_does_not_follow(tmp_path, capsys, monkeypatch):
    """Gradient accumulation from accelerate's environment was honoured in part, silently (the
    loss scaled down, --steps counting micro-batches): refused. fp16 on a CPU is warned of, and
    the precision is recorded."""
    from accelerate.state import AcceleratorState, GradientState

    def fresh_process():  # accelerate keeps its settings for the process: as a new launch
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    args = ["train", "gaussians", "--steps", "2", "--n", "200", "--eval-n", "100",
            "--batch-size", "32", "--no-progress"]
    fresh_process()
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    assert main([*args, "--output-dir", str(tmp_path / "ga")]) == 2
    assert "gradient accumulation over 4 steps" in capsys.readouterr().err
    monkeypatch.delenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    fresh_process()
    with pytest.warns(UserWarning, match="fp16 mixed precision does nothing on a CPU"):
        assert main([*args, "--output-dir", str(tmp_path / "fp16")]) == 0
    assert json.loads((tmp_path / "fp16" / "metrics.json").read_text())["mixed_precision"] == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    fresh_process()
    assert main([*args, "--output-dir", str(tmp_path / "bf16")]) == 0
    assert json.loads((tmp_path / "bf16" / "metrics.json").read_text())["mixed_precision"] == "bf16"
    modes = {f.stat().st_mode & 0o777 for f in (tmp_path / "bf16" / "checkpoints").rglob("*")
             if f.is_file()}
    assert modes == {(tmp_path / "bf16" / "config.json").stat().st_mode & 0o777}  # not 0600
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    fresh_process()


def test_pnorm_without_p_says_its_exponent(tmp_path):
    with pytest.warns(UserWarning, match="--cost pnorm without --p uses its default exponent p = 2"):
        assert main(["train", "gaussians", "--cost", "pnorm", "--steps", "2", "--n", "200",
                     "--eval-n", "100", "--batch-size", "32", "--output-dir", str(tmp_path / "g"),
                     "--no-progress"]) == 0


def test_an_output_dir_that_is_a_file_or_another_tasks_run(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    assert main(["train", "toy2d", "--steps", "2", "--output-dir", str(afile)]) == 2
    assert "is a file: name a folder" in capsys.readouterr().err and afile.read_text() == "keep"
    assert main(["train", "toy2d", "--steps", "2", "--output-dir", str(afile / "run")]) == 2
    assert f"lies under {afile}, which is a file" in capsys.readouterr().err
    # --resume on the folder of another task's run: refused, the run left as it was
    run = tmp_path / "gauss"
    assert main(["train", "gaussians", "--steps", "2", "--n", "200", "--eval-n", "100",
                 "--batch-size", "32", "--output-dir", str(run), "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "toy2d", "--resume", "--steps", "4", "--output-dir", str(run)]) == 2
    assert "is a gaussians run, not toy2d" in capsys.readouterr().err
    # a fresh run there would mix its files with that run's: refused as well
    assert main(["train", "toy2d", "--steps", "2", "--output-dir", str(run)]) == 2
    assert "`hjtranslate train gaussians --resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # nor does a run write into a model's or a pipeline's folder
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    assert main(["train", "toy2d", "--steps", "2", "--output-dir", str(model)]) == 2
    assert "holds a config.json that is not a toy2d run's (AutoencoderKL)" in capsys.readouterr().err
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "hjtranslate_pipeline.json").write_text("{}")
    assert main(["train", "toy2d", "--steps", "2", "--output-dir", str(pipe)]) == 2
    assert "is a translation pipeline folder" in capsys.readouterr().err
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]
    assert sorted(p.name for p in pipe.iterdir()) == ["hjtranslate_pipeline.json"]


def test_a_fresh_run_replaces_the_earlier_runs_checkpoints(tmp_path, capsys):
    """Without --resume a run in an earlier run's folder starts afresh: the earlier checkpoints
    go, so that they neither outrank this run's nor get resumed under this run's options."""
    from hjtranslate.modelcard import card_name
    from hjtranslate.training import checkpoints

    run = tmp_path / "run"
    common = ["train", "toy2d", "--n", "500", "--batch-size", "64", "--eval-n", "100",
              "--output-dir", str(run), "--no-progress"]
    assert main([*common, "--steps", "8"]) == 0
    assert [p.name for p in checkpoints(run)][-1] == "step-0000008"
    capsys.readouterr()
    assert main([*common, "--steps", "4", "--source", "circles"]) == 0
    assert "the earlier run's checkpoints moved to" in capsys.readouterr().out
    assert [p.name for p in checkpoints(run)][-1] == "step-0000004"
    assert not (run / "checkpoints-previous").exists()  # removed once this run had its own
    # cards name where an atomically written folder ends up, not its NAME.tmp
    assert ".tmp" not in (checkpoints(run)[-1] / "model" / "README.md").read_text()
    assert card_name(Path("runs/toy2d/checkpoints/step-0000008.tmp/model")) == (
        "runs/toy2d/checkpoints/step-0000008/model")
    assert card_name(Path("runs/toy2d/map.tmp")) == "runs/toy2d/map"
    assert card_name(tmp_path / "map.tmp") == "map" and card_name(run, "user/x") == "user/x"


def test_out_of_memory_is_a_clear_error(monkeypatch, capsys):
    import hjtranslate.tasks.toy2d as toy2d

    def too_big(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 800000000000 bytes.")

    monkeypatch.setattr(toy2d, "toy_samples", too_big)
    assert main(["train", "toy2d", "--n", "100000000000"]) == 2
    assert "out of memory" in capsys.readouterr().err
    monkeypatch.setattr(toy2d, "toy_samples", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        main(["train", "toy2d"])


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 136640 vs 136532"),
])
def test_a_full_disk_is_a_clear_error(tmp_path, monkeypatch, capsys, error):
    """A checkpoint that cannot be written for want of space (as the OS, or torch.save's zip
    writer, reports it) is one line that says what to do, not a traceback."""
    from accelerate import Accelerator

    def full(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(Accelerator, "save_state", full)
    assert main(["train", "gaussians", "--dim", "2", "--n", "500", "--steps", "8",
                 "--output-dir", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "error: the disk is full (" in err and "with --resume" in err
    assert "Traceback" not in err


def test_unknown_task_lists_the_choices(tmp_path):
    proc = run_cli("train", "cifar")
    assert proc.returncode == 2 and "digits-to-fashion" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "gaussians", "--t-f", "0", "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "--t-f must be a finite number > 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_script_mode_from_the_repo_root():
    # `accelerate launch hjtranslate ...` runs hjtranslate/__main__.py as a script.
    proc = run_cli("hjtranslate", "env", module=False)
    assert proc.returncode == 0, proc.stderr
    assert "hjtranslate 0.3.0" in proc.stdout and "torch" in proc.stdout
    assert "judge-mnist, vae; a checkout)" in proc.stdout


def test_toy2d_with_the_sinkhorn_match_and_the_monotone_penalty(tmp_path):
    out = tmp_path / "sk"
    assert main(["train", "toy2d", "--source", "gaussian", "--target", "checkerboard", "--steps", "5",
                 "--n", "600", "--batch-size", "64", "--eval-n", "200", "--mmd", "sinkhorn",
                 "--monotone-weight", "1", "--monotone-directions", "all", "--cycle-share", "0.5",
                 "--sinkhorn-blur", "0.1", "--output-dir", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 5 and "monotone" in metrics
    config = json.loads((out / "config.json").read_text())
    assert config["sinkhorn_blur"] == 0.1 and config["monotone_directions"] == "all"
    assert config["cycle_share"] == 0.5
    with pytest.raises(SystemExit, match="2"):  # argparse lists the choices
        main(["train", "toy2d", "--monotone-weight", "1", "--monotone-directions", "sideways"])
    for bad in (["--sinkhorn-blur", "0.1"], ["--mmd", "sinkhorn", "--sinkhorn-blur", "0"],
                ["--cycle-share", "2"], ["--cycle-share", "0"], ["--cycle-weight", "-1"],
                ["--match-pool", "-5"], ["--mmd", "sinkhorn", "--match-pool", "100"]):
        assert main(["train", "toy2d", "--steps", "1", "--output-dir", str(tmp_path / "bad"),
                     "--no-progress", *bad]) == 2
    pooled = tmp_path / "pooled"
    assert main(["train", "toy2d", "--steps", "4", "--n", "600", "--batch-size", "64", "--eval-n",
                 "200", "--match-pool", "128", "--output-dir", str(pooled), "--no-progress"]) == 0
    assert json.loads((pooled / "config.json").read_text())["match_pool"] == 128
    assert json.loads((pooled / "metrics.json").read_text())["steps"] == 4
    # power iterations on the Jacobian find the quadratic cost's folds only: a clear CLI error
    assert main(["train", "toy2d", "--cost", "pnorm", "--p", "3", "--monotone-weight", "1",
                 "--monotone-directions", "power", "--steps", "1", "--output-dir",
                 str(tmp_path / "bad"), "--no-progress"]) != 0


def test_ema_decay_saves_the_averaged_weights(tmp_path):
    """`--ema-decay` saves the moving average, not the last iterate, and config.json records it
    (so `--resume` keeps averaging)."""
    from safetensors.torch import load_file

    weights = {}
    for name, extra in (("plain", []), ("ema", ["--ema-decay", "0.5"])):
        out = tmp_path / name
        assert main(["train", "toy2d", "--steps", "6", "--n", "600", "--batch-size", "64",
                     "--eval-n", "200", "--output-dir", str(out), "--no-progress", *extra]) == 0
        weights[name] = load_file(out / "map" / "model.safetensors")
        assert json.loads((out / "config.json").read_text())["ema_decay"] == (0.5 if extra else None)
    assert weights["plain"].keys() == weights["ema"].keys()
    assert any(not torch.equal(weights["plain"][k], weights["ema"][k]) for k in weights["plain"])


def test_resume_trains_on_with_the_recorded_options(tmp_path, capsys):
    """`--resume` without the run's options: the ones config.json records, not the defaults
    (a narrower head would not even load the checkpoint); options typed again win."""
    out = tmp_path / "run"
    common = ["train", "gaussians", "--dim", "2", "--n", "300", "--eval-n", "200",
              "--batch-size", "32", "--output-dir", str(out), "--no-progress"]
    assert main([*common, "--steps", "4", "--width", "16", "--lr", "5e-4", "--mmd", "gaussian"]) == 0
    capsys.readouterr()
    assert main(["train", "gaussians", "--output-dir", str(out), "--steps", "6", "--resume",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "as recorded in" in err and "width=16" in err and "mmd=gaussian" in err
    config = json.loads((out / "config.json").read_text())
    assert (config["width"], config["lr"], config["mmd"], config["n"], config["steps"]) == (
        16, 5e-4, "gaussian", 300, 6)
    assert json.loads((out / "map" / "config.json").read_text())["head_kwargs"]["width"] == 16
    assert main(["train", "gaussians", "--output-dir", str(out), "--steps", "8", "--lr", "1e-4",
                 "--resume", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["lr"], config["width"], config["steps"]) == (1e-4, 16, 8)
    # the training time of all launches, beside this launch's
    metrics = json.loads((out / "metrics.json").read_text())
    state = json.loads((out / "checkpoints" / "step-0000008" / "trainer_state.json").read_text())
    assert metrics["train_loop_seconds_all_launches"] >= state["seconds"] > 0
    # the card records the command the run started with, and the one that finished it
    first = "hjtranslate " + " ".join([*common, "--steps", "4", "--width", "16", "--lr", "5e-4",
                                       "--mmd", "gaussian"])
    last = f"hjtranslate train gaussians --output-dir {out} --steps 8 --lr 1e-4 --resume --no-progress"
    assert (metrics["command"], metrics["resumed_with"]) == (first, last)
    card = (out / "map" / "README.md").read_text()
    assert first in card and last in card
    # a run recorded before the first command was: the command that finished it stands alone
    config = json.loads((out / "config.json").read_text())
    del config["_started_as"]
    (out / "config.json").write_text(json.dumps(config))
    assert main(["train", "gaussians", "--output-dir", str(out), "--steps", "9", "--resume",
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"].endswith("--steps 9 --resume --no-progress")
    assert "resumed_with" not in metrics


def test_evaluate_says_a_vae_or_judge_is_not_a_map(tmp_path, capsys):
    for kind, config in (("VAE", {"_class_name": "AutoencoderKL"}), ("judge", {"dataset": "mnist"})):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        assert main(["evaluate", str(folder)]) == 2
        assert f"holds a {kind} (`hjtranslate train {kind.lower()}" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")
    assert main(["evaluate", str(tmp_path / "other")]) == 2
    assert "is not the output folder of `hjtranslate train`" in capsys.readouterr().err


def test_evaluate_checks_an_edited_run_record(tmp_path, capsys):
    # "dim": "2" compared a str with an int, "seed": null reached torch: bare tracebacks
    out = tmp_path / "g"
    assert main(["train", "gaussians", "--dim", "2", "--steps", "2", "--n", "300", "--eval-n", "50",
                 "--output-dir", str(out), "--no-progress"]) == 0
    good = json.loads((out / "config.json").read_text())
    for edit, message in [({"seed": None}, "records seed=null, which --seed cannot take"),
                          ({"seed": -1}, "records seed=-1, which --seed cannot take"),
                          ({"data_seed": 1.5}, "records data_seed=1.5, which --data-seed cannot"),
                          ({"dim": 2.0}, "records dim=2.0, which --dim cannot take"),
                          ({"dim": 3}, "records dim=3, and its map")]:
        (out / "config.json").write_text(json.dumps({**good, **edit}))
        capsys.readouterr()
        assert main(["evaluate", str(out)]) == 2, edit
        assert f"evaluate: {out / 'config.json'} {message}" in capsys.readouterr().err
    (out / "config.json").write_text(json.dumps({**good, "dim": "2"}))  # as --dim 2 reads it
    assert main(["evaluate", str(out)]) == 0


def test_evaluate_names_what_an_unfinished_run_needs(tmp_path, capsys):
    import shutil

    from hjtranslate.training import lock_folder, release_folder

    out = tmp_path / "run"
    assert main(["train", "gaussians", "--dim", "2", "--n", "300", "--eval-n", "200", "--steps", "4",
                 "--output-dir", str(out), "--no-progress"]) == 0
    shutil.rmtree(out / "map")  # as a run stopped before its end leaves it
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 2
    assert f"--output-dir {out} --resume` trains it on to its --steps" in capsys.readouterr().err
    lock_folder(out)
    try:
        assert main(["evaluate", str(out)]) == 2
        assert "in use by a running hjtranslate process (pid " in capsys.readouterr().err
    finally:
        release_folder(out)
    assert main(["train", "gaussians", "--output-dir", str(out), "--resume", "--no-progress"]) == 0
    assert (out / "map").is_dir()  # the advice works
    assert main(["evaluate", str(out), "--data-dir", str(tmp_path)]) == 2
    assert "--data-dir: task 'gaussians' reads no dataset folder" in capsys.readouterr().err


def test_explicit_options_are_what_the_command_line_typed():
    from hjtranslate.cli import _explicit_options

    typed = _explicit_options(["train", "color-transfer", "--source", "a.png", "--target", "b.png",
                               "--steps", "5", "--no-progress", "--resume"])
    assert {"source", "target", "steps", "no_progress", "resume"} <= typed
    # neither argparse defaults nor a task's set_defaults count as typed
    assert not typed & {"lr", "mmd", "semidual_weight", "width", "print_metrics"}


def test_resume_reads_only_a_run_record(tmp_path, capsys):
    from argparse import Namespace

    from hjtranslate.tasks.common import restore_recorded_options

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "lr": 1}))
    args = Namespace(task="gaussians", output_dir=str(tmp_path), lr=1e-3)
    assert restore_recorded_options(args, set()) == {} and args.lr == 1e-3
    # a task without a run folder (judges) has nothing to restore
    assert restore_recorded_options(Namespace(task="judges", output_root=str(tmp_path)), set()) == {}
    (tmp_path / "config.json").write_text("{not json")
    assert main(["train", "gaussians", "--output-dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume: cannot read" in err and "Traceback" not in err


def test_resume_derives_the_time_budget_again_from_the_deadline(tmp_path):
    """digits-to-fashion trains for the budget its deadline leaves but records the typed
    --time-budget (none), so a resumed launch derives its own budget from its own deadline;
    tests/test_digits_to_fashion.py checks what a run records."""
    from argparse import Namespace

    from hjtranslate.tasks.common import restore_recorded_options

    (tmp_path / "config.json").write_text(json.dumps(
        {"task": "digits-to-fashion", "deadline": 870.0, "time_budget": None, "width": 256}))
    args = Namespace(task="digits-to-fashion", output_dir=str(tmp_path), deadline=None,
                     time_budget=None, width=None)
    restore_recorded_options(args, set())
    assert (args.deadline, args.time_budget, args.width) == (None, None, 256)
    # a budget typed without a deadline is the run's own and carries over
    (tmp_path / "config.json").write_text(json.dumps(
        {"task": "digits-to-fashion", "deadline": None, "time_budget": 3000.0}))
    assert restore_recorded_options(args, set()) == {"time_budget": 3000.0}
    # records written before 2026-12-03 hold the budget their deadline left: not carried over
    args.time_budget = None
    (tmp_path / "config.json").write_text(json.dumps(
        {"task": "digits-to-fashion", "deadline": 870.0, "time_budget": 612.5}))
    restore_recorded_options(args, set())
    assert args.time_budget is None
    # today's records mark the budget as typed: with a deadline too, it carries over
    (tmp_path / "config.json").write_text(json.dumps(
        {"task": "digits-to-fashion", "deadline": 870.0, "time_budget": 600.0,
         "_time_budget_typed": True}))
    restore_recorded_options(args, set())
    assert args.time_budget == 600.0
    # a typed deadline belongs to the run: a resume keeps it (the preset's does not carry over)
    args.deadline = None
    (tmp_path / "config.json").write_text(json.dumps(
        {"task": "digits-to-fashion", "deadline": 60.0, "_deadline_typed": True}))
    restore_recorded_options(args, set())
    assert args.deadline == 60.0


def test_resume_refuses_another_cost_data_or_latent_space(tmp_path, capsys):
    """A checkpoint belongs to its cost, data and latent space: `--resume` with another is
    refused (it trained on silently), the same value typed again is fine."""
    from argparse import Namespace

    from hjtranslate.tasks.common import restore_recorded_options

    out = tmp_path / "run"
    common = ["train", "toy2d", "--n", "500", "--batch-size", "64", "--eval-n", "100",
              "--output-dir", str(out), "--no-progress", "--steps", "4"]
    assert main(common) == 0
    before = (out / "config.json").read_text()
    capsys.readouterr()
    for extra, what in ((["--cost", "pnorm", "--p", "3"], "--cost pnorm differs from the run's "
                         "quadratic"), (["--target", "circles"], "--target circles differs"),
                        # the run recorded no --head (the task chose mlp): its checkpoints say
                        (["--head", "affine"], "--head affine differs from the run's mlp (recorded "
                         f"in {out / 'checkpoints'}"),
                        # toy2d draws its points with the seed; the warm start made the first weights
                        (["--seed", "5"], "--seed 5 differs from the run's 0"),
                        (["--no-warm-start"], "--no-warm-start was not given when the run started")):
        assert main([*common, "--resume", *extra]) == 2
        err = capsys.readouterr().err
        # --init-from keeps a map's cost, data and head: not offered for them
        assert what in err and "--init-from" not in err
    # accelerate cannot load checkpoints without the average into a run with it: said up front
    assert main([*common, "--resume", "--ema-decay", "0.9"]) == 2
    assert ("--ema-decay 0.9 turns weight averaging on, and the run trained without it"
            in capsys.readouterr().err)
    assert (out / "config.json").read_text() == before
    assert main([*common, "--resume", "--cost", "quadratic", "--steps", "6"]) == 0
    (tmp_path / "config.json").write_text(json.dumps({"task": "digits-to-fashion", "vae": None}))
    from hjtranslate_plugins.vae import default_vae_path

    args = Namespace(task="digits-to-fashion", output_dir=str(tmp_path), vae=str(default_vae_path()))
    restore_recorded_options(args, {"vae"})  # the shipped VAE, named: the same latent space
    args.vae = str(tmp_path)
    with pytest.raises(ValueError, match="latent space"):
        restore_recorded_options(args, {"vae"})


def test_an_unknown_option_shows_its_commands_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "toy2d", "--frob", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: hjtranslate train toy2d" in err
    assert "hjtranslate train toy2d: error: unrecognized arguments: --frob 3" in err


def test_own_warnings_read_as_notes_on_the_command_line(capsys):
    import warnings

    import hjtranslate

    assert main(["plugins"]) == 0
    ours = str(Path(hjtranslate.__file__).parent / "tasks" / "digits_to_fashion.py")
    assert warnings.formatwarning("No latent_stats.json", RuntimeWarning, ours, 9) == (
        "note: No latent_stats.json\n")
    assert "UserWarning" in warnings.formatwarning("x", UserWarning, "/elsewhere/lib.py", 3)


def test_a_lost_peer_process_is_a_message(monkeypatch, capsys):
    """A two-process run whose other process was killed: gloo raises a RuntimeError; the user
    gets one line and the way on, not a traceback."""
    from hjtranslate.tasks import toy2d

    def lost(*args, **kwargs):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error "
                           "[127.0.0.1]:39051: Connection reset by peer")

    monkeypatch.setattr(toy2d, "toy_samples", lost)
    assert main(["train", "toy2d"]) == 2
    err = capsys.readouterr().err
    assert "another process of this run ended" in err and "--resume" in err


@pytest.mark.parametrize("extra,option", [
    (["--lambda", "100", "--lambda-slack", "0.5"], "--lambda-slack applies with --lambda auto"),
    (["--semidual-weight", "0", "--semidual-side", "target"], "--semidual-side applies with"),
    (["--cycle-weight", "0", "--cycle-share", "0.5"], "--cycle-share applies with --cycle-weight"),
    (["--monotone-directions", "all"], "--monotone-directions applies with --monotone-weight"),
    (["--fourier-features", "0", "--fourier-scale", "3"], "--fourier-scale applies with --fourier-features"),
    (["--quadratic", "none", "--quadratic-gain", "5"], "--quadratic-gain applies with a quadratic part"),
    (["--init-from", str(ROOT / "benchmarks" / "maps" / "swissroll-moons-s30"), "--no-warm-start"],
     "--no-warm-start applies with a run from scratch (not --init-from)"),
])
def test_an_option_its_switch_turns_off_is_refused(tmp_path, capsys, extra, option):
    out = tmp_path / "run"
    assert main(["train", "toy2d", "--n", "500", "--eval-n", "100", "--steps", "2", "--output-dir",
                 str(out), "--no-progress", *extra]) == 2
    assert option in capsys.readouterr().err and not out.exists()


def test_inert_options_are_refused_before_any_data_and_legit_ones_pass(tmp_path, capsys, monkeypatch):
    import hjtranslate.tasks.digits_to_fashion as d2f

    def no_data(*args, **kwargs):
        raise AssertionError("data was read before the refusal")

    monkeypatch.setattr(d2f, "encoded", no_data)
    assert main(["train", "digits-to-fashion", "--lambda", "10", "--lambda-slack", "0.5",
                 "--output-dir", str(tmp_path / "d")]) == 2
    assert "--lambda-slack applies with --lambda auto" in capsys.readouterr().err
    assert main(["train", "digits-to-fashion", "--manifold-gradient", "toward",
                 "--output-dir", str(tmp_path / "d")]) == 2
    assert "--manifold-gradient applies with --manifold-weight > 0" in capsys.readouterr().err
    # the task's head has no Fourier features above 2-D or for a p-norm cost
    for extra in (["train", "gaussians", "--dim", "4"], ["train", "toy2d", "--cost", "pnorm", "--p", "3"]):
        assert main([*extra, "--fourier-scale", "3", "--steps", "2", "--n", "500", "--eval-n", "100",
                     "--output-dir", str(tmp_path / "f"), "--no-progress"]) == 2
        assert "this run's head has no Fourier features" in capsys.readouterr().err
    # set by the task (toy2d's semi-dual weight 10, its 2-D Fourier features): accepted
    assert main(["train", "toy2d", "--semidual-side", "target", "--fourier-scale", "3", "--steps", "2",
                 "--n", "500", "--eval-n", "100", "--output-dir", str(tmp_path / "ok"),
                 "--no-progress"]) == 0


def test_help_shows_the_defaults(capsys):
    for argv, shown in ((["train", "toy2d", "--help"], ["training samples per side (default 1,000,000)",
                                                        "(default 3,000)", "(default 0)"]),
                        (["train", "vae", "--help"], ["training steps (default 900)"])):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert all(s in text for s in shown), text
        assert "(default None)" not in text and "(default False)" not in text


def test_checkpoints_moved_back_after_a_fresh_start_resume_with_their_own_options(
        tmp_path, capsys, monkeypatch):
    """A fresh start stopped at once leaves the earlier run's checkpoints in
    checkpoints-previous with that run's config.json; moved back as the note says, they resume
    with their own options (they resumed with the fresh start's lr and seed)."""
    import signal

    import hjtranslate.api as api

    run = tmp_path / "run"
    common = ["train", "toy2d", "--n", "500", "--batch-size", "64", "--eval-n", "100",
              "--steps", "8", "--output-dir", str(run), "--no-progress"]
    assert main(common) == 0
    train = api.train

    def stopped_at_once(model, batch_fn, *args, **kwargs):
        def batch(step, rank):
            if step == 0:
                os.kill(os.getpid(), signal.SIGINT)
            return batch_fn(step, rank)
        return train(model, batch, *args, **kwargs)

    assert (run / "transport.png").is_file()
    monkeypatch.setattr(api, "train", stopped_at_once)
    assert main([*common, "--lr", "3e-3", "--seed", "5"]) == 130
    monkeypatch.setattr(api, "train", train)
    assert not (run / "transport.png").exists()  # the replaced run's picture went with its map
    assert (run / "checkpoints-previous" / "run-config.json").is_file()
    shutil.rmtree(run / "checkpoints")
    os.replace(run / "checkpoints-previous", run / "checkpoints")  # as the note says
    capsys.readouterr()
    assert main([*common, "--steps", "12", "--resume"]) == 0
    assert "lr=0.003" not in capsys.readouterr().err
    record = json.loads((run / "config.json").read_text())
    assert (record["lr"], record["seed"], record["steps"]) == (1e-3, 0, 12)
    assert not (run / "checkpoints" / "run-config.json").exists()


def test_ctrl_c_while_starting_is_one_line(monkeypatch, capsys):
    """The command line starts without torch (the package imports it on first use), and a
    Ctrl-C while torch and the task load is one line, not a traceback through the import."""
    import hjtranslate.cli as cli

    code = "import sys, hjtranslate.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
    # what the package offers stays at hand: its names, its submodules, dir()
    code = ("import hjtranslate as h; print(h.costs.Cost.__name__, h.HJMap.__name__, "
            "'fit' in dir(h), h.metrics.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["Cost", "HJMap", "True", "hjtranslate.metrics"]

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_main", interrupted)
    assert cli.main(["train", "toy2d"]) == 130
    assert capsys.readouterr().err == "interrupted while starting: nothing was written.\n"


def test_an_interrupted_run_says_so_once_across_ranks(tmp_path, monkeypatch, capsys):
    """Ctrl-C during training: one line and exit 130 on rank 0; the other ranks stay quiet (a
    two-process launch printed it twice)."""
    import hjtranslate.api as api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train", interrupted)
    argv = ["train", "toy2d", "--n", "500", "--eval-n", "100", "--steps", "4",
            "--output-dir", str(tmp_path / "run"), "--no-progress"]
    # as under a two-process launch (a WORLD_SIZE of 2 would have accelerate look for its peer)
    monkeypatch.setattr("hjtranslate.cli._rank_zero", lambda: os.environ["RANK"] == "0")
    for rank, said in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        assert main(argv) == 130
        assert ("interrupted: the checkpoints written so far" in capsys.readouterr().err) == said


def test_bad_inputs_found_by_an_exploratory_test_of_digits_to_fashion(tmp_path, capsys,
                                                                     monkeypatch):
    """A part of a pipeline given to evaluate, a run without its map given to --init-from, a
    --seed beyond numpy's range, a hand-edited eval_n and an --export where nothing can be
    written: one-line errors before any training."""
    for part in ("vae", "judge_source"):
        assert main(["evaluate", str(ROOT / "models" / "digits-to-fashion" / part)]) == 2
        assert f"is the {part} part of the translation pipeline" in capsys.readouterr().err
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.json").write_text('{"task": "digits-to-fashion"}')
    run = ["train", "digits-to-fashion", "--steps", "2", "--output-dir", str(tmp_path / "r")]
    assert main([*run, "--init-from", str(killed)]) == 2
    assert "is a run that has not saved its map yet" in capsys.readouterr().err
    assert main([*run, "--seed", "99999999999999999999"]) == 2
    assert "--seed must be between 0 and 4294967295" in capsys.readouterr().err
    import tempfile

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main([*run, "--export", str(tmp_path / "ro" / "pipe")]) == 2
    assert f"Cannot write in {tmp_path} (Permission denied): --export" in capsys.readouterr().err
    monkeypatch.undo()
    assert not (tmp_path / "r").exists()
    # a run whose config.json was edited by hand
    (tmp_path / "edited" / "map").mkdir(parents=True)
    (tmp_path / "edited" / "config.json").write_text('{"task": "toy2d", "eval_n": "abc"}')
    shutil.copytree(ROOT / "models" / "digits-to-fashion" / "map", tmp_path / "edited" / "map",
                    dirs_exist_ok=True)
    assert main(["evaluate", str(tmp_path / "edited")]) == 2
    assert "records eval_n 'abc', not a whole number" in capsys.readouterr().err


def test_sigterm_after_training_says_so_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    """SIGTERM while a finished training is evaluated (no training loop to catch it) ends the
    run with the same message as Ctrl-C and the shell's code 143, not silently; --resume then
    writes the outputs."""
    import signal

    import hjtranslate.tasks.gaussians as gaussians

    evaluate = gaussians.evaluate_map
    monkeypatch.setattr(gaussians, "evaluate_map",
                        lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    out = tmp_path / "run"
    common = ["train", "gaussians", "--dim", "2", "--n", "200", "--eval-n", "100",
              "--batch-size", "32", "--steps", "4", "--output-dir", str(out), "--no-progress"]
    before = signal.getsignal(signal.SIGTERM)
    assert main(common) == 128 + signal.SIGTERM
    assert "interrupted: the checkpoints written so far, if any, are kept" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before and not (out / "metrics.json").exists()
    monkeypatch.setattr(gaussians, "evaluate_map", evaluate)
    assert main([*common, "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


def test_resume_in_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    """A mistyped --output-dir with --resume would otherwise start a whole new run."""
    assert main(["train", "toy2d", "--resume", "--output-dir", str(tmp_path / "tpyo")]) == 2
    err = capsys.readouterr().err
    assert f"--resume: there is no run in {tmp_path / 'tpyo'} (no such folder)" in err
    assert not (tmp_path / "tpyo").exists()
    assert main(["train", "vae", "--resume", "--output-dir", str(tmp_path / "tpyo")]) == 2
    assert "--resume: there is no run in" in capsys.readouterr().err


def test_api_advice_is_given_in_option_names(tmp_path, capsys):
    assert main(["train", "toy2d", "--mmd", "sinkhorn", "--match-pool", "100", "--steps", "1",
                 "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--match-pool needs an energy or gaussian match" in err
    assert "set --match-pool 0 or choose --mmd energy" in err


def test_an_interrupted_command_other_than_train_says_only_that(tmp_path, monkeypatch, capsys):
    import hjtranslate.pipeline as pipeline_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_module.TranslationPipeline, "from_pretrained", interrupted)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    assert main(["translate", "--input", str(image), "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err == "interrupted.\n"


def test_a_resume_on_another_number_of_processes_says_the_batch_changed(tmp_path, capsys):
    run = ["train", "gaussians", "--steps", "2", "--n", "200", "--eval-n", "100",
           "--batch-size", "32", "--no-progress", "--output-dir", str(tmp_path / "g")]
    assert main(run) == 0
    record = tmp_path / "g" / "config.json"
    record.write_text(record.read_text().replace('"num_processes": 1', '"num_processes": 2'))
    capsys.readouterr()
    assert main([*run, "--resume", "--steps", "3"]) == 0
    assert ("note: this run trained on 2 process(es) and goes on with 1: a step now takes "
            "1 x --batch-size 32 samples per side (it took 2 x).") in capsys.readouterr().err


def test_an_argument_error_is_printed_once_for_several_processes(tmp_path, capsys, monkeypatch):
    """Every process of `accelerate launch --num_processes 2` parses the same command line: its
    error (argparse's or a task's check) is printed by rank 0 only; every rank leaves it in
    torchrun's error file, which the launcher's failure table reads."""
    import hjtranslate.cli as cli

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    monkeypatch.setenv("WORLD_SIZE", "2")
    # a rank other than 0 waits before it exits: torchrun would end rank 0 before it printed
    slept = []
    monkeypatch.setattr(cli.time, "sleep", slept.append)
    for argv, wanted in ((["train", "toy2d", "--no-such-option"], "unrecognized arguments"),
                         (["train", "toy2d", "--steps", "x"], "invalid"),
                         (["train", "toy2d", "--seed", "-1", "--output-dir", str(tmp_path / "r")],
                          "--seed")):
        for rank in ("1", "0"):
            monkeypatch.setenv("RANK", rank)
            error_file.unlink(missing_ok=True)
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
            assert code == 2
            said = capsys.readouterr().err
            assert (wanted in said) == (rank == "0"), (argv, rank, said)
            assert wanted in json.loads(error_file.read_text())["message"]["message"]
            assert slept == ([cli.FIRST_RANK_GRACE_SECONDS] if rank == "1" else []), (argv, rank)
            slept.clear()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exc:
        main(["train", "toy2d", "--help"])
    assert exc.value.code == 0 and "usage:" in capsys.readouterr().out
    # a RANK left in the environment without a launch, or no error file: the error is printed
    for unset in ("WORLD_SIZE", "TORCHELASTIC_ERROR_FILE"):
        with monkeypatch.context() as env:
            env.delenv(unset)
            assert main(["train", "toy2d", "--seed", "-1", "--output-dir", str(tmp_path / "r")]) == 2
            assert "--seed" in capsys.readouterr().err, unset


def test_a_rank_stopped_by_the_launcher_does_not_say_nothing_was_written(monkeypatch, capsys):
    # torchrun ends the other ranks when one fails: "interrupted while starting: nothing was
    # written" was all rank 0 said, after a NaN at step 1 had written a checkpoint
    import signal

    import hjtranslate.cli as cli

    def stopped(argv):
        exc = KeyboardInterrupt()
        exc.signum = signal.SIGTERM
        raise exc

    monkeypatch.setattr(cli, "_main", stopped)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert cli.main(["train", "toy2d"]) == 128 + signal.SIGTERM
    said = capsys.readouterr().err
    assert "stopped by the launcher: another process of this run ended first" in said
    assert "nothing was written" not in said


@pytest.mark.parametrize(("env", "launched"), [
    ({}, "hjtranslate"),
    ({"WORLD_SIZE": "1", "ACCELERATE_MIXED_PRECISION": "no"}, "hjtranslate"),
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4", "ACCELERATE_MIXED_PRECISION": "bf16"},
     "accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 hjtranslate"),
    ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"},
     "accelerate launch --multi_gpu --num_processes 8 --num_machines 2 hjtranslate"),
    ({"ACCELERATE_MIXED_PRECISION": "fp16"}, "accelerate launch --mixed_precision fp16 hjtranslate"),
])
def test_a_run_records_how_it_was_launched(env, launched, monkeypatch):
    from hjtranslate.cli import _launched_as

    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "ACCELERATE_MIXED_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _launched_as() == launched


def test_resume_refuses_a_head_setting_the_run_left_to_its_defaults(tmp_path, capsys):
    """A run that left --depth to the task's default recorded none: a --resume with --depth 5
    went on with the checkpoint's depth 3 and recorded 5. The checkpoints' map decides."""
    out = str(tmp_path / "r")
    base = ["train", "toy2d", "--n", "500", "--eval-n", "100", "--output-dir", out, "--no-progress"]
    assert main([*base, "--steps", "4"]) == 0
    capsys.readouterr()
    assert main([*base, "--resume", "--steps", "6", "--depth", "5"]) == 2
    assert "--depth 5 differs from the run's 3" in capsys.readouterr().err
    assert main([*base, "--resume", "--steps", "6", "--depth", "3"]) == 0
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["depth"] == 3 and record["width"] is None  # untyped settings stay as recorded
    # the p-norm cost's head stores quadratic=True, which --quadratic cannot take: not checked
    # unless typed (a resume repeating its --depth was refused)
    pnorm = ["train", "toy2d", "--n", "500", "--eval-n", "100", "--output-dir", str(tmp_path / "p"),
             "--no-progress", "--cost", "pnorm", "--p", "3"]
    assert main([*pnorm, "--steps", "2"]) == 0
    assert main([*pnorm, "--resume", "--steps", "3", "--depth", "3"]) == 0


def test_translate_lets_each_full_size_picture_go_once_reduced(tmp_path, monkeypatch, capsys):
    """`translate` frames and shrinks each picture (to 28x28) as soon as it is decoded: a folder
    of large pictures is never held at once; a picture that does not decode is skipped under its
    name, the others translated."""
    import gc
    import weakref

    from hjtranslate import translate
    from hjtranslate.pipeline import TranslationPipeline

    pictures = tmp_path / "in"
    pictures.mkdir()
    for i in range(3):
        Image.new("L", (300, 200), 0).save(pictures / f"{i}.png")
        with Image.open(pictures / f"{i}.png") as im:
            im.paste(255, (100 + 20 * i, 50, 160, 150))
            im.save(pictures / f"{i}.png")
    (pictures / "3.png").write_bytes((pictures / "0.png").read_bytes()[:120])  # a header only
    opened, real_open = [], translate.open_image

    def open_image(path):
        image = real_open(path)
        opened.append(weakref.ref(image))
        return image

    alive, real_preprocess = [], TranslationPipeline._preprocess

    def preprocess(self, images, side, frame):
        gc.collect()
        alive.append(sum(ref() is not None for ref in opened))
        return real_preprocess(self, images, side, frame)

    monkeypatch.setattr(translate, "open_image", open_image)
    monkeypatch.setattr(TranslationPipeline, "_preprocess", preprocess)
    out = tmp_path / "out"
    assert main(["translate", "--input", str(pictures), "--out", str(out)]) == 0
    report = json.loads((out / "translations.json").read_text())
    assert [Path(item["input"]).name for item in report["items"]] == ["0.png", "1.png", "2.png"]
    assert [Path(s["input"]).name for s in report["skipped"]] == ["3.png"]
    assert "3.png" in capsys.readouterr().err
    assert len(opened) == 3 and max(alive) == 1  # only the picture being framed


def test_translate_names_every_picture_that_would_not_decode(tmp_path, capsys):
    """Pictures whose headers read but whose data does not: the error names each of them."""
    pictures = tmp_path / "in"
    pictures.mkdir()
    noise = torch.randint(0, 256, (200, 300), dtype=torch.uint8).numpy()
    Image.fromarray(noise).save(tmp_path / "whole.png")
    for name in ("a.png", "b.png"):  # the header and a part of the data
        (pictures / name).write_bytes((tmp_path / "whole.png").read_bytes()[:2000])
    assert main(["translate", "--input", str(pictures), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 images could be read" in err and "a.png" in err and "b.png" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_translate_of_blank_pictures_says_what_else_it_skipped(tmp_path, capsys):
    """Every picture blank once shrunk: the error also names the files passed over before."""
    pictures = tmp_path / "in"
    pictures.mkdir()
    Image.new("L", (64, 64), 0).save(pictures / "empty.png")
    (pictures / "notes.txt").write_text("not a picture")
    assert main(["translate", "--input", str(pictures), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "every image is blank once shrunk to 28x28 (1): nothing to translate (also skipped: " in err
    assert "notes.txt" in err and "Traceback" not in err
