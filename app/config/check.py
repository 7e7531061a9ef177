"""Checking settings with pydantic: the bounds live on the fields (`Field(ge=, le=)`, `Literal`),
and one function turns pydantic's first complaint into the `settings.*` sentence a user reads.

The settings stay plain dataclasses (replaced, compared and saved as such everywhere); pydantic
validates them on request: `check()` an object as it is, `parse()` loose input (form strings,
floats for ints). The settings file's own strict, field-by-field reading is app.config.file's.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import annotated_types
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from app.errors import SettingsError

T = TypeVar("T")
# Fields whose refusal has a sentence of its own.
OWN_SENTENCES = {"stop": "settings.stop"}
# What a list of names must hold, where a name in it is wrong.
LIST_CHOICES = {"trusted_models": "model ids"}


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def check(settings: Any) -> None:
    """`SettingsError` with its sentence if any field of the dataclass is out of bounds."""
    try:
        _adapter(type(settings)).validate_python(dataclasses.asdict(settings))
    except ValidationError as exc:
        raise settings_error(type(settings), exc) from None


def parse(cls: type[T], values: Mapping[str, Any]) -> T:
    """Build `cls` from loose input (a form, JSON): unknown keys ignored, empty values left at
    their defaults, "0.5" a float, 256.0 an int; checked like `check`."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in values.items() if k in names and v is not None and v != ""}
    try:
        return _adapter(cls).validate_python(given)
    except ValidationError as exc:
        raise settings_error(cls, exc) from None


def web_url(value: str) -> str:
    """A mirror's address: http(s) with a host name."""
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("bad_url", "not a web address")
    return value


def lines(value: Any) -> Any:
    """A list typed into a text box: one item per line (commas are common inside stop strings)."""
    return [s for s in value.splitlines() if s.strip()] if isinstance(value, str) else value


def settings_error(cls: type, exc: ValidationError) -> SettingsError:
    """The sentence for pydantic's first complaint about `cls`."""
    error = exc.errors()[0]
    owner, name = _field_of(cls, error)
    value = error.get("input")
    if name in OWN_SENTENCES:
        return SettingsError(OWN_SENTENCES[name], value=value)
    kind = error["type"]
    if kind == "speculative":
        return SettingsError("settings.speculative", value=value)
    if kind == "bad_url":
        return SettingsError("settings.bad_url", name=name, value=value)
    if kind in ("literal_error", "enum"):
        return SettingsError("settings.bad_choice", name=name, value=value, choices=_choices(error))
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "finite_number"):
        return _out_of_bounds(owner, name, value)
    if name in LIST_CHOICES:
        return SettingsError("settings.bad_choice", name=name, value=value, choices=LIST_CHOICES[name])
    return SettingsError("settings.not_a_number", name=name, value=value)


def _field_of(cls: type, error: ErrorDetails) -> tuple[type, str]:
    """(the dataclass that owns the field, the field's name) for an error's location."""
    owner, name = cls, ""
    for part in error["loc"]:
        if not isinstance(part, str):
            break
        name = part
        hint = typing.get_type_hints(owner).get(part)
        if dataclasses.is_dataclass(hint):
            owner = hint  # type: ignore[assignment]
    return owner, name


def _out_of_bounds(cls: type, name: str, value: Any) -> SettingsError:
    """The sentence for a number outside the field's bounds, read from the field itself."""
    low = high = None
    excluded = False
    for meta in getattr(typing.get_type_hints(cls, include_extras=True).get(name), "__metadata__", ()):
        for item in getattr(meta, "metadata", [meta]):
            if isinstance(item, annotated_types.Ge):
                low = item.ge
            elif isinstance(item, annotated_types.Gt):
                low, excluded = item.gt, True
            elif isinstance(item, annotated_types.Le):
                high = item.le
    key = {
        (False, False): "settings.too_small",
        (False, True): "settings.out_of_range",
        (True, False): "settings.more_than",
        (True, True): "settings.more_than_at_most",
    }[(excluded, high is not None)]
    return SettingsError(key, name=name, value=value, low=low, high=high)


def _choices(error: ErrorDetails) -> str:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    return expected.replace("'", "").replace(" or ", ", ").replace("None", "none") or "?"
