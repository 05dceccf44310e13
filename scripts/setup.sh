#!/usr/bin/env bash
# Create .venv (once) with hjtranslate installed in editable mode, its dev tools, and, for the
# browser test, Debian's chromium. Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.hjt-installed
# A first install (torch with its CUDA libraries) takes about 6.6 GB: say so before pip fails
# half-way with "No space left on device".
need_gb=${HJT_SETUP_NEED_GB:-7}
if [ ! -f "$stamp" ]; then
  for dir in . "${TMPDIR:-/tmp}"; do
    free_kb=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
    if [ -n "$free_kb" ] && [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
      echo "error: the first set-up installs torch and its libraries into .venv (about 6.6 GB)," \
        "but $(cd "$dir" && pwd) has only $((free_kb / 1024)) MB free." \
        "Free at least ${need_gb} GB there (e.g. remove old clones' .venv folders), then run it again." >&2
      exit 1
    fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  # constraints.txt pins the torch build this machine serves from disk.
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  touch "$stamp"
fi
if [ "${HJT_BROWSER:-1}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 \
      || echo "note: could not install chromium; browser tests will be skipped"
  fi
fi
