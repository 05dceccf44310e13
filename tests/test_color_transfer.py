"""The color-transfer task: outputs, the colour-histogram metrics, and clear input errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hjtranslate.cli import main
from hjtranslate.tasks.color_transfer import (
    COLOUR_HEAD_KWARGS,
    colour_histogram,
    histogram_emd,
    histogram_intersection,
    load_image,
    off_palette_share,
)


def _save(path, arr):
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    warm = np.stack([0.6 + 0.4 * xx, 0.3 + 0.3 * yy, 0.1 + 0.1 * xx * yy], -1)
    cool = np.stack([0.1 + 0.2 * yy, 0.3 + 0.3 * xx, 0.5 + 0.5 * yy], -1)
    warm = np.clip(warm + 0.03 * rng.standard_normal(warm.shape), 0, 1)
    cool = np.clip(cool + 0.03 * rng.standard_normal(cool.shape), 0, 1)
    return (_save(tmp_path / "warm.png", (warm * 255).astype(np.uint8)),
            _save(tmp_path / "cool.png", (cool * 255).astype(np.uint8)))


def test_task_writes_images_map_and_metrics(images, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "color-transfer", "--source", images[0], "--target", images[1],
                 "--steps", "30", "--pixels", "500", "--batch-size", "128", "--bins", "8",
                 "--output-dir", str(out), "--no-progress"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"source_recoloured.png", "target_recoloured.png", "panel.png", "map", "metrics.json",
            "config.json"} <= names
    assert Image.open(out / "source_recoloured.png").size == (32, 32)
    m = json.loads((out / "metrics.json").read_text())
    for d in ("forward", "backward", "before"):
        assert m[f"emd_{d}"] >= 0 and 0 <= m[f"intersection_{d}"] <= 1
        assert 0 <= m[f"off_palette_{d}"] <= 1
    assert m["train_pixels"] == [500, 500]
    cfg = json.loads((out / "map" / "config.json").read_text())
    assert cfg["dim"] == 3 and cfg["encoder"]["name"] == "identity"
    # The colour task's own defaults: Fourier features and the batch semi-dual.
    assert {k: cfg["head_kwargs"][k] for k in COLOUR_HEAD_KWARGS} == COLOUR_HEAD_KWARGS
    run_config = json.loads((out / "config.json").read_text())
    assert (run_config["semidual_weight"], run_config["semidual_side"]) == (10.0, "both")
    assert (run_config["mmd"], run_config["sinkhorn_blur"]) == ("sinkhorn", 0.1)


@pytest.fixture
def fit_calls(monkeypatch):
    """The match each training run hands to fit."""
    from hjtranslate.tasks import common

    calls, real_fit = [], common.fit

    def recording_fit(*args, **kwargs):
        calls.append((kwargs["mmd"], kwargs["mmd_options"]))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(common, "fit", recording_fit)
    return calls


@pytest.mark.parametrize(("extra", "expected"), [
    ([], ("sinkhorn", {"blur": 0.1})),
    (["--sinkhorn-blur", "0.05"], ("sinkhorn", {"blur": 0.05})),
    (["--mmd", "energy"], ("energy", {})),
    (["--mmd", "gaussian"], ("gaussian", {})),
])
def test_the_match_fit_trains_with(images, tmp_path, fit_calls, extra, expected):
    out = tmp_path / "run"
    assert main(["train", "color-transfer", "--source", images[0], "--target", images[1],
                 "--steps", "2", "--pixels", "200", "--batch-size", "64", "--bins", "4",
                 "--output-dir", str(out), "--no-progress", *extra]) == 0
    assert fit_calls == [expected]


def test_a_resumed_run_keeps_its_match_and_a_blur_needs_sinkhorn(images, tmp_path, fit_calls, capsys):
    out = tmp_path / "run"
    base = ["train", "color-transfer", "--source", images[0], "--target", images[1],
            "--pixels", "200", "--batch-size", "64", "--bins", "4", "--output-dir", str(out),
            "--no-progress"]
    assert main([*base, "--steps", "4", "--mmd", "energy"]) == 0
    # resumed without repeating --mmd: the run started with the energy distance goes on with it
    assert main([*base, "--steps", "8", "--resume"]) == 0
    assert fit_calls[:2] == [("energy", {}), ("energy", {})]
    # the images come from the record too (as absolute paths: a resume from elsewhere finds
    # them); without --resume they are required
    assert json.loads((out / "config.json").read_text())["source"] == str(Path(images[0]).resolve())
    assert main(["train", "color-transfer", "--output-dir", str(out), "--steps", "9", "--resume",
                 "--no-progress"]) == 0
    assert main(["train", "color-transfer", "--target", images[1], "--output-dir",
                 str(tmp_path / "new")]) == 2
    assert "the following arguments are required: --source" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["mmd"] == "energy"
    assert main([*base, "--steps", "2", "--mmd", "energy", "--sinkhorn-blur", "0.1"]) != 0
    assert "--sinkhorn-blur applies to --mmd sinkhorn, not --mmd energy" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--fourier-features", "0"], ["--cost", "pnorm", "--p", "3"],
                                   ["--head", "affine"]])
def test_fourier_features_off_on_request_and_for_other_costs_and_heads(images, tmp_path, extra):
    out = tmp_path / "run"
    assert main(["train", "color-transfer", "--source", images[0], "--target", images[1],
                 "--steps", "2", "--pixels", "200", "--batch-size", "64", "--bins", "4",
                 "--output-dir", str(out), "--no-progress", *extra]) == 0
    assert "fourier_features" not in json.loads((out / "map" / "config.json").read_text())["head_kwargs"]


def test_histogram_metrics_on_known_cases():
    rng = np.random.default_rng(1)
    px = rng.random((2000, 3))
    h = colour_histogram(px, bins=4)
    assert h.shape == (64,) and h.sum() == pytest.approx(1.0)
    assert histogram_emd(h, h, 4) == pytest.approx(0.0, abs=1e-12)
    assert histogram_intersection(h, h) == pytest.approx(1.0)
    dark = colour_histogram(np.full((10, 3), 0.1), bins=4)  # bin 0, centre 1/8
    light = colour_histogram(np.full((10, 3), 0.9), bins=4)  # bin 3, centre 7/8
    assert histogram_intersection(dark, light) == 0.0
    # one point mass to another: squared Euclidean distance of the bin centres, 3 * (3/4)^2
    assert histogram_emd(dark, light, 4) == pytest.approx(3 * 0.75**2)
    assert histogram_emd(dark, light, 4, ground="euclidean") == pytest.approx(3**0.5 * 0.75)


def test_off_palette_share_counts_pixels_far_from_every_reference_colour():
    reference = np.array([[0.1, 0.1, 0.1], [0.9, 0.8, 0.7]])
    result = np.array([
        [0.1, 0.1, 0.1],     # a reference colour
        [0.9, 0.8, 0.75],    # 0.05 from one: on the palette
        [0.9, 0.6, 0.9],     # violet: far from both
        [0.5, 0.5, 0.5],     # far from both
    ])
    assert off_palette_share(result, reference) == pytest.approx(0.5)
    assert off_palette_share(result, reference, radius=0.6) == 0.0
    assert off_palette_share(reference, reference) == 0.0
    with pytest.raises(ValueError, match="at least one pixel"):
        off_palette_share(np.zeros((0, 3)), reference)


def test_a_single_colour_image_trains_without_the_linear_warm_start(images, tmp_path):
    """A flat image's colours do not spread: its Gaussian map to the other image blew up (a
    flat blue recoloured to a clipped cyan, worse than before); it now trains from scratch."""
    flat = _save(tmp_path / "flat.png", np.full((16, 16, 3), (40, 120, 200), np.uint8))
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"^the source or target samples hardly spread \(a "
                      r"single colour\?\): no linear warm start"):
        assert main(["train", "color-transfer", "--source", flat, "--target", images[1], "--steps",
                     "30", "--pixels", "500", "--batch-size", "128", "--bins", "8", "--output-dir",
                     str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["emd_forward"] < m["emd_before"] and m["off_palette_forward"] < 0.5


def test_greyscale_is_converted_with_a_note(tmp_path, capsys):
    path = _save(tmp_path / "grey.png", np.full((8, 8), 128, np.uint8))
    img = load_image(path)
    assert img.shape == (8, 8, 3) and np.allclose(img[..., 0], img[..., 2])
    assert "greyscale" in capsys.readouterr().err


def test_missing_and_unreadable_files_give_clear_errors(images, tmp_path, capsys):
    assert main(["train", "color-transfer", "--source", str(tmp_path / "nope.png"),
                 "--target", images[1], "--output-dir", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["train", "color-transfer", "--source", images[0], "--target", str(bad),
                 "--output-dir", str(tmp_path / "o")]) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_damaged_files_and_pages_give_clear_errors(images, tmp_path, capsys):
    """PIL raises more than OSError for a damaged file: a PNG chunk's length (SyntaxError), a
    TIFF page without its size (TypeError)."""
    data = bytearray(Path(images[0]).read_bytes())
    data[36] = 38  # the first IDAT chunk's length
    (tmp_path / "chunk.png").write_bytes(bytes(data))
    assert main(["train", "color-transfer", "--source", str(tmp_path / "chunk.png"), "--target",
                 images[1], "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "could not be read (SyntaxError: broken PNG file" in err and "Traceback" not in err
    pages = [Image.open(images[0]).convert("RGB")] * 3
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    tif = bytearray((tmp_path / "pages.tif").read_bytes())
    offset, page = int.from_bytes(tif[4:8], "little"), 0
    while offset:  # the second page's ImageWidth tag (256) renamed: PIL cannot size that page
        page += 1
        count = int.from_bytes(tif[offset:offset + 2], "little")
        for entry in range(offset + 2, offset + 2 + 12 * count, 12):
            if page == 2 and int.from_bytes(tif[entry:entry + 2], "little") == 256:
                tif[entry:entry + 2] = (32767).to_bytes(2, "little")
        offset = int.from_bytes(tif[offset + 2 + 12 * count:offset + 6 + 12 * count], "little")
    (tmp_path / "pages.tif").write_bytes(bytes(tif))
    first = load_image(tmp_path / "pages.tif")  # the first page is whole: it is used
    assert first.shape == (32, 32, 3)
    assert "frames; the first is used" in capsys.readouterr().err


def test_a_folder_of_other_files_is_not_taken_as_a_run(images, tmp_path, capsys):
    """--output-dir naming a folder of the user's (no run's config.json) is refused before its
    map/ or README.md is replaced; so is one whose config.json is not a JSON object."""
    out = tmp_path / "mine"
    (out / "map").mkdir(parents=True)
    (out / "map" / "notes.txt").write_text("precious")
    run = ["train", "color-transfer", "--source", images[0], "--target", images[1], "--steps",
           "2", "--pixels", "100", "--batch-size", "32", "--no-progress", "--output-dir", str(out)]
    assert main(run) == 2
    assert "holds files but no config.json of a color-transfer run (map)" in capsys.readouterr().err
    assert (out / "map" / "notes.txt").read_text() == "precious"
    (out / "config.json").write_text("{ // my settings }")
    assert main(run) == 2
    assert "holds a config.json that is not a JSON object" in capsys.readouterr().err
    assert (out / "config.json").read_text() == "{ // my settings }"


def test_home_paths_sixteen_bit_greys_and_a_moved_image_on_resume(images, tmp_path, capsys,
                                                                   monkeypatch):
    """`--source=~/x.png` (the shell leaves that ~) is the home folder's; a 12-bit picture in a
    16-bit file is scaled by 1/4095, not read as black; a run whose image moved resumes with
    the image's new path, and without it says so."""
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    grey = np.mgrid[0:16, 0:16][1] / 15 * 4095
    Image.fromarray(grey.astype(np.uint16)).save(tmp_path / "g12.png")
    assert load_image(tmp_path / "g12.png").max() == 1.0
    assert "I;16 values scaled by 1/4095 (its values fit 12 bits)" in capsys.readouterr().err
    shutil.copy(images[0], tmp_path / "a.png")
    run = ["train", "color-transfer", "--target", images[1], "--steps", "4", "--pixels", "100",
           "--batch-size", "32", "--no-progress"]
    assert main([*run, "--source=~/a.png", "--output-dir=~/run"]) == 0
    out = tmp_path / "run"
    assert (out / "map").is_dir() and not Path("~").exists()
    (tmp_path / "a.png").rename(tmp_path / "b.png")
    capsys.readouterr()
    assert main(["train", "color-transfer", "--resume", "--output-dir", str(out), "--steps", "6",
                 "--no-progress"]) == 2
    assert "the run's source image" in (err := capsys.readouterr().err) and "If it moved" in err
    assert main(["train", "color-transfer", "--resume", "--output-dir", str(out), "--steps", "6",
                 "--no-progress", "--source", str(tmp_path / "b.png")]) == 0
    assert json.loads((out / "config.json").read_text())["source"].endswith("b.png")
    assert json.loads((out / "metrics.json").read_text())["steps"] == 6


def test_an_image_where_the_run_writes_its_pictures_is_refused(images, tmp_path, capsys):
    import shutil

    out = tmp_path / "o"
    out.mkdir()
    shutil.copy(images[0], out / "panel.png")
    assert main(["train", "color-transfer", "--source", str(out / "panel.png"), "--target",
                 images[1], "--output-dir", str(out)]) == 2
    assert "holds files but no config.json of a color-transfer run (panel.png)" in capsys.readouterr().err
    (out / "config.json").write_text('{"task": "color-transfer"}')  # an earlier run's folder
    assert main(["train", "color-transfer", "--source", str(out / "panel.png"), "--target",
                 images[1], "--output-dir", str(out)]) == 2
    assert "is where the run writes its panel.png: it would be replaced" in capsys.readouterr().err
    assert (out / "panel.png").read_bytes() == open(images[0], "rb").read()
    link = tmp_path / "link.png"  # the same file through a link
    link.symlink_to(out / "panel.png")
    assert main(["train", "color-transfer", "--source", str(link), "--target", images[1],
                 "--output-dir", str(out)]) == 2
    assert "it would be replaced" in capsys.readouterr().err


def test_pictures_are_written_whole(tmp_path):
    """A writer that fails (or is killed) leaves the earlier picture, and no temporary file."""
    from hjtranslate.checks import written_whole

    path = tmp_path / "panel.png"
    path.write_bytes(b"earlier")
    with pytest.raises(RuntimeError), written_whole(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert path.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == [
        "panel.png"]
    with written_whole(path) as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_a_phone_photo_is_turned_upright_and_big_images_are_scored_in_blocks(tmp_path, capsys,
                                                                             monkeypatch):
    """An EXIF-rotated JPEG is loaded as it displays (a note says so); the histogram metrics
    give the same figures when they run over the pixels in blocks."""
    from PIL import Image

    import hjtranslate.tasks.color_transfer as ct

    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = (200, 30, 30)  # left half red, as stored
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "phone.jpg", "source")
    assert loaded.shape == (60, 40, 3)  # upright: 40 wide, 60 high
    assert loaded[:30, :, 0].mean() > 0.7 and loaded[30:, :, 0].mean() < 0.1  # red on top
    assert "turned upright (EXIF orientation 6)" in capsys.readouterr().err

    rng = np.random.default_rng(0)
    px, ref = rng.random((5000, 3)).astype(np.float32), rng.random((3000, 3)).astype(np.float32)
    whole = colour_histogram(px, 8), off_palette_share(px, ref, radius=0.02)
    monkeypatch.setattr(ct, "_BLOCK", 700)
    np.testing.assert_array_equal(colour_histogram(px, 8), whole[0])
    assert off_palette_share(px, ref, radius=0.02) == whole[1]


def test_transparent_pixels_are_left_out_and_the_alpha_kept(images, tmp_path, capsys):
    """A cut-out's hidden pixels (magenta under a transparent half) were half the training
    pixels and painted the recoloured image; its alpha was dropped."""
    warm = np.asarray(Image.open(images[0]))
    rgba = np.dstack([warm, np.full(warm.shape[:2], 255, np.uint8)])
    rgba[:, :16] = (255, 0, 255, 0)  # the left half: transparent, magenta underneath
    cut = _save(tmp_path / "cut.png", rgba)
    out = tmp_path / "run"
    args = ["train", "color-transfer", "--target", images[1], "--steps", "2", "--pixels", "10000",
            "--batch-size", "64", "--bins", "8", "--no-progress"]
    assert main([*args, "--source", cut, "--output-dir", str(out)]) == 0
    assert "its 512 fully transparent pixels are left out" in capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_pixels"] == [512, 1024] == m["visible_pixels"]
    recoloured = np.asarray(Image.open(out / "source_recoloured.png"))
    assert recoloured.shape == (32, 32, 4) and (recoloured[:, :16, 3] == 0).all()
    assert (recoloured[:, 16:, 3] == 255).all()
    # the metrics read the visible pixels alone: as the opaque right half by itself
    _save(tmp_path / "half.png", warm[:, 16:])
    assert main([*args, "--source", str(tmp_path / "half.png"),
                 "--output-dir", str(tmp_path / "half")]) == 0
    half = json.loads((tmp_path / "half" / "metrics.json").read_text())
    assert m["emd_before"] == pytest.approx(half["emd_before"])
    rgba[..., 3] = 0
    _save(tmp_path / "none.png", rgba)
    assert main([*args, "--source", str(tmp_path / "none.png"),
                 "--output-dir", str(tmp_path / "none")]) == 2
    assert "transparent all over" in capsys.readouterr().err


def test_the_readmes_recipe_recolours_another_picture(images, tmp_path, monkeypatch):
    """The README's Python recipe, run as written (its paths pointed here)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    recipe = next(block for block in readme.split("```python")[1:]
                  if "color_transfer import apply_map" in block).split("```")[0]
    out = tmp_path / "runs" / "color-transfer"
    assert main(["train", "color-transfer", "--source", images[0], "--target", images[1],
                 "--steps", "2", "--pixels", "200", "--batch-size", "64", "--bins", "4",
                 "--output-dir", str(out), "--no-progress"]) == 0
    Image.open(images[1]).save(tmp_path / "another.jpg")
    monkeypatch.chdir(tmp_path)
    exec(recipe, {})  # noqa: S102 - the README's own code
    assert Image.open(tmp_path / "recoloured.png").size == (32, 32)
