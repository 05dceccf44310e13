"""The whole training objective in one module, so that DDP sees one forward per step.

``L = L_HJ + lambda * L_MMD`` (paper eq. 14), optionally with the backward-map MMD, class-wise
MMD (shared potential, the paper's class-conditional form) or a conditional head.

Choosing lambda. The paper tunes it by hand. By default we treat the match as a constraint,
``MMD(T#mu, nu) <= (1 + slack) * floor``, where ``floor = E|Y-Y'| (1/n + 1/m)`` is the value the
V-statistic takes between two independent batches of the *same* law (known in closed form, so
the constraint asks for a match at the statistical resolution of the batch and no tighter), and
adapt lambda as a Lagrange multiplier by multiplicative dual ascent (as in GECO, Rezende &
Viola 2018). With the backward match the floor is the mean of both sides' floors (the backward
match compares pulled-back targets with sources, so its floor is the source's). The HJ term
then shapes the map wherever the data no longer discriminates. Where the head cannot reach the
floor, lambda stops rising once the HJ residual is the larger part of the duality gap
(``update_lambda``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .checks import real_number
from .heads import parameters_fixed
from .hjmap import HJMap
from .losses import (
    BATCHED_MMDS,
    FLOORS,
    POOLED_KERNELS,
    batch_jacobian,
    class_blocks,
    classes_on_both_sides,
    classwise,
    cost_monotone_matrix,
    get_mmd,
    hamiltonian_hvp,
    implicit_hj_residual,
    pooled_witness,
)
from .metrics import c_transform_dual, c_transform_dual_target, gap_parts
from .sampling import CollocationSampler

# The pooled match's value costs 3 (pool + n)^2 kernel values, its gradient 2 n (pool + n) a
# step: computed once every 4 turnovers of the pool it adds a third to the gradient's cost (at
# every step it made a 2-D step 9x slower than a plain one).
POOL_VALUE_TURNOVERS = 4
GAP_EMA = 0.99  # the batch gap parts are noisy (the match part is a difference of two means)


@dataclass
class ObjectiveConfig:
    lambda_mmd: float | str = "auto"  # a number fixes lambda
    lambda_init: float = 10.0
    lambda_lr: float = 0.002  # per step, in log space: slow against the primal (measured)
    lambda_slack: float = 0.05
    lambda_range: tuple[float, float] = (1e-1, 1e4)
    mmd: str = "energy"
    # Keyword arguments of the match and its floor, e.g. {"blur": 0.1} for "sinkhorn".
    mmd_options: dict[str, Any] = field(default_factory=dict)
    backward_mmd: bool = True
    classwise: bool = False  # class-wise MMD with a shared (unconditional) potential
    n_colloc: int = 512
    # Weight of the round-trip term |T^-1(T(x)) - x|^2 (and |T(T^-1(y)) - y|^2), in
    # standardised units. Not in the paper: its implicit formula does not rule out a backward
    # branch that matches nu -> mu in law yet is not T's inverse (seen on 4-D Gaussians:
    # backward L2-UVP 34 % beside forward 0.7 %). 0 turns it off.
    cycle_weight: float = 1.0
    # Share of the batch whose round trip is penalised (every 1/share-th sample, so a batch
    # sorted by class keeps every class). The two extra characteristics of the round trip cost
    # about a third of a 64-d step at 1.
    cycle_share: float = 1.0
    # Weight of a penalty on non-monotone directions of the forward map, relu(-w.J w)^2 for one
    # random unit w per sample, J = I + t_f Hess u(x, 0) (quadratic cost: optimal maps are
    # gradients of convex functions, method.md section 7). The implicit formula alone allows
    # crossing characteristics, and a sharp match (Sinkhorn) uses that freedom. 0 turns it off.
    monotone_weight: float = 0.0
    # Which directions the penalty sees: "random" (one per sample, one extra backward pass),
    # "all" (every eigenvalue of the symmetric Jacobian, relu(-lambda_i)^2 summed; d extra
    # backward passes, so meant for low d) or "power" (the least-monotone direction found by
    # a few power iterations, POWER_ITERS extra backward passes without a graph, for high d).
    # A random direction misses a fold along one direction among many (in 64-D it sees almost
    # none; in 2-D it leaves 3-10 % of the points folded). BENCHMARKS.md has the measurements.
    monotone_directions: str = "random"
    # Weight of the batch semi-dual, -(E_y min_i [u(x_i, 0) + c(x_i, y)] - E_x u(x, 0)): the
    # certified dual of metrics.certified_dual on the batch, maximised. Its maximiser is an
    # optimal Kantorovich potential for the batch, and it weighs misplaced mass linearly, where
    # an MMD sees it only quadratically (the checkerboard's far tail, BENCHMARKS.md). Not in the
    # paper. With class labels the c-transform runs within each class. 0 turns it off.
    semidual_weight: float = 0.0
    # Which potential the semi-dual certifies: "source" (u(., 0) and its c-transform over the
    # targets, above), "target" (u(., t_f) over the targets and its c-transform over the
    # sources: the potential the backward map reads) or "both" (their mean).
    semidual_side: str = "source"
    # Samples of earlier batches (per side, newest first) that the match also compares against:
    # the batch is matched to ``pool + batch`` targets, so the match and its floor resolve
    # ``(pool + n) / n`` times finer at a cost linear in the pool (losses.pooled_witness). 0 is
    # the plain batch match. Energy and Gaussian matches only.
    match_pool: int = 0
    # Weight of a term that keeps mapped points where the data's encoder puts its own: with a
    # ``projection`` (for a VAE latent, the latent of the decoded image, encode(decode(z))), the
    # mean squared move |P(z) - z|^2 of ``manifold_samples`` mapped points per direction, beyond
    # the move of the real points on that side. The decoder was trained only near the encoder's
    # outputs, and the backward map's latents sit three times further from them than real
    # digits' latents, which the Frechet distance sees and the latent match does not. Measured
    # on digits-to-fashion, both forms (manifold_gradient) move them closer and neither improves
    # the figures the task's goals read (BENCHMARKS.md, session 37), so it is off by default.
    # Not in the paper. 0 turns it off.
    manifold_weight: float = 0.0
    # A VAE round trip costs about 6 ms per latent with its gradient (one thread), a 64-d step
    # about 130 ms in all: the term reads a few points per step.
    manifold_samples: int = 16
    # How the manifold term moves the map: "through" the projection (its gradient flows through
    # the frozen decoder and encoder) or "toward" it (each mapped point is pulled toward its
    # round trip, held fixed: a projection step that cannot gain by reaching the round trip's
    # own fixed points).
    manifold_gradient: str = "through"

    def __post_init__(self) -> None:
        if isinstance(self.lambda_mmd, str) and self.lambda_mmd != "auto":
            try:
                self.lambda_mmd = float(self.lambda_mmd)
            except ValueError:
                raise ValueError(
                    f"lambda must be 'auto' or a positive number, got {self.lambda_mmd!r}."
                ) from None
        if not isinstance(self.lambda_mmd, str):
            real_number("lambda", self.lambda_mmd)
        for name in ("cycle_weight", "monotone_weight", "semidual_weight", "lambda_slack",
                     "manifold_weight"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}.")
        if isinstance(self.match_pool, bool) or not isinstance(self.match_pool, int) \
                or self.match_pool < 0:
            raise ValueError(f"match_pool must be a whole number >= 0, got {self.match_pool!r}.")
        if self.match_pool and self.mmd not in POOLED_KERNELS:
            raise ValueError(f"match_pool needs an energy or gaussian match, not {self.mmd!r}; "
                             "set match_pool=0 or choose mmd='energy'.")
        if isinstance(self.manifold_samples, bool) or not isinstance(self.manifold_samples, int) \
                or self.manifold_samples < 1:
            raise ValueError(f"manifold_samples must be a whole number >= 1, got {self.manifold_samples!r}.")
        if self.manifold_gradient not in MANIFOLD_GRADIENTS:
            raise ValueError(f"manifold_gradient must be one of {MANIFOLD_GRADIENTS}, got "
                             f"{self.manifold_gradient!r}.")
        if not 0 < self.cycle_share <= 1:
            raise ValueError(f"cycle_share must be in (0, 1], got {self.cycle_share}.")
        if self.semidual_side not in SEMIDUAL_SIDES:
            raise ValueError(f"semidual_side must be one of {SEMIDUAL_SIDES}, got "
                             f"{self.semidual_side!r}.")
        if self.monotone_directions not in MONOTONE_DIRECTIONS:
            raise ValueError(f"monotone_directions must be one of {MONOTONE_DIRECTIONS}, got "
                             f"{self.monotone_directions!r}.")
        allowed = set(inspect.signature(get_mmd(self.mmd)).parameters) - {"x", "y"}
        unknown = sorted(set(self.mmd_options) - allowed)
        if unknown:
            raise ValueError(f"The {self.mmd!r} match takes no option {unknown}; it takes "
                             f"{sorted(allowed) or 'none'}.")


def _rows(k: torch.Tensor | None, part: slice) -> torch.Tensor | None:
    return None if k is None else k[part]


MONOTONE_DIRECTIONS = ("random", "all", "power")
SEMIDUAL_SIDES = ("source", "target", "both")
MANIFOLD_GRADIENTS = ("through", "toward")
POWER_ITERS = (2, 6)  # iterations for the spectral radius, then for the least eigenvalue


def least_monotone_direction(pushed: torch.Tensor, xs: torch.Tensor, w: torch.Tensor,
                             iters: tuple[int, int] = POWER_ITERS) -> torch.Tensor:
    """Per sample, a unit direction ``w`` near the eigenvector of the least eigenvalue of the
    map's (symmetric) Jacobian ``J = d pushed / d xs``, from the start ``w``: power iterations on
    ``J`` estimate its spectral radius ``rho``, then on ``rho I - J``, whose top eigenvector is
    ``J``'s least one. Vector products by backward passes without a graph, so the result
    carries none: the penalty differentiates ``w^T J w`` at this ``w``."""
    def jv(v):
        return torch.autograd.grad((pushed * v).sum(), xs, retain_graph=True)[0]

    def unit(v):
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)

    w = w.detach()
    v = w
    for _ in range(iters[0]):
        v = unit(jv(v))
    rho = jv(v).norm(dim=1, keepdim=True)
    v = w
    for _ in range(iters[1]):
        v = unit(rho * v - jv(v))
    return v


class HJObjective(nn.Module):
    """Wraps an :class:`HJMap`; ``forward(batch)`` returns the loss and its terms."""

    def __init__(
        self, hjmap: HJMap, config: ObjectiveConfig, sampler: CollocationSampler | None = None,
        projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        #: set by ``fit``, which checked every label of its data against the map's classes
        self.labels_checked = False
        if config.manifold_weight and projection is None:
            raise ValueError("manifold_weight needs a projection (for a VAE latent, the "
                             "encoder's round_trip); set manifold_weight=0 or pass one.")
        self.map = hjmap
        self.config = config
        self.sampler = sampler or CollocationSampler()
        self.mmd = functools.partial(get_mmd(config.mmd), **config.mmd_options)
        self.mmd_floor = functools.partial(FLOORS[config.mmd], **config.mmd_options)
        lam = config.lambda_init if config.lambda_mmd == "auto" else float(config.lambda_mmd)
        self.register_buffer("log_lambda", torch.tensor(math.log(lam), dtype=torch.float64))
        self.register_buffer("ratio_ema", torch.tensor(-1.0, dtype=torch.float64))
        # Long averages of the two parts of the batch duality gap (see update_lambda).
        self.register_buffer("gap_ema", torch.full((2,), float("nan"), dtype=torch.float64))
        # Earlier batches' samples for match_pool, per side: (matched, labels, reference, labels).
        # Not saved with checkpoints: they refill within match_pool / batch steps.
        self.pools: dict[str, tuple[torch.Tensor, ...]] = {}
        # Per side, the pooled match's last value and floor and the steps since (see _pooled_match).
        self.pool_values: dict[str, tuple[Any, Any, float]] = {}
        # A plain function (not a submodule: its weights are frozen and not the map's).
        self.projection = projection
        # Per side (source, target), the mean squared move of real points under the projection:
        # what the manifold term allows the mapped points (set_manifold_floor). Not a buffer:
        # fit sets it from the data on every start, and checkpoints keep their keys.
        self.manifold_floor = torch.zeros(2, dtype=torch.float64)

    def _move(self, z: torch.Tensor) -> torch.Tensor:
        """Squared move of each point (map coordinates) under the projection (data coordinates);
        with manifold_gradient="toward" the projected point is held fixed."""
        m = self.map
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and self.config.manifold_gradient == "through"):
            # the projection (a VAE round trip) may compute on another device
            back = (self.projection(z * m.scale + m.shift).to(z) - m.shift) / m.scale
        return (back - z).pow(2).sum(1)

    @torch.no_grad()
    def set_manifold_floor(self, xs: torch.Tensor, yt: torch.Tensor, n: int = 1024) -> None:
        """The manifold term's allowance: the mean squared move of up to ``n`` real points per
        side (map coordinates), spread over each set."""
        for i, z in enumerate((xs, yt)):
            step = max(1, len(z) // n)
            self.manifold_floor[i] = float(self._move(z[::step][:n]).mean())  # stays on the CPU

    def _manifold(self, z: torch.Tensor, side: int) -> torch.Tensor:
        """The mapped points' excess move over the real points of ``side`` (0 source, 1
        target), on ``manifold_samples`` of them spread over the batch (so every class of a
        batch sorted by class is seen)."""
        n = self.config.manifold_samples
        part = z[:: max(1, len(z) // n)][:n]
        return torch.relu(self._move(part).mean() - self.manifold_floor[side].to(z))

    @property
    def adaptive(self) -> bool:
        return self.config.lambda_mmd == "auto"

    def _match(self, a, ka, b, kb, block: int | None = None) -> torch.Tensor:
        if self.config.classwise and ka is not None:
            return classwise(self.mmd, a, ka, b, kb, self.map.num_classes or int(ka.max()) + 1,
                             block=block)
        return self.mmd(a, b)

    def _block(self, ks: torch.Tensor | None, kt: torch.Tensor | None) -> tuple[bool, int | None]:
        """Whether the batch is aligned (source i and target i share a class), and the block
        size that lets the class-wise match and floor run batched (losses.class_blocks)."""
        if ks is None or kt is None:
            return False, None
        aligned, block = class_blocks(ks, kt)
        if not (self.config.classwise and self.config.mmd in BATCHED_MMDS):
            block = None
        return aligned, block

    def _pooled_match(self, side: str, x: torch.Tensor, kx: torch.Tensor | None, y: torch.Tensor,
                      ky: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Match and floor against this side's pool of earlier batches (match_pool): the
        gradient every step (losses.pooled_witness), the value (all pairs, no graph) once every
        POOL_VALUE_TURNOVERS turnovers of the pool, which it costs a third of what the gradient
        does; the adaptive lambda moves slowly enough to wait for it. Then this batch enters
        the pool (in training mode only: evaluating the objective leaves it alone)."""
        name, options, keep = self.config.mmd, self.config.mmd_options, self.config.match_pool
        empty = x.new_zeros((0, x.shape[1]))
        no_labels = torch.zeros(0, dtype=torch.long, device=x.device)
        xp, kxp, yp, kyp = self.pools.get(side, (empty, no_labels, empty, no_labels))
        by_class = self.config.classwise and kx is not None and ky is not None
        if by_class:
            groups = [(kx == k, kxp == k, ky == k, kyp == k) for k in classes_on_both_sides(
                kx, ky, self.map.num_classes or int(kx.max()) + 1)]
        else:
            groups = [(slice(None),) * 4]
        grad = torch.stack([pooled_witness(name, x[i], xp[ip], y[j], yp[jp], **options)
                            for i, ip, j, jp in groups]).mean()
        value, floor, age = self.pool_values.get(side, (None, None, math.inf))
        if age >= POOL_VALUE_TURNOVERS * math.ceil(keep / len(x)) or not self.training:
            with torch.no_grad():
                a, b = torch.cat([x.detach(), xp]), torch.cat([y.detach(), yp])
                ka = kb = None
                if by_class:
                    ka, kb = torch.cat([kx, kxp]), torch.cat([ky, kyp])
                value = self._match(a, ka, b, kb)
                floor = self._floor(b, kb, a, ka)
            age = 0
        if self.training:
            self.pool_values[side] = (value, floor, age + 1)

            def push(new, pool):  # newest first, the oldest beyond match_pool dropped
                return no_labels if new is None else torch.cat([new.detach(), pool])[:keep]

            self.pools[side] = (push(x, xp), push(kx, kxp), push(y, yp), push(ky, kyp))
        return value + grad, floor

    def forward(
        self,
        xs: torch.Tensor,
        yt: torch.Tensor,
        ks: torch.Tensor | None = None,
        kt: torch.Tensor | None = None,
        generator_seed: int | None = None,
    ) -> dict[str, torch.Tensor]:
        # one graph, one set of parameters: the head's parts derived from them are made once.
        # The labels are checked once (by fit for all its data, else here for this step), not
        # again at each head call (a GPU synchronisation each; a conditional head still asserts
        # on a GPU without one), so a wrong label is a clear error, not a device assertion.
        if not self.labels_checked:
            self._check_labels(ks, kt)
        self.map._labels_checked = True
        try:
            with parameters_fixed(self.map.head):
                return self._terms(xs, yt, ks, kt, generator_seed)
        finally:
            self.map._labels_checked = False

    def _check_labels(self, *labels: torch.Tensor | None) -> None:
        """Class labels within the map's classes, as the map's own calls check them (a shared
        potential's labels only pick the class-wise match, which would pass over a class outside
        them)."""
        for k in labels:
            if k is not None:
                self.map._labels(k, k.numel(), k.device)

    def _terms(self, xs: torch.Tensor, yt: torch.Tensor, ks: torch.Tensor | None,
               kt: torch.Tensor | None, generator_seed: int | None) -> dict[str, torch.Tensor]:
        m, cost, t_f = self.map, self.map.cost, self.map.t_f
        gen = None
        if generator_seed is not None:
            gen = torch.Generator(device=xs.device).manual_seed(int(generator_seed))
        # Collocation points; with labels, batches are aligned (source i and target i share
        # a class), so segments stay within a class and each point keeps its source's class.
        aligned, block = self._block(ks, kt)
        xc, tc, src = self.sampler(xs, yt, self.config.n_colloc, t_f, generator=gen, aligned=aligned)
        kc = ks[src] if m.conditional else None

        def pot(x, t):
            return m.head(x, t, kc)

        hj = implicit_hj_residual(pot, cost, xc, tc).pow(2).mean()

        ks_map = ks if m.conditional else None
        kt_map = kt if m.conditional else None
        xs = xs.detach().requires_grad_(True)
        u0, p0 = m.momentum(xs, 0.0, ks_map, create_graph=True)
        pushed = xs + t_f * cost.grad_hamiltonian(p0)
        pooled = bool(self.config.match_pool)
        if pooled:
            mmd, floor = self._pooled_match("forward", pushed, ks, yt, kt)
        else:
            mmd = self._match(pushed, ks, yt, kt, block)
        monotone = None
        if self.config.monotone_weight:
            monotone = self._monotone_penalty(pushed, xs, p0, gen)
        terms = {"hj": hj, "mmd": mmd}
        uy = None  # u(y, t_f), computed once when the semi-dual's target side needs it
        if self.config.semidual_weight and self.config.semidual_side != "source":
            uy = m.potential(yt.detach(), t_f, kt_map)
        if self.config.semidual_weight:
            terms["semidual"] = self._semidual(xs.detach(), u0, yt.detach(), uy, ks, kt)
        match = mmd
        if self.config.backward_mmd:
            yt_ = yt.detach().requires_grad_(True)
            pulled = yt_ - t_f * m.velocity(yt_, t_f, kt_map, create_graph=True)
            if pooled:
                terms["mmd_back"], floor_back = self._pooled_match("backward", pulled, kt, xs.detach(), ks)
                floor = 0.5 * (floor + floor_back)
            else:
                terms["mmd_back"] = self._match(pulled, kt, xs.detach(), ks, block)
            match = 0.5 * (mmd + terms["mmd_back"])
        cycle = hj.new_zeros(())
        if self.config.cycle_weight:
            every = max(1, round(1 / self.config.cycle_share))
            part = slice(None, None, every)
            back = pushed[part] - t_f * m.velocity(pushed[part], t_f, _rows(ks_map, part), create_graph=True)
            cycle = (back - xs[part]).pow(2).mean()
            if self.config.backward_mmd:
                again = pulled[part] + t_f * m.velocity(pulled[part], 0.0, _rows(kt_map, part),
                                                        create_graph=True)
                cycle = 0.5 * (cycle + (again - yt[part]).pow(2).mean())
            terms["cycle"] = cycle
        lam = self.log_lambda.exp().to(hj.dtype)
        with torch.no_grad():
            if not pooled:  # (the pooled match gave its own floor)
                floor = self._floor(yt, kt, xs, ks, block)
                if self.config.backward_mmd:
                    # The backward match lives on the source side: its floor is the source's.
                    floor = 0.5 * (floor + self._floor(xs, ks, yt, kt, block))
        terms["loss"] = hj + self.config.cycle_weight * cycle + lam * match
        if self.config.manifold_weight:
            parts = [self._manifold(pushed, 1)]  # pushed sources should look like targets
            if self.config.backward_mmd:
                parts.append(self._manifold(pulled, 0))
            terms["manifold"] = torch.stack(parts).mean()
            terms["loss"] = terms["loss"] + self.config.manifold_weight * terms["manifold"]
        if "semidual" in terms:
            terms["loss"] = terms["loss"] - self.config.semidual_weight * terms["semidual"]
        if monotone is not None:
            terms["monotone"] = monotone
            terms["loss"] = terms["loss"] + self.config.monotone_weight * monotone
        terms["ratio"] = (match.detach() / floor.clamp_min(1e-12))
        terms["lambda"] = lam.detach()
        if self.adaptive:
            terms.update(self._batch_gap(xs.detach(), pushed.detach(), u0.detach(), yt, ks_map, kt_map,
                                         None if uy is None else uy.detach()))
        return terms

    def _semidual(self, xs: torch.Tensor, u0: torch.Tensor, yt: torch.Tensor,
                  uy: torch.Tensor | None, ks: torch.Tensor | None,
                  kt: torch.Tensor | None) -> torch.Tensor:
        """The batch's certified dual (standardised units) from the configured side,
        differentiable through the potential's values there; with labels the minimum runs
        within each class (see metrics.c_transform_dual)."""
        m, side = self.map, self.config.semidual_side
        duals = []
        if side in ("source", "both"):
            duals.append(c_transform_dual(u0, xs, yt, m.cost, m.t_f, ks, kt))
        if side in ("target", "both"):
            duals.append(c_transform_dual_target(uy, xs, yt, m.cost, m.t_f, ks, kt))
        return sum(duals) / len(duals)

    @torch.no_grad()
    def _batch_gap(self, xs, pushed, u0, yt, ks, kt, uy=None) -> dict[str, torch.Tensor]:
        """The two parts of the duality gap (metrics.duality_gap) on this batch, relative to its
        mean cost: ``gap_residual``, mean of ``u(T(x), t_f) - u(x, 0) - c(x, T(x))`` (what the
        HJ term drives to zero), and ``gap_match``, ``E u(T(x), t_f) - E u(y, t_f)`` (what the
        match drives to zero). Two forward passes of the head (one when ``uy = u(yt, t_f)`` is
        given), no backward."""
        m = self.map
        c = m.cost.cost(xs, pushed, m.t_f)
        up = m.potential(pushed, m.t_f, ks)
        if uy is None:
            uy = m.potential(yt, m.t_f, kt)
        return gap_parts(c, u0, up, uy, c.mean().abs().clamp_min(1e-12))

    def _monotone_penalty(self, pushed: torch.Tensor, xs: torch.Tensor, p0: torch.Tensor,
                          gen: torch.Generator | None) -> torch.Tensor:
        # For a cost other than the quadratic one, local optimality asks sym(J D^2H(p)) >= 0,
        # not J >= 0 (see cost_monotone_matrix): w^T J D^2H(p) w >= 0 for every w.
        cost = self.map.cost
        if self.config.monotone_directions == "all":
            jac = batch_jacobian(pushed, xs, create_graph=True)
            sym = cost_monotone_matrix(cost, p0, jac)
            eig = torch.linalg.eigvalsh(sym)
            return torch.relu(-eig).pow(2).sum(1).mean()
        w = torch.randn(xs.shape, generator=gen, device=xs.device, dtype=xs.dtype)
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.config.monotone_directions == "power":
            w = least_monotone_direction(pushed, xs, w)
        (jw,) = torch.autograd.grad((pushed * w).sum(), xs, create_graph=True)
        hw = hamiltonian_hvp(cost, p0, w)
        hw = hw / hw.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.relu(-(jw * hw).sum(1)).pow(2).mean()

    def _floor(self, ref: torch.Tensor, kref: torch.Tensor | None, other: torch.Tensor,
               kother: torch.Tensor | None, block: int | None = None) -> torch.Tensor:
        """Expected match between ``len(other)`` samples of the law of ``ref`` and ``ref``
        (class-wise, averaged over classes, when the match is; batched over the classes with
        a ``block``, as in losses.classwise)."""
        if self.config.classwise and block is not None:
            return self.mmd_floor(ref.reshape(-1, block, ref.shape[-1]), block).mean()
        if self.config.classwise and kref is not None and kother is not None:
            return torch.stack([
                self.mmd_floor(ref[kref == k], int((kother == k).sum()))
                for k in classes_on_both_sides(kref, kother, int(kref.max()) + 1)
            ]).mean()
        return self.mmd_floor(ref, len(other))

    @torch.no_grad()
    def update_lambda(self, ratio: float, gap_residual: float | None = None,
                      gap_match: float | None = None) -> None:
        """One multiplicative dual-ascent step on lambda from the (all-reduced) ratio of the
        match term to its statistical floor. Same inputs on every rank keep ranks identical.

        When the match cannot reach its floor (the head cannot represent the target that
        closely), dual ascent alone raises lambda without end, and past the point where the
        match dominates the gradient (Adam is blind to the loss's scale) a larger lambda no
        longer tightens the match, it only weakens the HJ term: the map leaves its
        characteristics and its cost overshoots exact OT (p = 3 in BENCHMARKS.md). So lambda
        rises only while the match part of the duality gap is at least as large as the residual
        part (long averages of ``gap_match`` and ``gap_residual``): raising lambda trades the
        second for the first, and it stops paying once the second is the larger error.
        """
        if not self.adaptive or not math.isfinite(ratio):
            return
        ratio = max(ratio, 0.0)  # a debiased Sinkhorn match can dip below 0 by round-off
        ema = float(self.ratio_ema)
        ema = ratio if ema < 0 else 0.9 * ema + 0.1 * ratio
        self.ratio_ema.fill_(ema)
        # A match of 0 (the samples already agree, e.g. two single-colour images) lowers lambda
        # at the full rate instead of taking log(0).
        step = self.config.lambda_lr * math.tanh(
            math.log(max(ema, 1e-12) / (1 + self.config.lambda_slack)))
        gaps = torch.tensor([math.nan if g is None else g for g in (gap_residual, gap_match)],
                            dtype=torch.float64, device=self.gap_ema.device)
        if torch.isfinite(gaps).all():
            old = self.gap_ema
            self.gap_ema.copy_(torch.where(old.isnan(), gaps, GAP_EMA * old + (1 - GAP_EMA) * gaps))
            if step > 0 and abs(float(self.gap_ema[0])) > abs(float(self.gap_ema[1])):
                step = 0.0
        lo, hi = self.config.lambda_range
        self.log_lambda.copy_((self.log_lambda + step).clamp(math.log(lo), math.log(hi)))

