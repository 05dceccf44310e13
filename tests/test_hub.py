"""Publishing to and loading from the Hub with the real huggingface_hub client, against the
loopback Hub of ``tests/hub_server.py`` (``HF_ENDPOINT`` is set in ``conftest.py``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants
from safetensors.torch import load_file, save_file

from hjtranslate import CheckpointError, HJMap, registry
from hjtranslate.cli import main

ROOT = Path(__file__).resolve().parents[1]

TOKEN = os.environ["HF_TOKEN"]  # the dummy token of conftest.py


def tiny_map(seed: int = 0, **kwargs) -> HJMap:
    torch.manual_seed(seed)
    kwargs.setdefault("head_kwargs", {"width": 8, "depth": 2})
    m = HJMap(dim=kwargs.pop("dim", 2), **kwargs)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    m.set_normalization(torch.randn(m.dim), 1.0 + torch.rand(()))
    return m.eval()


def labels(m: HJMap, n: int):
    return torch.arange(n) % m.num_classes if m.conditional else None


def assert_same_maps(a: HJMap, b: HJMap, n: int = 16) -> None:
    x = torch.randn(n, a.dim, generator=torch.Generator().manual_seed(1))
    k = labels(a, n)
    assert not b.training
    assert b.config_dict() == a.config_dict()
    torch.testing.assert_close(b.forward(x, k), a.forward(x, k), rtol=0, atol=0)
    torch.testing.assert_close(b.backward(x, k), a.backward(x, k), rtol=0, atol=0)


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert TOKEN[3:15] not in text  # not even a fragment


@pytest.fixture
def hub(hub_server, hf_cache):
    """The loopback Hub with a fresh download cache."""
    return hub_server


# -- publish and load ---------------------------------------------------------------------
def test_push_to_hub_and_from_pretrained(hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    m = tiny_map()
    url = m.push_to_hub("user/tiny")
    assert url.startswith(f"{hub.url}/user/tiny/commit/")
    files = hub.files("user/tiny")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    # default upload modes of the Hub: weights through LFS, the small text files inline
    modes = {u["path"]: u["mode"] for u in hub.uploads}
    assert modes == {"model.safetensors": "lfs", "config.json": "regular", "README.md": "regular"}
    assert json.loads(files["config.json"])["dim"] == 2
    assert b"library_name: hjtranslate" in files["README.md"]

    loaded = HJMap.from_pretrained("user/tiny")
    assert_same_maps(m, loaded)
    torch.testing.assert_close(loaded.shift, m.shift)
    # the client sent the dummy token, and it was printed or logged nowhere
    assert hub.auth_headers and set(hub.auth_headers) == {f"Bearer {TOKEN}"}
    out = capsys.readouterr()
    assert_no_token(out.out, out.err, caplog.text)


@pytest.mark.parametrize("mode", ["regular", "lfs", "size"])
def test_upload_modes(hub, tmp_path, mode):
    """Files inline in the commit ("regular"), all through LFS with a sha256-checked upload
    ("lfs"), or through LFS by size only (the Hub's 10 MB rule, with a small threshold)."""
    m = tiny_map(head_kwargs={"width": 32, "depth": 3})
    if mode == "size":
        hub.lfs_suffixes, hub.lfs_threshold = (), 4096
    else:
        hub.upload_mode = mode
    m.push_to_hub("user/modes")
    modes = {u["path"]: u["mode"] for u in hub.uploads}
    local = tmp_path / "local"
    m.save_pretrained(local)
    size = (local / "model.safetensors").stat().st_size
    assert size > 4096
    expected = {"regular": "regular", "lfs": "lfs", "size": "lfs"}[mode]
    assert modes["model.safetensors"] == expected
    assert modes["config.json"] == ("lfs" if mode == "lfs" else "regular")
    on_hub = hub.files("user/modes")
    for name in ("config.json", "model.safetensors"):
        assert on_hub[name] == (local / name).read_bytes()
    assert b"HJMap.from_pretrained('user/modes')" in on_hub["README.md"]
    assert_same_maps(m, HJMap.from_pretrained("user/modes"))


def test_revisions_commit_sha_tag_and_branch(hub):
    api = HfApi()
    first, second = tiny_map(seed=1), tiny_map(seed=2)
    sha1 = first.push_to_hub("user/rev").rsplit("/", 1)[-1]
    api.create_tag("user/rev", tag="v1")
    sha2 = second.push_to_hub("user/rev").rsplit("/", 1)[-1]
    assert sha1 != sha2 and len(sha1) == 40
    api.create_branch("user/rev", branch="dev", revision=sha1)
    third = tiny_map(seed=3)
    third.push_to_hub("user/rev", branch="dev")

    assert_same_maps(second, HJMap.from_pretrained("user/rev"))
    assert_same_maps(second, HJMap.from_pretrained("user/rev", revision="main"))
    assert_same_maps(first, HJMap.from_pretrained("user/rev", revision=sha1))
    assert_same_maps(first, HJMap.from_pretrained("user/rev", revision="v1"))
    assert_same_maps(third, HJMap.from_pretrained("user/rev", revision="dev"))
    with pytest.raises(CheckpointError, match="Revision 'nope' does not exist"):
        HJMap.from_pretrained("user/rev", revision="nope")


# -- offline and cache ----------------------------------------------------------------------
def test_offline_loading_from_cache(hub, monkeypatch):
    m = tiny_map()
    m.push_to_hub("user/off")
    HJMap.from_pretrained("user/off")  # fills the cache
    hub.delete_repo("user/off")
    n_requests = len(hub.requests)

    # local_files_only works at any time
    assert_same_maps(m, HJMap.from_pretrained("user/off", local_files_only=True))
    # HF_HUB_OFFLINE is read at import: in-process, patch the constant, not the environment
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same_maps(m, HJMap.from_pretrained("user/off"))
    assert len(hub.requests) == n_requests  # the Hub was never asked

    # online, with the repo gone: huggingface_hub falls back to the cached snapshot on any HTTP
    # error except a missing revision or file (measured with huggingface_hub 2.4)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert_same_maps(m, HJMap.from_pretrained("user/off"))
    assert len(hub.requests) > n_requests


def test_refusing_hub_falls_back_to_cache(hub):
    m = tiny_map()
    m.push_to_hub("user/refuse")
    HJMap.from_pretrained("user/refuse")
    hub.refuse = True  # every request answered 403: the client uses the cached snapshot
    assert_same_maps(m, HJMap.from_pretrained("user/refuse"))
    with pytest.raises(CheckpointError, match="user/never-cached"):
        HJMap.from_pretrained("user/never-cached")


def test_offline_without_cache_is_a_clear_error(hub, monkeypatch):
    tiny_map().push_to_hub("user/uncached")
    with pytest.raises(CheckpointError, match="not in the local cache"):
        HJMap.from_pretrained("user/uncached", local_files_only=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="not in the local cache"):
        HJMap.from_pretrained("user/uncached")


PROXY_VARIABLES = [f"{scheme}_{case}" for scheme in ("http", "https", "all")
                   for case in ("proxy", "PROXY")]


def no_network(monkeypatch) -> None:
    """No host name resolves, as on a machine without network (and without a proxy)."""
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", fail)


def test_without_network_the_cache_answers_at_once(hub, monkeypatch):
    """Where the Hub's name does not resolve, huggingface_hub's 25 s of retries are skipped."""
    m = tiny_map()
    m.push_to_hub("user/nonet")
    HJMap.from_pretrained("user/nonet")  # fills the cache
    n_requests = len(hub.requests)
    no_network(monkeypatch)
    assert_same_maps(m, HJMap.from_pretrained("user/nonet"))
    with pytest.raises(CheckpointError, match="not in the local cache.*does not resolve"):
        HJMap.from_pretrained("user/never-cached")
    with pytest.raises(CheckpointError, match="force_download.*cannot be downloaded"):
        HJMap.from_pretrained("user/nonet", force_download=True)
    assert len(hub.requests) == n_requests  # the Hub was never asked


def test_behind_a_proxy_a_local_name_lookup_proves_nothing(monkeypatch):
    from hjtranslate.checks import hub_unreachable

    no_network(monkeypatch)
    assert "does not resolve" in hub_unreachable()
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub_unreachable() is None  # the proxy resolves it
    for name in ("NO_PROXY", "no_proxy"):  # urllib reads the lower-case one first
        monkeypatch.setenv(name, "huggingface.co")
    assert "does not resolve" in hub_unreachable()


def test_hf_hub_offline_env_in_a_fresh_process(hub, hf_cache, tmp_path):
    """``HF_HUB_OFFLINE=1`` set before import (the way users set it) loads from the cache."""
    m = tiny_map()
    m.push_to_hub("user/env-off")
    HJMap.from_pretrained("user/env-off")
    hub.refuse = True
    n_requests = len(hub.requests)
    x = torch.randn(4, 2)
    torch.save({"x": x, "y": m.forward(x)}, tmp_path / "io.pt")
    code = (
        "import sys, torch, hjtranslate as h\n"
        "d = torch.load(sys.argv[1])\n"
        "m = h.HJMap.from_pretrained('user/env-off')\n"
        "torch.testing.assert_close(m.forward(d['x']), d['y'], rtol=0, atol=0)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hf_cache)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "io.pt")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert len(hub.requests) == n_requests
    assert_no_token(proc.stdout, proc.stderr)


# -- broken or foreign checkpoints --------------------------------------------------------
def test_missing_repo_and_missing_file(hub):
    with pytest.raises(CheckpointError, match="neither a local folder nor a Hub repository"):
        HJMap.from_pretrained("user/does-not-exist")
    api = HfApi()
    api.create_repo("user/config-only")
    config = json.dumps(tiny_map().config_dict()).encode()
    api.upload_file(path_or_fileobj=config, path_in_repo="config.json", repo_id="user/config-only")
    with pytest.raises(CheckpointError, match="has no file 'model.safetensors'"):
        HJMap.from_pretrained("user/config-only")
    # another library's model with a "dim" of its own (DistilBERT's config has one)
    api.create_repo("user/distil")
    api.upload_file(path_or_fileobj=b'{"dim": 768, "model_type": "distilbert", "architectures": '
                    b'["DistilBertModel"]}', path_in_repo="config.json", repo_id="user/distil")
    with pytest.raises(CheckpointError, match=r"does not describe an hjtranslate map "
                       r"\(DistilBertModel\)"):
        HJMap.from_pretrained("user/distil")
    with pytest.raises(CheckpointError, match="No such folder"):
        HJMap.from_pretrained("./no/such/folder")


def test_a_run_judge_or_mistyped_folder_is_named(hub, tmp_path, monkeypatch):
    """A run folder points at its map/, a judge folder is named a judge, and a mistyped local
    path that reads as user/name says there is no such local folder, first and in the error."""
    from hjtranslate.pipeline import TranslationPipeline

    run = tmp_path / "run"
    tiny_map().save_pretrained(run / "map")
    (run / "config.json").write_text(json.dumps({"task": "toy2d"}))
    with pytest.raises(CheckpointError, match=f"{run} is a training run or pipeline folder: its "
                       f"map is {run / 'map'}"):
        HJMap.from_pretrained(run)
    judge = Path(__file__).resolve().parents[1] / "models" / "judge-mnist"
    with pytest.raises(CheckpointError, match="It looks like a judge"):
        TranslationPipeline.from_pretrained(judge)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=f"There is no local folder {tmp_path / 'run' / 'mpa'}: "
                      "looking for a Hub repo 'run/mpa' instead"):
        with pytest.raises(CheckpointError, match=f"There is no local folder {tmp_path / 'run' / 'mpa'}, "
                           "and as a Hub id: "):
            HJMap.from_pretrained("run/mpa")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network asked: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError, match="There is no local folder"):
            HJMap.from_pretrained("run/mpa")
    with pytest.raises(CheckpointError, match="^config.json of 'user/absent' is not in the local"):
        HJMap.from_pretrained("user/absent")  # no local 'user' folder: the Hub's answer alone


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "empty"])
def test_damaged_weights(tmp_path, damage):
    folder = tmp_path / "m"
    tiny_map().save_pretrained(folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    if damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(data[: len(data) - 40])
    elif damage == "garbage":
        weights.write_bytes(b"\x00\xff" * 300)
    else:
        weights.write_bytes(b"")
    match = "model.safetensors is missing" if damage == "missing" else "not a valid safetensors"
    with pytest.raises(CheckpointError, match=match):
        HJMap.from_pretrained(folder)


def test_truncated_weights_on_the_hub(hub, tmp_path):
    """Downloads are checked by size only: a truncated upload is caught when loading."""
    folder = tmp_path / "m"
    tiny_map().save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    HfApi().create_repo("user/truncated")
    HfApi().upload_folder(repo_id="user/truncated", folder_path=folder)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        HJMap.from_pretrained("user/truncated")


def test_unreadable_config(tmp_path):
    folder = tmp_path / "m"
    tiny_map().save_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not readable JSON"):
        HJMap.from_pretrained(folder)


def test_config_from_a_newer_version(tmp_path):
    folder = tmp_path / "m"
    tiny_map().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["hjtranslate_version"] = "99.0.0"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"hjtranslate 99\.0\.0, newer than"):
        HJMap.from_pretrained(folder)


@pytest.mark.parametrize("change", [{"dim": 10**9}, {"num_classes": 10**9},
                                    {"head_kwargs": {"width": 10**9}},
                                    {"head_kwargs": {"depth": 10**7}}])
def test_a_config_asking_for_a_huge_map_is_refused_before_it_is_built(tmp_path, change):
    """A config.json can ask for any size: compared with the weights file's header first (a
    width of 10^9 tried to allocate hundreds of GB before the weights were read)."""
    folder = tmp_path / "m"
    tiny_map(head="conditional", num_classes=3).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    if "head_kwargs" in change:
        change = {"head_kwargs": {**config["head_kwargs"], **change["head_kwargs"]}}
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match="edited or damaged"):
        HJMap.from_pretrained(folder)


def test_a_float64_map_loads_back_exactly_in_float64(tmp_path):
    """The weights are copied into a map of the asked precision: a float64 map was built in
    float32 first, and its weights rounded on the way (4.6e-9)."""
    m = tiny_map(head="conditional", num_classes=3).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1e-12)  # below float32's resolution
    m.save_pretrained(tmp_path / "m")
    back = HJMap.from_pretrained(tmp_path / "m", torch_dtype=torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values(),
                                                 strict=True))
    assert HJMap.from_pretrained(tmp_path / "m").shift.dtype == torch.float32  # the default


def test_the_dry_build_stops_a_huge_depth_and_counts_only_its_own_thread():
    """The meta-device build is stopped at four times the file's tensors (a depth of 10^5 built
    for minutes); a build in another thread meanwhile (the app's workers) is not counted, and
    nothing is left hooked after."""
    import threading

    from torch.nn.modules import module as nn_module

    from hjtranslate.checks import dry_build_misfit

    saved = {f"{i}.weight": (4, 4) for i in range(3)}
    other: list[int] = []

    def deep() -> torch.nn.Module:
        worker = threading.Thread(
            target=lambda: other.append(len(torch.nn.Sequential(
                *(torch.nn.Linear(4, 4) for _ in range(600))).state_dict())))
        worker.start()
        worker.join()
        return torch.nn.Sequential(*(torch.nn.Linear(4, 4, bias=False) for _ in range(10**5)))

    assert dry_build_misfit(deep, saved) == ("the file holds 3 tensors and the config asks for "
                                             "more than 1,036, a depth far beyond the file's")
    assert other == [1200]
    assert not nn_module._global_parameter_registration_hooks
    assert not nn_module._global_buffer_registration_hooks
    shallow = lambda: torch.nn.Sequential(*(torch.nn.Linear(4, 4, bias=False) for _ in range(3)))  # noqa: E731
    assert dry_build_misfit(shallow, saved) is None


def test_a_weights_file_of_no_map_or_of_far_fewer_values_is_refused_before_building(tmp_path):
    """Names the dry build does not share with the file (a renamed, emptied or cut file) are not
    compared one by one: a file without the map's 'shift' is refused, and a config asking for
    far more values than the file holds."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    tiny_map(head="conditional", num_classes=3).save_pretrained(folder)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    save_file({"other": torch.zeros(1)}, str(weights))
    with pytest.raises(CheckpointError, match="are not a map's \\(no 'shift' tensor\\)"):
        HJMap.from_pretrained(folder)
    save_file({k: v for k, v in state.items() if not k.startswith("head.")}, str(weights))
    config = json.loads((folder / "config.json").read_text())
    config["head_kwargs"]["width"] = 10**6  # 10^12 values, were it built
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"holds [\d,]+ values and the config asks for"):
        HJMap.from_pretrained(folder)


def test_pickle_only_folder_is_refused(tmp_path):
    folder = tmp_path / "m"
    tiny_map().save_pretrained(folder)
    m = HJMap.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(m.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only pickle checkpoints \(pytorch_model\.bin\)"):
        HJMap.from_pretrained(folder)


@pytest.mark.parametrize("kind", ["cost", "head"])
def test_config_naming_a_missing_plugin(tmp_path, kind):
    folder = tmp_path / "m"
    tiny_map().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config[kind] = "fancy"
    config["plugin_packages"][kind] = "hjt-fancy-plugins 1.2.0"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"{kind} plugin 'fancy'.*hjt-fancy-plugins"):
        HJMap.from_pretrained(folder)
    # registered in a notebook (registry.register), not installed: register it again
    config["plugin_packages"][kind] = "<runtime>"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"registered in the process that saved it, with "
                       rf"hjtranslate.registry.register\('{kind}', 'fancy', ...\): register it"):
        HJMap.from_pretrained(folder)


# -- hjtranslate push -------------------------------------------------------------------------
def test_cli_push_end_to_end(hub, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "saved"
    m = tiny_map()
    m.save_pretrained(folder)
    assert main(["push", str(folder), "--repo-id", "user/cli-map"]) == 0
    out = capsys.readouterr()
    sha = hub.repo("user/cli-map").branches["main"]
    assert f"{hub.url}/user/cli-map/commit/{sha}" in out.out
    on_hub = hub.files("user/cli-map")
    assert set(on_hub) >= {p.name for p in folder.iterdir()}
    for p in folder.iterdir():  # the files as saved, but a card that loads the Hub repo
        if p.name != "README.md":
            assert on_hub[p.name] == p.read_bytes()
    assert b"HJMap.from_pretrained('user/cli-map')" in on_hub["README.md"]
    assert b"from_pretrained('saved')" in (folder / "README.md").read_bytes()  # left as it was
    assert not hub.repo("user/cli-map").private
    # one commit on top of the repo's initial one
    assert len(HfApi().list_repo_commits("user/cli-map")) == 2

    # a second push to a new branch of a private repo
    m2 = tiny_map(seed=5)
    m2.save_pretrained(folder)
    args = ["push", str(folder), "--repo-id", "user/cli-private", "--private", "--revision", "dev"]
    assert main(args) == 0
    out2 = capsys.readouterr()
    repo = hub.repo("user/cli-private")
    assert repo.private and set(repo.branches) == {"main", "dev"}
    assert "model.safetensors" not in hub.files("user/cli-private", "main")
    assert_same_maps(m2, HJMap.from_pretrained("user/cli-private", revision="dev"))
    assert_no_token(out.out, out.err, out2.out, out2.err, caplog.text)
    assert set(hub.auth_headers) == {f"Bearer {TOKEN}"}


def test_cli_push_pipeline_folder(hub, tmp_path, capsys):
    folder = tmp_path / "pipe"
    shutil.copytree(ROOT / "models" / "digits-to-fashion", folder)
    # a pipeline that does not load is refused before anything reaches the Hub
    config = folder / "map" / "config.json"
    text = config.read_text()
    config.write_text("{not json")
    assert main(["push", str(folder), "--repo-id", "user/pipe"]) == 2
    err = capsys.readouterr().err
    assert "does not load as a pipeline, so it is not published" in err and "config.json" in err
    weights = folder / "map" / "model.safetensors"
    config.write_text(text)
    whole = weights.read_bytes()
    weights.write_bytes(whole[:-16])
    assert main(["push", str(folder), "--repo-id", "user/pipe"]) == 2
    assert "does not load as a pipeline" in capsys.readouterr().err
    assert hub.repos == {}
    weights.write_bytes(whole)
    assert main(["push", str(folder), "--repo-id", "user/pipe"]) == 0
    files = hub.files("user/pipe")
    assert {"hjtranslate_pipeline.json", "map/config.json", "map/model.safetensors",
            "vae/diffusion_pytorch_model.safetensors"} <= set(files)
    assert files["map/model.safetensors"] == whole
    assert b"TranslationPipeline.from_pretrained('user/pipe')" in files["README.md"]
    assert b"TranslationPipeline.from_pretrained('user/pipe').map" in files["map/README.md"]
    assert b"--model user/pipe --input" in files["README.md"]
    assert b"from_pretrained('models/digits-to-fashion')" in (folder / "README.md").read_bytes()
    # the parts' cards load this repo's parts (they loaded the local copy, or the installed judge)
    for part in ("vae", "judge_source", "judge_target"):
        card = files[f"{part}/README.md"].decode()
        assert f" = TranslationPipeline.from_pretrained('user/pipe').{part}  # this repo's" in card
        assert card.split("```python", 1)[0] == (folder / part / "README.md").read_text().split(
            "```python", 1)[0]  # the rest of the card as it is
        space: dict = {"images": torch.zeros(2, 1, 28, 28)}
        exec(card.split("```python\n", 1)[1].split("```", 1)[0], space)  # encodes, predicts
    # the map alone, without the pipeline's VAE and judges, as its card says
    assert b"HJMap.from_pretrained('user/pipe', subfolder='map')" in files["map/README.md"]
    alone = HJMap.from_pretrained("user/pipe", subfolder="map/")
    local = HJMap.from_pretrained(folder, subfolder=Path("map"))
    x = torch.randn(4, alone.dim)
    torch.testing.assert_close(alone.forward(x, 1), local.forward(x, 1))
    with pytest.raises(ValueError, match="subfolder must be a relative folder name"):
        HJMap.from_pretrained(folder, subfolder="../elsewhere")
    with pytest.raises(CheckpointError, match=f"is {folder / 'mpa'} a saved hjtranslate map"):
        HJMap.from_pretrained(folder, subfolder="mpa")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_push_errors(hub, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "saved"
    tiny_map().save_pretrained(folder)

    def push(*argv: str) -> str:
        assert main(["push", *argv]) == 2
        out = capsys.readouterr()
        assert_no_token(out.out, out.err)
        return out.err

    assert "No such folder" in push(str(tmp_path / "nope"), "--repo-id", "user/x")
    assert "Invalid --repo-id" in push(str(folder), "--repo-id", "not a/repo id")
    assert "expected 'user/name'" in push(str(folder), "--repo-id", "noslash")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "neither a saved map" in push(str(empty), "--repo-id", "user/x")
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[:-16])
    assert "does not load as a map, so it is not published" in push(str(folder), "--repo-id", "user/x")
    (folder / "model.safetensors").write_bytes(weights)
    assert "expected 'user/name'" in push(str(folder), "--repo-id", "bad id!!/x/y")
    assert hub.repos == {}  # nothing was created on the Hub

    # no token at all: the Hub answers 401, and the error says that none was sent
    hub.require_token = True
    monkeypatch.delenv("HF_TOKEN")
    err = push(str(folder), "--repo-id", "user/x")
    assert "Could not publish" in err and "No token was sent: log in with `hf auth login`" in err
    assert hub.repos == {}
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_free_port()}")
    err = push(str(folder), "--repo-id", "user/x")
    assert "Could not publish" in err and "127.0.0.1" in err


def test_a_push_replaces_what_loads_and_publishes_only_the_map(hub, tmp_path, capsys):
    """The repo holds what was pushed: a pipeline pushed over a map (or a map over a pipeline)
    leaves none of the other's files loading; notes, a .env or an optimizer state beside the
    map are not published; a repo's other files stay."""
    HfApi().create_repo("user/mix")
    HfApi().upload_file(path_or_fileobj=b"png", path_in_repo="sample.png", repo_id="user/mix")
    HfApi().upload_file(path_or_fileobj=b"# guide", path_in_repo="docs/guide.md", repo_id="user/mix")
    first = tiny_map(seed=1)
    first.push_to_hub("user/mix")
    pipe = tmp_path / "pipe"
    shutil.copytree(ROOT / "models" / "digits-to-fashion", pipe)
    # a pipeline whose index names its map folder otherwise pushes as well
    (pipe / "map").rename(pipe / "the-map")
    index = json.loads((pipe / "hjtranslate_pipeline.json").read_text())
    (pipe / "hjtranslate_pipeline.json").write_text(json.dumps({**index, "map": "the-map"}))
    with pytest.warns(UserWarning, match="In user/mix, this push removes config.json, "
                      "model.safetensors: model files it replaces"):
        assert main(["push", str(pipe), "--repo-id", "user/mix"]) == 0
    assert b"from_pretrained('user/mix').map" in hub.files("user/mix")["the-map/README.md"]
    (pipe / "the-map").rename(pipe / "map")
    (pipe / "hjtranslate_pipeline.json").write_text(json.dumps(index))
    assert main(["push", str(pipe), "--repo-id", "user/mix"]) == 0
    files = set(hub.files("user/mix"))
    assert not any(f.startswith("the-map/") for f in files)  # the earlier index's part
    assert "config.json" not in files and "model.safetensors" not in files
    assert {"hjtranslate_pipeline.json", "map/model.safetensors", "sample.png"} <= files
    with pytest.raises(CheckpointError, match="has no file 'config.json'. If it is a translation "
                       "pipeline, load TranslationPipeline.from_pretrained"):
        HJMap.from_pretrained("user/mix")
    folder = tmp_path / "map"
    second = tiny_map(seed=2)
    second.save_pretrained(folder)
    (folder / ".env").write_text("HF_TOKEN=hf_secret")
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.txt").write_text("x")
    (folder / "optimizer.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    torch.save({"w": torch.zeros(2)}, folder / "extra.pt")
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"Not published \(not part of the map\): \.env, "
                      r"extra.pt, notes/todo.txt, optimizer.safetensors\. Pickle files never are"):
        assert main(["push", str(folder), "--repo-id", "user/mix"]) == 0
    assert set(hub.files("user/mix")) == {".gitattributes", "README.md", "config.json",
                                          "model.safetensors", "sample.png", "docs/guide.md"}
    assert_same_maps(second, HJMap.from_pretrained("user/mix"))


def test_push_checks_from_the_api_and_for_private_repos(hub, tmp_path, monkeypatch):
    m = tiny_map()
    with pytest.raises(ValueError, match="expected 'user/name'"):
        m.push_to_hub("noslash")
    with pytest.raises(ValueError, match=r"push_to_hub=True\) needs repo_id='user/name'"):
        m.save_pretrained(tmp_path / "run" / "map", push_to_hub=True)
    assert not (tmp_path / "run").exists() and hub.repos == {}
    with pytest.raises(TypeError, match="unknown keyword arguments \\['create_pr'\\]"):
        m.push_to_hub("user/x", create_pr=True)
    m.push_to_hub("user/vis")
    with pytest.raises(ValueError, match="already exists and is public.*--private"):
        m.push_to_hub("user/vis", private=True)
    # a failed file upload is a message, not a traceback
    monkeypatch.setattr(HfApi, "upload_folder", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("Error while uploading 'model.safetensors' to the Hub.")))
    with pytest.raises(ValueError, match="Could not publish the map to 'user/vis'.*Error while uploading"):
        m.push_to_hub("user/vis")  # (it named a temporary folder)
    assert hub.repo("user/vis") is not None  # it held the map before: kept
    with pytest.raises(ValueError, match="Could not publish"):
        m.push_to_hub("user/new")
    assert hub.repo("user/new") is None  # made by the failed push, empty: removed
    with pytest.raises(ValueError, match="Could not publish"):
        m.push_to_hub("user/vis", revision="feature")
    assert set(hub.repo("user/vis").branches) == {"main"}  # nor is a branch it made


def test_a_branch_push_card_loads_the_branch_and_dot_is_a_folder(hub, tmp_path, monkeypatch):
    folder = tmp_path / "saved"
    tiny_map().save_pretrained(folder)
    monkeypatch.chdir(folder)
    assert main(["push", ".", "--repo-id", "user/dev-only", "--revision", "dev"]) == 0
    card = hub.files("user/dev-only", "dev")["README.md"]
    assert b"HJMap.from_pretrained('user/dev-only', revision='dev')" in card
    # main holds nothing: loading it says so, and names revision=
    from hjtranslate.pipeline import TranslationPipeline

    with pytest.raises(CheckpointError, match=r"holds no .json or .safetensors files at revision "
                       r"'main': if the pipeline was pushed to a branch, pass revision="):
        TranslationPipeline.from_pretrained("user/dev-only")


def test_a_local_folder_named_like_a_hub_id_says_it_wins(hub, tmp_path, monkeypatch):
    tiny_map(seed=1).push_to_hub("user/r")
    monkeypatch.chdir(tmp_path)
    local = tiny_map(seed=2)
    local.save_pretrained(tmp_path / "user" / "r")
    with pytest.warns(UserWarning, match="user/r is a local folder, which is loaded; revision "
                      "apply to Hub repos only"):
        assert_same_maps(local, HJMap.from_pretrained("user/r", revision="main"))


def test_a_push_between_the_two_downloads_does_not_mix_commits(hub, monkeypatch):
    import huggingface_hub

    first, second = tiny_map(seed=1), tiny_map(seed=2)
    first.push_to_hub("user/race")
    real = huggingface_hub.hf_hub_download

    def download(repo_id, filename, **kwargs):
        path = real(repo_id, filename, **kwargs)
        if filename == "config.json":
            second.push_to_hub("user/race")  # lands before the weights are fetched
        return path

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert_same_maps(first, HJMap.from_pretrained("user/race"))


# -- every registered cost and head ---------------------------------------------------------
COST_KWARGS = {"pnorm": {"p": 3.0}, "lp": {"p": 1.5}}
HEAD_KWARGS = {"mlp": {"width": 8, "depth": 2, "quadratic": "hopf_lax", "quadratic_gain": 2.0},
               "affine": {"quadratic_gain": 2.0}}


@pytest.mark.parametrize("head", sorted(registry.plugins("head")))
@pytest.mark.parametrize("cost", sorted(registry.plugins("cost")))
def test_roundtrip_every_cost_and_head(tmp_path, cost, head):
    conditional = getattr(registry.resolve("head", head).obj, "conditional", False)
    m = tiny_map(cost=cost, cost_kwargs=COST_KWARGS.get(cost), head=head,
                 head_kwargs=HEAD_KWARGS.get(head, {"width": 8, "depth": 2}),
                 num_classes=3 if conditional else None)
    folder = tmp_path / "m"
    m.save_pretrained(folder)
    loaded = HJMap.from_pretrained(folder)
    assert type(loaded.cost) is type(m.cost) and type(loaded.head) is type(m.head)
    assert_same_maps(m, loaded)

    # strict loading: an unexpected tensor or a missing one is refused
    weights = folder / "model.safetensors"
    state = load_file(weights)
    save_file({**state, "head.extra": torch.zeros(1)}, weights)
    with pytest.raises(CheckpointError, match="strict loading"):
        HJMap.from_pretrained(folder)
    state.pop(sorted(state)[0])
    save_file(state, weights)
    with pytest.raises(CheckpointError, match="strict loading"):
        HJMap.from_pretrained(folder)


def test_token_false_tilde_paths_tags_as_revisions_and_the_servers_reason(
        hub, tmp_path, monkeypatch, capsys):
    """token=False sends no saved token (a private repo is then not found); '~' is a home
    folder for HJMap.from_pretrained and push, as for the pipeline; a push refuses a tag, a
    commit or a ref as its branch; a refused push shows the server's reason."""
    m = tiny_map()
    m.push_to_hub("user/priv", private=True)
    assert_same_maps(m, HJMap.from_pretrained("user/priv"))  # HF_TOKEN is set
    with pytest.raises(CheckpointError, match="lack access"):
        HJMap.from_pretrained("user/priv", token=False, force_download=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    m.save_pretrained(tmp_path / "mine")
    assert_same_maps(m, HJMap.from_pretrained("~/mine"))
    assert main(["push", "~/mine", "--repo-id", "user/home"]) == 0
    capsys.readouterr()
    HfApi().create_tag("user/home", tag="v1")
    sha = HfApi().model_info("user/home").sha
    for revision, message in (("v1", "is a tag of user/home"), (sha, "names a commit or a ref"),
                              ("refs/pr/1", "names a commit or a ref")):
        assert main(["push", "~/mine", "--repo-id", "user/home", "--revision", revision]) == 2
        assert message in capsys.readouterr().err
    assert set(hub.repo("user/home").branches) == {"main"}

    def refuse(*args, **kwargs):
        import httpx
        from huggingface_hub.errors import BadRequestError

        response = httpx.Response(400, request=httpx.Request("POST", "http://127.0.0.1/x"))
        raise BadRequestError("Bad request:\nInvalid branch name: x y", response=response)

    monkeypatch.setattr(HfApi, "upload_folder", refuse)
    with pytest.raises(ValueError, match="Bad request: Invalid branch name: x y. Check the repo "
                       "id and --revision"):
        m.push_to_hub("user/home")


def test_a_hub_vae_loads_its_latent_statistics(hub, tmp_path):
    """A VAE given as a Hub id standardises its latents with the latent_stats.json beside it,
    as the same VAE from a folder does."""
    from hjtranslate_plugins.vae import VAEEncoder, default_vae_path

    HfApi().create_repo("user/vae")
    HfApi().upload_folder(repo_id="user/vae", folder_path=str(default_vae_path()))
    local, remote = VAEEncoder(default_vae_path()), VAEEncoder("user/vae")
    x = torch.rand(4, 1, 28, 28)
    assert remote.latent_stats == local.latent_stats
    torch.testing.assert_close(remote.encode(x), local.encode(x))


def test_a_hub_vae_whose_config_does_not_fit_its_weights_is_refused_before_it_is_built(hub, tmp_path):
    """A Hub VAE's config.json asking for a block width its weights do not have: refused from the
    downloaded file's header before diffusers builds it (200,000 asked for 1.4 TB)."""
    import shutil

    from hjtranslate_plugins.vae import VAEEncoder, default_vae_path

    folder = tmp_path / "vae"
    shutil.copytree(default_vae_path(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["block_out_channels"][-1] = 200_000
    (folder / "config.json").write_text(json.dumps(config))
    HfApi().create_repo("user/big-vae")
    HfApi().upload_folder(repo_id="user/big-vae", folder_path=str(folder))
    with pytest.raises(CheckpointError, match=r"VAE 'user/big-vae' \(from the Hub\) cannot be "
                                              r"loaded: its weights do not fit .*\(200000, 4, 3, 3\)"):
        VAEEncoder("user/big-vae")


def test_local_files_only_says_it_kept_the_download_from_being_tried(hub):
    from hjtranslate.pipeline import TranslationPipeline

    tiny_map().push_to_hub("user/lfo")
    with pytest.raises(CheckpointError, match="local_files_only=True kept it from being "
                       "downloaded"):
        HJMap.from_pretrained("user/lfo", local_files_only=True)
    with pytest.raises(CheckpointError, match="local_files_only=True kept it from being "
                       "downloaded"):
        TranslationPipeline.from_pretrained("user/lfo", local_files_only=True)


def test_card_metadata_lists_measures_not_settings(tmp_path):
    """The Hub's metrics metadata names what was measured: not the seed, the steps, a flag or a
    timing (the card's table still shows them)."""
    from huggingface_hub import ModelCard

    m = tiny_map()
    m.metrics = {"accuracy_forward": 0.9, "seed": 0, "steps": 10, "ranks_in_sync": True,
                 "run_seconds": 3.5, "fd_forward": 1.2, "note": "tiny"}
    m.save_pretrained(tmp_path / "map")
    card = ModelCard.load(tmp_path / "map" / "README.md")
    assert card.data.metrics == ["accuracy_forward", "fd_forward"]
    assert "| seed | 0 |" in card.text and "| run_seconds | 3.5 |" in card.text


def test_force_download_offline_or_without_a_server_is_an_error_that_says_so(hub, monkeypatch):
    """HF_HUB_OFFLINE=1 with force_download raised huggingface_hub's OfflineModeIsEnabled from the
    map (and the pipeline silently loaded the cached copy it was asked to replace); a Hub that
    refuses the connection raised the HTTP library's ConnectError."""
    import huggingface_hub
    from huggingface_hub import constants

    from hjtranslate.pipeline import TranslationPipeline

    tiny_map().push_to_hub("user/fd")
    HJMap.from_pretrained("user/fd")  # cached
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for load in (lambda: HJMap.from_pretrained("user/fd", force_download=True),
                 lambda: TranslationPipeline.from_pretrained("user/fd", force_download=True)):
        with pytest.raises(CheckpointError, match="cannot be downloaded with HF_HUB_OFFLINE=1"):
            load()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def refused(*args, **kwargs):  # the Hub's server down (the URLs are fixed at import)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
    with pytest.raises(CheckpointError, match="Could not download config.json of 'user/fd' "
                       r"\(\[Errno 111\] Connection refused\)"):
        HJMap.from_pretrained("user/fd", force_download=True)


def test_a_push_keeps_what_the_folders_card_says(hub, tmp_path):
    """Notes written into a map's card were dropped: a push wrote a fresh card. Only its snippet
    is rewritten to load the repo; pushed again, one snippet still loads it."""
    folder = tmp_path / "noted"
    tiny_map().save_pretrained(folder)
    card = folder / "README.md"
    card.write_text(card.read_text() + "\n## My notes\n\nTrained on the lab's data.\n")
    assert main(["push", str(folder), "--repo-id", "user/noted"]) == 0
    pushed = hub.files("user/noted")["README.md"].decode()
    assert "## My notes" in pushed and "HJMap.from_pretrained('user/noted')" in pushed
    assert "from_pretrained('noted')" in card.read_text()  # the folder's own card unchanged
    card.write_text(pushed)  # a card downloaded from the repo, pushed again to a branch
    assert main(["push", str(folder), "--repo-id", "user/noted", "--revision", "dev"]) == 0
    again = hub.files("user/noted", revision="dev")["README.md"].decode()
    assert again.count("HJMap.from_pretrained(") == 1
    assert "HJMap.from_pretrained('user/noted', revision='dev')" in again and "## My notes" in again
    tiny_map().push_to_hub("user/branch-only", branch="exp")
    with pytest.raises(CheckpointError, match="If the map was pushed to a branch, pass revision='BRANCH'"):
        HJMap.from_pretrained("user/branch-only")
    assert HJMap.from_pretrained("user/branch-only", revision="exp").dim == 2


def test_a_push_publishes_no_local_folder(hub, tmp_path):
    """A run's card and config record its command with absolute paths (a home folder, a user
    name): the published copy names only their last parts; the folder keeps them."""
    run = tmp_path / "home" / "alice" / "runs" / "toy"
    assert main(["train", "toy2d", "--n", "400", "--eval-n", "100", "--steps", "2",
                 "--output-dir", str(run), "--no-progress"]) == 0
    local = (run / "map" / "config.json").read_text()
    assert str(run) in local
    assert main(["push", str(run / "map"), "--repo-id", "user/toy"]) == 0
    files = hub.files("user/toy")
    for name in ("config.json", "README.md"):
        assert str(tmp_path) not in files[name].decode() and "alice" not in files[name].decode()
    assert json.loads(files["config.json"])["metrics"]["command"].endswith(
        "--output-dir toy --no-progress")
    assert HJMap.from_pretrained("user/toy").dim == 2
    assert (run / "map" / "config.json").read_text() == local


def test_push_takes_a_commit_message_and_a_pipeline_a_branch(hub, tmp_path):
    """`hjtranslate push` had no --commit-message; a pipeline's push_to_hub refused branch=,
    which a map's takes."""
    folder = tmp_path / "m"
    tiny_map().save_pretrained(folder)
    assert main(["push", str(folder), "--repo-id", "user/msg", "--commit-message", "First map"]) == 0
    repo = hub.repo("user/msg")
    assert repo.commits[repo.branches["main"]].title == "First map"
    from hjtranslate.pipeline import TranslationPipeline

    pipe = TranslationPipeline.from_pretrained(ROOT / "models" / "digits-to-fashion")
    pipe.push_to_hub("user/pipe-branch", branch="exp")
    assert set(hub.repo("user/pipe-branch").branches) == {"main", "exp"}
    with pytest.raises(ValueError, match="name two branches"):
        pipe.push_to_hub("user/pipe-branch", branch="exp", revision="dev")


def test_a_refused_token_says_how_to_send_another_or_none(hub, monkeypatch):
    """A token the Hub refuses (401) while loading: "Invalid credentials" alone named no token."""
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    from hjtranslate.pipeline import TranslationPipeline

    def refused(*args, **kwargs):
        response = httpx2.Response(401, request=httpx2.Request("GET", f"{hub.url}/user/x"))
        raise HfHubHTTPError("401 Client Error: Invalid credentials in Authorization header",
                             response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refused)
    for load in (lambda: HJMap.from_pretrained("user/x"),
                 lambda: TranslationPipeline.from_pretrained("user/x")):
        with pytest.raises(CheckpointError, match=r"Invalid credentials.*refused the token sent: "
                           r"log in again .*token=False"):
            load()


def test_what_a_push_rewrites_stays_where_it_belongs(tmp_path):
    """Path shortening replaces only whole recorded paths (not inside a URL, a repo id or another
    path; a path with spaces whole); the card merge replaces the Hub metadata and the first
    python block only: a user's second block and their notes keep their own calls."""
    from hjtranslate.hub import _merge_card, _shorten_local_paths

    staged = tmp_path / "staged"
    staged.mkdir()
    config = {"metrics": {"command": "hjtranslate train toy2d --data-dir /data --output-dir "
                                     "'/home/al ice/runs/a'", "init_from": "/Users/Jane Doe/maps/d2f",
                          "note": "see /mnt/x"}}
    (staged / "config.json").write_text(json.dumps(config, indent=2))
    card = ("m = hjt.HJMap.from_pretrained('me/data-map')\nhttps://huggingface.co/datasets/mnist\n"
            "| command | hjtranslate train toy2d --data-dir /data --output-dir '/home/al ice/runs/a' |\n"
            "from /Users/Jane Doe/maps/d2f and /Users/Jane Doe/maps/d2f2, "
            "/home/al ice/runs/a/data.npz\n")
    (staged / "README.md").write_text(card)
    _shorten_local_paths(staged)
    out = json.loads((staged / "config.json").read_text())["metrics"]
    assert out == {"command": "hjtranslate train toy2d --data-dir /data --output-dir 'a'",
                   "init_from": "d2f", "note": "see x"}
    assert (staged / "README.md").read_text() == (
        "m = hjt.HJMap.from_pretrained('me/data-map')\nhttps://huggingface.co/datasets/mnist\n"
        "| command | hjtranslate train toy2d --data-dir /data --output-dir 'a' |\n"
        "from d2f and /Users/Jane Doe/maps/d2f2, /home/al ice/runs/a/data.npz\n")

    fresh, mine = tmp_path / "fresh.md", tmp_path / "mine.md"
    fresh.write_text("---\nlibrary_name: hjtranslate\n---\n\n# Map\n\n```python\n"
                     "m = hjt.HJMap.from_pretrained('me/m')\n```\n")
    mine.write_text("---\nlibrary_name: old\n---\n\n# Map\n\n```python\n"
                    "m = hjt.HJMap.from_pretrained('runs/m')\n```\n\n## Notes\n\nCompare with "
                    "`hjtranslate translate --model other/base`.\n\n```python\n"
                    "base = hjt.HJMap.from_pretrained('runs/baseline/map').to('cuda')\n```\n")
    _merge_card(mine, fresh)
    assert mine.read_text() == (
        "---\nlibrary_name: hjtranslate\n---\n\n# Map\n\n```python\n"
        "m = hjt.HJMap.from_pretrained('me/m')\n```\n\n## Notes\n\nCompare with "
        "`hjtranslate translate --model other/base`.\n\n```python\n"
        "base = hjt.HJMap.from_pretrained('runs/baseline/map').to('cuda')\n```\n")
    plain = tmp_path / "plain.md"
    plain.write_text("My own card, no snippet.\n")
    _merge_card(plain, fresh)
    assert plain.read_text() == fresh.read_text()
