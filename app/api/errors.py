"""Errors in the API's own JSON shape (the one `vllm serve` uses), in the caller's language."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from app.errors import UserError
from app.i18n import language_from_accept

_Body = TypeVar("_Body", bound=BaseModel)

# The language of the API request being answered, for sentences made where the request's headers
# are out of reach (inside vLLM's server: the media connector). Set around each /v1 request.
CALLER_LANGUAGE: ContextVar[str] = ContextVar("caller_language", default="en")

# Anything not listed is a mistake in the request (400), as `vllm serve` treats it.
_STATUS_BY_KEY = {
    "api.unauthorized": 401,
    "api.model_not_found": 404,
    "api.model_needs_own_code": 403,
    "engine.pool_no_room": 503,
    "engine.pool_too_many": 503,
    "remote.unknown_model": 404,
    "engine.no_model": 503,
    "engine.still_loading": 503,
    "engine.dead": 503,
    "engine.died": 503,
    "engine.died_twice": 503,
    "engine.not_ready": 503,
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
    403: "PermissionDeniedError",
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
