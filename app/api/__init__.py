"""The HTTP API adapter: OpenAI-compatible routes, the compatibility endpoint, access control."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app.access import Access
from app.api.compat import compat_router
from app.api.openai import openai_router
from app.api.perimeter import protects
from app.api.security import ApiKeyMiddleware
from app.application import App
from app.metrics import RequestCounter


def install_api(http: FastAPI, app: App, access: Access) -> None:
    """Routes and middleware on the HTTP app; call before the UI is mounted at "/"."""
    http.include_router(openai_router(app))
    http.include_router(compat_router(app))
    endpoints = {route.path for route in http.routes if protects(getattr(route, "path", ""))}
    # Middleware added later wraps the earlier: counting sees the key check's 401s, and CORS
    # answers preflight requests (which carry no key) before either. CORS is always installed,
    # empty unless origins are allowed, so that nothing below it echoes an Origin; the
    # perimeter (outermost, see server.py) lets allowed origins reach only /v1 and /api.
    http.add_middleware(ApiKeyMiddleware, api_key=access.api_key)
    http.add_middleware(RequestCounter, metrics=app.metrics, endpoints=endpoints, counted=protects)
    http.add_middleware(CORSMiddleware, allow_origins=list(access.allowed_origins),
                        allow_methods=["*"], allow_headers=["*"])
