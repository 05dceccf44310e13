"""Legendre identities of every registered cost (method.md section 1)."""

import pytest
import torch

import hjtranslate as hjt
from hjtranslate import registry

COSTS = [("quadratic", {}), ("pnorm", {"p": 1.5}), ("pnorm", {"p": 2.0}), ("pnorm", {"p": 3.0}),
         ("lp", {"p": 1.5}), ("lp", {"p": 4.0})]


def test_every_registered_cost_is_covered():
    assert {name for name, _ in COSTS} == set(registry.plugins("cost"))


@pytest.mark.parametrize("name,kwargs", COSTS)
def test_legendre_identities(name, kwargs):
    cost = hjt.get_cost(name, **kwargs)
    p = torch.randn(256, 5, dtype=torch.float64) * 2
    v = cost.grad_hamiltonian(p)
    # L(grad H(p)) = p . grad H(p) - H(p)
    expected = (p * v).sum(-1) - cost.hamiltonian(p)
    torch.testing.assert_close(cost.lagrangian(v), expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(cost.action(p), cost.lagrangian(v), rtol=1e-6, atol=1e-8)
    # grad L(grad H(p)) = p
    v = v.detach().requires_grad_(True)
    (gl,) = torch.autograd.grad(cost.lagrangian(v).sum(), v)
    torch.testing.assert_close(gl, p, rtol=1e-5, atol=1e-6)
    # grad H is the gradient of H
    p = p.requires_grad_(True)
    (gh,) = torch.autograd.grad(cost.hamiltonian(p).sum(), p)
    torch.testing.assert_close(gh, cost.grad_hamiltonian(p), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,kwargs", COSTS)
def test_grad_hamiltonian_is_finite_at_zero(name, kwargs):
    cost = hjt.get_cost(name, **kwargs)
    p = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    v = cost.grad_hamiltonian(p)
    assert torch.isfinite(v).all()
    (g,) = torch.autograd.grad(v.sum(), p)
    assert not torch.isnan(g).any()
    if kwargs.get("p", 2) <= 2:  # (q < 2: H is not C^2 at 0, its second derivative may be huge)
        assert torch.isfinite(g).all()


def test_cost_is_t_f_times_lagrangian():
    cost = hjt.get_cost("pnorm", p=3)
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(cost.cost(x, y, 2.0), 2.0 * cost.lagrangian((y - x) / 2.0))
    torch.testing.assert_close(cost.pairwise(x, y).diagonal(), cost.cost(x, y))


@pytest.mark.parametrize("p", [1.0, 0.5, -2, float("nan"), float("inf"), "abc"])
def test_bad_exponent_is_refused(p):
    with pytest.raises(ValueError, match="> 1"):
        hjt.get_cost("pnorm", p=p)


def test_fit_warns_of_a_p_norm_exponent_too_close_to_one():
    """With p up to 1.1 grad H vanishes for momenta below 1 and the map was measured to stay at
    the identity: fit says so rather than return it silently."""
    import hjtranslate as hjt

    x = torch.randn(64, 2)
    with pytest.warns(UserWarning, match=r"p = 1\.1: grad H\(p\).*p >= 1\.15 trains"):
        hjt.fit(x, x + 1, cost=hjt.get_cost("pnorm", p=1.1), steps=1, batch_size=32)


@pytest.mark.parametrize("name", ["pnorm", "lp"])
def test_the_contract_checks_take_the_built_in_costs_at_every_exponent_and_dimension(name):
    """At probe momenta of norm 0.1 a separable cost near p = 1 is of order 1e-13, below its
    smoothing floor: the Legendre check refused the built-ins there (and maps saved with them)."""
    for p in (1.01, 1.1, 1.15, 1.5, 3.0, 10.0):
        for dim in (1, 8, 784):
            hjt.HJMap(dim, cost=name, cost_kwargs={"p": p})
