"""Builds the one HTTP server: FastAPI whose lifespan owns the engine, with the API,
metrics and the Gradio UI mounted on it, all on one port (default 127.0.0.1:7860)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Callable

# Private app: no usage analytics leave the machine. Set before Gradio is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue otherwise rebuilds a pandas summary of up to 10,000 past events after every
# event (for a monitoring page this app does not offer): ~2-5 ms per chat reply and per
# status-bar tick, growing the longer the app stays open.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(2**62))
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.access import Access
from app.api import count_requests, install_api
from app.api.perimeter import Perimeter, PerimeterRules
from app.application import App
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

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        supervision = app.start_supervision()
        # A model already loaded gets its API before the server takes requests; later ones as
        # soon as they are ready.
        await openai_server.prepare()
        watching = asyncio.get_running_loop().create_task(openai_server.watch())
        try:
            yield
        finally:
            for task in (supervision, watching):
                task.cancel()
            await asyncio.gather(supervision, watching, return_exceptions=True)
            await openai_server.close()
            if app.tools is not None:
                # Local MCP servers are the app's children: they end with it.
                await app.tools.close()
            # Download children also end when we die, but a clean exit should not wait for that.
            await asyncio.to_thread(app.downloads.cancel_all)
            if unload_on_exit:
                # Frees the GPU: the EngineCore process must not outlive the app.
                await app.engine.unload()

    # No schema page: it would describe the API to anyone who asks, login or not.
    http = FastAPI(title="vllm-chat", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @http.get("/healthz")
    async def healthz(request: Request) -> dict:
        status = app.engine.status
        lang = language_from_accept(request.headers.get("accept-language"))
        reason = status.error.message(lang) if status.error else None
        return {"state": status.state.value, "model": status.model, "error": reason}

    @http.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(app.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    openai_server = install_api(http, app, access)

    if ui:
        from app.ui.layout import mount_ui

        # The UI is mounted last, at "/": routes registered after it would be shadowed.
        mount_ui(http, app, auth=access.ui_auth)
    # Added last, so it wraps everything: no route, the page's included, sees a refused request.
    http.add_middleware(Perimeter, rules=PerimeterRules(
        bind_host=access.host, allowed_hosts=access.allowed_hosts, allowed_origins=access.allowed_origins))
    count_requests(http, app)
    return http


# Longer than the idle time after which common clients drop a pooled connection (httpx and the
# OpenAI SDK: 5 s, the same as uvicorn's default). With equal times the server can close a
# connection just as a client sends its next request on it, which fails with an empty read.
KEEP_ALIVE_S = 65


def serve(app: App, autoload: str | None = None, open_browser: bool = True) -> None:
    import uvicorn

    access = app.access
    host, port = access.host, access.port
    try:
        access.check_exposure()
    except UserError as exc:
        raise SystemExit(f"{exc.message('en')}\n{exc.message('zh-CN')}") from None
    if access.page_open_to_local_programs:
        print(f"{translate('api.page_open_to_local_programs', 'en')}\n"
              f"{translate('api.page_open_to_local_programs', 'zh-CN')}", flush=True)
    if not port_free(host, port):
        raise SystemExit(
            f"Port {port} on {host} is already in use (is vllm-chat already running?). "
            f"Close the other program or start with --port {port + 1}.\n"
            f"端口 {port} 已被占用（是否已在运行 vllm-chat？）。请关闭占用的程序，或使用 --port {port + 1} 启动。"
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"

    async def run() -> None:
        # Until the server takes over the signals, TERM cancels this task, so that an engine
        # already starting is shut down below (Ctrl+C does the same through asyncio).
        loop, main = asyncio.get_running_loop(), asyncio.current_task()
        signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(main.cancel))
        loading = app.load_model_in_background(autoload) if autoload else None
        try:
            if loading is not None:
                await _engine_starting(app, loading)
            http = build_http_app(app)
            server = uvicorn.Server(
                uvicorn.Config(http, host=host, port=port, log_level="info", timeout_graceful_shutdown=5,
                               timeout_keep_alive=KEEP_ALIVE_S)
            )
            if open_browser:
                threading.Thread(target=_open_when_up, args=(server, url), daemon=True).start()
            print(f"vllm-chat: open {url} in your browser / 在浏览器中打开 {url}", flush=True)
            # From here the server handles TERM (its lifespan unloads the engine) and passes it
            # on when it is done, to end the process with TERM's status as before.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            await server.serve()
        finally:
            # After a normal stop the server's lifespan has unloaded the engine already; after a
            # stop or a failure before the server ran, the engine may be loading or loaded.
            if loading is not None and not loading.done():
                loading.cancel()
                await asyncio.wait([loading])
            await app.engine.unload()

    # A stop before the server ran (TERM, Ctrl+C) ends here, once the engine is shut down.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner, \
            contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        runner.run(run())


async def _engine_starting(app: App, loading: asyncio.Task) -> None:
    """Wait until the engine's own processes are starting: they then load the model on another
    core while this one builds the page (a couple of seconds of Gradio), so the model is ready
    that much sooner. The page never waits more than a few seconds for it."""
    deadline = time.monotonic() + ENGINE_HEAD_START_S
    while not loading.done() and app.engine.status.stage != "engine.stage_starting" and time.monotonic() < deadline:
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
