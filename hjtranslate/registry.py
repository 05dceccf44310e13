"""Plugin discovery through Python entry points.

Costs, encoders and potential heads are found in the entry-point groups ``hjtranslate.costs``,
``hjtranslate.encoders`` and ``hjtranslate.heads``. The built-ins in ``plugins/`` take the same
path as any third-party package: nothing here knows their names. Each group is read once and
cached; a plugin that fails to import is named in a warning and skipped; two plugins that claim
one name are an error.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

GROUPS = {
    "cost": "hjtranslate.costs",
    "encoder": "hjtranslate.encoders",
    "head": "hjtranslate.heads",
}


class PluginError(ValueError):
    """A plugin name that cannot be resolved, or a clash between plugins."""


class PluginOptionError(PluginError, TypeError):
    """A plugin built with options it does not take (a TypeError too, as calling it would be)."""


@dataclass(frozen=True)
class Plugin:
    kind: str
    name: str
    obj: Any
    package: str
    target: str


_cache: dict[str, dict[str, Plugin]] = {}
# Plugins registered at run time (tests, notebooks) on top of the entry points.
_injected: dict[str, dict[str, Plugin]] = {kind: {} for kind in GROUPS}


def _package_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return f"{dist.metadata['Name']} {dist.version}"
    return ep.value.split(":")[0].split(".")[0]


def _load_group(kind: str, eps: list[EntryPoint] | None = None) -> dict[str, Plugin]:
    group = GROUPS[kind]
    if eps is None:
        # Editable installs can list one distribution twice; keep one entry per (name, target).
        seen: dict[tuple[str, str], EntryPoint] = {}
        for ep in entry_points(group=group):
            seen.setdefault((ep.name, ep.value), ep)
        eps = list(seen.values())
    found: dict[str, Plugin] = {}
    for ep in eps:
        if ep.name in found:
            raise PluginError(
                f"Two {kind} plugins are named {ep.name!r}: {found[ep.name].target} "
                f"({found[ep.name].package}) and {ep.value} ({_package_of(ep)}). "
                "Uninstall one of the packages or rename its entry point."
            )
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            warnings.warn(
                f"Skipping {kind} plugin {ep.name!r} ({ep.value}, from {_package_of(ep)}): "
                f"it failed to import: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        found[ep.name] = Plugin(kind, ep.name, obj, _package_of(ep), ep.value)
    return found


def plugins(kind: str) -> dict[str, Plugin]:
    """All plugins of one kind (``cost``, ``encoder`` or ``head``), by name."""
    if kind not in GROUPS:
        raise PluginError(f"Unknown plugin kind {kind!r}; choose one of {sorted(GROUPS)}.")
    if kind not in _cache:
        _cache[kind] = _load_group(kind)
    merged = dict(_cache[kind])
    for name, plugin in _injected[kind].items():
        if name in merged:
            raise PluginError(
                f"Two {kind} plugins are named {name!r}: {merged[name].target} and "
                f"{plugin.target}."
            )
        merged[name] = plugin
    return merged


def register(kind: str, name: str, obj: Any, package: str = "<runtime>") -> None:
    """Register a plugin without an installed package (for notebooks and tests)."""
    if name in plugins(kind):
        raise PluginError(f"A {kind} plugin named {name!r} is already registered.")
    target = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)}"
    _injected[kind][name] = Plugin(kind, name, obj, package, target)


def unregister(kind: str, name: str) -> None:
    _injected[kind].pop(name, None)


def clear_cache() -> None:
    _cache.clear()


def resolve(kind: str, name: str) -> Plugin:
    table = plugins(kind)
    if name not in table:
        known = ", ".join(sorted(table)) or "none installed"
        raise PluginError(f"Unknown {kind} {name!r}. Available {kind}s: {known}.")
    return table[name]


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Build a registered plugin by name; ``None`` keyword arguments are dropped."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    plugin = resolve(kind, name)
    try:
        signature = inspect.signature(plugin.obj)
    except (TypeError, ValueError):  # no signature to check (some builtins)
        return plugin.obj(**kwargs)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        options = [p for p in signature.parameters.values()
                   if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes = ", ".join(p.name for p in options) or "no options"
        raise PluginOptionError(
            f"The {kind} plugin {name!r} cannot be built with {kwargs or 'no options'} ({exc}); "
            f"it takes {takes}."
        ) from None
    return plugin.obj(**kwargs)


def missing_plugin_message(kind: str, name: str, package: str | None) -> str:
    hint = f" Install the package that provides it ({package})." if package else ""
    return f"This checkpoint needs the {kind} plugin {name!r}, which is not installed.{hint}"
