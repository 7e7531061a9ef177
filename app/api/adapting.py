"""What the app changes between an API client and vLLM's server on /v1, for the clients people
point at it (coding agents speaking the Anthropic API, the `llm` CLI with tools):

- vLLM refuses tools for a model without a tool-call parser naming `vllm serve` flags
  (--enable-auto-tool-choice) the app does not have: the answer says where the app sets one;
- with the setting `api_fit_max_tokens`, a `max_tokens` longer than the model's whole context is
  lowered to it instead of refused (vLLM itself then lowers it to the room the prompt leaves),
  for agents that ask 32,000 tokens whatever the model. Off by default, as in `vllm serve`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from app.api.perimeter import replay
from app.i18n import translate

# Where each endpoint takes the reply's length.
LENGTH_FIELDS = {
    "/v1/chat/completions": ("max_tokens", "max_completion_tokens"),
    "/v1/completions": ("max_tokens",),
    "/v1/messages": ("max_tokens",),
    "/v1/responses": ("max_output_tokens",),
}
# vLLM 0.32's refusals (vllm/renderers/online_renderer.py), and the tool choice each names.
_NO_PARSER = (
    (re.compile(r'^"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set$'), '"auto"'),
    (re.compile(r"^tool_choice=(.+) requires --tool-call-parser to be set$"), None),
)
# vLLM's error answers are a few hundred bytes: anything longer is not one of them.
MAX_ERROR_BYTES = 64 * 1024


def fits_length(path: str) -> bool:
    return path in LENGTH_FIELDS


async def fitted_request(scope: Scope, receive: Receive, max_model_len: int) -> tuple[Scope, Receive]:
    """The request with every length field above `max_model_len` lowered to it. The perimeter
    has already read the body within its limit."""
    body = await Request(scope, receive).body()
    try:
        data = json.loads(body or b"null")
    except ValueError:
        # Not JSON after all (the perimeter checks POST bodies only): vLLM says what is wrong.
        return scope, replay(body, receive)
    fields = [
        f for f in LENGTH_FIELDS[scope["path"]] if isinstance(data, dict) and _too_long(data.get(f), max_model_len)
    ]
    if not fields:
        return scope, replay(body, receive)
    body = json.dumps({**data, **dict.fromkeys(fields, max_model_len)}).encode()
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}, replay(body, receive)


def _too_long(value: Any, max_model_len: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > max_model_len


def in_app_words(send: Send, lang: str) -> Callable[[Message], Awaitable[None]]:
    """`send` with vLLM's refusal of tools without a parser reworded (OpenAI and Anthropic
    shapes alike); every other answer passes unchanged, streams as they come."""
    held: Message | None = None

    async def sending(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        start, held = held, None
        body = message.get("body", b"")
        if not message.get("more_body") and len(body) <= MAX_ERROR_BYTES:
            reworded = _reworded(body, lang)
            if reworded is not None:
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                start = {**start, "headers": [*headers, (b"content-length", str(len(reworded)).encode())]}
                message = {**message, "body": reworded}
        await send(start)
        await send(message)

    return sending


def _reworded(body: bytes, lang: str) -> bytes | None:
    try:
        data = json.loads(body)
        error = data["error"]
        text = error["message"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    for pattern, choice in _NO_PARSER:
        if found := pattern.match(text):
            error["message"] = translate("api.tools_need_parser", lang, choice=choice or found.group(1))
            return json.dumps(data, ensure_ascii=False).encode()
    return None
