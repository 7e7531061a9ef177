"""Saved conversations: SQLite in the app's data folder, one file, WAL mode.

Each finished or stopped reply is written in its own transaction together with its
metadata (model, sampling settings, token counts, timings), so killing the app while
it writes loses at most the reply in flight, never an older one. Messages keep their
exact text; ordering is by row id, which only grows.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.errors import UserError
from app.i18n import translate

ROLES = ("system", "user", "assistant")
EXPORT_FORMAT = "vllm-chat/conversation"
EXPORT_VERSION = 1
TITLE_LENGTH = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS replies (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    model TEXT,
    sampling TEXT NOT NULL DEFAULT '{}',
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    ttft REAL,
    elapsed REAL NOT NULL DEFAULT 0,
    finish_reason TEXT
);
"""


@dataclass(frozen=True)
class ReplyStats:
    """How one reply was made: shown under it and kept with it."""

    model: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None  # seconds to the first token
    elapsed: float = 0.0  # seconds from request to the last token
    finish_reason: str | None = None  # "stop", "length", "abort" (stopped by the user), ...

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed: tokens after the first over the time after the first."""
        if self.ttft is None or self.completion_tokens < 2 or self.elapsed <= self.ttft:
            return None
        return (self.completion_tokens - 1) / (self.elapsed - self.ttft)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ReplyStats:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    content: str
    created: float
    stats: ReplyStats | None = None


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system_prompt: str
    created: float
    updated: float


class Conversations:
    """The conversation store. Safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # Autocommit mode: every write below opens its own explicit transaction.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives an application crash; only a power cut can lose
        # the last commits, and it never corrupts the file.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._write() as db:
            for statement in _statements(_SCHEMA):
                db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ---- conversations -----------------------------------------------------------------

    def create(
        self, first_message: str = "", system_prompt: str = "", title: str | None = None
    ) -> Conversation:
        """A new conversation titled from its first message (or `title`)."""
        now = time.time()
        title = title if title is not None else title_from(first_message)
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO conversations (title, system_prompt, created, updated) VALUES (?, ?, ?, ?)",
                (title, system_prompt, now, now),
            )
        return Conversation(cur.lastrowid, title, system_prompt, now, now)

    def get(self, conversation_id: int) -> Conversation:
        rows = self._read("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise UserError("conversations.not_found", id=conversation_id)
        return _conversation(rows[0])

    def list(self, search: str | None = None, limit: int = 500) -> list[Conversation]:
        """Newest first; with `search`, only those whose title or any message contains it."""
        if not search or not search.strip():
            rows = self._read("SELECT * FROM conversations ORDER BY updated DESC, id DESC LIMIT ?", (limit,))
        else:
            pattern = "%" + _escape_like(search.strip()) + "%"
            rows = self._read(
                "SELECT * FROM conversations c WHERE c.title LIKE ?1 ESCAPE '\\' OR EXISTS ("
                "  SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content LIKE ?1 ESCAPE '\\')"
                " ORDER BY c.updated DESC, c.id DESC LIMIT ?2",
                (pattern, limit),
            )
        return [_conversation(r) for r in rows]

    def rename(self, conversation_id: int, title: str) -> Conversation:
        title = " ".join(title.split())
        if not title:
            raise UserError("conversations.empty_title")
        with self._write() as db:
            _touch(db, conversation_id, title=title[:200])
        return self.get(conversation_id)

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE conversations SET system_prompt = ? WHERE id = ?", (system_prompt, conversation_id)
            )

    def delete(self, conversation_id: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # ---- messages ----------------------------------------------------------------------

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = self._read(
            "SELECT m.*, r.message_id AS has_stats, r.model, r.sampling, r.prompt_tokens,"
            " r.completion_tokens, r.ttft, r.elapsed, r.finish_reason"
            " FROM messages m LEFT JOIN replies r ON r.message_id = m.id"
            " WHERE m.conversation_id = ? ORDER BY m.id",
            (conversation_id,),
        )
        return [_message(r) for r in rows]

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        stats: ReplyStats | None = None,
        replace_after: int | None = None,
    ) -> StoredMessage:
        """Append a message (with its reply metadata) in one transaction.

        `replace_after`: first drop every message after that one, in the same
        transaction, so a regenerated reply replaces the old one only once it is saved.
        """
        if role not in ROLES:
            raise UserError("conversations.bad_role", role=role)
        now = time.time()
        with self._write() as db:
            _touch(db, conversation_id)
            if replace_after is not None:
                db.execute(
                    "DELETE FROM messages WHERE conversation_id = ? AND id > ?",
                    (conversation_id, replace_after),
                )
            cur = db.execute(
                "INSERT INTO messages (conversation_id, role, content, created) VALUES (?, ?, ?, ?)",
                (conversation_id, role, content, now),
            )
            if stats is not None:
                _insert_stats(db, cur.lastrowid, stats)
        return StoredMessage(cur.lastrowid, role, content, now, stats)

    def edit_message(self, conversation_id: int, message_id: int, content: str) -> StoredMessage:
        """Change a message and drop everything after it (edit and continue from there)."""
        with self._write() as db:
            _touch(db, conversation_id)
            cur = db.execute(
                "UPDATE messages SET content = ? WHERE id = ? AND conversation_id = ?",
                (content, message_id, conversation_id),
            )
            if cur.rowcount != 1:
                raise UserError("conversations.message_not_found", id=message_id)
            db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND id > ?", (conversation_id, message_id)
            )
        row = self._read("SELECT * FROM messages WHERE id = ?", (message_id,))[0]
        return StoredMessage(row["id"], row["role"], row["content"], row["created"])

    # ---- export / import ---------------------------------------------------------------

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        conv = self.get(conversation_id)
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "title": conv.title,
            "system_prompt": conv.system_prompt,
            "created": conv.created,
            "updated": conv.updated,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "created": m.created,
                    **({"stats": asdict(m.stats)} if m.stats else {}),
                }
                for m in self.messages(conversation_id)
            ],
        }

    def export_markdown(self, conversation_id: int, lang: str = "en") -> str:
        conv = self.get(conversation_id)
        parts = [f"# {conv.title}\n"]
        if conv.system_prompt:
            parts.append(f"## {translate('conversations.role_system', lang)}\n\n{conv.system_prompt}\n")
        for m in self.messages(conversation_id):
            parts.append(f"## {translate('conversations.role_' + m.role, lang)}\n\n{m.content}\n")
            if m.stats:
                parts.append(f"*{stats_line(m.stats, lang)}*\n")
        return "\n".join(parts)

    def import_json(self, data: Any) -> Conversation:
        """Import an exported conversation (or a bare OpenAI-style message list) as a new one."""
        messages, title, system_prompt = _parse_import(data)
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        now = time.time()
        title = title or title_from(first_user)
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO conversations (title, system_prompt, created, updated) VALUES (?, ?, ?, ?)",
                (title, system_prompt, now, now),
            )
            conversation_id = cur.lastrowid
            for m in messages:
                row = db.execute(
                    "INSERT INTO messages (conversation_id, role, content, created) VALUES (?, ?, ?, ?)",
                    (conversation_id, m["role"], m["content"], m.get("created") or now),
                )
                if m.get("stats"):
                    _insert_stats(db, row.lastrowid, m["stats"])
        return self.get(conversation_id)


def title_from(message: str) -> str:
    """The first line of the first message, shortened."""
    line = next((line.strip() for line in message.splitlines() if line.strip()), "")
    line = " ".join(line.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"


def stats_line(stats: ReplyStats, lang: str = "en") -> str:
    """model · 123 tokens · TTFT 0.21 s · 45.6 tokens/s (· stopped)."""
    parts = [stats.model] if stats.model else []
    parts.append(translate("conversations.stats_tokens", lang, tokens=stats.completion_tokens))
    if stats.ttft is not None:
        parts.append(translate("conversations.stats_ttft", lang, ttft=f"{stats.ttft:.2f}"))
    if stats.tokens_per_second is not None:
        parts.append(translate("conversations.stats_speed", lang, speed=f"{stats.tokens_per_second:.1f}"))
    if stats.finish_reason == "abort":
        parts.append(translate("conversations.stats_stopped", lang))
    elif stats.finish_reason == "length":
        parts.append(translate("conversations.stats_length", lang))
    return " · ".join(parts)


# ---- helpers ------------------------------------------------------------------------------


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _touch(db: sqlite3.Connection, conversation_id: int, title: str | None = None) -> None:
    if title is None:
        cur = db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation_id))
    else:
        cur = db.execute(
            "UPDATE conversations SET updated = ?, title = ? WHERE id = ?",
            (time.time(), title, conversation_id),
        )
    if cur.rowcount != 1:
        raise UserError("conversations.not_found", id=conversation_id)


def _insert_stats(db: sqlite3.Connection, message_id: int, stats: ReplyStats | Mapping[str, Any]) -> None:
    if isinstance(stats, Mapping):
        stats = ReplyStats.from_dict(stats)
    db.execute(
        "INSERT INTO replies (message_id, model, sampling, prompt_tokens, completion_tokens, ttft, elapsed,"
        " finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message_id,
            stats.model,
            json.dumps(stats.sampling, ensure_ascii=False),
            stats.prompt_tokens,
            stats.completion_tokens,
            stats.ttft,
            stats.elapsed,
            stats.finish_reason,
        ),
    )


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(row["id"], row["title"], row["system_prompt"], row["created"], row["updated"])


def _message(row: sqlite3.Row) -> StoredMessage:
    stats = None
    if row["has_stats"] is not None:
        stats = ReplyStats(
            model=row["model"],
            sampling=json.loads(row["sampling"] or "{}"),
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            ttft=row["ttft"],
            elapsed=row["elapsed"],
            finish_reason=row["finish_reason"],
        )
    return StoredMessage(row["id"], row["role"], row["content"], row["created"], stats)


def _parse_import(data: Any) -> tuple[list[dict[str, Any]], str | None, str]:
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise UserError("conversations.bad_import", reason=str(exc)) from None
    if isinstance(data, list):
        data = {"messages": data}
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise UserError("conversations.bad_import", reason="no “messages” list")
    title = data.get("title")
    if title is not None and not isinstance(title, str):
        raise UserError("conversations.bad_import", reason="“title” is not text")
    system_prompt = data.get("system_prompt") or ""
    if not isinstance(system_prompt, str):
        raise UserError("conversations.bad_import", reason="“system_prompt” is not text")
    messages = []
    for i, m in enumerate(data["messages"], 1):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise UserError("conversations.bad_import", reason=f"message {i} has no valid role")
        content = _text(m.get("content"))
        if content is None:
            raise UserError("conversations.bad_import", reason=f"message {i} has no text content")
        if m["role"] == "system" and not messages and not system_prompt:
            system_prompt = content
            continue
        stats = m.get("stats") if isinstance(m.get("stats"), dict) else None
        created = m.get("created") if isinstance(m.get("created"), (int, float)) else None
        messages.append({"role": m["role"], "content": content, "stats": stats, "created": created})
    if not messages:
        raise UserError("conversations.bad_import", reason="no messages")
    return messages, title.strip() if title else None, system_prompt


def _text(content: Any) -> str | None:
    """A message's text: a string, or OpenAI/Gradio text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    return None
