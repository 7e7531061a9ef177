"""One turn of a chat, saved: the user's message (new, edited or kept for a regenerated reply)
and the reply to it, with its stats.

The adapter streams the reply; this module decides where both messages go in the tree. The
user's message is saved only once the engine accepts the prompt (`begin`), so a refused one
leaves the history untouched, and the reply when it ends (`save_reply`), whole or stopped.
An edit adds a sibling of the edited message (a new branch) and a regenerated reply a sibling
of the old reply (a new version of the turn): what was there before stays reachable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.attachments.prompt import message_content
from app.attachments.store import Attachment, AttachmentFiles
from app.engine.reasoning import THINK_CLOSE
from app.errors import UserError
from app.history.records import StoredMessage, ToolCallRecord
from app.history.stats import ReplyStats

if TYPE_CHECKING:
    from app.engine import ChatDelta
    from app.history.store import Conversations


@dataclass(frozen=True)
class Turn:
    """Where a turn goes: after `prior` (the shown path before the user's message)."""

    conversation_id: int | None
    prior: list[StoredMessage]
    user_text: str
    # The saved user message a regenerated reply answers; None until `begin` saves a new one.
    user: StoredMessage | None = None
    # Replies of this turn that called tools, saved so far (the next reply follows the last).
    rounds: tuple[StoredMessage, ...] = ()
    # Files and pictures given with the user's message (saved in the store's `files` already).
    attachments: tuple[Attachment, ...] = ()

    def prompt(self, system_prompt: str, store: Conversations | None = None) -> list[dict[str, Any]]:
        """What the model is sent: the system prompt, the shown path only, the user's message (each
        with its files; `store` holds the pictures' bytes), and this turn's tool rounds so far
        (each call with the result that went back for it)."""
        files = store.files if store is not None else None
        prompt = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
        for m in self.prior:
            prompt += as_chat_messages(m, files)
        prompt.append({"role": "user", "content": message_content(self.user_text, self.attachments, files)})
        for m in self.rounds:
            prompt += as_chat_messages(m, files)
        return prompt


def as_chat_messages(message: StoredMessage, files: AttachmentFiles | None = None) -> list[dict[str, Any]]:
    """A saved message as the model saw it: with its files, and a reply that called tools is
    followed by the results."""
    if not message.tool_calls:
        return [{"role": message.role, "content": message_content(message.content, message.attachments, files)}]
    return tool_round_messages(answer_text(message.content), message.tool_calls)


def tool_round_messages(content: str, calls: tuple[ToolCallRecord, ...]) -> list[dict[str, Any]]:
    """A reply's calls (OpenAI's shape, as chat templates take them), then each call's result."""
    tool_calls = [
        {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
    ]
    results = [{"role": "tool", "tool_call_id": c.call_id, "content": c.result} for c in calls]
    return [{"role": "assistant", "content": content, "tool_calls": tool_calls}, *results]


def answer_text(text: str) -> str:
    """A reply without its reasoning (what follows `</think>`): what the model is sent back."""
    return text.rpartition(THINK_CLOSE)[2]


def new_turn(
    store: Conversations, conversation_id: int | None, text: str, attachments: Sequence[Attachment] = ()
) -> Turn:
    """A message sent at the end of the shown path (None: in a new conversation)."""
    _require_text(text, attachments)
    prior = store.messages(conversation_id) if conversation_id is not None else []
    return Turn(conversation_id, prior, text, attachments=tuple(attachments))


def edit_turn(
    store: Conversations,
    conversation_id: int,
    message_id: int,
    text: str,
    attachments: Sequence[Attachment] | None = None,
) -> Turn:
    """A user message on the shown path rewritten: the new text starts a branch beside it, with
    the edited message's files unless `attachments` replaces them."""
    path = store.messages(conversation_id)
    position = next((i for i, m in enumerate(path) if m.id == message_id), None)
    if position is None:
        raise UserError("conversations.message_not_found", id=message_id)
    if path[position].role != "user":
        raise UserError("chat.edit_not_user")
    files = path[position].attachments if attachments is None else tuple(attachments)
    _require_text(text, files)
    return Turn(conversation_id, path[:position], text, attachments=files)


def regenerate_turn(store: Conversations, conversation_id: int | None) -> Turn:
    """Another reply to the last user message on the shown path."""
    path = store.messages(conversation_id) if conversation_id is not None else []
    last = max((i for i, m in enumerate(path) if m.role == "user"), default=None)
    if last is None:
        raise UserError("chat.nothing_to_regenerate")
    return Turn(conversation_id, path[:last], path[last].content, path[last], attachments=path[last].attachments)


def begin(store: Conversations, turn: Turn, system_prompt: str) -> Turn:
    """The engine accepted the prompt: save the conversation (with the system prompt it was sent)
    and the user's message; returns the turn with both."""
    if turn.conversation_id is None:
        title_text = turn.user_text if turn.user_text.strip() else ", ".join(a.name for a in turn.attachments)
        conversation_id = store.create(title_text, system_prompt).id
    else:
        conversation_id = turn.conversation_id
        if store.get(conversation_id).system_prompt != system_prompt:
            store.set_system_prompt(conversation_id, system_prompt)
    user = turn.user
    if user is None:
        parent = turn.prior[-1].id if turn.prior else None
        user = store.add_child(conversation_id, parent, "user", turn.user_text, attachments=turn.attachments)
    return dataclasses.replace(turn, conversation_id=conversation_id, user=user)


def save_reply(
    store: Conversations,
    turn: Turn,
    text: str,
    model: str | None,
    sampling: dict[str, Any],
    last: ChatDelta,
    finish_reason: str,
    thinking: float | None = None,
) -> StoredMessage:
    """The reply, whole or stopped, as the newest version after the user's message (or after the
    turn's last tool round), with its stats.

    `finish_reason` is used where the engine gave none (the stream was stopped or failed)."""
    if turn.conversation_id is None or turn.user is None:
        raise ValueError("save_reply needs a turn that has begun")
    stats = reply_stats(model, sampling, last, finish_reason, thinking)
    return store.add_child(turn.conversation_id, _last_id(turn), "assistant", text, stats)


def reply_stats(
    model: str | None, sampling: dict[str, Any], last: ChatDelta, finish_reason: str, thinking: float | None = None
) -> ReplyStats:
    """A reply's stats from its last delta; `finish_reason` where the engine gave none;
    `thinking`: the seconds it thought (app.engine.reasoning.ThinkingClock)."""
    return ReplyStats(
        model=model,
        sampling=sampling,
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        ttft=last.ttft,
        elapsed=last.elapsed,
        finish_reason=last.finish_reason or finish_reason,
        thinking=thinking,
        cached_tokens=last.cached_tokens,
        spec_tokens_per_step=last.spec_tokens_per_step,
        spec_acceptance=last.spec_acceptance,
    )


def save_round(
    store: Conversations,
    turn: Turn,
    text: str,
    calls: tuple[ToolCallRecord, ...],
    stats: ReplyStats,
) -> Turn:
    """A reply that called tools, with the calls and their results; the next reply follows it."""
    if turn.conversation_id is None or turn.user is None:
        raise ValueError("save_round needs a turn that has begun")
    saved = store.add_child(turn.conversation_id, _last_id(turn), "assistant", text, stats, calls)
    return dataclasses.replace(turn, rounds=(*turn.rounds, saved))


def _last_id(turn: Turn) -> int:
    return turn.rounds[-1].id if turn.rounds else turn.user.id


def _require_text(text: str, attachments: Sequence[Attachment] = ()) -> None:
    # A file alone is a message ("summarise this" is often left unsaid).
    if (not text or not text.strip()) and not attachments:
        raise UserError("chat.empty_message")
