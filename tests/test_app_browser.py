"""The app in a real headless Chromium (Debian's ``chromium`` package driven by Playwright; see
``../shared/docs/app-testing.md``): upload a digit, translate, read the output image; pick a
clothes example (the direction follows); draw on the Sketchpad.

``HJT_UPDATE_SCREENSHOT=1`` also saves ``docs/app.png`` (for the README), served from the
shipped ``models/digits-to-fashion`` when it exists, else from the small test pipeline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from test_app import EXAMPLES, REPO, app_load, tiny_pipeline_folder  # noqa: F401  (skip marks)
from test_app import pytestmark as _app_marks

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
UPDATE_SCREENSHOT = os.environ.get("HJT_UPDATE_SCREENSHOT") == "1"


def chromium_binary() -> str | None:
    """The real binary of Debian's chromium package (not the /usr/bin wrapper script)."""
    candidates = [Path("/usr/lib/chromium/chromium")]
    if shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", "chromium"], capture_output=True, text=True)
        candidates += [Path(line) for line in listing.stdout.splitlines()
                       if line.endswith("/chromium") and "/lib/" in line]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


CHROMIUM = chromium_binary()
try:
    import playwright.sync_api  # noqa: F401

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.browser,
    *(_app_marks if isinstance(_app_marks, list) else [_app_marks]),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                       "(apt-get install --no-install-recommends chromium; scripts/setup.sh)"),
    pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="playwright (Python) is not installed"),
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from hjtranslate.pipeline import INDEX_FILE, default_model_path

    shipped = default_model_path()
    if UPDATE_SCREENSHOT and (shipped / INDEX_FILE).is_file():
        model = str(shipped)
    else:
        os.environ.setdefault("HJT_DATA_DIR", str(REPO.parent / "shared" / "datasets"))
        model = str(tiny_pipeline_folder(tmp_path_factory))
    with app_load.serve(model, tmp_path_factory.mktemp("gradio-cache-browser")) as (_, url):
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(app_url)
    page.wait_for_selector("#upload input[type=file]", state="attached")
    yield page
    context.close()


def wait_for_translation(page, previous: str | None = None) -> dict:
    """Waits until the translation image shows a (new) loaded image; its size and source."""
    page.wait_for_function(
        """(previous) => { const i = document.querySelector('#translation img');
               return i && i.complete && i.naturalWidth > 0 && i.src !== previous; }""",
        arg=previous,
    )
    return page.evaluate("""() => { const i = document.querySelector('#translation img');
                                    return {w: i.naturalWidth, h: i.naturalHeight, src: i.src}; }""")


def test_upload_translate_and_grid(page, tmp_path):
    page.set_input_files("#upload input[type=file]", str(EXAMPLES / "digit_3.png"))
    page.wait_for_selector("#upload img")
    page.click("#translate")
    shown = wait_for_translation(page)
    assert (shown["w"], shown["h"]) == (168, 168) and shown["src"].endswith("translation.png")
    report = page.inner_text("#report")
    assert "digit 3 → Dress" in report and "detected by the digits judge" in report
    page.wait_for_function("() => { const i = document.querySelector('#morph-gif img');"
                           " return i && i.complete && i.naturalWidth === 168; }")

    page.click("#grid-button")
    page.wait_for_function("() => document.querySelectorAll('#grid img').length >= 10")
    page.wait_for_timeout(500)  # let the thumbnails paint
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if UPDATE_SCREENSHOT:
        shutil.copyfile(shot, REPO / "docs" / "app.png")


def test_clothes_example_sets_the_direction(page):
    page.locator("img[src*='clothes_3_dress']").first.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#direction input')]"
        ".some(i => i.checked && i.value === 'backward')")
    page.wait_for_selector("#upload img")
    page.click("#translate")
    assert wait_for_translation(page)["w"] == 168
    page.wait_for_function("() => document.querySelector('#report').innerText.includes('→ digit')")
    assert "Dress → digit 3" in page.inner_text("#report")


def test_an_example_picked_from_the_draw_tab_shows_and_a_new_upload_clears(page):
    page.get_by_role("tab", name="Draw").click()
    page.locator("img[src*='digit_7']").first.click()  # lands in the Upload tab, shown
    page.wait_for_selector("#upload img", state="visible")
    page.click("#translate")
    first = wait_for_translation(page)
    assert "digit 7" in page.inner_text("#report")
    page.set_input_files("#upload input[type=file]", str(EXAMPLES / "digit_3.png"))
    page.wait_for_function(  # the result for digit 7 goes with it
        "() => document.querySelector('#report').innerText.includes('Translate something')")
    page.click("#translate")
    assert wait_for_translation(page, first["src"])["w"] == 168
    assert "digit 3" in page.inner_text("#report")

def test_a_tiff_upload_shows_in_the_input_box(page, tmp_path):
    """Browsers show no TIFF: the app turns an upload in such a format into a PNG preview of
    the pixels it translates."""
    path = tmp_path / "digit.tiff"
    Image.open(EXAMPLES / "digit_3.png").save(path)
    page.set_input_files("#upload input[type=file]", str(path))
    page.wait_for_function("() => { const i = document.querySelector('#upload img');"
                           " return i && i.complete && i.naturalWidth === 28; }")
    page.click("#translate")
    assert wait_for_translation(page)["w"] == 168
    assert "digit 3" in page.inner_text("#report")

def test_draw_on_the_sketchpad(page):
    page.get_by_role("tab", name="Draw").click()
    page.get_by_role("button", name="Brush").first.click()
    canvas = page.locator("#sketch canvas").first
    box = canvas.bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.52 * w, y + 0.2 * h)
    page.mouse.down()
    page.mouse.move(x + 0.48 * w, y + 0.8 * h, steps=4)
    page.mouse.up()
    page.click("#translate-drawing")
    assert wait_for_translation(page)["w"] == 168
    report = page.inner_text("#report")  # only a drawing that is not blank gets here
    assert "detected by the digits judge" in report and "inverted" in report


def test_a_non_image_a_transparent_drawing_and_a_new_direction_in_the_browser(page, tmp_path):
    """What the browser uploads reaches the app as the API's does, after the preview rebuilt the
    input box: a text file named .png gets the app's message (it got a bare "Error" badge and a
    traceback in the log), black ink on a transparent PNG is a digit (it was flattened onto
    black: "blank"); switching the direction clears the translation of the other one."""
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    page.set_input_files("#upload input[type=file]", str(fake))
    page.click("#translate")
    page.wait_for_function("() => document.body.innerText.includes('not an image the app can read')")
    ink = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ink.paste((0, 0, 0, 255), (90, 30, 110, 170))  # a "1" in black on transparency
    ink.save(tmp_path / "one.png")
    page.set_input_files("#upload input[type=file]", str(tmp_path / "one.png"))
    page.wait_for_selector("#upload img")
    page.click("#translate")
    wait_for_translation(page)
    assert "blank" not in page.inner_text("#report").lower()
    page.locator("#direction label").nth(1).click()  # the other direction
    page.wait_for_function(
        "() => document.querySelector('#report').innerText.includes('Translate something')")
