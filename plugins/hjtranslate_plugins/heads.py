"""Built-in potential heads: an MLP ``u(x, t)`` and a class-conditional ``u(x, t; k)`` (FiLM).

Both can add a quadratic term ``x^T A(t) x / 2`` (``quadratic=True``): optimal potentials
between Gaussian-like measures are quadratic in ``x``, so the network only learns the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from hjtranslate.heads import PotentialHead

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


class MLPHead(PotentialHead):
    """``u(x, t)``: a residual MLP on ``[x, t]`` with smooth activations."""

    def __init__(
        self,
        dim: int,
        width: int = 128,
        depth: int = 3,
        activation: str = "silu",
        quadratic: bool = False,
    ) -> None:
        super().__init__()
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        self.head_config = {
            "dim": int(dim), "width": int(width), "depth": int(depth),
            "activation": activation, "quadratic": bool(quadratic),
        }
        self.inp = nn.Linear(dim + 1, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, 1)
        self.act = _activation(activation)
        self.quadratic = _Quadratic(dim) if quadratic else None

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, t], dim=-1)

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

    conditional = True

    def __init__(
        self,
        dim: int,
        num_classes: int,
        width: int = 256,
        depth: int = 3,
        activation: str = "silu",
        embed_dim: int = 64,
        quadratic: bool = False,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}.")
        self.head_config = {
            "dim": int(dim), "num_classes": int(num_classes), "width": int(width),
            "depth": int(depth), "activation": activation, "embed_dim": int(embed_dim),
            "quadratic": bool(quadratic),
        }
        self.num_classes = int(num_classes)
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.inp = nn.Linear(dim + 1, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.film = nn.ModuleList(nn.Linear(embed_dim, 2 * width) for _ in range(depth))
        for film in self.film:  # start as the unconditional MLP
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.out = nn.Linear(width, 1)
        self.act = _activation(activation)
        self.quadratic = _Quadratic(dim) if quadratic else None

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, k: torch.Tensor | None = None
    ) -> torch.Tensor:
        if k is None:
            raise ValueError("The conditional head needs class labels k (one per sample).")
        k = torch.as_tensor(k, device=x.device).long().reshape(-1).expand(x.shape[0])
        if k.numel() and (int(k.min()) < 0 or int(k.max()) >= self.num_classes):
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
        if self.quadratic is not None:
            u = u + self.quadratic(x, t)
        return u
