"""scripts/setup.sh refuses a first install on a disk without room for torch, before pip starts."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("df") is None,
                    reason="needs bash and df")
def test_first_setup_says_when_the_disk_is_too_full(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "setup.sh")
    # No disk has a million GB free, so the check must refuse before creating anything.
    env = {**os.environ, "HJT_SETUP_NEED_GB": "1000000"}
    run = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "MB free" in run.stderr and "Free at least 1000000 GB" in run.stderr
    assert not (tmp_path / ".venv").exists()
