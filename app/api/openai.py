"""/v1, /tokenize and /detokenize: vLLM's own OpenAI server, in-process, over the app's engine.

The routes, request and response shapes, tool calling, structured output, logprobs, n>1 and the
Responses API are vLLM's (`build_app` + `init_app_state`, what `vllm serve` runs), so the app
answers as `vllm serve` does. That server's state belongs to one AsyncLLM: it is built again
for each engine the app loads, and a request is only ever handed to the one built for the engine
loaded now. While a model loads or switches, requests get 503, as from a server still starting.
The API key, the perimeter and CORS stay the app's own (outside this), and so do /metrics and
/api/vllm/generate. Media URLs in requests are fetched by the app's own connector (app.api.media);
app.api.adapting rewords vLLM's refusals that name `vllm serve` flags and, when asked, fits
max_tokens to the context.

In remote mode the same paths go, unchanged and streamed, to the remote server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.adapting import fits_length, fitted_request, in_app_words
from app.api.errors import CALLER_LANGUAGE, error_response
from app.application import App
from app.engine import EngineState
from app.errors import EngineError, UserError
from app.i18n import language_from_accept
from app.remote import RemoteEngine
from app.settings import EngineSettings

SERVED_PREFIX = "/v1"
SERVED_PATHS = frozenset({"/tokenize", "/detokenize"})
# The endpoints users call, as metric labels (anything else counts as "other").
ENDPOINTS = (
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/tokenize",
    "/detokenize",
)
# How often the server looks for a newly loaded (or gone) engine, to have vLLM's server ready
# before the first request rather than building it inside that request.
WATCH_S = 0.25
# Headers that describe one hop, not the message: never passed on by the remote proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
    }
)


def serves(path: str) -> bool:
    return path in SERVED_PATHS or path == SERVED_PREFIX or path.startswith(SERVED_PREFIX + "/")


class OpenAIServer:
    """The ASGI app behind the served paths."""

    def __init__(self, app: App) -> None:
        self.app = app
        # (the AsyncLLM, vLLM's server for it); dropped when that engine goes.
        self._built: tuple[Any, Any] | None = None
        self._lock = asyncio.Lock()
        self._remote_client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lang = language_from_accept(dict(scope["headers"]).get(b"accept-language", b"").decode("latin-1"))
        engine = self.app.engine
        if isinstance(engine, RemoteEngine):
            await self._pass_through(engine, scope, receive, send, lang)
            return
        try:
            served = await self._current()
        except UserError as exc:
            if scope["path"] == f"{SERVED_PREFIX}/models" and scope["method"] == "GET":
                # Front ends poll the list: no model loaded is an empty list, not an error.
                await JSONResponse({"object": "list", "data": []})(scope, receive, send)
                return
            await error_response(exc, lang)(scope, receive, send)
            return
        max_model_len = engine.status.max_model_len
        if self.app.settings.api_fit_max_tokens and fits_length(scope["path"]) and max_model_len:
            scope, receive = await fitted_request(scope, receive, max_model_len)
        settings = engine.settings
        if settings is None or not settings.tool_call_parser:
            # Only a server without a tool-call parser refuses tools in words naming `vllm serve`
            # flags (see serve_args): other answers pass without a layer per streamed chunk.
            send = in_app_words(send, lang)
        language = CALLER_LANGUAGE.set(lang)
        try:
            await served(scope, receive, send)
        finally:
            CALLER_LANGUAGE.reset(language)

    async def prepare(self) -> None:
        """Build vLLM's server now if an engine is ready, let go of it if none is."""
        if not isinstance(self.app.engine, RemoteEngine):
            with contextlib.suppress(UserError):
                await self._current()

    async def watch(self) -> None:
        """prepare() as engines come and go; runs until cancelled (the app's exit)."""
        while True:
            await asyncio.sleep(WATCH_S)
            await self.prepare()

    async def close(self) -> None:
        """Let go of the served engine (before it is unloaded at exit) and of remote connections."""
        self._release()
        if self._remote_client is not None:
            await self._remote_client.aclose()
            self._remote_client = None

    async def _current(self) -> Any:
        """vLLM's server for the engine loaded now, built on first use; UserError if none is."""
        engine = self.app.engine
        llm = engine.vllm
        if llm is None or engine.status.state != EngineState.READY:
            self._release()
            raise _not_ready(engine.status)
        if self._built is not None and self._built[0] is llm:
            return self._built[1]
        async with self._lock:
            if self._built is None or self._built[0] is not llm:
                self._release()
                source = engine.source or engine.model_name
                served = await build_served_app(
                    llm, source, engine.model_name, engine.settings, self.app.access.allowed_media_domains
                )
                self._built = (llm, served)
            return self._built[1]

    def _release(self) -> None:
        built, self._built = self._built, None
        if built is not None:
            # Its state holds the AsyncLLM: an engine kept alive past its unload would run its
            # shutdown again at interpreter exit.
            built[1].state._state.clear()

    async def _pass_through(self, engine: RemoteEngine, scope: Scope, receive: Receive, send: Send, lang: str) -> None:
        if self._remote_client is None:
            self._remote_client = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10))
        request = Request(scope, receive)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.update(engine.auth_headers())
        outgoing = self._remote_client.build_request(
            scope["method"],
            remote_url(engine.base_url, scope["path"], scope.get("query_string", b"")),
            content=await request.body(),
            headers=headers,
        )
        try:
            response = await self._remote_client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            await error_response(engine.transport_error(exc), lang)(scope, receive, send)
            return
        # Starlette streams the answer on as it arrives and stops when the client hangs up; the
        # remote request is closed either way, which aborts it on a `vllm serve`.
        relayed = StreamingResponse(
            response.aiter_bytes(),
            status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}},
            background=BackgroundTask(response.aclose),
        )
        await relayed(scope, receive, send)


def remote_url(base_url: str, path: str, query: bytes) -> str:
    """The remote server's address for a served path: /v1/... under its /v1 base, /tokenize at
    its root."""
    base = base_url.rstrip("/")
    if path == SERVED_PREFIX or path.startswith(SERVED_PREFIX + "/"):
        url = base + path[len(SERVED_PREFIX) :]
    else:
        url = base.removesuffix(SERVED_PREFIX) + path
    return url + (f"?{query.decode('latin-1')}" if query else "")


async def build_served_app(
    llm: Any, source: str, name: str, settings: EngineSettings | None, media_domains: Sequence[str] = ()
) -> Any:
    """vLLM's OpenAI server (a FastAPI app) for one loaded AsyncLLM, as `vllm serve` builds it;
    media URLs fetched only from public hosts (and only `media_domains` when given)."""
    from starlette.middleware.cors import CORSMiddleware
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app

    from app.api.media import use_public_media

    use_public_media(media_domains)
    args = serve_args(source, name, settings)
    tasks = await llm.get_supported_tasks()
    served = build_app(args, tasks, llm.model_config)
    # Its CORS layer allows no origin here (CORS is the app's own, outside) but still adds
    # "Vary: Origin" to every answer, and the app's own adds it again ("Origin, Origin"). The
    # stack is already built (vLLM's SageMaker bootstrap rebuilds it): built again without it.
    served.user_middleware = [m for m in served.user_middleware if m.cls is not CORSMiddleware]
    served.middleware_stack = served.build_middleware_stack()
    await init_app_state(llm, served.state, args, tasks)
    # vLLM's error handlers stop their uvicorn server when the engine dies; here the app's
    # supervisor restarts the engine instead, so they get a server that ignores them.
    served.state.server = argparse.Namespace(should_exit=False)
    return served


def serve_args(source: str, name: str, settings: EngineSettings | None) -> argparse.Namespace:
    """`vllm serve`'s own flags for this model: its name, tool-call and reasoning parsers."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = ["--model", source, "--served-model-name", name, "--disable-fastapi-docs"]
    if settings is not None and settings.tool_call_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", settings.tool_call_parser]
    if settings is not None and settings.reasoning_parser:
        argv += ["--reasoning-parser", settings.reasoning_parser]
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    # The serving classes read the reasoning parser from here; `vllm serve` puts it here as a side
    # effect of building its engine config from these args, which the app does not do.
    args.structured_outputs_config.reasoning_parser = args.reasoning_parser or ""
    # CORS and the API key are the app's own, outside this server.
    args.allowed_origins = []
    args.api_key = None
    return args


def _not_ready(status: Any) -> UserError:
    if status.state == EngineState.LOADING:
        return EngineError("engine.still_loading", model=status.model)
    if status.state == EngineState.FAILED and status.error is not None:
        return EngineError("engine.not_ready", reason=status.error.message("en"))
    return EngineError("engine.no_model")
