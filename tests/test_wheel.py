"""Installed from a wheel (`pip install git+...` builds one), not from a checkout: the shipped
models come with it, and training writes beside the user, never into site-packages."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "apps" / "examples" / "digit_3.png"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (a build writes build/ beside them), installed
    into a folder of its own; a process with it first on PYTHONPATH imports it, not the checkout."""
    pytest.importorskip("setuptools", minversion="69")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("hjtranslate", "plugins", "apps", "models"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("hjtranslate-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return tmp / "site"


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_wheel_ships_the_models_and_trains_beside_the_user(installed, tmp_path):
    where = run_installed(installed, tmp_path, "-c", (
        "import hjtranslate, hjtranslate.shipped as s, hjtranslate_plugins.vae as v, "
        "hjtranslate.pipeline as p\n"
        "print(hjtranslate.__file__, s.is_checkout(), s.models_dir(), s.training_root(), "
        "v.default_vae_path(), p.shipped_pipeline(), sep='\\n')"))
    assert where.returncode == 0, where.stderr
    package, checkout, models, training, vae, pipeline = where.stdout.split("\n")[:6]
    assert Path(package).is_relative_to(installed) and checkout == "False"
    assert Path(models) == installed / "hjtranslate_models"
    assert Path(training) == tmp_path / "models"  # not site-packages
    assert (Path(vae) / "config.json").is_file() and (Path(pipeline) / "map").is_dir()
    assert {p.name for p in Path(models).iterdir()} >= {
        "vae", "judge-mnist", "judge-fashion-mnist", "digits-to-fashion"}

    env = run_installed(installed, tmp_path, "-m", "hjtranslate", "env")
    assert f"shipped models: {models} (digits-to-fashion, judge-fashion-mnist, judge-mnist, vae; " \
           "installed from a wheel)" in env.stdout, env.stderr
    out = run_installed(installed, tmp_path, "-m", "hjtranslate", "translate", "--input", str(EXAMPLE),
                        "--out", "out")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "digit_3_forward.png").is_file()
    assert "Traceback" not in out.stderr
