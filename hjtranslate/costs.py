"""The cost interface: a strictly convex Lagrangian ``L`` and its Legendre dual ``H``.

``c(x, y) = t_f * L((y - x) / t_f)``. A cost plugin subclasses :class:`Cost` and implements
``lagrangian``, ``hamiltonian`` and ``grad_hamiltonian`` (all batched over the last axis).
"""

from __future__ import annotations

from typing import Any

import torch


class Cost:
    """Base class of every cost plugin."""

    name: str = "cost"
    #: degree of homogeneity of ``L`` (``L(s v) = s**degree L(v)``), used to rescale costs.
    degree: float = 2.0

    def lagrangian(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hamiltonian(self, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad_hamiltonian(self, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def action(self, p: torch.Tensor) -> torch.Tensor:
        """``p . grad H(p) - H(p)`` (equal to ``L(grad H(p))``): the running cost along a
        characteristic with momentum ``p``."""
        return (p * self.grad_hamiltonian(p)).sum(-1) - self.hamiltonian(p)

    def cost(self, x: torch.Tensor, y: torch.Tensor, t_f: float = 1.0) -> torch.Tensor:
        return t_f * self.lagrangian((y - x) / t_f)

    def pairwise(self, x: torch.Tensor, y: torch.Tensor, t_f: float = 1.0) -> torch.Tensor:
        """Cost matrix ``C[i, j] = c(x_i, y_j)``."""
        return t_f * self.lagrangian((y[None, :, :] - x[:, None, :]) / t_f)

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this cost (stored in checkpoints)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def cost_spec(cost: Any) -> tuple[str, dict[str, Any]]:
    """``(registered name, options)`` of a cost given as a name or a :class:`Cost` instance."""
    from . import registry

    if isinstance(cost, Cost):
        table = registry.plugins("cost").items()
        # its own class only: a map rebuilds its cost by name, so an unregistered subclass of a
        # registered cost would silently train and load as its parent
        name = next((n for n, p in table if type(cost) is p.obj), None)
        if name is None:
            unusable = sorted(registry.clashes("cost"))
            hint = (f" (two installed plugins claim the name {', '.join(map(repr, unusable))}, "
                    "which leaves it unusable: see `hjtranslate plugins`)" if unusable else "")
            parent = next((n for n, p in table if isinstance(cost, p.obj)), None)
            also = (f"; it subclasses the registered cost {parent!r}, but a map rebuilds its "
                    "cost by name, so it would train and load as that one" if parent else "")
            raise ValueError(
                f"{cost!r} is not an instance of a registered cost plugin{hint}{also}. Register "
                f"{type(cost).__name__}: an entry point in the group 'hjtranslate.costs' of its "
                "package (see the README's plugins section), or, in a notebook, "
                f"hjtranslate.registry.register('cost', NAME, {type(cost).__name__}).")
        return name, cost.config()
    if isinstance(cost, type) and issubclass(cost, Cost):
        raise TypeError(f"cost={cost.__name__} is a class: pass an instance, e.g. "
                        f"{cost.__name__}(...) or hjt.get_cost(name, ...).")
    if not isinstance(cost, str):
        raise TypeError("cost must be a registered cost name (see `hjtranslate plugins`) or a Cost "
                        f"instance, got {type(cost).__name__}.")
    return cost, {}

