"""Loss terms: the implicit HJ residual (method.md section 3) and MMD between samples."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .costs import Cost

# The matches and floors below take samples ``(n, d)``, or ``(B, n, d)`` for ``B`` independent
# pairs of samples (one value each): the class-wise match of a balanced batch is then one batch
# of matrix products instead of a Python loop over classes (see classwise).
_PAIR = (-2, -1)


def _pdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # |a|^2 + |b|^2 - 2 a.b through one matrix product (an (n, m, d) difference tensor costs
    # 5x more); clamped against round-off, with a floor under the sqrt since the gradient of
    # |x - y| at x = y would be NaN.
    return torch.sqrt(_sqdist(a, b).clamp_min(0) + 1e-12)


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :] - 2 * a @ b.transpose(-2, -1)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic): the MMD of the
    kernel ``k(x, y) = -|x - y|``. Between two independent samples of one law its expectation
    is ``E|X-X'| (1/n + 1/m)`` (see :func:`energy_floor`)."""
    return 2 * _pdist(x, y).mean(_PAIR) - _pdist(x, x).mean(_PAIR) - _pdist(y, y).mean(_PAIR)


def energy_floor(y: torch.Tensor, n: int) -> torch.Tensor:
    """Expected V-statistic energy distance between ``n`` samples of the law of ``y`` and ``y``
    itself (``m = len(y)``): ``E|Y-Y'| (1/n + 1/m)``, estimated from ``y``."""
    m = y.shape[-2]
    mean_dist = _pdist(y, y).sum(_PAIR) / max(m * (m - 1), 1)
    return mean_dist * (1.0 / n + 1.0 / m)


BANDWIDTHS = (0.1, 0.5, 1.0, 2.0, 5.0)


def gaussian_mmd(
    x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = BANDWIDTHS
) -> torch.Tensor:
    """Squared MMD (V-statistic) with a sum of Gaussian kernels; bandwidths are relative to the
    median pairwise distance of ``y``."""
    dxx, dyy, dxy = _pdist(x, x) ** 2, _pdist(y, y) ** 2, _pdist(x, y) ** 2
    scales = _kernel_scales(dyy.detach(), bandwidths)
    return (_kernel_means(dxx, scales) + _kernel_means(dyy, scales)
            - 2 * _kernel_means(dxy, scales)).sum(0)


def _kernel_scales(dyy: torch.Tensor, bandwidths: tuple[float, ...]) -> torch.Tensor:
    """``h^2 median(dyy)`` for each bandwidth ``h``, shaped ``(len(bandwidths), ..., 1, 1)`` to
    divide squared distances: every bandwidth's kernel in one tensor operation (a loop over the
    bandwidths was a tenth of a training step's operations)."""
    med = dyy.flatten(-2).median(-1).values.clamp_min(1e-12)[..., None, None]  # the lower median
    return torch.stack([h * h * med for h in bandwidths])  # (no host-to-GPU copy of the h's)


def _kernel_means(d2: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Mean of each bandwidth's Gaussian kernel over each ``(n, m)`` matrix ``d2``."""
    return torch.exp(-d2 / scales).mean(_PAIR)


def gaussian_floor(y: torch.Tensor, n: int, bandwidths: tuple[float, ...] = BANDWIDTHS) -> torch.Tensor:
    """What :func:`energy_floor` is for :func:`gaussian_mmd`: ``(1/n + 1/m) (k(0) - E k(Y, Y'))``
    (the expected V-statistic between two independent samples of one law, for any kernel)."""
    m = y.shape[-2]
    dyy = _pdist(y, y) ** 2
    off = 1 - torch.eye(m, dtype=y.dtype, device=y.device)  # the pairs i != j
    gap = ((1 - torch.exp(-dyy / _kernel_scales(dyy, bandwidths))) * off).sum(_PAIR).sum(0)
    return gap / max(m * (m - 1), 1) * (1.0 / n + 1.0 / m)


# Entropic blur per unit of the typical distance sqrt(2 d) between two points of a standardised
# sample (unit rms per coordinate): 0.05 in 2-D, where it was measured (BENCHMARKS.md).
SINKHORN_BLUR = 0.025


def _sinkhorn_loss(blur: float, diameter: float):
    from geomloss import SamplesLoss  # imported on first use: only this match needs it

    # cost |x - y|^2 / 2, entropic blur eps = blur^2, debiased (S(a, a) = 0), eps-scaling from
    # diameter^2 down to blur^2 (a plain settings holder: building one per call costs nothing)
    return SamplesLoss("sinkhorn", p=2, blur=blur, diameter=diameter, scaling=0.5, debias=True,
                       backend="tensorized")


def _diameter(x: torch.Tensor, y: torch.Tensor) -> float:
    """geomloss's own estimate of the diameter of two clouds: their bounding box's diagonal."""
    both = torch.cat([x.detach().reshape(-1, x.shape[-1]), y.detach().reshape(-1, y.shape[-1])])
    return float((both.max(0).values - both.min(0).values).norm())


def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, blur: float = SINKHORN_BLUR) -> torch.Tensor:
    """Debiased Sinkhorn divergence ``S_eps(x, y)`` (geomloss) with the cost ``|x - y|^2 / 2``
    and blur ``blur * sqrt(2 d)``: an OT-based match. Unlike an MMD, whose pull on a stray
    point vanishes once the bulk of the two samples agrees, it has to transport every point,
    so it sees mass left between or outside the target's pieces (2-D pairs in BENCHMARKS.md).
    Meant for standardised samples, as the map trains on."""
    if not blur > 0:
        raise ValueError(f"The Sinkhorn blur must be > 0, got {blur}.")
    eps_blur = round(blur * math.sqrt(2 * x.shape[-1]), 6)
    # geomloss (0.3.1) anneals from the clouds' diameter down to the blur through
    # log(diameter): clouds of one repeated point (a single-colour image) have diameter 0 and an
    # endless schedule ("Maximum allowed size exceeded"). Below the blur there is nothing to
    # anneal, so the schedule starts at the blur at the least.
    return _sinkhorn_loss(eps_blur, max(_diameter(x, y), eps_blur))(x, y)


def sinkhorn_floor(y: torch.Tensor, n: int, blur: float = SINKHORN_BLUR) -> torch.Tensor:
    """Estimate of ``E S_eps`` between ``n`` samples of the law of ``y`` and ``y`` itself
    (``m = len(y)``): the divergence between the two halves of ``y``, scaled as
    ``c (1/n + 1/m)`` like the V-statistics' floors. Its sample bias shrinks more slowly than
    1/n in more than two dimensions, so there the floor is underestimated and the match asked
    of the adaptive lambda is tighter, not looser."""
    m = y.shape[0]
    a, b = y[0::2], y[1::2]
    c = sinkhorn_divergence(a, b, blur) / (1.0 / len(a) + 1.0 / len(b))
    return c * (1.0 / n + 1.0 / m)


MMDS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "energy": energy_distance,
    "gaussian": gaussian_mmd,
    "sinkhorn": sinkhorn_divergence,
}


# Each MMD's floor (see energy_floor): the adaptive lambda asks the match to reach it.
FLOORS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "energy": energy_floor,
    "gaussian": gaussian_floor,
    "sinkhorn": sinkhorn_floor,
}


# Kernels of the V-statistic matches as functions of squared distances, for pooled_witness. The
# energy distance's kernel is -|x - y| (its MMD; the constant part of the kernel cancels).
def _energy_kernel(d2: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    return -torch.sqrt(d2.clamp_min(0) + 1e-12)


def _gaussian_kernel(d2: torch.Tensor, scale: torch.Tensor,
                     bandwidths: tuple[float, ...] = BANDWIDTHS) -> torch.Tensor:
    return sum(torch.exp(-d2.clamp_min(0) / (h * h * scale)) for h in bandwidths)


POOLED_KERNELS = {"energy": _energy_kernel, "gaussian": _gaussian_kernel}


def pooled_witness(
    name: str, x: torch.Tensor, x_pool: torch.Tensor, y: torch.Tensor, y_pool: torch.Tensor,
    **options: Any,
) -> torch.Tensor:
    """A zero whose gradient with respect to ``x`` is that of the match ``name`` ("energy" or
    "gaussian") between ``A = [x; x_pool]`` and ``B = [y; y_pool]`` with respect to the rows
    of ``x``, times ``|A| / n``: this batch's pushed samples ``x`` (carrying the graph) are
    matched against earlier batches' samples too (the pools, without a graph).

    Why: on a batch of 512 the floor of the match is so large that a map whose energy distance
    is 2.5x its floor on 4,000 points looks matched (BENCHMARKS.md, 2-D pairs). Pooling lowers
    the noise of the gradient at a cost linear in the pool: only the batch's rows are evaluated,
    ``2 mean k(x, sg A) - 2 mean k(x, B)`` (the MMD's witness at the batch; the stop-gradient
    ``sg`` because the pooled samples cannot move). With empty pools it is the gradient of the
    batch V-statistic exactly. The match's value needs all pairs of ``A`` and ``B``: compute it
    with the match itself, less often (HJObjective does, every few turnovers of the pool)."""
    kernel = POOLED_KERNELS[name]
    a = torch.cat([x, x_pool.to(x)]).detach()
    b = torch.cat([y, y_pool.to(y)]).detach()
    scale = None
    if name == "gaussian":
        # as gaussian_mmd: bandwidths relative to the median squared distance of the target side
        scale = _sqdist(y.detach(), b).median().clamp_min(1e-12)
    witness = 2 * kernel(_sqdist(x, a), scale, **options).mean() \
        - 2 * kernel(_sqdist(x, b), scale, **options).mean()
    return witness - witness.detach()


def get_mmd(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in MMDS:
        raise ValueError(f"Unknown MMD kernel {name!r}; choose one of {sorted(MMDS)}.")
    return MMDS[name]


# The matches that take a batch of sample pairs (B, n, d) (the Sinkhorn divergence does not).
BATCHED_MMDS = ("energy", "gaussian")


def classwise(
    mmd: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor, kx: torch.Tensor, y: torch.Tensor, ky: torch.Tensor, num_classes: int,
    block: int | None = None,
) -> torch.Tensor:
    """``(1/K) sum_k MMD(x[kx == k], y[ky == k])`` over the classes present in both.

    ``block``: both sides are sorted by class in blocks of this many samples with the same
    labels (see :func:`class_blocks`), and ``mmd`` takes batches (``BATCHED_MMDS``): the
    classes are then matched in one batched call. A loop over classes launches dozens of small
    kernels and a host synchronisation per class (the masks' ``nonzero``), which made a GPU
    step host-bound (BENCHMARKS.md)."""
    if block is not None:
        d = x.shape[-1]
        return mmd(x.reshape(-1, block, d), y.reshape(-1, block, d)).mean()
    return torch.stack([mmd(x[kx == k], y[ky == k])
                        for k in classes_on_both_sides(kx, ky, num_classes)]).mean()


def class_blocks(kx: torch.Tensor, ky: torch.Tensor) -> tuple[bool, int | None]:
    """Whether ``kx`` and ``ky`` are the same labels (source ``i`` and target ``i`` share a
    class), and if they also come sorted in equal blocks of at least two samples per class
    (the balanced batches of ``api.make_batch_fn``), the block's size; else None. One host
    synchronisation."""
    if kx.shape != ky.shape or kx.ndim != 1 or len(kx) == 0:
        return False, None
    counts = torch.bincount(kx - kx.min())
    flags = torch.stack([(kx == ky).all(), (kx[1:] >= kx[:-1]).all()]).to(counts)
    *counts_list, same, ordered = torch.cat([counts, flags]).tolist()
    present = {c for c in counts_list if c}
    if same and ordered and len(present) == 1 and min(present) >= 2:
        return True, present.pop()
    return bool(same), None


def classes_on_both_sides(kx: torch.Tensor, ky: torch.Tensor, num_classes: int) -> list[int]:
    """The classes with at least two samples in ``kx`` and in ``ky`` (a class-wise match needs
    both); an error when there is none."""
    found = [k for k in range(num_classes) if (kx == k).sum() > 1 and (ky == k).sum() > 1]
    if not found:
        raise ValueError("No class has at least two samples on both sides of this batch.")
    return found


def implicit_hj_residual(
    potential: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cost: Cost,
    x: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """Residual of the implicit solution formula (the paper's eq. 9) at points ``(x, t)``:
    ``u(x, t) - u(x - t gradH(p), 0) - t (p . gradH(p) - H(p))`` with ``p = grad_x u(x, t)``.
    Differentiable in the network parameters (``create_graph=True``)."""
    x = x.detach().requires_grad_(True)
    t = t.reshape(-1, 1)
    u = potential(x, t)
    (p,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    v = cost.grad_hamiltonian(p)
    u0 = potential(x - t * v, torch.zeros_like(t))
    return u - u0 - t[:, 0] * cost.action(p)


def batch_jacobian(y: torch.Tensor, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Per-sample Jacobians ``d y[n] / d x[n]``, shape ``(n, y_dim, x_dim)``, for ``y`` computed
    row by row from ``x`` (one backward pass per output dimension)."""
    return torch.stack([
        torch.autograd.grad(y[:, i].sum(), x, retain_graph=True, create_graph=create_graph)[0]
        for i in range(y.shape[1])
    ], 1)


def hamiltonian_hessian(cost: Cost, p: torch.Tensor) -> torch.Tensor:
    """Per-sample Hessians ``D^2 H(p)``, shape ``(n, d, d)``, by autograd, without a graph."""
    p = p.detach().requires_grad_(True)
    with torch.enable_grad():
        return batch_jacobian(cost.grad_hamiltonian(p), p)


def hamiltonian_hvp(cost: Cost, p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-sample products ``D^2 H(p) w`` (one backward pass), without a graph."""
    p = p.detach().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad((cost.grad_hamiltonian(p) * w.detach()).sum(), p)[0]


def cost_monotone_matrix(cost: Cost, p: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
    """The symmetric part of ``J D^2H(p)`` for the forward map's Jacobian ``J = I + t_f D^2H(p)
    Hess u(x, 0)``. It equals ``t_f D^2H (S) D^2H`` with ``S = (t_f D^2H)^-1 + Hess u(x, 0)``,
    so it has the signs of the eigenvalues of ``S`` (Sylvester) without an inverse to take;
    ``S >= 0`` is the second-order condition of c-concavity (Gangbo and McCann:
    ``Hess_x c(x, T(x)) + Hess u(x, 0) >= 0``, ``Hess_x c = (t_f D^2H(p))^-1`` by Legendre
    duality), i.e. the map is locally c-monotone. For the quadratic cost it is the symmetric
    part of ``J``, whose positivity method.md section 7 asks of an optimal map."""
    m = jac @ hamiltonian_hessian(cost, p).to(jac.dtype)
    return 0.5 * (m + m.transpose(1, 2))
