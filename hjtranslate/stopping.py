"""Stop signals as exceptions: SIGTERM and SIGHUP raise :class:`Terminated`, a
``KeyboardInterrupt``, so that whatever handles Ctrl-C (a clean message, Gradio's shutdown)
handles them too. No torch here: the CLI installs this before torch loads."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """Stopped by SIGTERM or SIGHUP (a KeyboardInterrupt for everything that handles Ctrl-C);
    ``signum`` says which (the exit code is 128 + signum, as a shell reports it)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.signum = int(signum)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (docker stop, systemd, a launcher) and SIGHUP (the terminal
    closed) raise :class:`Terminated` instead of killing the process without a word. Main thread
    only; a SIGHUP that ``nohup`` ignores stays ignored; the earlier handlers come back after."""
    before: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        hangup = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()  # not on Windows
        for sig in (signal.SIGTERM, *hangup):
            if sig in hangup and signal.getsignal(sig) is signal.SIG_IGN:
                continue
            before[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:  # None: a handler set outside Python
                signal.signal(sig, handler)
