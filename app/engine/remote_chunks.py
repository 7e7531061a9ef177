"""The chunks a remote OpenAI-compatible server streams, as the app's ChatDeltas: running
token counts, time to first token, and a reasoning parser's thinking put back between tags."""

from __future__ import annotations

import time
from typing import Any

from app.engine.reasoning import ThinkingTags
from app.engine.types import ChatDelta


class ChunkReader:
    """Turns server-sent chunks into ChatDeltas with running totals.

    The exact usage comes in a last chunk after the finish reason, so the finishing delta
    is held back until the stream ends. A reasoning parser on the server splits thinking
    out of the text; it is put back between <think> tags, as a local model writes it.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ttft: float | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.held_text = ""
        self.tags = ThinkingTags()

    def feed(self, chunk: Any) -> list[ChatDelta]:
        """One typed chunk (a chat or a completion chunk) as the deltas it makes."""
        if usage := chunk.usage:
            self.prompt_tokens = usage.prompt_tokens or self.prompt_tokens
            self.completion_tokens = usage.completion_tokens or self.completion_tokens
        out = []
        for choice in chunk.choices[:1]:
            text = self._text(choice)
            if text and not usage:
                self.completion_tokens += 1  # one chunk is about one token until the exact count comes
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
                self.held_text += text
            elif text:
                out.append(self._delta(text, None))
        return out

    def final(self) -> ChatDelta | None:
        if self.finish_reason is None and not self.held_text:
            return None
        return self._delta(self.held_text + self.tags.close(), self.finish_reason or "stop")

    def _text(self, choice: Any) -> str:
        delta = getattr(choice, "delta", None)
        if delta is None:  # a completion chunk
            return choice.text or ""
        extra = delta.model_extra or {}
        thought = extra.get("reasoning") or extra.get("reasoning_content") or ""
        return self.tags.add(thought, delta.content or "")

    def _delta(self, text: str, finish_reason: str | None) -> ChatDelta:
        now = time.perf_counter() - self.start
        if self.ttft is None and text:
            self.ttft = now
        return ChatDelta(
            text=text,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish_reason=finish_reason,
            ttft=self.ttft,
            elapsed=now,
        )
