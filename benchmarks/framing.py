"""How the judges classify photos, scans and drawings of test images, with and without the
pipeline's framing (rule 5 of hjtranslate/images.py's docstring).

Each of the first N test images of MNIST (digits judge) and Fashion-MNIST (clothes judge) is
turned into eight pictures: as it is (28x28), dark on a white page at 100 pixels (also with a
speck of dust on the page) and at 40 % of the page, a JPEG "photo" under uneven light with
noise, a faint pencil, light on black in a corner of a 280x280 canvas (a drawing off centre),
and upscaled to 280x280. The table is each
judge's accuracy on the preprocessed pictures, framed and not.

    OMP_NUM_THREADS=1 python benchmarks/framing.py --n 1000 --out benchmarks/results/framing.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from hjtranslate.data import load_dataset
from hjtranslate.images import preprocess
from hjtranslate.pipeline import TranslationPipeline

REPO = Path(__file__).resolve().parents[1]


def pictures(image: np.ndarray, rng: np.random.Generator):
    """The eight pictures of one 28x28 light-on-dark test image, as (name, PIL image)."""
    img = Image.fromarray(image)
    yield "as it is (28x28)", img
    ink_on_paper = Image.fromarray(255 - image)
    page = Image.new("L", (800, 1000), 255)
    page.paste(ink_on_paper.resize((100, 100), Image.BILINEAR), (350, 450))
    yield "100 px on an 800x1000 page", page
    dusty = page.copy()
    ImageDraw.Draw(dusty).ellipse([60, 60, 66, 66], fill=0)
    yield "the same with a speck of dust", dusty
    page = Image.new("L", (1000, 1000), 255)
    page.paste(ink_on_paper.resize((400, 400), Image.BILINEAR), (300, 300))
    yield "40 % of a 1000x1000 page", page
    big = np.asarray(img.resize((600, 600), Image.BILINEAR), np.float32) / 255
    yy, xx = np.mgrid[0:600, 0:600] / 600.0
    light = 0.95 - 0.9 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)  # bright centre, darker corners
    photo = light * (1 - big) + 0.15 * big + rng.normal(0, 0.02, big.shape)
    buffer = io.BytesIO()
    Image.fromarray((photo.clip(0, 1) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=80)
    buffer.seek(0)
    yield "JPEG photo, uneven light", Image.open(buffer)
    big = np.asarray(img.resize((280, 280), Image.BILINEAR), np.float32)
    yield "faint pencil (contrast 0.16)", Image.fromarray((230 - 40 * big / 255).astype(np.uint8))
    corner = Image.new("L", (280, 280), 0)
    corner.paste(img.resize((100, 100), Image.BILINEAR), (20, 160))
    yield "drawn in a corner of 280x280", corner
    yield "upscaled to 280x280", img.resize((280, 280), Image.BILINEAR)
    yield from hard_pictures(image, rng)


def hard_pictures(image: np.ndarray, rng: np.random.Generator):
    """Photos that were framing's known limits before session 45: a page on a dark desk, a page
    lit from one side, ruled and squared paper."""
    ink = np.asarray(Image.fromarray(image).resize((200, 200), Image.BILINEAR), np.float32) / 255
    desk = np.clip(rng.normal(0.18, 0.03, (900, 1200)), 0, 1).astype(np.float32)
    page = Image.new("L", (1200, 900), 0)  # a slightly skewed page, as a hand-held photo has it
    ImageDraw.Draw(page).polygon([(230, 90), (1010, 60), (1050, 850), (190, 820)], fill=255)
    paper = np.asarray(page, np.float32) / 255
    photo = desk * (1 - paper) + 0.9 * paper
    photo[330:530, 500:700] = photo[330:530, 500:700] * (1 - ink) + 0.12 * ink
    yield "page on a dark desk", _jpeg(photo + rng.normal(0, 0.02, photo.shape))
    light = np.linspace(0.95, 0.3, 800, dtype=np.float32)[None, :].repeat(800, 0)
    photo = light.copy()
    photo[300:500, 300:500] = light[300:500, 300:500] * (1 - ink) + 0.08 * ink
    yield "lit from one side", _jpeg(photo + rng.normal(0, 0.02, photo.shape))
    for name, step, columns in (("ruled paper", 56, False), ("squared paper", 40, True)):
        sheet = np.full((800, 800), 0.93, np.float32)
        sheet[20::step, :] = 0.6  # printed lines, 3 px wide
        sheet[21::step, :] = 0.6
        sheet[22::step, :] = 0.6
        if columns:
            sheet[:, 20::step] = 0.6
            sheet[:, 21::step] = 0.6
        sheet[300:500, 300:500] = sheet[300:500, 300:500] * (1 - ink) + 0.1 * ink
        yield f"on {name}", _jpeg(sheet + rng.normal(0, 0.02, sheet.shape))


def _jpeg(photo: np.ndarray) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray((photo.clip(0, 1) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    buffer.seek(0)
    return Image.open(buffer)


def measure(pipe: TranslationPipeline, dataset: str, side: str, n: int,
            data_dir: str | None) -> dict[str, dict[str, float]]:
    images, labels = load_dataset(dataset, "test", data_dir)
    rng = np.random.default_rng(0)
    batches: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for i in range(n):
        for name, picture in pictures(images[i].numpy(), rng):
            for framed in (False, True):
                x = preprocess(picture, pipe.framing(side) if framed else None)[0][0]
                batches.setdefault((name, framed), []).append(x)
    table: dict[str, dict[str, float]] = {}
    for (name, framed), xs in batches.items():
        with torch.no_grad():
            predicted = pipe._judge(side).logits(torch.stack(xs)).argmax(-1).cpu()
        accuracy = float((predicted == labels[:n]).float().mean())
        table.setdefault(name, {})["framed" if framed else "not framed"] = accuracy
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="test images per dataset")
    parser.add_argument("--model", default=str(REPO / "models" / "digits-to-fashion"))
    parser.add_argument("--data-dir", default=os.environ.get("HJT_DATA_DIR"))
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    pipe = TranslationPipeline.from_pretrained(args.model)
    t0 = time.perf_counter()
    results = {dataset: measure(pipe, dataset, side, args.n, args.data_dir)
               for dataset, side in ((pipe.source_dataset, "source"),
                                     (pipe.target_dataset, "target"))}
    for dataset, table in results.items():
        print(f"\n{dataset}, {args.n} test images: judge accuracy, not framed / framed")
        for name, row in table.items():
            print(f"  {name:32s} {row['not framed']:7.1%} {row['framed']:7.1%}")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"n": args.n, "model": args.model,
                                              "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
