"""Reading an imported conversation file: its size, its JSON, and a schema for its contents.

An import is a file from anywhere. Everything it holds is checked here, before the store
writes a row: types (strictly: "0.5" is not a number), finite numbers in sane ranges, bounded
text. Every way a file can be wrong ends in one sentence (`conversations.bad_import`, or
`not_json` for a file that is not JSON at all), which the page shows instead of breaking.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from app.errors import UserError
from app.history.records import MAX_TITLE_LENGTH, CallState, Role, ToolCallRecord
from app.history.stats import MAX_COUNT, MAX_SECONDS, MAX_SPEC_TOKENS, ReplyStats

MAX_IMPORT_BYTES = 50 * 1024 * 1024
MAX_TEXT_LENGTH = 1_000_000  # characters in one message: a long book chapter
MAX_MESSAGES = 100_000
MAX_BLOCKS = 10_000  # text blocks making up one message
MAX_SETTING_LENGTH = 10_000  # one sampling setting's text, such as a stop string
MAX_TIMESTAMP = 253_402_300_799.0  # 9999-12-31: later ones cannot be shown as a date


def _encodable(text: str) -> str:
    # JSON's "\ud800" decodes to a lone surrogate, which SQLite (UTF-8) cannot store.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text with a lone surrogate, which is not Unicode") from None
    return text


def _joined(content: Any) -> Any:
    """OpenAI and Gradio send a message's text as a list of text blocks: one string."""
    if not isinstance(content, list):
        return content
    if len(content) > MAX_BLOCKS or not all(isinstance(b, dict) and isinstance(b.get("text"), str) for b in content):
        raise ValueError("a list of blocks that are not all text")
    return "".join(block["text"] for block in content)


def _setting(value: Any) -> Any:
    """A sampling setting as the app writes them: a number, text, true/false, null, or a list of those."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("a number that is not finite")
        if isinstance(item, str):
            if len(item) > MAX_SETTING_LENGTH:
                raise ValueError(f"text longer than {MAX_SETTING_LENGTH:,} characters")
            _encodable(item)
        elif item is not None and not isinstance(item, (bool, int, float)):
            raise ValueError("neither a number, text, true/false nor null")
    return value


def _text(max_length: int) -> Any:
    # The length before the custom check, so that pydantic words it "at most N characters".
    return Annotated[str, Field(max_length=max_length), AfterValidator(_encodable)]


Text = _text(MAX_TEXT_LENGTH)
Title = _text(MAX_TITLE_LENGTH)
Name = _text(1000)
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Setting = Annotated[Any, AfterValidator(_setting)]


class _Strict(BaseModel):
    # Unknown keys are ignored: OpenAI messages carry "name", a newer export may add fields.
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class _Stats(_Strict):
    # null where an export writes null (ReplyStats' optional fields), nowhere else.
    model: Name | None = None
    sampling: Annotated[dict[Name, Setting], Field(max_length=100)] = {}
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    ttft: Seconds | None = None
    elapsed: Seconds = 0.0
    finish_reason: Name | None = None
    thinking: Seconds | None = None
    cached_tokens: Count = 0
    spec_tokens_per_step: Annotated[float, Field(ge=1, le=MAX_SPEC_TOKENS)] | None = None
    spec_acceptance: Annotated[float, Field(ge=0, le=1)] | None = None


class _Call(_Strict):
    id: Name
    name: Name
    arguments: Text
    state: Literal["done", "denied", "error", "stopped"]
    result: Text
    server: Name = ""


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


class _Attachment(_Strict):
    # Its kind, type and text are read again from the bytes (app.history.exports): only these count.
    name: Name
    data: Annotated[str, Field(max_length=MAX_IMPORT_BYTES * 2), AfterValidator(_base64)]
    tokens: Count = 0


class _Message(_Strict):
    role: Role
    content: Annotated[Text, BeforeValidator(_joined)]
    created: Annotated[float, Field(ge=0, le=MAX_TIMESTAMP)] | None = None
    stats: _Stats | None = None
    # The list index of the message this one follows (export version 2); without the key, the
    # message before it in the list (version 1 and plain message lists are one path).
    parent: Annotated[int, Field(ge=0, le=MAX_MESSAGES)] | None = None
    tool_calls: Annotated[list[_Call], Field(max_length=100)] = []
    attachments: Annotated[list[_Attachment], Field(max_length=100)] = []


class _File(_Strict):
    title: Title | None = None
    system_prompt: Text | None = None
    shown: Annotated[int, Field(ge=0, le=MAX_MESSAGES)] | None = None  # the shown path's last message
    messages: Annotated[list[_Message], Field(min_length=1, max_length=MAX_MESSAGES)]


@dataclass(frozen=True)
class ImportedFile:
    """An attached file as the export listed it: to be read and checked again before it is kept."""

    name: str
    data: bytes
    tokens: int


@dataclass(frozen=True)
class ImportedMessage:
    role: str
    content: str
    created: float | None
    stats: ReplyStats | None
    parent: int | None  # index in `ImportedConversation.messages` of the one it follows
    tool_calls: tuple[ToolCallRecord, ...] = ()
    attachments: tuple[ImportedFile, ...] = ()


@dataclass(frozen=True)
class ImportedConversation:
    title: str | None  # None: title it from the first question
    system_prompt: str
    messages: list[ImportedMessage]
    shown: int  # index of the shown path's last message


def check_import_size(n_bytes: int) -> None:
    """Refuse a file too big to import before reading it all."""
    if n_bytes > MAX_IMPORT_BYTES:
        reason = f"{n_bytes / 2**20:.1f} MB, more than {MAX_IMPORT_BYTES // 2**20} MB"
        raise UserError("conversations.bad_import", reason=reason)


def parse_import(data: Any) -> ImportedConversation:
    """A checked conversation from file bytes or text, decoded JSON, or a bare message list."""
    if isinstance(data, (str, bytes, bytearray)):
        data = _decode(data)
    if isinstance(data, list):
        data = {"messages": data}
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        raise UserError("conversations.bad_import", reason=_reason(exc)) from None
    return _conversation(parsed)


def _decode(data: str | bytes | bytearray) -> Any:
    size = len(data) if isinstance(data, (bytes, bytearray)) else len(data.encode("utf-8", "surrogatepass"))
    check_import_size(size)
    try:
        return json.loads(data)
    except RecursionError:
        # CPython's parser recurses once per "[": a file of nothing but brackets ends here.
        raise UserError("conversations.bad_import", reason="nested too deeply") from None
    except json.JSONDecodeError as exc:
        # The line, not the parser's own words ("Expecting ',' delimiter: line 2 column 1 (char 66)").
        raise UserError("conversations.not_json_at", line=f"{exc.lineno:,}") from None
    except ValueError:  # UnicodeDecodeError, an integer of 5,000 digits
        raise UserError("conversations.not_json") from None


def _conversation(parsed: _File) -> ImportedConversation:
    system_prompt = parsed.system_prompt or ""
    messages: list[ImportedMessage] = []
    kept: dict[int, int] = {}  # file index -> index in `messages`
    for i, m in enumerate(parsed.messages):
        # An OpenAI-style list opens with its system prompt.
        if m.role == "system" and not messages and not system_prompt:
            system_prompt = m.content
            continue
        stats = ReplyStats(**m.stats.model_dump()) if m.stats else None
        calls = tuple(
            ToolCallRecord(c.id, c.name, c.arguments, CallState(c.state), c.result, c.server) for c in m.tool_calls
        )
        files = tuple(ImportedFile(a.name, a.data, a.tokens) for a in m.attachments)
        messages.append(ImportedMessage(m.role, m.content, m.created, stats, _parent(m, i, kept), calls, files))
        kept[i] = len(messages) - 1
    if not messages:
        raise UserError("conversations.bad_import", reason="no messages")
    shown = len(messages) - 1 if parsed.shown is None else kept.get(parsed.shown)
    if shown is None:
        raise UserError("conversations.bad_import", reason=f"shown: no message {parsed.shown}")
    title = " ".join(parsed.title.split()) if parsed.title else None
    return ImportedConversation(title or None, system_prompt, messages, shown)


def _parent(message: _Message, index: int, kept: dict[int, int]) -> int | None:
    """Where `message` (at `index` in the file) goes in the tree, as an index of a kept message."""
    if "parent" not in message.model_fields_set:
        return max(kept.values(), default=None)
    if message.parent is None:
        return None
    if message.parent >= index:
        # Parents come first: this also rules out loops.
        raise UserError("conversations.bad_import", reason=f"messages.{index}.parent: not an earlier message")
    # A skipped leading system prompt is no message: what followed it starts the conversation.
    return kept.get(message.parent)


def _reason(exc: ValidationError) -> str:
    """The first problem, where it is: `messages.2.stats.ttft: Input should be a valid number`."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
