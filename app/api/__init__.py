"""The HTTP API adapter: vLLM's OpenAI server for /v1, the compatibility endpoint, access control."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.compat import compat_router
from app.api.openai import ENDPOINTS, OpenAIServer, serves
from app.api.perimeter import protects
from app.api.security import ApiKeyMiddleware
from app.application import App
from app.config.access import Access
from app.metrics import RequestCounter


class ServedPaths:
    """Hands /v1, /tokenize and /detokenize to vLLM's server; the rest to the app's own routes."""

    def __init__(self, asgi: ASGIApp, server: OpenAIServer) -> None:
        self.asgi = asgi
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and serves(scope["path"]):
            await self.server(scope, receive, send)
        else:
            await self.asgi(scope, receive, send)


def install_api(http: FastAPI, app: App, access: Access) -> OpenAIServer:
    """Routes and middleware on the HTTP app; call before the UI is mounted at "/". Returns the
    OpenAI server, which the app closes at exit before the engine is unloaded."""
    server = OpenAIServer(app)
    http.include_router(compat_router(app))
    # Middleware added later wraps the earlier: the key check sees every API request and CORS
    # answers preflight requests (which carry no key) before it. CORS is always installed, empty
    # unless origins are allowed, so that nothing below it echoes an Origin; the perimeter
    # (see server.py, around all of this) lets allowed origins reach only the API.
    http.add_middleware(ServedPaths, server=server)
    http.add_middleware(ApiKeyMiddleware, api_key=access.api_key)
    http.add_middleware(CORSMiddleware, allow_origins=list(access.allowed_origins),
                        allow_methods=["*"], allow_headers=["*"])
    return server


def count_requests(http: FastAPI, app: App) -> None:
    """Count API requests by endpoint and status, the perimeter's refusals included: call last."""
    endpoints = {*ENDPOINTS, *(route.path for route in http.routes if protects(getattr(route, "path", "")))}
    http.add_middleware(RequestCounter, metrics=app.metrics, endpoints=endpoints, counted=protects)
