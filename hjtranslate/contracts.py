"""What a cost or head plugin must do, checked once when a map is built.

A broken third-party plugin is then named before training, rather than found as a shape error
deep in the loss, as a map that trains on broadcast garbage, or as one that saves and cannot be
loaded. The probes use their own random generator, so building a map draws the same weights
and batches as before.
"""

from __future__ import annotations

import copy
import json
import warnings
from typing import Any

import torch
from torch import nn

from .costs import Cost
from .registry import PluginError, create

COST_METHODS = ("lagrangian", "hamiltonian", "grad_hamiltonian")
_PROBE = 3  # points per probe


def json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def check_cost(cost: Cost, name: str, who: str, dim: int) -> None:
    """``cost`` (the plugin ``name``) implements ``L``, ``H`` and ``grad H`` batched over the last
    axis, finite near 0 (a cost may be infinite off a bounded domain), and its ``config()`` is
    JSON that rebuilds it (checkpoints store it)."""
    missing = [m for m in COST_METHODS if getattr(type(cost), m) is getattr(Cost, m)]
    if missing:
        raise PluginError(f"{who} does not implement {', '.join(missing)}: a Cost subclass "
                          "defines lagrangian(v), hamiltonian(p) and grad_hamiltonian(p), each "
                          "batched over the last axis.")
    # |v| about 0.1: inside the domain of costs with a bounded speed or momentum
    v = 0.1 * torch.randn(_PROBE, dim, generator=torch.Generator().manual_seed(0)) / dim ** 0.5
    for method, want in zip(COST_METHODS, [(_PROBE,), (_PROBE,), (_PROBE, dim)], strict=True):
        out = _probed(lambda method=method: getattr(cost, method)(v), want, who,
                      f"{method} fails on a ({_PROBE}, {dim}) batch",
                      f"{method} of a ({_PROBE}, {dim}) batch must return shape {want}")
        if not torch.isfinite(out).all():
            raise PluginError(f"{who}: {method} returns NaN or Inf near 0 (|v| about 0.1).")
    # 2 x 3 pairs: a square probe would let a reduction over the wrong axis keep its shape
    x, y = v[:2], v.flip(0)
    advice = (": the base class passes lagrangian the (n, m, d) displacements: reduce over the "
              "last axis (sum(-1), norm(dim=-1)), or define pairwise(x, y, t_f)")
    pairs = _probed(lambda: cost.pairwise(x, y), (2, _PROBE), who,
                    f"pairwise fails on batches of 2 and {_PROBE} points",
                    f"pairwise(x, y) of batches of 2 and {_PROBE} points must return the "
                    f"(2, {_PROBE}) cost matrix", advice)
    each = torch.stack([cost.cost(x[i].expand(_PROBE, dim), y) for i in range(2)])
    if not torch.allclose(pairs, each, rtol=1e-4, atol=1e-6 * (float(each.abs().max()) + 1)):
        raise PluginError(f"{who}: pairwise(x, y)[i, j] differs from cost(x_i, y_j) (got "
                          f"{pairs.tolist()} against {each.tolist()}){advice}.")
    _check_cost_differentiable(cost, who, v)
    _check_cost_is_a_legendre_pair(cost, who, v)
    _warn_if_not_homogeneous(cost, who, v)
    config = cost.config()
    if not isinstance(config, dict) or not json_safe(config):
        raise PluginError(f"{who}: config() must return a dict of JSON values (checkpoints store "
                          f"it and rebuild the cost from it), got {config!r}.")
    try:
        create("cost", name, **config)
    except Exception as exc:  # PluginOptionError, or the plugin's own check of the values
        raise PluginError(f"{who}: config() returns {config!r}, which does not rebuild the cost "
                          f"(a saved map could not be loaded): {exc}") from None


def _check_cost_differentiable(cost: Any, who: str, v: torch.Tensor) -> None:
    """The HJ loss differentiates ``hamiltonian`` and ``grad_hamiltonian`` in ``p`` (and the
    match ``lagrangian`` in ``v``): each must keep autograd's graph."""
    for method in COST_METHODS:
        with torch.enable_grad():
            p = v.clone().requires_grad_(True)
            try:
                out = getattr(cost, method)(p)
                ok = isinstance(out, torch.Tensor) and out.requires_grad
                if ok:
                    torch.autograd.grad(out.sum(), p)
            except Exception as exc:  # the plugin's own code: .numpy(), .item() ...
                raise PluginError(f"{who}: {method} cannot be differentiated by autograd "
                                  f"({type(exc).__name__}: {exc}): write it in torch operations, "
                                  "without .detach(), .item() or numpy.") from None
        if not ok:
            raise PluginError(f"{who}: {method}'s output does not depend on its input through "
                              "autograd (a .detach(), or a new tensor); training differentiates "
                              "it: write it in torch operations.")


def _check_cost_is_a_legendre_pair(cost: Any, who: str, v: torch.Tensor) -> None:
    """The maps move along ``grad H`` and the losses price moves with ``L``: ``grad_hamiltonian``
    must be the gradient of ``hamiltonian``, ``L`` and ``H`` convex, and ``L`` the Legendre dual
    of ``H`` (``L(grad H(p)) = p . grad H(p) - H(p)``); otherwise a map trains silently to wrong
    figures (a forgotten factor 1/2 halves every cost ratio). Probed in float64 where the plugin
    allows it, at momenta of norm 0.5 and 2 and at momenta whose every coordinate is about 0.5
    and 2 (a wrong power of ``|p|`` shows only off norm 1; a separable cost's terms are of order
    1 only where its coordinates are), with an absolute tolerance far below order 1 and above
    the built-ins' smoothing floors. A value that is infinite (off a bounded domain, or beyond
    float64) gives no verdict."""
    try:
        with torch.no_grad():
            for method in COST_METHODS:
                getattr(cost, method)(v.double())
        v = v.double()
    except Exception:  # a float32-only plugin: probe in float32, with a looser tolerance
        pass
    rtol = 1e-6 if v.dtype == torch.float64 else 1e-3
    unit = v / v.norm(dim=-1, keepdim=True)
    coordinates = torch.sign(v) * (0.5 + v.abs() / v.abs().amax(-1, keepdim=True) / 2)
    for p in (0.5 * unit, 2 * unit, 0.5 * coordinates, 2 * coordinates):
        problem = _legendre_problem(cost, p, rtol)
        if problem:
            raise PluginError(f"{who}: {problem}")


def _legendre_problem(cost: Any, p: torch.Tensor, rtol: float) -> str | None:
    """What ``_check_cost_is_a_legendre_pair`` finds wrong at the momenta ``p`` (None: nothing)."""
    atol = 1e-3 * rtol  # 1e-9 in float64: far below order 1, above a smoothing floor

    def close(got: torch.Tensor, want: torch.Tensor, *scales: torch.Tensor) -> bool:
        finite = torch.isfinite(got) & torch.isfinite(want)
        scale = max((float(s[torch.isfinite(s)].abs().max()) for s in scales
                     if bool(torch.isfinite(s).any())), default=0.0)
        return bool((got - want)[finite].abs().le(rtol * scale + atol).all())

    with torch.enable_grad():
        q = p.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(cost.hamiltonian(q).sum(), q)
    with torch.no_grad():
        h, dh = cost.hamiltonian(p), cost.grad_hamiltonian(p)
        inside = torch.isfinite(h)  # off H's domain its gradient means nothing
        if not inside.any():
            return None
        p, h, dh, grad = p[inside], h[inside], dh[inside], grad[inside]
        if not close(dh, grad, grad):
            return (f"grad_hamiltonian(p) is not the gradient of hamiltonian(p) (at p = "
                    f"{p[0].tolist()}: {dh[0].tolist()} against autograd's {grad[0].tolist()}): "
                    "the maps move along it.")
        work = (p * dh).sum(-1)
        dual, action = cost.lagrangian(dh), work - h
        if not close(dual, action, work, h):
            return ("lagrangian is not the Legendre dual of hamiltonian: L(grad H(p)) must equal "
                    f"p . grad H(p) - H(p), got {dual.tolist()} against {action.tolist()} (a "
                    "factor such as 1/2 on one side only?).")
        if type(cost).action is not Cost.action and not close(cost.action(p), action, work, h):
            return (f"action(p) differs from p . grad H(p) - H(p) (got {cost.action(p).tolist()} "
                    f"against {action.tolist()}): fix it, or remove it to use the base class's.")
        # H between momenta, L between the velocities grad H gives (inside L's domain)
        for method, a in (("hamiltonian", p), ("lagrangian", dh)):
            f = getattr(cost, method)
            b = 0.5 * a.roll(1, 0)
            mid, ends = f((a + b) / 2), (f(a) + f(b)) / 2
            finite = torch.isfinite(mid) & torch.isfinite(ends)
            if not finite.any():
                continue
            if (mid - ends)[finite].max() > rtol * float(ends[finite].abs().max()) + atol:
                return (f"{method} is not convex (at the midpoint of two probe points it is "
                        f"{mid[finite].max().item():.4g}, above the mean "
                        f"{ends[finite].max().item():.4g} of its ends): an optimal transport "
                        "cost needs a convex L and its convex dual H.")
    return None


def _warn_if_not_homogeneous(cost: Any, who: str, v: torch.Tensor) -> None:
    """Maps train on standardised data and read costs back with ``scale ** degree``: a
    Lagrangian that is not homogeneous of the cost's ``degree`` gets rescaled figures wrong."""
    with torch.no_grad():
        small, large = cost.lagrangian(v).double(), cost.lagrangian(2 * v).double()
    keep = small.abs() > 1e-12
    if not keep.any() or not torch.isfinite(large).all():
        return
    ratio = large[keep] / small[keep]
    expected = 2.0 ** float(getattr(cost, "degree", 2.0))
    if torch.allclose(ratio, torch.full_like(ratio, expected), rtol=1e-3):
        return
    if torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-3) and ratio.mean() > 0:
        detail = (f"it is homogeneous of degree {float(torch.log2(ratio.mean())):.4g}, not "
                  f"{getattr(cost, 'degree', 2.0):g}: set the class attribute degree to that")
    else:
        detail = "it is not homogeneous: the rescaled figures are approximate"
    warnings.warn(f"{who}: L(2v) / L(v) is not 2**degree; {detail} (maps train on "
                  "standardised data, and certified duals and transport costs are read back "
                  "with scale**degree).", RuntimeWarning, stacklevel=3)


def check_image_encoder(encoder: Any, who: str, device: Any = "cpu",
                        dtype: torch.dtype = torch.float32) -> None:
    """An encoder standing in a pipeline: a whole ``latent_dim``, ``encode`` and ``decode``
    implemented, ``decode`` of two latents (on ``device``, in ``dtype``: the map's, as the
    pipeline passes them) giving two grey 28x28 images, and ``encode`` of those giving two
    latents of ``latent_dim``."""
    from .encoders import Encoder

    dim = getattr(encoder, "latent_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise PluginError(f"{who} does not set latent_dim (the size of its flat latents, an int; "
                          f"got {dim!r}): a pipeline needs it to check its map.")
    missing = [m for m in ("encode", "decode")
               if not callable(getattr(encoder, m, None))
               or getattr(type(encoder), m, None) is getattr(Encoder, m)]
    if missing:
        raise PluginError(f"{who} does not implement {' and '.join(missing)}: in a pipeline, "
                          "encode takes grey images (n, 1, 28, 28) in [0, 1] to (n, latent_dim) "
                          "latents and decode the reverse.")
    out = _probed(lambda: encoder.decode(torch.zeros(2, dim, device=device, dtype=dtype)),
                  (2, 1, 28, 28), who, f"decode fails on latents of shape (2, {dim})",
                  f"decode of latents (2, {dim}) must return grey images of shape (2, 1, 28, 28) "
                  "in [0, 1] to stand in a pipeline")
    _probed(lambda: encoder.encode(out.clamp(0, 1)), (2, dim), who,
            "encode fails on grey images of shape (2, 1, 28, 28)",
            f"encode of grey images (2, 1, 28, 28) must return flat latents of shape (2, {dim}) "
            "(its latent_dim)")


def _probed(call: Any, want: tuple[int, ...], who: str, fails: str, returns: str,
            advice: str = "") -> torch.Tensor:
    """``call()``, a plugin's method on probe inputs, checked to give a tensor of shape ``want``;
    else a PluginError: ``fails`` and the error where it raises, ``returns`` and what it gave
    where the shape differs (each followed by ``advice``)."""
    try:
        with torch.no_grad():
            out = call()
    except Exception as exc:  # the plugin's own code
        raise PluginError(f"{who}: {fails}: {type(exc).__name__}: {exc}{advice}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        raise PluginError(f"{who}: {returns}, got {_shape(out)}{advice}.")
    return out


def check_head(head: nn.Module, who: str, dim: int, num_classes: int | None,
               rebuild: dict[str, Any]) -> None:
    """``head(x, t, k)`` gives one finite potential per point; a closed-form ``momentum`` agrees
    with ``forward`` and autograd; ``head_config`` is JSON and rebuilds the same parameters
    (``rebuild``: the arguments besides it, ``dim`` and ``num_classes``). The probe runs in eval
    mode on a forked random state: dropout, batch statistics and the run's seed are untouched."""
    training = head.training
    head.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            _probe_head(head, who, dim, num_classes, rebuild)
    finally:
        head.train(training)


def _probe_head(head: nn.Module, who: str, dim: int, num_classes: int | None,
                rebuild: dict[str, Any]) -> None:
    if next(iter(head.parameters()), None) is None:
        raise PluginError(f"{who} has no parameters to train: a head is an nn.Module whose "
                          "weights define u(x, t).")
    g = torch.Generator().manual_seed(0)
    param = next(iter(head.parameters()))
    z = torch.randn(_PROBE, dim, generator=g).to(param.device, param.dtype).requires_grad_(True)
    t = torch.full((_PROBE, 1), 0.5, device=param.device, dtype=param.dtype)
    k = (torch.arange(_PROBE, device=param.device) % num_classes
         if getattr(head, "conditional", False) and num_classes else None)
    try:
        with torch.enable_grad():
            u = head(z, t, k)
            if isinstance(u, torch.Tensor) and not u.requires_grad:
                raise PluginError(f"{who}: forward(x, t, k) does not depend on x through "
                                  "autograd (a .detach(), or a new tensor): the maps are the "
                                  "gradient of u in x.")
            (p,) = (torch.autograd.grad(u.sum(), z, allow_unused=True)
                    if isinstance(u, torch.Tensor) else (None,))
    except PluginError:
        raise
    except NotImplementedError:
        raise PluginError(f"{who} does not implement forward(x, t, k): a head returns one "
                          "potential per point, shape (n,).") from None
    except Exception as exc:  # the plugin's own code
        raise PluginError(f"{who}: forward(x, t, k) fails on x of shape ({_PROBE}, {dim}) and t "
                          f"of shape ({_PROBE}, 1): {type(exc).__name__}: {exc}") from None
    if isinstance(u, torch.Tensor) and p is None:
        raise PluginError(f"{who}: forward(x, t, k) does not depend on x (its gradient in x is "
                          "missing from autograd's graph): the maps are the gradient of u in x.")
    if not isinstance(u, torch.Tensor) or tuple(u.shape) != (_PROBE,):
        raise PluginError(f"{who}: forward(x, t, k) must return one potential per point, shape "
                          f"({_PROBE},) for {_PROBE} points, got {_shape(u)}.")
    if not (torch.isfinite(u).all() and torch.isfinite(p).all()):
        raise PluginError(f"{who}: forward gives NaN or Inf (or a NaN gradient) at ordinary points.")
    try:
        with torch.no_grad():
            alone = head(z[:1].detach(), t[:1], None if k is None else k[:1])
    except Exception as exc:
        raise PluginError(f"{who}: forward(x, t, k) fails on one point (x of shape (1, {dim})): "
                          f"{type(exc).__name__}: {exc}") from None
    want = u[:1].detach()
    if not isinstance(alone, torch.Tensor) or alone.numel() != 1:  # (1,), or () from a squeeze
        raise PluginError(f"{who}: forward(x, t, k) must return one potential for one point, "
                          f"shape (1,), got {_shape(alone)}.")
    if not torch.allclose(alone.reshape(1).to(want.dtype), want, rtol=1e-4,
                          atol=1e-5 * (1 + float(u.detach().abs().max()))):
        got = f"{alone.item():.6g}"
        raise PluginError(f"{who}: forward(x, t, k) gives a point another potential alone "
                          f"({got}) than in a batch ({want.item():.6g}): u must be a function of each "
                          "point's own x, t and k (no batch statistics such as u - u.mean(), "
                          "no mixing of the batch).")
    _warn_if_piecewise_linear(head, who, z, t, k, g)
    closed_form = getattr(head, "momentum", None)
    if closed_form is not None:
        try:
            with torch.no_grad():
                out = closed_form(z.detach(), t, k)
        except Exception as exc:
            raise PluginError(f"{who}: momentum(x, t, k) fails: {type(exc).__name__}: {exc}") from None
        if (not isinstance(out, (tuple, list)) or len(out) != 2
                or not all(isinstance(o, torch.Tensor) for o in out)
                or tuple(out[0].shape) != (_PROBE,) or tuple(out[1].shape) != (_PROBE, dim)):
            got = (f"({', '.join(_shape(o) for o in out)})" if isinstance(out, (tuple, list))
                   else _shape(out))
            raise PluginError(f"{who}: momentum(x, t, k) must return (u, grad_x u) of shapes "
                              f"({_PROBE},) and ({_PROBE}, {dim}), got {got}.")
        for got, want, what in ((out[0], u.detach(), "a u that differs from forward(x, t, k)"),
                                (out[1], p, "a gradient that differs from autograd's grad_x u "
                                 "of forward")):
            tol = 1e-5 + 1e-3 * float(want.abs().max())
            if not torch.allclose(got.to(want.dtype), want, rtol=1e-3, atol=tol):
                raise PluginError(f"{who}: momentum(x, t, k) returns {what}. Fix it, or remove "
                                  "it to use autograd.")
    config = getattr(head, "head_config", None)
    if not isinstance(config, dict) or not json_safe(config):
        raise PluginError(f"{who}: head_config must be a dict of JSON values (its constructor "
                          f"arguments, stored in checkpoints), got {config!r}.")
    kwargs = {**{k: v for k, v in config.items() if k not in rebuild}, **rebuild}
    if not _rebuilds(head, kwargs):
        raise PluginError(f"{who}: its head_config {config!r} does not rebuild the same "
                          "parameters, so a saved map could not be loaded: store every "
                          "constructor argument in self.head_config.")


def _curved(head: nn.Module, z: torch.Tensor, t: torch.Tensor, k: torch.Tensor | None,
            g: torch.Generator) -> bool:
    """Whether ``u`` has a nonzero second derivative in ``x`` at any probe point."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        (p,) = torch.autograd.grad(head(z, t, k).sum(), z, create_graph=True)
        if not p.requires_grad:
            return False
        direction = torch.randn(p.shape, generator=g).to(p.device, p.dtype)
        (curvature,) = torch.autograd.grad((p * direction).sum(), z, allow_unused=True)
    return curvature is not None and bool(curvature.abs().gt(0).any())


def _warn_if_piecewise_linear(head: nn.Module, who: str, z: torch.Tensor, t: torch.Tensor,
                              k: torch.Tensor | None, g: torch.Generator) -> None:
    """A head whose ``u`` cannot curve in ``x`` (ReLU units: piecewise linear) gives a map that
    translates each piece rigidly, and its Jacobian diagnostics read the identity. A head may
    start flat (the affine head's quadratic starts at zero), so a flat ``u`` is probed again
    with its weights perturbed; flat both times, it is warned about (legal: a translation can
    be optimal)."""
    try:
        if _curved(head, z, t, k, g):
            return
        perturbed = copy.deepcopy(head)
        with torch.no_grad():
            for w in perturbed.parameters():
                if not nn.parameter.is_lazy(w):
                    w.add_(torch.randn(w.shape, generator=g).to(w.device, w.dtype) * 0.1)
        flat = not _curved(perturbed, z, t, k, g)
    except Exception:  # a head that cannot be copied or differentiated twice: no verdict
        return
    if flat:
        warnings.warn(f"{who}: u(x, t) has zero second derivative in x at every probe point, "
                      "whatever its weights, as a ReLU network has. Its map translates each "
                      "linear piece rigidly and cannot follow a smooth transport; use a smooth "
                      "activation (SiLU, softplus, tanh).", UserWarning, stacklevel=2)


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...] | None]:
    """Parameter and buffer shapes by name (None for a lazy module's uninitialised ones)."""
    return {n: None if nn.parameter.is_lazy(w) else tuple(w.shape)
            for n, w in module.state_dict(keep_vars=True).items()}


def _rebuilds(head: nn.Module, kwargs: dict[str, Any]) -> bool:
    """Whether ``type(head)(**kwargs)`` has ``head``'s parameters. Built on the meta device (no
    memory, no random draws) where the head's constructor allows it, else on the CPU."""
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                again = type(head)(**kwargs)
        except Exception:
            continue
        want, got = _shapes(head), _shapes(again)
        return want.keys() == got.keys() and all(
            None in (want[n], got[n]) or want[n] == got[n] for n in want)
    return False
