"""``hjtranslate train vae``: one small AutoencoderKL for MNIST and Fashion-MNIST together.

Both training sets (120,000 images) are shuffled into one stream, so the two datasets share one
latent space, where the digits-to-fashion maps are learned. The 28x28 images are padded by 2
black pixels to 32x32 (three stride-2 stages then give a 4x4 latent; padding, unlike resizing,
keeps the pixels exact) and scaled to [-1, 1]. The objective, inside one module's forward, is
the per-pixel squared error plus ``kl_weight`` times the KL divergence to N(0, I) per pixel
(a beta-VAE; a small KL keeps the latent smooth without blurring the reconstructions).

After training: ``save_pretrained`` to ``--output-dir``, ``latent_stats.json`` (per-dimension
mean and standard deviation of the posterior means over 20,000 training images, 10,000 of each
dataset), and a model card with the reconstruction error on both test sets.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checks import settings_text
from ..data import DATA_DIR_HELP, load_dataset, resolve_data_dir, to_float
from ..modelcard import card_name
from .common import (
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
# A fine-tune starts from trained weights, which Adam's first steps (each parameter moved by about
# the rate) disturb: 30 decoder-only steps at 1e-3 took the VAE shipped until 2026-12-06 from
# 24.50 / 21.26 dB to 21.80 / 19.39 dB, at 3e-4 to 24.22 / 21.03 dB, from which 4,489 steps reached
# 25.38 / 21.72 dB (BENCHMARKS.md, "A sharper decoder in the same latent space").
FRESH_LR, FINE_TUNE_LR = 1e-3, 3e-4


class VAEObjective(nn.Module):
    """Reconstruction + ``kl_weight`` * KL of an ``AutoencoderKL``, per pixel.

    With ``decoder_only`` the encoder is frozen and only the decoder learns (the KL is then a
    constant and left out): the latent space stays exactly as it was, so maps trained in it stay
    valid while their decodes get sharper (the way Stable Diffusion's ft-MSE VAE was made).
    """

    def __init__(self, vae: nn.Module, kl_weight: float, decoder_only: bool = False,
                 latent_noise: torch.Tensor | None = None) -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight
        self.decoder_only = decoder_only
        # Gaussian noise added to the latents the decoder reads, per latent entry (raw units):
        # the decoder learns to draw a neighbourhood of each latent, where maps' translations
        # land (BENCHMARKS.md, "A decoder trained on noised latents")
        self.register_buffer("latent_noise", latent_noise, persistent=False)
        if decoder_only:
            vae.encoder.requires_grad_(False)
            if getattr(vae, "quant_conv", None) is not None:
                vae.quant_conv.requires_grad_(False)

    def forward(self, x: torch.Tensor, generator_seed: int | None = None,
                noise_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``generator_seed``: the seed of the posterior sample and the latent noise (training
        gives one per step and process, so that processes draw different noise and a resumed
        run the noise it would have drawn); None: the global random state. ``noise_weight``:
        a factor on the latent noise per image (0: none for that image; None: 1 for all)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.decoder_only):
            posterior = self.vae.encode(x).latent_dist
        gen = (None if generator_seed is None
               else torch.Generator(device=x.device).manual_seed(int(generator_seed)))
        z = posterior.sample(generator=gen)
        if self.latent_noise is not None:
            noise = self.latent_noise * torch.randn(z.shape, generator=gen, device=z.device,
                                                    dtype=z.dtype)
            if noise_weight is not None:
                noise = noise * noise_weight.to(noise).view(-1, *([1] * (z.dim() - 1)))
            z = z + noise
        y = self.vae.decode(z).sample
        mse = ((y - x) ** 2).mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = mse if self.decoder_only else mse + self.kl_weight * kl
        # mse01: the error on the [0, 1] scale, comparable with the reported figures.
        return {"loss": loss, "mse01": mse.detach() / 4.0, "kl": kl.detach()}


#: the VAE's group normalisation splits each block's channels into this many groups
NORM_GROUPS = 8


def _stages(latent_size: int) -> int | None:
    """The encoder's stages for a ``latent_size`` x ``latent_size`` latent of a 32x32 input (one
    per halving, and the first); None where the size is not 32 / 2**k."""
    downs = math.log2(32 // latent_size) if 1 <= latent_size <= 32 else -1
    return int(downs) + 1 if downs >= 0 and not 32 % latent_size and downs == int(downs) else None


def build_vae(latent_channels: int = 4, latent_size: int = 4,
              widths: tuple[int, ...] = (16, 32, 64, 64)) -> Any:
    """A small one-channel AutoencoderKL with a ``latent_channels x latent_size^2`` latent for
    32x32 inputs."""
    from diffusers import AutoencoderKL

    n_blocks = _stages(latent_size)
    if n_blocks is None:
        raise ValueError(f"--latent-size must be 32 / 2**k (32, 16, 8, 4, 2, 1), got {latent_size}.")
    widths = tuple(widths[:n_blocks]) + (widths[-1],) * max(0, n_blocks - len(widths))
    if widths[-1] // NORM_GROUPS * latent_size**2 < 2:  # one value per group: GroupNorm fails
        raise ValueError(f"--latent-size {latent_size} with a last width of {widths[-1]}: the "
                         f"group normalisation of the {latent_size}x{latent_size} latent needs "
                         f"a last --widths entry of at least {2 * NORM_GROUPS}.")
    return AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=latent_channels, sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * n_blocks,
        up_block_types=("UpDecoderBlock2D",) * n_blocks,
        block_out_channels=widths, layers_per_block=1, norm_num_groups=NORM_GROUPS,
        scaling_factor=1.0,
    )


def parse_widths(text: str) -> tuple[int, ...]:
    """``--widths``: comma-separated channel counts, each a positive multiple of ``NORM_GROUPS``
    (the VAE's group normalisation splits the channels into that many groups)."""
    try:
        widths = tuple(int(w) for w in str(text).split(","))
    except ValueError:
        widths = ()
    if not widths or any(w < 1 or w % NORM_GROUPS for w in widths):
        raise ValueError(f"--widths must be comma-separated channel counts, each a positive "
                         f"multiple of {NORM_GROUPS}, e.g. 16,32,64,64; got {text!r}.")
    return widths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--download", action="store_true",
                   help="let torchvision download missing MNIST / Fashion-MNIST files (online)")
    p.add_argument("--output-dir", default=None,
                   help="where the VAE is written (default: the checkout's models/vae, the shipped "
                        "VAE that digits-to-fashion reads, from whatever folder it runs; "
                        "installed from a wheel, ./models/vae)")
    p.add_argument("--steps", type=int, default=900, help="training steps")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; stops early")
    p.add_argument("--batch-size", type=int, default=128, help="images per step, in each process "
                   "(N processes train on N times that)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default {FRESH_LR:g}; {FINE_TUNE_LR:g} with --init-from)")
    p.add_argument("--kl-weight", type=float, default=2e-3,
                   help="weight of the per-pixel KL against the per-pixel squared error")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and batches")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="start from this trained VAE folder (its architecture: --latent-channels, "
                        "--latent-size and --widths are refused beside it) instead of random "
                        "weights")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init-from: fine-tune the decoder only; the encoder, and so the "
                        "latent space and latent_stats.json, stay exactly as they were, and maps "
                        "trained in that latent keep working with the sharper decodes")
    p.add_argument("--latent-noise", type=float, default=0.0, metavar="SIGMA",
                   help="with --decoder-only: add Gaussian noise of this size (in the standardised "
                        "latent units maps work in) to the latents the decoder learns to draw, so "
                        "that it draws the latents of translations, which lie off the encoder's "
                        "own, as it draws real ones (0: off; 0.15 and 0.3 measured on the shipped "
                        "VAE in BENCHMARKS.md)")
    p.add_argument("--latent-noise-on", choices=("both", *DATASET_NAMES), default="both",
                   help="with --latent-noise: the training images whose latents get the noise "
                        "(the others are drawn from their own latents, as sharp as without it)")
    p.add_argument("--latent-channels", type=int, default=4,
                   help="latent channels (the latent has channels x size x size numbers)")
    p.add_argument("--latent-size", type=int, default=4, help="latent height = width")
    p.add_argument("--widths", default="16,32,64,64", help="channels of the encoder stages")
    p.add_argument("--eval-images", type=int, default=10000,
                   help="test images per dataset for the card's reconstruction figures "
                        "(default: all 10,000; fewer for a quick trial)")
    p.add_argument("--stats-images", type=int, default=10000,
                   help="training images per dataset for latent_stats.json (default 10,000)")
    p.add_argument("--checkpoint-every", type=int, default=300, help="steps between checkpoints")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep <output-dir>/checkpoints after a finished run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a trained VAE in --output-dir (refused without it)")


@torch.no_grad()
def reconstruction_metrics(encoder: Any, images: torch.Tensor) -> dict[str, float]:
    """Mean squared error and PSNR (dB, from the mean MSE, peak 1) of encode-decode on [0, 1]."""
    x = to_float(images)
    y = encoder.decode(encoder.encode(x))
    per_image = ((y - x) ** 2).flatten(1).mean(1)
    mse = float(per_image.mean())
    return {"mse": mse, "psnr": 10.0 * math.log10(1.0 / mse),
            "psnr_per_image_mean": float((10.0 * torch.log10(1.0 / per_image.clamp_min(1e-10))).mean())}


def write_card(folder: Path, info: dict[str, Any], name: str = "models/vae") -> Path:
    """The VAE's model card in ``folder``; its snippet loads ``name`` (where the VAE ends up)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="diffusers", license="apache-2.0",
        tags=["autoencoderkl", "vae", "mnist", "fashion-mnist", "hjtranslate"],
        datasets=["mnist", "zalando-datasets/fashion_mnist"],
        metrics=["mse", "psnr"],
    )
    m = info["metrics"]
    resumed = resumed_line(info)
    rows = "\n".join(
        f"| {name} test ({info['eval_images'][name]:,}) | {m[name]['mse']:.5f} | {m[name]['psnr']:.2f} | "
        f"{m[name]['psnr_per_image_mean']:.2f} |" for name in DATASET_NAMES
    )
    shape = "x".join(str(s) for s in info["latent_shape"])
    stats = (f"{info['stats_images']:,} training images, half of each dataset"
             if isinstance(info.get("stats_images"), int) else
             "the training images of the VAE it was fine-tuned from, copied with its encoder")
    objective = f"per-pixel squared error + {info['kl_weight']} x per-pixel KL to N(0, I)"
    made_by = _made_by(info.get("init_training"))
    if info.get("decoder_only"):
        objective = (f"the decoder of the VAE in `{info['init_from']}`{made_by} fine-tuned on the "
                     "per-pixel squared error, its encoder frozen (same latent space and "
                     "latent_stats.json, so maps trained in that latent stay valid)")
        if info.get("latent_noise"):
            on = info.get("latent_noise_on") or "both"
            objective += (f", drawing latents with Gaussian noise of {info['latent_noise']:g} "
                          "standardised units added"
                          + ("" if on == "both" else f" to those of {on} images only")
                          + " (so that it draws translated latents, which lie off the encoder's "
                          "own, as it draws real ones)")
    elif info.get("init_from"):
        objective += f", starting from the VAE in `{info['init_from']}`{made_by}"
    text = f"""---
{data.to_yaml()}
---

# AutoencoderKL for MNIST and Fashion-MNIST (hjtranslate)

One small `diffusers.AutoencoderKL` ({info['parameters']:,} parameters) trained on the MNIST and
Fashion-MNIST training sets together, so both datasets share one latent space: the space where
hjtranslate learns its digits-to-fashion transport maps.

- input: 28x28 grey images in [0, 1], scaled to [-1, 1] and padded by 2 black pixels to 32x32;
- latent: {shape} = {info['latent_dim']} dimensions (posterior mean), standardised per dimension
  with `latent_stats.json` (mean and standard deviation over {stats});
- objective: {objective};
- training: {info['steps']} steps of batch {info['batch_size']} (Adam, lr {info['lr']} with cosine
  decay), {info['seconds']:.0f} s on {info['device']}, seed {info['seed']}.

```bash
{info['command']}
```
{resumed}
## Reconstruction (encode -> decode through the posterior mean, 28x28, pixels in [0, 1])

| test set | MSE | PSNR of the mean MSE (dB) | mean per-image PSNR (dB) |
|---|---|---|---|
{rows}

## Use

```python
from hjtranslate_plugins.vae import VAEEncoder
enc = VAEEncoder({name!r})  # VAEEncoder() loads the shipped one
z = enc.encode(images)                   # (n, 1, 28, 28) in [0, 1] -> (n, {info['latent_dim']})
images_back = enc.decode(z)              # -> (n, 1, 28, 28) in [0, 1]
```

Data: MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0) and Fashion-MNIST (Xiao, Rasul, Vollgraf,
Zalando 2017; MIT).
"""
    ModelCard(text)  # validates the YAML header
    path = folder / "README.md"
    path.write_text(text)
    return path


def _made_by(record: dict[str, Any] | None) -> str:
    """How the --init-from VAE was made, first command first: a fine-tune of a fine-tune names
    the run that trained its encoder as well as the one that last tuned its decoder."""
    runs = []
    while isinstance(record, dict) and record.get("command"):
        seconds = record.get("seconds")
        took = f", {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
        runs.append(f"`{record['command']}` ({record.get('steps')} steps{took})")
        record = record.get("init_training")
    return f" (made by {', then '.join(reversed(runs))})" if runs else ""


def _init_record(folder: str | None) -> dict[str, Any]:
    """The --init-from VAE's training_metrics.json; empty where there is none or it is damaged
    (the new VAE's card then names the folder alone)."""
    try:
        record = json.loads(settings_text(Path(folder, "training_metrics.json"))) if folder else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _init_stats_images(folder: str | None) -> int | None:
    """How many images the --init-from VAE's latent statistics were measured on (its record)."""
    count = _init_record(folder).get("stats_images")
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def _training_record(folder: str | None) -> dict[str, Any] | None:
    """How the ``--init-from`` VAE was made (its training_metrics.json), for the new card."""
    record = _init_record(folder)
    if not record:
        return None
    kept = {k: record.get(k) for k in ("command", "steps", "seconds", "init_training")}
    if not isinstance(kept["command"], str) or not all(
            isinstance(kept[k], (int, float, type(None))) for k in ("steps", "seconds")):
        return None
    if not isinstance(kept["init_training"], dict):
        kept["init_training"] = None
    return kept


#: the options that make a VAE what it is: a --resume that finds a finished VAE made with
#: others refuses, rather than train a new one over it
MODEL_OPTIONS = ("steps", "time_budget", "batch_size", "lr", "kl_weight", "seed", "init_from",
                 "decoder_only", "latent_noise", "latent_noise_on", "latent_channels", "latent_size",
                 "widths", "eval_images", "stats_images")


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    record = recorded_options(args)
    return {k: record.get(k) for k in MODEL_OPTIONS}


def _finished(out: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """``--resume`` in a folder whose VAE finished (its checkpoints went with it): kept where
    this launch asks for the options it was made with, a clear refusal otherwise (it used to
    train a new VAE with these options over it, from step 0); None where there is a checkpoint
    to resume or no finished VAE."""
    from ..training import checkpoints

    record_file = out / "training_metrics.json"
    if checkpoints(out) or not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return None  # a damaged record: the run's own --resume logic decides
    recorded = record.get("options")
    if isinstance(recorded, dict):
        recorded.setdefault("latent_noise", 0.0)  # recorded before the options were
        recorded.setdefault("latent_noise_on", "both")
    if recorded == _model_options(args):
        print(f"--resume: the VAE in {out} is finished ({record.get('steps')} steps); kept. "
              "To train it again, leave --resume out and pass --overwrite.", file=sys.stderr)
        return {"metrics": record.get("metrics"), "seconds": 0.0, "steps": record.get("steps"),
                "kept": True}
    if isinstance(recorded, dict):
        typed = getattr(args, "_typed", set())
        made = "made with other options than this launch's (" + ", ".join(
            f"--{k.replace('_', '-')} {recorded.get(k)} there, {v} now"
            + ("" if k in typed else " (the default)")
            for k, v in _model_options(args).items() if recorded.get(k) != v) + ")"
    else:
        made = "whose record predates the options' (hjtranslate 0.3.0)"
    raise ValueError(
        f"--resume: {out} holds a finished VAE ({record.get('steps')} steps), {made}, and no "
        "checkpoint to resume (a finished run removes them; "
        f"--keep-checkpoints keeps them). To train it further: --init-from {out} --output-dir "
        "NEW_FOLDER; to train a new VAE in its place: the same command with --overwrite.")


def _load_init(args: argparse.Namespace) -> Any:
    """The ``--init-from`` VAE as a ``VAEEncoder`` (None without the flag), checked for use."""
    from hjtranslate_plugins.vae import VAEEncoder

    if not 0.0 <= args.latent_noise < math.inf:
        raise ValueError(f"--latent-noise must be a finite number >= 0, got {args.latent_noise:g}.")
    if args.latent_noise_on != "both" and not args.latent_noise:
        raise ValueError(f"--latent-noise-on {args.latent_noise_on} says which images get the "
                         "latent noise: add --latent-noise SIGMA.")
    if args.latent_noise and not args.decoder_only:
        raise ValueError("--latent-noise trains the decoder of a VAE whose latent space stays as "
                         "it is: add --decoder-only (and --init-from DIR).")
    if args.init_from is None:
        if args.decoder_only:
            raise ValueError("--decoder-only fine-tunes a trained VAE: add --init-from DIR "
                             "(for example --init-from models/vae).")
        return None
    if Path(args.output_dir).resolve() == Path(args.init_from).resolve():
        raise ValueError(f"--output-dir {args.output_dir} is the --init-from folder; write the "
                         "fine-tuned VAE to a new folder and copy it over once it is measured.")
    init = VAEEncoder(args.init_from)
    if init.transform != "pad" or init.in_channels != 1 or init.sample_size != 32:
        raise ValueError(f"--init-from {args.init_from}: not a one-channel 32x32 VAE trained by "
                         "`hjtranslate train vae` (latent_stats.json must say input_transform 'pad').")
    return init


def run(args: argparse.Namespace) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from hjtranslate_plugins.vae import VAEEncoder, to_vae_input

    from ..shipped import training_root
    from ..training import TrainConfig, make_accelerator, train

    if args.output_dir is None:
        args.output_dir = str(training_root() / "vae")
    out = Path(args.output_dir)
    note_started_as(args)  # the checkpoints' record keeps it
    widths = parse_widths(args.widths)
    stages = _stages(args.latent_size)
    if "widths" in getattr(args, "_typed", ()) and stages is not None and len(widths) != stages:
        raise ValueError(f"--widths {args.widths} names {len(widths)} stages; a "
                         f"{args.latent_size}x{args.latent_size} latent of a 32x32 input takes "
                         f"{stages} (one per halving, and the first): give {stages} widths.")
    require_at_least(args, batch_size=1, eval_images=1, stats_images=1, latent_channels=1)
    if not 0.0 <= args.kl_weight < math.inf:  # also refuses NaN
        raise ValueError(f"--kl-weight must be a finite number >= 0 (the KL term's weight "
                         f"beside the per-pixel error; default 0.002), got {args.kl_weight:g}.")
    if args.lr is None:  # (a --resume restores the rate its run recorded)
        args.lr = FINE_TUNE_LR if args.init_from else FRESH_LR
    init = _load_init(args)
    check_output_folder(out, "--output-dir", lambda cfg: cfg.get("_class_name") == "AutoencoderKL",
                        "a VAE", task="vae")
    if args.resume:
        kept = _finished(out, args)
        if kept is not None:
            return kept
    refuse_to_replace(out, f"--output-dir {out}", "VAE", "diffusion_pytorch_model.safetensors",
                      args, f" (to train it further: --init-from {out} --output-dir NEW_FOLDER)")
    data = {(n, split): load_dataset(n, split, args.data_dir, download=args.download)[0]
            for n in DATASET_NAMES for split in ("train", "test")}
    train_images = torch.cat([data[n, "train"] for n in DATASET_NAMES])
    tests = {n: data[n, "test"][:args.eval_images] for n in DATASET_NAMES}

    acc = make_accelerator()
    set_seed(args.seed)
    if init is None:
        vae = build_vae(args.latent_channels, args.latent_size, widths)
    else:
        vae = init.vae.train().requires_grad_(True)
    noise = None
    if args.latent_noise:  # standardised units -> the VAE's own, per latent entry
        noise = args.latent_noise * torch.tensor(
            init.latent_stats["scale"], dtype=torch.float32).view(1, *init.latent_shape)
    model = VAEObjective(vae, args.kl_weight, decoder_only=args.decoder_only, latent_noise=noise)
    n_train = train_images.shape[0]
    # which dataset each training image is of (train_images holds them in DATASET_NAMES' order)
    dataset_of = torch.cat([torch.full((len(data[n, "train"]),), i)
                            for i, n in enumerate(DATASET_NAMES)])

    def batch_fn(step: int, rank: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 7919 + rank)
        idx = torch.randint(0, n_train, (args.batch_size,), generator=g)
        batch = {"x": to_vae_input(to_float(train_images[idx]), 32, 1, "pad"),  # as it encodes
                 "generator_seed": int(torch.randint(2**31, (1,), generator=g))}
        if args.latent_noise_on != "both":
            chosen = DATASET_NAMES.index(args.latent_noise_on)
            batch["noise_weight"] = (dataset_of[idx] == chosen).float()
        return batch

    config = TrainConfig(
        steps=args.steps, time_budget=args.time_budget, lr=args.lr, seed=args.seed,
        output_dir=str(out), checkpoint_every=args.checkpoint_every, resume=args.resume,
        progress=not args.no_progress,
        # the run's options, in every checkpoint: a --resume takes those not typed again
        extra={"task": "vae", **recorded_options(args)},
    )
    # the folder stays held while the outputs are written after training (keep_lock)
    result = train(model, batch_fn, config, acc, keep_lock=True,
                   save_fn=lambda m, folder: m.vae.save_pretrained(folder))
    if not acc.is_main_process:
        return {}

    vae = acc.unwrap_model(model).vae.eval()
    stage = staged_outputs(out)
    vae.save_pretrained(stage)
    encoder = VAEEncoder(vae=vae, batch_size=500)
    half = min(args.stats_images, 60000)
    if args.decoder_only:
        # The encoder did not move: keep its statistics bit for bit, so maps stay valid.
        encoder.set_latent_stats(init.latent_stats)
    else:
        g = torch.Generator().manual_seed(args.seed)
        sample = torch.cat([train_images[:60000][torch.randperm(60000, generator=g)[:half]],
                            train_images[60000:][torch.randperm(60000, generator=g)[:half]]])
        encoder.fit_latent_stats(sample, transform="pad")
    encoder.save_latent_stats(stage)
    metrics = {n: reconstruction_metrics(encoder, tests[n]) for n in DATASET_NAMES}
    info = {
        "metrics": metrics, "eval_images": {n: len(tests[n]) for n in DATASET_NAMES},
        "latent_shape": list(encoder.latent_shape),
        # --decoder-only copies the --init-from VAE's statistics, and with them its count
        "latent_dim": encoder.latent_dim,
        "stats_images": _init_stats_images(args.init_from) if args.decoder_only else 2 * half,
        "parameters": sum(p.numel() for p in vae.parameters()), "kl_weight": args.kl_weight,
        "steps": result["steps"], "batch_size": args.batch_size, "lr": args.lr,
        "seconds": result["seconds"], "seed": args.seed,
        "init_from": args.init_from, "decoder_only": bool(args.decoder_only),
        "latent_noise": args.latent_noise, "latent_noise_on": args.latent_noise_on,
        "init_training": _training_record(args.init_from),
        "options": _model_options(args),  # what a later --resume compares (_finished)
        "device": f"{acc.num_processes} x {acc.device.type} process(es), "
                  f"{torch.get_num_threads()} thread(s)",
        **run_commands(args, "vae"),
        "data_dir": str(resolve_data_dir(args.data_dir)),  # where the images came from
    }
    write_card(stage, info, card_name(out))
    (stage / "training_metrics.json").write_text(
        json.dumps(info | {"final": result["final"]}, indent=2, sort_keys=True) + "\n")
    move_outputs(stage, out, weights="diffusion_pytorch_model.safetensors")
    if not args.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    print(f"Wrote the VAE {out} ({result['steps']} steps; PSNR of test reconstructions "
          + ", ".join(f"{n} {m['psnr']:.2f} dB" for n, m in metrics.items()) + ")")
    return {"metrics": metrics, "seconds": result["seconds"], "steps": result["steps"]}
