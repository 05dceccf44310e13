"""The ``vae`` encoder: images to flat, standardised latents of a diffusers ``AutoencoderKL``.

``encode`` returns the posterior *mean* (no sampling, so it is deterministic), flattened to
``(n, C*H*W)`` and standardised per dimension, ``(mean - shift) / scale``; ``decode`` inverts
that and returns images in [0, 1], ``(n, 1, 28, 28)``. ``shift`` and ``scale`` are read from
``latent_stats.json`` beside the VAE's weights (written by ``hjtranslate train vae``).

Image geometry. Inputs are grey 28x28 images, float in [0, 1] (uint8 is divided by 255), shaped
``(n, 1, 28, 28)`` or ``(n, 28, 28)``. The VAE sees them in [-1, 1] (the diffusers convention).

- The shipped VAE (``sample_size`` 32, one channel; ``"input_transform": "pad"`` in
  ``latent_stats.json``) gets the 28x28 image padded by 2 black pixels on each side; decoding
  crops the centre back.
- Any other VAE (e.g. a Stable-Diffusion VAE from the Hub: 3 channels, ``sample_size`` 512 or
  so) gets the image resized bilinearly to ``sample_size`` and the grey channel repeated into
  each input channel; decoding averages the output channels (the grey value) and resizes back to
  28x28 with antialiasing. Without ``latent_stats.json`` such a VAE uses ``shift = 0`` and
  ``scale = 1 / config.scaling_factor`` (the diffusers latent scaling).

Colour input (``(n, 3, 28, 28)``) is converted to grey with the ITU-R BT.601 luma rule
``0.299 R + 0.587 G + 0.114 B``; any other shape is an error.

Weights are read from safetensors only, as a map's are: a VAE with a pickled ``.bin`` alone
loads only with ``use_safetensors=False`` (for a file you trust). A VAE whose file lacks tensors
its config asks for, or holds NaN, is refused when loaded.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hjtranslate.checks import (
    dry_build_misfit,
    folder_config,
    hub_unreachable,
    missing_reason,
    non_finite_tensors,
    parse_device,
    safetensors_shapes,
    unusable_file,
)
from hjtranslate.encoders import Encoder
from hjtranslate.hjmap import CheckpointError, read_json_object
from hjtranslate.images import IMAGE_SIZE, LUMA
from hjtranslate.shipped import models_dir

STATS_FILE = "latent_stats.json"
_WEIGHTS = "diffusion_pytorch_model.safetensors"  # diffusers' name for them


def default_vae_path() -> Path:
    """The shipped VAE: ``vae`` in the shipped models' folder."""
    return models_dir() / "vae"


def as_grey_images(images: torch.Tensor) -> torch.Tensor:
    """Check and convert images to float ``(n, 1, 28, 28)`` in [0, 1]."""
    if not torch.is_tensor(images):
        raise ValueError(f"Expected a torch tensor of images, got {type(images).__name__}.")
    x = images
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise ValueError(f"Images must be float in [0, 1] or uint8, got dtype {x.dtype}.")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(
            f"Images must be shaped (n, 28, 28) or (n, 1, 28, 28), got {tuple(images.shape)}."
        )
    if x.shape[1] == 3:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    elif x.shape[1] != 1:
        raise ValueError(
            f"Images must have 1 (grey) or 3 (RGB, converted to grey) channels, got "
            f"{x.shape[1]} in shape {tuple(images.shape)}."
        )
    if tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"Images must be {IMAGE_SIZE}x{IMAGE_SIZE} (MNIST / Fashion-MNIST size), got "
            f"{tuple(x.shape[-2:])}. Resize them first, e.g. with "
            f"torch.nn.functional.interpolate(x, size=({IMAGE_SIZE}, {IMAGE_SIZE}), "
            "mode='bilinear', antialias=True)."
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("Images contain NaN or infinite values.")
    # a little rounding error is clamped; 0..255 floats or [-1, 1] images are a mistake to name
    if x.numel() and (float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3):
        raise ValueError(f"Float images must lie in [0, 1], got values in [{float(x.min()):g}, "
                         f"{float(x.max()):g}]: divide 0..255 images by 255, map [-1, 1] ones "
                         "by (x + 1) / 2.")
    return x.clamp(0, 1)


def to_vae_input(x01: torch.Tensor, sample_size: int, in_channels: int, transform: str) -> torch.Tensor:
    """Grey ``(n, 1, 28, 28)`` in [0, 1] -> the VAE's input in [-1, 1]."""
    x = x01 * 2.0 - 1.0
    if transform == "pad":
        p = (sample_size - IMAGE_SIZE) // 2
        q = sample_size - IMAGE_SIZE - p
        x = F.pad(x, (p, q, p, q), value=-1.0)
    elif sample_size != IMAGE_SIZE:
        x = F.interpolate(x, size=(sample_size, sample_size), mode="bilinear", align_corners=False)
    if in_channels != 1:
        x = x.repeat(1, in_channels, 1, 1)
    return x


def from_vae_output(y: torch.Tensor, transform: str) -> torch.Tensor:
    """The VAE's output in [-1, 1] -> grey ``(n, 1, 28, 28)`` in [0, 1]."""
    if y.shape[1] != 1:
        y = y.mean(1, keepdim=True)
    size = y.shape[-1]
    if transform == "pad":
        p = (size - IMAGE_SIZE) // 2
        y = y[..., p: p + IMAGE_SIZE, p: p + IMAGE_SIZE]
    elif size != IMAGE_SIZE:
        y = F.interpolate(y, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True,
                          align_corners=False)
    return ((y + 1.0) / 2.0).clamp(0.0, 1.0)


#: the largest image side a VAE's config may name (SD VAEs: 512 to 1,024)
MAX_SAMPLE_SIZE = 4096

_REDO_VAE = ("Download it again, or save it again (AutoencoderKL.save_pretrained); the shipped "
             "VAE is retrained with `hjtranslate train vae` (writes models/vae).")
_REDO_STATS = ("Recompute it (VAEEncoder.fit_latent_stats, then save_latent_stats), download the "
               "VAE again, or retrain the shipped one with `hjtranslate train vae`.")


def _load_autoencoder(autoencoder_cls: Any, source: str | Path, local: Path,
                      hub_kwargs: dict[str, Any]) -> Any:
    """``AutoencoderKL.from_pretrained`` with a :class:`CheckpointError` that names the folder
    (or Hub id) for what diffusers reports as a bare OSError (unreadable config.json, truncated
    weights, unknown Hub id) or ValueError / TypeError (a config that does not fit the weights)."""
    # safetensors only, as for maps: a pickled .bin is read only where use_safetensors=False
    # asks for it
    hub_kwargs = {"use_safetensors": True, **hub_kwargs}
    if local.is_symlink() and not local.exists():  # not a Hub id either: a link that leads nowhere
        raise CheckpointError(f"The VAE {str(source)!r} {missing_reason(local)}.")
    if local.is_dir() and not hub_kwargs.get("subfolder"):
        _check_autoencoder_folder(local, hub_kwargs["use_safetensors"])
    unreachable = None if local.exists() else hub_unreachable(bool(hub_kwargs.get("local_files_only")))
    if unreachable:  # the cache alone, without huggingface_hub's 25 s of retries
        hub_kwargs = {**hub_kwargs, "local_files_only": True}
    # diffusers reads another file with a variant or use_safetensors=False, and takes weights
    # of other shapes with ignore_mismatched_sizes
    if not any(hub_kwargs.get(k) for k in ("variant", "ignore_mismatched_sizes")) and \
            hub_kwargs.get("use_safetensors") is not False:
        if local.is_dir():
            _check_sizes(autoencoder_cls, local / (hub_kwargs.get("subfolder") or ""), local)
        else:  # the two files diffusers would fetch, fetched first (into the same cache)
            fetched = _hub_files(str(source), ("config.json", _WEIGHTS), hub_kwargs)
            if fetched is not None:
                _check_sizes(autoencoder_cls, fetched[0].parent, source)
                hub_kwargs = {k: v for k, v in hub_kwargs.items() if k != "force_download"}
    try:
        return autoencoder_cls.from_pretrained(str(local) if local.exists() else str(source),
                                               **hub_kwargs)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        # diffusers' first sentence: what it could not read (its hints after that do not apply)
        text = str(exc).strip()
        first = text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(exc).__name__
        if local.exists():
            raise CheckpointError(
                f"The VAE in {local} cannot be loaded: its config.json or weights are corrupt, "
                f"truncated or do not belong together ({first}). {_REDO_VAE}"
            ) from None
        if unreachable:
            raise CheckpointError(
                f"The VAE {str(source)!r} is not a local folder, nor in the local Hub cache, and "
                f"the Hub cannot be reached ({unreachable}). Pass an existing folder, or download "
                "it once while online."
            ) from None
        raise CheckpointError(
            f"The VAE {str(source)!r} is neither a local folder nor a loadable Hub AutoencoderKL "
            f"({first}). Pass an existing folder, or check the Hub id and your connection."
        ) from None


def _hub_files(repo_id: str, names: tuple[str, ...], hub_kwargs: dict[str, Any]) -> list[Path] | None:
    """Files of a Hub VAE, downloaded to the cache, or None where one cannot be fetched (missing
    from the repo, offline, no access: what follows names it, or does without it)."""
    from huggingface_hub import hf_hub_download

    keys = ("subfolder", "revision", "cache_dir", "force_download", "local_files_only", "token")
    try:
        return [Path(hf_hub_download(repo_id, name, **{k: hub_kwargs[k] for k in keys
                                                         if k in hub_kwargs}))
                for name in names]
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def _check_autoencoder_folder(folder: Path, use_safetensors: bool | None = True) -> None:
    """A folder of something else (a judge, a map, a pipeline) named as the VAE, or of pickled
    weights only: say so, before diffusers tries it and logs its own fallbacks."""
    try:
        kind = read_json_object(folder / "config.json", _REDO_VAE).get("_class_name")
    except CheckpointError:
        return  # a damaged config.json: the load below names it as the VAE's
    weights = any(folder.glob("diffusion_pytorch_model.*"))
    if use_safetensors and weights and not (folder / _WEIGHTS).exists():
        raise CheckpointError(
            f"The VAE in {folder} has its weights in a pickle file only (no {_WEIGHTS}), and "
            "pickle files are not read by default: unpickling can run arbitrary code. Save it "
            "again as safetensors (AutoencoderKL.save_pretrained), or, for a file you trust, "
            "pass use_safetensors=False.")
    if kind == "AutoencoderKL" and weights:
        return
    what = (f"its config.json describes a {kind}" if kind and kind != "AutoencoderKL" else
            "its config.json names no _class_name 'AutoencoderKL'" if kind is None else
            "it holds no diffusion_pytorch_model.safetensors")
    hint = " (a translation pipeline: its VAE is in vae/)" if (folder / "vae").is_dir() else ""
    raise CheckpointError(f"{folder} is not a diffusers AutoencoderKL folder: {what}{hint}. "
                          "Pass the folder of a VAE, such as models/vae.")


def _check_sizes(autoencoder_cls: Any, folder: Path, named: str | Path) -> None:
    """Refuse a config.json whose autoencoder would not have the weights file's tensor shapes
    before diffusers builds it (:func:`dry_build_misfit`): a block width of 200,000 asked
    diffusers for 1.4 TB. Where that cannot be judged, diffusers' loading does."""
    weights = folder / _WEIGHTS
    saved = safetensors_shapes(weights) if weights.is_file() else None
    config = folder_config(folder)
    if saved is None or not config:  # damaged: diffusers' loading names it
        return
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its notes on the config come with the real load
    try:
        misfit = dry_build_misfit(lambda: autoencoder_cls.from_config(config), saved)
    finally:
        diffusers_logging.set_verbosity(level)
    if misfit:
        where = f"in {named}" if Path(named).exists() else f"{str(named)!r} (from the Hub)"
        raise CheckpointError(
            f"The VAE {where} cannot be loaded: its weights do not fit its config.json "
            f"({misfit}; checked before building it). {_REDO_VAE}")


def _check_loaded(vae: Any, named: str | Path) -> None:
    """Weights diffusers could not fill (missing from the file: it leaves them on the meta
    device, where the first use fails deep in torch) or that are not finite (NaN decodes)."""
    where = f"in {named}" if Path(named).exists() else f"{str(named)!r}"
    tensors = [*vae.named_parameters(), *vae.named_buffers()]
    missing = [name for name, t in tensors if t.is_meta]
    if missing:
        raise CheckpointError(
            f"The VAE {where} cannot be loaded: its weights file lacks {len(missing)} of the "
            f"tensors its config.json asks for ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}). {_REDO_VAE}")
    broken = non_finite_tensors(tensors)
    if broken:
        raise CheckpointError(
            f"The VAE {where} cannot be used: its weights hold NaN or infinite values "
            f"({broken}). {_REDO_VAE}")


def _read_latent_stats(path: Path) -> dict[str, Any]:
    stats = read_json_object(path, _REDO_STATS)
    if "shift" not in stats or "scale" not in stats:
        raise CheckpointError(f"{path} holds no 'shift' and 'scale' lists. {_REDO_STATS}")
    return stats


class VAEEncoder(Encoder):
    """A diffusers ``AutoencoderKL`` as an hjtranslate encoder (see the module docstring).

    ``pretrained``: a local folder or a Hub id (default: the shipped ``models/vae``);
    ``hub_kwargs`` go to ``AutoencoderKL.from_pretrained`` (``subfolder``, ``revision``, ...).
    ``vae=`` takes an already built ``AutoencoderKL`` instead (tests, training).
    """

    name = "vae"

    def __init__(
        self,
        pretrained: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        vae: Any = None,
        latent_stats: dict[str, Any] | None = None,
        **hub_kwargs: Any,
    ) -> None:
        from diffusers import AutoencoderKL

        self.device = parse_device(device)
        if batch_size is None:
            # On a CPU small batches stay in cache: at 128 a 2-core machine decodes 28x28 images
            # 1.75x as fast as at 512 (and encodes 1.5x as fast).
            batch_size = 128 if self.device.type == "cpu" else 512
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        self._loaded = vae is None  # from a folder / the Hub, not an object handed in
        if vae is None:
            source: str | Path = pretrained if pretrained is not None else default_vae_path()
            local = Path(source).expanduser()
            if pretrained is None and not (local / "config.json").is_file():
                raise FileNotFoundError(
                    f"The shipped VAE is missing: no config.json in {local}. Reinstall "
                    "hjtranslate, or train it with `hjtranslate train vae`, or pass a folder or "
                    "Hub id of a diffusers AutoencoderKL (--vae on the command line, "
                    "pretrained= in Python)."
                )
            if local.exists() and (why := unusable_file(local / "config.json")):
                raise FileNotFoundError(f"{why}.")
            if local.exists() and not (local / "config.json").is_file():
                hint = ("a translation pipeline: its VAE is in vae/" if (local / "vae").is_dir()
                        else "save one with save_pretrained, or train one with `hjtranslate "
                        "train vae`")
                raise FileNotFoundError(
                    f"{local} holds no config.json: not a diffusers AutoencoderKL folder ({hint})."
                )
            vae = _load_autoencoder(AutoencoderKL, source, local, hub_kwargs)
            _check_loaded(vae, local if local.exists() else source)
            stats_path = local / STATS_FILE
            if latent_stats is None and local.is_dir() and (stats_path.exists()
                                                            or stats_path.is_symlink()):
                latent_stats = _read_latent_stats(stats_path)  # a folder, a broken link: named
            elif latent_stats is None and not local.exists():  # a Hub id: its stats beside it
                stats_file = _hub_files(str(source), (STATS_FILE,), hub_kwargs)
                if stats_file is not None:
                    latent_stats = _read_latent_stats(stats_file[0])
        self.pretrained = None if pretrained is None else str(pretrained)
        self.vae = vae.to(self.device).eval()
        for p in self.vae.parameters():
            p.requires_grad_(False)
        cfg = self.vae.config
        self.sample_size = int(cfg.sample_size if isinstance(cfg.sample_size, int)
                               else cfg.sample_size[0])
        self.in_channels = int(cfg.in_channels)
        if not 1 <= self.sample_size <= MAX_SAMPLE_SIZE:  # the probe below is that large
            raise CheckpointError(f"The VAE {self.pretrained or 'handed in'}: its config.json's "
                                  f"sample_size {self.sample_size} is outside 1..{MAX_SAMPLE_SIZE}. "
                                  f"{_REDO_VAE}")
        with torch.no_grad():
            probe = torch.zeros(1, self.in_channels, self.sample_size, self.sample_size,
                                device=self.device, dtype=self.vae.dtype)
            self.latent_shape = tuple(self.vae.encode(probe).latent_dist.mean.shape[1:])
        self.latent_dim = int(torch.tensor(self.latent_shape).prod())
        try:
            self.set_latent_stats(latent_stats)
        except ValueError as exc:
            if not self._loaded:
                raise
            raise CheckpointError(f"The VAE {self.pretrained or default_vae_path()} cannot be "
                                  f"used: {exc} {_REDO_STATS}") from None

    # -- latent standardisation ---------------------------------------------------------------
    def set_latent_stats(self, stats: dict[str, Any] | None) -> None:
        """Use ``stats`` (``shift``, ``scale`` lists of length latent_dim, optional
        ``input_transform``); ``None`` means the diffusers scaling without a shift."""
        if stats is None:
            if self._loaded:
                warnings.warn(
                    f"No {STATS_FILE} beside the VAE: latents are scaled by "
                    "config.scaling_factor only (not standardised per dimension).",
                    RuntimeWarning, stacklevel=3,
                )
            sf = float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)
            shift = torch.zeros(self.latent_dim)
            scale = torch.full((self.latent_dim,), 1.0 / sf)
            transform = "resize"
        else:
            try:
                shift = torch.as_tensor(stats["shift"], dtype=torch.float32).flatten()
                scale = torch.as_tensor(stats["scale"], dtype=torch.float32).flatten()
            except (TypeError, ValueError, RuntimeError):  # strings, None, ragged lists
                raise ValueError(f"{STATS_FILE}'s 'shift' and 'scale' must be lists of numbers, "
                                 f"one per latent dimension.") from None
            if not bool(shift.isfinite().all() and scale.isfinite().all()):
                raise ValueError(f"{STATS_FILE} holds NaN or infinite shifts or scales.")
            if shift.numel() != self.latent_dim or scale.numel() != self.latent_dim:
                raise ValueError(
                    f"{STATS_FILE} has {shift.numel()} shifts and {scale.numel()} scales but the "
                    f"VAE's latent has {self.latent_dim} dimensions {self.latent_shape}: it "
                    "belongs to another VAE. Recompute it (VAEEncoder.fit_latent_stats)."
                )
            if not bool((scale > 0).all()):
                raise ValueError(f"{STATS_FILE} holds non-positive scales.")
            transform = stats.get("input_transform", "resize")
        if transform not in ("pad", "resize"):
            raise ValueError(f"Unknown input_transform {transform!r}; use 'pad' or 'resize'.")
        if transform == "pad" and self.sample_size < IMAGE_SIZE:
            raise ValueError(f"input_transform 'pad' needs sample_size >= {IMAGE_SIZE}.")
        self.transform = transform
        self.shift = shift.to(self.device)
        self.scale = scale.to(self.device)
        self.latent_stats = stats

    def to(self, device: str | torch.device) -> VAEEncoder:
        """Move the autoencoder and the latent statistics to ``device``; returns self."""
        self.device = torch.device(device)
        self.vae.to(self.device)
        self.shift, self.scale = self.shift.to(self.device), self.scale.to(self.device)
        return self

    @torch.no_grad()
    def raw_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Flat posterior means, not standardised."""
        x = as_grey_images(images)
        out = [self._encode_batch(x[i: i + self.batch_size])
               for i in range(0, x.shape[0], self.batch_size)]
        if not out:
            return torch.zeros(0, self.latent_dim, device=self.device)
        return torch.cat(out)

    def fit_latent_stats(self, images: torch.Tensor, transform: str | None = None) -> dict[str, Any]:
        """Per-dimension mean and standard deviation of the posterior means of ``images``;
        sets them and returns the dict that ``latent_stats.json`` holds."""
        if transform is not None:
            self.transform = transform
        m = self.raw_latents(images).double()
        stats = {
            "shift": m.mean(0).tolist(),
            "scale": m.std(0).clamp_min(1e-6).tolist(),
            "input_transform": self.transform,
            "latent_shape": list(self.latent_shape),
            "num_images": int(m.shape[0]),
        }
        self.set_latent_stats(stats)
        return stats

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> VAEEncoder:
        """The VAE saved in ``folder`` (a diffusers folder with ``latent_stats.json``)."""
        return cls(str(folder), device=device)

    def save_pretrained(self, folder: str | Path) -> None:
        """The autoencoder (diffusers' ``save_pretrained``) and its latent statistics."""
        from hjtranslate.checks import shared_as_umask_says

        self.vae.save_pretrained(str(folder))
        shared_as_umask_says(Path(folder) / _WEIGHTS)
        self.save_latent_stats(folder)

    def save_latent_stats(self, folder: str | Path) -> Path:
        if self.latent_stats is None:
            raise ValueError("No latent stats to save; call fit_latent_stats first.")
        path = Path(folder) / STATS_FILE
        path.write_text(json.dumps(self.latent_stats, indent=2, sort_keys=True) + "\n")
        return path

    # -- the Encoder interface ----------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> standardised flat latents ``(n, latent_dim)``."""
        return (self.raw_latents(images) - self.shift) / self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Flat latents ``(n, latent_dim)`` -> images ``(n, 1, 28, 28)`` in [0, 1]."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"Latents must be shaped (n, {self.latent_dim}), got {tuple(z.shape)}."
            )
        out = [self._decode_batch(z[i: i + self.batch_size])
               for i in range(0, z.shape[0], self.batch_size)]
        if not out:
            return torch.zeros(0, 1, IMAGE_SIZE, IMAGE_SIZE, device=self.device)
        return torch.cat(out)

    def round_trip(self, z: torch.Tensor) -> torch.Tensor:
        """``encode(decode(z))`` with gradients through both (the VAE's weights stay frozen):
        the latent of the image a latent decodes to. Latents the encoder produces move little
        under it; one the decoder was never trained near moves more (the ``manifold`` term of
        training, objective.py)."""
        out = [self._encode_batch(self._decode_batch(z[i: i + self.batch_size]))
               for i in range(0, z.shape[0], self.batch_size)]
        return (torch.cat(out) - self.shift) / self.scale

    # One batch each way, differentiable; the public methods batch them (and turn gradients off).
    def _encode_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Grey images -> flat posterior means, not standardised."""
        x = to_vae_input(images.to(self.device, self.vae.dtype), self.sample_size, self.in_channels,
                         self.transform)
        return self.vae.encode(x).latent_dist.mean.flatten(1)

    def _decode_batch(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised flat latents -> images in [0, 1]."""
        zb = z.to(self.device, torch.float32) * self.scale + self.shift  # the stats in float32
        out = self.vae.decode(zb.to(self.vae.dtype).view(-1, *self.latent_shape)).sample
        return from_vae_output(out.float(), self.transform)  # a half-precision VAE's too

    def config(self) -> dict[str, Any]:
        return {"pretrained": self.pretrained, "latent_dim": self.latent_dim}
