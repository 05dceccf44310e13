"""``hjtranslate app``: load a pipeline and serve the Gradio app (``hjtranslate_apps.translate``)."""

from __future__ import annotations

import argparse
import os
import socket

from .stopping import stop_signals_interrupt


def _host_problem(host: str) -> str | None:
    """Why no server can listen on ``host`` here (``None`` when a socket binds to it)."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
    try:
        found = socket.getaddrinfo(name, 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        return str(exc) or type(exc).__name__
    problem = "no address"
    for family, kind, _, _, address in found:  # one that binds is enough (IPv4 or IPv6)
        try:
            with socket.socket(family, kind) as s:
                s.bind(address)  # port 0: any free port, so only the host is tested
            return None
        except OSError as exc:
            problem = str(exc) or type(exc).__name__
    return problem


def check_address(host: str, port: int) -> None:
    """Clear errors for a ``--port`` outside 1..65535 or a ``--host`` this machine cannot
    listen on, before the pipeline is loaded."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {port}.")
    problem = _host_problem(host) if host else None  # Gradio serves "" on 127.0.0.1
    if problem is not None:
        raise ValueError(
            f"Cannot serve the app on --host {host}: {problem}. Use an address of this machine: "
            "127.0.0.1 (this computer only) or 0.0.0.0 (all network interfaces)."
        )
    if _port_in_use(host or "127.0.0.1", port):
        raise ValueError(f"--port {port} is in use on {host or '127.0.0.1'}: pick another --port "
                         "(or stop what serves there).")


def _port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` already (checked before the model loads; the
    server binds as uvicorn does, with SO_REUSEADDR, so a closed connection's port is free)."""
    import errno

    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    for family, kind, _, _, address in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
                return False
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def cmd_app(args: argparse.Namespace) -> int:
    """``hjtranslate app [--model FOLDER_OR_HUB_ID] [--host H] [--port P] [--share]``: loads
    ``--model`` (default: the shipped ``models/digits-to-fashion``) and serves the app until
    Ctrl-C. A public share link is requested only with ``--share``."""
    # before gradio is imported: no usage statistics sent (and no exit hang on a dead network)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from . import pipeline as pipeline_module
    from .translate import hub_options

    check_address(args.host, args.port)
    model = getattr(args, "model", None)
    if model is None:
        model = str(pipeline_module.shipped_pipeline())
    pipe = pipeline_module.TranslationPipeline.from_pretrained(
        model, **hub_options(args))

    from hjtranslate_apps.translate import LAUNCH_KWARGS, build_demo

    demo = build_demo(pipe)
    share = bool(getattr(args, "share", False))
    print(f"hjtranslate app: {pipe!r} from {model}")
    # SIGTERM (docker stop, systemd) closes the server as Ctrl-C does, cleaning Gradio's cache
    try:
        with stop_signals_interrupt():
            demo.launch(server_name=args.host, server_port=args.port, share=share, **LAUNCH_KWARGS)
    except OSError as exc:  # the port is taken, the host cannot be bound
        raise ValueError(f"Cannot serve the app on --host {args.host} --port {args.port}: {exc} "
                         "(the port may be in use: pick another --port; or check that --host is "
                         "an address of this machine, e.g. 127.0.0.1 or 0.0.0.0).") from None
    return 0
