"""An in-memory, loopback HTTP server that speaks the part of the Hugging Face Hub API that the
real ``huggingface_hub`` client uses to publish and download repositories.

Standard library only. It exists so that tests can run ``push_to_hub`` / ``upload_folder`` /
``hf_hub_download`` / ``snapshot_download`` / ``from_pretrained`` with the real client, offline.
See ``/work/shared/docs/hub-testing.md`` for the measured facts behind each answer.

Covered: ``POST /api/repos/create`` (409 with ``url`` when the repo exists), ``/api/repos/delete``,
``/api/validate-yaml``, ``/api/whoami-v2``, per repo ``preupload`` (``regular`` or ``lfs`` upload
mode), the git-LFS batch API with PUT upload and a verify step that checks sha256, ``commit``
(NDJSON: ``header``, ``file`` base64, ``lfsFile``, ``deletedFile``, ``deletedFolder``), repo and
revision info with ``siblings`` and ``sha``, ``tree`` (recursive or not), ``refs``, ``commits``,
``branch`` and ``tag`` creation/deletion, and ``HEAD``/``GET`` on ``resolve`` with
``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files
and ``Range`` requests. Errors are 4xx with ``X-Error-Code`` (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``): the client retries 5xx answers with back-off, so the
server answers even its own bugs with 400.

Not covered: pull requests, Xet, multi-part LFS uploads, pagination (every listing is one page),
``paths-info``, spaces' runtime API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TYPE_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
# Suffixes that the Hub's default .gitattributes sends through LFS.
DEFAULT_LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".h5", ".onnx", ".npy",
    ".npz", ".msgpack", ".zip", ".tar", ".gz", ".parquet", ".arrow",
)
GITATTRIBUTES = "".join(
    f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in DEFAULT_LFS_SUFFIXES
).encode()
DEFAULT_USER = "user"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """The git object id: of the content, or of the pointer file for an LFS file."""
        if self.lfs:
            return git_sha1(lfs_pointer(self.sha256, self.size))
        return git_sha1(self.data)


@dataclass
class Commit:
    sha: str
    parent: str | None
    files: dict[str, Blob]
    title: str
    message: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """A branch, a tag or a full commit sha; ``None`` if it names nothing."""
        revision = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and SHA_RE.match(revision) and revision in self.commits:
            sha = revision
        return self.commits.get(sha) if sha else None


class HubError(Exception):
    """An error answered to the client (always 4xx)."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubState:
    """Everything the server holds, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.RLock()):
            self.repos: dict[tuple[str, str], Repo] = {}
            self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content (uploaded and verified)
            self.lfs_verified: set[str] = set()
            #: "auto" (LFS for the suffixes above or sizes >= lfs_threshold), "regular" or "lfs"
            self.upload_mode = "auto"
            self.lfs_threshold = 10 * 1024 * 1024
            self.lfs_suffixes: tuple[str, ...] = DEFAULT_LFS_SUFFIXES
            #: answer every request with 403 (a Hub that refuses), to test cache fallbacks
            self.refuse = False
            #: answer writes without a token 401, as the real Hub does
            self.require_token = False
            self.requests: list[tuple[str, str]] = []  # (method, path)
            self.auth_headers: list[str] = []
            self.uploads: list[dict[str, str]] = []  # {"repo", "path", "mode"} per committed file

    # -- helpers for tests ---------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        with self.lock:
            return self.repos.get((repo_type, repo_id))

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict:
        """``{path: bytes}`` of one revision."""
        with self.lock:
            repo = self._get_repo(repo_type, repo_id, auth="test")
            commit = self._get_commit(repo, revision)
            return {path: blob.data for path, blob in commit.files.items()}

    def delete_repo(self, repo_id: str, repo_type: str = "model") -> None:
        with self.lock:
            self.repos.pop((repo_type, repo_id), None)

    # -- internals -----------------------------------------------------------------------
    def _get_repo(self, repo_type: str, repo_id: str, auth: str | None = None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not auth):
            raise HubError(
                401 if repo is not None else 404, "Repository not found", "RepoNotFound"
            )
        return repo

    @staticmethod
    def _get_commit(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _new_commit(
        self, repo: Repo, parent: Commit | None, files: dict[str, Blob], title: str, message: str
    ) -> Commit:
        sha = hashlib.sha1(f"{repo.repo_id}{uuid.uuid4()}{time.time()}".encode()).hexdigest()
        commit = Commit(sha, parent.sha if parent else None, files, title, message, _now())
        repo.commits[sha] = commit
        return commit

    def mode_for(self, path: str, size: int) -> str:
        if self.upload_mode in ("regular", "lfs"):
            return self.upload_mode
        if size >= self.lfs_threshold or path.lower().endswith(tuple(self.lfs_suffixes)):
            return "lfs"
        return "regular"


def _repo_url(base: str, repo_type: str, repo_id: str) -> str:
    return f"{base}/{TYPE_PREFIXES[repo_type]}{repo_id}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing ----------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def base(self) -> str:
        return self.server.url

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0] or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        headers.update({k: str(v) for k, v in err.extra.items() if k[:1].isupper()})
        body = {"error": err.message, **{k: v for k, v in err.extra.items() if k.islower()}}
        self._json(err.status, body, headers)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        segs = [unquote(s) for s in split.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        auth = self.headers.get("Authorization")
        try:
            # The body is always read, so that keep-alive connections stay in sync.
            body = self._body() if self.command in ("POST", "PUT", "DELETE") else b""
            with self.state.lock:
                self.state.requests.append((self.command, split.path))
                if auth:
                    self.state.auth_headers.append(auth)
                if self.state.refuse:
                    raise HubError(403, "This test Hub refuses every request (refuse=True).")
                if self.state.require_token and not auth and self.command != "GET":
                    raise HubError(401, "Invalid username or password.")
                self._route(segs, query, body, auth)
        except HubError as err:
            self._error(err)
        except Exception as exc:  # a bug here must not look like a 5xx (the client retries)
            self._error(HubError(400, f"test hub server error: {exc!r}\n{traceback.format_exc()}"))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # -- routing -----------------------------------------------------------------------
    def _route(self, segs: list[str], query: dict, body: bytes, auth: str | None) -> None:
        m = self.command
        if segs[:1] == ["api"]:
            return self._route_api(segs[1:], query, body, auth)
        if segs[:1] == ["__lfs__"] and len(segs) == 3:
            return self._lfs_transfer(segs[1], segs[2], body)
        repo_type = "model"
        if segs and segs[0] in PLURAL_TO_TYPE and segs[0] != "models" and len(segs) > 3:
            repo_type, segs = PLURAL_TO_TYPE[segs[0]], segs[1:]
        if len(segs) >= 5 and segs[2] == "resolve" and m in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]), auth)
        if len(segs) == 6 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(repo_type, f"{segs[0]}/{segs[1][:-4]}", json.loads(body or b"{}"))
        raise HubError(404, f"Not found: {m} {self.path}")

    def _route_api(self, segs: list[str], query: dict, body: bytes, auth: str | None) -> None:
        m = self.command
        st = self.state
        if segs == ["validate-yaml"] and m == "POST":
            return self._json(200, {"errors": [], "warnings": []})
        if segs == ["whoami-v2"]:
            if not auth:
                raise HubError(401, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": DEFAULT_USER, "orgs": [],
                                    "auth": {"accessToken": {"role": "write"}}})
        if segs == ["repos", "create"] and m == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if segs == ["repos", "delete"] and m in ("POST", "DELETE"):
            payload = json.loads(body or b"{}")
            repo_type = payload.get("type") or "model"
            repo_id = f"{payload.get('organization') or DEFAULT_USER}/{payload['name']}"
            st._get_repo(repo_type, repo_id, auth="delete")
            st.delete_repo(repo_id, repo_type)
            return self._json(200, {})
        if len(segs) < 3 or segs[0] not in PLURAL_TO_TYPE:
            raise HubError(404, f"Not found: {m} {self.path}")
        repo_type = PLURAL_TO_TYPE[segs[0]]
        repo_id, action, rest = f"{segs[1]}/{segs[2]}", segs[3:4], segs[4:]
        repo = st._get_repo(repo_type, repo_id, auth if m in ("GET", "HEAD") else "write")
        if not action and m in ("GET", "HEAD"):
            return self._json(200, self._info(repo, "main"))
        action = action[0]
        if action == "revision" and m == "GET" and rest:
            return self._json(200, self._info(repo, "/".join(rest)))
        if action == "preupload" and m == "POST" and rest:
            return self._preupload(repo, "/".join(rest), json.loads(body or b"{}"))
        if action == "commit" and m == "POST" and rest:
            return self._commit(repo, "/".join(rest), body)
        if action == "tree" and m == "GET" and rest:
            return self._tree(repo, rest[0], "/".join(rest[1:]), query)
        if action == "refs" and m == "GET":
            return self._json(200, {
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                             for n, s in sorted(repo.branches.items())],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s}
                         for n, s in sorted(repo.tags.items())],
                "converts": [], "pullRequests": [],
            })
        if action == "commits" and m == "GET" and rest:
            return self._commits(repo, "/".join(rest))
        if action == "branch" and rest:
            return self._branch(repo, "/".join(rest), json.loads(body or b"{}"))
        if action == "tag" and rest:
            return self._tag(repo, "/".join(rest), json.loads(body or b"{}"))
        raise HubError(404, f"Not found: {m} {self.path}")

    # -- repos ---------------------------------------------------------------------------
    def _create_repo(self, payload: dict) -> None:
        st = self.state
        repo_type = payload.get("type") or "model"
        if repo_type not in TYPE_PREFIXES or not payload.get("name"):
            raise HubError(400, f"Invalid repo creation payload: {payload}")
        name, org = str(payload["name"]), payload.get("organization") or DEFAULT_USER
        if not re.fullmatch(r"[\w.\-]{1,96}", name) or not re.fullmatch(r"[\w.\-]{1,96}", org):
            raise HubError(400, f"Invalid repo name: {org}/{name}")
        repo_id = f"{org}/{name}"
        url = _repo_url(self.base, repo_type, repo_id)
        if (repo_type, repo_id) in st.repos:
            raise HubError(409, "You already created this model repo", url=url, name=repo_id)
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo = Repo(repo_type, repo_id, private, _now())
        init = st._new_commit(
            repo, None, {".gitattributes": Blob(GITATTRIBUTES, False)}, "initial commit", ""
        )
        repo.branches["main"] = init.sha
        st.repos[(repo_type, repo_id)] = repo
        self._json(200, {"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def _info(self, repo: Repo, revision: str) -> dict:
        commit = self.state._get_commit(repo, revision)
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sib: dict[str, Any] = {"rfilename": path, "size": blob.size, "blobId": blob.oid}
            if blob.lfs:
                sib["lfs"] = {"size": blob.size, "sha256": blob.sha256,
                              "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
            siblings.append(sib)
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": commit.sha, "lastModified": commit.date, "createdAt": repo.created_at,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0,
            "likes": 0, "tags": [], "siblings": siblings,
        }

    def _commits(self, repo: Repo, revision: str) -> None:
        commit: Commit | None = self.state._get_commit(repo, revision)
        out = []
        while commit is not None:
            out.append({"id": commit.sha, "title": commit.title, "message": commit.message,
                        "authors": [{"user": DEFAULT_USER}], "date": commit.date})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(200, out)

    def _branch(self, repo: Repo, branch: str, payload: dict) -> None:
        if self.command == "DELETE":
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise HubError(403, "Cannot delete the main branch")
            del repo.branches[branch]
            return self._json(200, {})
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        if branch.startswith("refs/") or not re.fullmatch(r"[\w.\-/]+", branch):
            raise HubError(400, f"Invalid branch name: {branch}")
        start = self.state._get_commit(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.sha
        self._json(200, {})

    def _tag(self, repo: Repo, name: str, payload: dict) -> None:
        if self.command == "DELETE":
            if repo.tags.pop(name, None) is None:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            return self._json(200, {})
        tag = payload.get("tag")
        commit = self.state._get_commit(repo, name)  # POST /tag/{revision} {"tag": ...}
        if not tag or not re.fullmatch(r"[\w.\-/]+", tag):
            raise HubError(400, f"Invalid tag name: {tag!r}")
        if tag in repo.tags or tag in repo.branches:
            raise HubError(409, f"Reference already exists: refs/tags/{tag}")
        repo.tags[tag] = commit.sha
        self._json(200, {})

    # -- uploads -------------------------------------------------------------------------
    def _preupload(self, repo: Repo, revision: str, payload: dict) -> None:
        commit = self.state._get_commit(repo, revision)
        files = []
        for f in payload.get("files", []):
            path, size = f["path"], int(f["size"])
            mode = self.state.mode_for(path, size)
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if mode == "lfs" else git_sha1(existing.data)
            files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.sha})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict) -> None:
        self.state._get_repo(repo_type, repo_id, auth="write")
        if payload.get("operation") != "upload":
            raise HubError(400, "This test Hub only supports LFS uploads")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            if oid in self.state.lfs_verified:
                objects.append({"oid": oid, "size": size})  # already there: no actions
                continue
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{self.base}/__lfs__/upload/{oid}"},
                "verify": {"href": f"{self.base}/__lfs__/verify/{oid}"},
            }})
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_transfer(self, what: str, oid: str, body: bytes) -> None:
        st = self.state
        if what == "upload" and self.command == "PUT":
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, f"LFS upload: sha256 of the body does not match oid {oid}")
            st.lfs_objects[oid] = body
            return self._send(200)
        if what == "verify" and self.command == "POST":
            payload = json.loads(body or b"{}")
            data = st.lfs_objects.get(oid)
            if data is None or payload.get("oid") != oid or int(payload.get("size", -1)) != len(data):
                raise HubError(404, f"LFS verify failed for {oid}", "EntryNotFound")
            st.lfs_verified.add(oid)
            return self._json(200, {})
        raise HubError(404, f"Not found: {self.command} {self.path}")

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        st = self.state
        if revision not in repo.branches:
            if repo.resolve(revision) is not None:
                raise HubError(400, f"Can only commit to a branch, not to {revision!r}")
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        parent = repo.commits[repo.branches[revision]]
        files = dict(parent.files)
        header: dict = {}
        log = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
                log.append((value["path"], "regular"))
            elif key == "lfsFile":
                oid = value["oid"]
                data = st.lfs_objects.get(oid)
                if data is None or oid not in st.lfs_verified:
                    raise HubError(400, f"LFS object {oid} of {value['path']} was not uploaded")
                if len(data) != int(value["size"]):
                    raise HubError(400, f"LFS object {oid}: size mismatch")
                files[value["path"]] = Blob(data, True)
                log.append((value["path"], "lfs"))
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}")
        if header.get("parentCommit") and header["parentCommit"] != parent.sha:
            raise HubError(412, "A commit has happened since the parent commit; retry.")
        commit = st._new_commit(
            repo, parent, files, header.get("summary", ""), header.get("description", "")
        )
        repo.branches[revision] = commit.sha
        st.uploads += [{"repo": repo.repo_id, "path": p, "mode": mode} for p, mode in log]
        url = _repo_url(self.base, repo.repo_type, repo.repo_id)
        self._json(200, {"commitOid": commit.sha, "commitUrl": f"{url}/commit/{commit.sha}",
                         "pullRequestUrl": None, "success": True})

    # -- downloads -----------------------------------------------------------------------
    def _tree(self, repo: Repo, revision: str, path: str, query: dict) -> None:
        commit = self.state._get_commit(repo, revision)
        recursive = str(query.get("recursive", "false")).lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        entries: dict[str, dict] = {}
        for fpath, blob in sorted(commit.files.items()):
            if not fpath.startswith(prefix):
                continue
            rel = fpath[len(prefix):].split("/")
            # Every folder on the way (recursive) or only the first level (not recursive).
            for depth in range(1, len(rel)):
                folder = prefix + "/".join(rel[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(folder, {
                        "type": "directory", "path": folder, "size": 0,
                        "oid": hashlib.sha1(f"{commit.sha}:{folder}".encode()).hexdigest(),
                    })
            if len(rel) == 1 or recursive:
                entry: dict[str, Any] = {"type": "file", "path": fpath, "size": blob.size,
                                         "oid": blob.oid}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": blob.size,
                                    "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
                entries[fpath] = entry
        self._json(200, list(entries.values()))

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, auth) -> None:
        st = self.state
        repo = st._get_repo(repo_type, repo_id, auth)
        commit = st._get_commit(repo, revision)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound",
                           **{"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{blob.oid}"',
                   "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
        data, status = blob.data, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match and self.command == "GET":
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else blob.size - 1
            data, status = blob.data[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{blob.size}"
        headers["Content-Length"] = str(len(data))
        self._send(status, data, headers, content_type="application/octet-stream")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: HubState
    url: str


class HubServer:
    """A loopback Hub on ``127.0.0.1`` and a free port; ``url`` is the value for ``HF_ENDPOINT``.

    The attributes of :class:`HubState` (``upload_mode``, ``lfs_threshold``, ``refuse``,
    ``requests``, ``auth_headers``, ``uploads``) and its helpers (``repo``, ``files``,
    ``delete_repo``, ``reset``) are reachable on this object directly.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = HubState()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.state = self.state
        self.host, self.port = self._httpd.server_address[:2]
        self.url = self._httpd.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                name="hub-test-server", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.state, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ("state", "host", "port", "url") and not name.startswith("_") and hasattr(
            self.__dict__.get("state"), name
        ):
            setattr(self.state, name, value)
        else:
            object.__setattr__(self, name, value)
