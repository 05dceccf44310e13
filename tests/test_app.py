"""The Gradio app (``apps/translate.py``) served on loopback and called through gradio_client:
every endpoint with good and bad input, the ``hjtranslate app`` launcher, and (slow) a load run.

The pipeline is small but real: the shipped VAE and judges and a map fitted for 20 steps
(``benchmarks/app_load.py:tiny_pipeline``); the shipped ``models/digits-to-fashion`` is not used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from data_paths import SHARED
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
EXAMPLES = REPO / "apps" / "examples"
CLOTHES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]

pytestmark = pytest.mark.skipif(
    not all((MODELS / d / "config.json").is_file() for d in ("vae", "judge-mnist", "judge-fashion-mnist"))
    or not (SHARED / "mnist").is_dir(),
    reason="the shipped models/vae and judges and the datasets in ../shared/datasets are needed",
)


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("app_load", REPO / "benchmarks" / "app_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app_load = _load_benchmark()
_BUILT: dict[str, Path] = {}


def tiny_pipeline_folder(tmp_path_factory) -> Path:
    """Built once per test session, shared by test_app.py and test_app_browser.py."""
    if "folder" not in _BUILT:
        _BUILT["folder"] = app_load.tiny_pipeline(tmp_path_factory.mktemp("app-pipe") / "pipe")
    return _BUILT["folder"]


@pytest.fixture(scope="module")
def pipe_folder(tmp_path_factory):
    os.environ.setdefault("HJT_DATA_DIR", str(SHARED))
    return tiny_pipeline_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def served(pipe_folder, tmp_path_factory):
    """(demo, url): the app on 127.0.0.1 with its own Gradio cache folder, offline."""
    with app_load.serve(str(pipe_folder), tmp_path_factory.mktemp("gradio-cache")) as served_app:
        yield served_app


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False)


def translate(client, path, klass="auto", direction="forward"):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), klass, direction, api_name="/translate")


def app_error(call) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        call()
    message = str(info.value)
    assert "Traceback" not in message and "Error(" not in message
    return message


def check_outputs(result, frames: int = 8):
    translation, strip, gif, report = result
    with Image.open(translation) as img:
        assert img.format == "PNG" and img.size == (168, 168) and img.mode == "L"
        assert np.asarray(img).std() > 1  # not a flat image
    with Image.open(strip) as img:
        assert img.format == "PNG" and img.size == (84 * frames, 84)
    with Image.open(gif) as img:
        assert img.format == "GIF" and img.size == (168, 168) and img.n_frames == frames
    return report


# -- /translate -----------------------------------------------------------------------------
def test_api_lists_the_three_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/translate", "/translate_drawing", "/grid"} <= names


def test_translate_detects_the_digit(client):
    report = check_outputs(translate(client, EXAMPLES / "digit_3.png"))
    assert report.startswith("### digit 3 → Dress")
    assert "detected by the digits judge with" in report
    assert "clothes judge sees Dress" in report and "Input converted" not in report


def test_an_input_from_the_other_side_gets_a_hint(client):
    """A digit given as clothes (and clothes given as a digit): the judges' energies say the
    input looks like the other side's; the right side's examples get no such line."""
    hint = "To the judges the input looks more like"
    report = check_outputs(translate(client, EXAMPLES / "digit_3.png", "auto", "backward"))
    assert f"{hint} digits than clothes:** if so, switch the direction to digits → clothes" in report
    report = check_outputs(translate(client, EXAMPLES / "clothes_5_sandal.png"))
    assert f"{hint} clothes than digits:** if so, switch the direction to clothes → digits" in report
    for name, direction in (("digit_7.png", "forward"), ("clothes_3_dress.png", "backward")):
        assert hint not in check_outputs(translate(client, EXAMPLES / name, "auto", direction))


def test_class_override_and_backward(client):
    report = check_outputs(translate(client, EXAMPLES / "clothes_3_dress.png", "5", "backward"))
    assert report.startswith("### Sandal → digit 5")
    assert "chosen by you (the judge says Dress" in report
    report = check_outputs(translate(client, EXAMPLES / "clothes_7_sneaker.png", "auto", "backward"))
    assert report.startswith("### Sneaker → digit 7")


def test_big_rgb_upload_is_converted_with_a_note(client, tmp_path):
    digit = Image.open(EXAMPLES / "digit_4.png").resize((700, 700), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (1000, 700), (255, 255, 255))  # dark ink on white, landscape
    canvas.paste(Image.merge("RGB", [Image.eval(digit, lambda v: 255 - v)] * 3), (150, 0))
    path = tmp_path / "big.jpg"
    canvas.save(path, quality=90)
    report = check_outputs(translate(client, path))
    assert report.startswith("### digit 4 → Coat")
    notes = report.split("Input converted: ")[1]
    for note in ("converted colour to grey", "inverted", "framed the ",
                 "as mnist does (20x20, centred by mass), out of 1000x700"):
        assert note in notes


def test_blank_non_image_and_oversized_uploads(client, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 200), 255).save(blank)
    assert "blank" in app_error(lambda: translate(client, blank))

    text = tmp_path / "notes.png"
    text.write_text("this is text, not a picture")
    assert "not an image the app can read" in app_error(lambda: translate(client, text))

    wide = tmp_path / "wide.png"
    Image.new("L", (5000, 40), 0).save(wide)
    assert "5000x40 pixels; the limit is 4096" in app_error(lambda: translate(client, wide))

    svg = tmp_path / "digit.png"  # whatever its name says
    svg.write_text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" '
                   'height="28"><circle cx="14" cy="14" r="8"/></svg>')
    assert "SVG drawing" in app_error(lambda: translate(client, svg))
    bomb = tmp_path / "bomb.png"  # 48 KB on disk, 400 Mpixels: PIL will not even open it
    Image.new("1", (20000, 20000)).save(bomb)
    assert "too many pixels to open" in app_error(lambda: translate(client, bomb))


def test_nan_noise_and_blank_first_frame_uploads(client, tmp_path):
    nan = np.zeros((28, 28), np.float32)
    nan[3, 3] = np.nan
    path = tmp_path / "nan.tiff"
    Image.fromarray(nan, mode="F").save(path)
    assert "NaN or infinite pixel values" in app_error(lambda: translate(client, path))
    noise = tmp_path / "noise.png"  # fine noise averages to one flat grey at 28x28
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (2000, 2000), np.uint8)).save(noise)
    assert "fine noise that averages out" in app_error(lambda: translate(client, noise))
    gif = tmp_path / "frames.gif"
    frames = [Image.new("L", (28, 28), 0), Image.open(EXAMPLES / "digit_4.png").convert("L")]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert "used the first of 2 frames" in app_error(lambda: translate(client, gif))


def test_refusals_leave_no_traceback_in_the_server_log(served, tmp_path):
    """A refused input is the person's to fix, not a server fault: no traceback is printed."""
    import gradio as gr

    demo = served[0]
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 0).save(blank)
    calls = [lambda: demo.translator.translate_upload(str(blank)),
             lambda: demo.translator.translate_upload(None),
             lambda: demo.translator.translate_drawing(np.zeros((4, 4, 5), np.int64))]
    for component in demo.blocks.values():  # Gradio's own choice checks, through the app's wrap
        if isinstance(component, (gr.Dropdown, gr.Radio)):
            calls.append(lambda c=component: c.preprocess("no such choice"))
    assert len(calls) == 5
    for call in calls:
        with pytest.raises(gr.Error) as info:
            call()
        assert info.value.print_exception is False, info.value


def test_upload_over_10_mb_is_refused(served, client, tmp_path):
    """Gradio refuses the upload itself (``max_file_size``: the client checks before sending,
    the server answers 413); the app says so too when called directly with such a file."""
    import gradio as gr
    import httpx
    from hjtranslate_apps.translate import read_upload

    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (10 * 2**20 + 1))
    with pytest.raises(ValueError, match="exceeds the maximum file size of 10485760 bytes"):
        translate(client, big)
    with big.open("rb") as f:
        response = httpx.post(f"{served[1]}gradio_api/upload", files={"files": ("big.png", f)},
                              timeout=30)
    assert response.status_code == 413 and "maximum" in response.text.lower()

    with pytest.raises(gr.Error, match="10.0 MB; the limit is 10 MB"):
        read_upload(big)


def test_bad_class_and_direction(client):
    path = EXAMPLES / "digit_1.png"
    # Gradio checks a Dropdown's and a Radio's value against their choices itself
    assert "12 is not in the list of choices" in app_error(lambda: translate(client, path, "12"))
    message = app_error(lambda: translate(client, path, "auto", "sideways"))
    assert "sideways" in message and "not in the list of choices: ['forward', 'backward']" in message


# -- /translate_drawing ---------------------------------------------------------------------
def sketch_value(tmp_path, draw: bool):
    from gradio_client import handle_file
    from PIL import ImageDraw

    img = Image.new("RGB", (280, 280), "white")
    if draw:  # a thick "1"
        ImageDraw.Draw(img).line([(150, 50), (140, 230)], fill="black", width=24)
    path = tmp_path / f"sketch_{draw}.png"
    img.save(path)
    return {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path)),
            "id": None}


def test_drawing(client, tmp_path):
    result = client.predict(sketch_value(tmp_path, True), "auto", "forward",
                            api_name="/translate_drawing")
    report = check_outputs(result)
    assert report.startswith("### digit 1 → Trouser")
    assert "inverted" in report and "as mnist does (20x20, centred by mass), out of 280x280" in report
    result = client.predict(sketch_value(tmp_path, True), "8", "forward",
                            api_name="/translate_drawing")
    assert check_outputs(result).startswith("### digit 8 → Bag")
    message = app_error(lambda: client.predict(sketch_value(tmp_path, False), "auto", "forward",
                                               api_name="/translate_drawing"))
    assert "canvas is blank" in message


# -- /grid ----------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_grid_of_ten_pairs(client, direction):
    items = client.predict(direction, api_name="/grid")
    assert len(items) == 10
    for k, item in enumerate(items):
        digit, clothes = f"digit {k}", CLOTHES[k]
        pair = (digit, clothes) if direction == "forward" else (clothes, digit)
        assert item["caption"] == f"{pair[0]} → {pair[1]}"
        with Image.open(item["image"]) as img:
            assert img.format == "PNG" and img.size == (2 * 84 + 8, 84)


# -- serving --------------------------------------------------------------------------------
def test_queue_and_files_served(served):
    demo, url = served
    assert demo._queue.default_concurrency_limit == 2
    assert not demo.share and not demo.allowed_paths
    for path in (REPO / "README.md", REPO / "apps" / "translate.py", Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10)
        assert info.value.code in (403, 404)


# -- the launcher ---------------------------------------------------------------------------
def test_cmd_app(pipe_folder, monkeypatch, capsys, tmp_path):
    import signal

    import gradio as gr

    import hjtranslate.pipeline as pipeline_module
    from hjtranslate.cli import main

    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.append(
        (self, kw, signal.getsignal(signal.SIGTERM))))
    before = signal.getsignal(signal.SIGTERM)
    assert main(["app", "--model", str(pipe_folder), "--port", "7999"]) == 0
    # SIGTERM closes the server as Ctrl-C does (Gradio's cleanup), and only while it serves
    assert launched[-1][2] is not before and signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(KeyboardInterrupt):
        launched[-1][2](signal.SIGTERM, None)
    demo, kwargs, _ = launched[-1]
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["server_port"] == 7999
    assert kwargs["share"] is False and kwargs["max_file_size"] == "10mb"
    assert {"/translate", "/translate_drawing", "/grid"} <= {
        f"/{d.api_name}" for d in demo.fns.values()}
    assert main(["app", "--model", str(pipe_folder), "--host", "0.0.0.0", "--share"]) == 0
    assert launched[-1][1]["share"] is True and launched[-1][1]["server_name"] == "0.0.0.0"

    monkeypatch.setattr(pipeline_module, "default_model_path", lambda: tmp_path / "no-model")
    capsys.readouterr()
    assert main(["app"]) == 2
    err = capsys.readouterr().err
    assert f"shipped pipeline {tmp_path / 'no-model'} is missing. Pass --model" in err
    assert "Traceback" not in err
    assert main(["app", "--model", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_build_demo_default_model_missing(monkeypatch, tmp_path):
    import hjtranslate_apps.translate as app_module

    import hjtranslate.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "default_model_path", lambda: tmp_path / "no-model")
    with pytest.raises(FileNotFoundError, match="hjtranslate train digits-to-fashion --export"):
        app_module.build_demo()


# -- load -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_load_50_concurrent_requests(served, tmp_path):
    inputs = app_load.make_inputs(tmp_path / "inputs", 50)
    summary = app_load.run_load(served[1], inputs)
    print(json.dumps(summary))
    assert summary["errors"] == 0, summary["error_messages"]
    assert summary["requests"] == 50 and summary["median_s"] > 0


def test_inputs_must_be_uploads(served):
    """The upload's preprocessing is replaced (to word errors for people), but Gradio still
    refuses an input naming a server file that was not uploaded."""
    import httpx

    url = served[1]
    payload = {"data": [{"path": str(EXAMPLES / "digit_3.png"), "meta": {"_type": "gradio.FileData"}},
                        "auto", "forward"]}
    event = httpx.post(f"{url}gradio_api/call/translate", json=payload, timeout=30).json()
    stream = httpx.get(f"{url}gradio_api/call/translate/{event['event_id']}", timeout=30).text
    assert "event: error" in stream and "→" not in stream


# -- the launcher's checks of --host and --port ----------------------------------------------
@pytest.mark.parametrize("address, message", [
    (["--port", "99999"], "--port must be between 1 and 65535, got 99999."),
    (["--port", "-1"], "--port must be between 1 and 65535, got -1."),
    (["--port", "0"], "--port must be between 1 and 65535, got 0."),
    (["--host", "256.1.1.1"], "Cannot serve the app on --host 256.1.1.1: "),
])
def test_cmd_app_checks_host_and_port_first(monkeypatch, capsys, tmp_path, address, message):
    import gradio as gr

    from hjtranslate.cli import main

    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.append(kw))
    assert main(["app", "--model", str(tmp_path / "nothing"), *address]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "no such folder" not in err
    assert not launched


def test_cmd_app_finds_its_port_in_use_before_it_loads_the_model(monkeypatch, capsys, tmp_path):
    import signal
    import socket

    from hjtranslate.cli import main

    before = signal.getsignal(signal.SIGTERM)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--model", str(tmp_path / "nothing"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port} is in use on 127.0.0.1: pick another --port" in err
    assert "no such folder" not in err  # said before the model was looked for
    assert signal.getsignal(signal.SIGTERM) == before


def test_cmd_app_failing_to_serve_names_host_and_port(monkeypatch, capsys):
    import hjtranslate_apps.translate as app_module

    import hjtranslate.pipeline as pipeline_module
    from hjtranslate.cli import main

    class Demo:
        def launch(self, **kwargs):
            raise OSError("Cannot find empty port in range: 7999-7999.")

    monkeypatch.setattr(pipeline_module.TranslationPipeline, "from_pretrained",
                        classmethod(lambda cls, model, **hub: "a pipeline"))
    monkeypatch.setattr(app_module, "build_demo", lambda pipe: Demo())
    assert main(["app", "--model", "any", "--port", "7999"]) == 2
    err = capsys.readouterr().err
    assert "Cannot serve the app on --host 127.0.0.1 --port 7999" in err
    assert "pick another --port" in err and "check that --host" in err


def test_a_model_without_judges_offers_classes_only():
    """'auto' needs a judge: a pipeline without any starts at class 0 instead (every request
    failed with "pick the class yourself")."""
    from hjtranslate_apps.translate import Translator

    from hjtranslate import HJMap
    from hjtranslate.pipeline import TranslationPipeline

    pipe = TranslationPipeline.from_components(MODELS / "vae",
                                               HJMap(64, head="conditional", num_classes=10))
    choices = Translator(pipe).class_choices()
    assert [value for _, value in choices] == [str(k) for k in range(10)]


def test_classes_the_map_was_not_trained_on_are_not_offered(monkeypatch):
    """A map refuses the classes it had no samples of: the app leaves them out of its choices
    and its grid, and says so for a class typed or detected."""
    import gradio as gr
    from hjtranslate_apps.translate import Translator

    from hjtranslate.pipeline import TranslationPipeline

    pipe = TranslationPipeline.from_pretrained(MODELS / "digits-to-fashion")
    pipe.map.untrained_classes = [3, 7]
    app = Translator(pipe)
    assert [v for _, v in app.class_choices()] == ["auto", *(str(k) for k in (0, 1, 2, 4, 5, 6, 8, 9))]
    assert [caption.split(" → ")[0].removeprefix("digit ") for _, caption in app.grid("forward")] == [
        str(k) for k in (0, 1, 2, 4, 5, 6, 8, 9)]
    with pytest.raises(gr.Error, match="Class 3 had no samples when this model's map was trained"):
        app._klass("3")
    digit_3 = Image.open(EXAMPLES / "digit_3.png")
    with pytest.raises(gr.Error, match="judge took this for digit 3, a class this model's map was not"):
        app.translate_image(digit_3, "auto", "forward", [], "blank")
    # a judge of more classes than the map: its class 15 is out of the map's range
    monkeypatch.setattr(pipe, "classify", lambda *a, **k: ([15], [0.9]))
    with pytest.raises(gr.Error, match="judge took this for class 15, outside this model's 0..9"):
        app.translate_image(digit_3, "auto", "forward", [], "blank")


def test_empty_output_folders_are_swept(tmp_path):
    """Gradio's cache cleaning removes a request's files but not its folder: the next request
    removes folders emptied a minute ago or more (not one a request is writing into)."""
    import time

    from hjtranslate_apps.translate import _Outputs

    root = tmp_path / "hjtranslate"
    old, fresh, full = root / "old", root / "fresh", root / "full"
    for folder in (old, fresh, full):
        folder.mkdir(parents=True)
    (full / "translation.png").write_bytes(b"png")
    hour_ago = time.time() - 3600
    for folder in (old, full):
        os.utime(folder, (hour_ago, hour_ago))
    _Outputs.swept = 0.0  # a sweep at most once a minute: another test's request may have swept
    outputs = _Outputs(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == sorted(["fresh", "full", outputs.folder.name])
    old.mkdir()  # within the minute the next request does not list the folders again
    os.utime(old, (hour_ago, hour_ago))
    assert old.is_dir() and _Outputs(tmp_path).folder.is_dir() and old.is_dir()
