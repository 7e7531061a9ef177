"""Which model a /v1 request is for, and the list of models the app can serve.

A request names its model in its JSON body's "model"; the app reads the body once (the
perimeter has already read it within its limit) and hands the same bytes on. LM Studio's `ttl`
(seconds a model loaded for it may stay idle) is taken out there: vLLM's server would refuse
an unknown field in some endpoints and ignores it in others.

/v1/models lists the engine pool's members, as each member's vLLM server describes itself
(max_model_len, root, LoRA adapters), then the models on this computer that a request may load
by naming them; each entry has a "status" (loaded, loading, asleep, failed, unloaded).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope

from app.api.perimeter import replay
from app.application import App
from app.engine.pool import Member, MemberState
from app.models.cache import CachedModel, ModelStore, list_cached
from app.models.fit import read_config


@dataclass(frozen=True)
class ModelAsk:
    """What a request says about its model."""

    name: str | None = None
    ttl_s: float | None = None


async def asked_model(scope: Scope, receive: Receive) -> tuple[Scope, Receive, ModelAsk]:
    """The request (with `ttl` taken out of its body) and the model it names. Only a JSON object
    body is read for a name; anything else goes on as it came, for vLLM to answer."""
    if scope["method"] != "POST":
        return scope, receive, ModelAsk()
    body = await Request(scope, receive).body()
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return scope, replay(body, receive), ModelAsk()
    if not isinstance(data, dict):
        return scope, replay(body, receive), ModelAsk()
    name = data.get("model") if isinstance(data.get("model"), str) and data.get("model") else None
    ttl = data.get("ttl")
    if "ttl" not in data:
        return scope, replay(body, receive), ModelAsk(name)
    body = json.dumps({k: v for k, v in data.items() if k != "ttl"}).encode()
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    valid_ttl = isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0
    return scope, replay(body, receive), ModelAsk(name, float(ttl) if valid_ttl else None)


def not_found(name: str, aliases: list[str]) -> JSONResponse:
    """vLLM's own answer for a model it does not serve (vllm/entrypoints/serve/engine/serving.py)."""
    message = f"The model `{name}` does not exist. Valid aliases: {', '.join(aliases)}."
    body = {"error": {"message": message, "type": "NotFoundError", "param": "model", "code": 404}}
    return JSONResponse(body, status_code=404)


def cached_models(app: App) -> list[CachedModel]:
    """The complete models in the app's model cache (Hugging Face cache and ModelScope folder)."""
    return [m for m in list_cached(ModelStore.for_app(app.paths)) if m.path is not None]


def needs_own_code(model: CachedModel) -> bool:
    try:
        return "auto_map" in read_config(model.path)
    except (OSError, ValueError):
        return False


async def find_cached(app: App, name: str) -> CachedModel | None:
    models = await asyncio.to_thread(cached_models, app)
    return next((m for m in models if m.repo_id == name), None)


async def models_list(app: App, served: Callable[[Member], Awaitable[ASGIApp | None]]) -> dict[str, Any]:
    """Every model the app can serve, members first, each with its "status"."""
    data: list[dict[str, Any]] = []
    for member in app.pool.members():
        if member.state == MemberState.UNLOADED:
            continue
        app_of_member = await served(member) if member.state == MemberState.LOADED else None
        cards = await _cards(app_of_member) if app_of_member is not None else [_card(member.name)]
        data += [{**card, "status": member.state.value} for card in cards]
    listed = {card["id"] for card in data}
    for model in await asyncio.to_thread(cached_models, app):
        if model.repo_id not in listed:
            data.append({**_card(model.repo_id, int(model.last_used)), "status": MemberState.UNLOADED.value})
    return {"object": "list", "data": data}


def _card(name: str, created: float | None = None) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created or time.time()), "owned_by": "vllm-chat"}


async def _cards(served: ASGIApp) -> list[dict[str, Any]]:
    """A member's own /v1/models entries, asked of its vLLM server in-process."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/models",
        "raw_path": b"/v1/models",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    chunks: list[bytes] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await served(scope, receive, send)
    try:
        return json.loads(b"".join(chunks))["data"]
    except (ValueError, KeyError, TypeError):
        return []
