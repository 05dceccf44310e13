"""The hjtranslate Gradio app: translate a digit into a piece of clothing of the same class (and
back) with a ``TranslationPipeline``, and watch the morph along the Hamilton-Jacobi
characteristic.

Start it with ``hjtranslate app [--model FOLDER_OR_HUB_ID] [--host H] [--port P] [--share]``, or
build it yourself::

    from hjtranslate_apps.translate import LAUNCH_KWARGS, build_demo
    demo = build_demo("models/digits-to-fashion")  # a folder, a Hub id, a pipeline, or None
    demo.launch(server_name="127.0.0.1", **LAUNCH_KWARGS)

Endpoints (``gradio_client.Client(url).predict(..., api_name=...)``):

``/translate`` (image file, source class, direction)
    -> (translation PNG, morph strip PNG, morph GIF, report Markdown)
``/translate_drawing`` (Sketchpad value, source class, direction) -> the same four outputs
``/grid`` (direction) -> a gallery of the ten class pairs (test-set examples and translations)

``source class`` is ``"auto"`` (detected by the input side's judge) or ``"0"`` .. ``"9"``;
``direction`` is ``"forward"`` (digits -> clothes) or ``"backward"`` (clothes -> digits).
Bad input (a blank image, a file that is not an image, more than 10 MB or 4096 pixels on a
side) raises ``gr.Error`` with a message for people; other sizes and colour modes are converted
(``TranslationPipeline.preprocess``) and the conversions are listed in the report.

Output images are written, with unique names, into Gradio's cache folder (cleaned by
``delete_cache``) rather than handed over as PIL images: Gradio saves PIL outputs at a path
named by their content hash and writes them in place, so concurrent requests with identical
outputs could read each other's half-written files.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from hjtranslate.images import READ_ERRORS, frame_count, is_blank, pil_to_array, upright
from hjtranslate.pipeline import TranslationPipeline, shipped_pipeline

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
#: display size of the translation (nearest-neighbour upscaling of the 28x28 output)
DISPLAY_SIZE = 168
#: size of one frame in the morph strip and of each half of a grid pair
FRAME_SIZE = 84
#: frames of the morph, t = 0 .. t_f evenly spaced
MORPH_STEPS = 8
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SIDE = 4096
CONCURRENCY_LIMIT = 2
#: what the outputs show before a translation (and again once the input changes)
EMPTY_REPORT = "Translate something to see the class pairing here."
#: keyword arguments for ``demo.launch`` (besides host, port and share)
#: what Chromium, Firefox and Safari show in an <img> (PIL's names); others get a PNG preview
BROWSER_FORMATS = {"PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "ICO", "AVIF"}
#: a 28x28 input (the examples, the test sets) fills its box, pixels kept sharp
APP_CSS = "#upload img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"
LAUNCH_KWARGS: dict[str, Any] = {"max_file_size": "10mb", "css": APP_CSS}
#: how the app names the datasets: (plural for the direction switch, prefix for one class)
SIDE_WORDS = {"mnist": ("digits", "digit "), "fashion-mnist": ("clothes", "")}
EXAMPLE_GLOBS = {"mnist": "digit_{k}.png", "fashion-mnist": "clothes_{k}_*.png"}
NOT_AN_IMAGE = (
    "This file is not an image the app can read. Upload a PNG, JPEG, GIF, BMP, WebP or TIFF "
    "picture of a digit or a piece of clothing."
)


def load_pipeline(pipeline_or_path: TranslationPipeline | str | os.PathLike | None = None
                  ) -> TranslationPipeline:
    """A pipeline as is, a folder or Hub id loaded, or (``None``) the shipped
    ``models/digits-to-fashion`` (``FileNotFoundError`` saying how to produce it if missing)."""
    if isinstance(pipeline_or_path, TranslationPipeline):
        return pipeline_or_path
    if pipeline_or_path is None:
        return TranslationPipeline.from_pretrained(shipped_pipeline("build_demo()"))
    return TranslationPipeline.from_pretrained(pipeline_or_path)


# -- images ---------------------------------------------------------------------------------
def _upscale(img: Image.Image, size: int) -> Image.Image:
    return img.convert("L").resize((size, size), Image.Resampling.NEAREST)


def _strip(frames: list[Image.Image], size: int = FRAME_SIZE) -> Image.Image:
    strip = Image.new("L", (size * len(frames), size))
    for i, frame in enumerate(frames):
        strip.paste(_upscale(frame, size), (size * i, 0))
    return strip


def _pair(left: Image.Image, right: Image.Image, size: int = FRAME_SIZE, gap: int = 8) -> Image.Image:
    pair = Image.new("L", (2 * size + gap, size), color=128)
    pair.paste(_upscale(left, size), (0, 0))
    pair.paste(_upscale(right, size), (size + gap, 0))
    return pair


class _Outputs:
    """Writes one request's output files into a fresh folder of Gradio's cache."""

    swept = 0.0  # when empty folders were last swept (a request need not list them all)

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        root = Path(cache_dir) / "hjtranslate"
        self.folder = root / uuid.uuid4().hex
        self.folder.mkdir(parents=True)
        now = time.time()
        if now - _Outputs.swept > 60:
            _Outputs.swept = now
            _sweep_empty_folders(root, now)

    def png(self, img: Image.Image, name: str) -> str:
        path = self.folder / f"{name}.png"
        img.save(path, format="PNG")
        return str(path)

    def gif(self, frames: list[Image.Image], name: str, hold_ms: int = 700, step_ms: int = 120) -> str:
        path = self.folder / f"{name}.gif"
        big = [_upscale(f, DISPLAY_SIZE) for f in frames]
        durations = [hold_ms] + [step_ms] * (len(big) - 2) + [hold_ms]
        big[0].save(path, format="GIF", save_all=True, append_images=big[1:], duration=durations,
                    loop=0)
        return str(path)


def _sweep_empty_folders(root: Path, now: float) -> None:
    """Gradio's delete_cache removes old files, not their folders: take the empty ones (not a
    request's that is writing into its own right now: only those a minute old)."""
    for folder in root.iterdir():
        try:
            if now - folder.stat().st_mtime > 60:
                folder.rmdir()  # fails on one that still holds files
        except OSError:
            pass


def read_upload(path: str | os.PathLike | None) -> tuple[Image.Image, list[str]]:
    """An uploaded file -> a PIL image, refusing (``gr.Error``) what is not a readable image of
    at most 10 MB and 4096 pixels on a side."""
    if path is None:
        raise _error("No image yet: upload one, pick an example, or draw in the Draw tab.")
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError:
        raise _error("The uploaded file could not be found on the server: upload it again.") from None
    if size > MAX_UPLOAD_BYTES:
        raise _error(f"The file is {size / 2**20:.1f} MB; the limit is "
                       f"{MAX_UPLOAD_BYTES // 2**20} MB. Upload a smaller image.")
    notes: list[str] = []
    try:
        with open(p, "rb") as f:
            head = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    except OSError:
        raise _error("The uploaded file could not be read on the server: upload it again.") from None
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
        raise _error("This is an SVG drawing, which the app does not render: export it as a PNG "
                     "(or JPEG) picture and upload that.")
    try:
        with Image.open(p) as img:
            w, h = img.size
            if max(w, h) > MAX_SIDE:
                raise _error(f"The image is {w}x{h} pixels; the limit is {MAX_SIDE} pixels on a "
                               "side. Downscale it first (the app works at 28x28 anyway).")
            frames = frame_count(img)
            img.load()
            out = img.copy()
    except gr.Error:
        raise
    except Image.DecompressionBombError:  # PIL refuses to open it at all: over 179 Mpixels
        raise _error(f"The image has too many pixels to open; the limit is {MAX_SIDE} pixels on "
                     "a side. Downscale it first (the app works at 28x28 anyway).") from None
    except (*READ_ERRORS, ValueError):  # UnidentifiedImageError is an OSError
        raise _error(NOT_AN_IMAGE) from None
    if frames > 1:
        notes.append(f"used the first of {frames} frames")
    out, note = upright(out)
    if note:
        notes.append(note)
    return out, notes


def _error(message: str) -> gr.Error:
    """A message for the person at the browser. It is expected input, not a fault of the
    server: no traceback in the server's log."""
    return gr.Error(message, print_exception=False)


def _drawn_as(base: type) -> str:
    """The browser component that draws Gradio's class ``base`` (a template, such as
    gr.Sketchpad, is drawn as the class it derives from): what a subclass must still name."""
    return base.__base__.__name__.lower() if hasattr(base, "is_template") else base.__name__.lower()


@contextlib.contextmanager
def _no_stub_files():
    """Gradio writes a ``.pyi`` stub beside the module of every component subclass (for custom
    component packages); these subclasses only change preprocessing: no stub in the checkout."""
    import gradio.component_meta as meta

    write = meta.create_or_modify_pyi
    meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        meta.create_or_modify_pyi = write


def _quiet(base: type, message: str, raw_path: bool = False) -> type:
    """A subclass of the component ``base`` whose preprocessing errors reach the person at the
    browser as ``message`` (Gradio's own check, a value not among the choices, as its own
    message), with no traceback in the log. ``raw_path``: an upload reaches the app unopened,
    as the API sends it (Gradio's own preprocessing fails on a file that is not an image and
    flattens a transparent PNG onto black); :func:`read_upload` says what is wrong instead. A
    subclass, not a patched instance: Gradio rebuilds a component from its class when a
    function updates its properties (the upload's preview does)."""
    drawn_as = _drawn_as(base)
    with _no_stub_files():

        class Quiet(base):  # type: ignore[misc, valid-type]
            def get_block_name(self) -> str:  # drawn by the browser as ``base`` is
                return drawn_as

            get_block_class = get_block_name

            def preprocess(self, payload: Any) -> Any:
                if raw_path and payload is None:
                    return None
                if raw_path and getattr(payload, "path", None):
                    return payload.path
                try:
                    return super().preprocess(payload)
                except gr.Error as exc:
                    raise _error(exc.message) from None
                except Exception:
                    raise _error(message) from None

    Quiet.__name__ = Quiet.__qualname__ = f"Quiet{base.__name__}"
    return Quiet


_UploadImage = _quiet(gr.Image, NOT_AN_IMAGE, raw_path=True)
_Sketchpad = _quiet(gr.Sketchpad, "The drawing could not be read: clear the canvas and draw again.")
_ClassDropdown = _quiet(gr.Dropdown, "Pick 'auto' or a class from the list.")
_DirectionRadio = _quiet(gr.Radio, "Pick a direction from the list.")


# -- the app --------------------------------------------------------------------------------
class Translator:
    """The app's functions around one pipeline. The queue runs two requests at a time on the
    same pipeline: inference only reads the modules (grad mode is per thread), so no lock."""

    def __init__(self, pipe: TranslationPipeline) -> None:
        self.pipe = pipe
        self.k = pipe.num_classes or 10
        #: the classes offered: the map's trained ones (a map refuses classes it had no samples of)
        self.classes = pipe.trained_classes or list(range(self.k))
        self.names = {
            "source": [f"{self._prefix(pipe.source_dataset)}{n}" for n in pipe.source_class_names or
                       [str(k) for k in range(self.k)]],
            "target": [f"{self._prefix(pipe.target_dataset)}{n}" for n in pipe.target_class_names or
                       [str(k) for k in range(self.k)]],
        }
        self.plural = {side: SIDE_WORDS.get(ds, (ds, ""))[0] for side, ds in
                       (("source", pipe.source_dataset), ("target", pipe.target_dataset))}
        self.cache_dir: str | None = None

    @staticmethod
    def _prefix(dataset: str) -> str:
        return SIDE_WORDS.get(dataset, ("", ""))[1]

    # choices shown in the UI
    def direction_choices(self) -> list[tuple[str, str]]:
        s, t = self.plural["source"], self.plural["target"]
        return [(f"{s} → {t}", "forward"), (f"{t} → {s}", "backward")]

    def class_choices(self) -> list[tuple[str, str]]:
        auto = ([("auto (detect with the judge)", "auto")]
                if self.pipe.judge_source is not None or self.pipe.judge_target is not None else [])
        return auto + [(f"{k}: {self.names['source'][k]} ↔ {self.names['target'][k]}", str(k))
                       for k in self.classes]

    # argument checks
    def _direction(self, direction: Any) -> tuple[str, str, str]:
        if direction not in ("forward", "backward"):
            raise _error(f"Unknown direction {direction!r}: use 'forward' "
                           f"({self.direction_choices()[0][0]}) or 'backward'.")
        sides = ("source", "target") if direction == "forward" else ("target", "source")
        return direction, *sides

    def _klass(self, klass: Any) -> int | None:
        if klass is None or str(klass).strip().lower() in ("", "auto"):
            return None
        try:
            k = int(str(klass).split(":")[0].strip())
        except ValueError:
            raise _error(f"Unknown class {klass!r}: pick 'auto' or a class 0..{self.k - 1}.") from None
        if not 0 <= k < self.k:
            raise _error(f"Class {k} is out of range: pick 'auto' or a class 0..{self.k - 1}.")
        if k not in self.classes:
            raise _error(f"Class {k} had no samples when this model's map was trained: pick one of "
                         f"{', '.join(map(str, self.classes))}.")
        return k

    def _outputs(self) -> _Outputs:
        if self.cache_dir is None:
            from gradio.utils import get_upload_folder

            self.cache_dir = get_upload_folder()
        return _Outputs(self.cache_dir)

    # the work
    def translate_image(self, img: Image.Image, klass: Any, direction: Any,
                        notes: list[str], blank_message: str) -> tuple[str, str, str, str]:
        direction, in_side, out_side = self._direction(direction)
        given = self._klass(klass)
        try:
            x, conv = self.pipe._preprocess(img, in_side, True)  # framed as translate frames
        except ValueError as exc:
            raise _error(f"The image cannot be used: {exc}") from None
        notes = notes + conv[0]
        if is_blank(x):
            # a multi-frame file's first frame, or noise that averages out at 28x28: say so
            raise _error(blank_message + (f" ({'; '.join(notes)}.)" if notes else ""))
        judge = self.pipe.judge_source if in_side == "source" else self.pipe.judge_target
        if given is None and judge is None:
            raise _error(f"This model has no judge for {self.plural[in_side]}: pick the class "
                           "yourself.")
        with torch.no_grad():
            detected = self.pipe.classify(x, side=in_side) if judge is not None else None
            k = given if given is not None else int(detected[0][0])
            if not 0 <= k < self.k:  # a judge of more classes than the map
                raise _error(f"The {self.plural[in_side]} judge took this for class {k}, outside "
                             f"this model's 0..{self.k - 1}: pick the class yourself.")
            if k not in self.classes:
                raise _error(f"The {self.plural[in_side]} judge took this for "
                             f"{self.names[in_side][k]}, a class this model's map was not trained "
                             "on: pick the class yourself.")
            out = self.pipe(x, classes=k, direction=direction, morph_steps=MORPH_STEPS)
        files = self._outputs()
        translation = files.png(_upscale(out.images[0], DISPLAY_SIZE), "translation")
        frames = out.frames[0] if out.frames else [out.images[0]]
        strip = files.png(_strip(frames), "morph")
        gif = files.gif(frames, "morph")
        src, dst = self.names[in_side][k], self.names[out_side][k]
        lines = [f"### {src} → {dst}", ""]
        if given is None:
            lines.append(f"- Source class **{src}**, detected by the {self.plural[in_side]} judge "
                         f"with {detected[1][0]:.0%} confidence.")
        else:
            lines.append(f"- Source class **{src}**, chosen by you"
                         + (f" (the judge says {self.names[in_side][detected[0][0]]}, "
                            f"{detected[1][0]:.0%})." if detected else "."))
        if out.confidences is not None:
            lines.append(f"- The {self.plural[out_side]} judge sees {dst} in the translation with "
                         f"{out.confidences[0]:.0%} confidence.")
        if self.pipe.tells_sides_apart:
            # measured on the test sets when the pipeline was exported: 1 % of real inputs of
            # each side get the hint (benchmarks/input_side.py, BENCHMARKS.md); each judge sees
            # the picture framed as its own dataset frames them, as there
            if self.pipe.looks_like_other_side(img, in_side)[0]:
                other = self.direction_choices()[direction == "forward"][0]
                lines.append(f"- **To the judges the input looks more like "
                             f"{self.plural[out_side]} than {self.plural[in_side]}:** if so, "
                             f"switch the direction to {other}.")
        lines.append(f"- Morph: {len(frames)} frames along the characteristic, t = 0 … 1 "
                     "(decoded from the latent path).")
        if notes:
            lines.append("- Input converted: " + "; ".join(notes) + ".")
        return translation, strip, gif, "\n".join(lines)

    def browser_preview(self, path: str | None) -> Any:
        """An upload in a format browsers do not show (TIFF, PPM, ...) as a PNG of the pixels
        the translation reads (its first frame, upright), so the input box shows it; other
        uploads, and files that do not open, stay as they are (translating them says why)."""
        if path is None:
            return gr.skip()
        try:
            with Image.open(path) as img:
                if img.format in BROWSER_FORMATS or max(img.size) > MAX_SIDE:
                    return gr.skip()
                img.seek(0)
                img.load()
                pixels = pil_to_array(img, [])
        except Exception:  # noqa: BLE001 - PIL raises many kinds; translating reports them
            return gr.skip()
        preview = Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8))
        return self._outputs().png(preview, "upload")

    def translate_upload(self, path: str | None, klass: Any = "auto", direction: Any = "forward"):
        img, notes = read_upload(path)
        return self.translate_image(img, klass, direction, notes,
                                    "The image is blank once shrunk to 28x28 pixels (one flat "
                                    "colour, or fine noise that averages out): nothing to "
                                    "translate.")

    def translate_drawing(self, value: Any, klass: Any = "auto", direction: Any = "forward"):
        blank = ("The canvas is blank: draw a digit (or a piece of clothing) first, big and "
                 "centred, then translate.")
        img = value.get("composite") if isinstance(value, dict) else value
        if img is None:
            raise _error(blank)
        if not isinstance(img, Image.Image):
            try:
                img = Image.fromarray(np.asarray(img))
            except (TypeError, ValueError):
                raise _error("The drawing could not be read: clear the canvas and draw "
                             "again.") from None
        if max(img.size) > MAX_SIDE:
            raise _error(f"The drawing is {img.size[0]}x{img.size[1]} pixels; the limit is "
                           f"{MAX_SIDE} pixels on a side.")
        return self.translate_image(img, klass, direction, [], blank)

    def example_paths(self, side: str) -> list[Path]:
        dataset = self.pipe.source_dataset if side == "source" else self.pipe.target_dataset
        pattern = EXAMPLE_GLOBS.get(dataset)
        if pattern is None:
            return []
        found = [sorted(EXAMPLES_DIR.glob(pattern.format(k=k))) for k in range(self.k)]
        return [f[0] for f in found] if all(found) else []

    def grid(self, direction: Any = "forward") -> list[tuple[str, str]]:
        direction, in_side, out_side = self._direction(direction)
        paths = self.example_paths(in_side)
        if not paths:
            raise _error(f"No examples of {self.plural[in_side]} ship with the app for this "
                           "model: the grid needs one per class.")
        inputs = [Image.open(paths[k]).convert("L") for k in self.classes]
        with torch.no_grad():
            out = self.pipe(inputs, classes=self.classes, direction=direction)
        files = self._outputs()
        return [
            (files.png(_pair(src, dst), f"pair_{k}"),
             f"{self.names[in_side][k]} → {self.names[out_side][k]}")
            for k, src, dst in zip(self.classes, inputs, out.images, strict=True)
        ]


def build_demo(pipeline_or_path: TranslationPipeline | str | os.PathLike | None = None) -> gr.Blocks:
    """The app as a ``gr.Blocks`` with its queue set (two requests at a time). Launch it with
    ``demo.launch(server_name=..., server_port=..., **LAUNCH_KWARGS)``."""
    app = Translator(load_pipeline(pipeline_or_path))
    s, t = app.plural["source"], app.plural["target"]
    with gr.Blocks(title="hjtranslate: digits ↔ clothes", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            f"# hjtranslate: {s} ↔ {t}\n"
            f"Class *k* of {s} goes to class *k* of {t} (digit 3 → Dress) along an optimal "
            "transport map learnt with Hamilton-Jacobi characteristics in a VAE latent space. "
            "Draw, upload or pick an example; the source class is detected by a judge unless you "
            "choose it."
        )
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs() as tabs:
                    with gr.Tab("Upload or example", id="upload"):
                        upload = _UploadImage(label="Input image", type="filepath",
                                          sources=["upload", "clipboard"], height=280,
                                          elem_id="upload")
                        upload_btn = gr.Button("Translate", variant="primary", elem_id="translate")
                    with gr.Tab("Draw", id="draw"):
                        sketch = _Sketchpad(label="Draw here (dark on light)",
                                              type="pil", image_mode="L", canvas_size=(280, 280),
                                              fixed_canvas=True, layers=False,
                                              brush=gr.Brush(colors=["#000000"],
                                                             color_mode="fixed", default_size=12),
                                              elem_id="sketch")
                        sketch_btn = gr.Button("Translate drawing", variant="primary",
                                               elem_id="translate-drawing")
                direction = _DirectionRadio(app.direction_choices(), value="forward",
                                            label="Direction", elem_id="direction")
                choices = app.class_choices()
                klass = _ClassDropdown(choices, value=choices[0][1], label="Source class",
                                       elem_id="source-class")
            with gr.Column(scale=1):
                report = gr.Markdown(EMPTY_REPORT, label="Report", elem_id="report")
                with gr.Row():
                    translation = gr.Image(label="Translation", type="filepath", format="png",
                                           height=DISPLAY_SIZE + 40, interactive=False,
                                           elem_id="translation")
                    gif = gr.Image(label="Morph (animated)", type="filepath", interactive=False,
                                   height=DISPLAY_SIZE + 40, elem_id="morph-gif")
                strip = gr.Image(label="Morph strip", type="filepath", format="png",
                                 interactive=False, elem_id="morph-strip")
        with gr.Row():  # test-set examples; picking one also sets the direction
            for side, value in (("source", "forward"), ("target", "backward")):
                paths = app.example_paths(side)
                if not paths:
                    continue
                with gr.Column(min_width=240):
                    ex = gr.Examples([[str(p)] for p in paths], inputs=[upload],
                                     label=f"Test-set {app.plural[side]}",
                                     examples_per_page=len(paths))
                    # the example lands in the Upload tab: show it, also from the Draw tab
                    ex.dataset.click(lambda v=value: (v, gr.Tabs(selected="upload")), None,
                                     [direction, tabs], api_visibility="private", queue=False)
        with gr.Accordion("All ten class pairs", open=True):
            grid_btn = gr.Button("Show all ten pairs (current direction)", elem_id="grid-button")
            gallery = gr.Gallery(label="Input → translation", columns=5, format="png",
                                 height="auto", object_fit="contain", elem_id="grid")

        app.cache_dir = translation.GRADIO_CACHE  # outputs go where Gradio serves from
        outputs = [translation, strip, gif, report]
        # a new upload, direction or class clears the last translation: it no longer answers
        # what is shown, and an error about the new one must not sit beside it (not so the
        # sketchpad, which reports changes as it renders)
        for control in (upload, direction, klass):
            control.change(lambda: (None, None, None, EMPTY_REPORT), None, outputs,
                           api_visibility="private", queue=False, show_progress="hidden")
        upload.upload(app.browser_preview, [upload], [upload], api_visibility="private",
                      show_progress="hidden")
        upload_btn.click(app.translate_upload, [upload, klass, direction], outputs,
                         api_name="translate")
        sketch_btn.click(app.translate_drawing, [sketch, klass, direction], outputs,
                         api_name="translate_drawing")
        grid_btn.click(app.grid, [direction], [gallery], api_name="grid")
    demo.translator = app  # for tests and scripts
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT)
    return demo


if __name__ == "__main__":  # python -m hjtranslate_apps.translate [MODEL]
    import sys

    from hjtranslate.hjmap import CheckpointError

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        demo = build_demo(sys.argv[1] if len(sys.argv) > 1 else None)
    except (CheckpointError, OSError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    demo.launch(**LAUNCH_KWARGS)
