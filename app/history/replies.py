"""A reply being saved as it streams: one recorder for a plain reply and for the tool loop's
rounds, so that both agree on when the user's message is saved and what "finished" means.

The user's message is saved when the engine accepts the prompt (the first delta or step, see
`turns.begin`); the reply when it ends, as far as it got. A reply that ends with no words is
saved only when the engine finished it (an empty answer is an answer; a Stop before the first
word is not).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.engine.reasoning import ThinkingClock
from app.history.records import StoredMessage, ToolCallRecord
from app.history.turns import Turn, begin, reply_stats, save_reply, save_round

if TYPE_CHECKING:
    from app.engine import ChatDelta
    from app.history.store import Conversations


class Outcome(enum.Enum):
    """How a reply ended; its value is the finish reason saved where the engine gave none."""

    FINISHED = "stop"
    STOPPED = "abort"
    FAILED = "error"


class ReplyRecorder:
    """The turn as far as it is saved, and the reply or round streaming now."""

    def __init__(
        self,
        store: Conversations,
        turn: Turn,
        system_prompt: str,
        model: str | None,
        sampling: dict[str, Any],
        on_begin: Callable[[Turn, Turn], None] | None = None,
    ) -> None:
        """`on_begin(before, begun)`: told once the user's message is saved."""
        self.store = store
        self.turn = turn
        self.system_prompt = system_prompt
        self.model = model
        self.sampling = sampling
        self._on_begin = on_begin
        self.text = ""
        self.last: ChatDelta | None = None
        self._clock = ThinkingClock()
        self._began = False

    @property
    def begun(self) -> bool:
        return self._began

    @property
    def user(self) -> StoredMessage:
        """The user's message, saved or (before the engine accepted it) as it will be."""
        if self.turn.user is not None:
            return self.turn.user
        return StoredMessage(0, "user", self.turn.user_text, 0.0, attachments=self.turn.attachments)

    def start(self) -> None:
        """The engine accepted the prompt: the conversation and the user's message are saved."""
        if self._began:
            return
        before = self.turn
        self.turn = begin(self.store, before, self.system_prompt)
        self._began = True
        if self._on_begin is not None:
            self._on_begin(before, self.turn)

    def feed(self, delta: ChatDelta) -> None:
        self.start()
        self.text += delta.text
        self.last = delta
        self._clock.feed(delta.text, delta.elapsed)

    def end_round(self, text: str, calls: tuple[ToolCallRecord, ...], last: ChatDelta) -> None:
        """A round whose calls have their results: saved; the next round starts empty."""
        stats = reply_stats(self.model, self.sampling, last, "tool_calls", self._clock.seconds(last.elapsed))
        self.turn = save_round(self.store, self.turn, text, calls, stats)
        self.text, self.last, self._clock = "", None, ThinkingClock()

    def finish(self, outcome: Outcome, open_calls: tuple[ToolCallRecord, ...] = ()) -> None:
        """The reply as far as it got (`open_calls`: a round stopped with its calls unfinished)."""
        if not self._began or self.last is None:
            return
        thought = self._clock.seconds(self.last.elapsed)
        if open_calls:
            stats = reply_stats(self.model, self.sampling, self.last, outcome.value, thought)
            self.turn = save_round(self.store, self.turn, self.text, open_calls, stats)
        elif self.text or outcome is Outcome.FINISHED:
            save_reply(self.store, self.turn, self.text, self.model, self.sampling, self.last, outcome.value, thought)

    def saved(self) -> list[StoredMessage]:
        """This turn's messages as saved (the user's message, rounds and reply)."""
        return self.store.messages(self.turn.conversation_id)[len(self.turn.prior) :]
