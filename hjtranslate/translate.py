"""The ``hjtranslate translate`` command: image files and folders through a translation pipeline,
into PNG files and a ``translations.json`` report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .checks import check_folder_path, written_whole
from .hjmap import PIPELINE_INDEX_FILE
from .images import IMAGE_SIZE, is_blank, open_image
from .pipeline import (
    TranslationPipeline,
    check_morph_steps,
    looks_like_hub_id,
    shipped_pipeline,
)


def _collect_inputs(path: Path, one_of_many: bool = False,
                    reduce: Callable[[Any], Any] = lambda image: image,
                    ) -> tuple[list[tuple[Path, Any]], list[dict[str, str]]]:
    """Images of a file or a folder (not recursive, sorted by name), each passed through
    ``reduce`` as soon as it is opened (so that a folder of large pictures is not held at once),
    and the skipped files. A file that is not an image is an error when it is the only input,
    else skipped (a shell glob picks up a README as a folder would hold one)."""
    if not path.exists():
        raise FileNotFoundError(f"--input {path}: no such file or folder.")
    if path.is_file():
        if not one_of_many:
            return [(path, reduce(open_image(path)))], []
        try:
            return [(path, reduce(open_image(path)))], []
        except ValueError as exc:
            return [], [{"input": str(path), "reason": str(exc)}]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images, skipped = [], []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        skipped.append({"input": str(sub), "reason": "a folder inside the --input folder (not "
                        "searched: name it as an --input of its own)"})
    for p in files:
        try:
            image = open_image(p)
        except ValueError as exc:
            skipped.append({"input": str(p), "reason": str(exc)})
        else:
            images.append((p, reduce(image)))
    if not images:
        folders = sum(1 for s in skipped if Path(s["input"]).is_dir())
        detail = "; ".join(([f"{len(skipped) - folders} files skipped: not images"]
                            if len(skipped) > folders else [])
                           + ([f"{folders} folders inside, not searched: name them as --input"]
                              if folders else []))
        raise ValueError(f"--input {path}: the folder holds no images"
                         + (f" ({detail})." if detail else "."))
    return images, skipped


def _strip(frames: list) -> Any:
    from PIL import Image

    strip = Image.new("L", (IMAGE_SIZE * len(frames), IMAGE_SIZE))
    for i, frame in enumerate(frames):
        strip.paste(frame, (IMAGE_SIZE * i, 0))
    return strip


def hub_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--revision`` and ``--force-download`` of `translate` and `app`, for a Hub ``--model``;
    a local folder takes neither."""
    hub = {"revision": getattr(args, "revision", None),
           "force_download": bool(getattr(args, "force_download", False))}
    model = getattr(args, "model", None)
    if (hub["revision"] or hub["force_download"]) and (model is None or Path(model).expanduser().is_dir()):
        raise ValueError(f"--revision and --force-download apply to a Hub --model; "
                         f"{model or 'the shipped pipeline'} is a local folder.")
    return hub


def cmd_translate(args: argparse.Namespace) -> int:
    """``hjtranslate translate --model ID_OR_FOLDER --input IMG_OR_FOLDER [--class K]
    [--direction forward|backward] [--morph-steps N] --out DIR``."""
    morph_steps = int(getattr(args, "morph_steps", 0) or 0)
    check_morph_steps(morph_steps, "--morph-steps")
    model = args.model
    if model is None:
        model = shipped_pipeline()
    out_dir = Path(args.out).expanduser()
    check_folder_path(out_dir, "--out")
    if any((out_dir / name).is_file() for name in ("config.json", PIPELINE_INDEX_FILE)):
        # translations never write one: a training run's, a model's, a map's or a pipeline's
        raise ValueError(f"--out {out_dir} holds a training run, a model, a map or a pipeline, "
                         "whose files the translations would mix with: name a folder of their own.")
    in_paths = [Path(p).expanduser() for p in
                ([args.input] if isinstance(args.input, (str, Path)) else args.input)]
    for in_path in in_paths:
        folder = in_path if in_path.is_dir() else in_path.parent
        if out_dir.resolve() == folder.resolve():
            raise ValueError(f"--out {out_dir} is the folder of the --input images: a later run "
                             "would translate these translations too. Write them to another folder.")
    for in_path in in_paths:  # before the model loads
        if not in_path.exists():
            raise FileNotFoundError(f"--input {in_path}: no such file or folder.")
    from huggingface_hub import constants

    if (not constants.HF_HUB_OFFLINE and not Path(model).expanduser().exists()
            and looks_like_hub_id(str(model))):
        # the Hub lookup can take a while where the network is slow or blocked: say what is asked
        print(f"note: no local folder {model}; looking it up as a Hub repo id "
              "(HF_HUB_OFFLINE=1 keeps to the local cache).", file=sys.stderr)
    pipe = TranslationPipeline.from_pretrained(model, **hub_options(args))
    in_side = "source" if args.direction == "forward" else "target"
    if args.klass is None and pipe._judge(in_side) is None:
        raise ValueError(f"{model} bundles no {in_side}-side judge (judge_{in_side}/) to detect "
                         "the classes of the pictures: pass --class K.")

    def reduce(image: Any) -> tuple[torch.Tensor, list[str], bool]:
        """A picture as the map reads it (28x28, its conversion notes) and whether it looks
        like the other side's; the full-size picture is let go."""
        pictures, notes = pipe._preprocess([image], in_side, args.frame)
        other = (pipe.looks_like_other_side([image], in_side, args.frame)[0]
                 if pipe.tells_sides_apart else False)
        return pictures[0], notes[0], other

    inputs, skipped, seen = [], [], set()
    for in_path in in_paths:
        try:
            found, passed_over = _collect_inputs(in_path, len(in_paths) > 1, reduce)
        except ValueError as exc:  # a folder without images, among several paths
            if len(in_paths) == 1:
                raise
            found, passed_over = [], [{"input": str(in_path), "reason": str(exc)}]
        for path, image in found:  # an image named twice (a file and its folder) is done once
            if path.resolve() not in seen:
                seen.add(path.resolve())
                inputs.append((path, image))
        skipped += passed_over
    if not inputs:
        raise ValueError(f"--input: none of the {len(in_paths)} paths holds an image "
                         f"({len(skipped)} files skipped: not images).")
    pictures = torch.stack([picture for _, (picture, _, _) in inputs])
    conv = [notes for _, (_, notes, _) in inputs]
    blank = [is_blank(x) for x in pictures]
    for (path, _), empty, notes in zip(inputs, blank, conv, strict=True):
        if empty:
            skipped.append({"input": str(path), "reason": "blank once framed and shrunk to 28x28 "
                            "(no ink or strokes to translate)" + (f"; {', '.join(notes)}"
                                                                   if notes else "")})
    inked = [i for i, empty in enumerate(blank) if not empty]
    other = [inputs[i][1][2] for i in inked]
    inputs = [inputs[i] for i in inked]
    if not inputs:
        raise ValueError(f"--input: every image is blank once shrunk to 28x28 ({len(blank)}): "
                         "nothing to translate.")
    # the pictures as preprocessed above (28x28: not framed again), their notes kept
    result = pipe(pictures[inked], classes=args.klass, direction=args.direction,
                  morph_steps=morph_steps)
    result.notes = [conv[i] + notes for i, notes in zip(inked, result.notes, strict=True)]
    other_dataset = pipe.target_dataset if in_side == "source" else pipe.source_dataset
    other_direction = "backward" if args.direction == "forward" else "forward"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"Cannot create --out {out_dir} ({exc.strerror}): name a folder this "
                         "process can write to.") from None
    in_names, out_names = ((pipe.source_class_names, pipe.target_class_names)
                           if args.direction == "forward"
                           else (pipe.target_class_names, pipe.source_class_names))
    earlier = _earlier_translations(out_dir)
    # an earlier run's output of another input keeps its name; the same input's is replaced
    done = {path.resolve() for path, _ in inputs}  # what this run translates
    taken = {Path(item["output"]).name for item in earlier
             if Path(item["input"]).resolve() not in done}
    used: set[str] = set()
    items = []
    for i, (path, _) in enumerate(inputs):
        stem = path.stem if path.stem not in used else f"{path.stem}_{path.suffix.lstrip('.')}"
        while stem in used or f"{stem}_{args.direction}.png" in taken:
            stem = f"{stem}_{i}"
        used.add(stem)
        target = out_dir / f"{stem}_{args.direction}.png"
        with written_whole(target) as tmp:  # a link planted in --out is replaced, not followed
            result.images[i].save(tmp)
        morph = None
        if result.frames is not None:
            morph = out_dir / f"{stem}_{args.direction}_morph.png"
            with written_whole(morph) as tmp:
                _strip(result.frames[i]).save(tmp)
        k_in, k_out = result.source_classes[i], result.target_classes[i]
        items.append({
            "input": str(path),
            "direction": args.direction,
            "output": str(target),
            "morph": None if morph is None else str(morph),
            "input_class": k_in,
            "input_class_name": in_names[k_in] if in_names and k_in < len(in_names) else None,
            "output_class": k_out,
            "output_class_name": out_names[k_out] if out_names and k_out < len(out_names) else None,
            "class_detected": args.klass is None,
            "detection_confidence": (None if result.detection_confidences is None
                                     else result.detection_confidences[i]),
            "confidence": None if result.confidences is None else result.confidences[i],
            "notes": result.notes[i],
            "looks_like_other_side": other[i],
        })
        conf = ("" if result.confidences is None
                else f" ({other_dataset} judge's confidence {result.confidences[i]:.2f})")
        converted = f"; {', '.join(result.notes[i])}" if result.notes[i] else ""
        warn = (f"; looks more like {other_dataset} to the judges: if so, use --direction "
                f"{other_direction}" if other[i] else "")
        print(f"{path.name}: class {_named(k_in, items[-1]['input_class_name'])} -> "
              f"{_named(k_out, items[-1]['output_class_name'])}, {target.name}{conf}{warn}{converted}")
    report = {
        "model": str(model),
        "direction": args.direction,
        "source_dataset": pipe.source_dataset,
        "target_dataset": pipe.target_dataset,
        "morph_steps": morph_steps,
        "items": items,
        "skipped": skipped,
    }
    # the earlier runs' translations still in the folder stay listed, after this run's; one of
    # an input translated again (the same way) is replaced, its files removed
    written = {item["output"] for item in items} | {item["morph"] for item in items}
    earlier_kept = []
    for item in earlier:
        if (Path(item["input"]).resolve() in done
                and item.get("direction", args.direction) == args.direction):
            for old in (item["output"], item.get("morph")):  # its files this run did not rewrite
                if isinstance(old, str) and old not in written and Path(old).parent == out_dir:
                    Path(old).unlink(missing_ok=True)
            continue
        if item["output"] not in written and Path(item["output"]).is_file():
            earlier_kept.append(item)
    if earlier_kept:
        report["earlier_items"] = earlier_kept
    with written_whole(out_dir / "translations.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    for s in skipped:
        print(f"skipped {s['input']}: {s['reason']}", file=sys.stderr)
    also = f"; it lists {len(earlier_kept)} from earlier runs too" if earlier_kept else ""
    print(f"Wrote {len(items)} translation{'s' if len(items) != 1 else ''} to {out_dir} "
          f"(translations.json{also})")
    return 0


def _named(k: int, name: str | None) -> str:
    """``3``, or ``0 (T-shirt/top)`` where the class has a name other than its number."""
    return str(k) if name in (None, str(k)) else f"{k} ({name})"


def _earlier_translations(out_dir: Path) -> list[dict[str, Any]]:
    """The items of an earlier run's ``translations.json`` in ``out_dir`` (its ``items`` and the
    ``earlier_items`` it kept), or none where there is no readable one."""
    try:
        report = json.loads((out_dir / "translations.json").read_text())
        items = [*report.get("items", []), *report.get("earlier_items", [])]
        return [item for item in items
                if isinstance(item, dict) and isinstance(item.get("input"), str)
                and isinstance(item.get("output"), str)]
    except (OSError, ValueError, AttributeError):
        return []
