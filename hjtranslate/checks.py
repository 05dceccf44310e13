"""Argument checks shared by the API, the map and training: numbers given as Python or numpy
numbers, or one-element tensors, with a clear error naming the argument otherwise."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import numbers
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch


def is_int(value: Any) -> bool:
    """An int or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A Python or numpy real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def scalar(value: Any) -> Any:
    """A one-element tensor as its Python number; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        return value.item()
    return value


def real_number(name: str, value: Any) -> float:
    """``value`` (a Python or numpy number, or a one-element tensor) as a finite float > 0."""
    value = scalar(value)
    if not is_real(value) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def whole_number(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int when it is a whole number (``1e4``, numpy ints and one-element
    tensors included) in ``[low, high]``; a clear error naming ``name`` otherwise (2.5 is not
    silently truncated)."""
    value = scalar(value)
    if not is_real(value) or not math.isfinite(value) or value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bound}, got {value}.")
    return value


def check_folder_path(path: Path, flag: str) -> None:
    """A clear error, before any work, when the folder ``path`` cannot be made: it is a file, or
    lies under one (``mkdir`` would fail late with "Not a directory")."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under {p}, which is a file"
                raise NotADirectoryError(f"{flag} {path} {where}: name a folder.")
            return


def parse_device(value: Any, name: str = "device") -> torch.device:
    """``value`` as a ``torch.device``, or a clear error naming the argument."""
    try:
        return torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}={value!r} is not a device: use 'cpu', 'cuda', 'cuda:0', 'mps', "
                         "... or a torch.device.") from None


def check_dtype(dtype: Any) -> torch.dtype:
    """The map's dtype: float32 or float64 (as a torch dtype or its name). Half precision
    cannot run the heads' matrix inverses on the CPU."""
    named = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if named not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64 (the map's precision), "
                         f"got {dtype!r}.")
    return named


def check_device(value: Any, name: str = "device") -> torch.device:
    """A device that can compute here, or a clear error naming the argument (a bad one used to
    surface as a damaged weights file, or as torch's own assertion)."""
    device = parse_device(value, name)
    shown = f"{name}={str(device)!r}"
    if device.type == "meta":
        raise ValueError(f"{shown} holds no values, so it cannot compute: use 'cpu' or 'cuda'.")
    if device.type == "cpu" and device.index not in (None, 0):
        raise ValueError(f"{shown}: there is one CPU device, 'cpu'.")
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    if device.type not in ("cpu", "cuda") and not (
            callable(getattr(backend, "is_available", None)) and backend.is_available()):
        raise ValueError(f"{shown}, but this torch build has no usable {device.type} device here: "
                         f"use {name}='cpu' (or 'cuda').")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{shown}, but torch sees no CUDA device here: use {name}='cpu'.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{shown}, but torch sees {torch.cuda.device_count()} CUDA device(s) "
                         f"here: use 'cuda:0' ... or {name}='cpu'.")
    return device


def network_errors(os_errors: bool = True) -> tuple[type[BaseException], ...]:
    """The exception types a failed Hub call raises (the HTTP library depends on the version);
    without ``os_errors`` only a refused or dropped connection among the OSErrors (a download's
    full disk or read-only cache is no network's fault)."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[BaseException]] = [HfHubHTTPError, OSError if os_errors else ConnectionError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        for name in ("HTTPError", "RequestException"):
            if isinstance(getattr(mod, name, None), type):
                errors.append(getattr(mod, name))
    return tuple(errors)


def hub_refusal_advice(exc: BaseException) -> str:
    """What to do about a Hub download's HTTP error: for a refused token (401), how to send
    another or none ("Invalid credentials" alone named no token)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return (" The Hub refused the token sent: log in again (`hf auth login`) or set HF_TOKEN "
                "to a valid one; a public repo also loads with token=False (no token sent).")
    return ""


def refuse_offline_force_download(force_download: bool, what: str) -> None:
    """force_download asks for a fresh download, which HF_HUB_OFFLINE=1 forbids: an error, not
    the cached copy it was asked to replace (nor huggingface_hub's OfflineModeIsEnabled)."""
    from huggingface_hub import constants

    if force_download and constants.HF_HUB_OFFLINE:
        raise ValueError(f"force_download: {what} cannot be downloaded with HF_HUB_OFFLINE=1. Unset "
                         "HF_HUB_OFFLINE to download it again, or drop force_download to load the "
                         "copy in the cache.")


def hub_unreachable(local_files_only: bool = False) -> str | None:
    """Why the Hub cannot be reached at all, or None. huggingface_hub retries a failed lookup
    for about 25 s before it falls back to its local cache; where the Hub's host name does not
    even resolve (no network), callers go to the cache at once (``local_files_only=True``).
    None too where the Hub is not asked anyway (``local_files_only``, ``HF_HUB_OFFLINE``)."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if local_files_only or constants.HF_HUB_OFFLINE:
        return None
    parts = urlsplit(constants.ENDPOINT)
    host = parts.hostname
    if not host:
        return None
    proxies = urllib.request.getproxies()  # *_PROXY variables (as httpx reads them)
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return None  # a proxy resolves the name: a local lookup proves nothing
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return f"the Hub's host {host} does not resolve: no network?"
    return None


_UMASK_LOCK = threading.Lock()


def shared_as_umask_says(folder: str | Path, recursive: bool = False) -> None:
    """Give the ``*.safetensors`` files just written in ``folder`` (or that file; ``recursive``:
    in its subfolders too, for a folder this process made) the mode every other file written
    here gets from the umask (0644 by default). safetensors 0.8 writes its files readable by
    their owner alone (0600), so a model saved on a shared machine would not load for another
    user, nor for an app served under another account."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        umask = os.umask(0o077)
        os.umask(umask)
    path = Path(folder)
    found = [path] if path.is_file() else (
        path.rglob("*.safetensors") if recursive else path.glob("*.safetensors"))
    for f in found:
        if f.is_file() and not f.is_symlink():
            try:
                f.chmod(0o666 & ~umask)
            except OSError:  # another user's file: left as it is
                pass


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in the kernel's clock ticks since boot (Linux's /proc):
    what tells it from a later process given the same pid. None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted from the state (field 3)
    except (OSError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (one of another user counts): what tells a killed writer's
    leftovers from a live writer's files."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


@contextlib.contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A new temporary file beside ``path`` to write to (same suffix, so writers pick the format
    from it); renamed to ``path`` once written: a kill leaves the earlier file or none, never
    part of one. The name is new and random (a link planted at a fixed name would be written
    through), and the rename replaces a link at ``path`` rather than writing into its target."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=f".tmp{path.suffix}",
                                dir=path.parent)  # (a long name's stem cut: 255 bytes at most)
    os.close(fd)
    tmp = Path(name)
    shared_as_umask_says(tmp)  # mkstemp makes it 0600; a plain write gets the umask's mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def hub_cache_blobs(folder: Path) -> Path | None:
    """The ``blobs/`` folder of the Hugging Face cache repo (``models--user--name/``) whose
    snapshot holds ``folder`` (its files are links into it), else None; a ``blobs`` that is
    itself a link is no cache's (a folder from a stranger could link it anywhere)."""
    for parent in (folder.resolve(), *folder.resolve().parents):
        repo = parent.parent.parent
        if (parent.parent.name == "snapshots" and repo.name.startswith(("models--", "datasets--",
                                                                          "spaces--"))
                and (repo / "blobs").is_dir() and not (repo / "blobs").is_symlink()):
            return repo / "blobs"
    return None


def missing_reason(path: str | Path) -> str:
    """Why ``path`` is no regular file or folder: the words that end an error message. A link
    loop, a broken link or a link to a device (/dev/zero) would otherwise read as a plain
    "missing" to someone looking at a name they can see in the folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a loop of symbolic links (a link that leads back to itself)"
        if os.path.islink(path):
            return f"is a broken link (to {os.readlink(path)}, which does not exist)"
        return "does not exist"
    kind = ("a folder" if stat.S_ISDIR(mode) else "a file" if stat.S_ISREG(mode)
            else "not a regular file or folder (a device, a pipe or a socket)")
    return f"is a link to {os.readlink(path)}, {kind}" if os.path.islink(path) else f"is {kind}"


def unusable_file(path: str | Path) -> str | None:
    """``"PATH is ..."`` where a name is in its folder and is no regular file (a link loop, a
    broken link, a link to /dev/zero, a folder), for the error of a loader that needs the file;
    None where it is a file, or absent (the loader's own "missing" message fits)."""
    if os.path.lexists(path) and not os.path.isfile(path):
        return f"{path} {missing_reason(path)}"
    return None


def resolved(path: Path) -> Path | None:
    """``path`` with links followed, or None where they loop (``Path.resolve`` raises
    RuntimeError for a loop up to Python 3.12, OSError from 3.13)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return None


def stays_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, a file or folder under ``root``, is one with links followed: a regular
    file or folder inside ``root`` (or, in a Hub cache snapshot, a file of its repo's blobs/).
    A folder from a stranger can link a secret (a token, a key) or a device (/dev/zero) into a
    model's folder: saving or publishing it again must not copy what such links reach."""
    real = resolved(path)
    if real is None or not (real.is_file() or real.is_dir()):
        return False  # a device, a pipe, a dangling link, a loop
    if real.is_relative_to(root.resolve()):
        return True
    blobs = hub_cache_blobs(root)
    return blobs is not None and real.is_file() and real.parent == blobs.resolve()


def write_json_atomically(path: Path, value: Any) -> None:
    """``path`` holds the whole JSON or what it held before, never a part (temp file, rename)."""
    with written_whole(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))


#: the largest settings file read (a model's config.json is a few kB): a file linked to a
#: device (/dev/zero) or a huge one is refused unread
MAX_SETTINGS_BYTES = 16 * 2**20


def settings_text(path: Path) -> str:
    """The text of a JSON settings file; OSError where it is not a regular file of at most
    ``MAX_SETTINGS_BYTES``."""
    if not path.is_file():
        raise FileNotFoundError(f"not a regular file: {path}")
    if path.stat().st_size > MAX_SETTINGS_BYTES:
        raise OSError(f"{path.stat().st_size:,} bytes, more than a settings file holds")
    return path.read_text()


def folder_config(folder: str | Path) -> dict[str, Any]:
    """A folder's config.json as a dict ({} when it has none that reads as one)."""
    try:
        config = json.loads(settings_text(Path(folder, "config.json")))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]] | None:
    """The tensor shapes a safetensors file's header lists (nothing else is read); None where
    the header does not read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception:  # noqa: BLE001 (safetensors, OSError: the loading that follows names it)
        return None


class _TooManyTensors(Exception):
    pass


@contextlib.contextmanager
def _tensor_count_limit(limit: int) -> Iterator[None]:
    """Stops a module build in this thread once it has made more than ``limit`` parameters and
    buffers: a config asking for a depth of 10^5 builds for minutes module by
    module, even on the meta device, before its names can be compared. Other threads' builds
    (the app loads models in worker threads) are not counted."""
    from torch.nn.modules import module as nn_module

    me, made = threading.get_ident(), [0]

    def count(*_: Any) -> None:
        if threading.get_ident() == me:
            made[0] += 1
            if made[0] > limit:
                raise _TooManyTensors

    handles = [nn_module.register_module_parameter_registration_hook(count),
               nn_module.register_module_buffer_registration_hook(count)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def non_finite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The names (the first three, sorted) of the floating-point tensors holding NaN or
    infinite values: a damaged file, or a training that diverged; None where all are finite."""
    bad = sorted(name for name, t in named if t.is_floating_point() and not bool(t.isfinite().all()))
    return (", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")) if bad else None


def dry_build_misfit(build: Callable[[], torch.nn.Module], saved: dict[str, tuple[int, ...]],
                     all_names: bool = False) -> str | None:
    """Why the module ``build()`` makes cannot take weights of the ``saved`` shapes, found before
    anything is allocated: a config file can ask for any width, and 10^9 tried to allocate
    hundreds of GB before the weights were read. The module is built on the meta device, which
    allocates nothing. Compared: the names both hold (``all_names``: every name, a missing one
    too), and, where those agree, the total size (new names of a huge size). None where it fits,
    or where it does not build on the meta device (the real build and strict loading judge it).
    A build making more than four times the file's tensors (a huge depth) is stopped there."""
    limit = 4 * len(saved) + 1024
    try:
        with torch.device("meta"), warnings.catch_warnings(), _tensor_count_limit(limit):
            warnings.simplefilter("ignore")
            wanted = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except _TooManyTensors:
        return (f"the file holds {len(saved):,} tensors and the config asks for more than "
                f"{limit:,}, a depth far beyond the file's")
    except Exception:  # noqa: BLE001 (any failure here is judged again by the real build)
        return None
    names = wanted.keys() | saved.keys() if all_names else wanted.keys() & saved.keys()
    wrong = sorted(k for k in names if wanted.get(k) != saved.get(k))
    if wrong:
        shown = ", ".join(f"{k} {wanted.get(k, 'absent')} where the file holds "
                          f"{saved.get(k, 'absent')}" for k in wrong[:3])
        return f"the config asks for {shown}{', ...' if len(wrong) > 3 else ''}"
    values = {name: sum(math.prod(v) for v in shapes.values())
              for name, shapes in (("wanted", wanted), ("saved", saved))}
    if values["wanted"] > 4 * values["saved"] + 2**20:
        return (f"the file holds {values['saved']:,} values and the config asks for "
                f"{values['wanted']:,}")
    return None
