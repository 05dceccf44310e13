"""Which side an input belongs to, told by the two judges: the app's hint when a picture looks
like the other dataset's (a digit given as clothes, clothes given as a digit).

Each judge's log-sum-exp of its logits (its "energy", Liu et al. 2020) is high on pictures of
its own dataset. Their difference, digits judge minus clothes judge, is measured on both full
test sets; the app flags an input of the source side below the difference's 1 % quantile on
real digits, and one of the target side above its 99 % quantile on real clothes, so 1 % of real
inputs get the hint (``TranslationPipeline.calibrate_other_side``; a pipeline keeps them, and
``--write`` saves them into the --model folder). The table gives those thresholds and the share
of the other dataset's test images each one catches, on the test images and on pictures of them
that are framed first.

    OMP_NUM_THREADS=1 python benchmarks/input_side.py --out benchmarks/results/input_side.json
    OMP_NUM_THREADS=1 python benchmarks/input_side.py --pictures 0 --write   # the shipped pipeline's
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hjtranslate.data import load_dataset
from hjtranslate.pipeline import TranslationPipeline

REPO = Path(__file__).resolve().parents[1]


def _upscaled(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image).resize((280, 280), Image.BILINEAR)


def _on_page(image: np.ndarray) -> Image.Image:
    page = Image.new("L", (800, 1000), 255)
    page.paste(Image.fromarray(255 - image).resize((100, 100), Image.BILINEAR), (350, 450))
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "digits-to-fashion"))
    parser.add_argument("--data-dir", default=os.environ.get("HJT_DATA_DIR"))
    parser.add_argument("--false-alarms", type=float, default=0.01,
                        help="share of real inputs of each side that get the hint")
    parser.add_argument("--pictures", type=int, default=1000,
                        help="test images per set turned into framed pictures")
    parser.add_argument("--out", default=None)
    parser.add_argument("--write", action="store_true",
                        help="save the pipeline (--model, a folder) with these thresholds, which "
                             "the app reads (digits-to-fashion's --export measures them itself)")
    args = parser.parse_args()
    pipe = TranslationPipeline.from_pretrained(args.model)
    tests = {side: load_dataset(dataset, "test", args.data_dir)[0].float()[:, None] / 255
             for side, dataset in (("source", pipe.source_dataset), ("target", pipe.target_dataset))}
    found = pipe.calibrate_other_side(tests["source"], tests["target"], args.false_alarms)
    source_below, target_above = found["source_below"], found["target_above"]
    result = {
        "false_alarms": args.false_alarms,
        "source_threshold": source_below,  # an input given as source below it gets the hint
        "target_threshold": target_above,  # an input given as target above it gets the hint
        "target_images_caught_as_source_input": found["caught_target_as_source"],
        "source_images_caught_as_target_input": found["caught_source_as_target"],
        "test_images": {side: len(images) for side, images in tests.items()},
    }
    if args.write:
        pipe.save_pretrained(args.model)
        print(f"Wrote the thresholds into {args.model}/hjtranslate_pipeline.json (other_side)")
    # the same thresholds on pictures that are framed first (each judge sees the picture framed
    # as its own dataset frames them): enlarged, and dark on a white page
    n = args.pictures
    pictured = (("upscaled to 280x280", _upscaled), ("100 px on an 800x1000 page", _on_page))
    for name, picture in pictured if n else ():
        row = {}
        for side, dataset in (("source", pipe.source_dataset), ("target", pipe.target_dataset)):
            images = load_dataset(dataset, "test", args.data_dir)[0][:n]
            row[side] = torch.tensor(pipe.source_likeness([picture(i.numpy()) for i in images]))
        result[name] = {
            "source_flagged": float((row["source"] < source_below).float().mean()),
            "target_flagged": float((row["target"] > target_above).float().mean()),
            "target_caught_as_source_input": float((row["target"] < source_below).float().mean()),
            "source_caught_as_target_input": float((row["source"] > target_above).float().mean()),
            "pictures": n,
        }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
