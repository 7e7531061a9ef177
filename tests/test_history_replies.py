"""The one reply recorder the chat and the tool loop save through: when the user's message is
saved, what a reply stopped, failed or finished leaves in the history, and what its speed line
says."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.conversations import Conversations, new_turn, stats_line
from app.engine import ChatDelta
from app.history.records import CallState, ToolCallRecord
from app.history.replies import Outcome, ReplyRecorder


@pytest.fixture
def store(tmp_path: Path) -> Conversations:
    return Conversations(tmp_path / "history.sqlite3")


def recorder(store: Conversations, began: list | None = None) -> ReplyRecorder:
    on_begin = (
        (lambda before, begun: began.append((before.conversation_id, begun.conversation_id)))
        if began is not None
        else None
    )
    return ReplyRecorder(store, new_turn(store, None, "Hello"), "Be brief.", "tiny", {"temperature": 0.7}, on_begin)


def delta(text: str, tokens: int, finish: str | None = None) -> ChatDelta:
    return ChatDelta(
        text, prompt_tokens=5, completion_tokens=tokens, finish_reason=finish, ttft=0.1, elapsed=0.1 * tokens
    )


def test_nothing_is_saved_until_the_engine_answers(store: Conversations) -> None:
    reply = recorder(store)
    reply.finish(Outcome.STOPPED)
    assert store.list() == []
    reply.finish(Outcome.FAILED)
    assert store.list() == []


def test_the_first_word_saves_the_chat_and_the_message_once(store: Conversations) -> None:
    began: list = []
    reply = recorder(store, began)
    reply.feed(delta("Hi", 1))
    reply.feed(delta(" there", 2))
    assert began == [(None, reply.turn.conversation_id)]
    conversation = store.get(reply.turn.conversation_id)
    assert conversation.system_prompt == "Be brief."
    assert [(m.role, m.content) for m in store.messages(conversation.id)] == [("user", "Hello")]


def test_a_stopped_reply_keeps_its_words_and_says_stopped(store: Conversations) -> None:
    reply = recorder(store)
    reply.feed(delta("Once upon", 2))
    reply.finish(Outcome.STOPPED)
    saved = reply.saved()
    assert [(m.role, m.content) for m in saved] == [("user", "Hello"), ("assistant", "Once upon")]
    assert "stopped" in stats_line(saved[1].stats)


def test_a_finished_reply_says_so_even_when_the_engine_named_no_reason(store: Conversations) -> None:
    """A remote server may end a stream without a finish reason: the chat and the tool loop both
    save that reply as finished, not as stopped."""
    reply = recorder(store)
    reply.feed(delta("Done.", 2))
    reply.finish(Outcome.FINISHED)
    stats = reply.saved()[1].stats
    assert stats.finish_reason == "stop"
    assert "stopped" not in stats_line(stats)


def test_an_empty_answer_is_saved_but_an_empty_stop_is_not(store: Conversations) -> None:
    finished = recorder(store)
    finished.feed(delta("", 1, "stop"))
    finished.finish(Outcome.FINISHED)
    assert [m.content for m in finished.saved()] == ["Hello", ""]
    stopped = recorder(store)
    stopped.feed(delta("", 0))
    stopped.finish(Outcome.STOPPED)
    assert [m.content for m in stopped.saved()] == ["Hello"]


def test_tool_rounds_are_saved_in_order_and_a_stopped_round_keeps_its_calls(store: Conversations) -> None:
    reply = recorder(store)
    reply.feed(delta("Let me check.", 3))
    done = ToolCallRecord("c1", "clock", "{}", CallState.DONE, "12:00")
    reply.end_round("Let me check.", (done,), delta("", 3, "tool_calls"))
    reply.feed(delta("Checking again", 2))
    waiting = ToolCallRecord("c2", "clock", "{}", CallState.STOPPED, "")
    reply.finish(Outcome.STOPPED, (waiting,))
    saved = reply.saved()
    assert [m.content for m in saved] == ["Hello", "Let me check.", "Checking again"]
    assert [c.call_id for c in saved[1].tool_calls] == ["c1"]
    assert [(c.call_id, c.state) for c in saved[2].tool_calls] == [("c2", CallState.STOPPED)]
    assert saved[1].stats.finish_reason == "tool_calls"
    assert saved[2].stats.finish_reason == "abort"
