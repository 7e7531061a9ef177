"""Saved conversations: SQLite in the app's data folder, one file, WAL mode.

Each finished or stopped reply is written in its own transaction together with its
metadata (model, sampling settings, token counts, timings), so killing the app while
it writes loses at most the reply in flight, never an older one. Messages keep their
exact text; ordering is by row id, which only grows.

Conversations are personal: the file and its -wal and -shm companions are readable by
their owner only, whatever the umask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.attachments.store import Attachment, AttachmentFiles
from app.errors import UserError
from app.history.attachments import attachments_of, files_in_use, insert_attachments
from app.history.exports import attachment_entries, attachments_markdown, imported_attachments
from app.history.imports import parse_import
from app.history.migrations import migrate
from app.history.records import (
    MAX_TITLE_LENGTH,
    ROLES,
    Conversation,
    StoredMessage,
    ToolCallRecord,
    calls_from_json,
    calls_to_json,
    title_from,
)
from app.history.search import search_condition
from app.history.stats import ReplyStats, stats_line
from app.history.tree import MESSAGE_COLUMNS, VERSION_COLUMNS, WITH_STATS, path_rows, show_below, shown_leaf, sibling
from app.i18n import translate

EXPORT_FORMAT = "vllm-chat/conversation"
# 2: messages form a tree (`parent`, `shown`); files of version 1 are one path and still import.
# 3: user messages may list `attachments` (name, kind, text, the bytes in base64).
EXPORT_VERSION = 3
_ALL_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS}, {VERSION_COLUMNS} FROM {WITH_STATS} WHERE m.conversation_id = ? ORDER BY m.id"
)


class Conversations:
    """The conversation store. Safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        _make_private(path)
        self.path = path
        # Attached files, beside the database (app.attachments.store).
        self.files = AttachmentFiles(path.with_name("attachments"))
        self._lock = threading.Lock()
        # Autocommit mode: every write below opens its own explicit transaction.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL survives an application crash; only a power cut can lose
            # the last commits, and it never corrupts the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            migrate(self._db)
        except BaseException:
            self._db.close()
            raise

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

    def create(self, first_message: str = "", system_prompt: str = "", title: str | None = None) -> Conversation:
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
        """Newest first; with `search`, only those with every word of it in the title or a message."""
        where, params = (search_condition(search) if search else None) or ("1", [])
        rows = self._read(
            f"SELECT * FROM conversations c WHERE {where} ORDER BY c.updated DESC, c.id DESC LIMIT ?",
            [*params, limit],
        )
        return [_conversation(r) for r in rows]

    def rename(self, conversation_id: int, title: str) -> Conversation:
        title = " ".join(title.split())
        if not title:
            raise UserError("conversations.empty_title")
        with self._write() as db:
            _touch(db, conversation_id, title=title[:MAX_TITLE_LENGTH])
        return self.get(conversation_id)

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> None:
        with self._write() as db:
            db.execute("UPDATE conversations SET system_prompt = ? WHERE id = ?", (system_prompt, conversation_id))

    def delete(self, conversation_id: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            # Under the write lock: no other message can take up a file between the two steps.
            self.files.prune(files_in_use(db))

    # ---- messages ----------------------------------------------------------------------

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        """The shown path: from the first message to the end of the branch last shown."""
        with self._lock:
            return _with_attachments(self._db, [_message(r) for r in path_rows(self._db, conversation_id)])

    def add_message(
        self, conversation_id: int, role: str, content: str, stats: ReplyStats | None = None
    ) -> StoredMessage:
        """Append a message (with its reply metadata) to the shown path, in one transaction."""
        with self._write() as db:
            return _insert(db, conversation_id, shown_leaf(db, conversation_id), role, content, stats)

    def add_child(
        self,
        conversation_id: int,
        parent_id: int | None,
        role: str,
        content: str,
        stats: ReplyStats | None = None,
        tool_calls: tuple[ToolCallRecord, ...] = (),
        attachments: Sequence[Attachment] = (),
    ) -> StoredMessage:
        """Add a message after `parent_id` (None: a first message), beside any already there, and
        show it: a regenerated reply (a new version of that turn) or an edited message (a new branch).
        `attachments` must be in `files` already (`AttachmentFiles.save`)."""
        with self._write() as db:
            if (
                parent_id is not None
                and not db.execute(
                    "SELECT 1 FROM messages WHERE id = ? AND conversation_id = ?", (parent_id, conversation_id)
                ).fetchone()
            ):
                raise UserError("conversations.message_not_found", id=parent_id)
            return _insert(
                db, conversation_id, parent_id, role, content, stats, tool_calls=tool_calls, attachments=attachments
            )

    def show_version(self, conversation_id: int, message_id: int, step: int) -> list[StoredMessage]:
        """Show the version `step` places away from a message on the path (with its newest
        continuation); the path as it is if there is none that far."""
        with self._write() as db:
            other = sibling(db, conversation_id, message_id, step)
            if other is not None:
                show_below(db, conversation_id, other)
        return self.messages(conversation_id)

    # ---- export / import ---------------------------------------------------------------

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """The whole tree: every version, each message with the list index of the one it follows
        (`parent`), and `shown`, the index of the shown path's last message."""
        conv = self.get(conversation_id)
        with self._lock:
            rows = self._db.execute(_ALL_MESSAGES, (conversation_id,)).fetchall()
            leaf = shown_leaf(self._db, conversation_id)
            all_messages = _with_attachments(self._db, [_message(r) for r in rows])
        index = {row["id"]: i for i, row in enumerate(rows)}
        messages = []
        for m in all_messages:
            entry = {"role": m.role, "content": m.content, "created": m.created, "parent": index.get(m.parent_id)}
            entry |= {"stats": asdict(m.stats)} if m.stats else {}
            entry |= {"tool_calls": [c.as_dict() for c in m.tool_calls]} if m.tool_calls else {}
            messages.append(entry | attachment_entries(m.attachments, self.files))
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "title": conv.title,
            "system_prompt": conv.system_prompt,
            "created": conv.created,
            "updated": conv.updated,
            "shown": index.get(leaf),
            "messages": messages,
        }

    def export_markdown(self, conversation_id: int, lang: str = "en") -> str:
        conv = self.get(conversation_id)
        parts = [f"# {conv.title}\n"]
        if conv.system_prompt:
            parts.append(f"## {translate('conversations.role_system', lang)}\n\n{conv.system_prompt}\n")
        for m in self.messages(conversation_id):
            parts.append(f"## {translate('conversations.role_' + m.role, lang)}\n\n{m.content}\n")
            for call in m.tool_calls:
                parts.append(f"> 🔧 `{call.name}` {call.arguments} · {call.state.value}\n>\n> {call.result[:1000]}\n")
            parts += attachments_markdown(m.attachments, lang)
            if m.stats:
                parts.append(f"*{stats_line(m.stats, lang)}*\n")
        return "\n".join(parts)

    def import_json(self, data: Any) -> Conversation:
        """Import an exported conversation (or a bare OpenAI-style message list) as a new one.

        `data`: the file's bytes or text (size-checked here, see `check_import_size`) or decoded
        JSON. Any problem raises the `conversations.bad_import` UserError and stores nothing.
        """
        imported = parse_import(data)
        # Every file is read and checked again (a file from anywhere) and saved before any row.
        files = [imported_attachments(m.attachments, self.files) for m in imported.messages]
        first_user = next((m.content for m in imported.messages if m.role == "user"), "")
        title = imported.title or title_from(first_user)
        now = time.time()
        try:
            with self._write() as db:
                cur = db.execute(
                    "INSERT INTO conversations (title, system_prompt, created, updated) VALUES (?, ?, ?, ?)",
                    (title, imported.system_prompt, now, now),
                )
                conversation_id = cur.lastrowid
                ids: list[int] = []
                for m, attached in zip(imported.messages, files, strict=True):
                    parent = None if m.parent is None else ids[m.parent]
                    created = now if m.created is None else m.created
                    row = (m.role, m.content, m.stats, created, m.tool_calls, attached)
                    ids.append(_insert(db, conversation_id, parent, *row).id)
                show_below(db, conversation_id, ids[imported.shown])
        except sqlite3.IntegrityError as exc:
            raise UserError("conversations.bad_import", reason=str(exc)) from None
        return self.get(conversation_id)


# ---- helpers ------------------------------------------------------------------------------


def _make_private(path: Path) -> None:
    """Owner-only modes, set explicitly: a umask can only take bits away, and may be 0."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # the folder this store made; one that existed is the user's
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, 0o600)
        os.close(fd)
    # SQLite creates -wal and -shm with the database's mode; existing ones (from a version that
    # did not do this, or a crash) are tightened too.
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(file).st_mode & 0o077:
                os.chmod(file, 0o600)


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


def _insert_stats(db: sqlite3.Connection, message_id: int, stats: ReplyStats) -> None:
    db.execute(
        "INSERT INTO replies (message_id, model, sampling, prompt_tokens, completion_tokens, ttft, elapsed,"
        " finish_reason, thinking, cached_tokens, spec_tokens_per_step, spec_acceptance)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message_id,
            stats.model,
            json.dumps(stats.sampling, ensure_ascii=False),
            stats.prompt_tokens,
            stats.completion_tokens,
            stats.ttft,
            stats.elapsed,
            stats.finish_reason,
            stats.thinking,
            stats.cached_tokens,
            stats.spec_tokens_per_step,
            stats.spec_acceptance,
        ),
    )


def _insert(
    db: sqlite3.Connection,
    conversation_id: int,
    parent_id: int | None,
    role: str,
    content: str,
    stats: ReplyStats | None,
    created: float | None = None,
    tool_calls: tuple[ToolCallRecord, ...] = (),
    attachments: Sequence[Attachment] = (),
) -> StoredMessage:
    """Write a message as the end of the shown path."""
    if role not in ROLES:
        raise UserError("conversations.bad_role", role=role)
    _touch(db, conversation_id)
    created = time.time() if created is None else created
    cur = db.execute(
        "INSERT INTO messages (conversation_id, parent_id, role, content, created, tool_calls)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (conversation_id, parent_id, role, content, created, calls_to_json(tool_calls)),
    )
    if stats is not None:
        _insert_stats(db, cur.lastrowid, stats)
    insert_attachments(db, cur.lastrowid, attachments)
    db.execute("UPDATE conversations SET shown_leaf = ? WHERE id = ?", (cur.lastrowid, conversation_id))
    versions = db.execute(
        "SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND parent_id IS ?", (conversation_id, parent_id)
    ).fetchone()[0]
    return StoredMessage(
        cur.lastrowid, role, content, created, stats, parent_id, versions, versions, tool_calls, tuple(attachments)
    )


def _with_attachments(db: sqlite3.Connection, messages: list[StoredMessage]) -> list[StoredMessage]:
    found = attachments_of(db, [m.id for m in messages])
    return [dataclasses.replace(m, attachments=found[m.id]) if m.id in found else m for m in messages]


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(row["id"], row["title"], row["system_prompt"], row["created"], row["updated"])


def _message(row: sqlite3.Row) -> StoredMessage:
    stats = None
    if row["has_stats"] is not None:
        columns = (
            "model",
            "prompt_tokens",
            "completion_tokens",
            "ttft",
            "elapsed",
            "finish_reason",
            "thinking",
            "cached_tokens",
            "spec_tokens_per_step",
            "spec_acceptance",
        )
        stats = ReplyStats.from_dict({name: row[name] for name in columns} | {"sampling": _object(row["sampling"])})
    return StoredMessage(
        row["id"],
        row["role"],
        row["content"],
        row["created"],
        stats,
        row["parent_id"],
        row["version"],
        row["versions"],
        calls_from_json(row["tool_calls"]),
    )


def _object(text: Any) -> dict[str, Any]:
    """A stored JSON object, or {} for anything else found in the column."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
