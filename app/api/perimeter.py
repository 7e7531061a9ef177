"""The one perimeter in front of everything the server answers: the page and its own API, /v1,
/api, /metrics, /healthz and static files.

Any web page the user visits can send requests to 127.0.0.1; a DNS-rebinding page can even read
the answers, since to the browser its own name now points here. So, before Gradio or FastAPI
sees a request:
- the Host header must name this computer's loopback, the bound address or an allowed host
  (a rebinding page sends its own name);
- an Origin, when present, must be the app's own, or, on /v1 and /api only, one allowed by
  --allowed-origins (browsers send Origin on every cross-site POST, queue joins included);
- /v1 and /api take JSON bodies only (a cross-site text/plain POST needs no preflight), of
  bounded size and nesting;
- failed logins are throttled per client;
- every page answer carries a Content-Security-Policy that keeps replies from loading images
  or posting forms elsewhere (a prompt-injected reply could otherwise send the chat away).

A plain ASGI middleware, so streamed replies pass through untouched and client disconnects
still reach them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.errors import UserError
from app.i18n import language_from_accept

# The API's own paths: JSON bodies only, CORS for allowed origins, the API key.
PROTECTED_PREFIXES = ("/v1", "/api", "/tokenize", "/detokenize")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A whole chat with a long context fits many times over; more is a mistake or an attack.
MAX_BODY_BYTES = 16 * 2**20
# Real requests (tool schemas included) nest a dozen levels; parsers recurse per level.
MAX_JSON_DEPTH = 64
LOGIN_PATH = "/login"
# Schemas describe every endpoint to whoever asks; the page's "Use via API" needs neither.
HIDDEN_PATHS = frozenset({"/openapi.json", "/gradio_api/openapi.json"})
LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 60.0
# Gradio's page needs inline scripts and styles; nothing may come from, or go to, another host.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "frame-src 'self'",
        "frame-ancestors 'self'",
        "form-action 'self'",
        "object-src 'none'",
        "base-uri 'self'",
    )
)
_SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


@dataclass(frozen=True)
class PerimeterRules:
    """Who may reach the server this run: bound address, extra host names and CORS origins."""

    bind_host: str = "127.0.0.1"
    allowed_hosts: Collection[str] = ()
    allowed_origins: Collection[str] = ()
    max_body_bytes: int = MAX_BODY_BYTES

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        if name is None:
            return False
        if name in LOOPBACK_NAMES or name == self.bind_host.lower().strip("[]"):
            return True
        if name in {h.lower() for h in self.allowed_hosts}:
            return True
        # Bound to every interface, any of this computer's addresses is a fair Host. An IP
        # literal cannot be a rebinding attack: that needs the attacker's own name in Host.
        return self.bind_host in WILDCARD_BINDS and _is_ip(name)

    def origin_allowed(self, origin: str, host: str, api: bool) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if same_origin(origin, host):
            return True
        return api and origin in {o.rstrip("/").lower() for o in self.allowed_origins}


def host_name(host: str) -> str | None:
    """The name in a Host header, without port or brackets; None if the header is malformed."""
    host = host.strip().lower()
    if not host:
        return None
    try:
        parts = urlsplit(f"//{host}")
        name = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return None
    if not name or parts.username is not None or parts.path:
        return None
    return name.rstrip(".")


def same_origin(origin: str, host: str) -> bool:
    """The Origin is this server as the browser reached it (scheme http, same host and port)."""
    try:
        parts = urlsplit(origin)
        theirs = (parts.hostname, parts.port or 80)
        ours = urlsplit(f"//{host.strip().lower()}")
        return parts.scheme == "http" and theirs == (ours.hostname, ours.port or 80)
    except ValueError:
        return False


def json_depth(body: bytes) -> int:
    """How deeply the JSON nests, counted over brackets outside strings (no recursion)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_JSON_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def protects(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PROTECTED_PREFIXES)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class LoginThrottle:
    """Failed logins per client: after LOGIN_FAILURES within LOGIN_WINDOW_S, refused until the
    oldest of them is a window old."""

    def __init__(
        self,
        failures: int = LOGIN_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures, self.window_s, self.clock = failures, window_s, clock
        self._seen: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int:
        """Seconds until `client` may try again; 0 if it may now."""
        now = self.clock()
        self._forget_before(now - self.window_s)
        times = self._seen.get(client)
        if not times or len(times) < self.failures:
            return 0
        return max(1, int(times[0] + self.window_s - now + 0.999))

    def failed(self, client: str) -> None:
        self._seen.setdefault(client, deque()).append(self.clock())

    def _forget_before(self, cutoff: float) -> None:
        for client in list(self._seen):
            times = self._seen[client]
            while times and times[0] < cutoff:
                times.popleft()
            if not times:
                del self._seen[client]


class Perimeter:
    """The outermost ASGI middleware; see the module's docstring for what it refuses."""

    def __init__(self, asgi: ASGIApp, rules: PerimeterRules) -> None:
        self.asgi = asgi
        self.rules = rules
        self.logins = LoginThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.asgi(scope, receive, send)
            return
        headers = Headers(scope=scope)
        lang = language_from_accept(headers.get("accept-language"))
        path, api = scope["path"], protects(scope["path"])
        refusal = self._refusal(scope, headers, api)
        if refusal is not None:
            await _refuse(scope, receive, send, refusal, lang, api)
            return
        if scope["type"] == "websocket":
            await self.asgi(scope, receive, send)
            return
        send = _with_security_headers(send)
        if path in HIDDEN_PATHS:
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
        elif path == LOGIN_PATH and scope["method"] == "POST":
            await self._login(scope, receive, send, lang)
        elif api and scope["method"] in STATE_CHANGING:
            await self._api_body(scope, receive, send, headers, lang)
        else:
            await self.asgi(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers, api: bool) -> tuple[UserError, int] | None:
        host = headers.get("host", "")
        if not self.rules.host_allowed(host):
            return UserError("api.foreign_host", host=host[:100]), 403
        origin = headers.get("origin")
        if origin is not None and not self.rules.origin_allowed(origin, host, api):
            return UserError("api.foreign_origin", origin=origin[:100]), 403
        if api and scope["type"] == "http" and scope["method"] in STATE_CHANGING:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                return UserError("api.not_json"), 415
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.rules.max_body_bytes:
                return UserError("api.too_large", limit=self.rules.max_body_bytes // 2**20), 413
        return None

    async def _login(self, scope: Scope, receive: Receive, send: Send, lang: str) -> None:
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.logins.retry_after(client)
        if wait:
            response = _sentence(UserError("api.login_throttled", seconds=wait), lang, 429)
            response.headers["Retry-After"] = str(wait)
            await response(scope, receive, send)
            return

        async def note_failure(message: Message) -> None:
            # Gradio answers a wrong user or password with 400 (and 401 where it has none).
            if message["type"] == "http.response.start" and message["status"] in (400, 401):
                self.logins.failed(client)
            await send(message)

        await self.asgi(scope, receive, note_failure)

    async def _api_body(self, scope: Scope, receive: Receive, send: Send, headers: Headers, lang: str) -> None:
        """Read the whole body within the limit and check it is JSON of sane depth, then hand it
        on; later receives (the client hanging up) go to the server as before."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.rules.max_body_bytes:
                error = UserError("api.too_large", limit=self.rules.max_body_bytes // 2**20)
                await error_response(error, lang, status=413)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = _json_problem(body)
        if problem is not None:
            await error_response(problem, lang, status=400)(scope, receive, send)
            return
        await self.asgi(scope, replay(body, receive), send)


def _json_problem(body: bytes) -> UserError | None:
    # No more opening brackets than the limit (in strings or not) cannot nest deeper than it:
    # most requests, counted far faster than they are scanned.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        return UserError("api.too_deep", depth=MAX_JSON_DEPTH)
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return UserError("api.bad_json")
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives the whole `body` first, then whatever the client sends next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _with_security_headers(send: Send) -> Callable[[Message], Awaitable[None]]:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(name, value) for name, value in _SECURITY_HEADERS if name not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


def _sentence(error: UserError, lang: str, status: int) -> Response:
    return PlainTextResponse(error.message(lang), status_code=status)


async def _refuse(
    scope: Scope, receive: Receive, send: Send, refusal: tuple[UserError, int], lang: str, api: bool
) -> None:
    error, status = refusal
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": error.message(lang)[:120]})
        return
    response = error_response(error, lang, status=status) if api else _sentence(error, lang, status)
    await response(scope, receive, send)
