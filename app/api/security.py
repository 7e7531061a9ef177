"""The API key on /v1 and /api (who may call the API is this run's `Access`)."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.api.perimeter import protects
from app.errors import UserError
from app.i18n import language_from_accept


def bearer_matches(header: bytes, key: str) -> bool:
    """`Authorization: Bearer KEY`, the scheme in any case (RFC 7235), compared in constant time."""
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), key.encode())


class ApiKeyMiddleware:
    """Bearer key on /v1 and /api, compared in constant time. A plain ASGI middleware, so
    streamed replies pass through untouched and client disconnects still reach them."""

    def __init__(self, asgi: ASGIApp, api_key: str | None) -> None:
        self.asgi = asgi
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.api_key
        if scope["type"] == "http" and key and protects(scope["path"]):
            headers = dict(scope["headers"])
            if not bearer_matches(headers.get(b"authorization", b""), key):
                lang = language_from_accept(headers.get(b"accept-language", b"").decode("latin-1"))
                response = error_response(UserError("api.unauthorized"), lang, status=401)
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.asgi(scope, receive, send)
