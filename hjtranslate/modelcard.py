"""Model cards (README.md with YAML metadata) written next to every saved map."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checks import written_whole

# Hub dataset ids of the datasets the tasks read, for the cards' metadata.
HUB_DATASETS = {"mnist": "mnist", "fashion-mnist": "zalando-datasets/fashion_mnist",
                "fashion_mnist": "zalando-datasets/fashion_mnist"}


def card_name(folder: Path, repo_id: str | None = None) -> str:
    """What a card's usage snippet loads: ``repo_id`` (when pushed to the Hub), else the folder
    as it was given when relative (``models/digits-to-fashion`` loads from the repo root), else
    its name (no machine's absolute path in a card)."""
    if repo_id:
        return repo_id
    # written atomically through NAME.tmp (a run's map.tmp, a checkpoint's step-N.tmp): the
    # card names the folder the rename leaves
    final = Path(*(part.removesuffix(".tmp") for part in folder.parts))
    return final.as_posix() if not final.is_absolute() else final.name


def revision_argument(revision: str | None) -> str:
    """``, revision='dev'`` for a card's ``from_pretrained`` snippet (nothing for main)."""
    return f", revision={revision!r}" if revision and revision != "main" else ""


#: numbers a run records beside its metrics that are its settings or timings, not measures of
#: the map: left out of the card's Hub metadata (the card's table keeps them)
RUN_SETTINGS = frozenset({"seed", "steps", "num_processes", "lambda", "train_lambda", "preset",
                          "classes_evaluated", "energy_draws", "energy_draws_n"})


def _reference_value(name: str) -> bool:
    """A timing, or what a figure is compared with (a floor, a perfect map's figure), not a
    measure of the map (a ratio over a floor is one)."""
    return (name.endswith(("_of_a_perfect_map", "_seconds", "_seconds_all_launches"))
            or (name.endswith("_floor") and not name.endswith("_over_floor")))


def plugin_line(packages: dict[str, Any], names: dict[str, Any]) -> str | None:
    """A card's line naming the plugins from packages other than hjtranslate that loading needs
    (``packages``: kind -> ``"pkg 1.0"`` as a map records them; ``names``: kind -> plugin name),
    or None when hjtranslate's own plugins are all it needs."""
    from .registry import RUNTIME

    needs = []
    for kind, package in (packages or {}).items():
        if not package or str(package).split()[0] == "hjtranslate":
            continue
        where = ("registered at run time with hjtranslate.registry.register: register it "
                 "before loading" if package == RUNTIME else f"`pip install {str(package).split()[0]}`"
                 f" (saved with {package})")
        needs.append(f"the {kind} plugin `{names.get(kind)}` ({where})")
    return f"- needs {'; '.join(needs)}" if needs else None


def hub_metric_names(metrics: dict[str, Any]) -> list[str] | None:
    """The names of ``metrics`` that the Hub's ``metrics`` metadata lists: the measured numbers,
    not booleans, settings (seed, steps), timings (``*_seconds``) or reference values (floors,
    a perfect map's figures)."""
    names = sorted(k for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k.rsplit("/", 1)[-1] not in RUN_SETTINGS and not _reference_value(k))
    return names or None


def _conditional(config: dict[str, Any]) -> bool:
    """Whether a map's head takes each point's class (its plugin says; an unknown one: no)."""
    from . import registry

    try:
        return bool(getattr(registry.resolve("head", config.get("head", "mlp")).obj, "conditional", False))
    except registry.PluginError:
        return False


def write_model_card(
    folder: Path, config: dict[str, Any], repo_id: str | None = None,
    name: str | None = None, pipeline: str | None = None, revision: str | None = None,
    subfolder: str | None = None,
) -> Path:
    """Write ``README.md`` with Hub metadata and the metrics stored in the config; the usage
    snippet loads ``name``, else ``card_name(folder, repo_id)``, or, for the map of a pipeline
    on the Hub, the map of the pipeline ``pipeline`` (at ``revision``, a branch other than main)
    in its ``subfolder`` (default: the folder's name)."""
    from huggingface_hub import ModelCard, ModelCardData

    at = revision_argument(revision)
    metrics = config.get("metrics") or {}
    encoder = config.get("encoder") or {}
    datasets = list(encoder.get("datasets", [])) if isinstance(encoder, dict) else []
    datasets = list(dict.fromkeys(HUB_DATASETS.get(d, d) for d in datasets))
    data = ModelCardData(
        library_name="hjtranslate",
        license="apache-2.0",
        # a map of encoded images (a VAE's latents, pixel colours) translates images; one fitted
        # to plain vectors does not
        tags=["optimal-transport", "hamilton-jacobi",
              *(["image-to-image"] if isinstance(encoder, dict) and encoder else []), "hjtranslate"],
        datasets=datasets or None,
        metrics=hub_metric_names(metrics),
    )
    lines = [
        "---", data.to_yaml(), "---", "",
        "# Hamilton-Jacobi optimal transport map", "",
        "A transport map trained with [hjtranslate](https://github.com/hjtranslate/hjtranslate) "
        "(Park, Liu, Zhou, Osher 2025: Hamilton-Jacobi characteristic flows).", "",
        "```python",
        *(["import hjtranslate as hjt",
           f"m = hjt.HJMap.from_pretrained({pipeline!r}, subfolder={subfolder or Path(folder).name!r}"
           f"{at})",
           "# or with the pipeline's VAE and judges: from hjtranslate.pipeline import "
           f"TranslationPipeline; TranslationPipeline.from_pretrained({pipeline!r}{at}).map"]
          if pipeline else
          ["import hjtranslate as hjt",
           f"m = hjt.HJMap.from_pretrained({name or card_name(Path(folder), repo_id)!r}{at})"]),
        *(["# x: (n, dim) points; k: the class of each (an int for all), mapped to the same class",
           "y = m.forward(x, k); x_back = m.backward(y, k)"] if _conditional(config) else
          ["y = m.forward(x); x_back = m.backward(y)"]),
        "```", "",
        f"- dimension: {config.get('dim')}; cost: {config.get('cost')} "
        f"{json.dumps(config.get('cost_kwargs') or {})}; head: {config.get('head')}; "
        f"t_f: {config.get('t_f')}",
    ]
    if isinstance(encoder, dict) and encoder.get("space"):  # what the map's points are
        lines.append(f"- inputs: {encoder['space']}, as rows of shape (n, {config.get('dim')})")
    needs = plugin_line(config.get("plugin_packages") or {},
                        {"cost": config.get("cost"), "head": config.get("head")})
    if needs:
        lines.append(needs)
    if config.get("num_classes"):
        lines.append(f"- classes: {config.get('num_classes')}")
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        for key in sorted(metrics):
            value = metrics[key]
            if isinstance(value, float):
                value = f"{value:.6g}"
            lines.append(f"| {key} | {value} |")
    text = "\n".join(lines) + "\n"
    ModelCard(text)  # validates the YAML header
    path = folder / "README.md"
    with written_whole(path) as tmp:  # a link at README.md is replaced, not written through
        tmp.write_text(text)
    return path
