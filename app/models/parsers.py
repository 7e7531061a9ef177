"""Which of vLLM's tool-call and reasoning parsers a model needs, as `vllm serve` would be told
with --tool-call-parser and --reasoning-parser: from its catalog entry, else from its
architecture where that says enough, else none. A setting can name them instead."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from app.config.settings import AUTO, EngineSettings
from app.errors import SettingsError
from app.models.catalog import CatalogEntry, find_entry

# Architectures whose chat template fixes the parsers. Qwen2ForCausalLM is Qwen2.5's (tools the
# Hermes way), but DeepSeek-R1's Qwen distills share it: their reasoning comes from the catalog.
# Llama's architecture is shared by versions that call tools differently, so it says nothing.
BY_ARCHITECTURE: dict[str, tuple[str, str]] = {
    "Qwen3ForCausalLM": ("hermes", "qwen3"),
    "Qwen3MoeForCausalLM": ("hermes", "qwen3"),
    "Qwen2ForCausalLM": ("hermes", ""),
}


@dataclass(frozen=True)
class Parsers:
    tool_call: str = ""
    reasoning: str = ""


def parsers_for(model: str, folder: Path | None, catalog: list[CatalogEntry]) -> Parsers:
    """The parsers the model's family needs ("" where none is known)."""
    entry = find_entry(catalog, model)
    if entry is not None:
        return Parsers(entry.tool_call_parser or "", entry.reasoning_parser or "")
    for architecture in _architectures(folder):
        if architecture in BY_ARCHITECTURE:
            return Parsers(*BY_ARCHITECTURE[architecture])
    return Parsers()


def with_parsers(
    settings: EngineSettings, model: str, folder: Path | None, catalog: list[CatalogEntry]
) -> EngineSettings:
    """`settings` with "auto" parsers resolved for this model; a parser the user named stays."""
    found = parsers_for(model, folder, catalog)
    return dataclasses.replace(
        settings,
        tool_call_parser=found.tool_call if settings.tool_call_parser == AUTO else settings.tool_call_parser,
        reasoning_parser=found.reasoning if settings.reasoning_parser == AUTO else settings.reasoning_parser,
    )


def tool_call_parser_names() -> list[str]:
    """The tool-call parsers this vLLM has, as `--tool-call-parser` takes them."""
    from vllm.tool_parsers import ToolParserManager

    return ToolParserManager.list_registered()


def reasoning_parser_names() -> list[str]:
    """The reasoning parsers this vLLM has, as `--reasoning-parser` takes them."""
    from vllm.reasoning import ReasoningParserManager

    return ReasoningParserManager.list_registered()


def check_parser_names(settings: EngineSettings) -> None:
    """A parser the user named must be one vLLM has: said before the engine starts, not after."""
    for name, value, known in (
        ("tool_call_parser", settings.tool_call_parser, tool_call_parser_names),
        ("reasoning_parser", settings.reasoning_parser, reasoning_parser_names),
    ):
        if value not in (AUTO, "") and value not in (choices := known()):
            raise SettingsError(
                "settings.bad_choice", name=name, value=value, choices=", ".join([AUTO, "none", *choices])
            )


def _architectures(folder: Path | None) -> list[str]:
    if folder is None:
        return []
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = config.get("architectures") if isinstance(config, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
