"""Load run for the Gradio app: ``--requests`` concurrent ``/translate`` calls (default 50, one
thread each, every request a different MNIST test digit) from a ``gradio_client`` on loopback
against the app launched in this process with its queue (two requests at a time).

    OMP_NUM_THREADS=1 python benchmarks/app_load.py [--model FOLDER_OR_HUB_ID | --tiny]

``--model`` defaults to the shipped ``models/digits-to-fashion``; without it (or with ``--tiny``)
a small pipeline is built in a temporary folder (the shipped VAE and judges, a map fitted for
20 steps on 200 + 200 test images): latency hardly depends on the map's training, only on its
size. Latency is per request, from the call to its outputs downloaded. Prints and writes
``benchmarks/results/app_load.json``. Zero errors are expected.

``tests/test_app.py`` uses :func:`tiny_pipeline`, :func:`make_inputs` and :func:`run_load`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "app_load.json"
DATA_DIR = REPO.parent / "shared" / "datasets"


def _data_dir() -> Path | None:
    env = os.environ.get("HJT_DATA_DIR")
    return Path(env) if env else DATA_DIR if DATA_DIR.is_dir() else None


def tiny_pipeline(folder: str | os.PathLike, n: int = 200, steps: int = 20, seed: int = 0) -> Path:
    """A small but real pipeline saved to ``folder``: the shipped VAE and judges and a
    class-conditional map fitted for ``steps`` steps on the latents of the first ``n`` test
    digits and clothes (as ``tests/test_pipeline.py`` builds its pipelines)."""
    from hjtranslate import HJMap, fit
    from hjtranslate.data import load_dataset
    from hjtranslate.pipeline import TranslationPipeline

    models = REPO / "models"
    xs, ls = load_dataset("mnist", "test", data_dir=_data_dir())
    xt, lt = load_dataset("fashion-mnist", "test", data_dir=_data_dir())
    xs, ls, xt, lt = xs[:n], ls[:n], xt[:n], lt[:n]
    base = TranslationPipeline.from_components(
        models / "vae", HJMap(64, head="conditional", num_classes=10), "mnist", "fashion-mnist"
    )
    zs, zt = base.vae.encode(xs), base.vae.encode(xt)
    hjmap = fit(zs, zt, labels=(ls, lt), conditional=True, steps=steps, batch_size=128,
                head_kwargs={"width": 64, "depth": 2}, seed=seed)
    pipe = TranslationPipeline.from_components(models / "vae", hjmap, "mnist", "fashion-mnist")
    pipe.calibrate_other_side(xs[:, None], xt[:, None])  # the app's hint, as --export measures it
    return pipe.save_pretrained(folder)


def make_inputs(folder: str | os.PathLike, n: int = 50, offset: int = 1000) -> list[Path]:
    """``n`` distinct MNIST test digits as 28x28 PNGs in ``folder`` (distinct inputs: identical
    requests would test Gradio's file cache rather than the app)."""
    from PIL import Image

    from hjtranslate.data import load_dataset

    xs, _ = load_dataset("mnist", "test", data_dir=_data_dir())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"load_{i:03d}.png"
        Image.fromarray(xs[offset + i].numpy()).save(path)
        paths.append(path)
    return paths


@contextlib.contextmanager
def serve(model: str, gradio_temp: str | os.PathLike):
    """The app on 127.0.0.1 (a free port), offline, with its own Gradio cache; yields
    ``(demo, url)`` and restores the environment afterwards."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "GRADIO_TEMP_DIR")}
    os.environ["HF_HUB_OFFLINE"] = "1"  # else every Client() waits for the Hub
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_temp)
    from hjtranslate_apps.translate import LAUNCH_KWARGS, build_demo

    demo = build_demo(model)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **LAUNCH_KWARGS)
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_load(url: str, inputs: list[Path], workers: int | None = None,
             api_name: str = "/translate") -> dict[str, Any]:
    """One request per input, all at once from ``workers`` threads (default: one per input)
    sharing one ``gradio_client.Client``. Returns latencies (s), errors and a summary."""
    from gradio_client import Client, handle_file
    from PIL import Image

    client = Client(url, verbose=False)

    def one(path: Path) -> tuple[float, str | None]:
        start = time.perf_counter()
        try:
            result = client.predict(handle_file(str(path)), "auto", "forward", api_name=api_name)
            with Image.open(result[0]) as img:
                if img.size != (168, 168):
                    raise AssertionError(f"translation of size {img.size}")
            error = None
        except Exception as exc:  # counted and reported, not raised: the run's verdict
            error = f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - start, error

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers or len(inputs)) as pool:
        results = list(pool.map(one, inputs))
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    errors = [e for _, e in results if e]
    q = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else latencies * 19
    return {
        "requests": len(inputs),
        "errors": len(errors),
        "error_messages": errors[:5],
        "median_s": round(statistics.median(latencies), 3),
        "p95_s": round(q[18], 3),
        "min_s": round(latencies[0], 3),
        "max_s": round(latencies[-1], 3),
        "wall_s": round(wall, 3),
        "throughput_per_s": round(len(inputs) / wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id")
    parser.add_argument("--tiny", action="store_true", help="build a small pipeline instead")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a loopback client needs nothing from the Hub
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    from hjtranslate_apps.translate import CONCURRENCY_LIMIT

    from hjtranslate.pipeline import INDEX_FILE, default_model_path

    load_before = round(os.getloadavg()[0], 2)  # the machine may be shared
    with tempfile.TemporaryDirectory(prefix="hjt-app-load-") as tmp:
        model = args.model
        if model is None and not args.tiny and (default_model_path() / INDEX_FILE).is_file():
            model = str(default_model_path())
        if model is None:
            t0 = time.perf_counter()
            model = str(tiny_pipeline(Path(tmp) / "tiny"))
            print(f"built a tiny pipeline in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            label = "tiny (shipped VAE and judges, map fitted 20 steps)"
        else:
            label = model
        with serve(model, Path(tmp) / "gradio") as (_, url):
            inputs = make_inputs(Path(tmp) / "inputs", args.requests)
            summary = run_load(url, inputs)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": label,
        "endpoint": "/translate (auto class, forward, 8 morph frames)",
        "concurrency_limit": CONCURRENCY_LIMIT,
        "client_threads": args.requests,
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1min_before": load_before,
        "platform": platform.platform(),
        "command": "OMP_NUM_THREADS=1 python benchmarks/app_load.py" + (
            f" --model {args.model}" if args.model else " --tiny" if args.tiny else ""),
        **summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{summary['requests']} requests, {summary['errors']} errors: median "
          f"{summary['median_s']:.2f} s, p95 {summary['p95_s']:.2f} s, wall {summary['wall_s']:.1f} s"
          f" ({label}) -> {out}")
    for message in summary["error_messages"]:
        print("  error:", message, file=sys.stderr)
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
