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
from typing import TYPE_CHECKING, Any, cast

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.adapting import fits_length, fitted_request, in_app_words
from app.api.errors import CALLER_LANGUAGE, error_response
from app.api.served_models import ModelAsk, asked_model, find_cached, models_list, needs_own_code, not_found
from app.application import App
from app.config.settings import EngineSettings
from app.engine import EngineState
from app.engine.pool import Member, MemberState
from app.errors import EngineError, UserError
from app.i18n import language_from_accept

if TYPE_CHECKING:
    from app.engine.remote import RemoteEngine

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
    """The ASGI app behind the served paths: each request goes to the vLLM server of the pool
    member its body names (the chat's current model when it names none), loading a cached model
    first when it names one that is not loaded."""

    def __init__(self, app: App) -> None:
        self.app = app
        # id(AsyncLLM) → (the AsyncLLM, vLLM's server for it); dropped when that engine goes.
        self._built: dict[int, tuple[Any, Any]] = {}
        self._lock = asyncio.Lock()
        self._remote_client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lang = language_from_accept(dict(scope["headers"]).get(b"accept-language", b"").decode("latin-1"))
        if self.app.engine.capabilities.remote:
            await self._pass_through(cast("RemoteEngine", self.app.engine), scope, receive, send, lang)
            return
        if scope["path"] == f"{SERVED_PREFIX}/models" and scope["method"] == "GET":
            await JSONResponse(await models_list(self.app, self._served_or_none))(scope, receive, send)
            return
        scope, receive, ask = await asked_model(scope, receive)
        try:
            member = await self._member_for(ask)
            if member is None:
                await not_found(ask.name or "", self._aliases())(scope, receive, send)
                return
            member.serving += 1
            try:
                await self._serve(member, scope, receive, send, lang)
            finally:
                member.serving -= 1
                member.touch()
        except UserError as exc:
            await error_response(exc, lang)(scope, receive, send)

    async def _serve(self, member: Member, scope: Scope, receive: Receive, send: Send, lang: str) -> None:
        await self.app.pool.wake(member)
        served = await self._served(member.engine)
        max_model_len = member.engine.status.max_model_len
        if self.app.settings.api_fit_max_tokens and fits_length(scope["path"]) and max_model_len:
            scope, receive = await fitted_request(scope, receive, max_model_len)
        settings = member.engine.settings
        if settings is None or not settings.tool_call_parser:
            # Only a server without a tool-call parser refuses tools in words naming `vllm serve`
            # flags (see serve_args): other answers pass without a layer per streamed chunk.
            send = in_app_words(send, lang)
        language = CALLER_LANGUAGE.set(lang)
        try:
            await served(scope, receive, send)
        finally:
            CALLER_LANGUAGE.reset(language)

    async def _member_for(self, ask: ModelAsk) -> Member | None:
        """The member to answer: the one named (waiting for its load on request, or loading it from
        the model cache), else the current one; None for a name nothing here has. UserError when
        the current model is not ready, or a load on request is refused or fails."""
        pool = self.app.pool
        pending = pool.pending(ask.name) if ask.name else None
        # A load on request under way is waited for, as by the request that started it.
        member = await asyncio.shield(pending) if pending is not None else None
        if member is None and ask.name:
            member = pool.find(ask.name)
        if member is None and ask.name:
            member = await self._load_on_request(ask.name)
        if member is None:
            current = pool.current
            if current is None or current.state != MemberState.LOADED:
                # Nothing to answer with: "no model loaded" or "still loading", as before the pool.
                raise _not_ready(self.app.engine.status)
            if ask.name:
                return None
            member = current
        if ask.ttl_s is not None:
            member.ttl_s = ask.ttl_s
        return member

    async def _load_on_request(self, name: str) -> Member | None:
        cached = await find_cached(self.app, name)
        if cached is None:
            return None
        trusted = self.app.settings.trusts(name) or self.app.settings.engine.trust_remote_code
        if needs_own_code(cached) and not trusted:
            raise UserError("api.model_needs_own_code", model=name)
        return await self.app.load_on_request(name)

    def _aliases(self) -> list[str]:
        return [m.name for m in self.app.pool.members() if m.state == MemberState.LOADED]

    async def prepare(self) -> None:
        """Build vLLM's server now for every member that is ready, let go of those that went."""
        if self.app.engine.capabilities.remote:
            return
        ready = {id(m.engine.vllm) for m in self.app.pool.members() if m.state == MemberState.LOADED}
        for key in [k for k in self._built if k not in ready]:
            self._release(key)
        for member in self.app.pool.members():
            if member.state == MemberState.LOADED:
                with contextlib.suppress(UserError):
                    await self._served(member.engine)

    async def watch(self) -> None:
        """prepare() as engines come and go; runs until cancelled (the app's exit)."""
        while True:
            await asyncio.sleep(WATCH_S)
            await self.prepare()

    async def close(self) -> None:
        """Let go of the served engines (before they are unloaded at exit) and of remote connections."""
        for key in list(self._built):
            self._release(key)
        if self._remote_client is not None:
            await self._remote_client.aclose()
            self._remote_client = None

    async def _served_or_none(self, member: Member) -> Any:
        with contextlib.suppress(UserError):
            return await self._served(member.engine)
        return None

    async def _served(self, engine: Any) -> Any:
        """vLLM's server for `engine`, built on first use; UserError if it is not ready."""
        llm = engine.vllm
        if llm is None or engine.status.state != EngineState.READY:
            raise _not_ready(engine.status)
        built = self._built.get(id(llm))
        if built is not None and built[0] is llm:
            return built[1]
        async with self._lock:
            built = self._built.get(id(llm))
            if built is None or built[0] is not llm:
                self._release(id(llm))
                source = engine.source or engine.model_name
                served = await build_served_app(
                    llm, source, engine.model_name, engine.settings, self.app.access.allowed_media_domains
                )
                self._built[id(llm)] = (llm, served)
            return self._built[id(llm)][1]

    def _release(self, key: int) -> None:
        built = self._built.pop(key, None)
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
