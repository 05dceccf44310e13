"""The ``hjtranslate translate`` command: image files and folders through a translation pipeline,
into PNG files and a ``translations.json`` report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .checks import check_folder_path, missing_reason, written_whole
from .hjmap import PIPELINE_INDEX_FILE
from .images import IMAGE_SIZE, image_size, is_blank, open_image
from .pipeline import (
    TranslationPipeline,
    check_morph_steps,
    looks_like_hub_id,
    shipped_pipeline,
)


def _list_inputs(path: Path, one_of_many: bool = False) -> tuple[list[Path], list[dict[str, str]]]:
    """The image files of a file or a folder (not recursive, sorted by name), checked from their
    headers (nothing is decoded yet), and the skipped files. A file that is not an image is an
    error when it is the only input, else skipped (a shell glob picks up a README as a folder
    would hold one)."""
    if not path.exists():
        reason = missing_reason(path)
        raise FileNotFoundError(f"--input {path}: no such file or folder." if reason == "does not exist"
                                else f"--input {path} {reason}.")
    if path.is_file():
        try:
            image_size(path)
        except ValueError as exc:
            if not one_of_many:
                raise
            return [], [{"input": str(path), "reason": str(exc)}]
        return [path], []
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images, skipped = [], []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        skipped.append({"input": str(sub), "reason": "a folder inside the --input folder (not "
                        "searched: name it as an --input of its own)"})
    for p in files:
        try:
            image_size(p)
        except ValueError as exc:
            skipped.append({"input": str(p), "reason": str(exc)})
        else:
            images.append(p)
    if not images:
        folders = sum(1 for s in skipped if Path(s["input"]).is_dir())
        detail = "; ".join(([f"{len(skipped) - folders} files skipped: not images"]
                            if len(skipped) > folders else [])
                           + ([f"{folders} folders inside, not searched: name them as --input"]
                              if folders else []))
        raise ValueError(f"--input {path}: the folder holds no images"
                         + (f" ({detail})." if detail else "."))
    return images, skipped


def _read_inputs(paths: list[Path], pipe: TranslationPipeline, sides: tuple[str, ...],
                 frame: Any, skipped: list[dict[str, str]]
                 ) -> list[tuple[Path, dict[str, torch.Tensor], list[str]]]:
    """Each image decoded and at once framed and shrunk for each of ``sides`` (28x28), with the
    first side's conversion notes: the full-size picture is let go before the next is opened,
    so a folder of large pictures is never held at once. One that does not decode is skipped
    under its name (an error when it is the only input)."""
    read, failed = [], []
    for path in paths:
        try:
            image = open_image(path)
            framed = {side: pipe._preprocess([image], side, frame) for side in sides}
            del image  # before the next one is decoded
        except (ValueError, OSError) as exc:  # OSError: a file gone since it was listed
            if len(paths) == 1:
                raise
            failed.append({"input": str(path), "reason": str(exc)})
            continue
        read.append((path, {side: x[0] for side, (x, _) in framed.items()}, framed[sides[0]][1][0]))
    skipped += failed
    if not read:
        raise ValueError(f"--input: none of the {len(paths)} images could be read: "
                         + _listed(failed))
    return read


def _listed(skipped: list[dict[str, str]], most: int = 3) -> str:
    """Skipped inputs and why, for an error message (the first ``most`` of them)."""
    shown = "; ".join(f"{s['input']}: {s['reason']}" for s in skipped[:most])
    return shown + (f"; and {len(skipped) - most} more" if len(skipped) > most else "")


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
    paths, skipped, seen = [], [], set()
    for in_path in in_paths:  # listed and their headers read before the model loads
        try:
            found, passed_over = _list_inputs(in_path, one_of_many=len(in_paths) > 1)
        except ValueError as exc:  # a folder without images, among several paths
            if len(in_paths) == 1:
                raise
            found, passed_over = [], [{"input": str(in_path), "reason": str(exc)}]
        for path in found:  # an image named twice (a file and its folder) is done once
            if path.resolve() not in seen:
                seen.add(path.resolve())
                paths.append(path)
        skipped += [s for s in passed_over if s not in skipped]  # one named twice: once
    if not paths:
        raise ValueError(f"--input: none of the {len(in_paths)} paths holds an image "
                         f"({len(skipped)} files skipped: not images).")
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
    other_side = "target" if in_side == "source" else "source"
    sides = (in_side, other_side) if pipe.tells_sides_apart else (in_side,)
    inputs = _read_inputs(paths, pipe, sides, args.frame, skipped)
    pictures = torch.stack([framed[in_side] for _, framed, _ in inputs])
    conv = [notes for _, _, notes in inputs]
    blank = [is_blank(x) for x in pictures]
    for (path, _, _), empty, notes in zip(inputs, blank, conv, strict=True):
        if empty:
            skipped.append({"input": str(path), "reason": "blank once framed and shrunk to 28x28 "
                            "(no ink or strokes to translate)" + (f"; {', '.join(notes)}"
                                                                   if notes else "")})
    inked = [i for i, empty in enumerate(blank) if not empty]
    other = [False] * len(inked)
    if pipe.tells_sides_apart and inked:  # both judges, each once on the whole batch
        framed = {side: torch.stack([inputs[i][1][side] for i in inked]) for side in sides}
        other = pipe._beyond_thresholds(pipe._likeness(framed["source"], framed["target"]), in_side)
    inputs = [inputs[i] for i in inked]
    if not inputs:
        raise ValueError(f"--input: every image is blank once shrunk to 28x28 ({len(blank)}): "
                         "nothing to translate" + (f" (also skipped: {_listed(skipped[:-len(blank)])})."
                                                   if len(skipped) > len(blank) else "."))
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
    done = {path.resolve() for path, _, _ in inputs}  # what this run translates
    taken = {Path(item["output"]).name for item in earlier
             if Path(item["input"]).resolve() not in done}
    used: set[str] = set()
    items = []
    for i, (path, _, _) in enumerate(inputs):
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
