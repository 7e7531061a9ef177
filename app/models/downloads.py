"""Model downloads: each one in a child process, with progress events, cancel, retry and sources.

Why a child process: huggingface_hub reads HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE when it is
imported, and an exception from a progress callback does not stop Xet transfers. A child gets
its own environment, and terminating it stops the transfer for real; its partial files are then
removed here, so a cancelled or failed download leaves the cache as it was.

The child (`python -m app.models.downloads`) reads one JSON request on stdin and writes JSON
events on stdout: {"event": "plan"|"start"|"progress"|"done"|"error", ...}. It exits when its
stdin closes, so it never outlives the app.
"""

from __future__ import annotations

import collections
import errno
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import SettingsError, UserError
from app.hardware import Hardware
from app.i18n import translate
from app.models.cache import (
    MODEL_FILE_PATTERNS,
    ModelStore,
    is_weight_file,
    partial_files,
    remove_partial_files,
    select_model_files,
)
from app.models.catalog import CatalogEntry, find_entry
from app.models.fit import FitReport, ModelShape, check_fit, format_bytes
from app.settings import AppSettings, EngineSettings

log = logging.getLogger(__name__)

SOURCES = ("huggingface", "mirror", "modelscope")
HF_HOME_PAGE = "https://huggingface.co"
# Room left on the disk after a download: a completely full disk breaks everything else too.
DISK_MARGIN = 256 * 2**20
# Attempts of one download; files finished by an attempt are not fetched again by the next.
MAX_ATTEMPTS = 4
# Seconds before the next attempt: doubled each time (1, 2, 4).
FIRST_BACKOFF = 1.0
# Error kinds worth another attempt: the network or the server hiccupped.
RETRYABLE = frozenset({"connection_dropped", "server_error"})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---- sources and the token ----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a download comes from, and the token sent there (None: no token is sent)."""

    kind: str  # "huggingface", "mirror" or "modelscope"
    endpoint: str | None = None  # None: the library's default (HF_ENDPOINT, or the Hub itself)
    token: str | None = field(default=None, repr=False)

    @property
    def page_host(self) -> str:
        return "https://www.modelscope.cn/models" if self.kind == "modelscope" else HF_HOME_PAGE

    def describe(self) -> str:
        return self.endpoint or {"huggingface": "huggingface.co", "modelscope": "modelscope.cn"}.get(self.kind, "")


def source_from_settings(settings: AppSettings, token: str | None) -> Source:
    """The source the user chose. The Hugging Face token goes to a mirror only if they allowed it."""
    kind = settings.download_source
    if kind not in SOURCES:
        raise SettingsError("settings.bad_choice", name="download_source", value=kind, choices=", ".join(SOURCES))
    if kind == "mirror":
        endpoint = settings.mirror_endpoint.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", endpoint):
            raise UserError("models.bad_mirror", endpoint=endpoint)
        return Source("mirror", endpoint, token if settings.send_token_to_mirror else None)
    if kind == "modelscope":
        return Source("modelscope")
    # HF_ENDPOINT set in the environment is a mirror too (common in China): same rule for the token.
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    if endpoint and endpoint != HF_HOME_PAGE and not settings.send_token_to_mirror:
        token = None
    return Source("huggingface", endpoint, token)


class TokenStore:
    """The user's Hugging Face token in a file only they can read (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def save(self, token: str) -> None:
        token = token.strip()
        if not token or any(c.isspace() for c in token):
            raise UserError("models.bad_token_format")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token)
        os.chmod(tmp, 0o600)  # in case the file existed with wider permissions
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def token(self) -> str | None:
        """Ours, else the one the Hugging Face tools keep (HF_TOKEN or `hf auth login`)."""
        from huggingface_hub import get_token

        return self.load() or get_token()


# ---- planning: what will be downloaded, and does it fit on the disk ------------------------------


@dataclass(frozen=True)
class PlannedFile:
    name: str
    size: int
    cached: bool


@dataclass(frozen=True)
class DownloadPlan:
    """Exactly what a download will fetch, read from the source's file metadata beforehand."""

    repo_id: str
    revision: str
    source: Source
    store: ModelStore
    commit: str | None
    files: tuple[PlannedFile, ...]
    config: dict[str, Any]
    free_bytes: int

    @property
    def download_bytes(self) -> int:
        return sum(f.size for f in self.files if not f.cached)

    @property
    def cached_bytes(self) -> int:
        return sum(f.size for f in self.files if f.cached)

    @property
    def weight_bytes(self) -> int:
        return sum(f.size for f in self.files if is_weight_file(f.name))

    @property
    def disk_ok(self) -> bool:
        return not self.download_bytes or self.download_bytes + DISK_MARGIN <= self.free_bytes

    @property
    def needs_trust_remote_code(self) -> bool:
        return "auto_map" in self.config

    @property
    def folder(self) -> Path:
        """Where the files land: the Hugging Face cache's repo folder, or our ModelScope folder."""
        if self.source.kind == "modelscope":
            return self.store.modelscope_folder(self.repo_id)
        return self.store.hf_repo_folder(self.repo_id)

    @property
    def key(self) -> str:
        """Downloads into the same folder are one download, whichever source they come from."""
        return str(self.folder).lower()

    def require_disk(self) -> None:
        if not self.disk_ok:
            raise UserError("models.disk_full", need=format_bytes(self.download_bytes + DISK_MARGIN),
                            free=format_bytes(self.free_bytes), folder=str(self.store.root(self.source.kind)))


def check_repo_id(repo_id: str) -> str:
    repo_id = repo_id.strip()
    if not _REPO_ID.match(repo_id):
        raise UserError("models.bad_repo_id", repo=repo_id)
    return repo_id


def disk_free(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    for path in (folder, *folder.parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return 0


def plan_download(repo_id: str, revision: str | None, source: Source, store: ModelStore,
                  free_bytes: int | None = None, timeout: float = 120) -> DownloadPlan:
    """Ask the source which files vLLM needs, their sizes and what is cached; read config.json.
    `free_bytes` overrides the measured free disk space (for previews of another disk, and tests)."""
    repo_id = check_repo_id(repo_id)
    revision = (revision or "").strip() or ("master" if source.kind == "modelscope" else "main")
    request = {"op": "plan", "repo": repo_id, "revision": revision, **_request_source(source, store)}
    events = _run_child(source, store, request, timeout)
    last = events[-1] if events else {"event": "error", "kind": "crashed", "detail": ""}
    if last["event"] != "plan":
        raise error_for(last, repo_id, revision, source)
    return DownloadPlan(
        repo_id=repo_id,
        revision=revision,
        source=source,
        store=store,
        commit=last.get("commit"),
        files=tuple(PlannedFile(f["name"], int(f["size"]), bool(f["cached"])) for f in last["files"]),
        config=last.get("config") or {},
        free_bytes=disk_free(store.root(source.kind)) if free_bytes is None else free_bytes,
    )


def check_plan_fit(plan: DownloadPlan, hardware: Hardware, engine: EngineSettings,
                   catalog: list[CatalogEntry]) -> FitReport:
    """Will the planned model fit this machine; suggests the catalog's quantized variant when not."""
    entry = find_entry(catalog, plan.repo_id)
    smaller = find_entry(catalog, entry.quantized) if entry and entry.quantized else None
    return check_fit(ModelShape.from_config(plan.config), plan.weight_bytes, hardware, engine,
                     quantized_alternative=smaller.repo_for(plan.source.kind) if smaller else None)


def plan_lines(plan: DownloadPlan, lang: str) -> list[str]:
    """What the plan means for the user, as Markdown sentences."""
    lines = [translate("models.plan_title", lang, repo=plan.repo_id, revision=plan.revision,
                       source=plan.source.describe())]
    if plan.download_bytes:
        lines.append(translate("models.plan_sizes", lang, download=format_bytes(plan.download_bytes),
                               files=sum(not f.cached for f in plan.files), cached=format_bytes(plan.cached_bytes),
                               free=format_bytes(plan.free_bytes)))
    else:
        lines.append(translate("models.plan_nothing", lang, cached=format_bytes(plan.cached_bytes)))
    if plan.needs_trust_remote_code:
        lines.append(translate("models.plan_remote_code", lang))
    return lines


# ---- running downloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadProgress:
    """One moment of a download, for progress bars."""

    repo_id: str
    status: str  # downloading, retrying, done, failed, cancelled
    done_bytes: int
    total_bytes: int
    speed: float  # bytes per second, over the last few seconds
    eta: float | None  # seconds left
    attempt: int
    path: Path | None = None  # the local folder, once done
    error: UserError | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else (1.0 if self.finished else 0.0)


def progress_line(progress: DownloadProgress, lang: str) -> str:
    """One download's state as a Markdown sentence."""
    if progress.status == "done":
        return translate("models.progress_done", lang, repo=progress.repo_id, total=format_bytes(progress.total_bytes))
    if progress.status == "cancelled":
        return translate("models.progress_cancelled", lang, repo=progress.repo_id)
    if progress.status == "failed":
        error = progress.error.message(lang) if progress.error else ""
        return translate("models.progress_failed", lang, repo=progress.repo_id, error=error)
    status = translate("models.status_retrying" if progress.status == "retrying" else "models.status_downloading",
                       lang, attempt=progress.attempt)
    eta = format_eta(progress.eta) if progress.eta is not None else translate("models.eta_unknown", lang)
    return translate("models.progress_line", lang, repo=progress.repo_id, status=status,
                     percent=f"{progress.fraction * 100:.1f}", done=format_bytes(progress.done_bytes),
                     total=format_bytes(progress.total_bytes), speed=format_bytes(progress.speed), eta=eta)


def format_eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Download:
    """One model being downloaded by a child process, with automatic retries."""

    def __init__(self, plan: DownloadPlan, max_attempts: int = MAX_ATTEMPTS, backoff: float = FIRST_BACKOFF) -> None:
        self.plan = plan
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        # Set when the worker is completely done (cleanup included). An Event, not Thread.join():
        # a join interrupted by Ctrl+C can return early afterwards while the thread still runs.
        self._finished = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._status = "downloading"
        self._done = 0
        self._attempt = 0
        self._path: Path | None = None
        self._error: UserError | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._thread = threading.Thread(target=self._run, name=f"download {plan.repo_id}", daemon=True)

    def start(self) -> Download:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return not self._finished.is_set()

    def progress(self) -> DownloadProgress:
        with self._lock:
            speed = _speed(self._samples)
            total = self.plan.download_bytes
            left = max(total - self._done, 0)
            return DownloadProgress(
                repo_id=self.plan.repo_id, status=self._status, done_bytes=self._done, total_bytes=total,
                speed=speed, eta=left / speed if speed > 0 else None, attempt=self._attempt,
                path=self._path, error=self._error,
            )

    def wait(self, timeout: float | None = None) -> DownloadProgress:
        self._finished.wait(timeout)
        return self.progress()

    def cancel(self, wait: bool = True) -> DownloadProgress:
        """Stop the transfer now; its partial files are removed before this returns (with `wait`)."""
        self._cancelled.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        return self.wait() if wait else self.progress()

    # -- the worker thread --

    def _run(self) -> None:
        try:
            self._attempts()
        finally:
            self._finished.set()

    def _attempts(self) -> None:
        for attempt in range(1, self.max_attempts + 1):
            self._set(status="downloading", attempt=attempt)
            before = partial_files(self.plan.folder)
            outcome = self._attempt_once()
            if outcome["event"] == "done":
                self._set(status="done", path=Path(outcome["path"]), done=self.plan.download_bytes)
                return
            # Leave the cache as it was: a killed child cannot clean up after itself.
            remove_partial_files(partial_files(self.plan.folder) - before)
            if self._cancelled.is_set():
                self._set(status="cancelled")
                return
            kind = outcome.get("kind", "crashed")
            log.warning("download of %s, attempt %d: %s %s", self.plan.repo_id, attempt, kind,
                        outcome.get("detail", ""))
            if kind in RETRYABLE and attempt < self.max_attempts:
                self._set(status="retrying")
                if self._cancelled.wait(self.backoff * 2 ** (attempt - 1)):
                    self._set(status="cancelled")
                    return
                continue
            self._set(status="failed", error=error_for(outcome, self.plan.repo_id, self.plan.revision,
                                                       self.plan.source))
            return

    def _attempt_once(self) -> dict[str, Any]:
        plan = self.plan
        request = {
            "op": "download", "repo": plan.repo_id, "revision": plan.revision,
            "files": {f.name: f.size for f in plan.files}, **_request_source(plan.source, plan.store),
        }
        with tempfile.TemporaryFile() as stderr:
            proc = _spawn_child(plan.source, plan.store, stderr)
            with self._lock:
                self._proc = proc
            if self._cancelled.is_set():
                proc.terminate()
            outcome: dict[str, Any] = {"event": "error", "kind": "crashed", "detail": ""}
            already = 0
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                for line in proc.stdout:
                    event = _parse_event(line)
                    if event is None:
                        continue
                    if event["event"] == "start":
                        # Files finished by an earlier attempt or an earlier download count as done.
                        already = max(0, int(event["present"]) - plan.cached_bytes)
                        self._set(done=already)
                    elif event["event"] == "progress":
                        self._set(done=already + int(event["done"]))
                    elif event["event"] in ("done", "error"):
                        outcome = event
            except (BrokenPipeError, OSError) as exc:
                outcome = {"event": "error", "kind": "crashed", "detail": str(exc)}
            finally:
                proc.stdin.close()
                _stop(proc)
                with self._lock:
                    self._proc = None
            if outcome.get("kind") == "crashed":
                stderr.seek(0)
                outcome["detail"] = stderr.read().decode(errors="replace")[-2000:]
            return outcome

    def _set(self, **values: Any) -> None:
        with self._lock:
            if "done" in values:
                self._done = values["done"]
                now = time.monotonic()
                self._samples.append((now, self._done))
                while len(self._samples) > 2 and now - self._samples[0][0] > 5:
                    self._samples.popleft()
            if "status" in values:
                self._status = values["status"]
                if values["status"] == "retrying":
                    self._samples.clear()
            if "attempt" in values:
                self._attempt = values["attempt"]
            if "path" in values:
                self._path = values["path"]
            if "error" in values:
                self._error = values["error"]


class Downloads:
    """The downloads of this app: several at once, and the same model asked twice is one download."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._downloads: dict[str, Download] = {}

    def start(self, plan: DownloadPlan, **options: Any) -> Download:
        plan.require_disk()
        if plan.source.kind == "modelscope" and importlib.util.find_spec("modelscope") is None:
            raise UserError("models.modelscope_missing")
        with self._lock:
            current = self._downloads.get(plan.key)
            if current is not None and current.running:
                if current.plan.revision != plan.revision:
                    raise UserError("models.busy_other_revision", repo=plan.repo_id, revision=current.plan.revision)
                return current
            download = Download(plan, **options)
            self._downloads[plan.key] = download
        return download.start()

    def all(self) -> list[Download]:
        with self._lock:
            return list(self._downloads.values())

    def find(self, repo_id: str) -> Download | None:
        """The newest download of this repo (from any source)."""
        matches = [d for d in self.all() if d.plan.repo_id.lower() == repo_id.strip().lower()]
        return matches[-1] if matches else None

    def busy_folders(self) -> set[Path]:
        """Folders that running downloads write into (their partial files are not orphans)."""
        return {d.plan.folder for d in self.all() if d.running}

    def cancel_all(self) -> None:
        for download in self.all():
            if download.running:
                download.cancel()


# ---- errors -------------------------------------------------------------------------------------


def error_for(event: dict[str, Any], repo_id: str, revision: str, source: Source) -> UserError:
    """One clear sentence for a failure the child reported."""
    kind = event.get("kind", "crashed")
    params = dict(repo=repo_id, revision=revision, source=source.describe(),
                  url=f"{source.page_host}/{repo_id}", detail=str(event.get("detail", ""))[:300])
    if kind == "gated":
        return UserError("models.err_gated_no_access" if source.token else "models.err_gated", **params)
    if kind == "repo_not_found" and not source.token and source.kind != "modelscope":
        # The Hub answers "not found" for private repos to anonymous users.
        return UserError("models.err_repo_not_found_anonymous", **params)
    known = {"repo_not_found", "revision_not_found", "file_not_found", "bad_token", "offline", "disk_full",
             "connection_dropped", "server_error", "modelscope_missing"}
    return UserError(f"models.err_{kind}" if kind in known else "models.err_unknown", **params)


# ---- the child process ------------------------------------------------------------------------


def _request_source(source: Source, store: ModelStore) -> dict[str, Any]:
    return {"source": source.kind, "endpoint": source.endpoint, "token": source.token,
            "hf_cache": str(store.hf_cache), "modelscope_dir": str(store.modelscope)}


def _child_env(source: Source, store: ModelStore) -> dict[str, str]:
    env = dict(os.environ)
    # The token travels in the request, never through the environment, so a mirror cannot get it by accident.
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN"):
        env.pop(name, None)
    # A download is an explicit request to go online, even when the app loads models offline.
    env["HF_HUB_OFFLINE"] = "0"
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    env["HF_HUB_CACHE"] = str(store.hf_cache)
    if source.endpoint:
        env["HF_ENDPOINT"] = source.endpoint
    if source.kind == "mirror":
        # Xet transfers go to Hugging Face's own hosts even through a mirror: use plain HTTP instead.
        env["HF_HUB_DISABLE_XET"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _spawn_child(source: Source, store: ModelStore, stderr: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app.models.downloads"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
        env=_child_env(source, store),
        # Its own session: Ctrl+C in the terminal reaches us, and we stop the child cleanly.
        start_new_session=True,
    )


def _run_child(source: Source, store: ModelStore, request: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryFile() as stderr:
        proc = _spawn_child(source, store, stderr)
        try:
            out, _ = proc.communicate(json.dumps(request) + "\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            return [{"event": "error", "kind": "offline", "detail": f"no answer in {timeout:.0f} s"}]
        finally:
            _stop(proc)
        events = [e for e in map(_parse_event, out.splitlines()) if e is not None]
        if not events:
            stderr.seek(0)
            log.warning("download helper failed: %s", stderr.read().decode(errors="replace")[-2000:])
        return events


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _parse_event(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _speed(samples: collections.deque[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return 0.0
    (t0, d0), (t1, d1) = samples[0], samples[-1]
    return max(d1 - d0, 0) / (t1 - t0) if t1 > t0 else 0.0


class _Events:
    """The child's side of the protocol: JSON lines on the real stdout, progress at most 5 times a second."""

    def __init__(self) -> None:
        # Libraries print to stdout now and then; keep our channel clean by moving them to stderr.
        self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        self._lock = threading.Lock()
        self._done = 0
        self._last = 0.0

    def emit(self, event: str, **fields: Any) -> None:
        with self._lock:
            self._out.write(json.dumps({"event": event, **fields}) + "\n")
            self._out.flush()

    def add(self, n: int) -> None:
        with self._lock:
            self._done += n
            now = time.monotonic()
            if now - self._last < 0.2:
                return
            self._last = now
            done = self._done
        self.emit("progress", done=done)


def _bytes_bar_class(events: _Events) -> type:
    """A tqdm class for snapshot_download that shows nothing and reports bytes written to disk."""
    from tqdm.auto import tqdm

    class BytesReporter(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            # The "Reconstructing" bar counts bytes written (Xet and plain HTTP); others count files or packets.
            self._counts = str(kwargs.get("desc", "")).startswith("Reconstructing")
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self.n += n or 0
            if self._counts and n:
                events.add(int(n))
            return None

    return BytesReporter


def _classify(exc: BaseException) -> tuple[str, str]:
    """(kind, detail) of an exception from huggingface_hub or ModelScope, looking through its causes."""
    import httpx2
    from huggingface_hub import errors

    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    order: list[tuple[type | tuple[type, ...], str]] = [
        (errors.GatedRepoError, "gated"),
        (errors.RevisionNotFoundError, "revision_not_found"),
        (errors.RepositoryNotFoundError, "repo_not_found"),
        (errors.RemoteEntryNotFoundError, "file_not_found"),
        (errors.OfflineModeIsEnabled, "offline"),
        ((httpx2.ConnectError, httpx2.ConnectTimeout), "offline"),
        ((httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.TimeoutException), "connection_dropped"),
    ]
    for cls, kind in order:
        if any(isinstance(e, cls) for e in chain):
            return kind, detail
    for e in chain:
        if isinstance(e, errors.HfHubHTTPError) and e.response is not None:
            status = e.response.status_code
            if status == 401:
                return "bad_token", detail
            if status in (403,) and "gated" in str(e).lower():
                return "gated", detail
            if status >= 500 or status in (408, 429):
                return "server_error", detail
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return "disk_full", detail
        if isinstance(e, OSError) and "Consistency check failed" in str(e):
            return "connection_dropped", detail
        if type(e).__name__ in ("NotExistError", "FileNotFoundError") and "modelscope" in type(e).__module__:
            return "repo_not_found", detail
        if type(e).__name__ in ("ConnectionError", "ChunkedEncodingError", "ReadTimeout"):
            return "connection_dropped", detail
    if any(isinstance(e, (errors.LocalEntryNotFoundError, errors.DryRunError)) for e in chain):
        return "offline", detail
    return "unknown", detail


def _watch_parent(events: _Events, folder: Path, before: set[Path]) -> None:
    """Exit (and clean up) when the app that started us is gone: our stdin then reaches its end."""

    def watch() -> None:
        sys.stdin.read()
        remove_partial_files(partial_files(folder) - before)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _present_bytes(folder: Path, files: dict[str, int]) -> int:
    return sum(size for name, size in files.items() if (folder / name).is_file())


def _hf_plan(request: dict[str, Any], events: _Events) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    store = ModelStore(Path(request["hf_cache"]), Path(request["modelscope_dir"]))
    folder = store.hf_repo_folder(request["repo"])
    existed = folder.exists()
    token = request["token"] or False
    try:
        infos = snapshot_download(
            request["repo"], revision=request["revision"], cache_dir=store.hf_cache, endpoint=request["endpoint"],
            token=token, allow_patterns=list(MODEL_FILE_PATTERNS), ignore_patterns=["*/*"], dry_run=True,
        )
    finally:
        # A dry run still records the revision's ref: do not leave an empty repo folder behind.
        if not existed and not (folder / "snapshots").exists():
            shutil.rmtree(folder, ignore_errors=True)
    by_name = {i.filename: i for i in infos}
    wanted = select_model_files(list(by_name))
    if "config.json" not in by_name:
        events.emit("error", kind="file_not_found", detail="config.json")
        return
    commit = infos[0].commit_hash
    config_info = by_name["config.json"]
    if config_info.is_cached:
        config = json.loads(Path(config_info.local_path).read_text(encoding="utf-8"))
    else:
        # Into a scratch folder: planning must not leave anything in the cache.
        with tempfile.TemporaryDirectory() as tmp:
            path = hf_hub_download(request["repo"], "config.json", revision=commit, endpoint=request["endpoint"],
                                   token=token, local_dir=tmp)
            config = json.loads(Path(path).read_text(encoding="utf-8"))
    files = [{"name": n, "size": by_name[n].file_size or 0, "cached": by_name[n].is_cached} for n in wanted]
    events.emit("plan", commit=commit, files=files, config=config)


def _hf_download(request: dict[str, Any], events: _Events) -> None:
    from huggingface_hub import snapshot_download

    store = ModelStore(Path(request["hf_cache"]), Path(request["modelscope_dir"]))
    files: dict[str, int] = request["files"]
    folder = store.hf_repo_folder(request["repo"])
    _watch_parent(events, folder, partial_files(folder))
    snapshot = _cached_snapshot(folder, request["revision"])
    events.emit("start", present=_present_bytes(snapshot, files) if snapshot else 0)
    path = snapshot_download(
        request["repo"], revision=request["revision"], cache_dir=store.hf_cache, endpoint=request["endpoint"],
        token=request["token"] or False, allow_patterns=list(files), tqdm_class=_bytes_bar_class(events),
        max_workers=4,
    )
    events.emit("done", path=path)


def _cached_snapshot(folder: Path, revision: str) -> Path | None:
    ref = folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _modelscope_plan(request: dict[str, Any], events: _Events) -> None:
    from modelscope.hub.api import HubApi
    from modelscope.hub.file_download import model_file_download

    target = Path(request["modelscope_dir"]) / request["repo"]
    api = HubApi(endpoint=request["endpoint"], token=request["token"])
    listing = {f["Path"]: int(f.get("Size") or 0)
               for f in api.get_model_files(request["repo"], revision=request["revision"], recursive=True)}
    wanted = select_model_files(list(listing))
    if "config.json" not in wanted:
        events.emit("error", kind="file_not_found", detail="config.json")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = model_file_download(request["repo"], "config.json", revision=request["revision"], local_dir=tmp,
                                   token=request["token"], endpoint=request["endpoint"])
        config = json.loads(Path(path).read_text(encoding="utf-8"))

    def cached(name: str) -> bool:
        return (target / name).is_file() and (target / name).stat().st_size == listing[name]

    files = [{"name": n, "size": listing[n], "cached": cached(n)} for n in wanted]
    events.emit("plan", commit=None, files=files, config=config)


def _modelscope_download(request: dict[str, Any], events: _Events) -> None:
    from modelscope import snapshot_download
    from modelscope.hub.callback import ProgressCallback

    files: dict[str, int] = request["files"]
    target = Path(request["modelscope_dir"]) / request["repo"]
    _watch_parent(events, target, partial_files(target))
    events.emit("start", present=_present_bytes(target, files))

    class Reporter(ProgressCallback):
        def update(self, size: int) -> None:
            events.add(size)

    path = snapshot_download(
        model_id=request["repo"], revision=request["revision"], local_dir=str(target), allow_patterns=list(files),
        progress_callbacks=[Reporter], token=request["token"], endpoint=request["endpoint"],
    )
    events.emit("done", path=path)


OPERATIONS: dict[tuple[str, str], Callable[[dict[str, Any], _Events], None]] = {
    ("plan", "huggingface"): _hf_plan,
    ("plan", "mirror"): _hf_plan,
    ("plan", "modelscope"): _modelscope_plan,
    ("download", "huggingface"): _hf_download,
    ("download", "mirror"): _hf_download,
    ("download", "modelscope"): _modelscope_download,
}


def _child_main() -> int:
    events = _Events()
    request = json.loads(sys.stdin.readline())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if request["source"] == "modelscope" and importlib.util.find_spec("modelscope") is None:
        events.emit("error", kind="modelscope_missing", detail="")
        return 1
    try:
        OPERATIONS[(request["op"], request["source"])](request, events)
    except Exception as exc:  # every failure becomes one event the app explains
        kind, detail = _classify(exc)
        logging.getLogger(__name__).warning("%s", detail, exc_info=kind == "unknown")
        events.emit("error", kind=kind, detail=detail)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
