"""Judges (hjtranslate.judges): save/load, scoring, Frechet distance, the shipped classifiers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hjtranslate import CheckpointError
from hjtranslate.judges import (
    Judge,
    build_classifier,
    frechet_distance,
    frechet_distances,
    load_judge,
    models_dir,
)


def tiny_judge() -> Judge:
    torch.manual_seed(0)
    kwargs = {"channels": [8, 8, 16, 16], "stem_width": 8}
    config = {"architecture": "resnet10t", "model_kwargs": kwargs, "dataset": "mnist",
              "normalize": {"mean": 0.5, "std": 0.5}}
    return Judge(build_classifier("resnet10t", **kwargs), config).eval()


def test_save_load_round_trip(tmp_path: Path) -> None:
    judge = tiny_judge()
    x = torch.rand(5, 1, 28, 28)
    judge.save_pretrained(tmp_path)
    again = load_judge(tmp_path)
    assert not again.training
    labels, conf = again.predict(x)
    assert labels.shape == conf.shape == (5,) and bool(((conf > 0) & (conf <= 1)).all())
    assert torch.allclose(again.logits(x), judge.logits(x), atol=1e-5)
    assert again.features(x).shape == (5, 16)
    assert again.accuracy(x, labels) == 1.0
    assert again.accuracy(x, (labels + 1) % 10) == 0.0  # the labels are read
    half = torch.where(torch.arange(4) < 2, labels[:4], (labels[:4] + 1) % 10)
    assert again.accuracy(x[:4], half) == 0.5


def test_strict_loading_and_errors(tmp_path: Path, monkeypatch) -> None:
    import hjtranslate.judges

    judge = tiny_judge()
    judge.config["model_kwargs"] = {"channels": [8, 8, 16, 32], "stem_width": 8}
    judge.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="do not fit"):
        load_judge(tmp_path)
    with pytest.raises(FileNotFoundError, match="No judge in .*nothing .*one of mnist, fashion-mnist"):
        load_judge(tmp_path / "nothing")
    monkeypatch.setattr(hjtranslate.judges, "models_dir", lambda: tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="shipped mnist judge is missing from .*gone.* "
                       "reinstall hjtranslate, or train it with `hjtranslate train judges`"):
        load_judge("mnist")
    with pytest.raises(ValueError, match="28x28"):
        tiny_judge().predict(torch.rand(2, 1, 32, 32))


def test_a_judge_config_cannot_point_timm_elsewhere(tmp_path: Path, monkeypatch) -> None:
    """A stranger's judge folder names a timm model, not a Hub repo or folder for timm to read
    (hf-hub:, local-dir:), nor a checkpoint file: refused before timm is called."""
    import json

    import timm

    judge = tiny_judge()
    judge.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm was called"))
    for change in ({"architecture": "hf-hub:someone/beacon"},
                   {"architecture": "local-dir:/somewhere"},
                   {"model_kwargs": {**config["model_kwargs"], "checkpoint_path": "/etc/x.pth"}}):
        (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(CheckpointError, match="which a judge folder may not"):
            load_judge(tmp_path)


def test_frechet_distance_with_tiny_judge() -> None:
    judge = tiny_judge()
    torch.manual_seed(1)
    a, b = torch.rand(200, 1, 28, 28), torch.rand(200, 1, 28, 28)
    same = frechet_distance(judge, a, b)
    far = torch.zeros(200, 1, 28, 28) + 0.1 * b
    other = frechet_distance(judge, a, far)
    assert 0 <= same < other
    # Several fakes against features of the real images computed once: the same distances.
    assert frechet_distances(judge, a, [b, far, b]) == pytest.approx([same, other, same], rel=1e-6)


# The shipped judges score 99.0 % (MNIST) and 91.1 % (Fashion-MNIST) on the full test sets.
@pytest.mark.parametrize("name,min_accuracy", [("mnist", 0.97), ("fashion-mnist", 0.88)])
def test_shipped_judges(shared_data: Path, name: str, min_accuracy: float) -> None:
    from hjtranslate.data import load_dataset, to_float

    if not (models_dir() / f"judge-{name}" / "config.json").is_file():
        pytest.skip("shipped judge not trained yet (hjtranslate train judges)")
    judge = load_judge(name)
    x, y = load_dataset(name, "test")
    x, y = to_float(x[:500]), y[:500]
    assert judge.accuracy(x, y) > min_accuracy
    fd_same = frechet_distance(judge, x[:250], x[250:])
    fd_noise = frechet_distance(judge, x[:250], torch.rand(250, 1, 28, 28))
    assert fd_same < fd_noise


def test_random_blur_blurs_half_the_batch_and_keeps_the_rest() -> None:
    from hjtranslate.tasks.judges import random_blur

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(200, 1, 28, 28)
    x[:, :, 14, 14] = 1.0  # a point: blurring spreads it, and keeps its mass
    y = random_blur(x, 1.5, g)
    unchanged = (y == x).flatten(1).all(1)
    assert 0.3 < unchanged.float().mean() < 0.7  # each image blurred with probability 1/2
    assert torch.allclose(y.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-5)
    assert float(y[~unchanged, 0, 14, 14].mean()) < 0.8  # the point spread out
    assert torch.equal(random_blur(x, 0.0, g), x)


def test_a_resumed_judges_run_takes_the_options_it_recorded(tmp_path, capsys):
    """`train judges --resume` without the run's options takes those its checkpoints record (or,
    once the judge finished, its config.json), as the other tasks do: it does not train on with
    the defaults, nor call its own finished judge another run's."""
    from hjtranslate.cli import main

    root = tmp_path / "judges"
    typed = ["--steps", "4", "--checkpoint-every", "2", "--batch-size", "16", "--lr", "5e-4"]
    assert main(["train", "judges", "--output-root", str(root), "--datasets", "mnist",
                 "--keep-checkpoints", *typed]) == 0
    capsys.readouterr()
    assert main(["train", "judges", "--output-root", str(root), "--datasets", "mnist", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "--resume: as recorded in" in err and "batch_size=16" in err and "lr=0.0005" in err
    assert "steps=4" in err
    # the architecture is what the checkpoints hold: another is refused in one line
    assert main(["train", "judges", "--output-root", str(root), "--datasets", "mnist", "--resume",
                 "--model-kwargs", '{"channels": [8, 16, 32, 64]}']) == 2
    err = capsys.readouterr().err
    assert "--model-kwargs" in err and "belong to that judge architecture" in err
    assert "size mismatch" not in err
    # finished (its checkpoints removed): its config.json holds the options; it is kept
    other = tmp_path / "judges2"
    assert main(["train", "judges", "--output-root", str(other), "--datasets", "mnist", *typed]) == 0
    capsys.readouterr()
    assert main(["train", "judges", "--output-root", str(other), "--datasets", "mnist", "--resume"]) == 0
    assert "the mnist judge in" in capsys.readouterr().err


def test_a_resumed_judges_run_keeps_a_finished_judge(tmp_path, capsys):
    """`train judges --resume` after the run finished one judge (and removed its checkpoints)
    keeps that judge instead of training it again from step 0; its files were put in place
    whole (no staging folder left)."""
    from hjtranslate.cli import main

    root = tmp_path / "judges"
    args = ["train", "judges", "--output-root", str(root), "--datasets", "mnist", "--steps", "2",
            "--batch-size", "16"]
    assert main(args) == 0
    judge = root / "judge-mnist"
    assert sorted(p.name for p in judge.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    before = (judge / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "the mnist judge in" in capsys.readouterr().err
    assert (judge / "model.safetensors").read_bytes() == before
    # damaged weights are trained again, not kept
    (judge / "model.safetensors").write_bytes(before[:100])
    assert main([*args, "--resume"]) == 0
    assert "the mnist judge in" not in capsys.readouterr().err
    before = (judge / "model.safetensors").read_bytes()
    assert len(before) > 100
    # another run's judge (left in place by a kill before this run's first checkpoint) is not
    # this run's finished one: trained
    # ... so it is not kept, and it is not replaced either without --overwrite
    assert main([*args, "--resume", "--seed", "3"]) == 2
    assert f"--output-root {root} holds a trained mnist judge ({judge})" in capsys.readouterr().err
    assert (judge / "model.safetensors").read_bytes() == before
    # a fresh run would replace the trained judge (the shipped ones by default): --overwrite
    assert main(args) == 2
    assert "which this run would replace" in capsys.readouterr().err
    assert (judge / "model.safetensors").read_bytes() == before
    assert main([*args, "--overwrite", "--seed", "4"]) == 0
    assert (judge / "model.safetensors").read_bytes() != before


def test_train_vae_and_judges_default_to_the_checkouts_models_from_any_folder(
        tmp_path, monkeypatch, capsys):
    """Without --output-dir / --output-root, `train vae` and `train judges` write the models
    digits-to-fashion reads (the checkout's models/), not a models/ under the current folder:
    from another folder they too refuse to replace the trained ones without --overwrite."""
    import shutil

    import hjtranslate.judges
    import hjtranslate.shipped
    import hjtranslate.tasks.judges
    from hjtranslate.cli import main

    models = tmp_path / "checkout" / "models"  # a stand-in for the checkout's models/
    models.mkdir(parents=True)
    for name in ("vae", "judge-mnist"):
        shutil.copytree(models_dir() / name, models / name)
    for module in (hjtranslate.judges, hjtranslate.shipped, hjtranslate.tasks.judges):
        monkeypatch.setattr(module, "models_dir", lambda: models)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "vae", "--steps", "1"]) == 2
    assert f"holds a trained VAE ({models / 'vae'})" in capsys.readouterr().err
    assert main(["train", "judges", "--datasets", "mnist", "--steps", "1"]) == 2
    assert f"holds a trained mnist judge ({models / 'judge-mnist'})" in capsys.readouterr().err
    assert not (elsewhere / "models").exists()


def test_frechet_distance_refuses_nan_images() -> None:
    images = torch.rand(8, 1, 28, 28)
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        frechet_distance(tiny_judge(), images, bad)


def test_a_judge_trained_by_a_resume_records_the_command_the_run_started_with(tmp_path):
    """A run stopped after its first judge: the resume trains the second, whose card names the
    command the run started with (kept in the first judge's config.json) and the resume."""
    import shutil

    from hjtranslate.cli import main

    root = tmp_path / "judges"
    first = ["train", "judges", "--output-root", str(root), "--datasets", "mnist,fashion-mnist",
             "--steps", "2", "--batch-size", "16"]
    assert main(first) == 0
    shutil.rmtree(root / "judge-fashion-mnist")  # as if stopped before its first checkpoint
    resume = ["train", "judges", "--output-root", str(root), "--datasets", "mnist,fashion-mnist",
              "--resume"]
    assert main(resume) == 0
    card = (root / "judge-fashion-mnist" / "README.md").read_text()
    assert "hjtranslate " + " ".join(first) in card
    assert "Resumed with `hjtranslate " + " ".join(resume) + "`" in card


def test_train_judges_finds_every_dataset_before_the_first_judge_trains(tmp_path, shared_data,
                                                                         capsys):
    """With Fashion-MNIST missing, the whole MNIST judge trained before the error."""
    from hjtranslate.cli import main

    only = tmp_path / "onlymnist"
    only.mkdir()
    (only / "mnist").symlink_to(shared_data / "mnist")
    root = tmp_path / "judges"
    assert main(["train", "judges", "--output-root", str(root), "--data-dir", str(only),
                 "--steps", "2", "--batch-size", "16"]) == 2
    assert "fashion-mnist" in capsys.readouterr().err
    assert not (root / "judge-mnist" / "model.safetensors").exists()


def test_a_judge_config_asking_for_a_huge_model_is_refused_before_it_is_built(tmp_path: Path):
    import json

    tiny_judge().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_kwargs"]["num_classes"] = 10**9  # 10^9 x width floats, were it built
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"do not fit .*asks for fc\.\w+ \(1000000000"):
        load_judge(tmp_path)
    config["model_kwargs"]["num_classes"] = 10
    config["model_kwargs"]["layers"] = [1, 1, 1, 3]  # only names the file lacks: compared too
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"do not fit .*asks for layer4\.\d+\.\S+ \(.*holds absent"):
        load_judge(tmp_path)
    config["model_kwargs"]["layers"] = [1, 1, 1, 10**6]  # built on the meta device: hours
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"do not fit .*a depth far beyond the file's"):
        load_judge(tmp_path)



def test_judge_options_that_cannot_make_a_ten_class_judge_are_refused(tmp_path, capsys):
    """Caught before any data is read (they ended in tracebacks after it), and nothing trains
    twice or not at all without a word."""
    from hjtranslate.cli import main

    root = tmp_path / "judges"
    run = ["train", "judges", "--output-root", str(root), "--steps", "2", "--batch-size", "16"]
    for extra, message in (
            (["--model-kwargs", '{"num_classes": 5}'], "gives scores of shape (5,) per image"),
            (["--model-kwargs", '{"in_chans": 3}'], "cannot classify one-channel 28x28 images"),
            (["--datasets", ","], "--datasets names no dataset"),
            (["--blur", "1e9"], "--blur must be between 0 and 14"),
            (["--resume", "--output-root", str(tmp_path / "typo")], "there are no judges in")):
        assert main([*run, *extra]) == 2, extra
        err = capsys.readouterr().err.replace("\n", " ")
        assert message in err, (extra, err)
    assert not root.exists() and not (tmp_path / "typo").exists()
    assert main([*run, "--datasets", "mnist,mnist"]) == 0  # trained once
    assert capsys.readouterr().out.count("judge-mnist") == 1
