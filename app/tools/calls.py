"""Tool calls in a reply, as vLLM's server finds them, and what goes back to the model.

The tools go to the model in OpenAI's function shape, rendered by its chat template. A reply is
read with vLLM's tool-call parser for the model's family (`ToolParserManager`, the parser
`vllm serve --tool-call-parser` would use); a forced call (`tool_choice="required"`) is generated
under vLLM's own JSON schema of the tools and read as that JSON, as vLLM's server does. Arguments
are checked against the tool's JSON schema before anything runs: an invented tool or invalid
arguments go back to the model as a tool error, as other MCP hosts do.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import jsonschema

from app.i18n import translate

# Where vLLM's tool-call parsers keep the text that opens a family's calls (<tool_call> for Hermes
# and Qwen, <|python_tag|> for Llama 3, DeepSeek's begin tokens, ...).
_START_MARKER_ATTRIBUTES = ("tool_calls_start_token", "tool_call_start_token", "bot_token", "bot_string", "tc_start")
# A result is cut to leave room in the context for the reply that reads it.
REPLY_RESERVE_TOKENS = 256
_FUNCTION_NAME_OUTSIDE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class OfferedTool:
    """A tool the model is offered, and the server that runs it."""

    server: str
    name: str  # as the model sees it (see `offered_name`)
    description: str
    input_schema: dict[str, Any]
    tool: str = ""  # the server's own name for it, where that differs from `name`

    @property
    def server_tool(self) -> str:
        return self.tool or self.name

    def as_openai(self) -> dict[str, Any]:
        schema = self.input_schema or {"type": "object", "properties": {}}
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }


def offered_name(server: str, tool: str, shared: bool) -> str:
    """The name the model is given: the tool's own, or, for a name several servers offer, the
    server's name before it (`files_search`, `web_search`), in the characters and length OpenAI's
    function names allow, so that the model can tell them apart and each call reaches its server."""
    if not shared:
        return tool
    return _FUNCTION_NAME_OUTSIDE.sub("_", f"{server}_{tool}")[:64]


@dataclass(frozen=True)
class ParsedCall:
    call_id: str
    name: str
    arguments: str  # JSON text as the model wrote it


def required_schema(tools: list[OfferedTool]) -> dict[str, Any]:
    """vLLM's JSON schema for `tool_choice="required"` (one call at a time)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionToolsParam
    from vllm.tool_parsers.utils import get_json_schema_from_tools

    params = [ChatCompletionToolsParam.model_validate(t.as_openai()) for t in tools]
    schema = get_json_schema_from_tools("required", params, parallel_tool_calls=False)
    assert isinstance(schema, dict)
    return schema


def parse_forced(text: str) -> tuple[str, list[ParsedCall]]:
    """A reply generated under `required_schema`: a JSON list of {name, parameters}."""
    try:
        items = json.loads(text)
    except ValueError:
        return text, []
    if not isinstance(items, list):
        return text, []
    calls = [
        ParsedCall(_call_id(), str(item.get("name", "")), json.dumps(item.get("parameters", {}), ensure_ascii=False))
        for item in items
        if isinstance(item, dict)
    ]
    return "", calls


class CallReader:
    """Reads one round's reply with vLLM's parser `parser_name` for the model's family (none:
    the reply has no calls). Made before the round: the parser may change the request first, as
    in vLLM's server (Hermes keeps special tokens, in which some models write `<tool_call>`)."""

    def __init__(self, parser_name: str, tokenizer: Any, tools: list[OfferedTool]) -> None:
        self._parser: Any = None
        self._request: Any = None
        if not parser_name or not tools:
            return
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.tool_parsers import ToolParserManager

        request = ChatCompletionRequest(
            model="chat", messages=[], tools=[t.as_openai() for t in tools], tool_choice="auto"
        )
        self._parser = ToolParserManager.get_tool_parser(parser_name)(tokenizer, request.tools)
        self._request = self._parser.adjust_request(request)

    @property
    def skip_special_tokens(self) -> bool:
        return self._request is None or bool(self._request.skip_special_tokens)

    def words(self, text: str) -> str:
        """What of a reply still streaming is its words: the text before its first call's markup,
        less the start of a marker that may be arriving (the calls show as blocks once read)."""
        markers = self._start_markers()
        cut = min((i for i in (text.find(m) for m in markers) if i >= 0), default=len(text))
        text = text[:cut]
        for marker in markers:
            for size in range(min(len(marker) - 1, len(text)), 0, -1):
                if text.endswith(marker[:size]):
                    return text[:-size]
        return text

    def _start_markers(self) -> list[str]:
        if self._parser is None:
            return []
        found = (getattr(self._parser, name, None) for name in _START_MARKER_ATTRIBUTES)
        return [m for m in found if isinstance(m, str) and m.startswith("<")]

    def read(self, text: str) -> tuple[str, list[ParsedCall]]:
        """The reply's text (without the calls' markup) and its calls."""
        if self._parser is None:
            return text, []
        info = self._parser.extract_tool_calls(text, self._request)
        if not info.tools_called:
            return text, []
        calls = [ParsedCall(c.id or _call_id(), c.function.name, c.function.arguments or "{}") for c in info.tool_calls]
        return info.content or "", calls


def check_call(call: ParsedCall, tools: list[OfferedTool], lang: str) -> tuple[OfferedTool | None, Any, str | None]:
    """(the tool, its decoded arguments, None), or (None, None, the error the model is sent)."""
    tool = next((t for t in tools if t.name == call.name), None)
    if tool is None:
        names = ", ".join(t.name for t in tools) or "-"
        return None, None, translate("tools.unknown_tool", lang, tool=call.name, tools=names)
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return None, None, translate("tools.arguments_not_json", lang, tool=call.name)
    try:
        jsonschema.validate(arguments, tool.input_schema or {"type": "object"})
    except jsonschema.ValidationError as exc:
        return None, None, translate("tools.arguments_invalid", lang, tool=call.name, reason=exc.message[:300])
    except jsonschema.SchemaError:
        pass  # the server's own schema is broken: the server judges the arguments itself
    if not isinstance(arguments, dict):
        return None, None, translate("tools.arguments_invalid", lang, tool=call.name, reason="not an object")
    return tool, arguments, None


def fit_result(text: str, tokenizer: Any, room_tokens: int, lang: str) -> str:
    """`text`, or its start with a note when it would not leave room for the reply."""
    budget = max(0, room_tokens - REPLY_RESERVE_TOKENS)
    ids = tokenizer.encode(text, add_special_tokens=False) if tokenizer is not None else []
    if len(ids) <= budget:
        return text
    note = translate("tools.result_truncated", lang, kept=budget, total=len(ids))
    kept = tokenizer.decode(ids[: max(0, budget - len(tokenizer.encode(note, add_special_tokens=False)))])
    return f"{kept}\n{note}"


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"
