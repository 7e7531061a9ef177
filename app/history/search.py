"""What a user types into the history search box, as one SQL condition on conversations `c`.

Each word must appear, as a substring ignoring case, in the conversation's title or in any of
its messages (not necessarily the same one). Words are matched as FTS5 phrases, quoted, so
nothing a user types is read as query syntax (`"foo`, `AND`, `*`, `NEAR(`). The trigram index
cannot look up fewer than three characters, which covers most two-character Chinese words:
those words are matched with LIKE, checked only on the conversations the indexed words let
through, or on all of them, newest first, when every word is short.
"""

from __future__ import annotations

TRIGRAM = 3  # characters in one indexed token: the shortest word the index can find
MAX_WORDS = 16  # the rest of a pasted paragraph adds cost, not precision

_INDEXED = (
    "c.id IN (SELECT m.conversation_id FROM messages_fts f JOIN messages m ON m.id = f.rowid"
    " WHERE messages_fts MATCH ? UNION SELECT rowid FROM titles_fts WHERE titles_fts MATCH ?)"
)
_SCANNED = (
    "(c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m"
    " WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\'))"
)


def search_condition(search: str) -> tuple[str, list[str]] | None:
    """A WHERE condition and its parameters; None when there is nothing to search for."""
    words = list(dict.fromkeys(search.split()))[:MAX_WORDS]
    if not words:
        return None
    # Indexed words first: their sets drive the query, and the LIKE scans run on what they let through.
    words.sort(key=lambda word: len(word) < TRIGRAM)
    conditions, params = [], []
    for word in words:
        if len(word) >= TRIGRAM:
            conditions.append(_INDEXED)
            params += [_phrase(word)] * 2
        else:
            conditions.append(_SCANNED)
            params += [_like(word)] * 2
    return " AND ".join(conditions), params


def _phrase(word: str) -> str:
    # Inside an FTS5 string only the double quote is special, written twice.
    return '"' + word.replace('"', '""') + '"'


def _like(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
