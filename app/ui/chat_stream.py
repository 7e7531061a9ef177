"""A reply's engine stream as the chat pane reads it: the first delta (requested before the
message is shown), closing it on Stop or a closed tab, and the pace of the page's updates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from app.engine import ChatDelta, wait_through_cancellation

# On every update the browser reads the whole growing message again (Gradio lexes all of its
# Markdown, then draws anew the blocks that changed), so its work per update grows with the
# reply: updates are spaced out in proportion to the reply's length, keeping the page's work per
# second flat (20 updates/s up to 500 characters, 5/s from 2,000 on; a flat 20/s let a key press
# wait 88 ms late in a 2,000-token reply). The bytes per update stay flat anyway: Gradio sends
# only the new text.
MIN_UPDATE_INTERVAL_S = 0.05
MAX_UPDATE_INTERVAL_S = 0.2
UPDATE_INTERVAL_PER_CHAR_S = 0.0001


async def chained(first: asyncio.Future, rest: AsyncIterator[ChatDelta]) -> AsyncIterator[ChatDelta]:
    """The stream's first delta (already requested) and then the rest of it."""
    delta = await first
    if delta is None:
        return
    yield delta
    async for delta in rest:
        yield delta


async def close_stream(
    first: asyncio.Future, deltas: AsyncIterator[ChatDelta], stream: AsyncIterator[ChatDelta]
) -> bool:
    """Stop button, closed tab or error: closing the stream aborts the request in the engine.
    A first delta nobody read (the tab went away during the preview) is dropped: the stream can
    only be closed once that read has ended. Returns whether a Stop landed meanwhile, for the
    caller to pass on after its cleanup."""
    first.cancel()
    stopped_meanwhile = await wait_through_cancellation(first)
    if not first.cancelled():
        first.exception()  # read (and shown through `deltas`) or dropped, never logged as lost
    await deltas.aclose()
    await stream.aclose()
    return stopped_meanwhile


class Pacer:
    """When the growing reply is next shown: its first delta at once, then at `update_interval`
    from the first visible text (a first token that decodes to nothing holds nothing back)."""

    def __init__(self) -> None:
        self.started = False
        self.last_update: float | None = None

    def due(self, text: str) -> bool:
        now = time.monotonic()
        if text and (self.last_update is None or now - self.last_update >= update_interval(len(text))):
            self.last_update = now
        elif self.started:
            return False
        self.started = True
        return True


def update_interval(reply_chars: int) -> float:
    """Seconds between two updates of a reply that is this long."""
    return min(MAX_UPDATE_INTERVAL_S, max(MIN_UPDATE_INTERVAL_S, reply_chars * UPDATE_INTERVAL_PER_CHAR_S))
