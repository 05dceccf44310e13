"""``python -m hjtranslate``, ``accelerate launch -m hjtranslate`` and, from the repository
root, ``accelerate launch hjtranslate ...`` (which runs this file as a script)."""

import os
import sys

if __package__ in (None, ""):
    # Run as a script: this folder is sys.path[0], where our modules could shadow top-level
    # ones. Put the repository root there instead and import the package properly.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))
    from hjtranslate.cli import main
else:
    from .cli import main

if __name__ == "__main__":
    sys.exit(main())
