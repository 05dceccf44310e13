"""``hjtranslate push`` (publish a saved folder to the Hub) and ``hjtranslate translate``."""

from __future__ import annotations

import argparse
import glob
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from .checks import network_errors
from .hjmap import PIPELINE_INDEX_FILE as PIPELINE_FILE
from .modelcard import WITH_THE_PIPELINE
from .pipeline import HUB_PATTERNS, PICKLE_SUFFIXES

MAP_FILES = ("config.json", "model.safetensors")


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


#: files of these kinds at the repo's root or in a part's folder that a push does not upload
#: are deleted in its commit: a pipeline pushed over a map (or the other way round) must not
#: leave the other's files loading. Other files (docs/, images, other folders) stay.
HUB_SUFFIXES = tuple(pattern.lstrip("*") for pattern in HUB_PATTERNS)  # what loading reads
PART_FOLDERS = ("map", "vae", "judge_source", "judge_target")


def _stale(remote: list[str], uploaded: set[str], remote_parts: set[str]) -> list[str]:
    """The files of ``remote`` (a repo's) that the upload replaces as a whole: model files at
    the root and in the part folders (the usual ones, and those either index names)."""
    parts = set(PART_FOLDERS) | remote_parts | {f.split("/", 1)[0] for f in uploaded if "/" in f}
    return sorted(f for f in remote if f not in uploaded and f.endswith(HUB_SUFFIXES)
                  and ("/" not in f or f.split("/", 1)[0] in parts))


def _publishable(root: Path, kind: str) -> list[Path]:
    """The files that make up the map or pipeline in ``root`` (relative paths): what loading it
    reads, and its model cards. Anything else in the folder (notes, a .env, an optimizer's
    state) is not published."""
    import json

    if kind == "map":
        names = [*MAP_FILES, "README.md"]
        return [Path(n) for n in names if (root / n).is_file()]
    index = json.loads((root / PIPELINE_FILE).read_text())
    files = [Path(n) for n in (PIPELINE_FILE, "README.md") if (root / n).is_file()]
    for key in ("map", "vae", "judge_source", "judge_target"):
        part = index.get(key)
        if not isinstance(part, str) or not (root / part).is_dir():
            continue
        for f in sorted((root / part).iterdir()):
            wanted = (f.name in (*MAP_FILES, "README.md") if key == "map"
                      else not f.name.startswith(".") and f.name.endswith(HUB_SUFFIXES))
            if f.is_file() and wanted:
                files.append(f.relative_to(root))
    return files


def _remote_parts(api: Any, repo_id: str, revision: str | None, remote: list[str]) -> set[str]:
    """The part folders the repo's current pipeline index names (none without one)."""
    import json

    if PIPELINE_FILE not in remote:
        return set()
    try:
        index = json.loads(Path(api.hf_hub_download(repo_id, PIPELINE_FILE, revision=revision))
                           .read_text())
    except (*network_errors(), ValueError):
        return set()
    if not isinstance(index, dict):
        return set()
    return {PurePosixPath(v).parts[0] for k, v in index.items()
            if k in PART_FOLDERS and isinstance(v, str) and PurePosixPath(v).parts}


def _stage(root: Path, kind: str, staged: Path) -> list[str]:
    """Copy the publishable files of ``root`` into ``staged``; return the others' names."""
    keep = _publishable(root, kind)
    for rel in keep:
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, staged / rel)
    kept = {rel.as_posix() for rel in keep}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).as_posix() not in kept)


def _local_paths(value: Any) -> set[str]:
    """The absolute paths in a JSON value's strings (a recorded path, or inside a recorded
    command line)."""
    import os
    import shlex

    if isinstance(value, dict):
        return set().union(*map(_local_paths, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_local_paths, value)) if value else set()
    if not isinstance(value, str) or not value.strip():
        return set()
    try:
        words = shlex.split(value) if " " in value else [value]
    except ValueError:  # not a command line
        words = value.split()
    found = set()
    for word in words:
        path = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
        if os.path.isabs(path) and len(Path(path).parts) > 1:
            found.add(path)
    return found


def _shorten_local_paths(staged: Path) -> None:
    """What a push publishes names no local folder: each absolute path the staged configs record
    (the commands of the run, ``--init-from``, a data folder) becomes its last part, in every
    staged JSON file and card (the folder itself keeps them). Home folders and user names
    stay on the machine."""
    import json

    texts = [p for p in staged.rglob("*") if p.is_file() and p.suffix in (".json", ".md")]
    paths: set[str] = set()
    for path in texts:
        if path.suffix == ".json":
            try:
                paths |= _local_paths(json.loads(path.read_text()))
            except (ValueError, UnicodeDecodeError):
                continue
    if not paths:
        return
    for path in texts:
        text = original = path.read_text(encoding="utf-8", errors="replace")
        for local in sorted(paths, key=len, reverse=True):  # the longest first: no partial match
            short = Path(local).name
            text = text.replace(json.dumps(local)[1:-1], short).replace(local, short)
        if text != original:
            path.write_text(text, encoding="utf-8")


def _cards_for_the_hub(loaded: Any, kind: str, folder: Path, repo_id: str,
                       revision: str | None = None) -> None:
    """Make the model cards of ``folder`` (a copy) load ``repo_id`` (at ``revision``, a branch
    other than main) rather than the local folder they were saved to. A card's snippets are
    rewritten in place, so that the rest of it (a user's notes, a run's record) is published as
    it is in the folder; a card without a snippet to rewrite is written afresh."""
    from .modelcard import revision_argument, write_model_card

    at = revision_argument(revision)
    if kind == "pipeline":
        import json

        index = json.loads((folder / PIPELINE_FILE).read_text())
        pipe = f"TranslationPipeline.from_pretrained({repo_id!r}{at})"
        command = f"--model {repo_id}" + (f" --revision {revision}" if at else "")
        if not _retarget(folder / "README.md", [(_PIPELINE_CALL, pipe), (_MODEL_OPTION, command)]):
            loaded._write_model_card(folder, repo_id, revision)
        part = index["map"]  # map/, or as named
        call = (f"HJMap.from_pretrained({repo_id!r}, subfolder={Path(part).as_posix()!r}{at})\n"
                f"{WITH_THE_PIPELINE} from hjtranslate.pipeline import TranslationPipeline; {pipe}.map")
        if not _retarget(folder / part / "README.md", [(_MAP_CALL, call)]):
            write_model_card(folder / part, loaded.map.config_dict(), pipeline=repo_id,
                             revision=revision, subfolder=Path(part).as_posix())
        for name in ("vae", "judge_source", "judge_target"):  # their snippets load local copies
            if index.get(name):
                _retarget(folder / index[name] / "README.md", [(
                    _PYTHON_BLOCK, "```python\nfrom hjtranslate.pipeline import TranslationPipeline\n"
                    f"{name} = {pipe}.{name}  # this repo's {index[name]}/\n```")])
    elif not _retarget(folder / "README.md", [(_MAP_CALL, f"HJMap.from_pretrained({repo_id!r}{at})")]):
        write_model_card(folder, loaded.config_dict(), repo_id=repo_id, revision=revision)


# (with the line a pipeline's map card adds after it, so that a card pushed again keeps one)
_MAP_CALL = re.compile(r"HJMap\.from_pretrained\([^)\n]*\)(\n" + re.escape(WITH_THE_PIPELINE)
                       + r"[^\n]*)?")
_PIPELINE_CALL = re.compile(r"TranslationPipeline\.from_pretrained\([^)\n]*\)")
_MODEL_OPTION = re.compile(r"--model \S+( --revision \S+)?")
_PYTHON_BLOCK = re.compile(r"```python\n.*?```", re.DOTALL)


def _retarget(card: Path, rewrites: list[tuple[re.Pattern, str]]) -> bool:
    """Rewrite what ``rewrites`` match in ``card`` (pattern -> text); False, writing nothing,
    when the card is missing or its first pattern matches nothing."""
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8", errors="replace")
    if not rewrites[0][0].search(text):
        return False
    for pattern, replacement in rewrites:
        text = pattern.sub(lambda _, new=replacement: new, text)  # taken as it is, no escapes
    card.write_text(text, encoding="utf-8")
    return True


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise ValueError(f"Invalid --repo-id {repo_id!r}: expected 'user/name' (or 'org/name').")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(f"Invalid --repo-id {repo_id!r}: {exc}") from None
    return repo_id


def check_revision(revision: str | None) -> None:
    """A push's ``revision`` names a branch: not a commit sha or a ref (a tag is refused once
    the repo's tags are listed)."""
    if revision is not None and (re.fullmatch(r"[0-9a-fA-F]{40}", revision)
                                 or revision.startswith("refs/")):
        raise ValueError(f"--revision {revision} names a commit or a ref: a push goes to a branch "
                         "(created from main if new); name one, e.g. --revision dev.")


def push_folder(
    folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
    commit_message: str | None = None, token: str | bool | None = None, shown: str | None = None,
):
    """Create ``repo_id`` (if needed) and upload the map or pipeline in ``folder`` as one commit;
    ``shown``: what a failure calls it (the folder's path by default);
    returns the ``CommitInfo``. ``revision`` is a branch, created from ``main`` if it does not
    exist. Only the files that make up the map or pipeline are uploaded (the others are named in
    a warning), and the commit deletes the repo's other ``.json``, ``.safetensors`` and ``.md``
    files at its root and in the part folders (map/, vae/, judge_*/), so that what loads from
    the repo is what was pushed; its other files stay."""
    import warnings

    from huggingface_hub import HfApi, get_token

    check_repo_id(repo_id)  # before the folder is loaded
    check_revision(revision)
    folder = Path(folder).expanduser()
    kind, loaded = check_folder(folder)
    root = Path(folder).resolve()
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / (root.name or "folder")
        left_out = _stage(root, kind, staged)
        if left_out:
            pickles = any(f.lower().endswith(PICKLE_SUFFIXES) for f in left_out)
            warnings.warn(f"Not published (not part of the {kind}): {', '.join(left_out)}."
                          + (" Pickle files never are: unpickling can run arbitrary code."
                             if pickles else ""), stacklevel=2)
        _cards_for_the_hub(loaded, kind, staged, repo_id, revision)  # local: before any request
        _shorten_local_paths(staged)
        uploaded = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
        created = new_branch = before = None
        try:
            existed = api.repo_exists(repo_id)
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            created = None if existed else repo_url.repo_id
            if private and not api.repo_info(repo_url.repo_id).private:
                raise ValueError(
                    f"{repo_id} already exists and is public: a push does not change its "
                    "visibility, so --private (private=True) cannot hold. Make the repo private "
                    "on the Hub first (or push to a new repo id).")
            if revision and revision != "main":
                refs = api.list_repo_refs(repo_url.repo_id)
                branches = {b.name for b in refs.branches}
                if revision in {t.name for t in refs.tags} - branches:
                    raise ValueError(f"--revision {revision} is a tag of {repo_id}: a push goes "
                                     "to a branch (created from main if new); name another.")
                api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
                new_branch = None if revision in branches else revision
            remote = api.list_repo_files(repo_url.repo_id, revision=revision)
            before = set(remote)
            stale = _stale(remote, uploaded, _remote_parts(api, repo_url.repo_id, revision, remote))
            if stale:
                warnings.warn(f"In {repo_id}, this push removes {', '.join(stale)}: model files "
                              "it replaces (the repo's history keeps them).", stacklevel=2)
            return api.upload_folder(
                repo_id=repo_url.repo_id,
                folder_path=str(staged),
                revision=revision,
                delete_patterns=[glob.escape(f) for f in stale] or None,
                commit_message=commit_message or f"Upload hjtranslate {kind} with `hjtranslate push`",
            )
        except (*network_errors(), RuntimeError) as exc:  # RuntimeError: a failed file upload
            # The client's messages name the URL and the server's answer, never the token.
            # the server's reason may be on the lines after the status ("Bad request:\n...")
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            first = " ".join(lines[:3]).rstrip(".") if lines else type(exc).__name__
            status = getattr(getattr(exc, "response", None), "status_code", None)
            try:  # what this push made is not left behind, if nothing has landed in it
                if created is not None and set(api.list_repo_files(created)) <= {".gitattributes"}:
                    api.delete_repo(created)
                elif new_branch is not None and set(
                        api.list_repo_files(repo_id, revision=new_branch)) == before:
                    api.delete_branch(repo_id, branch=new_branch)
            except (*network_errors(), RuntimeError):
                pass
            advice = ("Check the repo id and --revision against the reason given."
                      if status in (400, 404, 409, 422) else
                      "No token was sent: log in with `hf auth login` (or set HF_TOKEN), then push "
                      "again." if status == 401 and not api.token and not get_token() else
                      "Check the network, HF_ENDPOINT and your token (`hf auth login` or "
                      "HF_TOKEN), then push again.")
            raise ValueError(f"Could not publish {shown or folder} to {repo_id!r} on {api.endpoint}: "
                             f"{first}. {advice}") from None


def cmd_push(args: argparse.Namespace) -> int:
    """``hjtranslate push FOLDER --repo-id user/name [--private] [--revision BRANCH]
    [--commit-message TEXT]`` (the token: ``hf auth login`` or ``HF_TOKEN``)."""
    info = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                       commit_message=getattr(args, "commit_message", None) or None)
    print(f"Pushed {args.folder} to {info.repo_url.repo_id}: {info.commit_url}")
    return 0

