"""Where a gaussian -> checkerboard map puts its mass, and a forward map read from the backward
potential (BENCHMARKS.md, 2-D pairs, session 15):

    python benchmarks/checkerboard_mass.py runs/bench/toy2d-s15-u-gaussian-checkerboard [...]

For each toy2d run folder: the share of ``T(x)`` outside the checkerboard's squares (16,000
held-out points), the share of source points and of ``T^-1(y)`` beyond radius 2.5 and 3; then,
on 4,000 points, the cost ratio against exact OT of the closed-form ``T`` and of the inverse of
the backward map, ``T(x) = argmin_z psi(z) - x.z`` with ``psi(z) = |z|^2/2 - t_f u(z, t_f)``
(damped Newton per point, quadratic cost).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from toy2d_large_n import load_run

from hjtranslate.losses import batch_jacobian
from hjtranslate.metrics import exact_ot_cost


def outside_squares(p: torch.Tensor) -> float:
    """Share of points off the toy checkerboard (unit squares of even cell parity in [-2, 2]^2)."""
    on_board = (p.abs() <= 2).all(1)
    parity = (torch.floor(p[:, 0]) + torch.floor(p[:, 1])) % 2
    return float((~on_board | (parity != 0)).double().mean())


def inverse_of_backward(m, x: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """Solve ``grad psi(z) = x`` (the backward map ``z - t_f grad u(z, t_f)``) for each point,
    starting from the closed-form forward map, by Newton steps with backtracking on ``psi(z) -
    x.z`` (Hessian shifted to stay positive definite)."""
    zx = (x - m.shift) / m.scale

    def parts(z):
        z = z.detach().requires_grad_(True)
        u, p = m.momentum(z, m.t_f, None, create_graph=True)
        f = 0.5 * (z * z).sum(1) - m.t_f * u.reshape(-1) - (z * zx).sum(1)
        g = z - m.t_f * p - zx
        return f.detach(), g.detach(), batch_jacobian(g, z).detach()

    z = (m.forward(x).detach() - m.shift) / m.scale
    eye = torch.eye(z.shape[1])
    for _ in range(iters):
        f, g, h = parts(z)
        h = 0.5 * (h + h.transpose(1, 2))
        shift = (1e-3 - torch.linalg.eigvalsh(h)[:, 0]).clamp_min(0)
        step = torch.linalg.solve(h + shift[:, None, None] * eye, g)
        a = torch.ones(len(z))
        for _ in range(20):
            worse = parts(z - a[:, None] * step)[0] > f - 1e-4 * a * (g * step).sum(1)
            if not worse.any():
                break
            a = torch.where(worse, 0.5 * a, a)
        z = z - a[:, None] * step
    return (m.shift + m.scale * z).detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    for run in args.runs:
        _, m, x, y = load_run(run, 16_000)
        tx, ty = m.forward(x).detach(), m.backward(y).detach()
        r, rb = x.norm(dim=1), ty.norm(dim=1)
        print(f"{run.name}: T(x) outside the squares {outside_squares(tx):.4f}; beyond radius "
              f"2.5 / 3: source {(r > 2.5).double().mean():.4f} / {(r > 3).double().mean():.4f}, "
              f"T^-1(y) {(rb > 2.5).double().mean():.4f} / {(rb > 3).double().mean():.4f}")
        xs, ys = x[:4000], y[:4000]
        exact = exact_ot_cost(xs, ys, m.cost, m.t_f)
        for name, t in (("closed form", m.forward(xs).detach()), ("inverse of backward",
                                                                  inverse_of_backward(m, xs))):
            cost = float(m.cost.cost(xs, t, m.t_f).mean())
            print(f"  {name}: cost / exact OT {cost / exact:.3f}, outside {outside_squares(t):.4f}")


if __name__ == "__main__":
    main()
