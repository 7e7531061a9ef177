"""Saved conversations: the public names of `app.history`, where the store lives.

Kept so that callers (the chat panel, the application, tests) import one module whatever
the package's inner layout.
"""

from app.history.imports import MAX_IMPORT_BYTES, check_import_size
from app.history.records import ROLES, TITLE_LENGTH, Conversation, StoredMessage, title_from
from app.history.stats import ReplyStats, stats_line
from app.history.store import EXPORT_FORMAT, EXPORT_VERSION, Conversations
from app.history.turns import Turn, begin, edit_turn, new_turn, regenerate_turn, reply_stats, save_reply, save_round

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MAX_IMPORT_BYTES",
    "ROLES",
    "TITLE_LENGTH",
    "Conversation",
    "Conversations",
    "ReplyStats",
    "StoredMessage",
    "Turn",
    "begin",
    "check_import_size",
    "edit_turn",
    "new_turn",
    "regenerate_turn",
    "reply_stats",
    "save_reply",
    "save_round",
    "stats_line",
    "title_from",
]
