"""The trained transport map: one potential ``u(x, t)`` and the closed-form maps it defines.

Saving and loading use ``huggingface_hub.ModelHubMixin`` rather than diffusers' ``ModelMixin``:
the map is a small ``nn.Module`` whose constructor arguments are its config, and the mixin gives
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (local folders, Hub ids, revisions,
cache, offline mode) without importing diffusers (8-10 s) in the core. Loading is ours: strict,
safetensors only, with clear errors for missing, corrupt or foreign files.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelHubMixin
from torch import nn

from . import __version__, registry
from .checks import (
    check_device,
    check_dtype,
    check_folder_path,
    dry_build_misfit,
    folder_config,
    hub_cache_blobs,
    hub_refusal_advice,
    hub_unreachable,
    is_real,
    missing_reason,
    network_errors,
    non_finite_tensors,
    real_number,
    refuse_offline_force_download,
    safetensors_shapes,
    settings_text,
    shared_as_umask_says,
    unusable_file,
    whole_number,
    written_whole,
)
from .contracts import check_cost, check_head
from .costs import Cost, cost_spec
from .heads import PotentialHead

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, foreign or too new."""


def read_json_object(path: str | Path, remedy: str) -> dict[str, Any]:
    """The JSON object (settings) in ``path``, or a CheckpointError naming the file and ``remedy``."""
    try:
        value = json.loads(settings_text(Path(path)))
    except (OSError, ValueError) as exc:  # ValueError: JSON and Unicode decoding
        raise CheckpointError(f"{path} is not readable JSON ({exc}). {remedy}") from None
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(value).__name__}, not an object of settings. {remedy}")
    return value


#: the file that makes a folder a translation pipeline (``pipeline.INDEX_FILE``)
PIPELINE_INDEX_FILE = "hjtranslate_pipeline.json"


def is_run_folder(folder: str | Path) -> bool:
    """The output folder of `hjtranslate train`: a config.json that names its task, and map/."""
    return "task" in folder_config(folder) and Path(folder, "map").is_dir()


#: the files a map's folder holds besides its model card
MAP_FILES = {"config.json", "model.safetensors"}


def is_map_folder(folder: str | Path) -> bool:
    """A folder an HJMap was saved into: a config.json with a map's dimension, head and cost."""
    config = folder_config(folder)
    return describes_a_map(config) and "task" not in config


def load_safetensors(path: str | Path, remedy: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors in a safetensors file, or a CheckpointError naming the file and ``remedy``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); it may be "
                              f"truncated or corrupted. {remedy}") from None


def as_sample_tensor(x: Any, what: str, shape: str = "(n, d)") -> torch.Tensor:
    """``x`` as a real tensor (a tensor, array or nested list of numbers); a clear error for
    anything else. A pandas or polars frame is read through its ``to_numpy()``; a sparse tensor
    is made dense."""
    if isinstance(x, torch.Tensor) and x.is_meta:
        raise ValueError(f"{what} is a meta tensor, which holds no values: pass the samples "
                         "themselves (e.g. load the model's weights before encoding).")
    try:
        x = dense_tensor(x)
    except (TypeError, ValueError, RuntimeError, KeyError):
        raise ValueError(f"{what} must be a tensor or array of numbers of shape {shape}, got "
                         f"{type(x).__name__}.") from None
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{what} must hold real numbers, got dtype {x.dtype}.")
    return x


def dense_tensor(x: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """``x`` (a tensor, array, nested list, or a pandas or polars frame or series, read through
    ``to_numpy()``: ``torch.as_tensor`` of a frame fails with a KeyError) as a dense tensor, a
    sparse one made dense. A meta tensor, which holds no values, is a ``ValueError``; what is not
    numbers raises as ``torch.as_tensor`` does."""
    if not isinstance(x, (torch.Tensor, np.ndarray)) and callable(getattr(x, "to_numpy", None)):
        x = np.array(x.to_numpy())  # a copy: pandas may lend a read-only view
    t = torch.as_tensor(x, device=device)
    if t.is_meta:
        raise ValueError("a meta tensor holds no values")
    return t if t.layout == torch.strided else t.to_dense()


def _class_ids(k: Any, device: torch.device) -> torch.Tensor:
    """Class ids (an int, a sequence, an array or tensor of integers, a pandas series) as a
    flat long tensor."""
    try:
        t = dense_tensor(k, device).reshape(-1)
    except (TypeError, ValueError, RuntimeError, KeyError):
        t = None
    if t is None or t.dtype == torch.bool or t.is_complex() or (
            t.is_floating_point() and not torch.equal(t, t.round())):
        raise ValueError(f"k must be integer class ids (an int, or one per sample), got {k!r}.")
    return t.long()


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def refuse_newer(saved: Any, what: str) -> None:
    """A checkpoint or pipeline ``what`` saved by a newer hjtranslate than this one is refused
    with the upgrade to make (an older one loads)."""
    saved = str(saved or "0")
    if _version_tuple(saved) > _version_tuple(__version__):
        raise CheckpointError(
            f"This {what} was written by hjtranslate {saved}, newer than the installed "
            f"{__version__}. Upgrade with: pip install -U 'hjtranslate>={saved}'."
        )


def head_cost_mismatch(head_cls: type, head: str, cost: Cost, cost_name: str) -> str | None:
    """Why the head ``head`` cannot solve the HJ equation of ``cost`` (None: it can). A head
    lists the costs it solves in ``costs`` (none: any); a cost whose Hamiltonian is
    ``|p|^2 / 2`` (``pnorm`` or ``lp`` with p = 2) is the quadratic one."""
    solves = getattr(head_cls, "costs", None)
    if solves is None or cost_name in solves:
        return None
    if "quadratic" in solves:
        p = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        try:
            with torch.no_grad():
                if (torch.allclose(cost.hamiltonian(p).double(), (p * p).sum(-1) / 2)
                        and torch.allclose(cost.grad_hamiltonian(p).double(), p)):
                    return None
        except Exception:  # noqa: BLE001 - a cost that cannot be probed so: not the quadratic
            pass
    return (f"The {head!r} head solves the HJ equation of the {' or '.join(solves)} cost only "
            f"(its potential has no network to learn another), not of the cost {cost_name!r}: "
            "its maps are not optimal for it. Use the 'mlp' head (or 'conditional' for classes) "
            "with this cost.")


class HJMap(
    nn.Module,
    ModelHubMixin,
    library_name="hjtranslate",
    tags=["optimal-transport", "hamilton-jacobi", "hjtranslate"],
    repo_url="https://github.com/hjtranslate/hjtranslate",
):
    """Optimal transport map ``T(x) = x + t_f grad H(grad_x u(x, 0))`` and its inverse.

    Inputs are in data units; internally they are standardised by ``(x - shift) / scale`` (a
    common similarity transform, under which OT maps for homogeneous costs are equivariant).
    """

    #: class ids without samples in training (set per map; this default serves maps pickled
    #: whole by versions without it)
    untrained_classes: list[int] = []  # noqa: RUF012 - only ever replaced, never mutated

    # parameters made in an inference block would be inference tensors, which the maps'
    # autograd cannot use; the plugin checks below differentiate too
    @torch.inference_mode(False)
    def __init__(
        self,
        dim: int,
        cost: str = "quadratic",
        cost_kwargs: dict | None = None,
        head: str = "mlp",
        head_kwargs: dict | None = None,
        t_f: float = 1.0,
        num_classes: int | None = None,
        untrained_classes: list | None = None,
        class_names: list | None = None,
        target_class_names: list | None = None,
        encoder: dict | None = None,
        plugin_packages: dict | None = None,
        metrics: dict | None = None,
        hjtranslate_version: str = __version__,  # taken so HJMap(**m.config_dict()) works;
    ) -> None:  # the saved one is checked on loading (from_config_and_weights), not here
        super().__init__()
        self.dim = whole_number("dim", dim, 1)
        self.t_f = real_number("t_f (the time horizon)", t_f)
        self.num_classes = None if num_classes is None else whole_number("num_classes", num_classes, 1)
        self.class_names = class_names
        self.target_class_names = target_class_names
        # class ids that had no samples in training: a conditional head's parts for them are
        # untrained, and the maps refuse them
        self.untrained_classes = sorted({whole_number("untrained_classes", c, 0)
                                         for c in untrained_classes or []})
        self.encoder_config = encoder
        self.metrics = metrics or {}
        cost, given_kwargs = cost_spec(cost)
        self.cost_name, self.cost_kwargs = cost, {**given_kwargs, **dict(cost_kwargs or {})}
        self.head_name = head
        self.cost: Cost = registry.create("cost", cost, **self.cost_kwargs)
        head_kwargs = dict(head_kwargs or {})
        head_kwargs["dim"] = self.dim
        cost_plugin, head_plugin = registry.resolve("cost", cost), registry.resolve("head", head)
        head_cls = head_plugin.obj
        if getattr(head_cls, "conditional", False):
            if self.num_classes is None:
                raise ValueError(f"The conditional head {head!r} needs num_classes (with hjt.fit: "
                             "labels=(source_labels, target_labels)).")
            head_kwargs["num_classes"] = self.num_classes
        wrong_cost = head_cost_mismatch(head_cls, head, self.cost, cost)
        if wrong_cost:  # fit refuses it; a map saved so still loads, with the warning
            warnings.warn(wrong_cost, UserWarning, stacklevel=2)
        params = inspect.signature(head_cls).parameters
        if "t_max" in params and "t_max" not in head_kwargs:
            # a Hopf-Lax part stays a valid (monotone) map only up to t_max: the map's horizon
            head_kwargs["t_max"] = self.t_f
        t_max = head_kwargs.get("t_max")
        if is_real(t_max) and self.t_f > float(t_max) * (1 + 1e-9):
            raise ValueError(f"t_f {self.t_f:g} is past the head's t_max {float(t_max):g}: its "
                             "Hopf-Lax part is a valid map only up to t_max (fit sets t_max to "
                             "t_f; a map trained to one horizon is not read at a later one).")
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(head_kwargs) - set(params))
            required = [a for a in ("dim", "num_classes") if a in unknown]
            if required:
                raise registry.PluginError(
                    f"The head plugin {head!r} ({head_plugin.package}) does not take "
                    f"{' and '.join(required)}: a head's constructor must take dim (the data's "
                    "dimension)" + (" and, being conditional, num_classes" if
                                    "num_classes" in head_kwargs else "") + ", which the map passes.")
            if unknown:
                raise ValueError(f"The {head!r} head takes no option {', '.join(unknown)}; its "
                                 f"options: {', '.join(k for k in params if k != 'dim')}.")
        try:
            self.head: PotentialHead = head_cls(**head_kwargs)
        except (TypeError, ValueError) as exc:  # a plugin's own check of an option's value
            shown = {k: v for k, v in head_kwargs.items() if k not in ("dim", "num_classes")}
            error = registry.PluginError if isinstance(exc, TypeError) else ValueError
            # torch's size errors carry a C++ stack after their first line
            said = str(exc).split("\nException raised from")[0].strip()
            raise error(f"The head plugin {head!r} ({head_plugin.package}) cannot be built with "
                        f"the options {shown}: {said}") from None
        except Exception as exc:
            if head_plugin.builtin:
                raise
            raise registry.PluginError(registry.failed_to_build(head_plugin, exc)) from exc
        self.register_buffer("shift", torch.zeros(self.dim))
        self.register_buffer("scale", torch.ones(()))
        self.plugin_packages = plugin_packages or {
            "cost": cost_plugin.package, "head": head_plugin.package}
        if self.shift.is_meta:  # a loader's dry build (sizes only): nothing to evaluate
            return
        check_cost(self.cost, cost, f"The cost plugin {cost!r} ({cost_plugin.package})", self.dim)
        check_head(self.head, f"The head plugin {head!r} ({head_plugin.package})",
                   self.dim, self.num_classes,
                   {k: head_kwargs[k] for k in ("dim", "num_classes") if k in head_kwargs})

    # -- configuration -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the map computes (as a diffusers model says it)."""
        return self.shift.device

    @property
    def dtype(self) -> torch.dtype:
        """The map's precision: float32, or float64."""
        return self.shift.dtype

    def to(self, *args: Any, **kwargs: Any) -> HJMap:
        """``nn.Module.to``, with a clear error for a CUDA device torch does not see (its own
        said "Found no NVIDIA driver"); other devices are torch's to judge."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and device.type == "cuda" and (
                not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
            raise ValueError(f"HJMap.to({str(device)!r}): torch sees "
                             f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} "
                             "CUDA device(s) here; keep the map on 'cpu' (or name one it sees).")
        return super().to(*args, **kwargs)

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.head, "conditional", False))

    def config_dict(self) -> dict[str, Any]:
        head_kwargs = {
            k: v for k, v in self.head.head_config.items() if k not in ("dim", "num_classes")
        }
        return {
            "dim": self.dim,
            "cost": self.cost_name,
            "cost_kwargs": self.cost.config(),
            "head": self.head_name,
            "head_kwargs": head_kwargs,
            "t_f": self.t_f,
            "num_classes": self.num_classes,
            "untrained_classes": self.untrained_classes,
            "class_names": self.class_names,
            "target_class_names": self.target_class_names,
            "encoder": self.encoder_config,
            "plugin_packages": self.plugin_packages,
            "metrics": self.metrics,
            "hjtranslate_version": __version__,
        }

    def set_normalization(self, shift: torch.Tensor, scale: float | torch.Tensor) -> None:
        self.shift.copy_(torch.as_tensor(shift, dtype=self.shift.dtype).reshape(self.dim))
        self.scale.copy_(torch.as_tensor(scale, dtype=self.scale.dtype))

    # -- potential and maps (standardised coordinates) ----------------------------------
    #: set by the training objective for one step: its labels were checked once by ``fit``, and
    #: a range check reads them back to the host (a GPU synchronisation) at every head call
    _labels_checked = False

    def _labels(self, k: Any, n: int, device: torch.device) -> torch.Tensor | None:
        """The head's class labels (None for a shared potential); a ``k`` given to a shared
        potential is checked as well, though it does not change the map."""
        if k is None:
            if not self.conditional:
                return None
            raise ValueError(
                "This map has a class-conditional head: pass the class of each sample (k=...)."
            )
        k = _class_ids(k, device)
        if k.numel() == 1:
            k = k.expand(n)
        if k.numel() != n:
            raise ValueError(f"Got {k.numel()} class labels for {n} samples.")
        if not self.conditional and not self.num_classes:
            return None  # no classes to check against
        if self._labels_checked:  # a training step's labels, checked by fit once
            return k if self.conditional else None
        if n and (int(k.min()) < 0 or int(k.max()) >= (self.num_classes or 0)):
            raise ValueError(
                f"Class labels must lie in 0..{(self.num_classes or 0) - 1}, got "
                f"{int(k.min())}..{int(k.max())}."
            )
        return k if self.conditional else None

    def _check_trained(self, k: Any, n: int, device: torch.device) -> None:
        """The maps refuse the classes a conditional head was not trained on (fit warned); with
        no samples, only ``k`` itself is checked (a conditional map needs it)."""
        if n and not self.untrained_classes:
            return  # the head's own call checks k: no second pass over it
        k = self._labels(k, n, device)
        if k is None or not n:
            return
        seen = set(torch.unique(k).tolist()) & set(self.untrained_classes)
        if seen:
            raise ValueError(
                f"Class {min(seen)} had no samples when this map was trained (untrained classes: "
                f"{', '.join(map(str, self.untrained_classes))}): its part of the conditional "
                "head is untrained. Map the trained classes, or fine-tune with samples of it "
                "(hjt.fit(..., labels=..., init_from=this_map)).")

    def _head_args(self, z: torch.Tensor, t: float | torch.Tensor, k: Any) -> tuple:
        """A head's arguments ``(z, t, k)``: times as a column, labels checked."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must be a tensor of shape (n, {self.dim}) (standardised "
                             f"coordinates), got {tuple(getattr(z, 'shape', ())) or type(z).__name__}.")
        if isinstance(t, (int, float)):  # made on the device: no copy from the host
            t = z.new_full((1, 1), float(t))
        else:
            t = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(-1, 1)
        return z, t.expand(z.shape[0], 1), self._labels(k, z.shape[0], z.device)

    def potential(self, z: torch.Tensor, t: float | torch.Tensor, k: Any = None) -> torch.Tensor:
        """``u(z, t)`` in standardised coordinates."""
        return self.head(*self._head_args(z, t, k))

    def momentum(
        self, z: torch.Tensor, t: float | torch.Tensor, k: Any = None, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u(z, t), grad_z u(z, t))`` in standardised coordinates. Without ``create_graph``
        neither carries a graph, and a head with a closed-form ``momentum`` skips autograd."""
        closed_form = getattr(self.head, "momentum", None)
        if closed_form is not None and not create_graph:
            with torch.no_grad():
                return closed_form(*self._head_args(z, t, k))
        # under torch.inference_mode() too: the maps need autograd for grad_z u
        with torch.inference_mode(False), torch.enable_grad():
            # an inference tensor (z, or the labels) cannot join a graph; its clone can
            z, t, k = (a.clone() if isinstance(a, torch.Tensor) and a.is_inference() else a
                       for a in self._head_args(z, t, k))
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            u = self.head(z, t, k)
            (p,) = torch.autograd.grad(u.sum(), z, create_graph=create_graph)
        return (u, p) if create_graph else (u.detach(), p)

    def velocity(
        self, z: torch.Tensor, t: float, k: Any = None, create_graph: bool = False
    ) -> torch.Tensor:
        return self.cost.grad_hamiltonian(self.momentum(z, t, k, create_graph)[1])

    def _check(self, x: torch.Tensor, what: str) -> torch.Tensor:
        x = as_sample_tensor(x, what, f"(n, {self.dim})")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{what} must have shape (n, {self.dim}); got {tuple(x.shape)}. "
                f"This map was trained in dimension {self.dim}."
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} contains NaN or Inf values.")
        if self.shift.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"This map is in {str(self.shift.dtype).removeprefix('torch.')}: it "
                             "runs in float32 or float64 (its per-class quadratic part solves "
                             "linear systems, and its gradients need the precision); call "
                             ".float() on it.")
        converted = x.to(self.shift.device, self.shift.dtype)
        if converted.dtype != x.dtype and not torch.isfinite(converted).all():
            raise ValueError(f"{what} holds values beyond the range of this map's "
                             f"{str(self.shift.dtype).removeprefix('torch.')} (largest |value| "
                             f"{float(x.abs().max()):.3g}): they would map to NaN.")
        return converted

    def _warn_non_finite(self, out: torch.Tensor, what: str) -> None:
        """Finite inputs far outside the data the map learnt (|x| ~ 1e38 in float32) overflow
        inside the potential's network: say so rather than hand back NaN in silence."""
        bad = ~torch.isfinite(out.detach()).reshape(len(out), -1).all(dim=1)
        if bad.any():
            warnings.warn(f"{int(bad.sum())} of {len(out)} {what} came out NaN or Inf: their "
                          "inputs lie far outside the data this map was trained on (an "
                          "overflow inside its potential).", RuntimeWarning,
                          stacklevel=registry._outside_package())

    def _map(self, x: torch.Tensor, k: Any, t0: float, sign: float, what: str, grad: bool):
        x = self._check(x, what)
        self._check_trained(k, len(x), x.device)
        if len(x) == 0:  # nothing to move
            return x.clone()
        z = (x - self.shift) / self.scale
        v = self.velocity(z, t0, k, create_graph=grad)
        out = x + sign * self.t_f * self.scale * v
        self._warn_non_finite(out, "mapped samples")
        return out if grad else out.detach()

    def forward(self, x: torch.Tensor, k: Any = None, create_graph: bool = False) -> torch.Tensor:
        """Forward map ``T(x) = x + t_f grad H(grad_x u(x, 0))`` (source to target). ``k``: the
        class of each sample (or one for all) for a conditional map; ``create_graph=True``
        keeps the graph, to differentiate through the map."""
        return self._map(x, k, 0.0, 1.0, "x", create_graph)

    def backward(self, y: torch.Tensor, k: Any = None, create_graph: bool = False) -> torch.Tensor:
        """Backward map ``T^-1(y) = y - t_f grad H(grad_y u(y, t_f))`` (target to source);
        ``k`` and ``create_graph`` as in :meth:`forward`."""
        return self._map(y, k, self.t_f, -1.0, "y", create_graph)

    def interpolate(
        self, x: torch.Tensor, ts: Sequence[float] | torch.Tensor, k: Any = None
    ) -> torch.Tensor:
        """Displacement interpolation ``x(t) = x + t grad H(grad_x u(x, 0))``: shape
        ``(len(ts), n, dim)``. ``ts`` are times in ``[0, t_f]``."""
        x = self._check(x, "x")
        try:
            ts = torch.as_tensor(ts, dtype=x.dtype, device=x.device)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"ts must be numbers (times in [0, t_f={self.t_f}]), got "
                             f"{type(ts).__name__}.") from None
        if ts.ndim > 1:
            raise ValueError(f"ts must be one time or a flat sequence of times, got shape "
                             f"{tuple(ts.shape)}.")
        ts = ts.reshape(-1)
        bad = ts[~((ts >= 0) & (ts <= self.t_f + 1e-9))]  # NaN fails both
        if len(bad):
            raise ValueError(f"Interpolation times must lie in [0, t_f={self.t_f}], got "
                             f"{float(bad[0]):g}.")
        self._check_trained(k, len(x), x.device)
        if len(x) == 0:
            return x.new_zeros(len(ts), 0, self.dim)
        z = (x - self.shift) / self.scale
        v = self.velocity(z, 0.0, k).detach()
        self._warn_non_finite(v, "samples' velocities")
        return (x[None] + ts[:, None, None] * self.scale * v[None]).detach()

    def transport_cost(self, x: torch.Tensor, k: Any = None) -> torch.Tensor:
        """Per-sample cost ``c(x, T(x))`` in data units."""
        x = self._check(x, "x")
        return self.cost.cost(x, self.forward(x, k), self.t_f)

    # -- saving and loading ----------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with written_whole(save_directory / WEIGHTS_NAME) as tmp:  # never through a link
            save_file(state, str(tmp), metadata={"format": "pt"})
        text = json.dumps(self.config_dict(), sort_keys=True, indent=2)
        with written_whole(save_directory / CONFIG_NAME) as tmp:
            tmp.write_text(text + "\n")

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> str | None:  # type: ignore[override]
        """Write ``config.json``, ``model.safetensors`` and a model card into a folder."""
        self._hub_mixin_config = self.config_dict()
        from .modelcard import write_model_card

        save_directory = Path(save_directory)
        pushed = {"repo_id", "private", "revision", "branch", "commit_message", "token"}
        unknown = sorted(set(kwargs) - {"push_to_hub", "model_card_kwargs"}
                         - (pushed if kwargs.get("push_to_hub") else set()))
        if unknown:  # a misspelt keyword (push_to_hbu=True) would pass unnoticed
            raise TypeError(f"HJMap.save_pretrained got unknown keyword arguments {unknown}; it "
                            "takes model_card_kwargs and push_to_hub (with repo_id, private, "
                            "revision or branch, commit_message and token).")
        if kwargs.get("push_to_hub") and not kwargs.get("repo_id"):
            # huggingface_hub would name the repo after the folder: every run's map/ alike
            raise ValueError("save_pretrained(..., push_to_hub=True) needs repo_id='user/name': "
                             "the repo is not named after the folder.")
        check_folder_path(save_directory, "save_directory")
        # a run's or a pipeline's own config.json / README would be replaced by the map's
        if is_run_folder(save_directory) or (save_directory / PIPELINE_INDEX_FILE).is_file():
            raise ValueError(f"{save_directory} is a training run or pipeline folder: save the map "
                             f"into its map/ subfolder ({save_directory / 'map'}) or a new folder.")
        replaced = [n for n in (MAP_FILES | {"README.md"}) if (save_directory / n).exists()]
        if replaced and not is_map_folder(save_directory):
            raise ValueError(f"{save_directory} holds {', '.join(sorted(replaced))} and is not a "
                             "map's folder: saving would replace them. Save the map into a new "
                             "or empty folder, or an earlier map's.")
        try:
            save_directory.mkdir(parents=True, exist_ok=True)
            self._save_pretrained(save_directory)
        except Exception as exc:  # PermissionError, or safetensors' SafetensorError wrapping one
            if not (isinstance(exc, PermissionError) or "Permission denied" in str(exc)
                    or "Operation not permitted" in str(exc)):
                raise
            raise PermissionError(f"Cannot write the map into {save_directory} ({exc}): name a "
                                  "folder this process can write to.") from None
        shared_as_umask_says(save_directory / WEIGHTS_NAME)
        card_kwargs = kwargs.pop("model_card_kwargs", None) or {}
        write_model_card(save_directory, self.config_dict(), repo_id=card_kwargs.get("repo_id"),
                         name=card_kwargs.get("name"), pipeline=card_kwargs.get("pipeline"))
        if kwargs.pop("push_to_hub", False):
            return self.push_to_hub(kwargs.pop("repo_id"), **kwargs)
        return None

    def push_to_hub(  # type: ignore[override]
        self, repo_id: str, *, private: bool | None = None, revision: str | None = None,
        branch: str | None = None, commit_message: str | None = None,
        token: str | bool | None = None, **kwargs: Any,
    ) -> str:
        """Publish the map to ``repo_id`` (``user/name``) as one commit, with the checks and the
        file handling of `hjtranslate push` (:func:`hjtranslate.hub.push_folder`): the repo is
        created if needed, ``revision`` (or huggingface_hub's ``branch``) is created from main,
        and the card loads the repo. Returns the commit URL (a ``CommitInfo``)."""
        from .hub import push_saved

        kwargs.pop("model_card_kwargs", None)  # the card is written for the repo
        if kwargs:
            raise TypeError(f"HJMap.push_to_hub got unknown keyword arguments {sorted(kwargs)}; "
                            "it takes private, revision (or branch), commit_message and token.")

        def save(folder: Path) -> Path:
            self.save_pretrained(folder)
            return folder

        return push_saved(save, repo_id, what="map", private=bool(private), revision=revision,
                          branch=branch, token=token,
                          commit_message=commit_message or "Upload hjtranslate HJMap")

    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ) -> HJMap:
        weights = resolve_file(
            model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
        )
        model_kwargs.pop("config", None)
        return cls.from_config_and_weights(model_kwargs, weights, map_location)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> HJMap:  # type: ignore[override]
        """Load a map from a local folder or a Hub repo id (``revision=``, ``cache_dir=``,
        ``force_download=``, ``local_files_only=``, ``token=``, ``HF_HUB_OFFLINE=1`` work as in
        huggingface_hub); ``map_location``: the device to load it on.
        ``subfolder=``: the map's folder inside the folder or repo, e.g. ``"map"`` for the map
        of a saved pipeline or training run (without downloading the pipeline's other parts).
        ``torch_dtype=`` (diffusers' name) or ``dtype=``: its precision, float32 or float64."""
        model_id = str(pretrained_model_name_or_path)
        if model_id.startswith("~"):  # as the pipeline reads it: a path, never a repo id
            model_id = os.path.expanduser(model_id)
        own = ("map_location", "subfolder", "torch_dtype", "dtype")
        unknown = sorted(set(kwargs) - set(_HUB_KW) - set(own))
        if unknown:  # a misspelt revision, or device= for map_location=, would pass unnoticed
            hint = " (the device is map_location=)" if "device" in unknown else ""
            raise TypeError(f"HJMap.from_pretrained got unknown keyword arguments {unknown}{hint}; "
                            f"it takes {', '.join(own + _HUB_KW)}.")
        dtypes = {check_dtype(kwargs[k]) for k in ("torch_dtype", "dtype") if kwargs.get(k) is not None}
        if len(dtypes) > 1:
            raise ValueError(f"dtype={kwargs['dtype']} and torch_dtype={kwargs['torch_dtype']} "
                             "disagree: pass one.")
        subfolder = kwargs.get("subfolder") or None
        if isinstance(subfolder, os.PathLike):
            subfolder = os.fspath(subfolder)
        if subfolder is not None and (not isinstance(subfolder, str) or Path(subfolder).is_absolute()
                                      or ".." in Path(subfolder).parts):
            raise ValueError(f"subfolder must be a relative folder name inside the map's folder or "
                             f"repo (e.g. 'map'), got {subfolder!r}.")
        if subfolder is not None:  # "map/" or "./map": the Hub's path is "map/config.json"
            subfolder = Path(subfolder).as_posix().strip("/")
            subfolder = None if subfolder in ("", ".") else subfolder
        # token=False is kept: it keeps a saved token from being sent
        hub = {k: kwargs[k] for k in _HUB_KW
               if kwargs.get(k) is not None and (kwargs[k] is not False or k == "token")}
        given = sorted(k for k, v in hub.items() if v is not False)
        if given and os.path.isdir(model_id):
            warnings.warn(f"{model_id} is a local folder, which is loaded; {', '.join(given)} "
                          "apply to Hub repos only and are ignored (move or rename the folder to "
                          "load the Hub repo of that name).", stacklevel=2)
        config_file = resolve_file(model_id, CONFIG_NAME, subfolder, **hub)
        config = read_json_object(config_file, _REDO_MAP)
        local = Path(model_id, subfolder or "")
        if "dim" not in config and local.is_dir() and Path(local, "map", CONFIG_NAME).is_file():
            raise _run_folder_error(str(local))
        _check_describes_a_map(config, config_file)
        snapshot = Path(config_file).parents[len(Path(subfolder).parts) if subfolder else 0]
        if not os.path.isdir(model_id) and re.fullmatch("[0-9a-f]{40}", snapshot.name):
            # the weights of the same commit: a push between the two downloads must not pair
            # this config with the next commit's weights
            hub = {**hub, "revision": snapshot.name}
        weights = resolve_file(model_id, WEIGHTS_NAME, subfolder, **hub)
        return cls.from_config_and_weights(config, weights, kwargs.get("map_location", "cpu"),
                                           dtype=dtypes.pop() if dtypes else None)

    @classmethod
    def from_config_and_weights(
        cls, config: dict[str, Any], weights: str | Path, map_location: str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> HJMap:
        """The map a config and weights file describe, checked part by part; ``dtype``: its
        precision, set before the weights are copied in (float64 weights stay exact)."""

        saved = str(config.get("hjtranslate_version") or "0")
        refuse_newer(saved, "checkpoint")
        wrong = [f"{key} {config[key]!r}" for key, kinds in _CONFIG_TYPES.items()
                 if config.get(key) is not None and not isinstance(config[key], kinds)]
        if wrong:  # they reach the registry and the pipeline, which would fail deep inside
            raise CheckpointError(f"The config.json beside {weights} holds {', '.join(wrong)} "
                                  f"(of the wrong kind): it was edited or damaged. {_REDO_MAP}")
        packages = config.get("plugin_packages") or {}
        for kind in ("cost", "head"):
            name = config.get(kind, "quadratic" if kind == "cost" else "mlp")
            missing = registry.missing_plugin(kind, name, packages.get(kind))
            if missing:
                raise CheckpointError(missing)
        _check_describes_a_map(config, weights)
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        kwargs = {k: v for k, v in config.items() if k in known}
        _check_sizes(cls, kwargs, weights)
        try:
            model = cls(**kwargs)
        except registry.PluginError:
            raise  # names the plugin at fault; upgrading hjtranslate would not help
        except TypeError as exc:
            raise CheckpointError(f"The config does not describe an HJMap: {exc}") from None
        except ValueError as exc:  # a setting this version does not know
            # a newer version's config was refused above: this one was edited or damaged
            raise CheckpointError(
                f"The config.json beside {weights} does not build a map (hjtranslate {saved} "
                f"wrote it, and this is {__version__}: it was edited or damaged): {exc} "
                f"{_REDO_MAP}"
            ) from None
        check_device(map_location, "map_location")
        state = load_safetensors(weights, _REDO_MAP, device=str(map_location))
        bad = non_finite_tensors(state.items())
        if bad:  # a damaged file, or a training that diverged: every map it gives is NaN
            raise CheckpointError(f"The weights in {weights} hold NaN or infinite values ({bad}): "
                                  "the file is damaged (download or copy it again), or its "
                                  "training diverged (train it again, e.g. with a lower --lr).")
        if dtype is not None:
            model = model.to(dtype)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines()[1:])
            raise CheckpointError(
                f"The weights in {weights} do not match the architecture in its config.json "
                f"(strict loading): {detail[:400]}{' ...' if len(detail) > 400 else ''}"
                + _changed_plugins(config)) from None
        return model.to(map_location).eval()


_REDO_MAP = "Save the map again (save_pretrained) or download it again."

#: what a map's config.json keys must hold, where present (the others are checked as the map
#: is built; the encoder record is its plugin's own, any JSON)
_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "cost": str, "head": str, "plugin_packages": dict, "cost_kwargs": dict, "head_kwargs": dict,
    "metrics": dict, "class_names": list, "target_class_names": list,
    "untrained_classes": list}


def _check_sizes(cls: type, kwargs: dict[str, Any], weights: str | Path) -> None:
    """Refuse a config whose map would not have the weights file's tensor shapes before the map
    is built (:func:`dry_build_misfit`); where that cannot be judged (a head that does not build
    on the meta device, a damaged file), the full build and the strict loading judge as before."""
    saved = safetensors_shapes(weights)
    if saved is None:  # a damaged file: the loading names it
        return
    if "shift" not in saved:  # every map has one: a file without it holds no map's weights
        raise CheckpointError(f"The weights in {weights} are not a map's (no 'shift' tensor): "
                              f"it was renamed, edited or damaged. {_REDO_MAP}")
    if saved["shift"] != (kwargs.get("dim"),):  # (dim,)
        raise CheckpointError(
            f"The weights in {weights} are a {saved['shift'][0] if saved['shift'] else '?'}-d "
            f"map's and its config.json says dim {kwargs.get('dim')!r}: it was edited or "
            f"damaged. {_REDO_MAP}")
    # the names both hold: a plugin's load_state_dict hooks may rename keys of an older release
    # (missing and extra names are the strict loading's to judge)
    misfit = dry_build_misfit(lambda: cls(**kwargs), saved)
    if misfit:
        raise CheckpointError(
            f"The weights in {weights} do not match the architecture in its config.json "
            f"(strict loading, checked before building it): {misfit}"
            + (_changed_plugins(kwargs) or f": it was edited or damaged. {_REDO_MAP}"))


def _changed_plugins(config: dict[str, Any]) -> str:
    """Where weights do not fit their config: a note naming the third-party cost or head plugin
    whose installed version is not the one the map was saved with ("" when none is)."""
    packages = config.get("plugin_packages") or {}
    changed = []
    for kind in ("cost", "head"):
        name = config.get(kind, "quadratic" if kind == "cost" else "mlp")
        saved = packages.get(kind)
        if not saved or str(saved).split()[0] == "hjtranslate":
            continue
        try:
            now = registry.resolve(kind, name).package
        except registry.PluginError:
            continue
        if now != saved:
            changed.append(f"the {kind} plugin {name!r} was saved with {saved} and {now} is "
                           "installed")
    return f" ({'; '.join(changed)}: install the version it was saved with.)" if changed else ""


def describes_a_map(config: dict[str, Any]) -> bool:
    """Whether a config.json is an hjtranslate map's: its dimension, cost and head (another
    library's config may have a ``dim`` too: DistilBERT's does)."""
    return "dim" in config and "cost" in config and "head" in config


def _check_describes_a_map(config: dict[str, Any], near: str | Path) -> None:
    if not describes_a_map(config) and isinstance(config.get("task"), str):
        run = Path(near).parent  # a run's record: its map is written into map/ when it ends
        if hub_cache_blobs(run) is not None:  # a Hub repo's snapshot: only what was fetched is here
            raise CheckpointError(f"The repo holds a `hjtranslate train {config['task']}` run's "
                                  "folder, not a map at its top: load its map with "
                                  "subfolder=\"map\".")
        unfinished = "" if (run / "map").is_dir() else (
            f", which is not written yet: the run is unfinished (`hjtranslate train {config['task']} "
            f"--output-dir {run} --resume` trains it on and writes it)")
        raise CheckpointError(f"{run} is the folder of a `hjtranslate train {config['task']}` "
                              f"run, not a map: its map is {run / 'map'}{unfinished}.")
    if not describes_a_map(config):
        kind = (config.get("_class_name") or config.get("architecture")
                or ", ".join(map(str, config.get("architectures") or [])) or config.get("model_type")
                or ("no 'dim'" if "dim" not in config else "no 'cost' and 'head'"))
        raise CheckpointError(f"The config next to {near} does not describe an hjtranslate map "
                              f"({kind}): pass the folder of a map saved by save_pretrained.")
_HUB_KW = ("revision", "cache_dir", "force_download", "local_files_only", "token")


def _run_folder_error(folder: str) -> CheckpointError:
    return CheckpointError(f"{folder} is a training run or pipeline folder: its map is "
                           f"{Path(folder, 'map')}.")


def resolve_file(model_id: str, filename: str, subfolder: str | None = None, **hub_kwargs: Any) -> str:
    """Path of ``filename`` in a local folder or a Hub repo (downloaded to the cache)."""
    if os.path.isdir(model_id):
        path = Path(model_id, subfolder or "", filename)
        if not path.is_file():
            pickles = [
                p.name for p in Path(model_id, subfolder or "").glob("*")
                if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")
            ]
            if filename.endswith(".safetensors") and pickles:
                raise CheckpointError(
                    f"{path.parent} holds only pickle checkpoints ({', '.join(pickles)}); "
                    "hjtranslate loads safetensors only, since unpickling can run arbitrary code. "
                    "Convert the weights with safetensors.torch.save_file."
                )
            if not subfolder and Path(model_id, "map", filename).is_file():
                raise _run_folder_error(model_id)
            if why := unusable_file(path):
                raise CheckpointError(f"{why}: is {path.parent} a saved hjtranslate map?")
            raise CheckpointError(f"{path} is missing: is {path.parent} a saved hjtranslate map?")
        return str(path)
    if os.path.isfile(model_id):
        raise CheckpointError(f"{model_id} is a file: pass the folder that holds the map's "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME}.")
    if os.path.lexists(model_id):  # a link that leads nowhere: not a Hub id either
        raise CheckpointError(f"{model_id} {missing_reason(model_id)}: pass the folder that holds "
                              f"the map's {CONFIG_NAME} and {WEIGHTS_NAME}.")
    if os.path.sep in model_id and not model_id.count("/") == 1 or model_id.startswith("."):
        raise CheckpointError(f"No such folder: {model_id}")
    if "/" not in model_id:  # a Hub id has the form user/name: this is a missing local folder
        raise CheckpointError(f"No such folder: {model_id} (in {Path.cwd()}); a Hub id would "
                              "read user/name.")
    from huggingface_hub import constants

    # user/name whose "user" is a local folder: likely a mistyped local path
    local_looking = Path(model_id).parent.is_dir()
    if local_looking and not (hub_kwargs.get("local_files_only") or constants.HF_HUB_OFFLINE):
        # say so before huggingface_hub's retries (about 25 s where the Hub resolves but does not answer)
        warnings.warn(f"There is no local folder {Path(model_id).absolute()}: looking for a Hub "
                      f"repo {model_id!r} instead (HF_HUB_OFFLINE=1 skips the network).",
                      stacklevel=3)
    try:
        return _hub_file(model_id, filename, subfolder, **hub_kwargs)
    except CheckpointError as exc:
        if not local_looking:
            raise
        raise CheckpointError(f"There is no local folder {Path(model_id).absolute()}, and as a "
                              f"Hub id: {as_hub_id(exc)}") from None


def as_hub_id(exc: BaseException) -> str:
    """The Hub's half of a "neither a local folder nor a Hub repository" error, for a message
    that names the local folder itself."""
    return str(exc).replace("is neither a local folder nor a ", "is not a ")


def _hub_file(model_id: str, filename: str, subfolder: str | None, **hub_kwargs: Any) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import HFValidationError

    hub_kwargs = {k: v for k, v in hub_kwargs.items() if v is not None}
    try:
        refuse_offline_force_download(bool(hub_kwargs.get("force_download")), f"{filename} of {model_id!r}")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    unreachable = hub_unreachable(bool(hub_kwargs.get("local_files_only")))
    if unreachable and hub_kwargs.get("force_download"):
        raise CheckpointError(f"force_download: {filename} of {model_id!r} cannot be downloaded "
                              f"({unreachable}).")
    asked_local = bool(hub_kwargs.get("local_files_only")) and not unreachable
    if unreachable:
        hub_kwargs["local_files_only"] = True
    try:
        try:
            return hf_hub_download(model_id, filename, subfolder=subfolder, **hub_kwargs)
        except ValueError as exc:  # force_download: the Hub's answer comes wrapped
            if isinstance(exc, HFValidationError) or exc.__cause__ is None:
                raise
            raise exc.__cause__ from None
    except HFValidationError:
        raise CheckpointError(f"{model_id!r} is neither a local folder nor a valid Hub repo id "
                              "(user/name).") from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{model_id!r} is neither a local folder nor a Hub repository that exists "
            "(or you lack access to it)."
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(
            f"Revision {hub_kwargs.get('revision')!r} does not exist in {model_id!r}."
        ) from None
    except LocalEntryNotFoundError as exc:  # a subclass of EntryNotFoundError: catch it first
        if asked_local:
            raise CheckpointError(
                f"{filename} of {model_id!r} is not in the local cache, and local_files_only=True "
                "kept it from being downloaded: drop local_files_only, or pass a local folder."
            ) from None
        cause = exc.__cause__ or exc.__context__
        why = (f" ({unreachable})" if unreachable else
               f" (the Hub's answer: {str(cause).strip().splitlines()[0]})"
               if cause is not None and str(cause).strip() else "")
        raise CheckpointError(
            f"{filename} of {model_id!r} is not in the local cache and the Hub cannot be reached"
            f"{why or ' (offline mode?)'}. Download it once while online, or pass a local folder."
        ) from None
    except EntryNotFoundError:
        hint = (f" If it is a translation pipeline, load TranslationPipeline.from_pretrained("
                f"{model_id!r}); its map is the pipeline's .map." if filename == CONFIG_NAME else "")
        if not hub_kwargs.get("revision"):  # a push to a branch leaves main without the map
            hint += " If the map was pushed to a branch, pass revision='BRANCH'."
        where = f" at revision {hub_kwargs['revision']!r}" if hub_kwargs.get("revision") else ""
        raise CheckpointError(f"{model_id!r}{where} has no file {filename!r}.{hint}") from None
    except HfHubHTTPError as exc:
        raise CheckpointError(f"Could not download {filename} of {model_id!r}: {exc}"
                              f"{hub_refusal_advice(exc)}") from None
    except network_errors(os_errors=False) as exc:  # e.g. force_download, server down
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"Could not download {filename} of {model_id!r} ({first}): check the "
                              "network and HF_ENDPOINT, or pass a local folder.") from None
