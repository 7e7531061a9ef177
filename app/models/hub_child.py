"""The child process that talks to the Hub or ModelScope: `python -m app.models.hub_child`.

It reads one JSON request on stdin and writes JSON events on stdout:
{"event": "plan"|"start"|"progress"|"done"|"search"|"error", ...}. It exits when its stdin
closes, so it never outlives the app. app.models.hub_process starts it and reads the events.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.models.cache import MODEL_FILE_PATTERNS, ModelStore, partial_files, remove_partial_files, select_model_files
from app.models.hub_errors import classify


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
            request["repo"],
            revision=request["revision"],
            cache_dir=store.hf_cache,
            endpoint=request["endpoint"],
            token=token,
            allow_patterns=list(MODEL_FILE_PATTERNS),
            ignore_patterns=["*/*"],
            dry_run=True,
        )
    finally:
        # A dry run still records the revision's ref: do not leave an empty repo folder behind.
        if not existed and not (folder / "snapshots").exists():
            shutil.rmtree(folder, ignore_errors=True)
    by_name = {i.filename: i for i in infos}
    wanted = select_model_files(list(by_name))
    if "config.json" not in by_name:
        _explain_missing_config(request, token, events)
        return
    commit = infos[0].commit_hash
    config_info = by_name["config.json"]
    if config_info.is_cached:
        config = json.loads(Path(config_info.local_path).read_text(encoding="utf-8"))
    else:
        # Into a scratch folder: planning must not leave anything in the cache.
        with tempfile.TemporaryDirectory() as tmp:
            path = hf_hub_download(
                request["repo"],
                "config.json",
                revision=commit,
                endpoint=request["endpoint"],
                token=token,
                local_dir=tmp,
            )
            config = json.loads(Path(path).read_text(encoding="utf-8"))
    files = [{"name": n, "size": by_name[n].file_size or 0, "cached": by_name[n].is_cached} for n in wanted]
    events.emit("plan", commit=commit, files=files, config=config)


def _explain_missing_config(request: dict[str, Any], token: str | bool, events: _Events) -> None:
    """No config.json: a GGUF-only repo (llama.cpp's format) gets pointed to the model it was made from."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=request["endpoint"], token=token).model_info(
        request["repo"], revision=request["revision"], expand=["siblings", "cardData"]
    )
    names = [s.rfilename for s in info.siblings or []]
    if any(n.lower().endswith(".gguf") for n in names):
        base = (info.card_data or {}).get("base_model") if info.card_data else None
        events.emit("error", kind="gguf_only", detail="", base=base[0] if isinstance(base, list) else base)
        return
    events.emit("error", kind="file_not_found", detail="config.json")


def _hf_search(request: dict[str, Any], events: _Events) -> None:
    """Text-generation models matching a query, most downloaded first (the Hub's own search)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import get_session

    api = HfApi(endpoint=request["endpoint"], token=request["token"] or False)
    # list_models retries a refused connection for ~25 s; one quick probe answers "offline" at once.
    get_session().head(request["endpoint"] or constants.ENDPOINT, timeout=10)
    found = api.list_models(
        search=request["query"],
        pipeline_tag="text-generation",
        sort="downloads",
        limit=request["limit"],
        expand=["downloads", "likes", "lastModified", "gated", "pipeline_tag"],
    )
    models = [
        {
            "id": m.id,
            "downloads": m.downloads or 0,
            "likes": m.likes or 0,
            "last_modified": m.last_modified.isoformat() if m.last_modified else None,
            "gated": bool(m.gated),
        }
        for m in found
    ]
    events.emit("search", models=models)


def _hf_download(request: dict[str, Any], events: _Events) -> None:
    from huggingface_hub import snapshot_download

    store = ModelStore(Path(request["hf_cache"]), Path(request["modelscope_dir"]))
    files: dict[str, int] = request["files"]
    folder = store.hf_repo_folder(request["repo"])
    _watch_parent(events, folder, partial_files(folder))
    snapshot = _cached_snapshot(folder, request["revision"])
    events.emit("start", present=_present_bytes(snapshot, files) if snapshot else 0)
    path = snapshot_download(
        request["repo"],
        revision=request["revision"],
        cache_dir=store.hf_cache,
        endpoint=request["endpoint"],
        token=request["token"] or False,
        allow_patterns=list(files),
        tqdm_class=_bytes_bar_class(events),
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
    listing = {
        f["Path"]: int(f.get("Size") or 0)
        for f in api.get_model_files(request["repo"], revision=request["revision"], recursive=True)
    }
    wanted = select_model_files(list(listing))
    if "config.json" not in wanted:
        events.emit("error", kind="file_not_found", detail="config.json")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = model_file_download(
            request["repo"],
            "config.json",
            revision=request["revision"],
            local_dir=tmp,
            token=request["token"],
            endpoint=request["endpoint"],
        )
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
        model_id=request["repo"],
        revision=request["revision"],
        local_dir=str(target),
        allow_patterns=list(files),
        progress_callbacks=[Reporter],
        token=request["token"],
        endpoint=request["endpoint"],
    )
    events.emit("done", path=path)


OPERATIONS: dict[tuple[str, str], Callable[[dict[str, Any], _Events], None]] = {
    ("plan", "huggingface"): _hf_plan,
    ("plan", "mirror"): _hf_plan,
    ("plan", "modelscope"): _modelscope_plan,
    ("search", "huggingface"): _hf_search,
    ("search", "mirror"): _hf_search,
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
        kind, detail = classify(exc)
        logging.getLogger(__name__).warning("%s", detail, exc_info=kind == "unknown")
        events.emit("error", kind=kind, detail=detail)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
