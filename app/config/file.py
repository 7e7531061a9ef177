"""The settings file, settings.json in the config folder: read field by field, saved atomically.

A wrong field must not break the app in odd places later (a string "false" where a boolean
belongs would count as true, a number as the API key would fail every request): each field is
checked for its type (pydantic, strict) and its range. A wrong one falls back to its default and
is named at start; the rest is kept; the file as it was is kept aside under a timestamped name
that is never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.config.settings import FALLBACK_SAMPLING, AppPaths, AppSettings, EngineSettings, SamplingSettings
from app.errors import SettingsError
from app.files import write_private
from app.i18n import translate

# 1: every sampling field saved, sent only where it differed from the app's defaults.
# 2: only the sampling fields the user set are saved; run-only flags are never saved.
SETTINGS_VERSION = 2
# Saved by version 1, now this run's flags only: a key or an exposed host must not stay in a file.
RUN_ONLY_KEYS = ("host", "port", "api_key")
ENGINE_RUN_ONLY_KEYS = ("load_format", "trust_remote_code")
WHOLE_FILE = "*"


@dataclass(frozen=True)
class LoadedSettings:
    settings: AppSettings
    # Fields that were wrong and now use their defaults ("*": the whole file).
    bad_fields: tuple[str, ...] = ()
    set_aside: Path | None = None

    def message(self, lang: str) -> str | None:
        """One sentence for the terminal at start, or None if the file was fine."""
        if not self.bad_fields:
            return None
        if self.bad_fields == (WHOLE_FILE,):
            return translate("settings.file_unreadable", lang, path=self.set_aside)
        return translate("settings.file_repaired", lang, fields=", ".join(self.bad_fields), path=self.set_aside)


def load_settings(paths: AppPaths) -> AppSettings:
    return read_settings(paths).settings


def read_settings(paths: AppPaths) -> LoadedSettings:
    """The saved settings, with defaults for whatever is missing or wrong."""
    path = paths.settings_file
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return LoadedSettings(AppSettings())
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raw = None
    if not isinstance(raw, dict):
        aside = _set_aside(path, text)
        save_settings(AppSettings(), paths)
        return LoadedSettings(AppSettings(), (WHOLE_FILE,), aside)
    bad: list[str] = []
    settings = _settings_from(raw, bad)
    aside = _set_aside(path, text) if bad else None
    if bad or raw.get("version") != SETTINGS_VERSION or _has_run_only_keys(raw):
        # Rewritten clean: an old key, host or trust flag leaves the file now.
        save_settings(settings, paths)
    return LoadedSettings(settings, tuple(bad), aside)


def save_settings(settings: AppSettings, paths: AppPaths) -> None:
    """Write atomically (a crash mid-write never leaves half a file), 0600."""
    data = dataclasses.asdict(settings)
    for key in ENGINE_RUN_ONLY_KEYS:
        del data["engine"][key]
    data["sampling"] = settings.sampling.chosen()
    write_private(paths.settings_file, json.dumps({"version": SETTINGS_VERSION, **data}, indent=2, ensure_ascii=False))


def _settings_from(raw: dict[str, Any], bad: list[str]) -> AppSettings:
    sampling = raw.get("sampling", {})
    if raw.get("version", 1) == 1 and isinstance(sampling, dict):
        # Version 1 sent only what differed from the defaults: keep exactly that.
        sampling = {k: v for k, v in sampling.items() if k in FALLBACK_SAMPLING and v != FALLBACK_SAMPLING[k]}
    engine = _section(EngineSettings, raw.get("engine", {}), "engine.", bad, skip=ENGINE_RUN_ONLY_KEYS)
    top = _fields(AppSettings, raw, bad, skip=("engine", "sampling"))
    return AppSettings(**top, engine=engine, sampling=_section(SamplingSettings, sampling, "sampling.", bad))


def _section(cls: type, raw: Any, prefix: str, bad: list[str], skip: tuple[str, ...] = ()) -> Any:
    if not isinstance(raw, dict):
        bad.append(prefix.rstrip("."))
        return cls()
    return cls(**_fields(cls, raw, bad, prefix=prefix, skip=skip))


def _fields(
    cls: type, raw: dict[str, Any], bad: list[str], prefix: str = "", skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The fields of `cls` in `raw` that have the right type and value; the others go to `bad`."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw or f.name in skip or dataclasses.is_dataclass(hints[f.name]):
            continue
        try:
            value = TypeAdapter(hints[f.name]).validate_python(raw[f.name], strict=True)
            # The other fields at their (valid) defaults: an error here is this field's.
            cls(**{f.name: value}).validate()
        except (ValidationError, SettingsError, TypeError, ValueError):
            bad.append(prefix + f.name)
            continue
        values[f.name] = value
    return values


def _has_run_only_keys(raw: dict[str, Any]) -> bool:
    engine = raw.get("engine")
    return any(k in raw for k in RUN_ONLY_KEYS) or (
        isinstance(engine, dict) and any(k in engine for k in ENGINE_RUN_ONLY_KEYS)
    )


def _set_aside(path: Path, text: bytes) -> Path:
    """A private copy of the file as it was, under a name no earlier copy has."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        aside = path.with_name(f"{path.name}.bad-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(text)
        return aside
    raise OSError(f"no free name for a copy of {path}")
