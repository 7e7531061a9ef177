"""Who may use the server: the API key on /v1 and /api, CORS, UI credentials, and the
refusal to open an unprotected server to the network."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.openai import error_response
from app.errors import UserError
from app.i18n import language_from_accept

PROTECTED_PREFIXES = ("/v1", "/api")


@dataclass(frozen=True)
class Access:
    """Start-time access settings (the API key is a saved setting, read on every request)."""

    ui_auth: tuple[str, str] | None = None
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def from_flags(cls, auth: str | None, allowed_origins: str | None) -> Access:
        return cls(
            ui_auth=parse_ui_auth(auth) if auth is not None else None,
            allowed_origins=tuple(o.strip() for o in (allowed_origins or "").split(",") if o.strip()),
        )


def parse_ui_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise UserError("api.bad_auth", value=value)
    return user, password


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A host name other than localhost may resolve to any interface: treat it as exposed.
        return False


def check_exposure(host: str, api_key: str | None, ui_auth: tuple[str, str] | None) -> None:
    """A LAN must never get an open model server by accident."""
    if not is_loopback(host) and not (api_key and ui_auth):
        raise UserError("api.exposed", host=host)


def protects(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PROTECTED_PREFIXES)


class ApiKeyMiddleware:
    """Bearer key on /v1 and /api, compared in constant time. A plain ASGI middleware, so
    streamed replies pass through untouched and client disconnects still reach them."""

    def __init__(self, asgi: ASGIApp, api_key: Callable[[], str | None]) -> None:
        self.asgi = asgi
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.api_key()
        if scope["type"] == "http" and key and protects(scope["path"]):
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + key.encode()):
                lang = language_from_accept(headers.get(b"accept-language", b"").decode("latin-1"))
                response = error_response(UserError("api.unauthorized"), lang, status=401)
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.asgi(scope, receive, send)
