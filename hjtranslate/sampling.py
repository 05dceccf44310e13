"""Collocation samplers for the HJ loss: where, and when, the PDE is enforced.

The consistency theorem needs a density that is positive wherever characteristics go. The
default puts points on straight segments between random source and target samples (at the
segment's time ``t``) blurred by Gaussian noise, which has full support. A uniform share over
the data's bounding box is available (``kind="mixture"`` or ``"box"``), but in more than a few
dimensions box points sit in empty corners and cost accuracy: on the 8-D Gaussian pair, 90 s of
training gave L2-UVP 14 % with a 20 % box share and 5 % without.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CollocationSampler:
    """``kind``: ``"segments"``, ``"box"`` or ``"mixture"`` (segments plus a ``box_share``)."""

    kind: str = "segments"
    noise: float = 0.1
    box_share: float = 0.2
    box_margin: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("segments", "box", "mixture"):
            raise ValueError(
                f"Unknown collocation sampler {self.kind!r}; choose segments, box or mixture."
            )
        if not 0.0 <= self.box_share <= 1.0:
            raise ValueError(f"box_share must lie in [0, 1], got {self.box_share}.")

    def __call__(
        self,
        xs: torch.Tensor,
        yt: torch.Tensor,
        n: int,
        t_f: float,
        generator: torch.Generator | None = None,
        aligned: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` points ``(x, t)`` and, for each, the index of a source sample it belongs to
        (its segment's start; a random one for box points), so that labels can follow.
        ``aligned``: source ``i`` and target ``i`` share a class, so segments join them."""
        dev, dt = xs.device, xs.dtype
        opts = {"generator": generator, "device": dev, "dtype": dt}
        t = torch.rand(n, 1, **opts) * t_f
        share = {"segments": 0.0, "box": 1.0, "mixture": self.box_share}[self.kind]
        n_box = int(round(n * share))
        n_seg = n - n_box
        parts = []
        idx = torch.randint(len(xs), (n,), generator=generator, device=dev)
        if n_seg:
            i = idx[:n_seg]
            j = i if aligned else torch.randint(len(yt), (n_seg,), generator=generator, device=dev)
            start, end = xs[i], yt[j]
            s = t[:n_seg] / t_f
            seg = start + s * (end - start)
            seg = seg + self.noise * torch.randn(seg.shape, **opts)
            parts.append(seg)
        if n_box:
            both = torch.cat([xs, yt])
            lo, hi = both.min(0).values, both.max(0).values
            pad = self.box_margin * (hi - lo)
            u = torch.rand(n_box, xs.shape[1], **opts)
            parts.append(lo - pad + u * (hi - lo + 2 * pad))
        return torch.cat(parts), t, idx
