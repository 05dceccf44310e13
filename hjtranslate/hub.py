"""``hjtranslate push`` (publish a saved folder to the Hub) and ``hjtranslate translate``."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: files that unpickle on load: never published (``from_pretrained`` reads safetensors only)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAP_FILES = ("config.json", "model.safetensors")
PIPELINE_FILE = "hjtranslate_pipeline.json"


def check_folder(folder: str | Path) -> tuple[str, Any]:
    """Validate a folder before publishing; return its kind, ``"map"`` or ``"pipeline"``, and
    the map or pipeline loaded from it."""
    from .hjmap import is_run_folder

    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"No such folder: {folder}")
    if is_run_folder(path) and not (path / PIPELINE_FILE).is_file():
        raise ValueError(
            f"{folder} is a training run folder, not a saved map or pipeline: publish the map "
            f"it trained with `hjtranslate push {path / 'map'} --repo-id ...`."
        )
    pickles = sorted(
        str(p.relative_to(path)) for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES
    )
    if pickles:
        raise ValueError(
            f"{folder} holds pickle files ({', '.join(pickles)}); hjtranslate publishes "
            "safetensors only, since unpickling can run arbitrary code. Convert them with "
            "safetensors.torch.save_file or remove them."
        )
    kind = "pipeline" if (path / PIPELINE_FILE).is_file() else "map"
    missing = [name for name in MAP_FILES if not (path / name).is_file()]
    if kind == "map" and missing:
        raise ValueError(
            f"{folder} is neither a saved map (it lacks {' and '.join(missing)}) nor a pipeline "
            f"folder (no {PIPELINE_FILE}). Save one with HJMap.save_pretrained(folder)."
        )
    return kind, _load(path, kind)


def _load(path: Path, kind: str) -> Any:
    """Load the folder as users will (a few MB): a truncated or hand-damaged file is found
    here, not by whoever downloads it."""
    from .hjmap import CheckpointError, HJMap

    try:
        if kind == "pipeline":
            from .pipeline import TranslationPipeline

            return TranslationPipeline.from_pretrained(path)
        return HJMap.from_pretrained(path)
    except (CheckpointError, ValueError, OSError) as exc:
        raise ValueError(f"{path} does not load as a {kind}, so it is not published: {exc}") from None


def _cards_for_the_hub(loaded: Any, kind: str, folder: Path, repo_id: str) -> None:
    """Rewrite the model cards of ``folder`` (a copy) so that their snippets load ``repo_id``
    rather than the local folder they were saved to."""
    from .modelcard import write_model_card

    if kind == "pipeline":
        loaded._write_model_card(folder, repo_id)
        write_model_card(folder / "map", loaded.map.config_dict(), pipeline=repo_id)
    else:
        write_model_card(folder, loaded.config_dict(), repo_id=repo_id)


def _check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise ValueError(f"Invalid --repo-id {repo_id!r}: expected 'user/name' (or 'org/name').")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(f"Invalid --repo-id {repo_id!r}: {exc}") from None
    return repo_id


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exception types a failed Hub call raises (the HTTP library depends on the version)."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[BaseException]] = [HfHubHTTPError, OSError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        for name in ("HTTPError", "RequestException"):
            if isinstance(getattr(mod, name, None), type):
                errors.append(getattr(mod, name))
    return tuple(errors)


def push_folder(
    folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
    commit_message: str | None = None,
):
    """Create ``repo_id`` (if needed) and upload ``folder`` in one commit; returns the
    ``CommitInfo``. ``revision`` is a branch, created from ``main`` if it does not exist."""
    from huggingface_hub import HfApi

    _check_repo_id(repo_id)  # before the folder is loaded
    kind, loaded = check_folder(folder)
    api = HfApi()
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / Path(folder).name
            shutil.copytree(folder, staged)
            _cards_for_the_hub(loaded, kind, staged, repo_url.repo_id)
            return api.upload_folder(
                repo_id=repo_url.repo_id,
                folder_path=str(staged),
                revision=revision,
                commit_message=commit_message or f"Upload hjtranslate {kind} with `hjtranslate push`",
            )
    except _network_errors() as exc:
        # The client's messages name the URL and the server's answer, never the token.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"Could not publish {folder} to {repo_id!r} on {api.endpoint}: {first}. Check the "
            "network, HF_ENDPOINT and your token (`hf auth login` or HF_TOKEN)."
        ) from None


def cmd_push(args: argparse.Namespace) -> int:
    """``hjtranslate push FOLDER --repo-id user/name [--private] [--revision BRANCH]``."""
    info = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"Pushed {args.folder} to {info.repo_url.repo_id}: {info.commit_url}")
    return 0

