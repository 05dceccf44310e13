"""The GPU code paths, checked on the CPU: every task trains and evaluates, the API and a pipeline
run, with the model "on CUDA" under ``virtual_cuda`` (tests/virtual_cuda.py), which raises where a
real GPU would fail because a CPU tensor meets a CUDA one. Before it, every GPU run failed at
step 0 (the step's all-reduce flags were made on the CPU), unseen on this CPU-only machine.
Where torch sees a CUDA device, each path also runs on it (the ``gpu`` fixture's "real")."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from virtual_cuda import DeviceMixError, VirtualCuda, is_tagged, virtual_cuda

import hjtranslate as hjt
from hjtranslate import metrics
from hjtranslate.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/datasets")


class RealCuda:
    """The same paths on a real GPU, where the machine has one (the suite never needs it)."""

    def __enter__(self) -> RealCuda:
        torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.synchronize()

    def ran(self) -> bool:
        return torch.cuda.max_memory_allocated() > 0


@pytest.fixture(params=["virtual", pytest.param("real", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def gpu(request: pytest.FixtureRequest) -> str:
    """Each path runs under the virtual CUDA, and on a real GPU as well where there is one."""
    return request.param


def on_gpu(kind: str, processes: int = 1) -> VirtualCuda | RealCuda:
    return VirtualCuda(mode="raise", fake_processes=processes) if kind == "virtual" else RealCuda()


def ran_on_gpu(g: VirtualCuda | RealCuda, virtual_ops: int) -> bool:
    """The work really ran "on the GPU": that many aten ops on the virtual one, memory on a real
    one."""
    return g.cuda_ops > virtual_ops if isinstance(g, VirtualCuda) else g.ran()


# -- the checker itself: it must see what a GPU refuses, and allow what a GPU allows ----------
def test_the_checker_flags_what_a_gpu_refuses():
    with virtual_cuda():
        v = torch.arange(3.0).to("cuda")
        assert v.device.type == "cuda" and is_tagged(v)
        with pytest.raises(DeviceMixError, match="device mix in aten.cat"):
            torch.cat([v, torch.tensor([1.0, 2.0])])  # training.py's all-reduce flags, before
        with pytest.raises(DeviceMixError, match="device mix in aten.add"):
            torch.ones(3) + v
        with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
            v.numpy()
        with pytest.raises(DeviceMixError):
            torch.zeros(3)[v.long()]  # a CUDA index into a CPU tensor


def test_the_checker_allows_what_a_gpu_allows():
    with virtual_cuda():
        v = torch.arange(3.0).to("cuda")
        assert is_tagged(v + torch.tensor(2.0))  # a CPU scalar joins a CUDA op
        assert v[torch.tensor([0, 1])].is_cuda  # CPU indices of a CUDA tensor
        cpu = torch.zeros(3)
        cpu.copy_(v)  # a cross-device copy
        assert not is_tagged(cpu) and not is_tagged(v.cpu())
        assert float(v.sum()) == 3.0


# -- the project's paths -------------------------------------------------------------------
def _run(argv: list[str], gpu: str, processes: int = 1) -> None:
    err = io.StringIO()
    with on_gpu(gpu, processes) as g, contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, err.getvalue()
    assert ran_on_gpu(g, 1000)  # the training really ran "on the GPU"


def test_fit_and_the_map_api_on_a_gpu(gpu):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) * 0.5 + 2
    k = torch.arange(300) % 3
    with on_gpu(gpu) as vc:
        m = hjt.fit(x, y, steps=4, batch_size=64, ema_decay=0.9, monotone_weight=1.0,
                    semidual_weight=0.1, match_pool=64)
        assert m.shift.is_cuda
        out = m.forward(x[:5])  # CPU inputs go to the map's device
        m.backward(y[:5])
        m.interpolate(x[:5], [0.0, 0.5, 1.0])
        m.transport_cost(x[:5].numpy())
        assert out.is_cuda
        assert "cost_ratio" in metrics.evaluate_map(m, x, y, exact_n=100, energy_n=100)
        metrics.monotone_share(m, x[:20])
        metrics.energy(m.forward(x), y)
        metrics.l2_uvp(m.forward(x), y, y)
        hjt.fit(x, y, steps=2, batch_size=64, init_from=m)  # fine-tune a map trained on a GPU
        mc = hjt.fit(x, y, labels=(k, k), conditional=True, steps=3, batch_size=64)
        mc.forward(x[:4], [0, 1, 2, 0])
        mc.backward(y[:4], np.array([1, 0, 1, 0]))
        metrics.evaluate_map(mc, x, y, kx=k, ky=k, exact_n=100, energy_n=100)
        hjt.fit(x.cuda(), y.cuda(), labels=(k.cuda(), k.cuda()), steps=2, batch_size=64)
    assert ran_on_gpu(vc, 10_000)


def test_toy2d_on_a_gpu_and_two(tmp_path, gpu):
    common = ["train", "toy2d", "--steps", "4", "--n", "500", "--eval-n", "200", "--no-progress"]
    _run([*common, "--output-dir", str(tmp_path / "one")], gpu)
    if gpu == "virtual":  # the multi-process branches (the ranks' checksum, the reduced flags)
        _run([*common, "--output-dir", str(tmp_path / "two")], gpu, processes=2)


def test_gaussians_on_a_gpu(tmp_path, gpu):
    _run(["train", "gaussians", "--dim", "4", "--n", "2000", "--eval-n", "500", "--steps", "4",
          "--mmd", "sinkhorn", "--output-dir", str(tmp_path / "g"), "--no-progress"], gpu)


def test_color_transfer_on_a_gpu(tmp_path, gpu):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    _run(["train", "color-transfer", "--source", paths[0], "--target", paths[1], "--steps", "4",
          "--pixels", "500", "--batch-size", "128", "--bins", "8", "--output-dir",
          str(tmp_path / "c"), "--no-progress"], gpu)


@needs_data
def test_digits_to_fashion_and_its_pipeline_on_a_gpu(tmp_path, monkeypatch, gpu):
    from hjtranslate.judges import frechet_distance
    from hjtranslate.pipeline import TranslationPipeline

    monkeypatch.setenv("HJT_DATA_DIR", str(DATA))
    monkeypatch.setenv("HJT_CACHE_DIR", str(tmp_path / "cache"))  # encode "on the GPU" too
    _run(["train", "digits-to-fashion", "--steps", "4", "--eval-n", "100", "--train-per-class",
          "50", "--manifold-weight", "1", "--no-progress", "--output-dir", str(tmp_path / "d"),
          "--export", str(tmp_path / "pipe")], gpu)
    digits = torch.zeros(3, 28, 28, dtype=torch.uint8)
    digits[:, 8:20, 12:16] = 255
    with on_gpu(gpu):
        pipe = TranslationPipeline.from_pretrained(tmp_path / "pipe", device="cuda")
        assert pipe.device.type == "cuda"
        out = pipe(digits, morph_steps=3)
        pipe(digits, classes=[0, 1, 2], direction="backward")
        moved = TranslationPipeline.from_pretrained(tmp_path / "pipe").to("cuda")  # every part
        assert moved(digits, classes=[0, 1, 2]).latents.is_cuda
        assert np.isfinite(frechet_distance(pipe.judge_target, digits, digits.flip(1)))
    assert len(out.images) == 3


@needs_data
def test_the_vae_and_the_judges_train_on_a_gpu(tmp_path, monkeypatch, gpu):
    monkeypatch.setenv("HJT_DATA_DIR", str(DATA))
    _run(["train", "vae", "--output-dir", str(tmp_path / "vae"), "--widths", "8,8,8,8",
          "--batch-size", "16", "--steps", "2", "--eval-images", "300", "--stats-images", "400"], gpu)
    _run(["train", "judges", "--output-root", str(tmp_path / "judges"), "--datasets", "mnist",
          "--steps", "2", "--batch-size", "16"], gpu)
