"""Where the tests read MNIST and Fashion-MNIST: ``$HJT_DATA_DIR`` when it is set, else
``../shared/datasets`` beside the checkout (tests that need the files skip without them)."""

import os
from pathlib import Path

BESIDE = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SHARED = Path(os.environ.get("HJT_DATA_DIR") or BESIDE)
