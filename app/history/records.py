"""What the store hands out: conversations and their messages, as plain values."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

from app.attachments.store import Attachment
from app.history.stats import ReplyStats

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = get_args(Role)
TITLE_LENGTH = 60
MAX_TITLE_LENGTH = 200  # a renamed or imported title; longer ones would crowd the sidebar


class CallState(enum.StrEnum):
    """How a tool call ended: its result, the user's denial, an error sent back, or Stop."""

    DONE = "done"
    DENIED = "denied"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call of a reply and what went back to the model for it."""

    call_id: str
    name: str
    arguments: str  # the model's JSON text, exactly as written
    state: CallState
    result: str  # the text the model was given (the tool's result, or why there is none)
    server: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
            "state": self.state.value,
            "result": self.result,
            "server": self.server,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCallRecord:
        return cls(
            str(data["id"]),
            str(data["name"]),
            str(data["arguments"]),
            CallState(data["state"]),
            str(data["result"]),
            str(data.get("server", "")),
        )


def calls_to_json(calls: tuple[ToolCallRecord, ...]) -> str | None:
    return json.dumps([c.as_dict() for c in calls], ensure_ascii=False) if calls else None


def calls_from_json(text: str | None) -> tuple[ToolCallRecord, ...]:
    """The calls saved with a message; a column this version cannot read counts as none."""
    if not text:
        return ()
    try:
        return tuple(ToolCallRecord.from_dict(item) for item in json.loads(text))
    except (TypeError, ValueError, KeyError):
        return ()


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    content: str
    created: float
    stats: ReplyStats | None = None
    parent_id: int | None = None  # the message it answers or follows; None for a first message
    version: int = 1  # its place among the versions of this turn (its parent's children), from 1
    versions: int = 1
    # A reply that called tools: the calls and their results, in order (the next reply follows).
    tool_calls: tuple[ToolCallRecord, ...] = ()
    attachments: tuple[Attachment, ...] = ()  # files and pictures given with a user message


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system_prompt: str
    created: float
    updated: float


def title_from(message: str) -> str:
    """The first line of the first message, shortened."""
    line = next((line.strip() for line in message.splitlines() if line.strip()), "")
    line = " ".join(line.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"
