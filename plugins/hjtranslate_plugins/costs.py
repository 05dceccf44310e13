"""Built-in costs: quadratic, Euclidean p-norm power and the separable l_p family."""

from __future__ import annotations

from typing import Any

import torch

from hjtranslate.costs import Cost


def _eps(a: torch.Tensor) -> float:
    # Smoothing inside |p|: a floor of machine epsilon on the norm keeps grad H and its second
    # derivatives (the HJ loss differentiates through grad H) finite at p = 0, where a zero-
    # initialised head starts. The identities hold wherever |p| and |grad H(p)| exceed it; for
    # p near 1 (q large) |grad H(p)| = |p|^(q-1) falls under it at moderate momenta, e.g.
    # |p| < 0.2 in float32 at p = 1.1, where L(v) is off by ~eps^p/p: negligible for costs.
    return torch.finfo(a.dtype).eps ** 2


def _check_p(p: float) -> float:
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"The p-norm exponent must be a number > 1, got {p!r}.") from None
    if not p > 1 or p != p or p == float("inf"):
        raise ValueError(
            f"The p-norm exponent must be finite and > 1 (the cost must be strictly convex), "
            f"got p={p}. Use p=2 for the quadratic cost."
        )
    return p


class QuadraticCost(Cost):
    """``L(v) = |v|^2 / 2``, ``H(p) = |p|^2 / 2``, ``grad H(p) = p``."""

    name = "quadratic"
    degree = 2.0

    def lagrangian(self, v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (v * v).sum(-1)

    def hamiltonian(self, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * p).sum(-1)

    def grad_hamiltonian(self, p: torch.Tensor) -> torch.Tensor:
        return p

    def action(self, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * p).sum(-1)


class _PowerCost(Cost):
    """A cost ``|v|^p / p`` of some norm: ``p > 1``, its dual exponent ``q = p / (p - 1)``."""

    def __init__(self, p: float = 2.0) -> None:
        self.p = _check_p(p)
        self.q = self.p / (self.p - 1.0)
        self.degree = self.p

    def config(self) -> dict[str, Any]:
        return {"p": self.p}


class PNormCost(_PowerCost):
    """``L(v) = |v|^p / p`` with the Euclidean norm; ``H(p) = |p|^q / q``, ``q = p / (p - 1)``."""

    name = "pnorm"

    def _norm(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((a * a).sum(-1) + _eps(a))

    def lagrangian(self, v: torch.Tensor) -> torch.Tensor:
        return self._norm(v) ** self.p / self.p

    def hamiltonian(self, p: torch.Tensor) -> torch.Tensor:
        return self._norm(p) ** self.q / self.q

    def grad_hamiltonian(self, p: torch.Tensor) -> torch.Tensor:
        return (self._norm(p) ** (self.q - 2.0))[..., None] * p


class SeparableLpCost(_PowerCost):
    """``L(v) = sum_i |v_i|^p / p``; ``grad H(p)_i = sign(p_i) |p_i|^(q - 1)``."""

    name = "lp"

    @staticmethod
    def _abs(a: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(a * a + _eps(a))

    def lagrangian(self, v: torch.Tensor) -> torch.Tensor:
        return (self._abs(v) ** self.p).sum(-1) / self.p

    def hamiltonian(self, p: torch.Tensor) -> torch.Tensor:
        return (self._abs(p) ** self.q).sum(-1) / self.q

    def grad_hamiltonian(self, p: torch.Tensor) -> torch.Tensor:
        return self._abs(p) ** (self.q - 2.0) * p
