"""A real HTTP server on loopback that speaks the Hugging Face Hub protocol, for the endpoints the
huggingface_hub client uses to inspect and download a model:

  GET  /api/models?search=&pipeline_tag=&sort=&limit=   the search list_models sends (id, downloads, likes, ...)
  GET  /api/models/{repo}[/revision/{rev}]        model info (sha, siblings with sizes, gated, cardData)
  GET  /api/models/{repo}/tree/{rev}[/{path}]     file tree with sizes, blob ids, LFS info
  POST /api/models/{repo}/paths-info/{rev}        the same for named paths
  HEAD /{repo}/resolve/{rev}/{path}               ETag, X-Repo-Commit, Content-Length (X-Linked-* for LFS)
  GET  /{repo}/resolve/{rev}/{path}               the bytes, with Range support

Errors carry the headers huggingface_hub classifies them by (utils/_http.py `hf_raise_for_status`):
X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound / GatedRepo, and X-Error-Message.
A gated repo answers 401 without a token and 403 with a token that was not granted access.

Faults for tests: drop the connection mid-file once, fail a file once with a status code, and
throttle the transfer so a download can be cancelled mid-file.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    # Tokens granted access to this gated repo.
    allowed_tokens: set[str] = field(default_factory=set)
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str = "text-generation"
    # The model card's metadata (base_model points a GGUF or quantized repo to its original).
    card_data: dict | None = None

    @property
    def commit(self) -> str:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha1(self.files[name]).digest())
        return digest.hexdigest()

    @classmethod
    def from_folder(cls, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None, **kwargs) -> HubRepo:
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return cls(repo_id, {**files, **(extra or {})}, **kwargs)


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(name: str) -> bool:
    return name.endswith(LFS_SUFFIXES)


class HubServer:
    """Start with `with HubServer([...]) as hub:`; `hub.url` is the endpoint (HF_ENDPOINT)."""

    def __init__(self, repos: list[HubRepo], valid_tokens: set[str] | None = None) -> None:
        self.repos = {r.repo_id: r for r in repos}
        # Tokens the server knows; any other token is answered "Invalid credentials".
        self.valid_tokens = set(valid_tokens or set()) | {t for r in repos for t in r.allowed_tokens}
        self.drop_once: dict[str, int] = {}  # file name -> byte offset where the connection is cut
        self.fail_once: dict[str, int] = {}  # file name -> HTTP status returned to its next GET
        self.throttle: float | None = None  # bytes per second of every file transfer
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.ranges: list[tuple[str, str]] = []  # (file name, Range header) of resumed transfers
        self.bytes_sent: dict[str, int] = {}
        self.active_transfers = 0  # file bodies being sent now; a client that went away ends its own
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._httpd.server_close()

    def record(self, method: str, path: str, auth: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, auth))

    def take_fault(self, table: dict[str, int], name: str) -> int | None:
        with self._lock:
            return table.pop(name, None)

    def count_sent(self, name: str, n: int) -> None:
        with self._lock:
            self.bytes_sent[name] = self.bytes_sent.get(name, 0) + n

    def count_transfer(self, delta: int) -> None:
        with self._lock:
            self.active_transfers += delta


_API = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree|paths-info)/(?P<rev>[^/]+)"
    r"(?:/(?P<path>.*))?)?$"
)
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        # ---- plumbing ----

        def _send(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
            headers = {"X-Error-Message": message, **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization")
            return auth.split(" ", 1)[1] if auth and auth.lower().startswith("bearer ") else None

        def _repo(self, repo_id: str) -> HubRepo | None:
            """The repo, or None after answering the error the Hub gives."""
            token = self._token()
            if token is not None and token not in hub.valid_tokens:
                self._error(401, None, "Invalid credentials in Authorization header")
                return None
            repo = hub.repos.get(repo_id)
            if repo is None:
                # The Hub answers 401 to anonymous users so private repos do not leak.
                self._error(404 if token else 401, "RepoNotFound", "Repository not found")
                return None
            return repo

        def _commit(self, repo: HubRepo, rev: str) -> str | None:
            rev = unquote(rev)
            if rev in ("main", repo.commit):
                return repo.commit
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None

        def _gate(self, repo: HubRepo) -> bool:
            if not repo.gated:
                return True
            token = self._token()
            if token is None:
                self._error(
                    401,
                    "GatedRepo",
                    f"Access to model {repo.repo_id} is restricted. You must have access "
                    "to it and be authenticated to access it. Please log in.",
                )
                return False
            if token not in repo.allowed_tokens:
                self._error(
                    403,
                    "GatedRepo",
                    f"Access to model {repo.repo_id} is restricted and you are not in "
                    f"the authorized list. Visit https://huggingface.co/{repo.repo_id} to ask for access.",
                )
                return False
            return True

        # ---- API ----

        def do_GET(self) -> None:
            self._dispatch()

        def do_HEAD(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            url = urlparse(self.path)
            hub.record(self.command, url.path, self.headers.get("Authorization"))
            if url.path == "/api/models" and self.command == "GET":
                return self._search(parse_qs(url.query))
            if m := _RESOLVE.match(url.path):
                return self._resolve(m["repo"], m["rev"], unquote(m["path"]))
            if m := _API.match(url.path):
                repo = self._repo(m["repo"])
                if repo is None:
                    return None
                commit = self._commit(repo, m["rev"] or "main")
                if commit is None:
                    return None
                query = parse_qs(url.query)
                if m["kind"] in (None, "revision") and self.command == "GET":
                    return self._info(repo, with_sizes="blobs" in query)
                if m["kind"] == "tree" and self.command == "GET":
                    prefix = unquote(m["path"] or "")
                    recursive = query.get("recursive", ["False"])[0].lower() == "true"
                    return self._json(self._entries(repo, prefix, recursive))
                if m["kind"] == "paths-info" and self.command == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    form = parse_qs(self.rfile.read(length).decode())
                    wanted = set(form.get("paths", []))
                    return self._json([e for e in self._entries(repo, "", True) if e["path"] in wanted])
            return self._error(404, None, "Not found")

        def _search(self, query: dict[str, list[str]]) -> None:
            """The Hub's model search: case-insensitive substring of the id, one pipeline tag, by downloads."""
            words = query.get("search", [""])[0].lower().split()
            tag = query.get("pipeline_tag", [None])[0]
            found = [
                r
                for r in hub.repos.values()
                if all(w in r.repo_id.lower() for w in words) and (tag is None or r.pipeline_tag == tag)
            ]
            if query.get("sort", [""])[0] == "downloads":
                found.sort(key=lambda r: -r.downloads)
            found = found[: int(query.get("limit", ["1000"])[0])]
            self._json(
                [
                    {
                        "_id": r.commit[:24],
                        "id": r.repo_id,
                        "modelId": r.repo_id,
                        "downloads": r.downloads,
                        "likes": r.likes,
                        "lastModified": "2025-01-01T00:00:00.000Z",
                        "gated": "manual" if r.gated else False,
                        "pipeline_tag": r.pipeline_tag,
                        "private": False,
                    }
                    for r in found
                ]
            )

        def _json(self, value: object) -> None:
            self._send(200, json.dumps(value).encode())

        def _info(self, repo: HubRepo, with_sizes: bool) -> None:
            siblings = [
                {"rfilename": name, **({"size": len(data)} if with_sizes else {})}
                for name, data in sorted(repo.files.items())
            ]
            self._json(
                {
                    "_id": repo.commit[:24],
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "sha": repo.commit,
                    "private": False,
                    "gated": "manual" if repo.gated else False,
                    "disabled": False,
                    "lastModified": "2025-01-01T00:00:00.000Z",
                    "tags": ["safetensors"],
                    "library_name": "transformers",
                    "siblings": siblings,
                    **({"cardData": repo.card_data} if repo.card_data else {}),
                }
            )

        def _entries(self, repo: HubRepo, prefix: str, recursive: bool) -> list[dict]:
            entries: list[dict] = []
            folders: set[str] = set()
            for name, data in sorted(repo.files.items()):
                if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                    continue
                rest = name[len(prefix.rstrip("/") + "/") :] if prefix else name
                if "/" in rest:
                    folder = (prefix.rstrip("/") + "/" if prefix else "") + rest.split("/", 1)[0]
                    if folder not in folders:
                        folders.add(folder)
                        entries.append(
                            {"type": "directory", "oid": _git_blob_id(folder.encode()), "size": 0, "path": folder}
                        )
                    if not recursive:
                        continue
                entry = {"type": "file", "oid": _git_blob_id(data), "size": len(data), "path": name}
                if _is_lfs(name):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            return entries

        # ---- files ----

        def _resolve(self, repo_id: str, rev: str, name: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            commit = self._commit(repo, rev)
            if commit is None or not self._gate(repo):
                return
            data = repo.files.get(name)
            if data is None:
                return self._error(404, "EntryNotFound", f'{name} does not exist on "{rev}"', {"X-Repo-Commit": commit})
            if _is_lfs(name):
                etag = hashlib.sha256(data).hexdigest()
                headers = {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
            else:
                etag = _git_blob_id(data)
                headers = {}
            headers |= {"ETag": f'"{etag}"', "X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
            if self.command == "HEAD":
                return self._send(200, data, headers, "application/octet-stream")
            status = hub.take_fault(hub.fail_once, name)
            if status is not None:
                return self._error(status, None, "Service temporarily unavailable")
            start = 0
            if m := re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
                hub.ranges.append((name, m[0]))
                start = int(m[1])
                end = int(m[2]) if m[2] else len(data) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                body = data[start : end + 1]
                status = 206
            else:
                body, status = data, 200
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            hub.count_transfer(+1)
            try:
                self._stream(name, body, hub.take_fault(hub.drop_once, name))
            finally:
                hub.count_transfer(-1)

        def _stream(self, name: str, body: bytes, drop_at: int | None) -> None:
            chunk = 16 * 1024
            sent = 0
            while sent < len(body):
                if drop_at is not None and sent >= drop_at:
                    # Cut the connection mid-body, as a flaky network or proxy does.
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                piece = body[sent : sent + (chunk if drop_at is None else min(chunk, drop_at - sent))]
                try:
                    self.wfile.write(piece)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(piece)
                hub.count_sent(name, len(piece))
                if hub.throttle:
                    time.sleep(len(piece) / hub.throttle)

    return Handler
