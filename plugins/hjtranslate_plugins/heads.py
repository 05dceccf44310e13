"""Built-in potential heads: an MLP ``u(x, t)``, a class-conditional ``u(x, t; k)`` (FiLM) and
an affine-map head (the Hopf-Lax quadratic alone).

The MLP and conditional heads can add a quadratic term to the network (optimal potentials
between Gaussian-like measures are quadratic in ``x``, so the network only learns the rest):

- ``quadratic=True`` (or ``"affine"``): ``x^T (A0 + t A1) x / 2 + (b0 + t b1) . x``, free in ``t``;
- ``quadratic="hopf_lax"``: the exact solution of ``u_t + |grad u|^2 / 2 = 0`` (the quadratic
  cost) from a quadratic ``u(x, 0)``, given by the Hopf-Lax formula. With it, the HJ residual of
  the quadratic part is zero by construction and every affine monotone map (the OT maps between
  Gaussians) is represented exactly, so the HJ loss and the distribution match no longer pull
  against each other there. ``t_max`` (the map's ``t_f``) bounds the times it must stay valid for;
  its parameters learn ``quadratic_gain`` times faster than the network's.
- ``quadratic="hopf_lax_spd"`` (``fit``'s default for the quadratic cost up to 64 dimensions):
  the same solution with ``I + t_max A = exp(S)``, ``S`` symmetric. Better conditioned than
  ``hopf_lax``'s eigenbasis (which gets no gradient while its eigenvalues are equal, as at the
  start), and it can start
  from any affine monotone map: ``fit`` starts it at the OT map between Gaussians fitted to the
  data (its warm start), and the network, whose output layer then starts at zero, learns the rest.
- ``quadratic="hopf_lax_basis"`` (``fit``'s default above 64 dimensions): the eigenbasis form,
  with the basis a fixed ``Q0`` (the warm start's) times a learned rotation; one ``d x d`` solve
  a call where ``hopf_lax_spd`` needs one per collocation point.
- ``quadratic="hopf_lax_per_class"`` (conditional head): one Hopf-Lax part per class, each
  warm-started at the Gaussian OT map between its class's samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hjtranslate.heads import ComputedOnce, PotentialHead

ACTIVATIONS = {"silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "gelu": nn.GELU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}; choose a smooth one of {sorted(ACTIVATIONS)} "
            "(the HJ loss needs second derivatives)."
        )
    return ACTIVATIONS[name]()


class _Quadratic(nn.Module):
    """``x^T (A0 + t A1) x / 2 + (b0 + t b1) . x`` with low-rank-free symmetric matrices."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a0 = nn.Parameter(torch.zeros(dim, dim))
        self.a1 = nn.Parameter(torch.zeros(dim, dim))
        self.b = nn.Parameter(torch.zeros(2, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a0 = 0.5 * (self.a0 + self.a0.T)
        a1 = 0.5 * (self.a1 + self.a1.T)
        quad = 0.5 * ((x @ a0) * x).sum(-1) + 0.5 * t[:, 0] * ((x @ a1) * x).sum(-1)
        return quad + (x * self.b[0]).sum(-1) + t[:, 0] * (x * self.b[1]).sum(-1)


class _HopfLaxPart(nn.Module):
    """What the Hopf-Lax quadratics share: the time bound ``t_max``, the learning-rate ``gain``
    and the linear coefficient ``b`` (stored divided by ``gain``; one per class with
    ``num_classes``)."""

    def __init__(self, dim: int, t_max: float, gain: float, num_classes: int | None = None) -> None:
        super().__init__()
        if not 0 < float(t_max) < math.inf:
            raise ValueError(f"t_max must be a finite number > 0, got {t_max!r}.")
        if not 0 < float(gain) < math.inf:
            raise ValueError(f"quadratic_gain must be a finite number > 0, got {gain!r}.")
        self.t_max = float(t_max)
        self.gain = float(gain)
        self.b = nn.Parameter(torch.zeros(dim) if num_classes is None else torch.zeros(num_classes, dim))


class _HopfLaxQuadratic(_HopfLaxPart):
    """``u(x, t) = min_y u0(y) + |x - y|^2 / (2 t)`` for ``u0(y) = y^T A y / 2 + b . y``.

    ``A = Q diag(lam) Q^T`` with ``Q = exp(S - S^T)`` (orthogonal) and ``lam = (exp(s) - 1) / t_max``,
    so ``I + t A`` stays positive definite for ``t <= t_max`` (the minimiser is unique, the map
    ``y -> y + t (A y + b)`` monotone). In the eigenbasis, with ``mu = 1 + t lam``, the minimiser is
    ``y = (Q^T x - t Q^T b) / mu`` and ``u = lam y^2 / 2 + b y + t (lam y + b)^2 / 2`` per coordinate.
    All parameters start at zero: ``u = 0``, the identity map.

    The parameters are stored divided by ``gain``: Adam moves each by about the learning rate per
    step, and these few parameters carry the whole affine part of the map (a mean shift of
    several units), so they get a ``gain`` times larger step than the network's weights. With
    the network's rate they could not travel far enough (2-D Gaussians, 3,000 steps, lr 1e-3:
    L2-UVP 32 % at gain 1, 0.03 % at gain 10)."""

    def __init__(self, dim: int, t_max: float = 1.0, gain: float = 10.0) -> None:
        super().__init__(dim, t_max, gain)
        self.skew = nn.Parameter(torch.zeros(dim, dim))
        self.log_mu = nn.Parameter(torch.zeros(dim))

    def _in_eigenbasis(self, x: torch.Tensor, t: torch.Tensor):
        """``u(x, t)``, its gradient in the eigenbasis, and the basis ``Q``."""
        skew, log_mu, b = self.gain * self.skew, self.gain * self.log_mu, self.gain * self.b
        q = torch.linalg.matrix_exp(skew - skew.T)
        lam = torch.expm1(log_mu) / self.t_max
        xr, br = x @ q, q.T @ b
        y = (xr - t * br) / (1 + t * lam)
        grad0 = lam * y + br  # grad u0(y), the momentum carried along the characteristic
        return (0.5 * lam * y * y + br * y + 0.5 * t * grad0 * grad0).sum(-1), grad0, q

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._in_eigenbasis(x, t)[0]

    def value_and_grad(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u(x, t)`` and, in closed form, ``grad_x u(x, t)``: the momentum ``A y + b``."""
        u, grad0, q = self._in_eigenbasis(x, t)
        return u, grad0 @ q.T


class _HopfLaxSPD(_HopfLaxPart, ComputedOnce):
    """The Hopf-Lax quadratic of :class:`_HopfLaxQuadratic` with ``I + t_max A = exp(S)`` for a
    symmetric ``S``: then ``I + t A = (1 - t / t_max) I + (t / t_max) exp(S)`` is positive definite
    for every ``t`` in ``[0, t_max]`` (a convex combination of two such matrices), and ``u`` is
    evaluated with one linear solve per distinct time instead of an eigendecomposition.

    Why not the eigen-parametrisation: at its start (``A = 0``) every eigenvalue is equal, so
    the rotation gets no gradient, and later only in proportion to eigenvalue gaps; the basis
    aligns slowly. Here the map's Jacobian moves with ``S`` from the first step (measured on the
    16-D Gaussian pair, 1,000 steps: see BENCHMARKS.md)."""

    def __init__(self, dim: int, t_max: float = 1.0, gain: float = 10.0) -> None:
        super().__init__(dim, t_max, gain)
        self.sym = nn.Parameter(torch.zeros(dim, dim))

    def value_and_grad(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u(x, t)`` and, in closed form, ``grad_x u(x, t)``: the momentum ``A y + b``."""
        a, b, eye = self.once((x.dtype, x.device), lambda: self._matrices(x.dtype, x.device))
        t = t.reshape(-1, 1).to(x.dtype)
        rhs = x - t * b
        # One time for the whole batch (the maps): one inverse. Not when u is differentiated in
        # t (the shared value would hide each sample's own time from autograd).
        if not (t.requires_grad and torch.is_grad_enabled()) and bool((t == t[:1]).all()):
            # (the _ex forms skip the error check, a host synchronisation on a GPU: I + t A is
            # positive definite for t in [0, t_max], and a NaN would reach the loss's check)
            y = rhs @ torch.linalg.inv_ex(eye + t[0, 0] * a)[0]  # symmetric; 2x faster than a solve
        else:
            y = torch.linalg.solve_ex(eye + t[:, :, None] * a, rhs.unsqueeze(-1))[0].squeeze(-1)
        ya = y @ a
        grad0 = ya + b  # grad u0(y) (a is symmetric), the momentum along the characteristic
        return (y * (0.5 * ya + b)).sum(-1) + 0.5 * t[:, 0] * (grad0 * grad0).sum(-1), grad0

    def _matrices(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """``A``, ``b`` and the identity, from the parameters alone."""
        s = (self.gain * 0.5 * (self.sym + self.sym.T)).to(dtype)
        eye = torch.eye(self.sym.shape[0], dtype=dtype, device=device)
        a = (torch.linalg.matrix_exp(s) - eye) / self.t_max
        return 0.5 * (a + a.T), (self.gain * self.b).to(dtype), eye  # A symmetric to round-off

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.value_and_grad(x, t)[0]

    @torch.no_grad()
    def set_affine_map(self, matrix: torch.Tensor, offset: torch.Tensor) -> None:
        """Start from the map ``x -> matrix @ x + offset`` at ``t = t_max`` (``matrix`` symmetric
        positive definite): ``exp(S) = matrix``, ``b = offset / t_max``."""
        m = 0.5 * (matrix + matrix.T).double()
        evals, evecs = torch.linalg.eigh(m)
        if not bool((evals > 0).all()):
            raise ValueError("The affine map's matrix must be symmetric positive definite.")
        log_m = evecs @ torch.diag(evals.log()) @ evecs.T
        self.sym.copy_((log_m / self.gain).to(self.sym))
        self.b.copy_((offset.double() / (self.t_max * self.gain)).to(self.b))


class _ClassHopfLax(_HopfLaxPart, ComputedOnce):
    """One Hopf-Lax quadratic per class (``quadratic="hopf_lax_per_class"``, conditional head
    only): ``u(x, t; k)`` is the exact solution from ``u0(y) = y^T A_k y / 2 + b_k . y``, in the
    eigenbasis form of :class:`_HopfLaxQuadratic`: ``I + t_max A_k = Q_k diag(exp(log_mu_k)) Q_k^T``
    with ``Q_k = Q0_k cayley(W_k - W_k^T)``, ``cayley(S) = (I - S)^-1 (I + S)``. Each class
    starts from, and can keep, its own affine monotone map: ``fit`` warm-starts class ``k`` at
    the Gaussian OT map between the class-``k`` samples, with ``Q0_k`` (a buffer) the eigenbasis
    of that map, so the eigenvalues are apart and the rotation gets its gradient from the first
    step (from a cold start, all eigenvalues equal, it gets none, as in ``hopf_lax``). (A single
    pooled Gaussian map was measured to be a poor start for ten class-wise maps: BENCHMARKS.md,
    digits-to-fashion.) ``Q0`` is orthogonal to the precision it was set in (a map cast to
    float64 after a float32 warm start is exact to about 1e-7).

    Why the eigenbasis rather than ``exp(S_k)``: ``u`` at per-sample times then needs no linear
    solves, only one matrix product of the batch with all ``K`` bases; with ``exp(S_k)`` a
    64-d class-conditional training step took 2.5x the time of one with the shared part."""

    def __init__(self, dim: int, num_classes: int, t_max: float = 1.0, gain: float = 10.0) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}.")
        k = int(num_classes)
        super().__init__(dim, t_max, gain, num_classes=k)
        self.register_buffer("q0", torch.eye(dim).repeat(k, 1, 1))
        self.skew = nn.Parameter(torch.zeros(k, dim, dim))
        self.log_mu = nn.Parameter(torch.zeros(k, dim))

    def _bases(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Every class's basis side by side ``(d, K d)``, eigenvalues ``(K, d)`` and ``Q_k^T b_k``
        ``(K, d)``, from the parameters alone."""
        d = self.skew.shape[-1]
        skew = (self.gain * self.skew).to(dtype)
        skew = skew - skew.transpose(1, 2)
        eye = torch.eye(d, dtype=dtype, device=device)
        # The Cayley transform, about exp(2 skew) near the identity and orthogonal everywhere:
        # 4x cheaper (with its double backward) than matrix_exp at K = 10, d = 64.
        # (I - S is invertible for every skew S: solve_ex skips the check, a GPU synchronisation)
        q = self.q0.to(dtype) @ torch.linalg.solve_ex(eye - skew, eye + skew)[0]  # (K, d, d)
        lam = torch.expm1(self.gain * self.log_mu).to(dtype) / self.t_max
        br = torch.einsum("kij,ki->kj", q, (self.gain * self.b).to(dtype))  # Q_k^T b_k
        return q.permute(1, 0, 2).reshape(d, -1), lam, br

    def forward(self, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        bases, lam, br = self.once((x.dtype, x.device), lambda: self._bases(x.dtype, x.device))
        lam, br = lam[k], br[k]
        # Q_k^T x for every sample: one product with all bases side by side, then each sample's
        # own block (much faster than per-sample matrices).
        xr = (x @ bases).view(n, -1, d)
        xr = xr.gather(1, k.view(n, 1, 1).expand(n, 1, d)).squeeze(1)
        t = t.reshape(-1, 1).to(x.dtype)
        y = (xr - t * br) / (1 + t * lam)
        grad0 = lam * y + br  # grad u0(y), the momentum carried along the characteristic
        return (0.5 * lam * y * y + br * y + 0.5 * t * grad0 * grad0).sum(-1)

    @torch.no_grad()
    def set_affine_maps(self, matrices: torch.Tensor, offsets: torch.Tensor) -> None:
        """Start class ``k`` from ``x -> matrices[k] @ x + offsets[k]`` at ``t = t_max``
        (``matrices[k]`` symmetric positive definite)."""
        if matrices.shape != self.skew.shape or offsets.shape != self.b.shape:
            raise ValueError(
                f"Expected {tuple(self.skew.shape)} matrices and {tuple(self.b.shape)} offsets, "
                f"got {tuple(matrices.shape)} and {tuple(offsets.shape)}."
            )
        evals, evecs = torch.linalg.eigh(0.5 * (matrices + matrices.transpose(1, 2)).double())
        if not bool((evals > 0).all()):
            raise ValueError("The affine maps' matrices must be symmetric positive definite.")
        self.q0.copy_(evecs.to(self.q0))
        self.skew.zero_()
        self.log_mu.copy_((evals.log() / self.gain).to(self.log_mu))
        self.b.copy_((offsets.double() / (self.t_max * self.gain)).to(self.b))


class _BasisHopfLax(_ClassHopfLax):
    """The eigenbasis part of :class:`_ClassHopfLax` with one class, for any head
    (``quadratic="hopf_lax_basis"``; ``fit``'s default for the quadratic cost above 64
    dimensions, ``hjtranslate.api.SPD_MAX_DIM``). It warm-starts like ``hopf_lax_spd`` (the Gaussian OT map's
    eigenbasis is its fixed ``Q0``), and costs one ``d x d`` solve a call plus a product with the
    batch, where ``hopf_lax_spd`` solves one ``d x d`` system per sample at the collocation
    points' own times: memory ``n d^2`` (16 GB at d = 1,024), time ``n d^3``."""

    def __init__(self, dim: int, t_max: float = 1.0, gain: float = 10.0) -> None:
        super().__init__(dim, 1, t_max, gain)

    def forward(self, x: torch.Tensor, t: torch.Tensor,  # type: ignore[override]
                k: torch.Tensor | None = None) -> torch.Tensor:
        """``u(x, t)``; a conditional head's ``k`` is ignored (one part for every class)."""
        return super().forward(x, t, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))

    @torch.no_grad()
    def set_affine_map(self, matrix: torch.Tensor, offset: torch.Tensor) -> None:
        """Start from the map ``x -> matrix @ x + offset`` at ``t = t_max``."""
        self.set_affine_maps(matrix[None], offset[None])


PER_CLASS = "hopf_lax_per_class"


def _quadratic_term(kind: bool | str, dim: int, t_max: float, gain: float,
                    num_classes: int | None = None) -> nn.Module | None:
    if kind in (False, None, "none"):
        return None
    if kind == PER_CLASS:
        if num_classes is None:
            raise ValueError(
                f"quadratic={PER_CLASS!r} needs a conditional head (one part per class): use the "
                "'conditional' head (fit(..., conditional=True); --mode conditional in digits-to-fashion)."
            )
        return _ClassHopfLax(dim, num_classes, t_max, gain)
    if kind in (True, "affine"):
        return _Quadratic(dim)
    if kind == "hopf_lax":
        return _HopfLaxQuadratic(dim, t_max, gain)
    if kind == "hopf_lax_spd":
        return _HopfLaxSPD(dim, t_max, gain)
    if kind == "hopf_lax_basis":
        return _BasisHopfLax(dim, t_max, gain)
    raise ValueError(
        f"quadratic must be False, True / 'affine', 'hopf_lax', 'hopf_lax_spd', 'hopf_lax_basis' "
        f"or {PER_CLASS!r} (conditional head); got {kind!r}."
    )


def _output_layer(width: int, quadratic: bool | str) -> nn.Linear:
    """The network's last layer. Beside a ``hopf_lax_spd`` part (or one per class) it starts at
    zero: that part carries the start (``fit`` warm-starts it at an affine map) and the network
    learns only the correction, not a random distortion. (Not for other costs: u = 0 there can
    put grad H at its singular point p = 0.)"""
    out = nn.Linear(width, 1)
    if quadratic in ("hopf_lax_spd", "hopf_lax_basis", PER_CLASS):
        nn.init.zeros_(out.weight)
    return out


def fourier_matrix(dim: int, features: int, scale: float) -> torch.Tensor:
    """The fixed projections of :class:`MLPHead`'s Fourier features (seeded: rebuilt alike)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(int(dim), int(features), generator=g) * float(scale)


def with_fourier_features(inputs: torch.Tensor, x: torch.Tensor,
                          matrix: torch.Tensor | None) -> torch.Tensor:
    """``inputs`` followed by ``sin(x B), cos(x B)`` (unchanged when ``matrix`` is None)."""
    if matrix is None:
        return inputs
    xb = x @ matrix
    return torch.cat([inputs, torch.sin(xb), torch.cos(xb)], dim=-1)


def _check_sizes(**sizes: int) -> None:
    """A clear error for a layer size below 1 (torch's own is a bare RuntimeError)."""
    for name, value in sizes.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


class MLPHead(PotentialHead):
    """``u(x, t)``: a residual MLP on ``[x, t]`` with smooth activations.

    ``fourier_features=F`` adds ``sin(x B), cos(x B)`` of a fixed Gaussian matrix ``B`` (``dim x
    F``, standard deviation ``fourier_scale``; the same matrix in every run) to the inputs: in
    low dimensions this lets the potential's gradient turn sharply, as the OT map must where the
    target's support is split into pieces (the 2-D pairs of BENCHMARKS.md). The features are
    smooth, so the loss's second derivatives stay defined.
    """

    uses_fit_defaults = True

    def __init__(
        self,
        dim: int,
        width: int = 128,
        depth: int = 3,
        activation: str = "silu",
        quadratic: bool | str = False,
        t_max: float = 1.0,
        quadratic_gain: float = 10.0,
        fourier_features: int = 0,
        fourier_scale: float = 8.0,
    ) -> None:
        super().__init__()
        _check_sizes(dim=dim, width=width, depth=depth)
        if int(fourier_features) < 0 or not float(fourier_scale) > 0:
            raise ValueError(f"fourier_features must be >= 0 and fourier_scale > 0, got "
                             f"{fourier_features!r} and {fourier_scale!r}.")
        self.head_config = {
            "dim": int(dim), "width": int(width), "depth": int(depth),
            "activation": activation, "quadratic": quadratic, "t_max": float(t_max),
            "quadratic_gain": float(quadratic_gain),
        }
        if fourier_features:  # recorded only when used: older checkpoints keep their config
            self.head_config.update(fourier_features=int(fourier_features),
                                    fourier_scale=float(fourier_scale))
            self.register_buffer("fourier", fourier_matrix(dim, fourier_features, fourier_scale))
        else:
            self.fourier = None
        self.inp = nn.Linear(dim + 1 + 2 * int(fourier_features), width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = _output_layer(width, quadratic)
        self.act = _activation(activation)
        self.quadratic = _quadratic_term(quadratic, dim, t_max, quadratic_gain)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return with_fourier_features(torch.cat([x, t], dim=-1), x, self.fourier)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        h = self.act(self.inp(self.features(x, t)))
        for layer in self.hidden:
            h = h + self.act(layer(h))
        u = self.out(h)[:, 0]
        if self.quadratic is not None:
            u = u + self.quadratic(x, t)
        return u


class ConditionalHead(PotentialHead):
    """``u(x, t; k)``: the MLP of :class:`MLPHead` with a class embedding that modulates every
    hidden layer (FiLM: ``h <- h * (1 + gamma_k) + beta_k``)."""

    uses_fit_defaults = True

    conditional = True

    def __init__(
        self,
        dim: int,
        num_classes: int,
        width: int = 256,
        depth: int = 3,
        activation: str = "silu",
        embed_dim: int = 64,
        quadratic: bool | str = False,
        t_max: float = 1.0,
        quadratic_gain: float = 10.0,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}.")
        _check_sizes(dim=dim, width=width, depth=depth, embed_dim=embed_dim)
        self.head_config = {
            "dim": int(dim), "num_classes": int(num_classes), "width": int(width),
            "depth": int(depth), "activation": activation, "embed_dim": int(embed_dim),
            "quadratic": quadratic, "t_max": float(t_max),
            "quadratic_gain": float(quadratic_gain),
        }
        self.num_classes = int(num_classes)
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.inp = nn.Linear(dim + 1, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.film = nn.ModuleList(nn.Linear(embed_dim, 2 * width) for _ in range(depth))
        for film in self.film:  # start as the unconditional MLP
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.out = _output_layer(width, quadratic)
        self.act = _activation(activation)
        self.quadratic = _quadratic_term(quadratic, dim, t_max, quadratic_gain, self.num_classes)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor | None = None
    ) -> torch.Tensor:
        if k is None:
            raise ValueError("The conditional head needs class labels k (one per sample).")
        k = torch.as_tensor(k, device=x.device).long().reshape(-1).expand(x.shape[0])
        if k.numel() and k.device.type != "cpu":  # (a map checked them; no synchronisation here)
            torch._assert_async((k.min() >= 0) & (k.max() < self.num_classes),
                                f"Class labels must lie in 0..{self.num_classes - 1}.")
        elif k.numel() and (int(k.min()) < 0 or int(k.max()) >= self.num_classes):
            raise ValueError(
                f"Class labels must lie in 0..{self.num_classes - 1}, got "
                f"{int(k.min())}..{int(k.max())}."
            )
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        e = self.embed(k)
        layers = [self.inp, *self.hidden]
        h = None
        for i, (layer, film) in enumerate(zip(layers, self.film, strict=True)):
            gamma, beta = film(e).chunk(2, dim=-1)
            z = layer(torch.cat([x, t], -1) if i == 0 else h)
            z = self.act(z * (1 + gamma) + beta)
            h = z if h is None else h + z
        u = self.out(h)[:, 0]
        if isinstance(self.quadratic, _ClassHopfLax):
            u = u + self.quadratic(x, t, k)
        elif self.quadratic is not None:
            u = u + self.quadratic(x, t)
        return u


class AffineHead(PotentialHead):
    """``u(x, t)``: the Hopf-Lax quadratic alone, so ``T(x) = (I + t_f A) x + t_f b`` with ``I + t_f A``
    symmetric positive definite: the family of quadratic-cost OT maps between Gaussians (and of
    the linear Monge-Kantorovich colour transfer). Exact HJ solutions by construction; for the
    quadratic cost only. Few parameters: ``dim (dim + 2)``. ``quadratic="hopf_lax_spd"`` (what
    ``fit`` asks for) is the better-conditioned form; ``"hopf_lax"`` loads earlier maps."""

    uses_fit_defaults = True
    #: the quadratic parts it takes, the one fit should default to first (fit's default above
    #: 64 dimensions, the eigenbasis part, has no closed-form gradient here)
    quadratic_kinds = ("hopf_lax_spd", "hopf_lax")
    #: the costs whose HJ equation it solves (a head without this attribute takes any)
    costs = ("quadratic",)

    def __init__(self, dim: int, t_max: float = 1.0, quadratic_gain: float = 10.0,
                 quadratic: str = "hopf_lax") -> None:
        super().__init__()
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        if quadratic not in self.quadratic_kinds:
            raise ValueError(
                f"The affine head is the Hopf-Lax quadratic of the quadratic cost: quadratic must be "
                f"'hopf_lax' or 'hopf_lax_spd', got {quadratic!r}."
            )
        self.head_config = {"dim": int(dim), "t_max": float(t_max),
                            "quadratic_gain": float(quadratic_gain), "quadratic": quadratic}
        self.quadratic = _quadratic_term(quadratic, int(dim), t_max, quadratic_gain)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.quadratic(x, t.reshape(-1, 1).expand(x.shape[0], 1))  # no gradient to carry

    def momentum(self, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` and ``grad_x u`` in closed form (see :meth:`PotentialHead.momentum`)."""
        return self.quadratic.value_and_grad(x, t.reshape(-1, 1).expand(x.shape[0], 1))
