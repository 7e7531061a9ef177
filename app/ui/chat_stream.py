"""A reply's engine stream as the chat pane reads it: the first delta (requested before the
message is shown), closing it on Stop or a closed tab, Stop for the replies Gradio's own cancel
misses, and the pace of the page's updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import gradio as gr

from app.engine import ChatDelta, wait_through_cancellation
from app.i18n import translate

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


# How long the page's own Stop leaves Gradio's cancel, sent with it, to land first: a second
# cancellation would only interrupt the cleanup the first one started.
STOP_GRACE_S = 0.05
# Stops remembered (all tabs together), for replies that begin after their Stop (see ReplyStops).
REMEMBERED_STOPS = 256


class ReplyStops:
    """Stop, where Gradio's own cancel misses the reply: clicked before the page has sent the
    reply's event (no cancel is sent then), or before the queue has told it the event's id (the
    cancel is refused, 422, and the reply runs to its end; both seen on a busy machine).

    The page sends the same key (assets/chat.js) with each reply's event and with Stop, which
    comes as an event of its own: a reply running under that key is cancelled, as Gradio's cancel
    does, and one that begins after its Stop does not start."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], set[asyncio.Task]] = {}
        self._stopped: OrderedDict[tuple[str, str], None] = OrderedDict()
        # Per session: the new chat its latest reply began in, until its next reply starts. A Stop
        # right after the first words can cancel the update that tells the page the chat's id.
        self._new_chats: OrderedDict[str, int] = OrderedDict()
        # Replies being closed after their task dropped them (see `run`), held until closed.
        self._closing: set[asyncio.Future] = set()

    def began_new_chat(self, session: str, conversation_id: int) -> None:
        self._new_chats[session] = conversation_id
        while len(self._new_chats) > REMEMBERED_STOPS:
            self._new_chats.popitem(last=False)

    def new_chat(self, session: str) -> int | None:
        """The chat the session's latest reply began, if that reply started a new one."""
        return self._new_chats.get(session)

    async def run(self, session: str, key: str, lang: str, updates: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
        """The reply's `updates`, answered under `key` by the current task (Gradio runs an event's
        every step in one task). A reply stopped before it began fails at once, silently: the page
        then puts its message back into the box.

        A reply whose task ends while it is paused between two updates (Gradio's cancel landing
        there, before the queue has stored the reply to close it) would keep its engine request
        running to the last token: it is closed here, which aborts the request and saves what it
        wrote as stopped."""
        self._new_chats.pop(session, None)
        async with contextlib.aclosing(updates):
            if key and (session, key) in self._stopped:
                raise gr.Error(translate("chat.stopped_before_reply", lang), visible=False, print_exception=False)
            task = asyncio.current_task()
            if task is None:
                raise RuntimeError("a reply runs in a task")
            orphaned = functools.partial(self._close_orphan, updates)
            task.add_done_callback(orphaned)
            tasks = self._running.setdefault((session, key), set()) if key else set()
            tasks.add(task)
            try:
                async for update in updates:
                    yield update
            finally:
                task.remove_done_callback(orphaned)
                tasks.discard(task)
                if key and not tasks:
                    self._running.pop((session, key), None)

    def _close_orphan(self, updates: AsyncGenerator[Any, None], _task: asyncio.Task) -> None:
        closing = asyncio.ensure_future(updates.aclose())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def stop(self, key: str, request: gr.Request) -> None:
        """The page's Stop, for the replies under `key` in the page's session."""
        if not key:
            return
        at = (request.session_hash or "", key)
        self._stopped[at] = None
        while len(self._stopped) > REMEMBERED_STOPS:
            self._stopped.popitem(last=False)
        tasks = set(self._running.get(at, ()))
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for task in tasks:
            if not task.done() and not task.cancelling():
                task.cancel()


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
