"""The HJ loss, the maps, saving and loading, bad input."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import hjtranslate as hjt
from hjtranslate.losses import FLOORS, MMDS, batch_jacobian, implicit_hj_residual


def test_implicit_formula_vanishes_on_a_closed_form_solution():
    # Quadratic H, u0(x) = a|x|^2/2: u(x, t) = a|x|^2 / (2 (1 + a t)) solves u_t + |u_x|^2/2 = 0.
    cost = hjt.get_cost("quadratic")
    a = 0.7

    def u(x, t):
        return a * (x * x).sum(-1) / (2 * (1 + a * t[:, 0]))

    x = torch.randn(64, 3, dtype=torch.float64)
    t = torch.rand(64, 1, dtype=torch.float64)
    assert implicit_hj_residual(u, cost, x, t).abs().max() < 1e-12

    def wrong(x, t):  # the initial data frozen in time is not a solution
        return a * (x * x).sum(-1) / 2

    assert implicit_hj_residual(wrong, cost, x, t).abs().max() > 1e-2


def _quadratic_only_map(head: str, quadratic: str, t_f: float):
    """A float64 3-D map whose network part is zero (constant), so u is its quadratic part."""
    kwargs = {"quadratic": quadratic, "t_max": t_f}
    if head != "affine":
        kwargs.update(width=8, depth=2)
    if head == "conditional":
        kwargs["embed_dim"] = 4
    m = hjt.HJMap(dim=3, head=head, head_kwargs=kwargs, t_f=t_f,
                  num_classes=2 if head == "conditional" else None).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.head.parameters():
            p.zero_()
    return m, m.head.quadratic


def _affine_map(quad, t_f: float, x: torch.Tensor, k: torch.Tensor | None) -> torch.Tensor:
    """``(I + t_f A) x + t_f b`` of a Hopf-Lax part, from its parameters (class ``k``'s)."""
    if hasattr(quad, "sym"):  # hopf_lax_spd: exp(S)
        e = torch.linalg.matrix_exp(quad.gain * 0.5 * (quad.sym + quad.sym.T))
        return x @ e + t_f * quad.gain * quad.b
    skew, log_mu = quad.gain * quad.skew, quad.gain * quad.log_mu  # Q diag(mu) Q^T
    skew = skew - skew.transpose(-1, -2)
    if skew.ndim == 3:  # hopf_lax_per_class: Q_k = Q0_k cayley(W_k - W_k^T), one map per class
        eye = torch.eye(skew.shape[-1], dtype=skew.dtype)
        q = quad.q0 @ torch.linalg.solve(eye - skew, eye + skew)
        m = q @ torch.diag_embed(torch.exp(log_mu)) @ q.transpose(1, 2)
        return torch.einsum("nij,nj->ni", m[k], x) + t_f * quad.gain * quad.b[k]
    q = torch.linalg.matrix_exp(skew)
    return x @ (q @ torch.diag(torch.exp(log_mu)) @ q.T) + t_f * quad.gain * quad.b


@pytest.mark.parametrize("quadratic,head", [
    ("hopf_lax", "mlp"), ("hopf_lax", "conditional"), ("hopf_lax", "affine"),
    ("hopf_lax_spd", "mlp"), ("hopf_lax_spd", "conditional"), ("hopf_lax_spd", "affine"),
    ("hopf_lax_per_class", "conditional"),
])
def test_hopf_lax_quadratic_solves_hj_and_gives_an_exact_affine_map(quadratic, head):
    """The head's Hopf-Lax quadratic part has zero HJ residual for any parameters (at per-sample
    times, and at one time shared by the batch), its forward map is the affine monotone map
    x -> (I + t_f A) x + t_f b, and the backward map inverts it."""
    t_f = 1.5
    m, quad = _quadratic_only_map(head, quadratic, t_f)
    with torch.no_grad():
        for p in quad.parameters():
            p.normal_(0, 0.05)
    if hasattr(quad, "q0"):  # any orthogonal start basis per class
        quad.q0.copy_(torch.linalg.qr(torch.randn(quad.q0.shape, dtype=torch.float64))[0])
    k = torch.arange(64) % 2 if head == "conditional" else None
    x = torch.randn(64, 3, dtype=torch.float64)
    t = torch.rand(64, 1, dtype=torch.float64) * t_f
    residual = implicit_hj_residual(lambda z, s: m.head(z, s, k), m.cost, x, t)
    assert residual.abs().max() < 1e-10
    # The PDE itself, u_t + |grad u|^2 / 2 = 0, at one time shared by the batch.
    ts = torch.full((64, 1), 0.7, dtype=torch.float64, requires_grad=True)
    xs = x.clone().requires_grad_(True)
    u_t, u_x = torch.autograd.grad((quad(xs, ts, k) if hasattr(quad, "q0") else quad(xs, ts)).sum(), (ts, xs))
    torch.testing.assert_close(u_t[:, 0], -0.5 * (u_x * u_x).sum(-1))
    y = m.forward(x, k)
    torch.testing.assert_close(y, _affine_map(quad, t_f, x, k))
    torch.testing.assert_close(m.backward(y, k), x)


@pytest.mark.parametrize("quadratic", ["hopf_lax", "hopf_lax_spd"])
def test_affine_heads_closed_form_momentum_is_the_gradient(quadratic):
    """The affine head's closed-form ``momentum`` (what its maps use, without autograd) equals
    the autograd gradient of its potential, at per-sample times and at one shared time."""
    t_f = 1.5
    m, quad = _quadratic_only_map("affine", quadratic, t_f)
    with torch.no_grad():
        for p in quad.parameters():
            p.normal_(0, 0.05)
    x = torch.randn(64, 3, dtype=torch.float64, requires_grad=True)
    for t in (torch.rand(64, 1, dtype=torch.float64) * t_f, torch.full((64, 1), 0.7, dtype=torch.float64)):
        u = m.head(x, t)
        (grad,) = torch.autograd.grad(u.sum(), x)
        u_cf, grad_cf = m.head.momentum(x, t)
        torch.testing.assert_close(u_cf, u)
        torch.testing.assert_close(grad_cf, grad)
    u_map, p_map = m.momentum(x.detach(), 0.7)  # the maps' path: no graph
    assert not u_map.requires_grad and not p_map.requires_grad
    torch.testing.assert_close(p_map, m.momentum(x.detach(), 0.7, create_graph=True)[1].detach())


def test_unknown_quadratic_is_a_clear_error():
    with pytest.raises(ValueError, match="hopf_lax_spd"):
        hjt.HJMap(dim=2, head_kwargs={"quadratic": "cubic"})


def test_warm_start_is_the_gaussian_map_of_the_sample_moments():
    """``fit`` starts the ``hopf_lax_spd`` part at the OT map between the Gaussians fitted to the
    samples; between Gaussian samples that is the closed-form map up to sampling error."""
    from hjtranslate.api import linear_warm_start
    from hjtranslate.metrics import gaussian_ot_map

    g = torch.Generator().manual_seed(0)
    a0, a1 = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    s0, s1 = a0 @ a0.T / 4 + 0.2 * torch.eye(4), a1 @ a1.T / 4 + 0.2 * torch.eye(4)
    m0, m1 = torch.randn(4, generator=g), torch.randn(4, generator=g)
    z0 = m0 + torch.randn(40000, 4, generator=g) @ torch.linalg.cholesky(s0).T
    z1 = m1 + torch.randn(40000, 4, generator=g) @ torch.linalg.cholesky(s1).T
    m = hjt.HJMap(dim=4, head="affine", head_kwargs={"quadratic": "hopf_lax_spd"})
    assert linear_warm_start(m, z0, z1)
    _, true = gaussian_ot_map(m0.double(), s0.double(), m1.double(), s1.double())
    x = z0[:2000]
    err = (m.forward(x).double() - true(x.double())).pow(2).sum(1).mean() / s1.trace()
    assert err < 1e-3  # L2-UVP under 0.1 %
    cold = hjt.HJMap(dim=4, head="affine", head_kwargs={"quadratic": "hopf_lax_spd"})
    assert (cold.forward(x).double() - true(x.double())).pow(2).sum(1).mean() / s1.trace() > 0.1
    # The eigenbasis part (the default above 64 dimensions) starts there too, labels or not.
    for labels in ((), (torch.zeros(len(z0), dtype=torch.long), torch.zeros(len(z1), dtype=torch.long))):
        b = hjt.HJMap(dim=4, head_kwargs={"quadratic": "hopf_lax_basis", "width": 8, "depth": 1})
        assert linear_warm_start(b, z0, z1, *labels)
        assert (b.forward(x).double() - true(x.double())).pow(2).sum(1).mean() / s1.trace() < 1e-3
    # Heads without such a part are left alone.
    assert not linear_warm_start(hjt.HJMap(dim=4, head_kwargs={"quadratic": "hopf_lax"}), z0, z1)


def test_above_64_dimensions_the_default_part_solves_once_per_call():
    """``hopf_lax_spd`` solves a d x d system per collocation point (out of memory at d = 1,024):
    above 64 dimensions ``fit`` takes the eigenbasis part, warm-started alike."""
    from hjtranslate.api import default_head_kwargs

    assert default_head_kwargs(64)["quadratic"] == "hopf_lax_spd"
    assert default_head_kwargs(65)["quadratic"] == "hopf_lax_basis"
    assert default_head_kwargs(65, "pnorm")["quadratic"] is True
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 80, generator=g)
    scale = torch.linspace(0.5, 2.0, 80)
    m = hjt.fit(x, x * scale + 1.0, steps=3, batch_size=256, seed=0,
                labels=(torch.arange(3000) % 2, torch.arange(3000) % 2))
    assert m.head.head_config["quadratic"] == "hopf_lax_basis"
    xt = torch.randn(500, 80, generator=g)
    uvp = (m.forward(xt) - (xt * scale + 1.0)).pow(2).sum(1).mean() / scale.pow(2).sum()
    assert uvp < 0.05  # the warm start's Gaussian map, not the identity (UVP about 1.2)
    # the conditional head takes the same part (one for every class)
    c = hjt.fit(x, x * scale + 1.0, steps=2, batch_size=256, seed=0, conditional=True,
                labels=(torch.arange(3000) % 2, torch.arange(3000) % 2))
    assert c.head.head_config["quadratic"] == "hopf_lax_basis"
    assert (c.forward(xt, 1) - (xt * scale + 1.0)).pow(2).sum(1).mean() / scale.pow(2).sum() < 0.05
    # a part the caller names keeps the heads' gain
    chosen = hjt.fit(x, x * scale + 1.0, steps=1, batch_size=256, head_kwargs={"quadratic": "hopf_lax_basis"})
    assert chosen.head.head_config["quadratic_gain"] == 10.0 and m.head.head_config["quadratic_gain"] == 1.0
    # the affine head has no eigenbasis part: it keeps its own first kind (it refused to build)
    affine = hjt.fit(x, x * scale + 1.0, head="affine", steps=1, batch_size=256)
    assert affine.head.head_config == {**affine.head.head_config, "quadratic": "hopf_lax_spd",
                                       "quadratic_gain": 10.0}
    with pytest.raises(ValueError, match="The 'affine' head solves the HJ equation of the quadratic"):
        hjt.fit(x[:, :2], x[:, :2] + 1, cost=hjt.get_cost("pnorm", p=3), head="affine", steps=1)


def test_duality_gap_splits_into_residual_and_match_and_its_error_bar_is_calibrated():
    """For an exact HJ solution (the Gaussian warm start) the characteristic residual vanishes,
    the gap is the match term alone, and ``duality_gap_sd`` is the spread of the gap over
    independent draws of the evaluation samples."""
    from hjtranslate.api import linear_warm_start
    from hjtranslate.metrics import duality_gap

    g = torch.Generator().manual_seed(1)
    a0, a1 = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    l0, l1 = a0 / 2 + torch.eye(4), a1 / 2 + torch.eye(4)
    m1 = torch.randn(4, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 4, generator=g) @ l0.T, m1 + torch.randn(n, 4, generator=g) @ l1.T

    m = hjt.HJMap(dim=4, head="affine", head_kwargs={"quadratic": "hopf_lax_spd"})
    assert linear_warm_start(m, *draw(40000))
    x, y = draw(500)
    own = duality_gap(m, x, m.forward(x))  # the pushed samples as the target: a perfect match
    assert abs(own["gap_residual"]) < 1e-4 and abs(own["gap_match"]) < 1e-6 and own["duality_gap"] < 1e-4
    gaps, sds = [], []
    for _ in range(300):
        r = duality_gap(m, *draw(500))
        assert abs(r["gap_residual"]) < 1e-4
        assert abs(r["duality_gap"] - abs(r["gap_residual"] + r["gap_match"])) < 1e-6
        gaps.append((r["primal"] - r["dual"]) / r["primal"])
        sds.append(r["duality_gap_sd"])
    spread, sd = torch.tensor(gaps).std().item(), torch.tensor(sds).mean().item()
    assert 0.8 < spread / sd < 1.25, (spread, sd)

    # an untrained map: neither part is zero, and they combine as documented
    raw = hjt.HJMap(dim=4, head="mlp", head_kwargs={"width": 16, "depth": 2})
    r = duality_gap(raw, *draw(500))
    assert abs(r["gap_residual"]) > 1e-3 and abs(r["gap_match"]) > 1e-3
    assert abs((r["primal"] - r["dual"]) / r["primal"] - (r["gap_match"] - r["gap_residual"])) < 1e-9
    assert abs(torch.tensor(gaps).mean().item()) < 3 * spread / 300 ** 0.5  # no bias for a perfect map


def test_the_max_gap_of_a_perfect_map_follows_the_half_normal_law():
    from hjtranslate.metrics import perfect_map_max_gap

    one = perfect_map_max_gap([0.01])
    assert abs(one["median_max_gap"] / 0.01 - 0.6745) < 0.01  # median of |N(0, 1)|
    assert abs(one["p_max_under_2pct"] - 0.9545) < 0.005  # P(|Z| < 2)
    ten = perfect_map_max_gap([0.01] * 10)
    assert abs(ten["p_max_under_2pct"] - 0.9545 ** 10) < 0.005  # independent classes
    assert ten["median_max_gap"] > one["median_max_gap"]


def test_per_class_warm_start_gives_each_class_its_gaussian_map():
    """With ``hopf_lax_per_class`` every class starts at the Gaussian OT map between its own
    samples (one pooled map cannot be right for classes that move differently)."""
    from hjtranslate.api import linear_warm_start
    from hjtranslate.metrics import gaussian_ot_map

    g = torch.Generator().manual_seed(1)
    d, n, parts, true = 3, 30000, [], []
    for c in range(2, -1, -1):  # the target side lists its classes in another order
        a0, a1 = torch.randn(d, d, generator=g), torch.randn(d, d, generator=g)
        s0, s1 = a0 @ a0.T / 3 + 0.2 * torch.eye(d), a1 @ a1.T / 3 + 0.2 * torch.eye(d)
        m0, m1 = 3 * torch.randn(d, generator=g), 3 * torch.randn(d, generator=g)
        parts.append((m0 + torch.randn(n, d, generator=g) @ torch.linalg.cholesky(s0).T,
                      m1 + torch.randn(n, d, generator=g) @ torch.linalg.cholesky(s1).T,
                      torch.full((n,), c)))
        true.insert(0, (gaussian_ot_map(m0.double(), s0.double(), m1.double(), s1.double())[1], s1))
    z0, z1, k = (torch.cat(p) for p in zip(*parts, strict=True))
    flip = torch.arange(len(k)).flip(0)
    z1, kt = z1[flip], k[flip]
    # t_max = t_f = 2 and gain 3: the part reaches each class's map at t_f.
    kwargs = {"quadratic": "hopf_lax_per_class", "width": 8, "depth": 2, "embed_dim": 4,
              "t_max": 2.0, "quadratic_gain": 3.0}
    m = hjt.HJMap(dim=d, head="conditional", head_kwargs=kwargs, num_classes=3, t_f=2.0)
    assert not linear_warm_start(m, z0, z1)  # no labels: nothing to start a class from
    assert linear_warm_start(m, z0, z1, k, kt)
    for c, (t, s1) in enumerate(true):
        x = z0[k == c][:2000]
        err = (m.forward(x, torch.full((len(x),), c)).double() - t(x.double())).pow(2).sum(1).mean()
        assert err / s1.trace() < 1e-3  # L2-UVP under 0.1 % in every class
    with pytest.raises(ValueError, match="conditional head"):
        hjt.HJMap(dim=d, head_kwargs={"quadratic": "hopf_lax_per_class"})
    # A class with no more samples than dimensions on a side takes the pooled map.
    few = torch.cat([torch.nonzero(k != 1)[:, 0], torch.nonzero(k == 1)[:3, 0]])
    m2 = hjt.HJMap(dim=d, head="conditional", head_kwargs=kwargs, num_classes=3, t_f=2.0)
    assert linear_warm_start(m2, z0[few], z1, k[few], kt)
    m3 = hjt.HJMap(dim=d, head="affine", head_kwargs={"quadratic": "hopf_lax_spd", "t_max": 2.0}, t_f=2.0)
    linear_warm_start(m3, z0[few], z1)
    x = z0[k == 1][:100]
    torch.testing.assert_close(m2.forward(x, torch.ones(100, dtype=torch.long)), m3.forward(x))


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_implicit_formula_for_pnorm_with_linear_data(p):
    # u(x, t) = b.x - t H(b) solves u_t + H(u_x) = 0 for any H.
    cost = hjt.get_cost("pnorm", p=p)
    b = torch.tensor([0.3, -1.2], dtype=torch.float64)

    def u(x, t):
        return x @ b - t[:, 0] * cost.hamiltonian(b[None])[0]

    x, t = torch.randn(32, 2, dtype=torch.float64), torch.rand(32, 1, dtype=torch.float64)
    assert implicit_hj_residual(u, cost, x, t).abs().max() < 1e-10


@pytest.mark.parametrize(("kind", "n", "dim", "reps", "tol"), [
    ("energy", 64, 3, 200, 0.1),
    ("gaussian", 64, 3, 200, 0.1),
    # the Sinkhorn floor is an estimate (its sample bias only roughly shrinks as 1/n)
    ("sinkhorn", 256, 2, 60, 0.15),
])
def test_mmd_floor_matches_two_independent_samples(kind, n, dim, reps, tol):
    mmd, mmd_floor = MMDS[kind], FLOORS[kind]
    g = torch.Generator().manual_seed(0)
    vals, floors = [], []
    for _ in range(reps):
        x, y = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
        vals.append(float(mmd(x, y)))
        floors.append(float(mmd_floor(y, n)))
    mean, floor = sum(vals) / len(vals), sum(floors) / len(floors)
    assert abs(mean / floor - 1) < tol
    shifted = float(mmd(torch.randn(n, dim, generator=g) + 1, torch.randn(n, dim, generator=g)))
    assert shifted > 5 * floor


@pytest.mark.parametrize("kind", ["energy", "gaussian"])
def test_a_balanced_batch_is_matched_class_by_class_in_one_batched_call(kind):
    """The batched class-wise match (losses.classwise with a block) gives the loop's value and
    gradient, and the batched floor the loop's floor: it only runs the classes side by side."""
    from hjtranslate.losses import class_blocks, classwise

    g = torch.Generator().manual_seed(0)
    k = torch.arange(4).repeat_interleave(6)
    x = torch.randn(24, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.randn(24, 3, generator=g, dtype=torch.float64) + k[:, None]
    assert class_blocks(k, k) == (True, 6)
    loop = classwise(MMDS[kind], x, k, y, k, 4)
    batched = classwise(MMDS[kind], x, k, y, k, 4, block=6)
    assert float(batched.detach()) == pytest.approx(float(loop.detach()), rel=1e-12)
    (g_loop,) = torch.autograd.grad(loop, x)
    (g_batched,) = torch.autograd.grad(batched, x)
    torch.testing.assert_close(g_batched, g_loop, rtol=1e-10, atol=1e-12)
    floors = FLOORS[kind](y.reshape(4, 6, 3), 6)
    assert floors.shape == (4,)
    torch.testing.assert_close(floors, torch.stack([FLOORS[kind](y[k == c], 6) for c in range(4)]))


def test_only_same_sorted_equal_blocks_of_labels_run_batched():
    from hjtranslate.losses import class_blocks

    k = torch.tensor([0, 0, 2, 2, 5, 5])
    assert class_blocks(k, k.clone()) == (True, 2)
    assert class_blocks(k, torch.tensor([0, 0, 2, 2, 5, 4])) == (False, None)  # not aligned
    assert class_blocks(torch.tensor([0, 0, 2, 2, 2, 5]), torch.tensor([0, 0, 2, 2, 2, 5])) \
        == (True, None)  # unequal classes
    assert class_blocks(torch.tensor([2, 2, 0, 0]), torch.tensor([2, 2, 0, 0])) == (True, None)
    assert class_blocks(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])) == (True, None)  # 1 each
    assert class_blocks(k, k[:4]) == (False, None)


@pytest.mark.parametrize("mmd", ["energy", "gaussian", "sinkhorn"])
def test_the_objective_matches_a_balanced_batch_as_the_loop_does(mmd, monkeypatch):
    """fit's balanced batches (sorted by class, equal counts) take the batched class-wise match
    and floor; every term of the objective is the loop's."""
    import hjtranslate.objective as objective
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    m = tiny_map(num_classes=3).double()
    obj = HJObjective(m, ObjectiveConfig(mmd=mmd, classwise=True, n_colloc=32)).double()
    g = torch.Generator().manual_seed(1)
    k = torch.arange(3).repeat_interleave(8)
    x = torch.randn(24, 2, generator=g, dtype=torch.float64)
    y = torch.randn(24, 2, generator=g, dtype=torch.float64) + k[:, None]
    calls = []
    original = objective.classwise

    def spy(*args, **kwargs):
        calls.append(kwargs.get("block"))
        return original(*args, **kwargs)

    monkeypatch.setattr(objective, "classwise", spy)
    batched = obj(x, y, k, k, generator_seed=0)
    assert calls == ([8, 8] if mmd != "sinkhorn" else [None, None])
    monkeypatch.setattr(obj, "_block", lambda ks, kt: (True, None))
    loop = obj(x, y, k, k, generator_seed=0)
    for name in ("loss", "mmd", "mmd_back", "ratio", "hj", "cycle"):
        assert float(batched[name].detach()) == pytest.approx(float(loop[name].detach()), rel=1e-9), name


def test_sinkhorn_match_pulls_a_stray_point_that_the_energy_distance_lets_go():
    """The reason the Sinkhorn match exists: once the bulk of two samples agrees, the energy
    distance barely pulls a point left far outside the target, an OT-based match must move it."""
    g = torch.Generator().manual_seed(0)
    y = torch.rand(256, 2, generator=g) * 2 - 1
    x = y[torch.randperm(256, generator=g)].clone()
    x[0] = torch.tensor([4.0, 0.0])  # its partner in y was left behind
    pulls = {}
    for kind in ("energy", "sinkhorn"):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(MMDS[kind](xr, y), xr)
        pulls[kind] = float(grad[0].norm() / grad[1:].norm(dim=1).mean())
    assert pulls["sinkhorn"] > 20 * pulls["energy"]


def test_match_options_reach_the_match_and_its_floor_and_unknown_ones_are_refused():
    from hjtranslate.losses import sinkhorn_divergence, sinkhorn_floor
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 0.5
    obj = HJObjective(tiny_map(), ObjectiveConfig(mmd="sinkhorn", mmd_options={"blur": 0.2}))
    assert float(obj.mmd(x, y)) == pytest.approx(float(sinkhorn_divergence(x, y, blur=0.2)))
    assert float(obj.mmd(x, y)) != pytest.approx(float(sinkhorn_divergence(x, y)))
    assert float(obj.mmd_floor(y, 64)) == pytest.approx(float(sinkhorn_floor(y, 64, blur=0.2)))
    with pytest.raises(ValueError, match="takes no option"):
        ObjectiveConfig(mmd="energy", mmd_options={"blur": 0.2})
    with pytest.raises(ValueError, match="blur must be > 0"):
        sinkhorn_divergence(x, y, blur=0.0)


def tiny_map(**kw):
    kw.setdefault("head_kwargs", {"width": 16, "depth": 2})
    m = hjt.HJMap(dim=kw.pop("dim", 2), **kw)
    torch.manual_seed(0)
    for prm in m.parameters():
        prm.data.normal_(0, 0.3)
    return m


def test_maps_shapes_and_interpolation_endpoints():
    m = tiny_map()
    x = torch.randn(10, 2)
    y = m.forward(x)
    frames = m.interpolate(x, torch.linspace(0, 1, 5))
    assert y.shape == (10, 2) and frames.shape == (5, 10, 2)
    torch.testing.assert_close(frames[0], x)
    torch.testing.assert_close(frames[-1], y)
    assert m.backward(y).shape == (10, 2)
    with torch.no_grad():  # maps work under no_grad (they differentiate u internally)
        torch.testing.assert_close(m.forward(x), y)


def test_gradcheck_of_the_maps():
    m = tiny_map(cost="pnorm", cost_kwargs={"p": 3.0}).double()
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: m.forward(z, create_graph=True), (x,))
    assert torch.autograd.gradcheck(lambda z: m.backward(z, create_graph=True), (x,))


def test_save_load_round_trip(tmp_path):
    m = tiny_map(cost="lp", cost_kwargs={"p": 3.0}, t_f=2.0)
    m.set_normalization(torch.tensor([1.0, -2.0]), 3.0)
    m.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in tmp_path.iterdir()}
    # readable as the umask says, as the config is (safetensors 0.8 writes 0600)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == (
        tmp_path / "config.json").stat().st_mode & 0o777
    m2 = hjt.HJMap.from_pretrained(tmp_path)
    assert not m2.training and m2.t_f == 2.0 and m2.cost.p == 3.0
    x = torch.randn(8, 2)
    torch.testing.assert_close(m2.forward(x), m.forward(x))
    torch.testing.assert_close(m2.backward(x), m.backward(x))
    assert "library_name: hjtranslate" in (tmp_path / "README.md").read_text()
    # the folder around a map, or a file in it: named as what they are
    with pytest.raises(hjt.CheckpointError, match="is a training run or pipeline folder: its map is"):
        hjt.HJMap.from_pretrained(_around(tmp_path))
    with pytest.raises(hjt.CheckpointError, match="is a file: pass the folder"):
        hjt.HJMap.from_pretrained(tmp_path / "config.json")
    # an unfinished run's folder (its record, no map/ yet): said so, not "no 'dim'"
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "toy2d", "steps": 30}))
    with pytest.raises(hjt.CheckpointError, match=r"unfinished is the folder of a `hjtranslate train "
                       r"toy2d` run, not a map: its map is .*map, which is not written yet"):
        hjt.HJMap.from_pretrained(run)
    # the same in a Hub repo's snapshot: the run was not unfinished, its map/ was not fetched
    from hjtranslate.hjmap import _check_describes_a_map

    snapshot = tmp_path / "models--user--run" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (tmp_path / "models--user--run" / "blobs").mkdir()
    with pytest.raises(hjt.CheckpointError, match=r"run's folder, not a map at its top: load its map "
                       r"with subfolder=\"map\""):
        _check_describes_a_map({"task": "toy2d"}, snapshot / "config.json")
    m.save_pretrained(tmp_path)  # an earlier map's folder: replaced
    # a folder of other files is not: a VAE's config.json, a user's README.md
    for name, text in (("config.json", '{"_class_name": "AutoencoderKL"}'), ("README.md", "notes")):
        other = tmp_path.parent / f"other-{name}"
        other.mkdir()
        (other / name).write_text(text)
        with pytest.raises(ValueError, match=f"holds {name} and is not a map's folder"):
            m.save_pretrained(other)
        assert [p.name for p in other.iterdir()] == [name] and (other / name).read_text() == text


def _around(map_dir):
    """A run-like folder holding a copy of ``map_dir`` as map/."""
    import shutil

    run = map_dir.parent / f"{map_dir.name}-run"
    shutil.copytree(map_dir, run / "map")
    return run


def test_fourier_features_round_trip_and_keep_the_maps_differentiable(tmp_path):
    m = hjt.HJMap(2, head_kwargs={"width": 16, "depth": 2, "fourier_features": 8,
                                  "fourier_scale": 3.0}).double()
    assert m.head.fourier.shape == (2, 8) and m.head.inp.in_features == 2 + 1 + 16
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: m.forward(z, create_graph=True), (x,))
    m.save_pretrained(tmp_path)
    assert hjt.HJMap.from_pretrained(tmp_path).config_dict()["head_kwargs"]["fourier_features"] == 8
    torch.testing.assert_close(hjt.HJMap.from_pretrained(tmp_path).double().forward(x.detach()),
                               m.forward(x.detach()))
    assert "fourier_features" not in tiny_map().config_dict()["head_kwargs"]
    with pytest.raises(ValueError, match="fourier_scale > 0"):
        hjt.HJMap(2, head_kwargs={"fourier_features": 4, "fourier_scale": 0.0})
    with pytest.raises(ValueError, match="'conditional' head takes no option fourier_features"):
        hjt.HJMap(2, head="conditional", num_classes=2, head_kwargs={"fourier_features": 4})
    # "none" is every head's architecture: fit passes 0 on only to heads that take it
    m = hjt.fit(torch.randn(40, 2), torch.randn(40, 2), labels=(torch.arange(40) % 2,) * 2,
                conditional=True, steps=1, batch_size=16, head_kwargs={"fourier_features": 0})
    assert "fourier_features" not in m.config_dict()["head_kwargs"]


def test_a_config_this_version_cannot_build_is_a_checkpoint_error(tmp_path):
    import json

    tiny_map().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["head_kwargs"]["quadratic"] = "cubic"  # as a newer version's setting would be
    config["hjtranslate_version"] = "99.0.0"  # ... which a newer version wrote
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(hjt.CheckpointError, match="newer than the installed"):
        hjt.HJMap.from_pretrained(tmp_path)
    config["hjtranslate_version"] = hjt.__version__  # this version wrote it: edited or damaged
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(hjt.CheckpointError, match=f"does not build a map \\(hjtranslate "
                       f"{hjt.__version__} wrote it.*edited or damaged.*cubic"):
        hjt.HJMap.from_pretrained(tmp_path)


def test_conditional_map_needs_labels():
    m = tiny_map(head="conditional", num_classes=3, head_kwargs={"width": 8, "depth": 2, "embed_dim": 4})
    x = torch.randn(6, 2)
    assert m.forward(x, k=torch.tensor([0, 1, 2, 0, 1, 2])).shape == (6, 2)
    assert m.forward(x, k=1).shape == (6, 2)
    with pytest.raises(ValueError, match="class"):
        m.forward(x)
    with pytest.raises(ValueError, match="0..2"):
        m.forward(x, k=5)


def test_map_rejects_bad_input():
    m = tiny_map()
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        m.forward(torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        m.forward(torch.tensor([[0.0, float("nan")]]))
    assert m.forward(torch.empty(0, 2)).shape == (0, 2)  # nothing to move
    assert m.backward(torch.empty(0, 2)).shape == (0, 2)
    # finite in float64, infinite in the map's float32: it mapped to NaN in silence
    with pytest.raises(ValueError, match=r"beyond the range of this map.s float32 \(largest "
                       r"\|value\| 1e\+300"):
        m.forward(torch.tensor([[1e300, 0.0]], dtype=torch.float64))
    # finite in float32 and overflowing inside the potential (a kept 2-D map's): said, not silent
    m = hjt.HJMap.from_pretrained(Path(__file__).parents[1] / "benchmarks" / "maps" / "swissroll-moons-s30")
    with pytest.warns(RuntimeWarning, match="1 of 2 mapped samples came out NaN or Inf"):
        out = m.forward(torch.tensor([[3e38, 3e38], [0.5, 0.5]]))
    assert torch.isfinite(out[1]).all()
    with pytest.warns(RuntimeWarning, match="velocities came out NaN or Inf"):
        m.interpolate(torch.tensor([[3e38, 3e38]]), [0.0, 0.5])
    with pytest.raises(ValueError, match="t_f"):
        hjt.HJMap(dim=2, t_f=0.0)
    with pytest.raises(hjt.PluginError, match="Available costs: .*quadratic"):
        hjt.HJMap(dim=2, cost="nope")


def _two_gaussians(n=2000, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), 0.5 * torch.randn(n, d, generator=g) + torch.tensor([3.0] * d)


def test_fit_transports_a_shifted_gaussian():
    x, y = _two_gaussians()
    m = hjt.fit(x, y, steps=100, batch_size=256, seed=0)
    pushed = m.forward(x[:500])
    # The OT map is y = 3 + x / 2: check the mean and the spread of the pushed samples.
    torch.testing.assert_close(pushed.mean(0), torch.tensor([3.0, 3.0]), atol=0.15, rtol=0)
    assert abs(float(pushed.std(0).mean()) - 0.5) < 0.15
    from hjtranslate.metrics import evaluate_map

    ev = evaluate_map(m, x[:500], y[:1000], exact_n=300)
    assert 0.9 < ev["cost_ratio"] < 1.1 and ev["monotone_share"] > 0.9


@pytest.mark.parametrize("conditional,quadratic", [(False, None), (True, None),
                                                   (True, "hopf_lax_per_class")])
def test_class_conditional_fit(conditional, quadratic, tmp_path):
    g = torch.Generator().manual_seed(1)
    ks = torch.randint(0, 2, (600,), generator=g)
    kt = torch.randint(0, 2, (600,), generator=g)
    x = torch.randn(600, 2, generator=g) + 4 * ks[:, None]
    y = torch.randn(600, 2, generator=g) - 4 * kt[:, None]  # class 1 goes the other way
    head_kwargs = {"quadratic": quadratic} if quadratic else None
    m = hjt.fit(x, y, labels=(ks, kt), conditional=conditional, steps=150, batch_size=128,
                head_kwargs=head_kwargs)
    assert m.conditional == conditional and m.num_classes == 2
    k1 = ks == 1
    pushed = m.forward(x[k1], k=1 if conditional else None)
    assert float(pushed.mean(0).sum()) < -3  # class 1 lands near (-4, -4), not near (0, 0)
    if quadratic:  # the per-class part (and its start bases) survive saving and loading
        m.save_pretrained(tmp_path)
        again = hjt.HJMap.from_pretrained(tmp_path)
        torch.testing.assert_close(again.forward(x[k1], k=1), pushed)
        torch.testing.assert_close(again.backward(pushed, k=1), x[k1], atol=0.05, rtol=0)



def test_fine_tuning_starts_from_the_trained_map_and_keeps_training(tmp_path):
    x, y = _two_gaussians(n=1000)
    m = hjt.fit(x, y, steps=5, batch_size=128, seed=0)  # the warm start is the answer here
    m.save_pretrained(tmp_path / "m")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    y_other = y - 6  # new data: its own warm start or normalisation would move the map far
    for init in (m, tmp_path / "m", str(tmp_path / "m")):
        # A step of a vanishing learning rate: the trained map's weights and normalisation,
        # not a fresh start
        same = hjt.fit(x, y_other, steps=1, lr=1e-12, batch_size=64, init_from=init)
        torch.testing.assert_close(same.forward(x[:200]), m.forward(x[:200]), atol=1e-4, rtol=0)
    for k, v in m.state_dict().items():  # the map passed in is copied, not trained in place
        torch.testing.assert_close(v, before[k])
    assert float(m.forward(x[:500]).mean()) > 2
    tuned = hjt.fit(x, y_other, steps=80, batch_size=128, lr=1e-2, init_from=m)
    assert float(tuned.forward(x[:500]).mean()) < 0  # it learnt the new target (mean -3)
    # the trained map's figures are not carried over; where it came from is recorded
    assert set(tuned.metrics) == {"lambda", "match", "init_from"}
    assert tuned.metrics["init_from"] == "an HJMap" and tuned.metrics["match"] == "energy"
    # the adaptive MMD weight goes on from where the trained map's training left it (also for a
    # map saved before the match was recorded), but not into another match, whose scale differs
    for earlier in ({"lambda": 300.0}, {"lambda": 300.0, "match": "energy"}):
        m.metrics = earlier
        for fixed, expected in (("auto", 300), (50.0, 50)):
            again = hjt.fit(x, y, steps=1, batch_size=64, init_from=m, lambda_mmd=fixed)
            assert again.metrics["lambda"] == pytest.approx(expected, 0.01)
    m.metrics = {"lambda": 300.0, "match": "sinkhorn"}
    with pytest.warns(UserWarning, match="trained with the 'sinkhorn' match and this run uses 'energy'"):
        again = hjt.fit(x, y, steps=1, batch_size=64, init_from=m)
    assert again.metrics["lambda"] == pytest.approx(10.0, 0.01)  # ObjectiveConfig's start
    m.metrics = {}
    with pytest.warns(UserWarning, match="own head settings"):
        hjt.fit(x, y, steps=1, init_from=m, head_kwargs={"width": 8})


@pytest.mark.parametrize(("data", "kwargs", "match"), [
    ("3d", {}, "maps 2-d points and the samples are 3-d"),
    ("2d", {"cost": "pnorm"}, "trained for the cost quadratic"),
    ("2d", {"t_f": 2.0}, "pass t_f=1.0"),
    ("2d", {"head": "affine"}, "its head is 'mlp'"),
    ("conditional", {}, "pass the class labels"),
])
def test_fine_tuning_refuses_a_map_that_does_not_fit_the_data(data, kwargs, match, tmp_path):
    x = torch.randn(100, 2)
    labels = (torch.arange(100) % 2,) * 2
    base = hjt.fit(x, x + 1, steps=1, batch_size=32, conditional=data == "conditional",
                   labels=labels if data == "conditional" else None)
    xs = torch.randn(100, 3) if data == "3d" else x
    with pytest.raises(ValueError, match=match):
        hjt.fit(xs, xs + 1, steps=1, init_from=base, **kwargs)
    with pytest.raises(hjt.CheckpointError, match="No such folder"):
        hjt.fit(x, x, steps=1, init_from=tmp_path / "missing")

def test_fine_tuning_on_a_subset_of_the_maps_classes():
    """A fine-tune keeps its map's class slots: data of classes 1 and 3 of a 4-class map."""
    x = torch.randn(200, 2)
    k = torch.arange(200) % 4
    base = hjt.fit(x, x + 1, steps=1, batch_size=32, conditional=True, labels=(k, k))
    sub = (k == 1) | (k == 3)
    tuned = hjt.fit(x[sub], x[sub] + 1, steps=1, batch_size=32, labels=(k[sub], k[sub]),
                    init_from=base, lr=1e-12)
    assert tuned.num_classes == 4
    torch.testing.assert_close(tuned.forward(x[:8], k[:8]), base.forward(x[:8], k[:8]),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "xs,yt,kwargs,match",
    [
        (torch.randn(10, 2), torch.randn(10, 3), {}, "same dimension"),
        (torch.randn(10), torch.randn(10, 1), {}, r"shape \(n, d\)"),
        (torch.randn(1, 2), torch.randn(10, 2), {}, "at least 2"),
        (torch.full((5, 2), float("inf")), torch.randn(10, 2), {}, "NaN or Inf"),
        (torch.randn(10, 2), torch.randn(10, 2), {"t_f": -1.0}, "t_f"),
        (torch.randn(10, 2), torch.randn(10, 2), {"cost": "wasserstein9"}, "Available costs"),
        (torch.randn(10, 2), torch.randn(10, 2), {"lambda_mmd": -3.0}, "lambda"),
        (torch.randn(10, 2), torch.randn(10, 2), {"labels": (torch.zeros(10), torch.ones(10))}, "one side"),
        (torch.randn(10, 2), torch.randn(10, 2), {"labels": (torch.zeros(10),)}, "a pair"),
        (torch.randn(10, 2), torch.randn(10, 2), {"labels": (["a"] * 10, ["a"] * 10)},
         "must be integer class labels"),
        (torch.randn(10, 2), torch.randn(10, 2),
         {"labels": (torch.arange(10) % 2 * 10**9,) * 2}, "Class ids index the map's classes: got 2 classes"),
        (torch.randn(10, 2), torch.randn(10, 2), {"lr": float("inf")}, "lr must be a finite"),
        (torch.randn(10, 2), torch.randn(10, 2), {"batch_size": 1}, "batch_size must be >= 2"),
        (torch.randn(10, 2), torch.randn(10, 2), {"n_colloc": -5}, "n_colloc must be >= 1"),
        (torch.randn(10, 2), torch.randn(10, 2), {"steps": "three"}, "steps must be a whole number"),
        (torch.randn(10, 2), torch.randn(10, 2), {"steps": 2.5}, "steps must be a whole number"),
        (torch.randn(10, 2), torch.randn(10, 2), {"batch_size": 2.5}, "batch_size must be a whole"),
        (torch.randn(10, 2), torch.randn(10, 2), {"batch_size": "64"}, "batch_size must be a whole"),
        (torch.randn(10, 2), torch.randn(10, 2), {"seed": "a"}, "seed must be a whole number"),
        (torch.randn(10, 2), torch.randn(10, 2), {"seed": -1}, "seed must be between 0 and"),
        (torch.randn(10, 2), torch.randn(10, 2), {"time_budget": "10"}, "time_budget must be a"),
        (torch.randn(10, 2), torch.randn(10, 2), {"lr": "1"}, "lr must be a finite"),
        (torch.randn(10, 2), torch.randn(10, 2), {"conditional": True}, "conditional=True needs labels"),
        (torch.randn(10, 2), torch.randn(10, 2), {"resume": True}, "pass output_dir too"),
        (torch.randn(10, 2), torch.randn(10, 2),
         {"labels": (torch.arange(10) % 3,) * 2, "class_names": ["a"]}, "1 names for 3 classes"),
        (torch.randn(10, 2), torch.randn(10, 2), {"cost": object()}, "or a Cost instance, got object"),
        (torch.randn(10, 2), torch.randn(10, 2), {"cost": hjt.costs.Cost}, "is a class: pass an instance"),
        (None, torch.randn(10, 2), {}, "x_source must be a tensor or array of numbers"),
        ([[1.0], [2.0, 3.0]], torch.randn(10, 2), {}, "x_source must be a tensor or array"),
        # float32, in which the map computes, cannot hold them: not a silent identity or NaN map
        (torch.randn(10, 2, dtype=torch.float64) + 1e8, torch.randn(10, 2, dtype=torch.float64) + 1e8 + 3,
         {}, "x_source's spread is lost in its offset: the map computes in float32, .* Subtract a "
             "common offset in float64"),
        (torch.randn(10, 2), 1_700_000_000 * 10**9 + torch.randint(0, 10**10, (10, 2)), {},
         "y_target's spread is lost"),  # nanosecond timestamps over 10 s
        (torch.randn(10, 2, dtype=torch.float64) * 1e39, torch.randn(10, 2), {},
         "beyond float32's range"),
    ],
)
def test_fit_rejects_bad_input(xs, yt, kwargs, match):
    with pytest.raises((ValueError, TypeError, hjt.PluginError), match=match):
        hjt.fit(xs, yt, **{"steps": 1, **kwargs})


def test_wide_samples_that_float32_holds_well_enough_are_taken():
    """What float32 rounds by less than a thousandth of the data's spread is taken as it is:
    whole-number ids, a nearly constant column beside spread ones."""
    import warnings

    from hjtranslate.api import check_samples

    g = torch.Generator().manual_seed(0)
    years = torch.full((50, 2), 2024, dtype=torch.int64)
    years[0, 0] = 2023
    flat = torch.randn(50, 2, dtype=torch.float64, generator=g)
    flat[:, 1] = 1 + 1e-6 * flat[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        check_samples(years, "x")
        check_samples(flat, "x")
    # a blur between a thousandth and a tenth of the spread is warned of, not refused
    with pytest.warns(UserWarning, match="x is blurred by its offset"):
        check_samples(torch.randn(50, 2, dtype=torch.float64, generator=g) * 100 + 1e8, "x")


def test_fit_standardises_data_whose_squares_overflow_float32():
    """Data at 1e18 (nanosecond timestamps) fit in float32, their squares do not: the
    normalisation is computed in float64, so the map is not NaN."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g) * 1e18
    m = hjt.fit(x, x + 3e18, steps=2, seed=0)
    assert torch.isfinite(m.forward(x[:10])).all() and 0.5e18 < float(m.scale) < 5e18


def test_saving_where_the_process_cannot_write_says_so(tmp_path, monkeypatch):
    """safetensors reports a refused write as its own SafetensorError: it reads as the plain
    permission error it is."""
    import safetensors.torch
    from safetensors import SafetensorError

    def refused(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 1, kind: PermissionDenied, "
                              "message: \"Operation not permitted\" })")

    monkeypatch.setattr(safetensors.torch, "save_file", refused)
    m = hjt.HJMap(dim=2, head_kwargs={"width": 8, "depth": 1})
    with pytest.raises(PermissionError, match="Cannot write the map into .*this process can write to"):
        m.save_pretrained(tmp_path / "m")


def test_fit_takes_graph_carrying_inputs_whole_numbers_and_refuses_a_file_as_output_dir(tmp_path):
    x, y = torch.randn(40, 2), torch.randn(40, 2) + 1
    encoder = torch.nn.Linear(2, 2)
    m = hjt.fit(encoder(x), y, steps=np.int64(3), batch_size=16.0, seed=np.int64(1))  # no graph error
    assert m.forward(x).shape == (40, 2)
    m = hjt.fit(x, y, steps=torch.tensor(2), t_f=torch.tensor(1.0), lr=np.float32(1e-3))
    assert m.t_f == 1.0 and hjt.HJMap(dim=2.0).dim == 2
    with pytest.raises(ValueError, match="steps must be a whole number, got '2'"):
        hjt.fit(x, y, steps="2", output_dir=str(tmp_path / "run"))  # before any checkpoint maths
    assert not (tmp_path / "run").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file: name a folder"):
        hjt.fit(x, y, steps=2, output_dir=str(tmp_path / "afile"))
    assert not (tmp_path / "afile.tmp").exists()


def test_map_rejects_bad_class_ids_times_and_arguments(tmp_path):
    k = torch.arange(30) % 3
    x = torch.randn(30, 2)
    m = hjt.fit(x, x + 1, steps=2, labels=(k, k), conditional=True)
    for bad in (1.9, True, "1", float("nan"), ["a"] * 4):
        with pytest.raises(ValueError, match="k must be integer class ids"):
            m.forward(x[:4], k=bad)
    torch.testing.assert_close(m.forward(x[:4], k=2.0), m.forward(x[:4], k=np.int64(2)))
    assert m.interpolate(torch.empty(0, 2), [0.5], k=[]).shape == (1, 0, 2)
    with pytest.raises(ValueError, match="pass the class of each sample"):
        m.forward(torch.empty(0, 2))
    for ts in ([float("nan")], [-0.1], [0.5, 1.5]):
        with pytest.raises(ValueError, match=f"Interpolation times must lie in .*got {ts[-1]:g}"):
            m.interpolate(x[:2], ts, k=0)
    with pytest.raises(ValueError, match=r"flat sequence of times, got shape \(2, 2\)"):
        m.interpolate(x[:2], [[0.0, 0.5], [0.5, 1.0]], k=0)
    with pytest.raises(ValueError, match=r"z must be a tensor of shape \(n, 2\)"):
        m.potential(torch.randn(4, 3), 0.0, 0)
    for bad in (None, "abc", torch.zeros(3, 2, dtype=torch.complex64)):
        with pytest.raises(ValueError, match="x must"):
            m.forward(bad, k=0)
    with pytest.raises(ValueError, match="dim must be a whole number, got 2.7"):
        hjt.HJMap(2.7)
    assert hjt.HJMap(2, cost=hjt.get_cost("pnorm", p=3)).cost_kwargs == {"p": 3.0}
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file: name a folder"):
        m.save_pretrained(tmp_path / "afile")
    with pytest.raises(NotADirectoryError, match="lies under .*afile, which is a file"):
        m.save_pretrained(tmp_path / "afile" / "sub")
    m.save_pretrained(tmp_path / "map")
    run = tmp_path / "run"  # a run folder: its config.json is the run's, its map is in map/
    (run / "map").mkdir(parents=True)
    (run / "config.json").write_text('{"task": "toy2d"}')
    with pytest.raises(ValueError, match="save the map into its map/ subfolder"):
        m.save_pretrained(run)
    assert (run / "config.json").read_text() == '{"task": "toy2d"}'
    with pytest.raises(TypeError, match=r"keyword arguments \['device'\] \(the device is map_location="):
        hjt.HJMap.from_pretrained(tmp_path / "map", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            hjt.HJMap.from_pretrained(tmp_path / "map", map_location="cuda")
    with pytest.raises(ValueError, match="map_location='gpu' is not a device"):
        hjt.HJMap.from_pretrained(tmp_path / "map", map_location="gpu")


def test_a_bare_missing_name_is_a_missing_folder_not_a_hub_call(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(hjt.CheckpointError, match="No such folder: mymap .*user/name"):
        hjt.HJMap.from_pretrained("mymap")


@pytest.mark.parametrize("classwise", [False, True])
def test_lambda_constraint_is_calibrated_at_the_exact_map(classwise):
    """At the exact OT map the match sits at its statistical floor (ratio near 1), also with the
    backward match and a source 3x wider than the target: each side's match is measured against
    its own side's floor."""
    import math

    from hjtranslate.objective import HJObjective, ObjectiveConfig

    m = hjt.HJMap(dim=2, head_kwargs={"width": 8, "depth": 2, "quadratic": "hopf_lax"}).double()
    with torch.no_grad():
        for p in m.head.parameters():
            p.zero_()
        m.head.quadratic.log_mu.fill_(math.log(1 / 3) / m.head.quadratic.gain)  # T(x) = x / 3
    obj = HJObjective(m, ObjectiveConfig(classwise=classwise, n_colloc=64)).double()
    g = torch.Generator().manual_seed(0)
    ratios, residuals, matches = [], [], []
    for _ in range(200):  # one batch ratio is noisy (relative sd about 0.5)
        xs = 3 * torch.randn(256, 2, generator=g, dtype=torch.float64)
        yt = torch.randn(256, 2, generator=g, dtype=torch.float64)
        k = torch.arange(256) % 2 if classwise else None
        terms = obj(xs, yt, k, k)
        ratios.append(float(terms["ratio"]))
        residuals.append(float(terms["gap_residual"]))
        matches.append(float(terms["gap_match"]))
    assert 0.85 < sum(ratios) / len(ratios) < 1.15
    # The batch duality gap's parts: exact characteristics, and a match that u cannot tell
    # from the target (its mean within three standard errors of 0).
    assert max(map(abs, residuals)) < 1e-9
    sd = torch.tensor(matches).std().item() / len(matches) ** 0.5
    assert abs(sum(matches) / len(matches)) < 3 * sd


@pytest.mark.parametrize(("ratio", "residual", "match", "moves"), [
    (2.0, 0.01, 0.10, "up"),      # the match is the larger error: dual ascent raises lambda
    (2.0, 0.10, 0.01, "held"),    # the HJ residual is: raising lambda would only make it worse
    (2.0, -0.10, 0.01, "held"),   # (either sign)
    (0.5, 0.10, 0.01, "down"),    # the match is met: lambda falls whatever the gap says
    (2.0, None, None, "up"),      # no gap measured (a caller that does not pass it)
])
def test_lambda_rises_only_while_the_match_is_the_larger_part_of_the_gap(ratio, residual, match, moves):
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    obj = HJObjective(hjt.HJMap(dim=2, head_kwargs={"width": 8, "depth": 2}), ObjectiveConfig())
    before = float(obj.log_lambda)
    for _ in range(50):
        obj.update_lambda(ratio, residual, match)
    change = float(obj.log_lambda) - before
    assert {"up": change > 0.05, "held": change == 0, "down": change < -0.05}[moves]


@pytest.mark.parametrize(("slack", "moves"), [(0.05, "down"), (0.005, "up")])
def test_a_smaller_slack_holds_the_match_closer_to_its_floor(slack, moves):
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    # a match 3 % above its floor meets the default slack (5 %) and misses a 0.5 % one
    obj = HJObjective(hjt.HJMap(dim=2, head_kwargs={"width": 8, "depth": 2}),
                      ObjectiveConfig(lambda_slack=slack))
    before = float(obj.log_lambda)
    for _ in range(50):
        obj.update_lambda(1.03, 0.01, 0.10)
    change = float(obj.log_lambda) - before
    assert change < -0.001 if moves == "down" else change > 0.001


def test_power_iterations_find_the_fold_a_random_direction_misses():
    from hjtranslate.objective import least_monotone_direction

    g = torch.Generator().manual_seed(0)
    d = 32  # a linear map folded along one direction among 32: eigenvalues -0.5, 1, ..., 2
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.cat([torch.tensor([-0.5]), torch.linspace(1, 2, d - 1)]).double()
    a = q @ torch.diag(eig) @ q.T
    xs = torch.randn(64, d, generator=g, dtype=torch.float64).requires_grad_(True)
    pushed = xs @ a
    w = torch.randn(64, d, generator=g, dtype=torch.float64)
    w = w / w.norm(dim=1, keepdim=True)
    assert ((w @ a) * w).sum(1).min() > 0  # no random direction sees the fold
    v = least_monotone_direction(pushed, xs, w)
    assert torch.allclose(v.norm(dim=1), torch.ones(64, dtype=torch.float64))
    assert ((v @ a) * v).sum(1).max() < -0.3


@pytest.mark.parametrize("directions", ["random", "all", "power"])
def test_monotone_penalty_is_zero_for_a_monotone_map_and_trains_a_folded_one(directions):
    import math

    from hjtranslate.objective import HJObjective, ObjectiveConfig

    g = torch.Generator().manual_seed(0)
    xs, yt = torch.randn(128, 2, generator=g), torch.randn(128, 2, generator=g)
    shrink = hjt.HJMap(dim=2, head_kwargs={"width": 8, "depth": 2, "quadratic": "hopf_lax"})
    with torch.no_grad():
        for p in shrink.head.parameters():
            p.zero_()
        shrink.head.quadratic.log_mu.fill_(math.log(1 / 3) / shrink.head.quadratic.gain)
    cfg = ObjectiveConfig(monotone_weight=1.0, monotone_directions=directions, n_colloc=32)
    terms = HJObjective(shrink, cfg)(xs, yt)
    assert float(terms["monotone"].detach()) == 0.0
    folded = tiny_map()  # large random weights: its map folds over somewhere
    with torch.no_grad():
        for p in folded.head.parameters():
            p.mul_(4)
    obj = HJObjective(folded, cfg)
    before = float(obj(xs, yt, generator_seed=0)["monotone"].detach())
    assert before > 0
    if directions == "all":  # the penalty is the metrics' Jacobian's negative part, exactly
        from hjtranslate.metrics import forward_jacobian

        eig = torch.linalg.eigvalsh(forward_jacobian(folded, xs))
        assert before == pytest.approx(float(torch.relu(-eig).pow(2).sum(1).mean()), rel=1e-4)
    opt = torch.optim.Adam(folded.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        obj(xs, yt, generator_seed=0)["monotone"].backward()
        opt.step()
    assert float(obj(xs, yt, generator_seed=0)["monotone"].detach()) < 0.5 * before


class _QuadraticPotential(torch.nn.Module):
    """``u(z, t) = sign z^T A z / 2`` with ``A = diag(a)``: a convex or concave potential."""

    def __init__(self, a: list[float], sign: float) -> None:
        super().__init__()
        self.a, self.sign = torch.nn.Parameter(torch.tensor(a)), sign

    def forward(self, z, t, k=None):
        return self.sign * 0.5 * (self.a * z * z).sum(1)


@pytest.mark.parametrize("directions", ["random", "all"])
def test_c_monotone_penalty_for_the_pnorm_cost(directions):
    """With the cost |v|^3 / 3 the map x + grad H(grad u(x, 0)) of a convex, anisotropic u is
    c-optimal though its Jacobian J = I + D^2H Hess u is not symmetric: the penalty (on
    J D^2H, not on J) is zero there and positive for a concave u; the metrics agree."""
    from hjtranslate.metrics import forward_jacobian, monotone_share
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    g = torch.Generator().manual_seed(0)
    xs, yt = torch.randn(128, 2, generator=g), torch.randn(128, 2, generator=g)
    cfg = ObjectiveConfig(monotone_weight=1.0, monotone_directions=directions, n_colloc=32)
    terms = {}
    for sign in (1.0, -1.0):
        m = hjt.HJMap(dim=2, cost="pnorm", cost_kwargs={"p": 3.0})
        m.head = _QuadraticPotential([20.0, 0.2], sign)
        terms[sign] = float(HJObjective(m, cfg)(xs, yt, generator_seed=0)["monotone"].detach())
        share = monotone_share(m, xs)
        assert share == (1.0 if sign > 0 else pytest.approx(0.0, abs=0.05))
        if sign > 0:  # J itself is not symmetric: the quadratic cost's test would not apply
            z = xs.clone().requires_grad_(True)
            jac = batch_jacobian(z + m.velocity(z, 0.0, create_graph=True), z)
            assert (jac - jac.transpose(1, 2)).abs().max() > 0.1
            assert forward_jacobian(m, xs).shape == (128, 2, 2)
    assert terms[1.0] == 0.0 and terms[-1.0] > 0


def test_monotone_share_of_a_conditional_map_takes_more_labels_than_it_checks():
    """``max_n`` truncates the samples and their class labels alike."""
    from hjtranslate.metrics import monotone_share

    m = hjt.HJMap(dim=3, head="conditional", num_classes=2, head_kwargs={"width": 8, "depth": 2})
    x, k = torch.randn(40, 3), torch.arange(40) % 2
    assert monotone_share(m, x, k, max_n=16) == 1.0  # the untrained map is the identity
    torch.manual_seed(0)
    with torch.no_grad():  # large random weights: a map that folds at some points, not others
        for p in m.head.parameters():
            p.normal_(0, 1.5)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1)) * 2
    first = monotone_share(m, x[:16], k[:16])
    assert monotone_share(m, x, k, max_n=16) == first
    assert 0 < first < 1 and monotone_share(m, x, k, max_n=40) != first  # max_n is read


def test_power_directions_of_the_monotone_penalty_need_the_quadratic_cost():
    x = torch.randn(64, 2)
    with pytest.raises(ValueError, match="quadratic cost"):
        hjt.fit(x, x + 1, cost=hjt.get_cost("pnorm", p=3), monotone_weight=1.0, steps=1,
                monotone_directions="power")


def test_fit_is_reproducible_from_its_seed():
    """The seed covers the head's initial weights too (torch's own start seed differs per
    process, so a fresh random draw there made two runs of one command differ)."""
    g = torch.Generator().manual_seed(0)
    xs, yt = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g) + 1
    torch.manual_seed(123)  # whatever the global state before the call
    a = hjt.fit(xs, yt, steps=3, batch_size=64, seed=5).state_dict()
    torch.manual_seed(456)
    b = hjt.fit(xs, yt, steps=3, batch_size=64, seed=5).state_dict()
    c = hjt.fit(xs, yt, steps=3, batch_size=64, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_cycle_share_penalises_every_nth_samples_round_trip_and_bad_values_are_refused():
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    g = torch.Generator().manual_seed(0)
    xs, yt = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    m = tiny_map()
    full = HJObjective(m, ObjectiveConfig(n_colloc=16))
    quarter = HJObjective(m, ObjectiveConfig(n_colloc=16, cycle_share=0.25))
    part = float(quarter(xs, yt)["cycle"].detach())
    assert part > 0
    assert part == pytest.approx(float(full(xs[::4], yt[::4])["cycle"].detach()), rel=1e-5)
    assert part != pytest.approx(float(full(xs, yt)["cycle"].detach()), rel=1e-3)
    for bad in ({"cycle_share": 0.0}, {"cycle_share": 1.5}, {"cycle_weight": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ObjectiveConfig(**bad)


def test_manifold_term_is_the_excess_move_under_the_projection_and_training_lowers_it():
    """With a projection onto the line y = 1 (data coordinates) and real points on it, the
    floor is 0 and the term is the mean squared distance of the mapped points to the line, in
    the map's coordinates, on manifold_samples points per direction spread over the batch."""
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    def onto_line(z):
        return torch.stack([z[:, 0], torch.ones_like(z[:, 1])], 1)

    g = torch.Generator().manual_seed(0)
    xs = torch.stack([torch.randn(64, generator=g), torch.ones(64)], 1)
    yt = torch.stack([torch.randn(64, generator=g) + 2, torch.ones(64)], 1)
    m = tiny_map().double()
    m.set_normalization(torch.tensor([1.0, 1.0]), 2.0)
    zs, zt = ((xs.double() - m.shift) / m.scale, (yt.double() - m.shift) / m.scale)
    cfg = ObjectiveConfig(n_colloc=16, manifold_weight=3.0, manifold_samples=8)
    obj = HJObjective(m, cfg, projection=onto_line).double()
    obj.set_manifold_floor(zs, zt)
    assert obj.manifold_floor.abs().max() < 1e-12
    terms = obj(zs, zt, generator_seed=0)
    pushed, pulled = m.forward(xs.double()), m.backward(yt.double())
    expected = 0.5 * sum(float(((z[::8][:8, 1] - 1) / m.scale).pow(2).mean()) for z in (pushed, pulled))
    assert float(terms["manifold"].detach()) == pytest.approx(expected, rel=1e-9)
    plain = HJObjective(m, ObjectiveConfig(n_colloc=16)).double()(zs, zt, generator_seed=0)
    assert float(terms["loss"].detach()) == pytest.approx(
        float(plain["loss"].detach()) + 3 * expected, rel=1e-9)
    # real points as far off the line as the mapped ones leave nothing to penalise
    obj.manifold_floor[:] = 10 * expected
    assert float(obj(zs, zt)["manifold"].detach()) == 0
    obj.set_manifold_floor(zs, zt)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        obj(zs, zt)["manifold"].backward()
        opt.step()
    assert float(obj(zs, zt)["manifold"].detach()) < 0.5 * expected
    with pytest.raises(ValueError, match="manifold_weight needs a projection"):
        HJObjective(m, cfg)
    # "toward" holds the projection fixed: for P(z) = z / 2 the move |z / 2|^2 has the
    # gradient z / 2 through P and z toward it
    for how, factor in (("through", 0.5), ("toward", 1.0)):
        half = HJObjective(tiny_map(), ObjectiveConfig(manifold_weight=1.0, manifold_gradient=how),
                           projection=lambda z: z / 2)
        z = torch.randn(5, 2, generator=g).requires_grad_(True)
        half._move(z).sum().backward()
        assert torch.allclose(z.grad, factor * z.detach())
    for bad in ({"manifold_samples": 0}, {"manifold_weight": -1.0}, {"manifold_gradient": "up"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ObjectiveConfig(**bad)


def test_certified_dual_bounds_the_exact_cost_and_is_tight_for_the_optimal_potential():
    """The c-transform dual never exceeds exact discrete OT, whatever the potential; for the
    closed-form OT potential between two Gaussians it comes close to it, for a wrong one not."""
    from hjtranslate.metrics import certified_dual, exact_ot_cost

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g, dtype=torch.float64)
    y = torch.randn(400, 2, generator=g, dtype=torch.float64) * torch.tensor([2.0, 0.5]) + 3
    exact = exact_ot_cost(x, y, hjt.get_cost("quadratic"))
    optimal = hjt.HJMap(dim=2, head="affine", head_kwargs={"quadratic": "hopf_lax_spd"}).double()
    optimal.head.quadratic.set_affine_map(torch.diag(torch.tensor([2.0, 0.5])), torch.full((2,), 3.0))
    assert torch.allclose(optimal.forward(x[:5]), x[:5] * torch.tensor([2.0, 0.5]) + 3)
    wrong = hjt.HJMap(dim=2, head="affine", head_kwargs={"quadratic": "hopf_lax_spd"}).double()
    wrong.head.quadratic.set_affine_map(torch.diag(torch.tensor([0.5, 2.0])), torch.full((2,), 3.0))
    ratios = {name: certified_dual(m, x, y) / exact
              for name, m in (("optimal", optimal), ("wrong", wrong), ("random", tiny_map().double()))}
    assert all(r <= 1 + 1e-9 for r in ratios.values())
    assert ratios["optimal"] > 0.97
    assert ratios["wrong"] < 0.9 and ratios["random"] < 0.9


def test_semidual_term_is_the_batch_certified_dual_and_training_raises_it():
    """The objective's semi-dual is metrics.certified_dual on the batch (within each class when
    labelled), enters the loss with a minus sign, and a few steps on it alone raise it."""
    from hjtranslate.metrics import certified_dual
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    m = tiny_map().double()
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(128, 2, generator=g, dtype=torch.float64)
    yt = torch.randn(128, 2, generator=g, dtype=torch.float64) * 0.5 + 1
    obj = HJObjective(m, ObjectiveConfig(semidual_weight=2.0, n_colloc=32)).double()
    terms = obj(xs, yt)
    assert float(terms["semidual"].detach()) == pytest.approx(certified_dual(m, xs, yt), rel=1e-9)
    without = HJObjective(m, ObjectiveConfig(n_colloc=32)).double()(xs, yt, generator_seed=1)
    again = obj(xs, yt, generator_seed=1)
    expected = float(without["loss"].detach()) - 2 * float(again["semidual"].detach())
    assert float(again["loss"].detach()) == pytest.approx(expected)

    k = torch.arange(128) % 2
    per_class = sum(certified_dual(m, xs[k == c], yt[k == c]) for c in (0, 1)) / 2
    assert float(obj(xs, yt, k, k)["semidual"].detach()) == pytest.approx(per_class, rel=1e-9)
    kt = k.clone()
    kt[kt == 1] = 2  # class 1 has no target in this batch, class 2 no source: both left out
    lonely = float(obj(xs, yt, k, kt)["semidual"].detach())
    assert lonely == pytest.approx(certified_dual(m, xs[k == 0], yt[kt == 0]), rel=1e-9)

    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    before = certified_dual(m, xs, yt)
    for _ in range(30):
        opt.zero_grad()
        (-obj(xs, yt)["semidual"]).backward()
        opt.step()
    assert certified_dual(m, xs, yt) > before + 0.05 * abs(before)
    with pytest.raises(ValueError, match="semidual_weight"):
        ObjectiveConfig(semidual_weight=-1.0)


def test_target_side_semidual_certifies_u_at_t_f_and_training_raises_it():
    """semidual_side="target" is mean_j u(y_j, t_f) - mean_i max_j [u(y_j, t_f) - c(x_i, y_j)]
    (written out here pair by pair, within classes), never above exact discrete OT, and a few
    steps on it raise it; "both" is the mean of the two sides."""
    import ot

    from hjtranslate.metrics import c_transform_dual_target
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    m = tiny_map().double()
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(96, 2, generator=g, dtype=torch.float64)
    yt = torch.randn(80, 2, generator=g, dtype=torch.float64) * 0.5 + 1
    cost = m.cost
    with torch.no_grad():
        uy = m.potential(yt, m.t_f)
    c = torch.stack([torch.stack([cost.cost(x, y, m.t_f) for y in yt]) for x in xs])
    by_hand = uy.mean() - (uy[None, :] - c).max(1).values.mean()
    assert float(c_transform_dual_target(uy, xs, yt, cost, m.t_f)) == pytest.approx(float(by_hand))
    exact = ot.emd2(torch.full((96,), 1 / 96, dtype=torch.float64),
                    torch.full((80,), 1 / 80, dtype=torch.float64), c)
    assert float(by_hand) <= float(exact) + 1e-9

    kx, ky = torch.arange(96) % 3, torch.arange(80) % 3
    kx[kx == 2] = 3  # class 2 has no source, class 3 no target: both left out
    best = torch.cat([(uy[None, ky == k] - c[kx == k][:, ky == k]).max(1).values for k in (0, 1)])
    want = uy[ky <= 1].mean() - best.mean()  # per source its class's best target, per target u
    got = c_transform_dual_target(uy, xs, yt, cost, m.t_f, kx, ky)
    assert float(got) == pytest.approx(float(want))

    source = HJObjective(m, ObjectiveConfig(semidual_weight=1.0, n_colloc=32)).double()
    target = HJObjective(m, ObjectiveConfig(semidual_weight=1.0, semidual_side="target",
                                            n_colloc=32)).double()
    both = HJObjective(m, ObjectiveConfig(semidual_weight=1.0, semidual_side="both",
                                          n_colloc=32)).double()
    s, t = (float(o(xs, yt)["semidual"].detach()) for o in (source, target))
    assert t == pytest.approx(float(by_hand), rel=1e-9)
    assert float(both(xs, yt)["semidual"].detach()) == pytest.approx((s + t) / 2, rel=1e-9)

    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        (-target(xs, yt)["semidual"]).backward()
        opt.step()
    assert float(target(xs, yt)["semidual"].detach()) > t + 0.05 * abs(t)
    with pytest.raises(ValueError, match="semidual_side"):
        ObjectiveConfig(semidual_side="middle")


def test_a_foreign_model_folder_is_named_as_not_a_map(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet10t", "num_classes": 10}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(hjt.CheckpointError, match=r"does not describe an hjtranslate map \(resnet10t\)"):
        hjt.HJMap.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["energy", "gaussian"])
def test_pooled_witness_without_pools_is_the_batch_matchs_gradient(name):
    from hjtranslate.losses import pooled_witness

    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(40, 2, generator=g, dtype=torch.float64) + 0.3
    empty = x.new_zeros((0, 2))
    witness = pooled_witness(name, x, empty, y, empty)
    assert float(witness.detach()) == 0
    (got,) = torch.autograd.grad(witness, x)
    (want,) = torch.autograd.grad(MMDS[name](x, y), x)
    torch.testing.assert_close(got, want)


def test_pooled_witness_is_the_full_matchs_gradient_on_the_batch_rows():
    """With pools, the gradient on the batch is |A|/n times that of the energy distance between
    all of A = [batch; pool] and B = [targets; pool] (the pooled samples held fixed)."""
    from hjtranslate.losses import energy_distance, pooled_witness

    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64, requires_grad=True)
    x_pool = torch.randn(50, 2, generator=g, dtype=torch.float64)
    y = torch.randn(40, 2, generator=g, dtype=torch.float64) + 0.3
    y_pool = torch.randn(70, 2, generator=g, dtype=torch.float64) + 0.3
    (got,) = torch.autograd.grad(pooled_witness("energy", x, x_pool, y, y_pool), x)
    (full,) = torch.autograd.grad(energy_distance(torch.cat([x, x_pool]), torch.cat([y, y_pool])), x)
    torch.testing.assert_close(got, full * 80 / 30)


def test_objective_pools_fill_newest_first_only_while_training():
    """match_pool keeps that many earlier samples per side (newest first, with their labels for
    the class-wise match), leaves them alone when the objective is only evaluated, and is
    refused for the Sinkhorn match or a negative size."""
    from hjtranslate.losses import classwise, energy_distance
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    m = tiny_map().double()
    obj = HJObjective(m, ObjectiveConfig(match_pool=100, n_colloc=16, classwise=True)).double()
    g = torch.Generator().manual_seed(2)
    k = torch.arange(64) % 2
    batches = [(torch.randn(64, 2, generator=g, dtype=torch.float64),
                torch.randn(64, 2, generator=g, dtype=torch.float64) + 1) for _ in range(3)]
    first = obj(*batches[0], k, k)
    assert float(first["ratio"]) > 0 and torch.isfinite(first["loss"])
    # the first value is the class-wise batch match (the pools were empty), refreshed every
    # 4 turnovers of the pool (4 ceil(100 / 64) = 8 steps)
    plain = HJObjective(m, ObjectiveConfig(n_colloc=16, classwise=True)).double()
    torch.testing.assert_close(first["mmd"].detach(), plain(*batches[0], k, k)["mmd"].detach())
    assert obj.pool_values["forward"][2] == 1
    assert [len(t) for t in obj.pools["forward"]] == [64, 64, 64, 64]
    second = obj(*batches[1], k, k)
    second["loss"].backward()
    torch.testing.assert_close(second["mmd"].detach(), first["mmd"].detach())  # not yet refreshed
    pushed, labels, targets, target_labels = obj.pools["forward"]
    assert [len(t) for t in obj.pools["forward"]] == [100, 100, 100, 100]
    torch.testing.assert_close(targets[:64], batches[1][1])
    torch.testing.assert_close(targets[64:], batches[0][1][:36])
    assert torch.equal(labels, torch.cat([k, k[:36]])) and torch.equal(target_labels, labels)
    _, _, sources, _ = obj.pools["backward"]
    torch.testing.assert_close(sources[:64], batches[1][0])
    obj.eval()
    evaluated = obj(*batches[2], k, k)  # evaluated afresh against the pools, which stay as they were
    pushed_now = m.forward(batches[2][0], k).detach()
    want = classwise(energy_distance, torch.cat([pushed_now, pushed]), torch.cat([k, labels]),
                     torch.cat([batches[2][1], targets]), torch.cat([k, target_labels]), 2)
    torch.testing.assert_close(evaluated["mmd"].detach(), want)
    torch.testing.assert_close(obj.pools["forward"][2][:64], batches[1][1])
    obj.train()
    ages = []
    for step in range(7):  # steps 3 to 9: the value is refreshed at step 9
        obj(*batches[step % 3], k, k)
        ages.append(obj.pool_values["forward"][2])
    assert ages == [3, 4, 5, 6, 7, 8, 1]
    with pytest.raises(ValueError, match="match_pool needs an energy or gaussian"):
        ObjectiveConfig(mmd="sinkhorn", match_pool=10)
    with pytest.raises(ValueError, match="match_pool"):
        ObjectiveConfig(match_pool=-1)
    with pytest.raises(ValueError, match="match_pool"):
        hjt.fit(torch.randn(20, 2), torch.randn(20, 2), steps=1, match_pool=2.5)


def test_energy_over_draws_sees_a_perfect_map_at_the_level_of_two_target_samples():
    """The identity map of the circles onto themselves is perfect: over 24 fresh draws its
    energy sits at the level of two target samples; the identity from the 8 Gaussians onto the
    circles sits far above."""
    from hjtranslate.tasks.toy2d import energy_over_draws

    m = hjt.HJMap(dim=2, head_kwargs={"width": 8, "depth": 1})
    with torch.no_grad():
        for prm in m.head.parameters():
            prm.zero_()
    x = torch.randn(50, 2)
    torch.testing.assert_close(m.forward(x), x)  # u is constant: the identity map
    same = energy_over_draws(m, "circles", "circles", n=300, draws=24)
    ratio = same["energy_forward_over_two_target_samples"]
    se = same["energy_forward_over_two_target_samples_se"]
    assert abs(ratio - 1) < 3 * se + 0.05 and 0 < se < 0.5
    assert same["energy_forward_over_perfect_map"] == pytest.approx(ratio, rel=0.4)
    other = energy_over_draws(m, "8gaussians", "circles", n=300, draws=4)
    assert other["energy_forward_over_two_target_samples"] > 4
    assert energy_over_draws(m, "circles", "circles", n=300, draws=24) == same  # seeded


def test_metrics_take_inputs_as_the_map_does():
    """The certificates accept what forward accepts: float64 or numpy samples for a float32 map,
    labels as a list, numpy array or one class; inference returns no graph."""
    from hjtranslate import metrics

    m = hjt.HJMap(dim=2, head="mlp", head_kwargs={"width": 16, "depth": 2})
    x = torch.randn(60, 2, dtype=torch.float64)
    assert np.isfinite(metrics.duality_gap(m, x, x + 1)["duality_gap"])
    assert m.transport_cost(x).dtype == torch.float32
    assert 0 <= metrics.monotone_share(m, x) <= 1
    assert "cost_ratio" in metrics.evaluate_map(m, x.numpy(), (x + 1).numpy(), exact_n=40, energy_n=60)
    c = hjt.HJMap(dim=2, head="conditional", num_classes=3, head_kwargs={"width": 16, "depth": 2})
    xs = torch.randn(600, 2)
    for labels in (np.zeros(600, dtype=int), [1] * 600, 2):
        assert 0 <= metrics.monotone_share(c, xs, labels, max_n=512) <= 1
    assert "cost_ratio" in metrics.evaluate_map(c, xs[:80], xs[:80] + 1, 1, [1] * 80, exact_n=40)
    xg = torch.randn(5, 2, requires_grad=True)
    u, p = m.momentum(xg, 0.0)
    assert not u.requires_grad and not p.requires_grad
    assert not m.interpolate(xg, [0.0, 0.5]).requires_grad


def test_a_hopf_lax_part_is_valid_up_to_the_maps_horizon():
    """Built directly with t_f = 2, the affine head's part reaches its map at t_f, monotone (with
    its old default t_max = 1 the same map overshot: T(e1) = -0.4 e1, monotone nowhere)."""
    from hjtranslate import metrics

    m = hjt.HJMap(2, head="affine", t_f=2.0, head_kwargs={"quadratic": "hopf_lax_spd"})
    assert m.head.head_config["t_max"] == 2.0
    m.head.quadratic.set_affine_map(torch.diag(torch.tensor([0.3, 1.5])).double(), torch.zeros(2).double())
    torch.testing.assert_close(m.forward(torch.tensor([[1.0, 0.0]])), torch.tensor([[0.3, 0.0]]))
    assert metrics.monotone_share(m, torch.randn(50, 2)) == 1.0
    assert hjt.HJMap(2, head="affine", t_f=2.0, head_kwargs={"t_max": 3.0}).head.head_config["t_max"] == 3.0


def test_ranks_draw_their_own_batches():
    from hjtranslate.api import make_batch_fn

    z = torch.arange(10_000.0)[:, None]
    batch = make_batch_fn(z, z, None, None, batch_size=16, seed=0)
    seen = {tuple(batch(step, 0)["xs"][:, 0].tolist()) for step in range(8_000)}
    assert not any(tuple(batch(step, 1)["xs"][:, 0].tolist()) in seen for step in range(100))


def test_maps_under_inference_mode_in_half_precision_and_with_a_shared_potentials_labels(tmp_path):
    """The maps work under torch.inference_mode (they differentiate u with inference-tensor
    inputs and labels); a half-precision map says it needs float32 or float64; a shared
    potential checks a k it is given; fit takes integers of any width; save_pretrained refuses
    a misspelt keyword."""
    k = torch.arange(40) % 2
    x = torch.randn(40, 2)
    for conditional in (True, False):
        m = hjt.fit(x, x + 1, steps=2, labels=(k, k), conditional=conditional)
        expected = (m.forward(x[:4], k[:4]), m.backward(x[:4], k[:4]),
                    m.interpolate(x[:4], [0.0, 0.5], k[:4]))
        with torch.inference_mode():
            xi, ki = x[:4].clone(), k[:4].clone()
            got = (m.forward(xi, ki), m.backward(xi, ki), m.interpolate(xi, [0.0, 0.5], ki))
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)
    assert not m.conditional and m.num_classes == 2  # the shared potential
    for bad, match in ((5, r"lie in 0\.\.1"), (-1, r"lie in 0\.\.1"), ("abc", "integer class ids"),
                       ([0, 1, 0], "3 class labels for 4 samples")):
        with pytest.raises(ValueError, match=match):
            m.forward(x[:4], k=bad)
    torch.testing.assert_close(m.forward(x[:4], k=1), m.forward(x[:4]))
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match="runs in float32 or float64.*call .float"):
            copy.deepcopy(m).to(dtype).forward(x[:4])
    for dtype in (torch.int8, torch.int16, torch.uint16):
        assert hjt.fit((x * 10).to(torch.int16).to(dtype), x, steps=1).dim == 2
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['push_to_hbu'\]"):
        m.save_pretrained(tmp_path / "map", push_to_hbu=True)
    assert not (tmp_path / "map").exists()
    m.save_pretrained(tmp_path / "map")
    with torch.inference_mode():  # built and loaded there too (the plugin checks differentiate)
        loaded = hjt.HJMap.from_pretrained(tmp_path / "map")
        hjt.HJMap(2, head="conditional", num_classes=2)
        torch.testing.assert_close(loaded.forward(x[:4], k=1), m.forward(x[:4], k=1))


def test_weights_holding_nan_are_refused_when_loaded(tmp_path):
    """A map file with NaN weights (a damaged file, a diverged run) is refused on loading: its
    NaN translations crashed the process in LAPACK during the Fréchet distance."""
    from safetensors.torch import load_file, save_file

    tiny_map().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name][0] = float("nan")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(hjt.CheckpointError, match=f"hold NaN or infinite values \\({name}"):
        hjt.HJMap.from_pretrained(tmp_path)


def test_class_ids_without_samples_are_warned_of_and_refused_by_the_maps(tmp_path):
    """Ids 3 and 7 make eight class slots; six of them stay untrained: fit says so, and a
    conditional head's maps refuse them (saved with the map) until a fine-tune trains them."""
    x = torch.randn(40, 2)
    k = torch.tensor([3, 7] * 20)
    with pytest.warns(UserWarning, match=r"ids 0, 1, 2, 4, 5, 6 have no samples.*Renumber"):
        shared = hjt.fit(x, x + 1, labels=(k, k), steps=1, batch_size=16)
    assert shared.forward(x, k=0).shape == x.shape  # a shared potential: k does not change it
    with pytest.warns(UserWarning, match="have no samples"):
        m = hjt.fit(x, x + 1, labels=(k, k), conditional=True, steps=1, batch_size=16)
    assert m.untrained_classes == [0, 1, 2, 4, 5, 6]
    assert m.forward(x, k).shape == x.shape
    m.save_pretrained(tmp_path / "m")
    loaded = hjt.HJMap.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=r"Class 0 had no samples when this map was trained "
                       r"\(untrained classes: 0, 1, 2, 4, 5, 6\).*init_from"):
        loaded.forward(x, k=0)
    with pytest.raises(ValueError, match="Class 5 had no samples"):
        loaded.interpolate(x, [0.5], k=torch.tensor([3, 5] * 20))
    with pytest.raises(ValueError, match="Class 6 had no samples"):
        loaded.transport_cost(x, k=6)
    k2 = torch.tensor([0, 3] * 20)
    tuned = hjt.fit(x, x + 1, labels=(k2, k2), init_from=loaded, steps=1, batch_size=16)
    assert tuned.untrained_classes == [1, 2, 4, 5, 6]
    assert tuned.backward(x, k=0).shape == x.shape


def test_exact_ot_cost_refuses_what_pot_would_call_zero():
    from hjtranslate.metrics import exact_ot_cost

    cost = hjt.get_cost("quadratic")
    x = torch.randn(20, 2)
    assert exact_ot_cost(x, x + 1, cost) > 0
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        exact_ot_cost(bad, x, cost)
    with pytest.raises(ValueError, match=r"exact_ot_cost needs at least one sample in x"):
        exact_ot_cost(x[:0], x, cost)


@pytest.mark.parametrize("name", ["duality_gap", "certified_dual", "evaluate_map"])
@pytest.mark.parametrize("side", ["x", "y"])
def test_map_metrics_refuse_an_empty_sample(name, side):
    """A mean over no samples is NaN and a minimum an IndexError: say which sample is empty."""
    from hjtranslate import metrics

    m, x = hjt.HJMap(dim=2), torch.randn(30, 2)
    args = {"x": x, "y": x + 1, side: x[:0]}
    with pytest.raises(ValueError, match=f"{name} needs at least one sample in {side}, got an empty"):
        getattr(metrics, name)(m, args["x"], args["y"])
    with pytest.raises(ValueError, match="energy needs at least one sample in y"):
        metrics.energy(x, x[:0])
    with pytest.raises(ValueError, match="l2_uvp needs at least 2 target samples"):
        metrics.l2_uvp(x, x, x[:1])


def test_a_horizon_far_from_one_is_warned_of():
    """For these costs the optimal map does not depend on t_f, and maps trained far from 1 were
    measured wrong: fit says so."""
    x = torch.randn(64, 2)
    with pytest.warns(UserWarning, match=r"t_f = 10: with the 'quadratic' cost the optimal map does "
                      "not depend on t_f"):
        hjt.fit(x, x + 1, t_f=10.0, steps=1, batch_size=32)


def test_frames_sparse_and_meta_samples():
    """A pandas frame (and series of labels) is read through to_numpy, a sparse tensor made
    dense; a meta tensor, which holds no values, is refused with a message."""
    pd = pytest.importorskip("pandas")
    x = torch.randn(40, 2)
    k = torch.tensor([0, 1] * 20)
    m = hjt.fit(pd.DataFrame(x.numpy()), (x + 1).to_sparse(), labels=(pd.Series(k.numpy()), k),
                conditional=True, steps=1, batch_size=16)
    torch.testing.assert_close(m.forward(pd.DataFrame(x.numpy()), pd.Series(k.numpy())),
                               m.forward(x.to_sparse_csr(), k))
    with pytest.raises(ValueError, match="x is a meta tensor, which holds no values"):
        m.forward(torch.empty(4, 2, device="meta"), 0)
    with pytest.raises(ValueError, match="x_source is a meta tensor"):
        hjt.fit(torch.empty(4, 2, device="meta"), x)
    # labels too: sparse ones are made dense, meta ones refused
    torch.testing.assert_close(m.forward(x, k.to_sparse()), m.forward(x, k))
    with pytest.raises(ValueError, match="k must be integer class ids"):
        m.forward(x, torch.empty(40, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"labels\[0\] \(source\) must be integer class labels"):
        hjt.fit(x, x, labels=(torch.empty(40, dtype=torch.long, device="meta"), k), steps=1)
    tuned = hjt.fit(x, x + 1, labels=(k.to_sparse(), k), init_from=m, steps=1, batch_size=16)
    # a map pickled whole before maps recorded their untrained classes still maps
    del tuned.__dict__["untrained_classes"]
    assert tuned.untrained_classes == [] and tuned.forward(x, k).shape == x.shape
    assert tuned.config_dict()["untrained_classes"] == []


def test_data_given_as_columns_is_warned_of():
    """(d, n) data reads as n-dimensional samples, fewer than their dimensions: fit says so."""
    x = torch.randn(40, 2)
    with pytest.warns(UserWarning, match=r"hold 2 and 2 samples of 40 dimensions.*x_source.T"):
        hjt.fit(x.T, (x + 1).T, steps=1, batch_size=2)


def test_costs_of_large_moves_are_measured_in_float64():
    """|d|**10 / 10 of a move of 10^4 overflows float32: the primal side of the duality gap
    was inf beside a float64 dual."""
    from hjtranslate.metrics import duality_gap

    torch.manual_seed(0)
    m = hjt.HJMap(2, cost="pnorm", cost_kwargs={"p": 10})
    m.set_normalization(torch.zeros(2), 1e4)
    x = torch.randn(200, 2) * 1e4
    assert not torch.isfinite(m.transport_cost(x)).all()  # float32, as the map
    gap = duality_gap(m, x, x + 1)
    assert math.isfinite(gap["primal"]) and gap["primal"] > 3.4e38 / 200
    assert math.isfinite(gap["duality_gap"])


def test_the_affine_head_takes_the_quadratic_cost_only(tmp_path, recwarn):
    """Its potential is the Hopf-Lax quadratic alone: with a p-norm cost it trained a map whose
    backward was no inverse of its forward (round trip 0.97 of the spread). fit refuses it; a
    map saved so still loads, with a warning."""
    x = torch.randn(50, 2)
    with pytest.raises(ValueError, match="The 'affine' head solves the HJ equation of the "
                       "quadratic cost only .* Use the 'mlp' head"):
        hjt.fit(x, x + 1, cost=hjt.get_cost("pnorm", p=3), head="affine", steps=2)
    with pytest.warns(UserWarning, match="quadratic cost only"):
        saved = hjt.HJMap(2, cost="pnorm", cost_kwargs={"p": 3}, head="affine",
                          head_kwargs={"quadratic": "hopf_lax_spd"})
    saved.save_pretrained(tmp_path / "old")
    with pytest.warns(UserWarning, match="quadratic cost only"):
        assert hjt.HJMap.from_pretrained(tmp_path / "old").head_name == "affine"
    with pytest.warns(UserWarning, match="quadratic cost only"), pytest.raises(
            ValueError, match="Cannot fine-tune .*the 'affine' head solves the HJ equation"):
        hjt.fit(x, x + 1, cost=hjt.get_cost("pnorm", p=3), init_from=tmp_path / "old", steps=1)
    recwarn.clear()
    for cost in ("quadratic", hjt.get_cost("pnorm", p=2), hjt.get_cost("lp", p=2)):
        hjt.fit(x, x + 1, cost=cost, head="affine", steps=1,  # p = 2 is the quadratic cost
                head_kwargs={"quadratic": "hopf_lax_spd"})
    assert not [w for w in recwarn if "quadratic cost only" in str(w.message)]


def test_a_class_conditional_map_is_evaluated_class_by_class():
    """With labels of several classes the metrics judge the class-conditional problem: each
    class against its own exact plan, weighted by its share (an exact plan over the mixed
    classes made a map correct in each class read 111 times the exact cost); the certified dual
    takes the minimum within each class; ky is asked for, not guessed."""
    from hjtranslate import metrics

    m = tiny_map(head="conditional", num_classes=2, head_kwargs={"width": 16, "depth": 2}).double()
    g = torch.Generator().manual_seed(0)
    kx, ky = torch.arange(200) % 2, torch.arange(300) % 2
    x = torch.randn(200, 2, generator=g, dtype=torch.float64) + 5 * kx[:, None]
    y = torch.randn(300, 2, generator=g, dtype=torch.float64) + 5 * (1 - ky[:, None])
    out = metrics.evaluate_map(m, x, y, kx, ky, exact_n=60, energy_n=100)
    per = [metrics.evaluate_map(m, x[kx == c], y[ky == c], c, c, exact_n=60, energy_n=100)
           for c in (0, 1)]
    assert out["per_class"][1]["cost_ratio"] == pytest.approx(per[1]["cost_ratio"])
    for key in ("exact_ot_cost", "map_cost", "dual_certified", "monotone_share"):
        assert out[key] == pytest.approx(0.5 * (per[0][key] + per[1][key])), key
    assert out["cost_ratio"] == pytest.approx(out["map_cost"] / out["exact_ot_cost"])
    gap = metrics.duality_gap(m, x, y, kx, ky)
    assert gap["primal"] == pytest.approx(0.5 * (per[0]["primal"] + per[1]["primal"]))
    assert gap["duality_gap_max"] == pytest.approx(max(p["duality_gap"] for p in per))
    # classes weighted by their share of x, whatever y's shares (a c-transform over the mixed
    # classes with y's 4:1 shares exceeded the exact cost once a class's potential moved)
    ky_uneven = (torch.arange(300) % 5 == 0).long()
    y_uneven = torch.randn(300, 2, generator=g, dtype=torch.float64) + 5 * (1 - ky_uneven[:, None])
    both = metrics.certified_dual(m, x, y_uneven, kx, ky_uneven)
    each = [metrics.certified_dual(m, x[kx == c], y_uneven[ky_uneven == c], c) for c in (0, 1)]
    assert both == pytest.approx(sum(each) / 2)
    for fn in (lambda: metrics.evaluate_map(m, x, y, kx), lambda: metrics.certified_dual(m, x, y, kx),
               lambda: metrics.duality_gap(m, x, y, kx)):
        with pytest.raises(ValueError, match="pass ky"):
            fn()
    with pytest.raises(ValueError, match="no class of x is found in y"):
        metrics.duality_gap(m, x, y, kx, torch.full((300,), 5))


def test_fits_warnings_point_at_the_callers_line():
    with pytest.warns(UserWarning, match="no more samples than dimensions") as said:
        hjt.fit(torch.randn(3, 4), torch.randn(3, 4), steps=1, batch_size=3, n_colloc=8)
    assert said[0].filename == __file__


def test_fit_trains_under_no_grad_and_inference_mode():
    """Encoding the samples under torch.no_grad() or torch.inference_mode() and fitting in the
    same block gave a bare autograd error."""
    g = torch.Generator().manual_seed(0)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            x = torch.randn(200, 2, generator=g)
            m = hjt.fit(x, x + 1, steps=3, batch_size=64, n_colloc=32)
            assert torch.isfinite(m.forward(x[:4])).all()


def test_fit_refuses_what_it_would_silently_not_do():
    """conditional=True with a head that takes no class, and a caller's Accelerator that
    accumulates gradients (the optimizer never stepped in a short fit): named before training."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from hjtranslate.training import TrainingError

    x, k = torch.randn(100, 2), torch.arange(100) % 2
    with pytest.raises(ValueError, match="the 'mlp' head does not"):
        hjt.fit(x, x + 1, labels=(k, k), conditional=True, head="mlp", steps=2)
    try:
        acc = Accelerator(cpu=True, gradient_accumulation_steps=4)
        with pytest.raises(TrainingError, match="gradient accumulation over 4 steps"):
            hjt.fit(x, x + 1, steps=2, accelerator=acc)
    finally:  # accelerate keeps its settings for the process
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def test_a_map_loads_in_a_precision_and_says_where_it_computes(tmp_path):
    """As a diffusers model: from_pretrained(torch_dtype=...), .device and .dtype; a device
    that cannot compute here is named (torch said "Found no NVIDIA driver")."""
    tiny_map().save_pretrained(tmp_path / "m")
    m = hjt.HJMap.from_pretrained(tmp_path / "m", torch_dtype=torch.float64)
    assert (m.dtype, m.device.type) == (torch.float64, "cpu")
    assert m.forward(torch.zeros(2, 2, dtype=torch.float64)).dtype == torch.float64
    assert hjt.HJMap.from_pretrained(tmp_path / "m", dtype="float64").dtype == torch.float64
    assert m.to(torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        hjt.HJMap.from_pretrained(tmp_path / "m", torch_dtype=torch.float16)
    with pytest.raises(ValueError, match="disagree"):
        hjt.HJMap.from_pretrained(tmp_path / "m", torch_dtype=torch.float32, dtype=torch.float64)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            m.to("cuda")


def test_the_metric_helpers_take_arrays_and_name_mismatched_samples():
    from hjtranslate import metrics

    g = np.random.default_rng(0)
    x, y = g.normal(size=(50, 2)), g.normal(size=(60, 2))
    assert metrics.energy(x, y) == pytest.approx(metrics.energy(torch.tensor(x), torch.tensor(y)))
    assert metrics.l2_uvp(x, x + 0.1, y) > 0
    assert metrics.cosine_similarity(x, x + 1, x + 1) == pytest.approx(1)
    with pytest.raises(ValueError, match="pred and true must have one shape"):
        metrics.l2_uvp(x[:10], x, y)
    with pytest.raises(ValueError, match="must be a tensor or array of numbers"):
        metrics.energy("x", y)


@pytest.mark.parametrize(("head", "quadratic", "part"), [
    ("conditional", "hopf_lax_per_class", "_ClassHopfLax"), ("mlp", "hopf_lax_spd", "_HopfLaxSPD")])
def test_a_training_step_derives_the_quadratic_part_once_with_the_same_gradients(head, quadratic,
                                                                                   part, monkeypatch):
    """Within one forward pass of the objective the Hopf-Lax part's matrices (a Cayley solve, a
    matrix exponential) are made once per grad mode, not at every one of the head's ~8 calls;
    the loss and every gradient are those of computing them afresh each time."""
    import hjtranslate_plugins.heads as heads

    from hjtranslate.objective import HJObjective, ObjectiveConfig

    m = tiny_map(head=head, num_classes=3, head_kwargs={"width": 16, "depth": 2,
                                                        "quadratic": quadratic}).double()
    obj = HJObjective(m, ObjectiveConfig(classwise=True, n_colloc=32, mmd="gaussian")).double()
    g = torch.Generator().manual_seed(1)
    k = torch.arange(3).repeat_interleave(8)
    x = torch.randn(24, 2, generator=g, dtype=torch.float64)
    y = torch.randn(24, 2, generator=g, dtype=torch.float64) + k[:, None]
    cls = getattr(heads, part)
    derive = "_bases" if part == "_ClassHopfLax" else "_matrices"
    made = []
    original = getattr(cls, derive)
    monkeypatch.setattr(cls, derive, lambda self, *a: made.append(1) or original(self, *a))

    def grads(terms):
        return torch.autograd.grad(terms["loss"], list(m.parameters()), allow_unused=True)

    once = obj(x, y, k, k, generator_seed=0)
    assert 1 <= len(made) <= 2  # with a graph, and without one for the batch's duality gap
    made.clear()
    afresh = obj._terms(x, y, k, k, 0)  # outside the scope: at every call of the head
    assert len(made) > 4
    assert float(once["loss"].detach()) == pytest.approx(float(afresh["loss"].detach()), rel=1e-12)
    for a, b in zip(grads(once), grads(afresh), strict=True):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert all(getattr(mod, "_once", None) is None for mod in m.modules())  # the scope closed
    assert not m._labels_checked  # the map's own calls check their labels again
    if head == "conditional":
        with pytest.raises(ValueError, match="Class labels must lie in 0..2"):
            m.forward(x, 3)


@pytest.mark.parametrize("head", ["mlp", "conditional"])
def test_an_objective_used_on_its_own_checks_its_labels(head):
    """fit checks its labels once and the objective then skips the check at each head call (a
    GPU synchronisation); an HJObjective used on its own has them checked, so a class outside
    the map's is a clear error (on a GPU it was a device assertion)."""
    from hjtranslate.objective import HJObjective, ObjectiveConfig

    obj = HJObjective(tiny_map(num_classes=3, head=head), ObjectiveConfig(classwise=True, n_colloc=16))
    x, y = torch.randn(6, 2), torch.randn(6, 2)
    k = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.isfinite(obj(x, y, k, k)["loss"])
    bad = torch.tensor([0, 0, 1, 1, 5, 5])
    with pytest.raises(ValueError, match=r"Class labels must lie in 0\.\.2"):
        obj(x, y, bad, bad)
    assert not obj.map._labels_checked  # the map is left as it was
