"""Test-session environment: no test may reach the real Hugging Face Hub.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_DISABLE_XET`` when it is imported,
so they are set here, before anything imports huggingface_hub, diffusers, gradio or hjtranslate,
and the loopback Hub (``tests/hub_server.py``) is started now, at import, to know its port.
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_HF_HOME = tempfile.mkdtemp(prefix="hjt-test-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)

if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
from hub_server import HubServer  # noqa: E402  (standard library only)

_HUB = HubServer().start()
atexit.register(_HUB.stop)

#: a dummy token: sent to the loopback Hub only; tests assert it is never printed or logged
DUMMY_TOKEN = "hf_dummyTestToken0123456789abcdefXYZ"

# The test models are tiny: one thread each is far faster than two threads fighting for the
# cores with other processes (measured 30x on a loaded 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.update({
    "HF_ENDPOINT": _HUB.url,
    "HF_HOME": _HF_HOME,
    "HF_TOKEN": DUMMY_TOKEN,
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
})
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN"):
    os.environ.pop(_var, None)
from data_paths import SHARED  # noqa: E402

if SHARED.is_dir() and not os.environ.get("HJT_DATA_DIR"):
    os.environ["HJT_DATA_DIR"] = str(SHARED)

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _loopback_hub_session():
    """Stops the loopback Hub at the end of the session (atexit is the fallback)."""
    yield _HUB
    _HUB.stop()


@pytest.fixture
def hub_server():
    """The loopback Hub (``HF_ENDPOINT``), emptied before each test: repos, logs, settings."""
    _HUB.reset()
    yield _HUB
    _HUB.reset()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh Hub download cache for one test (``huggingface_hub.constants.HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The datasets beside the repository (``../shared/datasets``); skips without them."""
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"datasets not found in {SHARED}")
    monkeypatch.setenv("HJT_DATA_DIR", str(SHARED))
    return SHARED
