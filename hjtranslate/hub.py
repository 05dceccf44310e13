"""``hjtranslate push`` (publish a saved folder to the Hub) and ``hjtranslate translate``."""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from . import judges
from .checks import missing_reason, network_errors, stays_inside
from .hjmap import PIPELINE_INDEX_FILE as PIPELINE_FILE
from .pipeline import HUB_PATTERNS, PICKLE_SUFFIXES

MAP_FILES = ("config.json", "model.safetensors")


def check_folder(folder: str | Path) -> tuple[str, Any]:
    """Validate a folder before publishing; return its kind, ``"map"`` or ``"pipeline"``, and
    the map or pipeline loaded from it."""
    from .hjmap import is_run_folder

    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"No such folder: {folder}" if not os.path.lexists(path)
                         else f"{folder} {missing_reason(path)}: pass the folder of a saved map "
                         "or pipeline.")
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
        return [Path(n) for n in names
                if (root / n).is_file() and _not_linked_out(root / n, root, "map")]
    index = json.loads((root / PIPELINE_FILE).read_text())
    files = [Path(n) for n in (PIPELINE_FILE, "README.md")
             if (root / n).is_file() and _not_linked_out(root / n, root, "")]
    for key in ("map", "vae", "judge_source", "judge_target"):
        part = index.get(key)
        if not isinstance(part, str) or not (root / part).is_dir():
            continue
        for f in sorted((root / part).iterdir()):
            wanted = (f.name in (*MAP_FILES, "README.md") if key == "map"
                      else not f.name.startswith(".") and f.name.endswith(HUB_SUFFIXES))
            if f.is_file() and wanted and _not_linked_out(f, root, key):
                files.append(f.relative_to(root))
    return files


#: per part, the files its loader reads and checks: a push loads the folder first, so where
#: one of these is a link out of the folder (git-annex, DVC, an old --local-dir download) it
#: is what was checked, and is published; no other file a link leads out to is
_JUDGE_FILES = {judges.CONFIG_FILE, judges.WEIGHTS_FILE}
_LOADED = {"": {PIPELINE_FILE}, "map": MAP_FILES, "judge_source": _JUDGE_FILES,
           "judge_target": _JUDGE_FILES,  # (the VAE's, as diffusers and the vae plugin read it)
           "vae": {"config.json", "diffusion_pytorch_model.safetensors", "latent_stats.json"}}


def _not_linked_out(f: Path, root: Path, part: str) -> bool:
    """Not a link to what lies outside ``root`` (a stranger's folder can link a secret into it),
    unless it is a file the loader of ``part`` ("" for the pipeline's own) read and checked."""
    return stays_inside(f, root) or (f.resolve().is_file() and f.name in _LOADED[part])


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
    return sorted(p.relative_to(root).as_posix()
                  + (" (a link to a file outside the folder)" if not stays_inside(p, root) else "")
                  for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).as_posix() not in kept)


def _local_paths(value: Any) -> set[str]:
    """The absolute paths of three parts or more in a JSON value's strings: a string that is a
    path (spaces and all), or the words of a recorded command line. (``/data`` alone names no
    one, and as a bare word it is too common to replace.)"""
    import os
    import shlex

    if isinstance(value, dict):
        return set().union(*map(_local_paths, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_local_paths, value)) if value else set()
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        return set()
    if os.path.isabs(value):  # a recorded path, not a command
        words = [value]
    else:
        try:
            words = shlex.split(value)
        except ValueError:  # not a command line
            words = value.split()
    found = set()
    for word in words:
        path = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
        if os.path.isabs(path) and len(Path(path).parts) > 2:
            found.add(path)
    return found


def _shorten_local_paths(staged: Path) -> None:
    """What a push publishes names no local folder: each absolute path the staged configs record
    (the commands of the run, ``--init-from``, a data folder) becomes its last part, in every
    staged JSON file and card, where it stands as a whole (not inside a URL or another path);
    the folder itself keeps them. Home folders and user names stay on the machine."""
    import json

    texts = {}
    for path in staged.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md"):
            try:
                texts[path] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # not ours to rewrite
                continue
    paths: set[str] = set()
    for path, text in texts.items():
        if path.suffix == ".json":
            try:
                paths |= _local_paths(json.loads(text))
            except ValueError:
                continue
    if not paths:
        return
    # a path, as written or JSON-escaped, with no path or word character on either side
    forms = {form: Path(local).name for local in paths
             for form in (local, json.dumps(local)[1:-1])}
    found = re.compile("(?<![\\w/.~-])(" + "|".join(
        re.escape(f) for f in sorted(forms, key=len, reverse=True)) + ")(?![\\w/.-])")
    for path, text in texts.items():
        short = found.sub(lambda m: forms[m.group(1)], text)
        if short != text:
            path.write_text(short, encoding="utf-8")


def _cards_for_the_hub(loaded: Any, kind: str, folder: Path, repo_id: str,
                       revision: str | None = None) -> None:
    """Make the model cards of ``folder`` (a copy) load ``repo_id`` (at ``revision``, a branch
    other than main) rather than the local folder they were saved to. Each card is written
    afresh and then merged with the folder's: the fresh Hub metadata and usage snippet (and a
    pipeline's command line) replace the folder card's, and the rest of that card (a user's
    notes, a run's record) is published as it is. A part's card (vae/, judge_*/) gets its
    snippet's loading line replaced by the repo's part."""
    import tempfile

    from .modelcard import revision_argument, write_model_card

    at = revision_argument(revision)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        if kind == "pipeline":
            import json

            index = json.loads((folder / PIPELINE_FILE).read_text())
            loaded._write_model_card(fresh, repo_id, revision)
            _merge_card(folder / "README.md", fresh / "README.md")
            part = Path(index["map"]).as_posix()  # map/, or as named
            (fresh / part).mkdir(parents=True)
            write_model_card(fresh / part, loaded.map.config_dict(), pipeline=repo_id,
                             revision=revision, subfolder=part)
            _merge_card(folder / part / "README.md", fresh / part / "README.md")
            pipe = f"TranslationPipeline.from_pretrained({repo_id!r}{at})"
            for name in ("vae", "judge_source", "judge_target"):  # their snippets load local copies
                if index.get(name):
                    _retarget_part_card(folder / index[name] / "README.md", pipe, name)
        else:
            write_model_card(fresh, loaded.config_dict(), repo_id=repo_id, revision=revision)
            _merge_card(folder / "README.md", fresh / "README.md")


_HEADER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)
_PYTHON_BLOCK = re.compile(r"```python\n.*?```", re.DOTALL)
_COMMAND_LINE = re.compile(r"^Command line: `hjtranslate translate --model .*$", re.MULTILINE)


def _merge_card(card: Path, fresh: Path) -> None:
    """Write into ``card`` the fresh card's Hub metadata, its first python block and its command
    line in place of the card's own, keeping the rest; the fresh card whole where the card
    lacks the metadata or the block (not written by hjtranslate, or gone)."""
    new = fresh.read_text(encoding="utf-8")
    try:
        old = card.read_text(encoding="utf-8").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError):
        old = ""
    if not (_HEADER.search(old) and _PYTHON_BLOCK.search(old)):
        card.write_text(new, encoding="utf-8")
        return
    for pattern in (_HEADER, _PYTHON_BLOCK, _COMMAND_LINE):
        found = pattern.search(new)
        if found is not None:
            text = found.group(0)
            old = pattern.sub(lambda _, r=text: r, old, count=1)  # as it is: no escapes
    card.write_text(old, encoding="utf-8")


def _retarget_part_card(card: Path, pipe: str, part: str) -> None:
    """In a pipeline part's card, the usage block's imports and its first assignment (which
    loaded the local copy, or the installed judge) become the repo's part; the block's other
    lines (encode, predict, ...) stay."""
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    block = _PYTHON_BLOCK.search(text)
    if block is None:
        return
    lines, out, named = block.group(0).splitlines()[1:-1], [], False
    for line in lines:
        if line.startswith(("from ", "import ")):
            continue
        assigned = re.match(r"(\w+) = ", line)
        if assigned and not named:
            line, named = f"{assigned.group(1)} = {pipe}.{part}  # this repo's {part}/", True
        out.append(line)
    if not named:
        out.insert(0, f"{part} = {pipe}.{part}  # this repo's {part}/")
    snippet = "\n".join(["```python", "from hjtranslate.pipeline import TranslationPipeline", *out, "```"])
    card.write_text(text[:block.start()] + snippet + text[block.end():], encoding="utf-8")


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
) -> Any:
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


def push_saved(save: Callable[[Path], Path], repo_id: str, *, what: str, private: bool = False,
               revision: str | None = None, branch: str | None = None,
               commit_message: str | None = None, token: str | bool | None = None) -> Any:
    """``push_to_hub`` of a map or pipeline: ``save(folder)`` writes it into a temporary folder
    (and returns the folder to push), which is published as :func:`push_folder` does;
    ``revision`` or huggingface_hub's ``branch`` names the branch. Returns the ``CommitInfo``."""
    if revision and branch and revision != branch:
        raise ValueError(f"revision={revision!r} and branch={branch!r} name two branches: "
                         "pass one.")
    with tempfile.TemporaryDirectory(prefix="hjt-push-") as tmp:
        folder = save(Path(tmp) / what)
        return push_folder(folder, repo_id, private=private, revision=revision or branch,
                           commit_message=commit_message, token=token,
                           shown=f"the {what}")  # not the temporary folder


def cmd_push(args: argparse.Namespace) -> int:
    """``hjtranslate push FOLDER --repo-id user/name [--private] [--revision BRANCH]
    [--commit-message TEXT]`` (the token: ``hf auth login`` or ``HF_TOKEN``)."""
    info = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                       commit_message=getattr(args, "commit_message", None) or None)
    print(f"Pushed {args.folder} to {info.repo_url.repo_id}: {info.commit_url}")
    return 0

