"""The HTTP API adapter: OpenAI-compatible routes, the compatibility endpoint, access control."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app.api.compat import compat_router
from app.api.openai import openai_router
from app.api.security import Access, ApiKeyMiddleware, protects
from app.application import App
from app.metrics import RequestCounter


def install_api(http: FastAPI, app: App, access: Access) -> None:
    """Routes and middleware on the HTTP app; call before the UI is mounted at "/"."""
    http.include_router(openai_router(app))
    http.include_router(compat_router(app))
    endpoints = {route.path for route in http.routes if protects(getattr(route, "path", ""))}
    # Middleware added later wraps the earlier: counting sees the key check's 401s, and CORS
    # answers preflight requests (which carry no key) before either.
    # The key is read on every request, so a key changed in the settings applies at once.
    http.add_middleware(ApiKeyMiddleware, api_key=lambda: app.settings.api_key)
    http.add_middleware(RequestCounter, metrics=app.metrics, endpoints=endpoints, counted=protects)
    if access.allowed_origins:
        http.add_middleware(CORSMiddleware, allow_origins=list(access.allowed_origins),
                            allow_methods=["*"], allow_headers=["*"])
