"""The one table of engine fields: which `EngineSettings` fields are `vllm serve` flags of the
same name, which go to vLLM's `AsyncEngineArgs`, and how. The command line and the engine
arguments are built from it, so a field is added in one place.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from app.config.settings import EngineSettings


class Passed:
    """How a field reaches AsyncEngineArgs."""

    ALWAYS = "always"
    WHEN_SET = "when set"  # None (or "") leaves vLLM's own default
    NEVER = "never"  # the app's own (parsers for the served API, the CPU KV cache)


@dataclass(frozen=True)
class EngineField:
    name: str
    passed: str = Passed.ALWAYS
    flag: bool = True  # --name-with-dashes, as `vllm serve` spells it
    help: str | None = None
    # A text flag where "none" means "off" (stored as ""): the parsers.
    none_is_off: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


ENGINE_FIELDS = (
    EngineField("dtype"),
    EngineField("gpu_memory_utilization"),
    EngineField("max_model_len"),
    EngineField("quantization"),
    EngineField("tensor_parallel_size"),
    EngineField("enforce_eager"),
    EngineField("max_num_seqs", Passed.WHEN_SET),
    EngineField("max_num_batched_tokens", Passed.WHEN_SET),
    EngineField("enable_chunked_prefill", Passed.WHEN_SET),
    EngineField("load_format", help="dummy: random weights of the model's shape, for benchmarks (replies are noise)"),
    EngineField("trust_remote_code", help="run Python code shipped with the model (only for models you trust)"),
    # As `vllm serve --reasoning-parser`: a JSON schema then applies to the answer, after the thinking.
    EngineField(
        "reasoning_parser",
        Passed.WHEN_SET,
        help="vLLM's reasoning parser, as for vllm serve (default: auto, from the model; none: reasoning "
        "stays in the text)",
        none_is_off=True,
    ),
    EngineField(
        "tool_call_parser",
        Passed.NEVER,
        help="vLLM's tool-call parser, as for vllm serve (default: auto, from the model; none: no tool calls)",
        none_is_off=True,
    ),
    # Resolved for the model ("auto") and passed by app.engine.build.
    EngineField(
        "speculative_config",
        Passed.NEVER,
        help="speculative decoding, as for vllm serve: JSON such as "
        '\'{"method": "ngram", "num_speculative_tokens": 3}\' (method "auto": MTP where the model has it, '
        "else n-gram); none: off",
        none_is_off=True,
    ),
    # The CPU build's KV cache, in GiB: becomes kv_cache_memory_bytes on CPU (app.engine.build).
    EngineField("cpu_kv_cache_gib", Passed.NEVER, flag=False),
)


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field that is a `vllm serve` flag; unset flags are None (the saved value stays)."""
    hints = typing.get_type_hints(EngineSettings)
    for f in ENGINE_FIELDS:
        if not f.flag:
            continue
        kind, choices = _base_type(hints[f.name])
        if kind is bool:
            parser.add_argument(f.option, action=argparse.BooleanOptionalAction, default=None, help=f.help)
        else:
            parser.add_argument(f.option, type=kind, choices=choices, help=f.help)


def engine_flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The engine fields given on this command line."""
    values = {}
    for f in ENGINE_FIELDS:
        value = getattr(args, f.name, None) if f.flag else None
        if value is None:
            continue
        values[f.name] = "" if f.none_is_off and value.lower() == "none" else value
    return values


def engine_arg_values(settings: EngineSettings) -> dict[str, Any]:
    """The fields that go to AsyncEngineArgs under their own names."""
    values = {}
    for f in ENGINE_FIELDS:
        value = getattr(settings, f.name)
        if f.passed == Passed.ALWAYS or (f.passed == Passed.WHEN_SET and value not in (None, "")):
            values[f.name] = value
    return values


def _base_type(hint: Any) -> tuple[type, list[str] | None]:
    """(the flag's value type, its choices) from a field's annotation."""
    for inner in _unwrap(hint):
        if typing.get_origin(inner) is Literal:
            return str, [c for c in typing.get_args(inner) if c is not None]
        if inner in (bool, int, float, str):
            return inner, None
    raise TypeError(f"no flag type for {hint!r}")


def _unwrap(hint: Any) -> Iterator[Any]:
    """The types inside Annotated[...] and X | None."""
    if typing.get_origin(hint) is typing.Annotated:
        yield from _unwrap(typing.get_args(hint)[0])
    elif typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is not type(None):
                yield from _unwrap(arg)
    else:
        yield hint
