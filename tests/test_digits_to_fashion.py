"""The digits-to-fashion task end to end on a tiny budget (real data, shipped VAE and judges)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hjtranslate.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/datasets")


@pytest.fixture(scope="module")
def _cache(tmp_path_factory):
    # One cache for the module, as a user's runs share one: the map-independent yardsticks of an
    # evaluation subset are computed by the first test that needs them and read by the others.
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _env(_cache, monkeypatch):
    monkeypatch.setenv("HJT_DATA_DIR", str(DATA))
    monkeypatch.setenv("HJT_CACHE_DIR", str(_cache))


@pytest.mark.parametrize("mode", ["shared", "conditional"])
def test_tiny_run_writes_map_metrics_and_grids(tmp_path, mode, capsys, monkeypatch):
    import hjtranslate.tasks.digits_to_fashion as d2f

    out = tmp_path / "run"
    # One deadline that cannot be met, one that can. The clock starts with the process (here
    # pytest's): the time spent so far and the evaluation to come are taken off.
    deadline = 1 if mode == "shared" else 100_000
    assert main(["train", "digits-to-fashion", "--mode", mode, "--train-per-class", "20",
                 "--eval-n", "200", "--steps", "5", "--batch-size", "100", "--width", "32",
                 "--output-dir", str(out), "--no-progress", "--deadline", str(deadline)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    if deadline == 1:
        assert "the deadline leaves under 30 s of training" in printed
        assert metrics["training_budget_seconds"] == d2f.MIN_TRAINING_SECONDS
    else:
        assert deadline - 5000 < metrics["training_budget_seconds"] < deadline - 30
        assert 0 < metrics["run_seconds"] < deadline - metrics["training_budget_seconds"]
    # config.json keeps what was typed: a resumed launch derives its budget from its own deadline
    recorded = json.loads((out / "config.json").read_text())
    assert (recorded["time_budget"], recorded["deadline"]) == (None, deadline)
    names = {p.name for p in out.iterdir()}
    assert {"map", "metrics.json", "config.json", "grid_forward.png", "grid_backward.png"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy_forward", "accuracy_backward", "fd_forward", "fd_forward_floor",
                "cost_ratio_per_class", "duality_gap_max", "round_trip_rel_error"):
        assert key in metrics
    assert len(metrics["cost_ratio_per_class"]) == 10
    assert all(sd > 0 for sd in metrics["duality_gap_sd_per_class"])
    assert metrics["duality_gap_max_of_a_perfect_map"] > max(metrics["duality_gap_sd_per_class"]) / 2
    # Decodes of real target latents score far closer to the real images than a 5-step map.
    for side in ("forward", "backward"):
        assert 0 < metrics[f"fd_{side}_of_a_perfect_map"] < 0.8 * metrics[f"fd_{side}"], metrics
    # ... and the judges know them: decodes of training latents in the translated set's class
    # mix (with the wrong classes beside them these would be near 10 %).
    assert metrics["accuracy_backward_of_a_perfect_map"] > 0.9, metrics
    assert metrics["accuracy_forward_of_a_perfect_map"] > 0.75, metrics
    from PIL import Image

    grid = Image.open(out / "grid_forward.png")
    assert grid.size[1] > 10 * 28  # one row per class
    from hjtranslate import HJMap

    m = HJMap.from_pretrained(out / "map")
    assert m.dim == 64 and m.conditional == (mode == "conditional") and m.num_classes == 10
    assert m.encoder_config["name"] == "vae"
    # The map-independent figures come from the cache the run wrote: none is computed again.
    monkeypatch.setattr(d2f, "perfect_map_images", lambda *a: pytest.fail("references recomputed"))
    assert main(["evaluate", str(out), "--n", "200"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["fd_forward_floor"] == metrics["fd_forward_floor"]
    assert again["cost_ratio_per_class"] == pytest.approx(metrics["cost_ratio_per_class"])


def test_export_into_a_folder_of_other_files_is_refused_before_training(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep")
    run = tmp_path / "run"
    assert main(["train", "digits-to-fashion", "--steps", "2", "--export", str(notes),
                 "--output-dir", str(run)]) == 2
    assert "--export" in (err := capsys.readouterr().err) and "name a new or empty one" in err
    assert [p.name for p in notes.iterdir()] == ["todo.txt"] and not run.exists()
    assert main(["train", "digits-to-fashion", "--steps", "2", "--export", str(run),
                 "--output-dir", str(run)]) == 2
    assert "overlap: a pipeline needs a folder of its own" in capsys.readouterr().err
    assert main(["train", "digits-to-fashion", "--steps", "2", "--export", str(run),
                 "--output-dir", str(run / "inside")]) == 2
    assert "overlap" in capsys.readouterr().err and not run.exists()


def test_evaluate_through_another_vae_only_in_the_same_latent_space(tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    # The first 12 test images miss classes 3 and 8 on both sides: the per-class figures and the
    # grids skip what is missing instead of failing after training.
    assert main(["train", "digits-to-fashion", "--train-per-class", "20", "--eval-n", "12",
                 "--steps", "2", "--batch-size", "100", "--width", "32",
                 "--output-dir", str(out), "--no-progress"]) == 0
    ratios = json.loads((out / "metrics.json").read_text())["cost_ratio_per_class"]
    assert ratios[3] is None and ratios[8] is None and ratios[1] is not None
    same, moved = tmp_path / "vae-same", tmp_path / "vae-moved"
    shutil.copytree(ROOT / "models" / "vae", same)   # e.g. a --decoder-only fine-tune
    shutil.copytree(ROOT / "models" / "vae", moved)  # e.g. a retrained VAE
    stats = json.loads((moved / "latent_stats.json").read_text())
    stats["scale"] = [2 * s for s in stats["scale"]]
    (moved / "latent_stats.json").write_text(json.dumps(stats))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--n", "100", "--vae", str(same)]) == 0
    assert "accuracy_forward" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--n", "100", "--vae", str(moved)]) == 2
    assert "trained in another latent space" in capsys.readouterr().err
    # nor can a map be fine-tuned in another latent space, or in the other mode
    tune = ["train", "digits-to-fashion", "--init-from", str(out), "--steps", "1",
            "--output-dir", str(tmp_path / "tuned"), "--no-progress"]
    assert main([*tune, "--vae", str(moved)]) == 2
    assert "trained in another latent space" in capsys.readouterr().err
    assert main([*tune, "--mode", "shared"]) == 2
    assert "is a conditional-mode map; pass --mode conditional" in capsys.readouterr().err
    # the manifold term reads the VAE's round trip (its own tests: test_engine, test_vae)
    tune += ["--train-per-class", "20", "--eval-n", "12", "--manifold-weight", "1"]
    assert main([*tune, "--manifold-samples", "0"]) == 2
    assert "--manifold-samples must be a whole number >= 1" in capsys.readouterr().err
    assert main([*tune, "--manifold-samples", "2"]) == 0
    assert json.loads((tmp_path / "tuned" / "metrics.json").read_text())["train_manifold"] >= 0


def test_missing_data_is_a_clear_error_and_leaves_no_complete_looking_folder(tmp_path, monkeypatch,
                                                                             capsys):
    out = tmp_path / "run"
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("HJT_DATA_DIR", str(tmp_path / "empty"))
    capsys.readouterr()
    assert main(["train", "digits-to-fashion", "--output-dir", str(out), "--steps", "2"]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not (out / "map").exists() and not (out / "metrics.json").exists()


def test_two_cpu_processes_from_the_repo_root(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 ... hjtranslate train digits-to-fashion`
    as typed from the repository root: two gloo ranks in sync, evaluation on rank 0 only."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "0", "hjtranslate", "train", "digits-to-fashion",
           "--train-per-class", "20", "--eval-n", "100", "--steps", "6", "--batch-size", "100",
           "--width", "32", "--output-dir", str(out), "--no-progress", "--deadline", "3000"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["ranks_in_sync"] is True
    assert metrics["training_budget_seconds"] < 3000  # rank 0's budget, shared with rank 1


def _settings(*argv: str, keys: tuple[str, ...]) -> tuple:
    """The task's settings after its preset is applied to the command line ``argv``."""
    import argparse

    from hjtranslate.tasks.digits_to_fashion import _apply_preset, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(list(argv))
    _apply_preset(args)
    return tuple(getattr(args, k) for k in keys)


def test_preset_deadline_only_applies_to_the_preset_step_count():
    from hjtranslate.tasks.digits_to_fashion import PRESETS

    def applied(*argv):
        return _settings(*argv, keys=("steps", "time_budget", "deadline"))

    assert applied() == (PRESETS["cpu"]["steps"], None, PRESETS["cpu"]["deadline"])
    assert applied("--steps", "300") == (300, None, None)
    assert applied("--time-budget", "60") == (PRESETS["cpu"]["steps"], 60.0, None)
    assert applied("--steps", "300", "--deadline", "600") == (300, None, 600.0)
    assert applied("--preset", "gpu") == (PRESETS["gpu"]["steps"], None, None)
    with pytest.raises(ValueError, match="--deadline must be a positive"):
        applied("--deadline", "0")


def test_quadratic_part_and_gain_defaults():
    """Conditional mode: one warm-started Hopf-Lax part per class, small steps (gain 1); a part
    that starts at the identity (no warm start, the shared eigenbasis part, another cost) must
    travel far (gain 10); explicit options win."""

    def applied(*argv):
        return _settings(*argv, keys=("quadratic", "quadratic_gain"))

    assert applied() == ("hopf_lax_per_class", 1.0)
    assert applied("--no-warm-start") == ("hopf_lax_per_class", 10.0)
    assert applied("--mode", "shared") == ("hopf_lax", 10.0)
    assert applied("--mode", "shared", "--quadratic", "hopf_lax_spd") == ("hopf_lax_spd", 1.0)
    assert applied("--cost", "pnorm", "--quadratic", "affine") == ("affine", 10.0)
    assert applied("--quadratic-gain", "3") == ("hopf_lax_per_class", 3.0)


def test_latent_cache_tells_apart_subsets_with_the_same_labels(tmp_path):
    from hjtranslate_plugins.vae import VAEEncoder

    from hjtranslate.data import load_dataset
    from hjtranslate.tasks.digits_to_fashion import balanced_subset, encoded

    enc = VAEEncoder()
    _, labels = load_dataset("mnist", "test", None)
    a, b = balanced_subset(labels, 2, seed=0), balanced_subset(labels, 2, seed=1)
    assert torch.equal(labels[a], labels[b]) and not torch.equal(a, b)  # other seeds, same labels
    images_a, za, _ = encoded(enc, "mnist", "test", None, a, tmp_path)
    images_b, zb, _ = encoded(enc, "mnist", "test", None, b, tmp_path)  # a cache hit must not answer
    assert not torch.equal(za, zb)
    assert torch.allclose(zb, enc.encode(images_b).cpu(), atol=1e-5)


def test_latent_cache_tells_apart_other_images_with_the_same_labels(tmp_path, monkeypatch):
    """An edited copy of a dataset (inverted images, the same labels) read the cached latents
    of the original: the evaluation mixed stale figures with fresh ones."""
    from hjtranslate_plugins.vae import VAEEncoder

    import hjtranslate.data
    from hjtranslate.data import load_dataset
    from hjtranslate.tasks.digits_to_fashion import balanced_subset, encoded

    enc = VAEEncoder()
    images, labels = load_dataset("mnist", "test", None)
    index = balanced_subset(labels, 2, seed=0)
    _, z, _ = encoded(enc, "mnist", "test", None, index, tmp_path)
    monkeypatch.setattr(hjtranslate.data, "load_dataset", lambda *a, **k: (255 - images, labels))
    inverted, z_inv, _ = encoded(enc, "mnist", "test", None, index, tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and not torch.equal(z, z_inv)
    assert torch.allclose(z_inv, enc.encode(inverted).cpu(), atol=1e-5)


def test_gpu_preset_builds_its_larger_head_and_runs_on_a_cpu(tmp_path):
    """The `gpu` preset's architecture end to end (a few steps; no GPU is needed to build it)."""
    from hjtranslate.tasks.digits_to_fashion import PRESETS

    out = tmp_path / "run"
    assert main(["train", "digits-to-fashion", "--preset", "gpu", "--train-per-class", "20",
                 "--eval-n", "100", "--steps", "2", "--batch-size", "100",
                 "--output-dir", str(out), "--no-progress"]) == 0
    head = json.loads((out / "map" / "config.json").read_text())["head_kwargs"]
    assert (head["width"], head["depth"]) == (PRESETS["gpu"]["width"], PRESETS["gpu"]["depth"])
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2


def test_the_shipped_pipeline_evaluates_offline(capsys, tmp_path):
    """`hjtranslate evaluate models/digits-to-fashion` (or its map folder) scores the shipped
    map through the pipeline's own VAE and judges, with nothing downloaded."""
    for folder in (ROOT / "models" / "digits-to-fashion", ROOT / "models" / "digits-to-fashion" / "map"):
        capsys.readouterr()
        assert main(["evaluate", str(folder), "--n", "100"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["accuracy_forward"] > 0.6 and metrics["accuracy_backward"] > 0.8
        assert 0 < metrics["dual_certified_over_exact_ot_min"] <= 1 + 1e-9
    # the data folder named on the command line (without $HJT_DATA_DIR)
    data_dir = os.environ.pop("HJT_DATA_DIR")
    try:
        assert main(["evaluate", str(folder), "--n", "100", "--data-dir", data_dir]) == 0
    finally:
        os.environ["HJT_DATA_DIR"] = data_dir
    assert json.loads(capsys.readouterr().out)["accuracy_forward"] == metrics["accuracy_forward"]
    assert main(["evaluate", str(folder), "--n", "100", "--data-dir", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err  # it looked there
    # beside the test sets alone: everything but the perfect-map yardsticks (training decodes)
    for name in ("mnist", "fashion-mnist"):
        (tmp_path / name).mkdir()
        for f in Path(data_dir, name).glob("t10k-*"):
            (tmp_path / name / f.name).symlink_to(f)
    with pytest.warns(UserWarning, match=r"perfect-map yardsticks are not measured .*mnist "
                      r"\(train\) not found"):
        assert main(["evaluate", str(folder), "--n", "100", "--data-dir", str(tmp_path)]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["accuracy_forward"] == metrics["accuracy_forward"]
    assert alone["accuracy_forward_of_a_perfect_map"] is None
    assert alone["fd_backward_of_a_perfect_map"] is None and alone["fd_backward_floor"] > 0
    # a sample too small for every class: the per-class summaries say how many they cover
    with pytest.warns(UserWarning, match=r"The evaluation sample \(10 images a side\) holds 2 "
                      "or more images of only"):
        assert main(["evaluate", str(folder), "--n", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["classes_evaluated"] < 10


def test_a_killed_encodings_temporary_files_are_removed(tmp_path):
    """The latent cache's temporary files of killed encodings go at the next encoding; those
    of a live process stay."""
    import os

    import torch
    from hjtranslate_plugins.vae import VAEEncoder

    from hjtranslate.tasks.digits_to_fashion import encoded

    cache = tmp_path / "latents"
    cache.mkdir()
    dead = cache / "abc-mnist-train-500-0123.999999999.tmp"
    live = cache / f"abc-mnist-train-500-0123.{os.getpid()}.tmp"
    for f in (dead, live):
        f.write_bytes(b"half")
        os.utime(f, (os.path.getmtime(f) - 7200,) * 2)  # two hours old
    images, z, labels = encoded(VAEEncoder(), "mnist", "test", str(DATA), torch.arange(8), cache)
    assert z.shape == (8, 64) and not dead.exists() and live.exists()
    assert len(list(cache.glob("*.safetensors"))) == 1
