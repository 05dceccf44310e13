"""The ``vae`` encoder (hjtranslate_plugins.vae) with a tiny AutoencoderKL and the shipped one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hjtranslate_plugins.vae import VAEEncoder, default_vae_path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def tiny_vae(in_channels: int = 1, sample_size: int = 32):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=4,
        sample_size=sample_size, block_out_channels=[8, 16], norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        layers_per_block=1,
    ).eval()


def test_tiny_shapes_stats_and_save_load(tmp_path: Path) -> None:
    enc = VAEEncoder(vae=tiny_vae(), batch_size=3)
    images = torch.rand(7, 1, 28, 28)
    z = enc.encode(images)
    assert enc.latent_shape == (4, 16, 16) and z.shape == (7, enc.latent_dim) == (7, 1024)
    out = enc.decode(z)
    assert out.shape == (7, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(enc.encode(images.squeeze(1)), z)          # (n, 28, 28) accepted
    u8 = (images * 255).round().to(torch.uint8)
    assert torch.allclose(enc.encode(u8), enc.encode(u8.float() / 255), atol=1e-5)
    assert torch.allclose(enc.encode(images.double()), z, atol=1e-5)  # float64 taken as float32
    with pytest.raises(ValueError, match="device='nosuch' is not a device"):
        VAEEncoder(vae=tiny_vae(), device="nosuch")
    for bad, message in ((images * 255, r"must lie in \[0, 1\].*divide 0\.\.255 images by 255"),
                         (images * 2 - 1, r"must lie in \[0, 1\]"),
                         (images.masked_fill(images > 0.5, float("nan")), "NaN or infinite")):
        with pytest.raises(ValueError, match=message):
            enc.encode(bad)

    stats = enc.fit_latent_stats(torch.rand(50, 1, 28, 28), transform="pad")
    zs = enc.encode(torch.rand(50, 1, 28, 28))
    assert abs(float(zs.mean())) < 0.5 and 0.5 < float(zs.std()) < 1.5
    assert stats["input_transform"] == "pad" and len(stats["scale"]) == enc.latent_dim

    enc.vae.save_pretrained(tmp_path)
    enc.save_latent_stats(tmp_path)
    again = VAEEncoder(str(tmp_path))
    assert again.transform == "pad"
    assert torch.allclose(again.encode(images), enc.encode(images), atol=1e-5)
    assert again.config() == {"pretrained": str(tmp_path), "latent_dim": 1024}
    assert torch.allclose(again.decode(z[:2]), enc.decode(z[:2]), atol=1e-5)


def test_round_trip_is_encode_after_decode_with_gradients() -> None:
    enc = VAEEncoder(vae=tiny_vae(), batch_size=3)
    enc.fit_latent_stats(torch.rand(20, 1, 28, 28))
    z = enc.encode(torch.rand(5, 1, 28, 28)).requires_grad_(True)
    back = enc.round_trip(z)
    assert torch.allclose(back, enc.encode(enc.decode(z)), atol=1e-5)
    back.pow(2).sum().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert all(p.grad is None for p in enc.vae.parameters())  # the VAE stays frozen


def test_rgb_to_grey_and_bad_inputs() -> None:
    enc = VAEEncoder(vae=tiny_vae())
    grey = torch.rand(2, 1, 28, 28)
    assert torch.allclose(enc.encode(grey.repeat(1, 3, 1, 1)), enc.encode(grey), atol=1e-5)
    with pytest.raises(ValueError, match="28x28"):
        enc.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        enc.encode(torch.rand(2, 2, 28, 28))
    with pytest.raises(ValueError, match="shaped"):
        enc.encode(torch.rand(28, 28))
    with pytest.raises(ValueError, match=r"\(n, 1024\)"):
        enc.decode(torch.zeros(2, 64))


def test_sd_style_vae_is_resized_and_repeated() -> None:
    enc = VAEEncoder(vae=tiny_vae(in_channels=3, sample_size=48))
    assert enc.transform == "resize" and enc.latent_shape == (4, 24, 24)
    z = enc.encode(torch.rand(2, 1, 28, 28))
    assert enc.decode(z).shape == (2, 1, 28, 28)


def test_a_half_precision_vae_encodes_and_decodes() -> None:
    enc = VAEEncoder(vae=tiny_vae(in_channels=3, sample_size=48).half())
    z = enc.encode(torch.rand(2, 1, 28, 28))
    out = enc.decode(z)
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        VAEEncoder(str(tmp_path))


def test_registered_as_plugin() -> None:
    from hjtranslate import registry

    assert registry.plugins("encoder")["vae"].obj is VAEEncoder


@pytest.mark.skipif(not (default_vae_path() / "config.json").is_file(),
                    reason="shipped VAE not trained yet (hjtranslate train vae)")
@pytest.mark.parametrize("name,max_mse", [("mnist", 0.02), ("fashion-mnist", 0.02)])
def test_shipped_vae_round_trip(shared_data: Path, name: str, max_mse: float) -> None:
    from hjtranslate.data import load_dataset, to_float

    enc = VAEEncoder()
    assert enc.latent_dim == 64 and enc.transform == "pad"
    x = to_float(load_dataset(name, "test")[0][:64])
    z = enc.encode(x)
    assert z.shape == (64, 64)
    assert abs(float(z.mean())) < 0.5 and 0.5 < float(z.std()) < 1.5   # standardised
    mse = float(((enc.decode(z) - x) ** 2).mean())
    assert mse < max_mse, f"{name}: reconstruction MSE {mse:.4f}"


def test_train_a_vae_then_fine_tune_its_decoder_only(shared_data: Path, tmp_path: Path, capsys) -> None:
    """`train vae` writes a loadable VAE with its latent stats and card; `--decoder-only`
    changes the decoder and nothing that defines the latent space."""
    from safetensors.torch import load_file

    from hjtranslate.cli import main
    from hjtranslate.data import resolve_data_dir

    base, tuned = tmp_path / "base", tmp_path / "tuned"
    small = ["--widths", "8,8,8,8", "--batch-size", "16", "--steps", "2", "--eval-images", "300",
             "--stats-images", "400"]
    assert main(["train", "vae", "--output-dir", str(base), *small]) == 0
    assert main(["train", "vae", "--output-dir", str(tuned), "--init-from", str(base),
                 "--decoder-only", "--lr", "1e-2", *small[2:]]) == 0  # its widths: base's
    a = load_file(str(base / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tuned / "diffusion_pytorch_model.safetensors"))
    frozen = [k for k in a if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    assert (base / "latent_stats.json").read_bytes() == (tuned / "latent_stats.json").read_bytes()
    assert "encoder frozen" in (tuned / "README.md").read_text()
    assert "| mnist test (300) |" in (base / "README.md").read_text()
    record = json.loads((base / "training_metrics.json").read_text())
    assert record["stats_images"] == 800
    assert record["data_dir"] == str(resolve_data_dir(None))  # where the images came from
    assert record["lr"] == 1e-3
    # a fine-tune's default rate is the measured fine-tune's (1e-3 took 2.7 dB off in 30 steps)
    again = tmp_path / "again"  # a fine-tune of the fine-tune: its card names both runs before it
    assert main(["train", "vae", "--output-dir", str(again), "--init-from", str(tuned),
                 "--decoder-only", "--latent-noise", "0.2", "--latent-noise-on", "mnist",
                 *small[2:], "--stats-images", "100"]) == 0
    record = json.loads((again / "training_metrics.json").read_text())
    assert record["stats_images"] == 800  # its statistics are base's, copied: not 200
    assert record["lr"] == 3e-4 and record["latent_noise"] == 0.2
    assert record["latent_noise_on"] == "mnist"
    card = (again / "README.md").read_text()
    assert "Gaussian noise of 0.2 standardised units added to those of mnist images only" in card
    made = [json.loads((f / "training_metrics.json").read_text())["command"] for f in (base, tuned)]
    assert f"(made by `{made[0]}` (2 steps, " in card and f" s), then `{made[1]}` (2 steps, " in card
    # the card's snippet loads the VAE where it was written (a tmp path: by its folder's name)
    assert f"enc = VAEEncoder('{base.name}')" in (base / "README.md").read_text()
    assert not (tuned / "checkpoints").exists()
    enc = VAEEncoder(tuned)
    assert enc.latent_dim == 64 and enc.decode(torch.zeros(2, 64)).shape == (2, 1, 28, 28)

    capsys.readouterr()
    assert main(["train", "vae", "--output-dir", str(tmp_path / "x"), "--init-from", str(base),
                 "--widths", "8,8,8,8"]) == 2  # the architecture is --init-from's
    assert "--widths applies with a new VAE" in capsys.readouterr().err
    assert main(["train", "vae", "--output-dir", str(tmp_path / "x"), "--decoder-only"]) != 0
    assert "add --init-from DIR" in capsys.readouterr().err
    assert main(["train", "vae", "--output-dir", str(tmp_path / "x"), "--init-from", str(base),
                 "--latent-noise", "0.1"]) == 2
    assert "--latent-noise trains the decoder" in capsys.readouterr().err
    assert main(["train", "vae", "--output-dir", str(tmp_path / "x"), "--init-from", str(base),
                 "--decoder-only", "--latent-noise", "-1"]) == 2
    assert "--latent-noise must be a finite number >= 0" in capsys.readouterr().err
    assert main(["train", "vae", "--output-dir", str(tmp_path / "x"), "--init-from", str(base),
                 "--decoder-only", "--latent-noise-on", "mnist"]) == 2
    assert "add --latent-noise SIGMA" in capsys.readouterr().err
    assert main(["train", "vae", "--output-dir", str(base), "--init-from", str(base)]) != 0
    assert "is the --init-from folder" in capsys.readouterr().err


def test_a_resumed_vae_run_keeps_its_options(shared_data: Path, tmp_path: Path, capsys) -> None:
    """`train vae --resume` without the run's options trains on with those its checkpoints
    record (it fell back to the defaults: another lr, batch size and KL weight)."""
    from hjtranslate.cli import main

    out = tmp_path / "vae"
    small = ["--widths", "8,8,8,8", "--eval-images", "300", "--stats-images", "400",
             "--keep-checkpoints", "--output-dir", str(out)]
    assert main(["train", "vae", *small, "--steps", "2", "--lr", "3e-3", "--batch-size", "8",
                 "--kl-weight", "0.01"]) == 0
    assert (out / "README.md").is_file() and not (out / ".outputs.tmp").exists()
    capsys.readouterr()
    assert main(["train", "vae", *small, "--steps", "3", "--resume"]) == 0
    assert "as recorded in" in capsys.readouterr().err
    record = json.loads((out / "training_metrics.json").read_text())
    assert (record["lr"], record["batch_size"], record["kl_weight"], record["steps"]) == (
        3e-3, 8, 0.01, 3)


def test_resume_without_output_dir_finds_the_default_folder(shared_data: Path, tmp_path: Path,
                                                            capsys, monkeypatch) -> None:
    """`train vae` trains into models/vae by default: `--resume` there restores that run's
    options (it looked in runs/vae, found nothing and went on with the defaults)."""
    import hjtranslate.shipped as shipped
    from hjtranslate.cli import main

    monkeypatch.setattr(shipped, "training_root", lambda: tmp_path / "models")
    small = ["--widths", "8,8,8,8", "--eval-images", "300", "--stats-images", "400",
             "--keep-checkpoints"]
    assert main(["train", "vae", *small, "--steps", "2", "--lr", "3e-3", "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert main(["train", "vae", "--steps", "3", "--resume"]) == 0
    assert "as recorded in" in capsys.readouterr().err
    record = json.loads((tmp_path / "models" / "vae" / "training_metrics.json").read_text())
    assert (record["lr"], record["batch_size"], record["steps"]) == (3e-3, 8, 3)
    # its card and record name the command it started with, and the one that finished it
    assert record["command"].startswith("hjtranslate train vae --widths 8,8,8,8")
    assert record["resumed_with"] == "hjtranslate train vae --steps 3 --resume"
    card = (tmp_path / "models" / "vae" / "README.md").read_text()
    assert record["command"] in card and "Resumed with `hjtranslate train vae --steps 3 --resume`" in card


def test_resume_of_a_finished_vae_keeps_it(shared_data: Path, tmp_path: Path, capsys) -> None:
    """A finished VAE has no checkpoints left: `--resume` keeps it, and with other options it
    refuses (it trained a new VAE with the defaults over it, from step 0)."""
    from hjtranslate.cli import main

    out = tmp_path / "vae"
    small = ["--widths", "8,8,8,8", "--eval-images", "300", "--stats-images", "400",
             "--batch-size", "8", "--output-dir", str(out)]
    assert main(["train", "vae", *small, "--steps", "2", "--no-progress"]) == 0
    weights = (out / "diffusion_pytorch_model.safetensors").read_bytes()
    said = capsys.readouterr()
    assert "train:" not in said.err  # no progress bar
    assert said.out.startswith(f"Wrote the VAE {out} (2 steps; PSNR of test reconstructions mnist ")
    assert main(["train", "vae", *small, "--steps", "2", "--resume"]) == 0
    assert "is finished (2 steps); kept" in capsys.readouterr().err
    assert main(["train", "vae", "--output-dir", str(out), "--steps", "3", "--resume"]) != 0
    err = capsys.readouterr().err
    assert "holds a finished VAE (2 steps), made with other options than this launch's" in err
    assert "--steps 2 there, 3 now" in err
    assert "--widths 8,8,8,8 there, 16,32,64,64 now (the default)" in err
    assert f"--init-from {out} --output-dir NEW_FOLDER" in err
    assert (out / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    # a fresh start would replace it (the shipped models/vae by default): only with --overwrite
    assert main(["train", "vae", *small, "--steps", "1"]) == 2
    assert f"--output-dir {out} holds a trained VAE ({out}), which this run would replace" in (
        err := capsys.readouterr().err) and "--overwrite" in err
    assert (out / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    assert main(["train", "vae", *small, "--steps", "1", "--overwrite"]) == 0
    assert json.loads((out / "training_metrics.json").read_text())["steps"] == 1

def test_a_vae_killed_while_its_outputs_move_does_not_load(shared_data: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    """A kill between the renames of the outputs leaves a folder without weights (not new
    statistics beside the earlier weights); `--resume` writes the outputs again."""
    import os

    from hjtranslate.cli import main
    from hjtranslate.hjmap import CheckpointError

    out = tmp_path / "vae"
    small = ["--widths", "8,8,8,8", "--eval-images", "300", "--stats-images", "400",
             "--output-dir", str(out), "--steps", "2"]
    assert main(["train", "vae", *small, "--keep-checkpoints"]) == 0
    replace, moved = os.replace, []

    def killed_after_two(src, dst):
        if Path(src).parent.name == ".outputs.tmp" and len(moved) == 2:
            raise KeyboardInterrupt  # the process stops between two renames
        moved.append(Path(dst).name)
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_two)
    assert main(["train", "vae", *small, "--steps", "3", "--resume"]) == 130  # "interrupted"
    monkeypatch.setattr(os, "replace", replace)
    assert "diffusion_pytorch_model.safetensors" not in moved
    with pytest.raises(CheckpointError):
        VAEEncoder(out)
    assert main(["train", "vae", *small, "--steps", "3", "--resume"]) == 0
    assert json.loads((out / "training_metrics.json").read_text())["steps"] == 3
    assert VAEEncoder(out).latent_dim == 64


def test_the_decoder_reads_noised_latents_with_latent_noise() -> None:
    """VAEObjective's latent_noise: the decoder learns from latents moved by Gaussian noise of
    that size per entry (none: the posterior's own sample)."""
    from hjtranslate.tasks.vae import VAEObjective, build_vae

    torch.manual_seed(0)
    vae = build_vae(2, 4, (8, 8, 8, 8))
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    seen = []
    vae.decode = (lambda decode: lambda z: (seen.append(z.detach().clone()), decode(z))[1])(vae.decode)
    for noise in (None, torch.full((1, 2, 4, 4), 3.0)):
        torch.manual_seed(1)
        VAEObjective(vae, 1e-3, decoder_only=True, latent_noise=noise)(x)
    moved = (seen[1] - seen[0]).std().item()
    assert 2.5 < moved < 3.5  # the same posterior draw (seeded), moved by noise of std 3



def test_the_vae_objectives_noise_follows_its_generator_seed() -> None:
    """Training gives VAEObjective a seed per step and process: the same seed draws the same
    posterior sample and latent noise (a resumed run draws what it would have), another seed
    (another process) other noise, whatever the global random state."""
    from hjtranslate.tasks.vae import VAEObjective, build_vae

    torch.manual_seed(0)
    vae = build_vae(2, 4, (8, 8, 8, 8))
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    objective = VAEObjective(vae, 1e-3, decoder_only=True, latent_noise=torch.full((1, 2, 4, 4), 0.5))
    losses = []
    for global_seed, seed in ((1, 7), (2, 7), (1, 8)):
        torch.manual_seed(global_seed)
        losses.append(objective(x, generator_seed=seed)["loss"].item())
    assert losses[0] == losses[1] != losses[2]


def test_the_latent_noise_reaches_the_images_its_weight_says() -> None:
    """``noise_weight`` (`--latent-noise-on`): images of weight 0 are drawn from their own
    latents, the others from noised ones."""
    from hjtranslate.tasks.vae import VAEObjective, build_vae

    torch.manual_seed(0)
    vae = build_vae(2, 4, (8, 8, 8, 8))
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    seen = []
    vae.decode = (lambda decode: lambda z: (seen.append(z.detach().clone()), decode(z))[1])(vae.decode)
    VAEObjective(vae, 1e-3, decoder_only=True)(x, generator_seed=3)
    VAEObjective(vae, 1e-3, decoder_only=True, latent_noise=torch.full((1, 2, 4, 4), 3.0))(
        x, generator_seed=3, noise_weight=torch.tensor([1.0, 0.0, 1.0, 0.0]))
    moved = (seen[1] - seen[0]).flatten(1).std(1)
    assert moved[1] == moved[3] == 0 and (moved[[0, 2]] > 2).all()


def test_a_kept_vae_an_unfinished_judge_run_and_bad_sizes_are_not_trained_over(
        shared_data: Path, tmp_path: Path, capsys) -> None:
    """A finished VAE kept with its checkpoints is replaced only on --overwrite; the checkpoints
    of an unfinished `train judges` run are not set aside by `train vae`; latent sizes that
    cannot build say why; a damaged record of the --init-from VAE only leaves its card shorter."""
    import json

    from hjtranslate.cli import main

    small = ["--widths", "8,8,8,8", "--batch-size", "16", "--steps", "2", "--eval-images", "200",
             "--stats-images", "200", "--no-progress"]
    kept = tmp_path / "kept"
    assert main(["train", "vae", "--output-dir", str(kept), "--keep-checkpoints", *small]) == 0
    before = (kept / "diffusion_pytorch_model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", "vae", "--output-dir", str(kept), "--seed", "5", *small]) == 2
    assert "holds a trained VAE" in capsys.readouterr().err
    assert (kept / "diffusion_pytorch_model.safetensors").read_bytes() == before
    judges = tmp_path / "judge-mnist" / "checkpoints" / "step-0000002"
    judges.mkdir(parents=True)
    (judges / "trainer_state.json").write_text(json.dumps(
        {"step": 2, "config": {"extra": {"task": "judges"}}}))
    assert main(["train", "vae", "--output-dir", str(judges.parents[1]), *small]) == 2
    assert ("holds the checkpoints of an unfinished `hjtranslate train judges` run"
            in capsys.readouterr().err)
    assert judges.is_dir()
    for extra, message in ((["--latent-size", "64"], "--latent-size must be 32 / 2**k"),
                           (["--latent-size", "1", "--widths", "8,8,8,8,8,8"],
                            "needs a last --widths entry of at least 16"),
                           (["--widths", "8,8"], "--widths 8,8 names 2 stages; a 4x4 latent")):
        assert main(["train", "vae", "--output-dir", str(tmp_path / "x"), *small, *extra]) == 2
        assert message in capsys.readouterr().err
    (kept / "training_metrics.json").write_text("[1]")
    assert main(["train", "vae", "--output-dir", str(tmp_path / "tuned"), "--init-from", str(kept),
                 "--decoder-only", *small[2:]]) == 0
    assert "the decoder of the VAE in" in (tmp_path / "tuned" / "README.md").read_text()
