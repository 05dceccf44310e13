"""``hjtranslate train judges``: one timm classifier per dataset, to score translations.

Each judge (default: a narrow ``resnet10t``, see ``hjtranslate.judges``) trains with
cross-entropy through the shared accelerate loop on its training set (random 2-pixel shifts as
augmentation, optionally random Gaussian blur), then is saved as ``model.safetensors`` +
``config.json`` + a model card with its accuracy on the full test set into
``<output-root>/judge-<dataset>``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DATA_DIR_HELP, load_dataset, to_float
from ..judges import (
    CLASSES,
    DEFAULT_ARCH,
    DEFAULT_KWARGS,
    WEIGHTS_FILE,
    Judge,
    build_classifier,
    models_dir,
)
from .common import (
    check_count,
    check_output_folder,
    move_outputs,
    note_started_as,
    recorded_options,
    refuse_to_replace,
    require_at_least,
    resumed_line,
    run_commands,
    staged_outputs,
)

DATASET_NAMES = ("mnist", "fashion-mnist")


class ClassifierObjective(nn.Module):
    def __init__(self, judge: Judge, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.judge = judge
        self.label_smoothing = label_smoothing

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.judge(x)
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return {"loss": loss, "acc": (logits.argmax(-1) == y).float().mean().detach()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--download", action="store_true",
                   help="let torchvision download missing MNIST / Fashion-MNIST files (online)")
    p.add_argument("--output-root", default=None,
                   help="judges go to <output-root>/judge-mnist and judge-fashion-mnist "
                        "(default: the checkout's models/, the shipped judges that "
                        "digits-to-fashion reads, from whatever folder it runs; installed from a "
                        "wheel, ./models)")
    p.add_argument("--datasets", default="mnist,fashion-mnist", help="comma-separated")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="timm model name")
    p.add_argument("--model-kwargs", default=json.dumps(DEFAULT_KWARGS),
                   help="JSON keyword arguments of timm.create_model")
    p.add_argument("--steps", type=int, default=900, help="training steps")
    p.add_argument("--time-budget", type=float, default=None, help="seconds per judge")
    p.add_argument("--batch-size", type=int, default=128, help="images per step, in each process "
                   "(N processes train on N times that)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="label smoothing of the cross-entropy (0: off)")
    p.add_argument("--shift", type=int, default=2, help="random translation augmentation, pixels")
    p.add_argument("--blur", type=float, default=0.0,
                   help="random Gaussian blur augmentation: each image is blurred with probability 1/2, "
                   "with a sigma drawn uniformly from [0, BLUR] pixels (0: off). A judge of VAE decodes "
                   "should read the class, not the sharpness (the Frechet distance scores that)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and batches")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoints (a finished judge is kept)")
    p.add_argument("--checkpoint-every", type=int, default=300, help="steps between checkpoints")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each judge's checkpoints after it finishes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace trained judges in --output-root (refused without it)")


def random_shift(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``shift`` pixels (zero padding)."""
    if shift <= 0:
        return x
    n, size = x.shape[0], x.shape[-1]
    padded = nn.functional.pad(x, (shift,) * 4)
    dx, dy = (torch.randint(0, 2 * shift + 1, (2, n), generator=g)).tolist()
    return torch.stack([padded[i, :, dy[i]: dy[i] + size, dx[i]: dx[i] + size] for i in range(n)])


def random_blur(x: torch.Tensor, max_sigma: float, g: torch.Generator) -> torch.Tensor:
    """Blur each image with probability 1/2, with its own Gaussian sigma drawn uniformly from
    ``[0, max_sigma]`` pixels (one grouped convolution; kernels of radius ``ceil(3 max_sigma)``)."""
    if max_sigma <= 0:
        return x
    n, c = x.shape[:2]
    sigma = torch.rand(n, generator=g) * max_sigma * (torch.rand(n, generator=g) < 0.5)
    radius = math.ceil(3 * max_sigma)
    r = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k1 = torch.exp(-0.5 * (r / sigma.clamp_min(1e-3)[:, None].to(x.dtype)) ** 2)
    k1 = k1 / k1.sum(1, keepdim=True)  # sigma -> 0 gives the identity kernel
    k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0)[:, None].to(x.device)
    padded = nn.functional.pad(x.reshape(1, n * c, *x.shape[2:]), (radius,) * 4, mode="replicate")
    return nn.functional.conv2d(padded, k2, groups=n * c).reshape(x.shape)


def write_card(folder: Path, info: dict[str, Any]) -> Path:
    from huggingface_hub import ModelCard, ModelCardData

    ds = "mnist" if info["dataset"] == "mnist" else "zalando-datasets/fashion_mnist"
    data = ModelCardData(library_name="timm", license="apache-2.0", datasets=[ds],
                         tags=["image-classification", "timm", info["dataset"], "hjtranslate"],
                         metrics=["accuracy"])
    blur = (f"; each image blurred with probability 1/2, Gaussian sigma up to {info['blur']:g} px"
            if info.get("blur") else "")
    resumed = resumed_line(info)
    text = f"""---
{data.to_yaml()}
---

# {info['dataset']} judge (hjtranslate)

A `timm` `{info['arch']}` ({json.dumps(info['model_kwargs'])}; {info['parameters']:,}
parameters; 1 input channel, 10 classes) that classifies 28x28 {info['dataset']} images.
hjtranslate uses it to score translated images (class accuracy, and a Frechet distance on
its penultimate features).

**Test accuracy: {100 * info['test_accuracy']:.2f} %** on the full {info['dataset']} test set
(10,000 images).

- input: grey images in [0, 1], normalised as (x - 0.5) / 0.5;
- training: {info['steps']} steps of batch {info['batch_size']} (Adam, lr {info['lr']}, cosine
  decay; random shifts of up to {info['shift']} pixels{blur}), {info['seconds']:.0f} s on
  {info['device']}, seed {info['seed']}.

```bash
{info['command']}
```
{resumed}
```python
from hjtranslate.judges import load_judge
judge = load_judge("{info['folder']}")
labels, confidences = judge.predict(images)   # (n, 1, 28, 28) in [0, 1]
```
"""
    ModelCard(text)
    path = folder / "README.md"
    path.write_text(text)
    return path


def model_kwargs_of(args: argparse.Namespace) -> dict[str, Any]:
    """``--model-kwargs``: a JSON object of ``timm.create_model`` keyword arguments."""
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-kwargs is not valid JSON: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object of keyword arguments, e.g. "
                         f"'{json.dumps(DEFAULT_KWARGS)}', got {args.model_kwargs!r}.")
    return kwargs


def build_judge_model(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """``build_classifier``, with a clear error for keyword arguments the model does not take."""
    try:
        return build_classifier(arch, **kwargs)
    except TypeError as exc:
        raise ValueError(f"--arch {arch} does not take --model-kwargs {json.dumps(kwargs)}: "
                         f"{exc}. Check the names against the timm model's arguments.") from None


#: the largest --blur sigma, in pixels: beyond a few pixels a 28x28 image is a flat smudge
MAX_BLUR = 14.0


def check_arguments(args: argparse.Namespace) -> None:
    """Clear errors for bad options, before any data is loaded or training starts."""
    if not 0.0 <= args.label_smoothing < 1.0:
        raise ValueError(f"--label-smoothing must be at least 0 and below 1 (the share of the "
                         f"target spread over all classes), got {args.label_smoothing:g}.")
    require_at_least(args, batch_size=1)
    # a shift of half the image or more moves the whole digit out of the 28x28 frame
    check_count("--shift", args.shift, 0, 13, " pixels (random translations of a 28x28 image)")
    if not 0.0 <= args.blur <= MAX_BLUR:  # also refuses NaN
        raise ValueError(f"--blur must be between 0 and {MAX_BLUR:g} (the largest blur sigma in "
                         f"pixels of a 28x28 image; 0: no blur), got {args.blur:g}.")
    model = build_judge_model(args.arch, model_kwargs_of(args))  # small; unknown arguments fail here
    try:  # a judge scores 10 classes of one-channel 28x28 images: one batch of two says so
        with torch.no_grad():
            shape = tuple(model.eval()(torch.zeros(2, 1, 28, 28)).shape)
    except Exception as exc:  # noqa: BLE001 (timm models fail in their own ways)
        raise ValueError(f"--arch {args.arch} with --model-kwargs {json.dumps(model_kwargs_of(args))} "
                         f"cannot classify one-channel 28x28 images ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}). Use an architecture that "
                         "takes small inputs (e.g. resnet10t) and leave num_classes and in_chans "
                         "as they are.") from None
    if shape != (2, 10):
        raise ValueError(f"--arch {args.arch} with --model-kwargs {json.dumps(model_kwargs_of(args))} "
                         f"gives scores of shape {shape[1:]} per image, not the 10 classes' "
                         "(leave num_classes as it is).")


def train_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from accelerate.utils import set_seed

    from ..training import TrainConfig, make_accelerator, train

    images, labels = load_dataset(name, "train", args.data_dir, download=args.download)
    test_x, test_y = load_dataset(name, "test", args.data_dir, download=args.download)
    out = Path(args.output_root) / f"judge-{name}"
    model_kwargs = model_kwargs_of(args)
    acc = make_accelerator()
    set_seed(args.seed)
    config = {
        "architecture": args.arch, "model_kwargs": model_kwargs, "dataset": name,
        "classes": CLASSES[name], "normalize": {"mean": 0.5, "std": 0.5},
        "image_size": [1, 28, 28],
    }
    judge = Judge(build_judge_model(args.arch, model_kwargs), config)
    objective = ClassifierObjective(judge, args.label_smoothing)
    n = images.shape[0]

    def batch_fn(step: int, rank: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 7919 + rank)
        idx = torch.randint(0, n, (args.batch_size,), generator=g)
        x = random_shift(to_float(images[idx]), args.shift, g)
        return {"x": random_blur(x, args.blur, g), "y": labels[idx]}

    tc = TrainConfig(steps=args.steps, time_budget=args.time_budget, lr=args.lr, seed=args.seed,
                     output_dir=str(out), checkpoint_every=args.checkpoint_every,
                     resume=args.resume, progress=not args.no_progress,
                     # the run's options, in every checkpoint: a --resume takes those not typed
                     extra={"task": "judges", **recorded_options(args)})
    # the folder stays held while the outputs are written after training (keep_lock)
    result = train(objective, batch_fn, tc, acc, keep_lock=True,
                   save_fn=lambda m, folder: m.judge.save_pretrained(folder))
    if not acc.is_main_process:
        return {}
    judge = acc.unwrap_model(objective).judge.eval()
    test_acc = judge.accuracy(test_x, test_y)
    config["test_accuracy"] = test_acc
    config["training"] = _training_options(args)  # what --resume compares (_finished)
    if getattr(args, "_started_as", None):  # the run's first command, for a resume's next judge
        config["started_as"] = args._started_as
    judge.config = config
    stage = staged_outputs(out)
    judge.save_pretrained(stage)
    info = {
        "dataset": name, "arch": args.arch, "model_kwargs": model_kwargs,
        "parameters": sum(p.numel() for p in judge.parameters()), "test_accuracy": test_acc,
        "steps": result["steps"], "batch_size": args.batch_size, "lr": args.lr,
        "shift": args.shift, "blur": args.blur, "seconds": result["seconds"], "seed": args.seed,
        "device": f"{acc.num_processes} x {acc.device.type} process(es), "
                  f"{torch.get_num_threads()} thread(s)",
        "folder": name if Path(args.output_root).resolve() == models_dir().resolve() else str(out),
        **run_commands(args, "judges"),
    }
    write_card(stage, info)
    move_outputs(stage, out, weights=WEIGHTS_FILE)
    if not args.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    print(f"Wrote the {name} judge {out} ({result['steps']} steps; test accuracy {test_acc:.2%})")
    return {"test_accuracy": test_acc, "seconds": result["seconds"], "steps": result["steps"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.output_root is None:
        from ..shipped import training_root

        args.output_root = str(training_root())
    note_started_as(args)  # the checkpoints' record keeps it
    names = list(dict.fromkeys(s.strip() for s in str(args.datasets).split(",") if s.strip()))
    if not names:
        raise ValueError(f"--datasets names no dataset; use {', '.join(DATASET_NAMES)} "
                         "(comma-separated).")
    for name in names:
        if name not in DATASET_NAMES:
            raise ValueError(f"Unknown dataset {name!r} in --datasets; use {', '.join(DATASET_NAMES)}.")
    check_arguments(args)
    for name in names:  # every judge's folder, before the first judge trains
        check_output_folder(Path(args.output_root) / f"judge-{name}", "--output-root",
                            lambda cfg, name=name: cfg.get("dataset") == name, f"the {name} judge",
                            task="judges")
    finished = {name: _finished(name, args) for name in names}  # a --resume keeps them
    for name in names:
        if finished[name] is None:
            refuse_to_replace(Path(args.output_root) / f"judge-{name}",
                              f"--output-root {args.output_root}", f"{name} judge",
                              "model.safetensors", args)
            for split in ("train", "test"):  # all data found before the first judge trains
                load_dataset(name, split, args.data_dir, download=args.download)
    return {name: finished[name] or train_one(name, args) for name in names}


def _finished(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """``--resume`` of a run in which this judge already finished (its checkpoints are gone
    with it): its record, rather than training it again from step 0."""
    out = Path(args.output_root) / f"judge-{name}"
    if not args.resume or (out / "checkpoints").is_dir() or not (out / "model.safetensors").is_file():
        return None
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return None
    # finished by this run, not an earlier judge left in place by a kill before a checkpoint
    if (config.get("dataset") != name or "test_accuracy" not in config
            or config.get("training") != _training_options(args)):
        return None
    from ..judges import load_judge

    try:
        load_judge(out)  # damaged files are trained again, not kept
    except Exception:  # noqa: BLE001 - CheckpointError, a torch or safetensors error
        return None
    if os.environ.get("RANK", "0") == "0":
        print(f"--resume: the {name} judge in {out} is finished (test accuracy "
              f"{config['test_accuracy']:.4f}); kept. To train it again, leave --resume out and pass "
              "--overwrite.",
              file=sys.stderr)
    return {"test_accuracy": config["test_accuracy"], "kept": True}


def _training_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("arch", "model_kwargs", "steps", "time_budget",
                                          "batch_size", "lr", "seed", "shift", "blur",
                                          "label_smoothing")}
