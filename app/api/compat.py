"""POST /api/vllm/generate: the endpoint the vLLM integration guide's frontend calls, so
integrations written against that guide work with this app unchanged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from app.api.errors import http_status, parse_body, request_language
from app.application import App
from app.errors import UserError


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None


def compat_router(app: App) -> APIRouter:
    router = APIRouter(prefix="/api/vllm")

    @router.post("/generate")
    async def generate(request: Request) -> Any:
        lang = request_language(request)
        try:
            body = await parse_body(request, GenerateRequest)
            if not body.prompt.strip():
                raise UserError("api.no_prompt")
            sampling = app.engine.resolve_sampling(body.model_dump(exclude={"prompt"}, exclude_none=True))
            text = await _answer(app, body.prompt, sampling)
        except UserError as exc:
            return JSONResponse({"success": False, "error": exc.message(lang)}, status_code=http_status(exc))
        return {"success": True, "text": text}

    return router


async def _answer(app: App, prompt: str, sampling: Any) -> str:
    """The prompt as one user message; a model without a chat template continues it as text."""
    try:
        chat = [{"role": "user", "content": prompt}]
        return "".join([d.text async for d in app.engine.stream_chat(chat, sampling)])
    except UserError as exc:
        if exc.key != "engine.no_chat_template":
            raise
    return "".join([d.text async for d in app.engine.stream_completion(prompt, sampling)])
