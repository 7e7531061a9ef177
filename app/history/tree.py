"""A conversation as a tree of messages, and the one path through it that is shown.

Each message points at the one it follows (`parent_id`); a message's versions are its
parent's children, oldest first. The shown path runs from a first message down to the
conversation's `shown_leaf`. Parents always have smaller ids than their children, so walking
up or down the tree ends.
"""

from __future__ import annotations

import sqlite3

# A message with its reply stats (if it is a reply), for `store._message`.
MESSAGE_COLUMNS = (
    "m.*, r.message_id AS has_stats, r.model, r.sampling, r.prompt_tokens, r.completion_tokens, r.ttft,"
    " r.elapsed, r.finish_reason, r.thinking, r.cached_tokens, r.spec_tokens_per_step, r.spec_acceptance"
)
WITH_STATS = "messages m LEFT JOIN replies r ON r.message_id = m.id"
# Its place among its versions, and how many there are.
VERSION_COLUMNS = (
    "(SELECT COUNT(*) FROM messages s WHERE s.conversation_id = m.conversation_id AND s.parent_id IS m.parent_id"
    " AND s.id <= m.id) AS version,"
    " (SELECT COUNT(*) FROM messages s WHERE s.conversation_id = m.conversation_id AND s.parent_id IS m.parent_id)"
    " AS versions"
)

# One row per message on the shown path, first message first, with its reply stats and its
# place among its versions.
_PATH = f"""
WITH RECURSIVE up(id, depth) AS (
    SELECT ?, 0
    UNION ALL
    SELECT m.parent_id, up.depth + 1 FROM messages m JOIN up ON m.id = up.id WHERE m.parent_id IS NOT NULL
)
SELECT {MESSAGE_COLUMNS}, {VERSION_COLUMNS}
FROM {WITH_STATS} JOIN up ON up.id = m.id
ORDER BY up.depth DESC
"""

# From a message down to the end of its newest branch.
_NEWEST_BELOW = """
WITH RECURSIVE down(id) AS (
    SELECT ?
    UNION ALL
    SELECT (SELECT MAX(c.id) FROM messages c WHERE c.parent_id = down.id) FROM down WHERE down.id IS NOT NULL
)
SELECT MAX(id) FROM down
"""


def shown_leaf(db: sqlite3.Connection, conversation_id: int) -> int | None:
    """The last message of the shown path; the newest message if the shown one was deleted."""
    row = db.execute(
        "SELECT COALESCE(c.shown_leaf, (SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = c.id))"
        " FROM conversations c WHERE c.id = ?",
        (conversation_id,),
    ).fetchone()
    return row[0] if row else None


def path_rows(db: sqlite3.Connection, conversation_id: int) -> list[sqlite3.Row]:
    leaf = shown_leaf(db, conversation_id)
    return [] if leaf is None else db.execute(_PATH, (leaf,)).fetchall()


def show_below(db: sqlite3.Connection, conversation_id: int, message_id: int) -> None:
    """Show the path through `message_id` that continues with its newest replies."""
    leaf = db.execute(_NEWEST_BELOW, (message_id,)).fetchone()[0]
    db.execute("UPDATE conversations SET shown_leaf = ? WHERE id = ?", (leaf, conversation_id))


def sibling(db: sqlite3.Connection, conversation_id: int, message_id: int, step: int) -> int | None:
    """The version `step` places after (or before) `message_id` among its siblings; None past either end."""
    rows = db.execute(
        "SELECT s.id FROM messages m JOIN messages s ON s.conversation_id = m.conversation_id"
        " AND s.parent_id IS m.parent_id WHERE m.id = ? AND m.conversation_id = ? ORDER BY s.id",
        (message_id, conversation_id),
    ).fetchall()
    ids = [r[0] for r in rows]
    if message_id not in ids:
        return None
    index = ids.index(message_id) + step
    return ids[index] if 0 <= index < len(ids) else None
