"""The i18n table as Gradio wants it, the request's language for text sent from Python, and
messages for the user raised as errors."""

from __future__ import annotations

from typing import Any

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


def shown_error(message: str) -> gr.Error:
    """An error shown to the user in the page. It is an answer (a refused message, a bad file),
    not a fault: Gradio would otherwise print its stack trace in the console."""
    return gr.Error(message, print_exception=False)


def field(kind: type, i18n: gr.I18n, name: str, value: Any, info: bool = False, **kwargs: Any) -> Any:
    """An input labelled from `settings_ui.<name>` (and `settings_ui.<name>_info`)."""
    if info:
        kwargs["info"] = i18n(f"settings_ui.{name}_info")
    return kind(value=value, label=i18n(f"settings_ui.{name}"), **kwargs)
