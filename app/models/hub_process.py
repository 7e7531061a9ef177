"""The app's side of app.models.hub_child: start it with the source's environment, send one
request, read its JSON events.

Why a child process: huggingface_hub reads HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE when it is
imported, and an exception from a progress callback does not stop Xet transfers. A child gets
its own environment, and terminating it stops the transfer for real.

Offline (HF_HUB_OFFLINE=1 or Settings → Offline), no child starts: nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from typing import Any

from app.models.cache import ModelStore
from app.models.sources import Source

log = logging.getLogger(__name__)


def request_source(source: Source, store: ModelStore) -> dict[str, Any]:
    return {
        "source": source.kind,
        "endpoint": source.endpoint,
        "token": source.token,
        "hf_cache": str(store.hf_cache),
        "modelscope_dir": str(store.modelscope),
    }


def _child_env(source: Source, store: ModelStore) -> dict[str, str]:
    env = dict(os.environ)
    # The token travels in the request, never through the environment, so a mirror cannot get it by accident.
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN"):
        env.pop(name, None)
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    env["HF_HUB_CACHE"] = str(store.hf_cache)
    if source.endpoint:
        env["HF_ENDPOINT"] = source.endpoint
    if source.kind == "mirror":
        # Xet transfers go to Hugging Face's own hosts even through a mirror: use plain HTTP instead.
        env["HF_HUB_DISABLE_XET"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn_child(source: Source, store: ModelStore, stderr: Any) -> subprocess.Popen:
    """The child for one request; refused (UserError) when offline: every Hub call passes here."""
    source.require_online()
    return subprocess.Popen(
        [sys.executable, "-m", "app.models.hub_child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=_child_env(source, store),
        # Its own session: Ctrl+C in the terminal reaches us, and we stop the child cleanly.
        start_new_session=True,
    )


def run_child(source: Source, store: ModelStore, request: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryFile() as stderr:
        proc = spawn_child(source, store, stderr)
        try:
            out, _ = proc.communicate(json.dumps(request) + "\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            return [{"event": "error", "kind": "offline", "detail": f"no answer in {timeout:.0f} s"}]
        finally:
            stop(proc)
        events = [e for e in map(parse_event, out.splitlines()) if e is not None]
        if not events:
            stderr.seek(0)
            log.warning("download helper failed: %s", stderr.read().decode(errors="replace")[-2000:])
        return events


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_event(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None
