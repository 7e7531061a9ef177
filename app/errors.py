"""Errors a user is meant to read.

The core raises `UserError` with a message key from the i18n table and its
parameters, never a finished sentence: each adapter (UI, API, CLI) renders it
in its own user's language.
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A failure explained by one translatable sentence (what happened, what to do)."""

    def __init__(self, key: str, **params: Any) -> None:
        self.key = key
        self.params = params
        super().__init__(self.message("en"))

    def message(self, lang: str = "en") -> str:
        from app.i18n import translate

        return translate(self.key, lang, **self.params)


class SettingsError(UserError):
    """A setting outside its allowed range."""


class EngineError(UserError):
    """The engine could not load a model or serve a request."""
