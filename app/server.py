"""Builds the one HTTP server: FastAPI whose lifespan owns the engine, with the API,
metrics and the Gradio UI mounted on it, all on one port (default 127.0.0.1:7860)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

# Private app: no usage analytics leave the machine. Set before Gradio is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue otherwise rebuilds a pandas summary of up to 10,000 past events after every
# event (for a monitoring page this app does not offer): ~2-5 ms per chat reply and per
# status-bar tick, growing the longer the app stays open.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(2**62))
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")

import uvicorn
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api import count_requests, install_api
from app.api.perimeter import Perimeter, PerimeterRules
from app.application import App
from app.config.access import Access
from app.engine.types import LoadStage
from app.errors import UserError
from app.hardware import port_free
from app.i18n import language_from_accept, translate

log = logging.getLogger(__name__)
# The longest the page waits for the engine's processes to start (a model id vLLM must look up
# on the network can take longer; then the page comes first).
ENGINE_HEAD_START_S = 15.0


def build_http_app(app: App, unload_on_exit: bool = True, access: Access | None = None, ui: bool = True) -> FastAPI:
    """The FastAPI app with everything mounted, behind the perimeter. `unload_on_exit=False`
    leaves the engine loaded (tests share one engine between servers); `access` holds this run's
    address, API key, UI login, allowed hosts and CORS origins (the app's own by default);
    `ui=False` serves the API, metrics and health without building the page (API-only tests)."""
    access = access or app.access

    stopping = AppShutdown()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        supervision = app.start_supervision()
        idle_sweep = app.start_idle_sweep()
        # A model already loaded gets its API before the server takes requests; later ones as
        # soon as they are ready.
        await openai_server.prepare()
        watching = asyncio.get_running_loop().create_task(openai_server.watch())
        stopping.steps = functools.partial(
            _shut_down, app, [supervision, idle_sweep, watching], openai_server, end_page_streams, unload_on_exit
        )
        try:
            yield
        finally:
            await stopping.wait()

    # No schema page: it would describe the API to anyone who asks, login or not.
    http = FastAPI(title="vllm-chat", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @http.get("/healthz")
    async def healthz(request: Request) -> dict:
        status = app.engine.status
        lang = language_from_accept(request.headers.get("accept-language"))
        reason = status.error.message(lang) if status.error else None
        members = [
            {"model": m.name, "state": m.state.value, "current": m.engine is app.engine, "pinned": m.pinned}
            for m in app.pool.members()
        ]
        return {"state": status.state.value, "model": status.model, "error": reason, "members": members}

    @http.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(app.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    openai_server = install_api(http, app, access)

    end_page_streams: Callable[[], None] = _no_page_streams
    if ui:
        from app.ui.layout import mount_ui

        # The UI is mounted last, at "/": routes registered after it would be shadowed.
        end_page_streams = mount_ui(http, app, auth=access.ui_auth)
    # Added last, so it wraps everything: no route, the page's included, sees a refused request.
    http.add_middleware(
        Perimeter,
        rules=PerimeterRules(
            bind_host=access.host, allowed_hosts=access.allowed_hosts, allowed_origins=access.allowed_origins
        ),
    )
    count_requests(http, app)
    # For the server, to start the app's shutdown as soon as it is told to stop.
    http.state.stopping = stopping
    return http


def _no_page_streams() -> None:
    """Without a page there are no page streams to end."""


async def _shut_down(
    app: App, tasks: list[asyncio.Task], openai_server: Any, end_page_streams: Callable[[], None], unload: bool
) -> None:
    """The app's shutdown: its tasks, the API's hold on the engine, then the engine (with `unload`)
    alongside the tools and downloads."""
    # Open pages hold a stream each (Gradio's session heartbeat): the server's stop would
    # wait for them otherwise.
    end_page_streams()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await openai_server.close()
    # The engine first and alongside the rest: its stop takes longest, and frees the GPU
    # (the EngineCore process must not outlive the app).
    unloading = asyncio.ensure_future(app.pool.unload_all(keep_given=not unload))
    if app.tools is not None:
        # Local MCP servers are the app's children: they end with it.
        await app.tools.close()
    # Download children also end when we die, but a clean exit should not wait for that.
    await asyncio.to_thread(app.downloads.cancel_all)
    await unloading


class AppShutdown:
    """The app's shutdown (its engine, tools, downloads), run once: begun as soon as the server
    is told to stop, and waited for when the server's lifespan ends."""

    def __init__(self) -> None:
        # Set once the app has started (the lifespan): there is nothing to shut down before.
        self.steps: Callable[[], Awaitable[None]] | None = None
        self._run: asyncio.Future | None = None

    def begin(self) -> None:
        if self._run is None and self.steps is not None:
            self._run = asyncio.ensure_future(self.steps())

    async def wait(self) -> None:
        self.begin()
        if self._run is not None:
            await self._run


class AppServer(uvicorn.Server):
    """uvicorn's server, which on a stop signal also starts the app's shutdown at once: the
    engine's processes then stop while the server closes its connections, not after them."""

    def __init__(self, config: uvicorn.Config, stopping: AppShutdown) -> None:
        super().__init__(config)
        self.stopping = stopping
        self.stop_signal: int | None = None
        self._loop = asyncio.get_running_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = sig
            self._loop.call_soon_threadsafe(self.stopping.begin)
        super().handle_exit(sig, frame)


# Longer than the idle time after which common clients drop a pooled connection (httpx and the
# OpenAI SDK: 5 s, the same as uvicorn's default). With equal times the server can close a
# connection just as a client sends its next request on it, which fails with an empty read.
KEEP_ALIVE_S = 65
# On a stop, how long open requests may take to end. The engine's shutdown starts at once beside
# it and aborts every running request, so streams end within this; the stop takes about as
# long as the engine's anyway.
STOP_DRAIN_S = 3


def serve(app: App, autoload: str | None = None, open_browser: bool = True) -> None:
    access = app.access
    host, port = access.host, access.port
    try:
        access.check_exposure()
    except UserError as exc:
        raise SystemExit(f"{exc.message('en')}\n{exc.message('zh-CN')}") from None
    if access.page_open_to_local_programs:
        print(
            f"{translate('api.page_open_to_local_programs', 'en')}\n"
            f"{translate('api.page_open_to_local_programs', 'zh-CN')}",
            flush=True,
        )
    if not port_free(host, port):
        raise SystemExit(
            f"Port {port} on {host} is already in use (is vllm-chat already running?). "
            f"Close the other program or start with --port {port + 1}.\n"
            f"端口 {port} 已被占用（是否已在运行 vllm-chat？）。请关闭占用的程序，或使用 --port {port + 1} 启动。"
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"

    # A stop before the server ran (TERM, Ctrl+C) ends here, once the engine is shut down.
    stop_signal = None
    with (
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
        contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError),
    ):
        stop_signal = runner.run(_run(app, autoload, open_browser, url))
    if stop_signal is not None:
        # Everything is shut down: end with the signal's own status, as its default action
        # would, rather than after Python's teardown of torch, vLLM and Gradio (seconds here).
        signal.signal(stop_signal, signal.SIG_DFL)
        signal.raise_signal(stop_signal)


async def _run(app: App, autoload: str | None, open_browser: bool, url: str) -> int | None:
    """Serve until told to stop; the signal that stopped the server, if one did."""
    # Until the server takes over the signals, TERM cancels this task, so that an engine
    # already starting is shut down below (Ctrl+C does the same through asyncio).
    loop, main = asyncio.get_running_loop(), asyncio.current_task()
    signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(main.cancel))
    loading = app.load_model_in_background(autoload) if autoload else None
    server: AppServer | None = None
    try:
        if loading is not None:
            await _engine_starting(app, loading)
        http = build_http_app(app)
        config = uvicorn.Config(
            http,
            host=app.access.host,
            port=app.access.port,
            log_level="info",
            timeout_graceful_shutdown=STOP_DRAIN_S,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        server = AppServer(config, http.state.stopping)
        if open_browser:
            threading.Thread(target=_open_when_up, args=(server, url), daemon=True).start()
        print(f"vllm-chat: open {url} in your browser / 在浏览器中打开 {url}", flush=True)
        # From here the server handles TERM and Ctrl+C (its lifespan shuts the app down) and
        # passes the signal on when it is done: to us, handled after the run.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        await server.serve()
    finally:
        # After a normal stop the server's lifespan has unloaded the engine already; after a
        # stop or a failure before the server ran, the engine may be loading or loaded.
        if loading is not None and not loading.done():
            loading.cancel()
            await asyncio.wait([loading])
        await app.pool.unload_all()
    return server.stop_signal if server is not None else None


async def _engine_starting(app: App, loading: asyncio.Task) -> None:
    """Wait until the engine's own processes are starting: they then load the model on another
    core while this one builds the page (a couple of seconds of Gradio), so the model is ready
    that much sooner. The page never waits more than a few seconds for it."""
    deadline = time.monotonic() + ENGINE_HEAD_START_S
    while not loading.done() and app.engine.status.stage != LoadStage.STARTING and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (as uvicorn would pick it), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _open_when_up(server: object, url: str) -> None:
    for _ in range(600):
        if getattr(server, "started", False):
            webbrowser.open(url)
            return
        time.sleep(0.1)
