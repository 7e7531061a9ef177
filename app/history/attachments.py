"""The attachments of messages in the history database (rows of the `attachments` table)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from app.attachments.content import AttachmentKind
from app.attachments.store import Attachment

_COLUMNS = "name, kind, mime, sha256, size, text, tokens"


def insert_attachments(db: sqlite3.Connection, message_id: int, attachments: Sequence[Attachment]) -> None:
    db.executemany(
        f"INSERT INTO attachments (message_id, position, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (message_id, i, a.name, a.kind.value, a.mime, a.sha256, a.size, a.text, a.tokens)
            for i, a in enumerate(attachments)
        ],
    )


def attachments_of(db: sqlite3.Connection, message_ids: Iterable[int]) -> dict[int, tuple[Attachment, ...]]:
    """Each message's attachments, in the order they were attached (messages without any are left out)."""
    ids = list(message_ids)
    found: dict[int, list[Attachment]] = {}
    # In chunks: SQLite caps the number of parameters of one statement.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = db.execute(
            f"SELECT message_id, {_COLUMNS} FROM attachments WHERE message_id IN ({','.join('?' * len(chunk))})"
            " ORDER BY message_id, position",
            chunk,
        ).fetchall()
        for row in rows:
            attachment = Attachment(
                row["name"],
                AttachmentKind(row["kind"]),
                row["mime"],
                row["sha256"],
                row["size"],
                row["text"],
                row["tokens"],
            )
            found.setdefault(row["message_id"], []).append(attachment)
    return {message_id: tuple(items) for message_id, items in found.items()}


def files_in_use(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT DISTINCT sha256 FROM attachments")}
