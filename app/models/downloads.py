"""Model downloads: each one in a child process, with progress events, cancel and retry.

Why a child process: huggingface_hub reads HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE when it is
imported, and an exception from a progress callback does not stop Xet transfers. A child gets
its own environment, and terminating it stops the transfer for real; its partial files are then
removed here, so a cancelled or failed download leaves the cache as it was.

The child is app.models.hub_child; sources and the token are in app.models.sources, and
the sentences that explain failures in app.models.hub_errors.
"""

from __future__ import annotations

import collections
import enum
import importlib.util
import json
import logging
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import UserError
from app.i18n import translate
from app.models.cache import partial_files, remove_partial_files
from app.models.fit import format_bytes
from app.models.hub_errors import error_for
from app.models.hub_process import parse_event, request_source, spawn_child, stop
from app.models.plans import DownloadPlan

log = logging.getLogger(__name__)

# Attempts of one download; files finished by an attempt are not fetched again by the next.
MAX_ATTEMPTS = 4
# Seconds before the next attempt: doubled each time (1, 2, 4).
FIRST_BACKOFF = 1.0
# Error kinds worth another attempt: the network or the server hiccupped.
RETRYABLE = frozenset({"connection_dropped", "server_error"})


# ---- running downloads ---------------------------------------------------------------------------


class DownloadState(enum.StrEnum):
    DOWNLOADING = "downloading"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({DownloadState.DONE, DownloadState.FAILED, DownloadState.CANCELLED})


@dataclass(frozen=True)
class DownloadProgress:
    """One moment of a download, for progress bars."""

    repo_id: str
    status: DownloadState
    done_bytes: int
    total_bytes: int
    speed: float  # bytes per second, over the last few seconds
    eta: float | None  # seconds left
    attempt: int
    path: Path | None = None  # the local folder, once done
    error: UserError | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else (1.0 if self.finished else 0.0)


def progress_line(progress: DownloadProgress, lang: str) -> str:
    """One download's state as a Markdown sentence."""
    if progress.status == DownloadState.DONE:
        return translate("models.progress_done", lang, repo=progress.repo_id, total=format_bytes(progress.total_bytes))
    if progress.status == DownloadState.CANCELLED:
        return translate("models.progress_cancelled", lang, repo=progress.repo_id)
    if progress.status == DownloadState.FAILED:
        error = progress.error.message(lang) if progress.error else ""
        return translate("models.progress_failed", lang, repo=progress.repo_id, error=error)
    status = translate(
        "models.status_retrying" if progress.status == DownloadState.RETRYING else "models.status_downloading",
        lang,
        attempt=progress.attempt,
    )
    eta = format_eta(progress.eta) if progress.eta is not None else translate("models.eta_unknown", lang)
    return translate(
        "models.progress_line",
        lang,
        repo=progress.repo_id,
        status=status,
        percent=f"{progress.fraction * 100:.1f}",
        done=format_bytes(progress.done_bytes),
        total=format_bytes(progress.total_bytes),
        speed=format_bytes(progress.speed),
        eta=eta,
    )


def format_eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Download:
    """One model being downloaded by a child process, with automatic retries."""

    def __init__(
        self,
        plan: DownloadPlan,
        max_attempts: int = MAX_ATTEMPTS,
        backoff: float = FIRST_BACKOFF,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        # Called in the worker thread once the download has ended (done, failed or cancelled).
        self._on_finish = on_finish
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        # Set when the worker is completely done (cleanup included). An Event, not Thread.join():
        # a join interrupted by Ctrl+C can return early afterwards while the thread still runs.
        self._finished = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._status = DownloadState.DOWNLOADING
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
                repo_id=self.plan.repo_id,
                status=self._status,
                done_bytes=self._done,
                total_bytes=total,
                speed=speed,
                eta=left / speed if speed > 0 else None,
                attempt=self._attempt,
                path=self._path,
                error=self._error,
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
        except UserError as exc:  # gone offline since it started: the next attempt is refused
            self._set(status="failed", error=exc)
        finally:
            self._finished.set()
            if self._on_finish is not None:
                self._on_finish()

    def _attempts(self) -> None:
        for attempt in range(1, self.max_attempts + 1):
            self._set(status=DownloadState.DOWNLOADING, attempt=attempt)
            before = partial_files(self.plan.folder)
            outcome = self._attempt_once()
            if outcome["event"] == "done":
                self._set(status=DownloadState.DONE, path=Path(outcome["path"]), done=self.plan.download_bytes)
                return
            # Leave the cache as it was: a killed child cannot clean up after itself.
            remove_partial_files(partial_files(self.plan.folder) - before)
            if self._cancelled.is_set():
                self._set(status=DownloadState.CANCELLED)
                return
            kind = outcome.get("kind", "crashed")
            log.warning(
                "download of %s, attempt %d: %s %s", self.plan.repo_id, attempt, kind, outcome.get("detail", "")
            )
            if kind in RETRYABLE and attempt < self.max_attempts:
                self._set(status=DownloadState.RETRYING)
                if self._cancelled.wait(self.backoff * 2 ** (attempt - 1)):
                    self._set(status=DownloadState.CANCELLED)
                    return
                continue
            error = error_for(outcome, self.plan.repo_id, self.plan.revision, self.plan.source)
            self._set(status=DownloadState.FAILED, error=error)
            return

    def _attempt_once(self) -> dict[str, Any]:
        plan = self.plan
        request = {
            "op": "download",
            "repo": plan.repo_id,
            "revision": plan.revision,
            "files": {f.name: f.size for f in plan.files},
            **request_source(plan.source, plan.store),
        }
        with tempfile.TemporaryFile() as stderr:
            proc = spawn_child(plan.source, plan.store, stderr)
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
                    event = parse_event(line)
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
                stop(proc)
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
                if values["status"] == DownloadState.RETRYING:
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
        self._ended = 0

    def start(self, plan: DownloadPlan, **options: Any) -> Download:
        plan.source.require_online()
        plan.require_disk()
        if plan.source.kind == "modelscope" and importlib.util.find_spec("modelscope") is None:
            raise UserError("models.modelscope_missing")
        with self._lock:
            current = self._downloads.get(plan.key)
            if current is not None and current.running:
                if current.plan.revision != plan.revision:
                    raise UserError("models.busy_other_revision", repo=plan.repo_id, revision=current.plan.revision)
                return current
            download = Download(plan, on_finish=self._count_ended, **options)
            self._downloads[plan.key] = download
        return download.start()

    @property
    def ended(self) -> int:
        """How many downloads have ended so far: when it changes, the models on this computer
        (and the partial files) may have changed."""
        with self._lock:
            return self._ended

    def _count_ended(self) -> None:
        with self._lock:
            self._ended += 1

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


def _speed(samples: collections.deque[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return 0.0
    (t0, d0), (t1, d1) = samples[0], samples[-1]
    return max(d1 - d0, 0) / (t1 - t0) if t1 > t0 else 0.0
