"""The OpenAI-compatible API (/v1) over the app's engine, shaped as `vllm serve` shapes it.

An adapter only: it turns JSON into engine calls and engine deltas into JSON. The engine
(local or remote) renders chats, samples, counts tokens and aborts dropped requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.types import Receive, Scope, Send

from app.application import App
from app.engine import ChatDelta
from app.errors import UserError
from app.i18n import language_from_accept

_Body = TypeVar("_Body", bound=BaseModel)

# Anything not listed is a mistake in the request (400), as `vllm serve` treats it.
_STATUS_BY_KEY = {
    "api.unauthorized": 401,
    "api.model_not_found": 404,
    "remote.unknown_model": 404,
    "engine.no_model": 503,
    "engine.still_loading": 503,
    "engine.dead": 503,
    "remote.unreachable": 503,
    "remote.no_models": 503,
    "remote.unauthorized": 502,
    "remote.failed": 502,
    "remote.bad_reply": 502,
    "engine.request_failed": 500,
    "api.internal": 500,
}
_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
}


def http_status(exc: UserError) -> int:
    return _STATUS_BY_KEY.get(exc.key, 400)


def error_body(exc: UserError, lang: str, status: int | None = None) -> dict[str, Any]:
    status = status or http_status(exc)
    return {
        "error": {
            "message": exc.message(lang),
            "type": _ERROR_TYPES.get(status, "BadRequestError"),
            "param": exc.params.get("name") if exc.key.startswith("settings.") else None,
            "code": status,
        }
    }


def error_response(exc: UserError, lang: str, status: int | None = None) -> JSONResponse:
    status = status or http_status(exc)
    return JSONResponse(error_body(exc, lang, status), status_code=status)


def request_language(request: Request) -> str:
    return language_from_accept(request.headers.get("accept-language"))


# ---- request bodies -----------------------------------------------------------------------


class _StreamOptions(BaseModel):
    include_usage: bool = False


class _GenerationRequest(BaseModel):
    """Fields both endpoints share; unknown fields are ignored, as OpenAI clients send many."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int = 1
    logprobs: bool | int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # vLLM's extra sampling fields, accepted at the top level like `vllm serve` does.
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool | None = None

    def sampling_overrides(self, default_max_tokens: int | None) -> dict[str, Any]:
        names = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty",
                 "top_k", "min_p", "repetition_penalty", "ignore_eos")
        overrides = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.stop is not None:
            overrides["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        # Like `vllm serve`: without a limit, a reply may use the rest of the context.
        max_tokens = self.requested_max_tokens() or default_max_tokens
        if max_tokens is not None:
            overrides["max_tokens"] = max_tokens
        return overrides

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def check_supported(self) -> None:
        if self.n != 1:
            raise UserError("api.only_one_choice")
        if self.logprobs:
            raise UserError("api.no_logprobs")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_GenerationRequest):
    messages: list[_ChatMessage]
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def check_supported(self) -> None:
        super().check_supported()
        if self.tools and self.tool_choice != "none":
            raise UserError("api.no_tools")


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise UserError("api.one_prompt")
        return self.prompt[0]


async def parse_body(request: Request, model: type[_Body]) -> _Body:
    try:
        body = await request.json()
    except ValueError:
        raise UserError("api.bad_json") from None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserError("api.bad_request", reason=f"{where}: {first['msg']}") from None


# ---- responses ----------------------------------------------------------------------------


class EventStream(StreamingResponse):
    """Server-sent events whose source is closed the moment the response ends.

    When the client hangs up, Starlette cancels the sending loop. If that lands between two
    chunks rather than inside the generator, the generator is left to the garbage collector;
    closing it here aborts the engine request at once either way.
    """

    def __init__(self, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


def sse(data: dict[str, Any] | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"


def usage(delta: ChatDelta | None) -> dict[str, int]:
    prompt = delta.prompt_tokens if delta else 0
    completion = delta.completion_tokens if delta else 0
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion}


class _Shape:
    """How one endpoint wraps text into choices (chat: message/delta; completions: text)."""

    def __init__(self, kind: Literal["chat", "completion"], request_id: str, model: str) -> None:
        self.kind = kind
        self.base = {
            "id": request_id,
            "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def chunk(self, text: str | None, finish_reason: str | None, first: bool = False) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.kind == "chat":
            choice["delta"] = ({"role": "assistant", "content": ""} if first
                               else {"content": text} if text else {})
        else:
            choice["text"] = text or ""
        choice.update(logprobs=None, finish_reason=finish_reason)
        return {**self.base, "choices": [choice]}

    def usage_chunk(self, last: ChatDelta | None) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage(last)}

    def whole(self, text: str, last: ChatDelta | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=last.finish_reason if last else None, stop_reason=None)
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {**self.base, "object": obj, "choices": [choice], "usage": usage(last)}


# ---- routes -------------------------------------------------------------------------------


def openai_router(app: App) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        engine = app.engine
        data = []
        if engine.model_name:
            data.append({
                "id": engine.model_name,
                "object": "model",
                "created": int(engine.status.since),
                "owned_by": "vllm",
                "root": app.settings.model or engine.model_name,
                "parent": None,
                "max_model_len": engine.max_model_len,
                "permission": [],
            })
        return {"object": "list", "data": data}

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Any:
        def start(body: ChatCompletionRequest, sampling: Any, request_id: str) -> AsyncIterator[ChatDelta]:
            messages = [m.model_dump() for m in body.messages]
            return app.engine.stream_chat(messages, sampling, request_id=request_id)

        return await _generate(app, request, ChatCompletionRequest, "chat", "chatcmpl", start)

    @router.post("/completions")
    async def completions(request: Request) -> Any:
        def start(body: CompletionRequest, sampling: Any, request_id: str) -> AsyncIterator[ChatDelta]:
            return app.engine.stream_completion(body.text(), sampling, request_id=request_id)

        return await _generate(app, request, CompletionRequest, "completion", "cmpl", start)

    return router


async def _generate(
    app: App,
    request: Request,
    model_type: type[_GenerationRequest],
    kind: Literal["chat", "completion"],
    id_prefix: str,
    start: Callable[[Any, Any, str], AsyncIterator[ChatDelta]],
) -> Any:
    lang = request_language(request)
    engine = app.engine
    request_id = f"{id_prefix}-{uuid.uuid4().hex}"
    try:
        body = await parse_body(request, model_type)
        body.check_supported()
        # With no model loaded the engine itself answers 503 below; an unknown name is 404 only
        # when there is a model to compare it with.
        if body.model and engine.model_name and body.model != engine.model_name:
            raise UserError("api.model_not_found", model=body.model, served=engine.model_name)
        sampling = engine.resolve_sampling(body.sampling_overrides(engine.max_model_len))
        stream = start(body, sampling, request_id)
        # The first step renders the prompt and checks its length: errors found there still
        # get a proper status code instead of a broken stream.
        first = await anext(stream, None)
    except UserError as exc:
        return error_response(exc, lang)
    shape = _Shape(kind, request_id, engine.model_name or body.model or "")
    if body.stream:
        return EventStream(_events(stream, first, shape, body.include_usage, lang, kind == "chat"))
    return await _whole(stream, first, shape, lang, request)


async def _events(
    stream: AsyncIterator[ChatDelta], first: ChatDelta | None, shape: _Shape,
    include_usage: bool, lang: str, role_chunk: bool,
) -> AsyncIterator[str]:
    last = first
    async with contextlib.aclosing(stream):
        try:
            if role_chunk:
                yield sse(shape.chunk(None, None, first=True))
            if first is not None:
                yield sse(shape.chunk(first.text, first.finish_reason))
            async for delta in stream:
                last = delta
                yield sse(shape.chunk(delta.text, delta.finish_reason))
        except UserError as exc:
            # Headers are sent already: report in the stream, as `vllm serve` does.
            yield sse(error_body(exc, lang))
    if include_usage:
        yield sse(shape.usage_chunk(last))
    yield sse("[DONE]")


async def _whole(
    stream: AsyncIterator[ChatDelta], first: ChatDelta | None, shape: _Shape, lang: str, request: Request
) -> Any:
    parts = [first.text] if first else []
    last = first

    async def collect() -> None:
        nonlocal last
        async with contextlib.aclosing(stream):
            async for delta in stream:
                parts.append(delta.text)
                last = delta

    # Nobody reads a non-streamed reply while it is made: watch the connection instead, so
    # a client that gives up frees its engine slot rather than waiting for max_tokens.
    collecting = asyncio.ensure_future(collect())
    hang_up = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((collecting, hang_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hang_up.cancel()
        if not collecting.done():
            collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collecting
    if collecting.cancelled():
        return JSONResponse({}, status_code=499)
    try:
        collecting.result()
    except UserError as exc:
        return error_response(exc, lang)
    return shape.whole("".join(parts), last)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
