"""The benchmark scripts' own bookkeeping (the benchmarks themselves run outside the suite)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

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


def test_equal_accuracy_takes_the_maps_level_or_the_odes_best() -> None:
    import peers_long

    hj = {"energy_draws_pushed": 1.0, "energy_draws_two_targets": 1.0, "samples_per_s": 300.0}
    ode = [{"steps": 1, "energy_draws_pushed": 3.0, "samples_per_s": 1000.0},
           {"steps": 4, "energy_draws_pushed": 0.9, "samples_per_s": 250.0},
           {"steps": 8, "energy_draws_pushed": 0.8, "samples_per_s": 120.0}]
    out = peers_long.equal_accuracy(hj, ode)
    # the ODE reaches the map at 4 steps: the fastest configuration as accurate as the map
    assert out["fastest_ode_at_level"]["steps"] == 4 and out["ratio"] == pytest.approx(1.2)
    assert out["equal_accuracy"] == "the map's own energy"
    # a map better than every configuration meets the ODE at 1.05x its best
    hj["energy_draws_pushed"] = 0.5
    out = peers_long.equal_accuracy(hj, [*ode, {"steps": 16, "energy_draws_pushed": 0.78,
                                                  "samples_per_s": 60.0}])
    assert out["level_over_two_target_samples"] == pytest.approx(0.819)
    assert out["fastest_ode_at_level"]["steps"] == 8 and out["ratio"] == pytest.approx(2.5)


def test_peers_long_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peers
    import peers_long

    # torchcfm is a bench extra, not a test dependency: an untrained velocity network of the
    # map's size stands in for OT-CFM's, integrated by the benchmark's own integrator
    calls = []

    def fake_train(x, y, budget, checkpoints, batch_size, seed, evaluate, lr, ema_decay, net):
        calls.append((budget, lr, batch_size, ema_decay, net))
        with torch.no_grad():  # "training" moves the flow, so a re-read must restore it
            net.out.bias.add_(0.3)
        return (lambda xx, steps, method: peers.integrate(net, xx, steps, method), net,
                [{"steps": 5}], sum(p.numel() for p in net.parameters()))

    monkeypatch.setattr(peers_long, "train_cfm", fake_train)
    maps = Path(__file__).resolve().parents[1] / "benchmarks" / "maps"
    monkeypatch.setattr(sys, "argv", [
        "peers_long.py", str(maps / "gaussian-checkerboard-s35"), "--stages", "0.3:1e-3:64",
        "0.2:3e-4:128", "--train-n", "2000", "--n", "100", "--draws", "3", "--ode-steps", "1", "2",
        "--speed-n", "100", "--suffix", "t", "--out-dir", str(tmp_path),
        "--cfm-weights", str(tmp_path / "cfm.pt")])
    peers_long.main()
    out = json.loads((tmp_path / "peers-long-gaussian-checkerboard-t.json").read_text())
    assert [s["batch_size"] for s in out["cfm_stages"]] == [64, 128]
    # both stages train one network, each with its own budget, rate and batch, averaged
    assert [c[:4] for c in calls] == [(0.3, 1e-3, 64, 0.999), (0.2, 3e-4, 128, 0.999)]
    assert calls[0][4] is calls[1][4] and calls[0][4].inp.out_features == 64
    methods = [(c["method"], c.get("steps")) for c in out["configs"]]
    assert methods == [("HJ closed form", None), ("OT-CFM euler", 1), ("OT-CFM euler", 2),
                       ("OT-CFM rk4", 1), ("OT-CFM rk4", 2)]
    # the map is read on the same draws as toy2d's energy goal
    from hjtranslate.tasks.toy2d import energy_over_draws
    m = hjt.HJMap.from_pretrained(maps / "gaussian-checkerboard-s35")
    ref = energy_over_draws(m, "gaussian", "checkerboard", 100, draws=3)
    assert out["configs"][0]["energy_draws_pushed"] == pytest.approx(ref["energy_draws_pushed"])
    assert out["ratio"] > 0 and (tmp_path / "peers-long-gaussian-checkerboard-t.md").is_file()
    # a second run reads the kept network instead of training again, and reads it alike
    peers_long.main()
    again = json.loads((tmp_path / "peers-long-gaussian-checkerboard-t.json").read_text())
    assert len(calls) == 2 and again["cfm_stages"] == out["cfm_stages"]
    assert [c["energy_draws_pushed"] for c in again["configs"]] == \
        [c["energy_draws_pushed"] for c in out["configs"]]
    # a kept network from other stages is refused, not read as if it were these
    sys.argv[sys.argv.index("0.2:3e-4:128")] = "0.2:3e-4:256"
    with pytest.raises(SystemExit, match="trained in other stages"):
        peers_long.main()


def test_vae_yardsticks_read_a_perfect_maps_figures_against_the_goals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    import latent_size

    monkeypatch.setenv("HJT_CACHE_DIR", str(tmp_path / "cache"))
    vae = str(Path(__file__).resolve().parents[1] / "models" / "vae")
    r = latent_size.yardsticks(vae, draws=2, eval_n=200)
    assert r["latent_dim"] == 64 and r["draws"] == 2
    for side in ("forward", "backward"):
        low, high = r[f"accuracy_{side}_of_a_perfect_map"]
        assert 0.5 < low <= high <= 1  # decodes of training latents, with their own classes
        low, high = r[f"fd_{side}_of_a_perfect_map_over_floor"]
        assert 1 < low <= high  # other images than the test set's own reconstructions
        assert r[f"a_perfect_map_meets_the_frechet_goal_{side}"] == (high <= latent_size.FRECHET_GOAL)
        assert r[f"a_perfect_map_meets_the_accuracy_goal_{side}"] == (
            r[f"accuracy_{side}_of_a_perfect_map"][0] >= latent_size.ACCURACY_GOAL)
    row = latent_size.yardstick_table({"shipped": r}).splitlines()[-1]
    assert row.startswith("| shipped | 64 |") and "×" in row


def test_accuracy_rows_put_each_class_beside_its_yardsticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           shared_data: Path) -> None:
    import frechet_yardstick
    from hjtranslate_plugins.vae import VAEEncoder

    from hjtranslate.judges import load_judge
    from hjtranslate.tasks.digits_to_fashion import encoded

    monkeypatch.setenv("HJT_CACHE_DIR", str(tmp_path / "cache"))
    enc, index = VAEEncoder(), torch.arange(300)
    mnist = encoded(enc, "mnist", "test", None, index, tmp_path / "cache")
    fashion = encoded(enc, "fashion-mnist", "test", None, index, tmp_path / "cache")
    # "translations" that stay where they started: digits' latents decoded as digits
    out = frechet_yardstick.accuracy_rows(enc, None, load_judge("mnist"), load_judge("fashion-mnist"),
                                          mnist[1], fashion[1], mnist, fashion, seeds=2)
    forward, backward = out["accuracy_per_class_forward"], out["accuracy_per_class_backward"]
    assert [r["class"] for r in forward] == list(range(10)) == [r["class"] for r in backward]
    mean = {what: sum(r[what] for r in backward) / 10 for what in backward[0] if what != "class"}
    assert min(mean["real"], mean["reconstructions"], mean["perfect_map"]) > 0.9
    # the Fashion judge does not take digits for clothes of their own class number
    assert sum(r["translations"] for r in forward) / 10 < 0.5
    for side in ("forward", "backward"):
        mix = out[f"perfect_map_class_mix_{side}"]
        assert [m["seed"] for m in mix] == [0, 1]
        assert all(m["source_mix"] > 0.5 and m["own_mix"] > 0.5 for m in mix)


def test_gpu_step_and_fake_datasets_run_on_the_cpu(tmp_path: Path) -> None:
    """The two scripts of the real-GPU check (BENCHMARKS.md) run where there is no GPU too."""
    import gpu_step

    out = gpu_step.main(["--batches", "32", "--steps", "2", "--n", "200",
                         "--out", str(tmp_path / "g.json")])
    assert out["steps"][0]["batch"] == 32 and out["forward_samples_per_s"] > 0
    assert json.loads((tmp_path / "g.json").read_text())["steps"] == out["steps"]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import fake_datasets

    from hjtranslate.data import load_dataset

    fake_datasets.write(tmp_path / "data")
    images, labels = load_dataset("fashion-mnist", "test", tmp_path / "data")
    assert images.shape == (10000, 28, 28) and labels[:3].tolist() == [0, 1, 2]


def test_a_training_step_launches_no_operation_per_class(tmp_path: Path) -> None:
    """benchmarks/step_ops.py counts a step's operations (kernel launches on a GPU) and host
    reads: the class-wise match, the Hopf-Lax parts and the label checks once ran class by class
    and call by call (8,138 operations and 335 host reads in digits-to-fashion's step; 2,212 and
    53 after). A loop over the 10 classes would add hundreds of both."""
    import step_ops

    out = step_ops.main(["--out", str(tmp_path / "ops.json")])
    step = out["digits-to-fashion"]
    assert step["operations"] < 3000 and step["host_reads"] < 100, step
    assert json.loads((tmp_path / "ops.json").read_text())["fit-defaults"] == out["fit-defaults"]


def test_d2f_grids_redraws_both_pictures(tmp_path: Path, shared_data: Path) -> None:
    """`benchmarks/d2f_grids.py` draws the README's two grids (10 class rows of 4 sources, 4
    translations and 8 morph frames, 28x28 tiles with a 1-pixel border) from the shipped map."""
    import d2f_grids
    from PIL import Image

    d2f_grids.main(["--out-dir", str(tmp_path), "--n", "300"])
    for name in ("digits_to_fashion.png", "fashion_to_digits.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size == (16 * 29 + 1, 10 * 29 + 1)
