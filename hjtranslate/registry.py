"""Plugin discovery through Python entry points.

Costs, encoders and potential heads are found in the entry-point groups ``hjtranslate.costs``,
``hjtranslate.encoders`` and ``hjtranslate.heads``. The built-ins in ``plugins/`` take the same
path as any third-party package; only a clash of names tells them apart. Each group is read
once and cached. A plugin that fails to import, or that is not a class of its kind (a
:class:`Cost`, an ``nn.Module`` head, an :class:`Encoder`), is named in a warning and skipped;
two plugins that claim one name make that name an error when it is used (the other names keep
working), except that a third-party plugin claiming a built-in's name is skipped with a
warning: the built-ins are every task's defaults.
"""

from __future__ import annotations

import inspect
import os
import sys
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


class PluginValueError(PluginOptionError):
    """A plugin that refused the values of options it takes (its own check of them)."""


@dataclass(frozen=True)
class Plugin:
    kind: str
    name: str
    obj: Any
    package: str
    target: str

    @property
    def builtin(self) -> bool:
        """Whether it ships with hjtranslate (``plugins/``)."""
        return self.target.startswith(BUILTIN_MODULE + ".")


_cache: dict[str, dict[str, Plugin]] = {}
#: names claimed by two installed plugins of one kind, with the message that names both
_clashes: dict[str, dict[str, str]] = {}
#: installed plugins left out (import failure, not a plugin class), with the reason
_skipped: dict[str, dict[str, str]] = {}
# Plugins registered at run time (tests, notebooks) on top of the entry points.
_injected: dict[str, dict[str, Plugin]] = {kind: {} for kind in GROUPS}


#: the module of the plugins that ship with hjtranslate (the defaults of every task)
BUILTIN_MODULE = "hjtranslate_plugins"


def _package_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return f"{dist.metadata['Name']} {dist.version}"
    return ep.value.split(":")[0].split(".")[0]


def _base(kind: str) -> type:
    """The class every plugin of ``kind`` must derive from."""
    if kind == "cost":
        from .costs import Cost

        return Cost
    if kind == "encoder":
        from .encoders import Encoder

        return Encoder
    from torch import nn

    return nn.Module


def _not_a_plugin(kind: str, obj: Any) -> str | None:
    """Why ``obj`` cannot be a ``kind`` plugin (None when it can): the registry builds plugins
    by calling the class, and recognises a cost instance by its class."""
    base = _base(kind)
    if isinstance(obj, type) and issubclass(obj, base):
        return None
    if isinstance(obj, base):  # an instance of a plugin class
        return (f"it names an instance ({obj!r}), not a class: point the entry point at its "
                f"class, {type(obj).__module__}:{type(obj).__qualname__} (options go in "
                "--cost-options / --head-options, or the class's keyword arguments)")
    what = (f"the class {obj.__name__}" if isinstance(obj, type)
            else f"a {type(obj).__name__} ({getattr(obj, '__name__', obj)!r})")
    return (f"it names {what}, not a subclass of {base.__module__}.{base.__qualname__}: point "
            "the entry point at such a class")


def _skip(kind: str, ep: EntryPoint, skipped: dict[str, str], why: str) -> None:
    note = f"{kind} plugin {ep.name!r} ({ep.value}, from {_package_of(ep)}): {why}"
    skipped.setdefault(ep.name, note)
    warnings.warn(f"Skipping {note}", RuntimeWarning, stacklevel=_outside_package())


def _outside_package() -> int:
    """The ``stacklevel`` of the first caller outside this package (and torch's, whose
    ``Module.__call__`` stands between ``m(x)`` and a map's ``forward``), for a warning raised in
    the function calling this one: the user's line, wherever in the package the lookup began."""
    import torch

    inside = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (__file__, torch.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def _load_group(kind: str) -> dict[str, Plugin]:
    group = GROUPS[kind]
    # Editable installs can list one distribution twice; keep one entry per (name, target).
    seen: dict[tuple[str, str], EntryPoint] = {}
    for ep in entry_points(group=group):
        seen.setdefault((ep.name, ep.value), ep)
    eps = list(seen.values())
    found: dict[str, Plugin] = {}
    skipped: dict[str, str] = {}
    _clashes[kind] = {}
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in eps:
        by_name.setdefault(ep.name, []).append(ep)
    for name, claimants in by_name.items():
        own = [ep for ep in claimants if ep.value.startswith(BUILTIN_MODULE + ".")]
        if len(claimants) > 1 and len(own) == 1:
            # a third-party name clashing with a built-in one must not disable hjtranslate's
            # own default (every task and shipped map uses it): the third party's is skipped
            for ep in claimants:
                if ep is not own[0]:
                    _skip(kind, ep, skipped, f"the name {name!r} is hjtranslate's own {kind}: "
                          "rename this entry point (the name users pass) in its package")
            claimants = own
        if len(claimants) > 1:
            targets = " and ".join(f"{ep.value} ({_package_of(ep)})" for ep in claimants)
            _clashes[kind][name] = (f"Two {kind} plugins are named {name!r}: {targets}. "
                                    "Uninstall one of the packages or rename its entry point.")
            continue
        (ep,) = claimants
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            why = f"it failed to import: {type(exc).__name__}: {exc}"
        else:
            why = _not_a_plugin(kind, obj)
            if why is None:
                found[name] = Plugin(kind, name, obj, _package_of(ep), ep.value)
                continue
        _skip(kind, ep, skipped, why)
    _skipped[kind] = skipped
    return found


def clashes(kind: str) -> dict[str, str]:
    """Names of ``kind`` that two installed plugins claim (unusable), with the message."""
    plugins(kind)
    return dict(_clashes.get(kind, {}))


def skipped(kind: str) -> dict[str, str]:
    """Installed plugins of ``kind`` left out (failed to import, not a plugin class), with why."""
    plugins(kind)
    return dict(_skipped.get(kind, {}))


def plugins(kind: str) -> dict[str, Plugin]:
    """All usable plugins of one kind (``cost``, ``encoder`` or ``head``), by name; a name two
    installed plugins claim is left out (see :func:`clashes`)."""
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


#: the package recorded for a plugin registered by :func:`register` (not by an entry point)
RUNTIME = "<runtime>"


def register(kind: str, name: str, obj: Any, package: str = RUNTIME) -> None:
    """Register a plugin without an installed package (for notebooks and tests)."""
    if name in plugins(kind) or name in _clashes.get(kind, {}):
        raise PluginError(f"A {kind} plugin named {name!r} is already registered.")
    why = _not_a_plugin(kind, obj)
    if why is not None:
        raise PluginError(f"Cannot register the {kind} plugin {name!r}: {why}.")
    target = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)}"
    _injected[kind][name] = Plugin(kind, name, obj, package, target)


def unregister(kind: str, name: str) -> None:
    _injected[kind].pop(name, None)


def clear_cache() -> None:
    _cache.clear()
    _clashes.clear()
    _skipped.clear()


def resolve(kind: str, name: str) -> Plugin:
    table = plugins(kind)
    if name in _clashes.get(kind, {}):
        raise PluginError(_clashes[kind][name])
    if name not in table and name in _skipped.get(kind, {}):
        raise PluginError(f"The {_skipped[kind][name]}. It was skipped; fix or reinstall that "
                          "package.")
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
    try:
        return plugin.obj(**kwargs)
    except PluginError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:  # the plugin's check of a value
        origin = "" if plugin.builtin else f" ({plugin.package})"  # whose check it was
        raise PluginValueError(
            f"The {kind} plugin {name!r}{origin} could not be built with {kwargs or 'no options'}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    except Exception as exc:
        if plugin.builtin:  # the built-ins' own errors (a missing VAE folder) say what to do
            raise
        raise PluginError(failed_to_build(plugin, exc)) from exc


def failed_to_build(plugin: Plugin, exc: Exception) -> str:
    """What to say when a third-party plugin's constructor raises something other than a
    check of its options: a bare traceback would not say which plugin it came from."""
    return (f"The {plugin.kind} plugin {plugin.name!r} ({plugin.package}) failed to build: "
            f"{type(exc).__name__}: {exc}")


def missing_plugin_message(kind: str, name: str, package: str | None, what: str = "checkpoint") -> str:
    if package == RUNTIME:
        hint = (f" It was registered in the process that saved it, with hjtranslate.registry."
                f"register({kind!r}, {name!r}, ...): register it the same way before loading, or "
                "install a package that provides it under the hjtranslate entry points.")
    else:
        hint = f" Install the package that provides it ({package})." if package else ""
    return f"This {what} needs the {kind} plugin {name!r}, which is not installed.{hint}"


def missing_plugin(kind: str, name: str, package: Any = None, what: str = "checkpoint") -> str | None:
    """Why a saved ``what`` cannot be loaded for want of the ``kind`` plugin ``name`` (None when
    it is installed). Two plugins claiming it, or one skipped, raise their own PluginError.
    ``package``: as recorded beside the name (``"pkg 1.0"``), to say what to install."""
    if name in plugins(kind):
        return None
    if name in clashes(kind) or name in skipped(kind):
        resolve(kind, name)  # raises: two plugins claim it, or it was skipped
    package = str(package).split(" ")[0] if isinstance(package, str) and package else None
    return missing_plugin_message(kind, name, package, what)
