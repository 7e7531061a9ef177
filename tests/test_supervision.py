"""The engine under stress, on an app of its own (not the shared engine): a model switch while
8 clients stream, and the EngineCore killed mid-stream (the app notices, says so, and comes back
with the same model; a second death soon after is not retried)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app.config.settings import SamplingSettings
from app.engine import Engine, EngineState
from tests.conftest import tiny_engine_settings, vllm_processes, wait_until

pytestmark = pytest.mark.engine
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


@pytest.fixture(scope="module")
def own(engine_loop: Any, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(app, server) with an engine of their own over the tiny model."""
    from app.application import App
    from app.config.settings import AppPaths, AppSettings
    from app.server import build_http_app
    from tests.conftest import RunningServer

    home = tmp_path_factory.mktemp("supervised")
    app = App.build(AppSettings(), AppPaths(home / "c", home / "d", home / "k", home / "l"), engine=Engine())
    engine_loop.run(app.load_model(str(tiny_model), tiny_engine_settings()))
    server = RunningServer(engine_loop, build_http_app(app, unload_on_exit=True))
    yield app, server
    server.stop()


def stream_reply(url: str, model: str, max_tokens: int = 200) -> tuple[int, str]:
    """(status, everything the server sent) for one streamed chat; bounded by its timeout."""
    body = {"model": model, "messages": HELLO, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as reply:
        return reply.status_code, "".join(reply.iter_text())


def test_a_switch_under_load_finishes_or_refuses_every_request(own: Any, engine_loop: Any, tiny_model: Path) -> None:
    app, server = own
    model = app.engine.model_name
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        first = [pool.submit(stream_reply, server.url, model, 400) for _ in range(4)]
        # All four are in the engine before the switch starts.
        assert wait_until(lambda: app.engine.num_unfinished_requests() == 4, 10)
        switching = pool.submit(engine_loop.run, app.load_model(str(tiny_model), tiny_engine_settings()))
        assert wait_until(lambda: app.engine.status.state == EngineState.LOADING, 10)
        during = [pool.submit(stream_reply, server.url, model) for _ in range(4)]
        results = [f.result(timeout=120) for f in first + during]
        switching.result(timeout=180)
    for status, text in results:
        if status == 200:
            assert text.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in text
        else:
            assert status == 503 and "still loading" in json.loads(text)["error"]["message"]
    assert [s for s, _ in results[:4]] == [200] * 4, "requests running before the switch finish on the old model"
    assert app.engine.status.state == EngineState.READY and app.engine.num_unfinished_requests() == 0


def engine_core(app: Any) -> psutil.Process:
    return next(p for p in vllm_processes() if p.pid in app.engine.child_pids() and "EngineCore" in p.name())


def test_a_killed_engine_is_noticed_and_restarted_once(own: Any) -> None:
    app, server = own
    model = app.engine.model_name
    # A chat in the page streams a long reply beside an API client.
    app.update_settings(sampling=SamplingSettings(max_tokens=480, ignore_eos=True))
    page = Client(server.url, verbose=False)
    chatting = page.submit("Write a long story about the sea.", "", api_name="/send")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(stream_reply, server.url, model, 480)
        assert wait_until(lambda: app.engine.num_unfinished_requests() == 2 and len(chatting.outputs()) >= 3, 20)
        killed_at = time.monotonic()
        os.kill(engine_core(app).pid, signal.SIGKILL)
        status, text = streaming.result(timeout=60)
    # The stream ends (no hang), with the error as its last event.
    assert status == 200 and '"error"' in text

    def health() -> dict:
        return httpx.get(f"{server.url}/healthz").json()

    assert wait_until(lambda: health()["state"] != "ready", 5), (health(), time.monotonic() - killed_at)
    noticed = time.monotonic() - killed_at
    assert noticed < 5
    # The chat says so in a sentence and keeps its partial reply, saved.
    with pytest.raises(AppError, match="engine"):
        chatting.result(timeout=60)
    saved = page.predict(api_name="/history")["messages"]
    page.close()
    assert [m["role"] for m in saved] == ["user", "assistant"] and saved[1]["content"]
    assert saved[1]["stats"]["finish_reason"] == "error"
    # It says what happened, then comes back by itself with the same model.
    assert wait_until(lambda: health()["state"] == "ready", 120), health()
    assert health()["model"] == model
    status, text = stream_reply(server.url, model, 8)
    assert status == 200 and text.rstrip().endswith("data: [DONE]")

    # A second death soon after: no restart loop; the reason and the usual fixes are shown.
    os.kill(engine_core(app).pid, signal.SIGKILL)
    assert wait_until(lambda: health()["state"] == "failed" and "twice" in (health()["error"] or ""), 10), health()
    time.sleep(3)
    assert health()["state"] == "failed" and app.engine.vllm is None
    assert "memory" in health()["error"]
