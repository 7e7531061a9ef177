"""The i18n table as Gradio wants it, and the request's language for text sent from Python."""

from __future__ import annotations

import gradio as gr

from app.i18n import LANGUAGES, language_from_accept, table


def gradio_i18n() -> gr.I18n:
    return gr.I18n(**{lang: table(lang) for lang in LANGUAGES})


def request_language(request: gr.Request | None) -> str:
    """The browser's language, for strings Gradio does not translate (gr.Error, streamed text)."""
    if request is None:
        return "en"
    headers = getattr(request, "headers", None) or {}
    return language_from_accept(headers.get("accept-language"))
