"""TranslationPipeline: the shipped VAE and judges with small maps trained for a few steps on real
MNIST / Fashion-MNIST latents; folders, the loopback Hub, offline loading, inputs, the CLI."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from data_paths import SHARED
from hjtranslate_plugins.vae import VAEEncoder
from huggingface_hub import HfApi, ModelCard, constants
from PIL import Image, ImageDraw

from hjtranslate import CheckpointError, HJMap, fit
from hjtranslate.cli import main
from hjtranslate.encoders import Encoder
from hjtranslate.pipeline import INDEX_FILE, TranslationOutput, TranslationPipeline

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
N_TRAIN = 200

pytestmark = pytest.mark.skipif(
    not all((MODELS / d / "config.json").is_file() for d in ("vae", "judge-mnist", "judge-fashion-mnist")),
    reason="the shipped models/vae and judges are needed",
)


@pytest.fixture(scope="module")
def data():
    """(digits, digit labels, clothes, clothes labels): the first test images, uint8."""
    from hjtranslate.data import load_dataset

    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"datasets not found in {SHARED}")
    xs, ls = load_dataset("mnist", "test", data_dir=SHARED)
    xt, lt = load_dataset("fashion-mnist", "test", data_dir=SHARED)
    return xs[:N_TRAIN], ls[:N_TRAIN], xt[:N_TRAIN], lt[:N_TRAIN]


@pytest.fixture(scope="module")
def pipes(data):
    """Two pipelines on the shipped VAE and judges: a conditional head and a shared potential,
    each fitted for 20 steps on the VAE latents of 200 digits and 200 clothes."""
    xs, ls, xt, lt = data
    base = TranslationPipeline.from_components(
        MODELS / "vae", HJMap(64, head="conditional", num_classes=10), "mnist", "fashion-mnist"
    )
    zs, zt = base.vae.encode(xs), base.vae.encode(xt)
    out = {}
    for mode in ("conditional", "shared"):
        m = fit(zs, zt, labels=(ls, lt), conditional=mode == "conditional", steps=20,
                batch_size=128, head_kwargs={"width": 64, "depth": 2}, seed=0)
        m.metrics = {"judge_accuracy": 0.25, "fid": {"forward": 12.5}, "note": "tiny"}
        out[mode] = TranslationPipeline.from_components(
            MODELS / "vae", m, MODELS / "judge-mnist", "fashion-mnist"
        )
    return out


@pytest.fixture(scope="module")
def saved(pipes, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "pipe"
    pipes["conditional"].save_pretrained(folder)
    return folder


def assert_same_outputs(a: TranslationOutput, b: TranslationOutput) -> None:
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)
    assert [np.asarray(i).tobytes() for i in a.images] == [np.asarray(i).tobytes() for i in b.images]
    assert a.source_classes == b.source_classes and a.target_classes == b.target_classes
    assert a.confidences == b.confidences


def same_pipelines(a: TranslationPipeline, b: TranslationPipeline, data) -> None:
    xs, ls, xt, lt = data
    for images, k, direction in ((xs[:6], ls[:6], "forward"), (xt[:6], lt[:6], "backward")):
        assert_same_outputs(a(images, k.tolist(), direction), b(images, k.tolist(), direction))
    assert_same_outputs(a(xs[:4]), b(xs[:4]))  # detected classes


# -- folders --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["conditional", "shared"])
def test_save_load_round_trip(pipes, data, tmp_path, mode):
    pipe = pipes[mode]
    folder = pipe.save_pretrained(tmp_path / "pipe")
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert {INDEX_FILE, "README.md", "vae/config.json", "vae/latent_stats.json",
            "vae/diffusion_pytorch_model.safetensors", "map/config.json", "map/model.safetensors",
            "judge_source/model.safetensors", "judge_target/config.json"} <= names
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index["_class_name"] == "TranslationPipeline" and index["vae"] == "vae"
    shared = (folder / INDEX_FILE).stat().st_mode & 0o777  # the umask's (safetensors: 0600)
    assert {p.stat().st_mode & 0o777 for p in folder.rglob("*.safetensors")} == {shared}
    assert index["source_dataset"] == "mnist" and index["target_dataset"] == "fashion-mnist"
    assert index["target_class_names"][9] == "Ankle boot" and len(index["source_class_names"]) == 10
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "hjtranslate" and "hjtranslate" in card.data.tags
    assert card.data.datasets == ["mnist", "zalando-datasets/fashion_mnist"]
    assert card.data.metrics == ["fid/forward", "judge_accuracy"]
    assert "TranslationPipeline.from_pretrained('pipe')" in card.text  # absolute: its name
    assert "HJMap.from_pretrained('pipe/map')" in (folder / "map" / "README.md").read_text()

    loaded = TranslationPipeline.from_pretrained(folder)
    assert loaded.map.conditional == (mode == "conditional") and not loaded.map.training
    same_pipelines(pipe, loaded, data)
    a, b = pipe(data[0][:3], morph_steps=3), loaded(data[0][:3], morph_steps=3)
    assert [[np.asarray(f).tobytes() for f in fs] for fs in a.frames] == \
        [[np.asarray(f).tobytes() for f in fs] for fs in b.frames]

    # saving again over the folder it was loaded from: atomic replace, no temporary leftovers
    loaded.map.metrics = {"judge_accuracy": 0.5}
    loaded.save_pretrained(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    again = TranslationPipeline.from_pretrained(folder)
    assert again.map.metrics == {"judge_accuracy": 0.5}
    same_pipelines(pipe, again, data)


def test_save_writes_the_parts_as_they_are_in_memory(saved, data, tmp_path):
    """A part changed in memory (fine-tuned, or replaced) is saved as it is; an unchanged one is
    its source folder's copy, which keeps its card."""
    pipe = TranslationPipeline.from_pretrained(saved)
    x = data[2][:3]
    with torch.no_grad():
        for p in pipe.judge_target.model.parameters():
            p.mul_(0.5)
    pipe.judge_source = copy.deepcopy(pipe.judge_target)  # a clothes judge on both sides
    pipe.save_pretrained(tmp_path / "changed")
    again = TranslationPipeline.from_pretrained(tmp_path / "changed")
    for key in ("judge_source", "judge_target"):
        torch.testing.assert_close(getattr(again, key).logits(x), pipe.judge_target.logits(x))
    assert again.judge_source.classes == pipe.judge_target.classes
    assert (tmp_path / "changed" / "vae" / "README.md").read_bytes() == (
        MODELS / "vae" / "README.md").read_bytes()  # the VAE unchanged: its card kept


def test_float64_map_and_device_arguments(pipes, data, tmp_path):
    p64 = TranslationPipeline.from_pretrained(pipes["conditional"].save_pretrained(tmp_path / "p"),
                                              dtype=torch.float64, device="cpu")
    assert p64.dtype == torch.float64 and p64.device.type == "cpu"
    a, b = pipes["conditional"](data[0][:4], data[1][:4].tolist()), p64(data[0][:4], data[1][:4].tolist())
    assert b.latents.dtype == torch.float64
    torch.testing.assert_close(b.latents.float(), a.latents, rtol=1e-4, atol=1e-4)
    p64.save_pretrained(tmp_path / "again")  # weights are written in float32
    again = TranslationPipeline.from_pretrained(tmp_path / "again")
    assert again.dtype == torch.float32
    # diffusers-style .to(): the map's dtype, every part's device
    assert again.to("cpu", torch.float64) is again and again.dtype == torch.float64
    torch.testing.assert_close(again(data[0][:4], data[1][:4].tolist()).latents, b.latents)
    for device, message in (("meta", "holds no values"), ("gpu", "is not a device"),
                            ("cpu:1", "one CPU device"), ("mps", "no usable mps device")):
        with pytest.raises(ValueError, match=message):
            TranslationPipeline.from_pretrained(tmp_path / "again", device=device)
        with pytest.raises(ValueError, match=message):
            again.to(device)
    with pytest.raises(ValueError, match="dtype must be"):
        again.to(dtype=torch.float16)
    with pytest.raises(ValueError, match="is not a device"):
        again.to("gpu", torch.float32)  # refused whole: the map keeps its dtype
    assert again.dtype == torch.float64
    assert again.to(torch.float32).dtype == torch.float32  # a dtype alone, positionally


# -- inputs ---------------------------------------------------------------------------------
def test_input_kinds_give_the_same_translation(pipes, data):
    pipe = pipes["conditional"]
    x, k = data[0][:3], data[1][:3].tolist()
    ref = pipe(x, k)  # uint8 tensor (n, 28, 28)
    assert len(ref.images) == 3 and all(i.size == (28, 28) and i.mode == "L" for i in ref.images)
    assert ref.notes == [[], [], []]
    pil = [Image.fromarray(a.numpy()) for a in x]
    variants = {
        "PIL list": pil,
        "numpy (n, 28, 28)": x.numpy(),
        "numpy (n, 28, 28, 1)": x.numpy()[..., None],
        "float tensor (n, 1, 28, 28)": x.float()[:, None] / 255,
        "list of mixed": [pil[0], x[1].numpy(), x[2].float()[None] / 255],
    }
    for name, images in variants.items():
        out = pipe(images, k)
        torch.testing.assert_close(out.latents, ref.latents, rtol=0, atol=1e-5, msg=name)
    one = pipe(pil[0], k[0])  # a single PIL image
    assert len(one.images) == 1 and one.source_classes == [k[0]]
    torch.testing.assert_close(one.latents, ref.latents[:1], rtol=0, atol=1e-5)


def test_a_photo_is_turned_upright_by_its_exif_orientation(pipes, data, tmp_path):
    """Phones store photos sideways or upside down and tag them: the file, the PIL image and the
    app's upload are read as a viewer shows them (a square image too)."""
    from hjtranslate_apps.translate import read_upload

    pipe = pipes["conditional"]
    digit = Image.fromarray(data[0][0].numpy())
    k = int(data[1][0])
    ref = pipe(digit, k)
    for orientation, stored in ((3, digit.rotate(180)), (6, digit.transpose(Image.Transpose.ROTATE_90)),
                                (2, digit.transpose(Image.Transpose.FLIP_LEFT_RIGHT))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"photo-{orientation}.png"
        stored.save(path, exif=exif)
        for given in (path, Image.open(path)):
            out = pipe(given, k)
            assert out.notes == [[f"turned upright (EXIF orientation {orientation})"]]
            torch.testing.assert_close(out.latents, ref.latents, rtol=0, atol=1e-5)
        shown, notes = read_upload(path)
        assert notes == [f"turned upright (EXIF orientation {orientation})"]
        assert np.array_equal(np.asarray(shown), np.asarray(digit))


def test_colour_size_and_polarity_conversions(pipes, data):
    pipe = pipes["conditional"]
    digit = Image.fromarray(data[0][0].numpy())
    k = int(data[1][0])
    ref = pipe(digit, k)

    rgb = Image.merge("RGB", [digit] * 3).resize((64, 64), Image.BILINEAR)
    out = pipe(rgb)  # class detected on the converted image
    assert out.notes[0][0] == "converted colour to grey (BT.601 luma)"
    assert out.notes[0][1].startswith("framed the ") and "as mnist does" in out.notes[0][1]
    assert out.source_classes == [k] and out.images[0].size == (28, 28)
    assert pipe(rgb, frame=False).notes[0] == ["converted colour to grey (BT.601 luma)",
                                               "resized 64x64 to 28x28"]

    light = Image.fromarray(255 - data[0][0].numpy())  # dark ink on white paper
    out = pipe(light, k)
    assert len(out.notes[0]) == 1 and out.notes[0][0].startswith("inverted")
    torch.testing.assert_close(out.latents, ref.latents, rtol=0, atol=1e-4)
    assert pipe(light).source_classes == [k]

    wide = np.zeros((28, 40), np.uint8)
    wide[:, 6:34] = data[0][0].numpy()
    out = pipe(wide, k, frame=False)
    assert out.notes[0] == ["padded 40x28 to 40x40", "resized 40x40 to 28x28"]

    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = data[0][0].numpy()  # black strokes on a transparent background
    out = pipe(Image.fromarray(rgba), k)
    assert out.notes[0][:2] == ["converted colour to grey (BT.601 luma)",
                                "composited transparency onto white (dark strokes)"]
    assert len(out.notes[0]) == 3 and out.notes[0][2].startswith("inverted")
    torch.testing.assert_close(out.latents, ref.latents, rtol=0, atol=1e-4)
    rgba[..., :3] = 255  # white strokes on a transparent background
    out = pipe(Image.fromarray(rgba), k)
    assert out.notes[0][1:] == ["composited transparency onto black (light strokes)"]
    torch.testing.assert_close(out.latents, ref.latents, rtol=0, atol=1e-4)


def test_morph_frames(pipes, data):
    pipe = pipes["conditional"]
    for direction, x, k in (("forward", data[0][:2], data[1][:2]), ("backward", data[2][:2], data[3][:2])):
        out = pipe(x, k.tolist(), direction=direction, morph_steps=5)
        assert len(out.frames) == 2 and all(len(f) == 5 for f in out.frames)
        assert all(f.size == (28, 28) and f.mode == "L" for fs in out.frames for f in fs)
        for j in range(2):  # the last frame is the translation; the first the input's reconstruction
            assert np.array_equal(np.asarray(out.frames[j][-1]), np.asarray(out.images[j]))
            recon = pipe.vae.decode(pipe.vae.encode(x[j: j + 1]))[0, 0]
            first = torch.from_numpy(np.asarray(out.frames[j][0]).astype(np.float32) / 255)
            assert (first - recon).abs().max() < 0.01
    assert pipe(data[0][:2], 1).frames is None
    for bad in (1, -2, 2.5):
        with pytest.raises(ValueError, match="morph_steps must be 0"):
            pipe(data[0][:2], 1, morph_steps=bad)


def test_class_detection_and_classify(pipes, data):
    pipe = pipes["shared"]
    xs, ls, xt, lt = data
    out = pipe(xs[:10])
    assert out.source_classes == ls[:10].tolist() == out.target_classes
    assert len(out.detection_confidences) == 10 and min(out.detection_confidences) > 0.5
    assert len(out.confidences) == 10 and all(0 <= c <= 1 for c in out.confidences)
    back = pipe(xt[:10], direction="backward")  # clothes scored by the target-side judge
    assert sum(a == b for a, b in zip(back.source_classes, lt[:10].tolist(), strict=True)) >= 8
    labels, conf = pipe.classify(xs[:10], side="source")
    assert labels == ls[:10].tolist() and len(conf) == 10
    labels, _ = pipe.classify([Image.fromarray(a.numpy()) for a in xt[:10]], side="target")
    assert sum(a == b for a, b in zip(labels, lt[:10].tolist(), strict=True)) >= 8
    given = pipe(xs[:3], classes=5)
    assert given.source_classes == [5, 5, 5] and given.detection_confidences is None


# -- errors -----------------------------------------------------------------------------------
def test_bad_inputs(pipes, data):
    pipe = pipes["conditional"]
    x = data[0][:2]
    with pytest.raises(ValueError, match=r"Class 12 is out of range: classes must lie in 0\.\.9"):
        pipe(x, 12)
    with pytest.raises(ValueError, match="out of range"):
        pipe(x, [1, -1])
    with pytest.raises(ValueError, match="Got 3 classes for 2 images"):
        pipe(x, [1, 2, 3])
    with pytest.raises(ValueError, match="direction must be"):
        pipe(x, 1, direction="sideways")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        pipe(x.float(), 1)
    with pytest.raises(ValueError, match="expected a PIL image"):
        pipe([object()], 1)
    with pytest.raises(ValueError, match="No images given"):
        pipe([], 1)
    with pytest.raises(ValueError, match="cannot read a tensor of shape"):
        pipe(torch.zeros(1, 1, 1, 28, 28), 1)
    # a list item is one image: the message offers one image's shapes
    with pytest.raises(ValueError, match=r"as one image \(each item of a list is one image\)"):
        pipe([np.zeros((5, 28, 28), np.uint8)], 1)
    with pytest.raises(ValueError, match=r"as one image .*\(C, H, W\) with C in 1\.\.4, or pass a batch"):
        pipe([torch.zeros(2, 1, 28, 28)], 1)
    with pytest.raises(ValueError, match="side must be"):
        pipe.classify(x, side="left")
    with pytest.raises(ValueError, match="classes must be integers, got 3.5"):
        pipe(x, 3.5)
    # a 0-d tensor or array, an integral float and numpy ints read as plain ints
    for k in (torch.tensor(3), np.array(3), 3.0, np.int64(3), np.float32(3)):
        assert pipe(x, k).target_classes == [3, 3]
    for k in (np.array([[3], [4]]), torch.tensor([[3, 4]])):  # label columns and rows
        assert pipe(x, k).target_classes == [3, 4]
    out = pipe(x[:1], 1, morph_steps=np.int64(3), batch_size=np.int64(1))
    assert len(out.frames[0]) == 3


def test_the_pipeline_dtype_is_checked_when_loading(saved):
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        TranslationPipeline.from_pretrained(saved, dtype=torch.float16)
    assert TranslationPipeline.from_pretrained(saved, dtype="float64").dtype == torch.float64


def test_a_judge_of_fewer_classes_than_the_map_is_refused(pipes, data):
    """Class k goes to class k: a judge that knows only classes 0..4 cannot score class 7 (it
    used to report the confidence of class 4)."""
    base = pipes["conditional"]

    class FiveClasses:  # a judge of the first five classes, without `classes` to read
        def logits(self, x):
            return base.judge_target.logits(x)[:, :5]

    pipe = TranslationPipeline(base.vae, base.map, judge_target=FiveClasses())
    assert pipe(data[0][:2], classes=[1, 4]).confidences is not None
    with pytest.raises(ValueError, match=r"target-side judge scores 5 classes and the map has 10"):
        pipe(data[0][:2], classes=[1, 7])
    FiveClasses.classes = list("abcde")  # its class names say how many it scores
    with pytest.raises(ValueError, match=r"target-side judge scores 5 classes and the map has 10"):
        TranslationPipeline(base.vae, base.map, judge_target=FiveClasses())
    FiveClasses.num_classes = 5
    with pytest.raises(ValueError, match=r"target-side judge scores 5 classes and the map has 10"):
        TranslationPipeline(base.vae, base.map, judge_target=FiveClasses())
    # a shipped-kind judge: its model's width counts, not its (default) class names
    from hjtranslate.judges import Judge, build_classifier

    wide = Judge(build_classifier(num_classes=20), {"model_kwargs": {"num_classes": 20}})
    assert len(wide.classes) == 10 and wide.num_classes == 20
    TranslationPipeline(base.vae, base.map, judge_target=wide)
    assert base.judge_target.num_classes == 10


def test_classes_the_map_was_not_trained_on_are_refused_before_encoding(pipes, data, monkeypatch):
    pipe = pipes["conditional"]
    monkeypatch.setattr(pipe.map, "untrained_classes", [3])
    assert pipe.trained_classes == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    monkeypatch.setattr(pipe.vae, "encode", lambda x: pytest.fail("encoded before the check"))
    with pytest.raises(ValueError, match=r"Class 3 had no samples when this pipeline's map was "
                       r"trained, so it is not translated; the map translates classes 0, 1, 2, 4"):
        pipe(data[0][:2], classes=[1, 3])
    k = pipe.classify(data[0][:1])[0][0]
    monkeypatch.setattr(pipe.map, "untrained_classes", [k])
    with pytest.raises(ValueError, match=f"The source-side judge detected class {k}, which had no "
                       "samples.*pass classes= explicitly"):
        pipe(data[0][:1])


def test_a_blank_picture_is_noted(pipes, data):
    """The app and `translate` refuse blank pictures; the pipeline translates them, and says so."""
    out = pipes["conditional"]([Image.new("L", (28, 28)), data[0][0].numpy()])
    assert out.notes[0][-1].startswith("blank once shrunk to 28x28 (no strokes)")
    assert not any("blank" in n for n in out.notes[1])


def test_no_judge_needs_classes(pipes, data, tmp_path, capsys):
    pipe = TranslationPipeline.from_components(MODELS / "vae", pipes["conditional"].map)
    assert pipe.judge_source is None and pipe.judge_target is None
    with pytest.raises(ValueError, match="no source-side judge.*pass classes="):
        pipe(data[0][:2])
    with pytest.raises(ValueError, match="no target-side judge"):
        pipe(data[2][:2], direction="backward")
    with pytest.raises(ValueError, match="bundles no source-side judge"):
        pipe.classify(data[0][:2])
    out = pipe(data[0][:2], data[1][:2].tolist())
    assert out.confidences is None and out.detection_confidences is None
    folder = pipe.save_pretrained(tmp_path / "nojudge")
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index["judge_source"] is None and not (folder / "judge_source").exists()
    loaded = TranslationPipeline.from_pretrained(folder)
    assert_same_outputs(out, loaded(data[0][:2], data[1][:2].tolist()))
    # the command line names its own option, not the Python argument
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(tmp_path / "d.png")
    run = ["translate", "--model", str(folder), "--input", str(tmp_path / "d.png"), "--out",
           str(tmp_path / "out")]
    assert main(run) == 2
    assert "bundles no source-side judge (judge_source/) to detect the classes of the pictures: " \
           "pass --class K." in capsys.readouterr().err
    assert main([*run, "--class", "3"]) == 0, capsys.readouterr().err


def test_a_map_from_another_latent_space_is_refused(tmp_path):
    """A retrained VAE keeps the latent size but moves the space: the map's recorded latent
    statistics tell, and the error names both ways out."""
    import shutil

    m = HJMap.from_pretrained(MODELS / "digits-to-fashion" / "map")
    assert TranslationPipeline.from_components(MODELS / "vae", m).map is m  # same latent: accepted
    other = tmp_path / "vae"
    shutil.copytree(MODELS / "vae", other)
    stats = json.loads((other / "latent_stats.json").read_text())
    stats["shift"] = [s + 0.5 for s in stats["shift"]]
    (other / "latent_stats.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match="trained in another latent space.*--decoder-only"):
        TranslationPipeline.from_components(other, m)
    from types import SimpleNamespace

    from hjtranslate.pipeline import check_same_latent

    with pytest.raises(CheckpointError, match="or the VAE has none"):  # unstandardised latents
        check_same_latent(m, SimpleNamespace(latent_stats=None))


def test_latent_size_mismatch(saved, tmp_path):
    with pytest.raises(CheckpointError, match="dimension 8 but the VAE's latent has 64"):
        TranslationPipeline.from_components(MODELS / "vae", HJMap(8))
    folder = tmp_path / "pipe"
    import shutil

    shutil.copytree(saved, folder)
    shutil.rmtree(folder / "map")
    HJMap(8, head="conditional", num_classes=10).save_pretrained(folder / "map")
    with pytest.raises(CheckpointError, match="dimension 8 but the VAE's latent has 64"):
        TranslationPipeline.from_pretrained(folder)


def test_broken_folders(saved, tmp_path):
    import shutil

    def broken(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(saved, folder)
        return folder

    def edit_index(folder: Path, **changes) -> None:
        index = json.loads((folder / INDEX_FILE).read_text())
        (folder / INDEX_FILE).write_text(json.dumps({**index, **changes}))

    f = broken("no-map")
    shutil.rmtree(f / "map")
    with pytest.raises(CheckpointError, match="map subfolder 'map' named in hjtranslate_pipeline"):
        TranslationPipeline.from_pretrained(f)
    f = broken("no-judge")
    shutil.rmtree(f / "judge_target")
    with pytest.raises(CheckpointError, match="judge_target subfolder 'judge_target'.*is missing"):
        TranslationPipeline.from_pretrained(f)
    f = broken("no-stats")
    (f / "vae" / "latent_stats.json").unlink()
    with pytest.raises(CheckpointError, match="no latent_stats.json"):
        TranslationPipeline.from_pretrained(f)
    f = broken("no-index")
    (f / INDEX_FILE).unlink()
    with pytest.raises(CheckpointError, match="has no hjtranslate_pipeline.json"):
        TranslationPipeline.from_pretrained(f)
    with pytest.raises(CheckpointError, match="bare HJMap folder"):
        TranslationPipeline.from_pretrained(saved / "map")
    f = broken("escape")
    edit_index(f, map="../elsewhere")
    with pytest.raises(CheckpointError, match="'map' must be a subfolder name"):
        TranslationPipeline.from_pretrained(f)
    f = broken("newer")
    edit_index(f, _hjtranslate_version="99.0")
    with pytest.raises(CheckpointError, match="newer than the installed"):
        TranslationPipeline.from_pretrained(f)
    f = broken("foreign")
    edit_index(f, _class_name="StableDiffusionPipeline")
    with pytest.raises(CheckpointError, match="does not describe a TranslationPipeline"):
        TranslationPipeline.from_pretrained(f)
    f = broken("short-names")
    edit_index(f, source_class_names=["a", "b"])
    with pytest.raises(CheckpointError, match=rf"{INDEX_FILE}: source_class_names has 2 names "
                                              "for 10 classes. Download or save"):
        TranslationPipeline.from_pretrained(f)
    with pytest.raises(CheckpointError, match="no such folder"):
        TranslationPipeline.from_pretrained(tmp_path / "nothing" / "here")


def test_a_save_stopped_between_its_renames_loses_nothing(pipes, tmp_path, monkeypatch):
    """Ctrl-C between the two renames puts the earlier pipeline back; a kill there (no finally)
    leaves it moved aside, which loading names and the next save puts back; a killed save's
    temporary folder goes at the next save."""
    import hjtranslate.pipeline as pipeline_module

    folder = tmp_path / "pipe"
    pipes["conditional"].save_pretrained(folder)
    index = (folder / "map" / "config.json").read_text()
    rename, stops = Path.rename, []

    def stopped(self, target):
        if Path(target) == folder and not stops:  # the second rename: the new pipeline in
            stops.append(self)
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", stopped)
    with pytest.raises(KeyboardInterrupt):
        pipes["shared"].save_pretrained(folder)
    monkeypatch.setattr(Path, "rename", rename)
    assert (folder / "map" / "config.json").read_text() == index
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]

    # a SIGKILL there: no finally runs; a dead process's folders are left as they were
    dead = "999999999-0000abcd"  # no such pid
    folder.rename(tmp_path / f".pipe.old-{dead}")
    (tmp_path / f".pipe.tmp-{dead}").mkdir()
    live = tmp_path / f".pipe.tmp-{os.getpid()}-0000beef"  # a save running beside: kept
    live.mkdir()
    with pytest.raises(CheckpointError, match=r"a save into it was killed: .*\.pipe\.old-999999999"):
        TranslationPipeline.from_pretrained(folder)
    pipeline_module._clear_interrupted_saves(folder)
    assert (folder / "map" / "config.json").read_text() == index
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "pipe"]
    pipes["shared"].save_pretrained(folder)
    assert (folder / "map" / "config.json").read_text() != index

def test_cards_load_what_they_name_from_where_it_was_saved(pipes, tmp_path, monkeypatch):
    """Saved under a relative path, both cards' snippets name that path, so that they run as
    written from the folder the pipeline was saved from (models/digits-to-fashion's cards)."""
    monkeypatch.chdir(tmp_path)
    pipes["conditional"].save_pretrained("models/d2f")
    card = Path("models/d2f/README.md").read_text()
    map_card = Path("models/d2f/map/README.md").read_text()
    assert "TranslationPipeline.from_pretrained('models/d2f')" in card
    assert "--model models/d2f " in card
    assert "HJMap.from_pretrained('models/d2f/map')" in map_card
    assert TranslationPipeline.from_pretrained("models/d2f").map.dim == pipes["conditional"].map.dim
    assert HJMap.from_pretrained("models/d2f/map").dim == pipes["conditional"].map.dim
    # saving replaces the whole folder: a folder of other files is refused, not emptied
    Path("notes").mkdir()
    Path("notes/todo.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds files and is not a translation pipeline folder"):
        pipes["conditional"].save_pretrained("notes")
    assert [p.name for p in Path("notes").iterdir()] == ["todo.txt"]



def test_pictures_are_framed_as_their_dataset_frames_them(pipes, data):
    """A digit small on a page, a faint pencil, a drawing in a corner: cut to the ink, scaled
    into MNIST's 20x20 box and centred by mass (rule 5); clothes fill 28x28; 28x28 pictures and
    noise are left as they were."""
    from hjtranslate.images import preprocess

    pipe = pipes["conditional"]
    assert (pipe.framing("source"), pipe.framing("target")) == ("mnist", "fashion-mnist")
    for i in range(6):
        digit, k = data[0][i].numpy(), int(data[1][i])
        page = Image.new("L", (800, 1000), 255)
        page.paste(Image.fromarray(255 - digit).resize((100, 100), Image.BILINEAR), (60, 700))
        out = pipe(page)
        assert out.source_classes == [k]
        dusty = page.copy()  # a speck far from the digit does not widen the box
        ImageDraw.Draw(dusty).ellipse([700, 40, 706, 46], fill=0)
        torch.testing.assert_close(preprocess(dusty, "mnist")[0], preprocess(page, "mnist")[0],
                                   rtol=0, atol=0.03)  # the same box; the levels move a hair
        assert any(n.startswith("framed the ") and n.endswith("out of 800x1000")
                   for n in out.notes[0])
        x = preprocess(page, "mnist")[0][0, 0]
        rows, cols = torch.nonzero(x > 0.05, as_tuple=True)
        assert max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) <= 21
        mass = x / x.sum()
        centre = ((mass.sum(1) * torch.arange(28.0)).sum(), (mass.sum(0) * torch.arange(28.0)).sum())
        assert all(abs(float(c) - 13.5) <= 1.0 for c in centre)
        faint = 230 - 40 * np.asarray(Image.fromarray(digit).resize((280, 280)), np.float32) / 255
        framed, notes = preprocess(faint.astype(np.uint8), "mnist")
        assert float(framed.max()) > 0.9 and any(n.startswith("stretched the contrast")
                                                 for n in notes[0])
        assert pipe(faint.astype(np.uint8)).source_classes == [k]
        # already 28x28: framing leaves it alone
        torch.testing.assert_close(preprocess(digit, "mnist")[0], preprocess(digit)[0])
    shirt = data[2][0].numpy()
    x = preprocess(Image.fromarray(shirt).resize((300, 300)), "fashion-mnist")[0][0, 0]
    rows, cols = torch.nonzero(x > 0.05, as_tuple=True)
    assert max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) >= 26
    noise = np.random.default_rng(0).integers(0, 256, (600, 600), np.uint8)
    assert preprocess(noise, "mnist")[1][0] == ["resized 600x600 to 28x28"]  # nothing to frame
    flat, notes = preprocess(np.full((64, 64), 0.3, np.float32), "mnist")  # one level: blank
    assert notes[0] == ["resized 64x64 to 28x28"] and float(flat.max() - flat.min()) < 1e-6
    # a thin upright stroke (a "1") keeps its shading: scaled to one pixel wide, not one value
    one = np.zeros((280, 280), np.float32)
    one[40:240, 137:143] = np.linspace(0.35, 1.0, 200)[:, None]
    column = preprocess(one, "mnist")[0][0, 0].max(1).values
    assert float(column[column > 0].max() - column[column > 0].min()) > 0.3
    # the box is named in the picture's own pixels, also when it is worked on smaller
    big = np.zeros((3000, 4000), np.uint8)
    big[1000:2000, 1500:1700] = 255
    note = preprocess(big, "mnist")[1][0][-1]
    box = note.split("framed the ")[1].split(" box")[0]
    width, height = map(int, box.split("x"))
    assert abs(width - 200) <= 8 and abs(height - 1000) <= 8 and note.endswith("out of 4000x3000")
    with pytest.raises(ValueError, match="framing='svhn'"):
        preprocess(digit, "svhn")
    with pytest.raises(ValueError, match="frame must be True or False, got 'no'"):
        pipe(digit, 3, frame="no")
    strip = np.zeros((100, 6000), np.uint8)  # a digit in a long strip is no speck
    strip[:, 2950:3050] = np.asarray(Image.fromarray(data[0][0].numpy()).resize((100, 100)))
    assert pipe(strip).source_classes == [int(data[1][0])]

def test_other_side_thresholds_are_measured_kept_and_checked(pipes, data, tmp_path):
    """calibrate_other_side measures where the judges tell the sides apart on real images of
    each; the pipeline keeps the thresholds, and looks_like_other_side flags about 1 % of real
    inputs and most of the other side's; a damaged record is refused on loading."""
    pipe = pipes["shared"]
    xs, xt = data[0][:, None], data[2][:, None]
    with pytest.raises(ValueError, match="has not measured where its judges"):
        pipe.looks_like_other_side(xs[:2])
    try:
        found = pipe.calibrate_other_side(xs[:100], xt[:100], false_alarms=0.02)
        # on the other 100 images of each side: few real inputs flagged, most of the other's
        assert sum(pipe.looks_like_other_side(xs[100:], "source")) <= 10
        assert sum(pipe.looks_like_other_side(xt[100:], "target")) <= 10
        assert sum(pipe.looks_like_other_side(xt[100:], "source")) >= 50  # clothes as digits
        assert sum(pipe.looks_like_other_side(xs[100:], "target")) >= 50
        assert found["caught_target_as_source"] >= 0.5 and found["false_alarms"] == 0.02
        folder = pipe.save_pretrained(tmp_path / "pipe")
        assert TranslationPipeline.from_pretrained(folder).other_side == found
        with pytest.raises(ValueError, match="at least 100 source images"):
            pipe.calibrate_other_side(xs[:50], xt)
        with pytest.raises(ValueError, match="side must be 'source' or 'target'"):
            pipe.looks_like_other_side(xs[:1], "digits")
        index = json.loads((folder / INDEX_FILE).read_text())
        index["other_side"] = {"source_below": "low"}
        (folder / INDEX_FILE).write_text(json.dumps(index))
        with pytest.raises(CheckpointError, match="other_side must hold the numbers"):
            TranslationPipeline.from_pretrained(folder)
    finally:
        pipe.other_side = None
    shipped = TranslationPipeline.from_pretrained(MODELS / "digits-to-fashion")
    assert shipped.other_side is not None  # measured on the full test sets (input_side.py)


def _on_paper(digit: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 200-pixel digit written on an 800x800 photo of ``kind``: "clean" paper, a page on a
    "desk", paper "lit" from one side, "ruled" or "squared" paper; floats in [0, 1]."""
    ink = np.asarray(Image.fromarray(digit).resize((200, 200), Image.BILINEAR), np.float32) / 255
    paper = np.full((800, 800), 0.93, np.float32)
    if kind in ("desk", "grey desk"):
        page = Image.new("L", (800, 800), 0)
        ImageDraw.Draw(page).polygon([(150, 60), (680, 40), (720, 760), (120, 740)], fill=255)
        shape = np.asarray(page, np.float32) / 255
        paper = (0.18 if kind == "desk" else 0.6) * (1 - shape) + 0.93 * shape
    elif kind == "lit":
        paper = np.linspace(0.95, 0.3, 800, dtype=np.float32)[None, :].repeat(800, 0)
    elif kind == "vignette":  # darker corners, fewer than 1 % of the pixels at the darkest
        yy, xx = np.mgrid[-1:1:800j, -1:1:800j]
        paper = (0.95 - 0.25 * (xx**2 + yy**2)).astype(np.float32)
    elif kind in ("ruled", "squared"):
        for offset in (0, 1, 2):  # the first line at the picture's top edge
            paper[offset::48] = 0.6
            if kind == "squared":
                paper[:, offset::48] = 0.6
    elif kind == "tilted":  # ruled lines at 8 degrees, as on a page photographed askew
        sheet = Image.new("L", (800, 800), 237)
        for y in range(-200, 1000, 48):
            ImageDraw.Draw(sheet).line([(0, y), (800, y + 112)], fill=153, width=3)
        paper = np.asarray(sheet, np.float32) / 255
    photo = paper.copy()
    photo[300:500, 300:500] = paper[300:500, 300:500] * (1 - ink) + 0.1 * ink
    return (photo + rng.normal(0, 0.02, photo.shape)).clip(0, 1).astype(np.float32)


def test_photos_of_paper_are_framed_like_a_clean_page(data):
    """A page on a dark desk, paper lit from one side, ruled and squared paper: each is framed
    as the same digit on clean paper is (rule 5), and says what it took away; none of it
    fires on a light digit drawn on black, a clean page or clothes."""
    from hjtranslate.images import preprocess

    rng = np.random.default_rng(0)
    notes = {"desk": "painted the desk around the page", "grey desk": "painted the desk around",
             "lit": "evened out the light", "vignette": "evened out the light",
             "ruled": "took out the paper's ruled lines", "squared": "took out the paper's ruled",
             "tilted": "took out the paper's ruled lines"}
    for i in range(4):
        digit = data[0][i].numpy()
        clean, clean_notes = preprocess(_on_paper(digit, "clean", rng), "mnist")
        assert not any(n.startswith(("painted", "evened", "took out")) for n in clean_notes[0])
        for kind, note in notes.items():
            x, said = preprocess(_on_paper(digit, kind, rng), "mnist")
            assert any(n.startswith(note) for n in said[0]), (kind, said)
            assert float((x - clean).abs().mean()) < 0.02, kind
            assert float((x - clean).abs().max()) < 0.5, kind
        x, said = preprocess(_on_paper(digit, "ruled", rng), "fashion-mnist")
        assert not any(n.startswith("took out") for n in said[0])  # clothes are not written
    # a page too thin to hold any sure paper is left as it is (its paper's median was NaN)
    strip = np.zeros((5, 80), np.float32)
    strip[1:4, 3:77], strip[2, 30] = 0.9, 0.0
    assert bool(torch.isfinite(preprocess(strip, "mnist")[0]).all())
    from hjtranslate.data import load_dataset

    digits = load_dataset("mnist", "test", data_dir=SHARED)[0]
    drawn = [int(k) for label in (0, 8) for k in (data[1] == label).nonzero()[:3, 0]]
    drawn += [495, 552, 701, 812, 947]  # thick 0s, 8s and a 5 that an earlier rule misread
    for k in drawn:  # light on black, filling the picture: a 0 is not a page, an 8 not a ruling
        picture = Image.fromarray(digits[k].numpy()).resize((280, 280), Image.BILINEAR)
        said = preprocess(picture, "mnist")[1][0]
        assert not any(n.startswith(("painted", "evened", "took out")) for n in said), said
    for shirt in data[2][:30]:  # faint clothes up to the picture's edges: not uneven light
        big = np.asarray(Image.fromarray(shirt.numpy()).resize((280, 280)), np.float32)
        said = preprocess((230 - 40 * big / 255).astype(np.uint8), "fashion-mnist")[1][0]
        assert not any(n.startswith("evened") for n in said), said
    fat = Image.new("L", (280, 280), 0)  # an 8 drawn with a fat brush: no page either
    ImageDraw.Draw(fat).ellipse([70, 20, 210, 140], outline=255, width=45)
    ImageDraw.Draw(fat).ellipse([60, 130, 220, 265], outline=255, width=45)
    said = preprocess(fat, "mnist")[1][0]
    assert not any(n.startswith("painted") for n in said), said


# -- the Hub --------------------------------------------------------------------------------
def no_dns(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_push_to_hub_load_and_offline(pipes, data, hub_server, hf_cache, monkeypatch):
    pipe = pipes["conditional"]
    url = pipe.push_to_hub("user/digits-to-fashion")
    assert url.startswith(f"{hub_server.url}/user/digits-to-fashion/commit/")
    files = hub_server.files("user/digits-to-fashion")
    assert {INDEX_FILE, "README.md", "vae/latent_stats.json", "map/model.safetensors",
            "judge_source/model.safetensors", "judge_target/model.safetensors"} <= set(files)
    assert b"library_name: hjtranslate" in files["README.md"]
    assert b"from_pretrained('user/digits-to-fashion')" in files["README.md"]
    # the map's card loads the map through the pipeline's repo, where it sits in map/
    assert b"TranslationPipeline.from_pretrained('user/digits-to-fashion').map" in files["map/README.md"]
    assert len(HfApi().list_repo_commits("user/digits-to-fashion")) == 2  # creation + one upload

    loaded = TranslationPipeline.from_pretrained("user/digits-to-fashion")
    same_pipelines(pipe, loaded, data)

    n_requests = len(hub_server.requests)
    assert_same_outputs(pipe(data[0][:4]),
                        TranslationPipeline.from_pretrained("user/digits-to-fashion",
                                                            local_files_only=True)(data[0][:4]))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same_outputs(pipe(data[0][:4]),
                        TranslationPipeline.from_pretrained("user/digits-to-fashion")(data[0][:4]))
    assert len(hub_server.requests) == n_requests  # the Hub was never asked
    with pytest.raises(CheckpointError, match="not in the local cache"):
        TranslationPipeline.from_pretrained("user/never-pushed")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with monkeypatch.context() as m:  # no network: the cache at once, no retries
        m.setattr(socket, "getaddrinfo", no_dns)
        for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            m.delenv(name, raising=False)
        assert_same_outputs(pipe(data[0][:4]),
                            TranslationPipeline.from_pretrained("user/digits-to-fashion")(data[0][:4]))
        with pytest.raises(CheckpointError, match="not in the local cache.*does not resolve"):
            TranslationPipeline.from_pretrained("user/never-pushed")
        with pytest.raises(CheckpointError, match="VAE 'user/vae' is not a local folder.*does not"):
            VAEEncoder("user/vae")
    assert len(hub_server.requests) == n_requests

    with pytest.raises(CheckpointError, match="there is no local folder .*, and as a Hub id: .* is "
                       "not a Hub repository that exists"):
        TranslationPipeline.from_pretrained("user/does-not-exist")
    # a second version on a branch; main keeps the first
    other = pipes["shared"]
    other.push_to_hub("user/digits-to-fashion", revision="dev")
    assert not TranslationPipeline.from_pretrained("user/digits-to-fashion", revision="dev").map.conditional
    assert TranslationPipeline.from_pretrained("user/digits-to-fashion").map.conditional
    with pytest.raises(CheckpointError, match="Revision 'nope' does not exist"):
        TranslationPipeline.from_pretrained("user/digits-to-fashion", revision="nope")
    # the branch's card loads the branch; the command line reaches it with --revision
    card = hub_server.files("user/digits-to-fashion", "dev")["README.md"]
    assert b"from_pretrained('user/digits-to-fashion', revision='dev')" in card
    assert b"--model user/digits-to-fashion --revision dev " in card
    image = Path(__file__).resolve().parents[1] / "apps" / "examples" / "digit_3.png"
    for extra, out in (([], "main"), (["--revision", "dev", "--force-download"], "dev")):
        assert main(["translate", "--model", "user/digits-to-fashion", "--input", str(image),
                     "--class", "3", "--out", str(hf_cache.parent / out), *extra]) == 0
    main_png, dev_png = ((hf_cache.parent / o / "digit_3_forward.png").read_bytes()
                         for o in ("main", "dev"))
    assert main_png != dev_png  # two different maps answered


def test_hf_hub_offline_env_in_a_fresh_process(pipes, data, hub_server, hf_cache, tmp_path):
    pipes["shared"].push_to_hub("user/env-off")
    TranslationPipeline.from_pretrained("user/env-off")  # fills the cache
    hub_server.refuse = True
    x = data[0][:3]
    torch.save({"x": x, "z": pipes["shared"](x).latents}, tmp_path / "io.pt")
    code = (
        "import sys, torch\n"
        "from hjtranslate.pipeline import TranslationPipeline\n"
        # The parent's thread count: linear solves of a map are exact across processes only
        # with the same BLAS/LAPACK threading.
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "d = torch.load(sys.argv[1])\n"
        "p = TranslationPipeline.from_pretrained('user/env-off')\n"
        "torch.testing.assert_close(p(d['x']).latents, d['z'], rtol=0, atol=0)\n"
        "print('ok')\n"
    )
    n_requests = len(hub_server.requests)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hf_cache)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "io.pt")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok" and len(hub_server.requests) == n_requests


# -- the command line ----------------------------------------------------------------------
@pytest.fixture
def inputs(data, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(data[0][i].numpy()).save(folder / f"digit{i}.png")
    return folder


def test_cli_translate_folder(saved, data, inputs, tmp_path, capsys):
    (inputs / "readme.txt").write_text("not an image")
    (inputs / "more").mkdir()  # a subfolder: named as skipped, not searched
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(inputs / "tiny.png")
    out = tmp_path / "out"
    args = ["translate", "--model", str(saved), "--input", str(inputs), "--out", str(out),
            "--morph-steps", "4"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "readme.txt" in captured.err and "Traceback" not in captured.err
    assert "more: a folder inside the --input folder (not searched" in captured.err
    assert "tiny.png: blank once framed and shrunk to 28x28" in captured.err  # as the app says
    assert "resized 1x1 to 28x28" in captured.err and "tiny.png: class" not in captured.out
    (inputs / "tiny.png").unlink()
    assert main(args) == 0
    report = json.loads((out / "translations.json").read_text())
    assert report["direction"] == "forward" and len(report["items"]) == 3
    assert [Path(s["input"]).name for s in report["skipped"]] == ["more", "readme.txt"]
    for i, item in enumerate(report["items"]):
        assert item["input"].endswith(f"digit{i}.png")
        assert item["input_class"] == int(data[1][i]) == item["output_class"]
        assert item["class_detected"] and 0 <= item["confidence"] <= 1
        assert item["output_class_name"] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                             "Sandal", "Shirt", "Sneaker", "Bag",
                                             "Ankle boot"][item["output_class"]]
        assert Image.open(item["output"]).size == (28, 28)
        assert Image.open(item["morph"]).size == (28 * 4, 28)

    # one file, a given class, backward
    assert main(["translate", "--model", str(saved), "--input", str(inputs / "digit0.png"),
                 "--class", "3", "--direction", "backward", "--out", str(tmp_path / "o2")]) == 0
    report = json.loads((tmp_path / "o2" / "translations.json").read_text())
    assert [i["input_class"] for i in report["items"]] == [3]
    assert report["items"][0]["morph"] is None and not report["items"][0]["class_detected"]
    assert Path(report["items"][0]["output"]).name == "digit0_backward.png"

    # several paths (a shell glob), a file and a folder holding one of the same name
    other = tmp_path / "other"
    other.mkdir()
    Image.open(inputs / "digit1.png").save(other / "digit0.png")
    assert main(["translate", "--model", str(saved), "--input", str(inputs / "digit0.png"),
                 str(inputs / "digit2.png"), str(other), "--out", str(tmp_path / "o3")]) == 0
    report = json.loads((tmp_path / "o3" / "translations.json").read_text())
    assert [Path(i["input"]).parent.name + "/" + Path(i["input"]).name for i in report["items"]] == [
        f"{inputs.name}/digit0.png", f"{inputs.name}/digit2.png", "other/digit0.png"]
    assert len({i["output"] for i in report["items"]}) == 3
    assert [i["input_class"] for i in report["items"]] == [int(data[1][k]) for k in (0, 2, 1)]
    # a glob that picks up a non-image skips it, as a folder does
    (other / "notes.txt").write_text("not an image")
    assert main(["translate", "--model", str(saved), "--input", str(inputs / "digit0.png"),
                 str(other / "notes.txt"), "--out", str(tmp_path / "o4")]) == 0
    report = json.loads((tmp_path / "o4" / "translations.json").read_text())
    assert len(report["items"]) == 1 and report["skipped"][0]["input"].endswith("notes.txt")
    assert main(["translate", "--model", str(saved), "--input", str(other / "notes.txt"),
                 str(other / "notes.txt"), "--out", str(tmp_path / "o5")]) == 2
    assert "none of the 2 paths holds an image" in capsys.readouterr().err
    # an image named twice (its file and its folder) is translated once; a folder of no images
    # among several paths is skipped; --out may not be the folder of input files
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("no image")
    assert main(["translate", "--model", str(saved), "--input", str(other), str(other / "digit0.png"),
                 str(texts), "--out", str(tmp_path / "o6")]) == 0
    report = json.loads((tmp_path / "o6" / "translations.json").read_text())
    assert len(report["items"]) == 1 and any(s["input"] == str(texts) for s in report["skipped"])
    assert main(["translate", "--model", str(saved), "--input", str(other / "digit0.png"),
                 "--out", str(other)]) == 2
    assert "is the folder of the --input images" in capsys.readouterr().err


def test_cli_translate_into_a_folder_used_before(saved, inputs, tmp_path, capsys):
    """A second run into the same --out keeps the first run's translations listed (and named):
    the same input's are replaced, another input of the same name gets a name of its own."""
    out = tmp_path / "out"
    run = ["translate", "--model", str(saved), "--out", str(out), "--input"]
    assert main([*run, str(inputs / "digit0.png"), str(inputs / "digit1.png")]) == 0
    first = json.loads((out / "translations.json").read_text())["items"]
    other = tmp_path / "other"
    other.mkdir()
    Image.open(inputs / "digit2.png").save(other / "digit0.png")
    assert main([*run, str(inputs / "digit1.png"), str(other / "digit0.png")]) == 0
    assert "it lists 1 from earlier runs too" in capsys.readouterr().out
    report = json.loads((out / "translations.json").read_text())
    assert [Path(i["input"]).parent.name for i in report["items"]] == [inputs.name, "other"]
    assert report["earlier_items"] == [first[0]]  # digit1 was translated again: listed once
    outputs = [i["output"] for i in report["items"] + report["earlier_items"]]
    assert len(set(outputs)) == 3 and all(Path(o).is_file() for o in outputs)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(Path(o).name for o in outputs)
    # a morph strip of an earlier run goes with the entry it belonged to
    assert main([*run, str(inputs / "digit1.png"), "--morph-steps", "2"]) == 0
    assert (out / "digit1_forward_morph.png").is_file()
    assert main([*run, str(inputs / "digit1.png")]) == 0
    assert not (out / "digit1_forward_morph.png").exists()
    # an input translated again under another name (its name was taken) replaces its entry
    assert main([*run, str(other / "digit0.png")]) == 0
    report = json.loads((out / "translations.json").read_text())
    listed = report["items"] + report["earlier_items"]
    assert sorted(Path(i["input"]).parent.name for i in listed) == [inputs.name, inputs.name, "other"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(Path(i["output"]).name for i in listed)
    (out / "translations.json").write_text("{not json")  # a damaged list is replaced
    assert main([*run, str(inputs / "digit0.png")]) == 0
    report = json.loads((out / "translations.json").read_text())
    assert len(report["items"]) == 1 and "earlier_items" not in report


def test_cli_translate_says_what_looks_like_the_other_side_and_reduces_huge_files(
        pipes, data, tmp_path, capsys):
    """translate notes an input that looks like the other side's (as the app's hint, with the
    pipeline's thresholds), and opens a 9000x9000 photo reduced to at most 4096 a side."""
    pipe = pipes["shared"]
    try:
        pipe.calibrate_other_side(data[0][:, None], data[2][:, None])
        folder = pipe.save_pretrained(tmp_path / "pipe")
    finally:
        pipe.other_side = None
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(data[0][0].numpy()).save(inputs / "digit.png")
    Image.fromarray(data[2][0].numpy()).save(inputs / "clothes.png")
    page = Image.new("L", (9000, 9000), 255)
    page.paste(Image.fromarray(255 - data[0][1].numpy()).resize((2000, 2000)), (3000, 3000))
    page.save(inputs / "photo.png")
    assert main(["translate", "--model", str(folder), "--input", str(inputs), "--direction",
                 "backward", "--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    report = {Path(i["input"]).name: i
              for i in json.loads((tmp_path / "out" / "translations.json").read_text())["items"]}
    assert report["digit.png"]["looks_like_other_side"]
    assert "looks more like mnist to the judges: if so, use --direction forward" in said
    # backward, the translations are digits: the confidence is the MNIST judge's
    assert "clothes.png: class" in said and "(mnist judge's confidence" in said
    k = report["clothes.png"]["input_class"]  # the detected class by its name, the digit by its
    assert (f"clothes.png: class {k} ({report['clothes.png']['input_class_name']}) -> {k}, "
            "clothes_backward.png") in said
    assert "fashion-mnist judge's confidence" not in said
    assert not report["clothes.png"]["looks_like_other_side"]
    assert "reduced 9000x9000 by 1/3 as it was opened" in report["photo.png"]["notes"]
    assert main(["translate", "--model", str(folder), "--input", str(inputs / "photo.png"),
                 "--out", str(tmp_path / "out2")]) == 0
    item = json.loads((tmp_path / "out2" / "translations.json").read_text())["items"][0]
    assert item["input_class"] == int(data[1][1])  # the digit, framed from the reduced photo


def test_cli_translate_errors(saved, inputs, tmp_path, capsys, monkeypatch):
    def fails(*argv: str) -> str:
        assert main(["translate", "--model", str(saved), *argv, "--out", str(tmp_path / "o")]) == 2
        return capsys.readouterr().err

    assert "no such file or folder" in fails("--input", str(tmp_path / "missing.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no images" in fails("--input", str(empty))
    assert "out of range" in fails("--input", str(inputs), "--class", "12")
    (empty / "a.txt").write_text("x")
    assert "1 files skipped" in fails("--input", str(empty))
    (empty / "a.txt").unlink()
    (empty / "sub").mkdir()
    assert "(1 folders inside, not searched: name them as --input)" in fails("--input", str(empty))
    # --out where no folder can be made, or the --input folder itself: refused before any work
    (tmp_path / "afile").write_text("x")
    for out, message in ((tmp_path / "afile" / "sub", "which is a file: name a folder"),
                         (inputs, "is the folder of the --input images"),
                         (saved, "holds a training run, a model, a map or a pipeline"),
                         (saved / "map", "holds a training run, a model, a map or a pipeline")):
        assert main(["translate", "--model", str(saved), "--input", str(inputs),
                     "--out", str(out)]) == 2
        assert message in capsys.readouterr().err

    import hjtranslate.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "default_model_path", lambda: tmp_path / "no-model")
    assert main(["translate", "--input", str(inputs), "--out", str(tmp_path / "o")]) == 2
    assert "shipped pipeline" in capsys.readouterr().err


def test_cli_non_image_file_has_no_traceback(saved, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not a PNG")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "hjtranslate", "translate", "--model", str(saved), "--input",
         str(bad), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "notes.png is not a readable image" in proc.stderr


class LinearEncoder(Encoder):
    """A third-party encoder: a fixed linear projection of the pixels (no VAE)."""

    name = "t_linear"

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.latent_dim = weight.shape[1]

    def encode(self, x):  # grey images in [0, 1], as the pipeline hands them over
        return x.reshape(len(x), -1).to(self.weight) @ self.weight

    def decode(self, z):
        return (z.to(self.weight) @ self.weight.T).clamp(0, 1).reshape(len(z), 1, 28, 28)

    @classmethod
    def from_pretrained(cls, folder, device="cpu"):
        from safetensors.torch import load_file

        return cls(load_file(str(Path(folder) / "weight.safetensors"), device=str(device))["weight"])

    def save_pretrained(self, folder):
        from safetensors.torch import save_file

        save_file({"weight": self.weight.contiguous().cpu()}, str(Path(folder) / "weight.safetensors"))
        (Path(folder) / "config.json").write_text(json.dumps({"latent_dim": self.latent_dim}))

    def to(self, device):
        self.weight = self.weight.to(device)
        return self


def test_a_pipeline_with_a_third_party_encoder(data, tmp_path):
    """An encoder plugin other than the VAE stands in a pipeline: it is saved with its own
    save_pretrained, recorded by its plugin name and loaded by the same plugin."""
    from hjtranslate import registry

    xs, ls, xt, lt = data
    enc = LinearEncoder(torch.linalg.qr(torch.randn(784, 8, generator=torch.Generator().manual_seed(0)))[0])
    m = fit(enc.encode(xs / 255.0), enc.encode(xt / 255.0), labels=(ls, lt), conditional=True,
            steps=5, batch_size=64, head_kwargs={"width": 16, "depth": 2})
    with pytest.raises(registry.PluginError, match="not a registered encoder plugin"):
        TranslationPipeline.from_components(enc, m).save_pretrained(tmp_path / "unregistered")
    assert not (tmp_path / "unregistered").exists()
    # no dataset named: neither MNIST's class names nor its framing for this encoder's data
    neutral = TranslationPipeline.from_components(enc, m)
    assert (neutral.source_dataset, neutral.target_dataset) == ("source", "target")
    assert neutral.target_class_names is None and neutral.framing("source") is None
    # the shipped VAE's kind: MNIST and Fashion-MNIST; a map that records its datasets: those
    shipped = TranslationPipeline.from_pretrained(MODELS / "digits-to-fashion")
    vae_kind = TranslationPipeline.from_components(shipped.vae, HJMap(64))
    assert (vae_kind.source_dataset, vae_kind.target_dataset) == ("mnist", "fashion-mnist")
    flipped = copy.deepcopy(shipped.map)
    flipped.encoder_config = {**flipped.encoder_config, "datasets": ["fashion_mnist", "mnist"]}
    assert TranslationPipeline.from_components(shipped.vae, flipped).source_dataset == "fashion-mnist"
    registry.register("encoder", "t_linear", LinearEncoder, package="pipeline-test 0.1")
    try:
        pipe = TranslationPipeline.from_components(enc, m, "mnist", "fashion-mnist")
        ref = pipe(xs[:4], ls[:4].tolist())
        pipe.save_pretrained(tmp_path / "p")
        assert json.loads((tmp_path / "p" / INDEX_FILE).read_text())["encoder"] == "t_linear"
        assert (tmp_path / "p" / "vae" / "weight.safetensors").is_file()
        assert "the `t_linear` plugin" in (tmp_path / "p" / "README.md").read_text()
        again = TranslationPipeline.from_pretrained(tmp_path / "p")
        assert isinstance(again.vae, LinearEncoder)
        torch.testing.assert_close(again(xs[:4], ls[:4].tolist()).latents, ref.latents)
        again.save_pretrained(tmp_path / "p2")  # copied from where it was loaded
        assert TranslationPipeline.from_pretrained(tmp_path / "p2").encoder_name == "t_linear"
    finally:
        registry.unregister("encoder", "t_linear")
    with pytest.raises(CheckpointError, match="This pipeline needs the encoder plugin 't_linear', "
                       r"which is not installed. Install the package that provides it \(pipeline-test\)"
                       ) as missing:
        TranslationPipeline.from_pretrained(tmp_path / "p")
    assert "damaged" not in str(missing.value)


class PickledEncoder(LinearEncoder):
    def save_pretrained(self, folder):
        torch.save(self.weight, Path(folder) / "weight.pt")


class BrokenLoader(LinearEncoder):
    @classmethod
    def from_pretrained(cls, folder, device="cpu"):
        raise KeyError("weight")


def test_an_encoder_part_that_could_not_load_again_is_refused(data, tmp_path):
    """An encoder that saves a pickle would make a pipeline that loads nowhere (pickles are
    neither copied nor published): refused when saving; a plugin's own load error is named."""
    from hjtranslate import registry

    xs, ls, xt, lt = data
    enc = PickledEncoder(torch.linalg.qr(torch.randn(784, 8, generator=torch.Generator().manual_seed(0)))[0])
    m = fit(enc.encode(xs / 255.0), enc.encode(xt / 255.0), labels=(ls, lt), conditional=True,
            steps=2, batch_size=64, head_kwargs={"width": 16, "depth": 2})
    registry.register("encoder", "t_pickled", PickledEncoder, package="pipeline-test 0.1")
    registry.register("encoder", "t_broken", BrokenLoader, package="pipeline-test 0.1")
    try:
        with pytest.raises(registry.PluginError, match=r"keeps weight.pt in its folder: a pipeline "
                           "part is one flat folder of JSON and safetensors files"):
            TranslationPipeline.from_components(enc, m).save_pretrained(tmp_path / "p")
        assert not (tmp_path / "p").exists()
        TranslationPipeline.from_components(BrokenLoader(enc.weight), m).save_pretrained(tmp_path / "b")
        with pytest.raises(CheckpointError, match="The encoder plugin 't_broken' could not load .*KeyError"):
            TranslationPipeline.from_pretrained(tmp_path / "b")
    finally:
        registry.unregister("encoder", "t_pickled")
        registry.unregister("encoder", "t_broken")


def test_a_folder_of_pipelines_names_them(saved, tmp_path):
    """`--model models` (the folder above a pipeline) says where the pipeline is."""
    parent = tmp_path / "models"
    parent.mkdir()
    shutil.copytree(saved, parent / "digits-to-fashion")
    with pytest.raises(CheckpointError, match=f"It holds a pipeline: {parent / 'digits-to-fashion'}"):
        TranslationPipeline.from_pretrained(parent)


def test_the_app_module_run_as_a_script_says_what_is_wrong(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hjtranslate_apps.translate",
                             str(tmp_path / "nothing")], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: pipeline: no such folder: {tmp_path / 'nothing'}"


def test_diffusers_conventions_output_types_tuples_components_and_torch_dtype(
        saved, data, hub_server, hf_cache):
    pipe = TranslationPipeline.from_pretrained(saved, torch_dtype=torch.float64)
    assert pipe.dtype == torch.float64
    with pytest.raises(ValueError, match="disagree"):
        TranslationPipeline.from_pretrained(saved, dtype=torch.float64, torch_dtype=torch.float32)
    assert set(pipe.components) == {"vae", "map", "judge_source", "judge_target"}
    x = data[0][:2]
    pil = pipe(x, classes=[1, 2], morph_steps=3)
    assert pil[0] is pil.images and pil["frames"] is pil.frames and pil.to_tuple()[0] is pil.images
    assert "detection_confidences" not in pil.keys()  # classes were given: not set
    with pytest.raises(KeyError):
        pil["detection_confidences"]
    arrays = pipe(x, classes=[1, 2], morph_steps=3, output_type="np")
    assert arrays.images.shape == (2, 28, 28, 1) and arrays.frames.shape == (2, 3, 28, 28, 1)
    np.testing.assert_array_equal((arrays.images[..., 0] * 255).round().astype(np.uint8),
                                  np.stack([np.asarray(i) for i in pil.images]))
    tensors = pipe(x, classes=[1, 2], morph_steps=3, output_type="pt")
    assert tensors.images.shape == (2, 1, 28, 28) and tensors.frames.shape == (2, 3, 1, 28, 28)
    latent = pipe(x, classes=[1, 2], morph_steps=3, output_type="latent")
    torch.testing.assert_close(latent.images, pil.latents)
    assert latent.frames.shape == (2, 3, pipe.map.dim)
    images, frames = pipe(x, classes=[1, 2], return_dict=False)
    assert len(images) == 2 and frames is None
    with pytest.raises(ValueError, match="output_type must be one of 'pil', 'np', 'pt', 'latent'"):
        pipe(x, classes=1, output_type="numpy")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['privte'\]"):
        pipe.save_pretrained(hf_cache.parent / "p", repo_id="user/p", push_to_hub=True,
                             privte=True)
    with pytest.raises(ValueError, match="push_to_hub=True\\) needs repo_id"):
        pipe.save_pretrained(hf_cache.parent / "p", push_to_hub=True)
    pipe.save_pretrained(hf_cache.parent / "p", repo_id="user/p", push_to_hub=True)
    assert "hjtranslate_pipeline.json" in hub_server.files("user/p", "main")


def test_a_pipeline_of_dark_on_light_pictures_keeps_their_polarity(pipes, tmp_path):
    """Rule 3 makes pictures light on dark, as MNIST's and Fashion-MNIST's are; a pipeline built
    with light_on_dark=False (its encoder learnt dark pictures on light) keeps them as they
    come, and says so in its index; an index without the setting inverts, as before."""
    page = np.full((28, 28), 255, np.uint8)
    page[8:20, 12:16] = 0  # a dark stroke on white
    shipped = pipes["shared"]
    assert any("inverted" in n for n in shipped(page, classes=1, output_type="latent").notes[0])
    other = TranslationPipeline.from_components(shipped.vae, shipped.map, source_dataset="sketches",
                                                target_dataset="photos", light_on_dark=False)
    out = other(page, classes=1, output_type="latent")
    assert not any("inverted" in n for n in out.notes[0])
    x, _ = other._preprocess(page, "source", True)
    assert float(x[0, 0, 0, 0]) == 1.0 and float(x[0, 0, 10, 13]) == 0.0  # as it came
    other.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / INDEX_FILE).read_text())
    assert index["light_on_dark"] is False
    assert TranslationPipeline.from_pretrained(tmp_path / "p").light_on_dark is False
    del index["light_on_dark"]
    (tmp_path / "p" / INDEX_FILE).write_text(json.dumps(index))
    assert TranslationPipeline.from_pretrained(tmp_path / "p").light_on_dark is True
    with pytest.raises(ValueError, match="light_on_dark must be True or False"):
        TranslationPipeline.from_components(shipped.vae, shipped.map, light_on_dark="no")


def test_a_vae_instance_without_latent_statistics_is_refused_when_bundled(pipes):
    """As a folder without latent_stats.json is: refused when the pipeline is built, not when
    it is saved after translating."""
    enc = VAEEncoder(MODELS / "vae")
    enc.latent_stats = None
    with pytest.raises(CheckpointError, match="no latent statistics.*fit_latent_stats"):
        TranslationPipeline.from_components(enc, pipes["shared"].map)


def _snippet(card: str) -> str:
    return card.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_cards_usage_snippets_run(data, tmp_path, monkeypatch):
    """The shipped class-conditional map's card called m.forward(x) without the classes (an
    error); a pipeline without a source judge promised classes detected by one."""
    xs, ls, _, _ = data
    monkeypatch.chdir(REPO)
    snippet = _snippet((MODELS / "digits-to-fashion" / "map" / "README.md").read_text())
    space = {"x": torch.randn(4, 64), "k": 3}
    exec(snippet, space)
    assert space["x_back"].shape == (4, 64)
    shared = HJMap(2, head_kwargs={"width": 8, "depth": 2})
    shared.save_pretrained(tmp_path / "shared")
    monkeypatch.chdir(tmp_path)
    space = {"x": torch.randn(4, 2)}
    exec(_snippet((tmp_path / "shared" / "README.md").read_text()), space)
    assert space["x_back"].shape == (4, 2)
    no_judge = TranslationPipeline.from_components(MODELS / "vae", MODELS / "digits-to-fashion" / "map",
                                                   None, MODELS / "judge-fashion-mnist", "mnist",
                                                   "fashion-mnist")
    no_judge.save_pretrained(tmp_path / "pipe")
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "judge classifier (`judge_target/`)" in card and "judge_source/" not in card
    space = {"images": [xs[0], xs[1]]}
    exec(_snippet(card).replace("out.images[0].save('translated.png')", ""), space)
    assert len(space["back"].images) == 2


def test_links_out_of_a_pipeline_folder_are_not_followed_into_copies(saved, tmp_path):
    """A folder from a stranger can link a secret or a device into a part: re-saving or
    publishing it copies neither, and a part folder linked from elsewhere is refused."""
    import warnings

    from hjtranslate.hub import _stage

    secret = tmp_path / "secret.txt"
    secret.write_text("hf_SECRET")
    pipe = tmp_path / "received"
    shutil.copytree(saved, pipe)
    os.symlink(secret, pipe / "vae" / "NOTES.md")
    os.symlink("/dev/zero", pipe / "vae" / "zeros.json")
    os.symlink("config.json", pipe / "vae" / "alias.json")  # a link inside the part is fine
    os.symlink("loop.json", pipe / "vae" / "loop.json")  # a loop: left out, not a RuntimeError
    loaded = TranslationPipeline.from_pretrained(pipe)
    again = tmp_path / "resaved"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded.save_pretrained(again)
    assert any("NOTES.md" in str(w.message) and "zeros.json" in str(w.message) for w in caught)
    assert not (again / "vae" / "NOTES.md").exists() and not (again / "vae" / "zeros.json").exists()
    assert not os.path.lexists(again / "vae" / "loop.json")
    assert (again / "vae" / "alias.json").is_file()
    staged = tmp_path / "staged"
    left_out = _stage(pipe.resolve(), "pipeline", staged)
    assert "vae/NOTES.md (a link to a file outside the folder)" in left_out
    assert not (staged / "vae" / "NOTES.md").exists()
    # a name some other part's loader reads is no pass: only what this part's loader read
    os.symlink(secret, pipe / "judge_source" / "latent_stats.json")
    shutil.rmtree(staged)
    assert any(f.startswith("judge_source/latent_stats.json") for f in
               _stage(pipe.resolve(), "pipeline", staged))
    assert not (staged / "judge_source" / "latent_stats.json").exists()
    assert (staged / "vae" / "config.json").is_file()
    assert "hf_SECRET" not in "".join(p.read_text(errors="replace") for p in staged.rglob("*.md"))

    linked = tmp_path / "linked"
    linked.mkdir()
    for f in saved.iterdir():
        (linked / f.name).symlink_to(f) if f.name == "vae" else (
            shutil.copytree(f, linked / f.name) if f.is_dir() else shutil.copy(f, linked / f.name))
    with pytest.raises(CheckpointError, match="outside the pipeline folder: copy that folder in"):
        TranslationPipeline.from_pretrained(linked)


def test_saving_and_translating_replace_links_rather_than_write_through_them(saved, inputs,
                                                                            tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    m = HJMap.from_pretrained(saved / "map")
    folder = tmp_path / "map"
    m.save_pretrained(folder)
    (folder / "README.md").unlink()
    os.symlink(victim, folder / "README.md")  # an earlier map's folder, its card a link out
    m.save_pretrained(folder)
    assert victim.read_text() == "keep me"
    assert not (folder / "README.md").is_symlink() and HJMap.from_pretrained(folder).dim == m.dim

    out = tmp_path / "out"
    out.mkdir()
    first = sorted(inputs.iterdir())[0]
    os.symlink(victim, out / f"{first.stem}_forward.png")
    assert main(["translate", "--model", str(saved), "--input", str(first), "--out", str(out)]) == 0
    assert victim.read_text() == "keep me"
    assert not (out / f"{first.stem}_forward.png").is_symlink()
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    long = tmp_path / ("d" * 235 + ".png")  # its output's name fits in 255 bytes, a temp name too
    shutil.copy(first, long)
    assert main(["translate", "--model", str(saved), "--input", str(long), "--out", str(out)]) == 0
    assert (out / f"{long.stem}_forward.png").is_file()


@pytest.mark.parametrize("part", ["index", "map", "vae", "judge"])
def test_a_model_file_that_is_a_link_loop_or_a_device_is_named_as_such(saved, tmp_path, part):
    # each read "is missing" / "holds no config.json" before: misleading beside `ls`
    from hjtranslate_plugins.vae import VAEEncoder

    from hjtranslate.judges import load_judge

    pipe = tmp_path / "pipe"
    shutil.copytree(saved, pipe)
    file = {"index": pipe / "hjtranslate_pipeline.json", "map": pipe / "map" / "config.json",
            "vae": pipe / "vae" / "config.json", "judge": pipe / "judge_source" / "config.json"}[part]
    load = {"index": lambda: TranslationPipeline.from_pretrained(pipe),
            "map": lambda: HJMap.from_pretrained(pipe / "map"),
            "vae": lambda: VAEEncoder(pretrained=str(pipe / "vae")),
            "judge": lambda: load_judge(pipe / "judge_source")}[part]
    for target, reason in [(file.name, "is a loop of symbolic links"),
                           ("/dev/zero", "is a link to /dev/zero, not a regular file")]:
        file.unlink()
        os.symlink(target, file)
        with pytest.raises((CheckpointError, FileNotFoundError), match=f"{file}.* {reason}"):
            load()
        if part == "vae":  # inside a pipeline too
            with pytest.raises(CheckpointError, match=f"{file}.* {reason}"):
                TranslationPipeline.from_pretrained(pipe)


def test_a_settings_file_linked_to_a_device_is_refused_unread(saved, tmp_path):
    folder = tmp_path / "zero"
    (folder / "map").mkdir(parents=True)
    os.symlink("/dev/zero", folder / "config.json")  # read whole, it would fill the memory
    with pytest.raises(CheckpointError):
        TranslationPipeline.from_pretrained(folder)
    from hjtranslate import checks

    pipe = tmp_path / "pipe"
    shutil.copytree(saved, pipe)
    size = (pipe / "map" / "config.json").stat().st_size
    with pytest.MonkeyPatch.context() as mp:  # a settings file larger than any config
        mp.setattr(checks, "MAX_SETTINGS_BYTES", size - 1)
        with pytest.raises(CheckpointError, match=r"more than a settings file holds"):
            TranslationPipeline.from_pretrained(pipe)


def _as_hub_cache(pipe: Path, cache: Path) -> Path:
    """``pipe`` laid out as a Hugging Face cache snapshot: its files moved into the repo's blobs/
    and linked from snapshots/REV/ (relative links, as huggingface_hub makes them)."""
    repo = cache / "models--user--pipe"
    snapshot = repo / "snapshots" / ("0" * 40)
    (repo / "blobs").mkdir(parents=True)
    for i, f in enumerate(sorted(p for p in pipe.rglob("*") if p.is_file())):
        rel = f.relative_to(pipe)
        shutil.copy(f, repo / "blobs" / f"blob{i}")
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(os.path.relpath(repo / "blobs" / f"blob{i}", (snapshot / rel).parent))
    return snapshot


def test_linked_weights_cache_snapshots_and_forged_blobs(saved, tmp_path):
    """Re-saving keeps what loading read even where it is a link out (git-annex, DVC, an old
    --local-dir download): the weights stay; a Hub cache snapshot, opened directly or through a
    link, is copied whole; a blobs/ folder that is itself a link is no cache's."""
    import warnings

    annexed = tmp_path / "annexed"
    shutil.copytree(saved, annexed)
    store = tmp_path / "annex"
    store.mkdir()
    weights = annexed / "vae" / "diffusion_pytorch_model.safetensors"
    shutil.move(weights, store / "w.safetensors")
    weights.symlink_to(store / "w.safetensors")
    TranslationPipeline.from_pretrained(annexed).save_pretrained(tmp_path / "resaved")
    again = TranslationPipeline.from_pretrained(tmp_path / "resaved")
    assert (tmp_path / "resaved" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert again.vae is not None

    snapshot = _as_hub_cache(saved, tmp_path / "cache")
    link = tmp_path / "link"
    link.symlink_to(snapshot)
    for folder, out in ((snapshot, "from-snapshot"), (link, "through-link")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing skipped
            TranslationPipeline.from_pretrained(folder).save_pretrained(tmp_path / out)
        names = {p.relative_to(tmp_path / out).as_posix() for p in (tmp_path / out).rglob("*")}
        assert {"vae/diffusion_pytorch_model.safetensors", "judge_source/model.safetensors",
                "map/model.safetensors"} <= names

    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.txt").write_text("hf_SECRET")
    forged = tmp_path / "forged" / "models--evil--pipe"
    shutil.copytree(saved, forged / "snapshots" / "r")
    (forged / "blobs").symlink_to(home)
    (forged / "snapshots" / "r" / "vae" / "NOTES.md").symlink_to("../../../blobs/secret.txt")
    with pytest.warns(UserWarning, match="NOTES.md"):
        TranslationPipeline.from_pretrained(forged / "snapshots" / "r").save_pretrained(
            tmp_path / "from-forged")
    assert not (tmp_path / "from-forged" / "vae" / "NOTES.md").exists()
