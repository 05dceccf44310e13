"""``hjtranslate app``: load a pipeline and serve the Gradio app (``hjtranslate_apps.translate``)."""

from __future__ import annotations

import argparse
import os


def cmd_app(args: argparse.Namespace) -> int:
    """``hjtranslate app [--model FOLDER_OR_HUB_ID] [--host H] [--port P] [--share]``: loads
    ``--model`` (default: the shipped ``models/digits-to-fashion``) and serves the app until
    Ctrl-C. A public share link is requested only with ``--share``."""
    # before gradio is imported: no usage statistics sent (and no exit hang on a dead network)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from . import pipeline as pipeline_module

    model = getattr(args, "model", None)
    if model is None:
        folder = pipeline_module.default_model_path()
        if not (folder / pipeline_module.INDEX_FILE).is_file():
            raise FileNotFoundError(
                f"The app's default pipeline {folder} is missing. Produce it with `hjtranslate "
                "train digits-to-fashion --export models/digits-to-fashion`, or pass --model a "
                "pipeline folder or Hub id."
            )
        model = str(folder)
    pipe = pipeline_module.TranslationPipeline.from_pretrained(model)

    from hjtranslate_apps.translate import LAUNCH_KWARGS, build_demo

    demo = build_demo(pipe)
    share = bool(getattr(args, "share", False))
    print(f"hjtranslate app: {pipe!r} from {model}")
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=share, **LAUNCH_KWARGS)
    except OSError as exc:  # the port is taken, the host cannot be bound
        raise ValueError(f"Cannot serve the app on {args.host}:{args.port}: {exc} "
                         "(pick another --port).") from None
    return 0
