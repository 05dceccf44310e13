"""Run benchmark commands a few at a time, each with one torch thread, so that every run of a
comparison sees the same contention."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator


def run_side_by_side(jobs: list[tuple[str, list[str]]], at_once: int, one_thread: bool = True,
                     ) -> Iterator[tuple[str, list[str], float]]:
    """Start ``(key, command)`` jobs, ``at_once`` at a time (with ``OMP_NUM_THREADS=1`` if
    ``one_thread``); yield ``(key, command, seconds)`` as each finishes. A failing command
    stops the benchmark with its exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else None
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < max(1, at_once):
            key, cmd = pending.pop(0)
            running.append((key, cmd, subprocess.Popen(cmd, env=env), time.perf_counter()))
        time.sleep(1)
        for item in list(running):
            key, cmd, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode:
                sys.exit(f"error: {' '.join(cmd)} exited with {proc.returncode}")
            yield key, cmd, time.perf_counter() - t0
