"""The one table of user-facing strings, zh-CN and en.

Strings live in `assets/locales/<lang>/<area>.toml`; a key is `<area>.<name>`.
Each area (chat, models, engine, doctor, ...) has its own file so the table stays
readable, but there is one namespace and one loader for the UI, API and CLI.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "zh-CN")
LOCALES_DIR = Path(__file__).resolve().parent.parent / "assets" / "locales"


@functools.cache
def table(lang: str) -> dict[str, str]:
    """All strings of one language, flattened to `area.name` keys."""
    strings: dict[str, str] = {}
    for path in sorted((LOCALES_DIR / lang).glob("*.toml")):
        area = path.stem
        with path.open("rb") as f:
            for name, text in tomllib.load(f).items():
                strings[f"{area}.{name}"] = text
    return strings


def normalize_language(lang: str | None) -> str:
    """Map a browser or system language tag (zh, zh_CN.UTF-8, zh-Hans, en-US, ...) to a table."""
    if lang and lang.replace("_", "-").lower().startswith("zh"):
        return "zh-CN"
    return "en"


def translate(key: str, lang: str | None = "en", **params: Any) -> str:
    lang = normalize_language(lang)
    text = table(lang).get(key) or table("en").get(key) or key
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        return text


def language_from_accept(header: str | None) -> str:
    """The first language of an HTTP Accept-Language header."""
    if not header:
        return "en"
    return normalize_language(header.split(",")[0].split(";")[0].strip())
