"""The history database's schema, as numbered steps recorded in `PRAGMA user_version`.

`MIGRATIONS[n]` takes a database from version n to n + 1. Each runs in its own transaction
together with the new version number, so a crash or a second process opening the file at the
same time leaves it at one version or the next, never in between. Steps are only ever
appended: a released step is never edited, since users' files have already run it.

Before versions were recorded (user_version 0), the app wrote the tables of step 1; such a
file counts as version 1.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

log = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]


def _m001_tables(db: sqlite3.Connection) -> None:
    _run(
        db,
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            system_prompt TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL
        )""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        "CREATE INDEX messages_by_conversation ON messages(conversation_id, id)",
        """CREATE TABLE replies (
            message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
            model TEXT,
            sampling TEXT NOT NULL DEFAULT '{}',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            ttft REAL,
            elapsed REAL NOT NULL DEFAULT 0,
            finish_reason TEXT
        )""",
    )


def _m002_search(db: sqlite3.Connection) -> None:
    """Full-text indexes of titles and message text, kept in step by triggers.

    The trigram tokenizer indexes every run of three characters, so a query matches any
    substring, case-insensitively, in any script: unicode61, the default, keeps a run of Chinese
    characters as one token, and "学习" would not find "机器学习是什么". External content: the
    text stays only in its table, the index holds no second copy. Deleting a conversation
    deletes its messages through the foreign key, which fires the messages' delete trigger.
    """
    _run(
        db,
        "CREATE VIRTUAL TABLE messages_fts USING fts5("
        "content, content='messages', content_rowid='id', tokenize='trigram')",
        "CREATE VIRTUAL TABLE titles_fts USING fts5("
        "title, content='conversations', content_rowid='id', tokenize='trigram')",
        *_index_triggers("messages", "messages_fts", "content"),
        *_index_triggers("conversations", "titles_fts", "title"),
        "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
        "INSERT INTO titles_fts(titles_fts) VALUES ('rebuild')",
        # The list (and each search) is newest first: read in that order instead of sorting.
        "CREATE INDEX conversations_by_updated ON conversations(updated, id)",
    )


def _m003_branches(db: sqlite3.Connection) -> None:
    """Replies and edits as a tree: every message points at the one it follows.

    Regenerating adds a sibling of the reply and editing a sibling of the message, so older
    versions stay. A conversation remembers the end of the path it shows (`shown_leaf`); the
    path is that message and its ancestors. An older file's messages follow one another in id
    order, so each gets the one before it as parent, and the last one is shown.
    """
    _run(
        db,
        "ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE",
        "ALTER TABLE conversations ADD COLUMN shown_leaf INTEGER REFERENCES messages(id) ON DELETE SET NULL",
        "UPDATE messages SET parent_id = (SELECT MAX(p.id) FROM messages p"
        " WHERE p.conversation_id = messages.conversation_id AND p.id < messages.id)",
        "UPDATE conversations SET shown_leaf ="
        " (SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = conversations.id)",
        # Versions of one message are its parent's children, in the order they were written.
        "CREATE INDEX messages_by_parent ON messages(conversation_id, parent_id, id)",
    )


def _m004_tool_calls(db: sqlite3.Connection) -> None:
    """A reply's tool calls and their results, as JSON beside its text (NULL: none).

    A turn that used tools is a chain of replies: each one that called tools holds the calls and
    what went back to the model, and the next reply (its child) continues from there. Tool
    results stay out of the search index: they are the tools' text, not the conversation's.
    """
    _run(db, "ALTER TABLE messages ADD COLUMN tool_calls TEXT")


def _m005_attachments(db: sqlite3.Connection) -> None:
    """Files and pictures given to a user message, in the order they were attached.

    The bytes live in the attachments folder beside the database, named by their SHA-256
    (app.attachments.store); a row holds what the page and the prompt need without reading them:
    the extracted text of a document and its token count when attached.
    """
    _run(
        db,
        """CREATE TABLE attachments (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('text', 'image')),
            mime TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            text TEXT NOT NULL DEFAULT '',
            tokens INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX attachments_by_message ON attachments(message_id, position)",
        # Which files are still used, when a deleted chat's files are pruned.
        "CREATE INDEX attachments_by_file ON attachments(sha256)",
    )


def _m006_thinking_time(db: sqlite3.Connection) -> None:
    """How long a reply thought before it answered, in seconds (NULL: it did not think, or it was
    saved before this was kept)."""
    _run(db, "ALTER TABLE replies ADD COLUMN thinking REAL")


def _m007_cache_and_speculation(db: sqlite3.Connection) -> None:
    """Prompt tokens read from the prefix cache, and speculative decoding's figures (NULL where
    it did not run, or for replies saved before these were kept)."""
    _run(db, "ALTER TABLE replies ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")
    _run(db, "ALTER TABLE replies ADD COLUMN spec_tokens_per_step REAL")
    _run(db, "ALTER TABLE replies ADD COLUMN spec_acceptance REAL")


MIGRATIONS: tuple[Migration, ...] = (
    _m001_tables,
    _m002_search,
    _m003_branches,
    _m004_tool_calls,
    _m005_attachments,
    _m006_thinking_time,
    _m007_cache_and_speculation,
)
LATEST = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring `db` (in autocommit mode) to the latest version; returns the version it is at."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Read inside the write lock: another process may have just migrated the file.
            version = schema_version(db)
            if version >= LATEST:
                db.execute("COMMIT")
                if version > LATEST:
                    # Written by a newer app: its additions are kept, and this one reads what it knows.
                    log.warning("history database is at version %d, newer than this app's %d", version, LATEST)
                return version
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def schema_version(db: sqlite3.Connection) -> int:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'conversations'").fetchone():
        return 1
    return version


def _index_triggers(table: str, index: str, column: str) -> list[str]:
    # An external-content index is told the old text to remove it: the table no longer has it.
    remove = f"INSERT INTO {index}({index}, rowid, {column}) VALUES ('delete', old.id, old.{column});"
    add = f"INSERT INTO {index}(rowid, {column}) VALUES (new.id, new.{column});"
    return [
        f"CREATE TRIGGER {index}_insert AFTER INSERT ON {table} BEGIN {add} END",
        f"CREATE TRIGGER {index}_delete AFTER DELETE ON {table} BEGIN {remove} END",
        f"CREATE TRIGGER {index}_update AFTER UPDATE OF {column} ON {table} BEGIN {remove} {add} END",
    ]


def _run(db: sqlite3.Connection, *statements: str) -> None:
    # One statement per call: executescript would commit the open transaction first.
    for statement in statements:
        db.execute(statement)
