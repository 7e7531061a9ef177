"""Shared fixtures: the tiny model, one real vLLM engine for the whole session, and app servers.

vLLM engine objects bind to the event loop they first run on, so the session owns one
event loop in a background thread ("the engine loop"). The shared engine, and every
HTTP server a test starts around it, live on that loop; tests hand it coroutines with
`engine_loop.run(coro)`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

# Tests size the CPU KV cache through EngineSettings.cpu_kv_cache_gib; vLLM lets this legacy
# variable override that setting, which would hide the app's own behaviour.
os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Nothing in the tests may reach the internet hub by accident: the app obeys this too (no search,
# check or download goes out), so tests of the loopback Hub ask for `hub_online`.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.config.settings import EngineSettings
from app.engine import Engine
from app.engine.logs import configure_engine_log
from tests.tiny_model import build_tiny_model

TEST_MAX_MODEL_LEN = 512
# The tiny model's own limit (max_position_embeddings): the stop benchmark's slow model runs at it.
LONG_MAX_MODEL_LEN = 2048
# vLLM's log file for the session (set before vLLM is imported, so its processes write there too).
ENGINE_LOG = configure_engine_log(Path(tempfile.mkdtemp(prefix="vllm-chat-logs-")))


# Fixtures that start a vLLM engine, a `vllm serve`, or Chromium: a test that uses one (directly or
# through another fixture) is marked for it, so that `-m "not engine and not browser and not e2e"`
# is a quick lane that tells the truth. A test that starts an engine of its own says so with
# `pytest.mark.engine`; one that starts `python -m app` or `vllm serve` with `pytest.mark.e2e`.
ENGINE_FIXTURES = frozenset({"engine", "vllm_serve", "thinking_engine", "vision_engine", "llama_engine"})
E2E_FIXTURES = frozenset({"vllm_serve"})
BROWSER_FIXTURES = frozenset({"browser"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & ENGINE_FIXTURES:
            item.add_marker(pytest.mark.engine)
        if used & E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        if used & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True)
def _quick_tests_start_no_engine(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test not marked `engine` or `e2e` that has a vLLM process beside it is mismarked: it
    would slow the quick lane down. In the quick lane any vLLM process fails it (an engine started
    by a module or session fixture comes before this check); in the full run, a new one does."""
    marked = {m.name for m in request.node.iter_markers()} & {"engine", "e2e", "slow"}
    quick = "not engine" in (request.config.option.markexpr or "")
    before = {p.pid for p in vllm_processes()} if not (marked or quick) else set()
    yield
    if not marked:
        started = [p.pid for p in vllm_processes() if p.pid not in before]
        assert not started, "this test runs beside a vLLM engine: mark it pytest.mark.engine"


class EngineLoop:
    """An event loop running in its own thread for the whole test session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def engine_loop() -> Iterator[EngineLoop]:
    loop = EngineLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2-architecture tiny chat model folder."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_llama_no_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model (Llama architecture) without a chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama", chat_template=False)


# The real `vllm serve` the remote-mode and parity tests talk to: the tiny model under the name
# the app gives it, with the flags the app picks for it (Qwen2: Hermes-style tool calls).
VLLM_SERVE_NAME = "tiny-qwen2"
REMOTE_KEY = "remote-secret"
VLLM_SERVE_FLAGS = (
    "--enforce-eager",
    "--max-model-len",
    str(TEST_MAX_MODEL_LEN),
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "hermes",
)


@pytest.fixture(scope="session")
def vllm_serve(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` on loopback (about 30-90 s to start); its
    /v1 URL. Needs REMOTE_KEY."""
    port = free_port()
    log = (tmp_path_factory.mktemp("vllm-serve") / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(tiny_model),
            "--served-model-name",
            VLLM_SERVE_NAME,
            *VLLM_SERVE_FLAGS,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            REMOTE_KEY,
        ],
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, f"vllm serve exited; see {log.name}"
            assert time.monotonic() < deadline, f"vllm serve did not start; see {log.name}"
            try:
                if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {REMOTE_KEY}"}).is_success:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def tiny_engine_settings() -> EngineSettings:
    return EngineSettings(max_model_len=TEST_MAX_MODEL_LEN, enforce_eager=True, cpu_kv_cache_gib=1)


@pytest.fixture(scope="session")
def engine(engine_loop: EngineLoop, tiny_model: Path) -> Iterator[Engine]:
    """The one shared engine with the tiny model loaded (about 20-30 s to start on 2 cores)."""
    eng = Engine()
    engine_loop.run(eng.load(str(tiny_model), tiny_engine_settings()))
    yield eng
    engine_loop.run(eng.unload())


@pytest.fixture(scope="session")
def vision_engine(engine_loop: EngineLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A tiny vision model (Idefics3), loaded once for every test that sends pictures."""
    from tests.tiny_vision_model import build_tiny_vision_model

    folder = build_tiny_vision_model(tmp_path_factory.mktemp("models") / "tiny-idefics3")
    eng = Engine()
    # Half the text engine's KV cache: both run at once in the session.
    engine_loop.run(eng.load(str(folder), dataclasses.replace(tiny_engine_settings(), cpu_kv_cache_gib=0.5)))
    yield eng
    engine_loop.run(eng.unload())


@pytest.fixture
def app_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private app home (settings, history, logs) for one test."""
    monkeypatch.setenv("VLLM_CHAT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online, for a test that talks to the loopback Hub (tests/hub_server.py): the app honours
    HF_HUB_OFFLINE, which the suite sets. A call that names no endpoint of its own goes to a closed
    loopback port, never to the internet."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def vllm_processes(pid: int | None = None) -> list[psutil.Process]:
    """The vLLM engine processes (EngineCore, workers) under `pid`, this process by default."""
    return [p for p in psutil.Process(pid).children(recursive=True) if p.name().startswith("VLLM::")]


def still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `procs` still alive (an exited child not yet reaped counts as gone)."""
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


class RunningServer:
    """The app's real HTTP server (API + UI) on a free loopback port, on the engine loop."""

    def __init__(self, engine_loop: EngineLoop, http: Any, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.engine_loop = engine_loop
        self.port = free_port(host)
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        # A closed gradio_client leaves its heartbeat stream open until the server's next
        # heartbeat (15 s): stopping does not wait for it, as the app's own server does not.
        config = uvicorn.Config(
            http, host=host, port=self.port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.task = engine_loop.run(self._start())

    async def _start(self) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self.server.serve())
        for _ in range(600):
            if self.server.started:
                return task
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        raise TimeoutError("server did not start")

    def stop(self) -> None:
        async def _stop() -> None:
            self.server.should_exit = True
            await self.task

        self.engine_loop.run(_stop(), timeout=60)


@pytest.fixture
def make_app(app_home: Path) -> Any:
    """Build an App (private home, default settings) around a given engine."""
    from app.application import App
    from app.config.settings import AppPaths, AppSettings

    def make(engine: Any, settings: AppSettings | None = None, access: Any = None) -> App:
        return App.build(settings or AppSettings(), AppPaths.default(), engine=engine, access=access)

    return make


@pytest.fixture
def start_server(engine_loop: EngineLoop) -> Iterator[Any]:
    """start_server(app, **build_http_app kwargs) -> RunningServer on the app's own address
    (`app.access.host`); stopped after the test. The shared engine stays loaded when the server
    stops."""
    from app.server import build_http_app

    servers: list[RunningServer] = []

    def start(app: Any, **kwargs: Any) -> RunningServer:
        kwargs.setdefault("unload_on_exit", False)
        server = RunningServer(engine_loop, build_http_app(app, **kwargs), host=app.access.host)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
