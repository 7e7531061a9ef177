"""What the store hands out: conversations and their messages, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from app.attachments.store import Attachment
from app.history.stats import ReplyStats

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = get_args(Role)
TITLE_LENGTH = 60
MAX_TITLE_LENGTH = 200  # a renamed or imported title; longer ones would crowd the sidebar


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
