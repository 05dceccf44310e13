"""The benchmark scripts' own bookkeeping (the benchmarks themselves run outside the suite)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import hjtranslate as hjt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import toy2d_large_n  # noqa: E402


def test_fresh_draws_exact_cost_is_cached_and_reused(tmp_path: Path) -> None:
    cache = tmp_path / "exact.json"
    cost = hjt.get_cost("quadratic")
    first = toy2d_large_n.fresh_exact_cost("8gaussians", "circles", 60, 1, cost, 1.0, cache)
    (key, stored), = json.loads(cache.read_text()).items()
    assert stored == first and "8gaussians->circles n=60 draw=1" in key
    # a doctored entry is what comes back: the second call reads the file, it does not recompute
    cache.write_text(json.dumps({key: 123.0}))
    assert toy2d_large_n.fresh_exact_cost("8gaussians", "circles", 60, 1, cost, 1.0, cache) == 123.0
    # another size, draw or cost is another entry
    toy2d_large_n.fresh_exact_cost("8gaussians", "circles", 60, 2, cost, 1.0, cache)
    pnorm = hjt.get_cost("pnorm", p=3)
    toy2d_large_n.fresh_exact_cost("8gaussians", "circles", 60, 1, pnorm, 1.0, cache)
    assert len(json.loads(cache.read_text())) == 3
    again = toy2d_large_n.fresh_exact_cost("8gaussians", "circles", 60, 2, cost, 1.0, None)
    assert again == pytest.approx(json.loads(cache.read_text())[key.replace("draw=1", "draw=2")])


def test_cost_over_draws_pairs_the_map_with_the_cached_exact_costs(tmp_path: Path) -> None:
    cache = tmp_path / "exact.json"
    maps = Path(__file__).resolve().parents[1] / "benchmarks" / "maps"
    m = hjt.HJMap.from_pretrained(maps / "swissroll-moons-s33-b2048")
    out = toy2d_large_n.cost_over_draws(m, "swissroll", "moons", 200, 3, cache)
    exact = [toy2d_large_n.fresh_exact_cost("swissroll", "moons", 200, k, m.cost, m.t_f, cache)
             for k in range(3)]
    assert out["exact_ot_costs"] == exact
    ratios = [a / b for a, b in zip(out["learned_costs"], exact, strict=True)]
    assert out["cost_ratios"] == pytest.approx(ratios)
    assert 0.5 < out["cost_ratio_mean"] < 1.5 and out["cost_ratio_se"] > 0
