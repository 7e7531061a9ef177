"""The chat tab's "send" event as a browser tab drives it: Gradio's queue protocol over SSE.

`gradio_client` finds the endpoints and their inputs; the events themselves run here on one
async HTTP client, with the exact bytes of every update on the wire. (gradio_client's own
streaming polls, with a 50 ms sleep per pending event and a 1 ms spin per job, which would
measure the client rather than the app.)

Each reply gets its own session, opened beforehand as a page load would: Gradio builds its
per-session state on a session's first event, a once-per-tab cost that is not the reply's.
A fresh session also means a fresh conversation, so every prompt has the same length.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

SEND_API = "/send"
# A cheap event to open a session with: the saved-conversation search, for a title nobody has.
LIST_API = "/conversations"
NO_MATCH = "no conversation has this title 1f0c"


@dataclass(frozen=True)
class Update:
    """One streamed update of the chat: when it arrived, its size on the wire, whether the chat
    shows the assistant's reply yet (the first updates may show only the user's message), and
    how many of its bytes are reply text new in this update (as JSON writes it)."""

    time: float  # time.perf_counter()
    size: int  # bytes of the SSE message
    replying: bool
    new_text_bytes: int


class GradioChat:
    """Sends chat messages to the app's UI at `url` and streams the updates back."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=httpx.Limits(max_connections=None))
        self._endpoints: dict[str, Any] = {}
        self._join_url = self._stream_url = ""

    async def connect(self) -> None:
        from gradio_client import Client

        client = await asyncio.to_thread(Client, self.url, verbose=False)
        client.close()
        self._endpoints = {e.api_name: e for e in client.endpoints.values() if getattr(e, "api_name", None)}
        self._join_url, self._stream_url = client.sse_data_url, client.sse_url

    async def close(self) -> None:
        await self._http.aclose()

    async def open_session(self) -> str:
        session = uuid.uuid4().hex
        async for _ in self._event(LIST_API, [NO_MATCH], session):
            pass
        return session

    async def reply(self, session: str, message: str, system_prompt: str = "") -> AsyncIterator[Update]:
        """Yields every streamed update of the reply; returns when the event completes."""
        from gradio_client.utils import apply_diff

        chat: Any = None
        text = ""
        # The last input is the page's Stop key (app/ui/chat_stream.py ReplyStops): none here.
        async for event, size, arrived in self._event(SEND_API, [message, system_prompt, ""], session):
            if event["msg"] != "process_generating":
                continue
            # The first update carries the chatbot's whole value, the next ones diffs against it.
            shown = event["output"]["data"][0]
            chat = shown if chat is None else apply_diff(chat, shown)
            reply = _reply_text(chat)
            new = (reply or "")[len(text) :] if (reply or "").startswith(text) else reply or ""
            text = reply or ""
            # On the wire the text is UTF-8 JSON (Chinese takes 3 bytes a character, not a 6-byte escape).
            yield Update(arrived, size, reply is not None, len(json.dumps(new, ensure_ascii=False).encode()) - 2)

    async def _event(self, api_name: str, inputs: list[Any], session: str) -> AsyncIterator[tuple[dict, int, float]]:
        """Runs one event; yields (message, bytes, arrival time) for each of its messages until it completes."""
        endpoint = self._endpoints[api_name]
        payload = {
            # gr.State inputs (the conversation id) are not API inputs: they are filled in empty.
            "data": list(endpoint.insert_empty_state(*inputs)),
            "fn_index": endpoint.fn_index,
            "session_hash": session,
            "event_data": None,
        }
        joined = await self._http.post(self._join_url, json=payload)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        async with self._http.stream("GET", self._stream_url, params={"session_hash": session}) as response:
            response.raise_for_status()
            buffer = b""
            async for chunk in response.aiter_bytes():
                arrived = time.perf_counter()
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    if not raw.startswith(b"data:"):
                        continue
                    event = json.loads(raw[len(b"data:") :])
                    kind = event.get("msg")
                    if kind == "close_stream":
                        raise RuntimeError(f"the UI closed the stream before {api_name} completed")
                    if event.get("event_id") != event_id:
                        continue  # a heartbeat
                    yield event, len(raw) + 2, arrived
                    if kind == "process_completed":
                        if not event.get("success"):
                            raise RuntimeError(f"the UI answered {api_name} with an error: {event.get('output')}")
                        return
        raise RuntimeError(f"the UI's event stream ended before {api_name} completed")


def _reply_text(chat: list[dict[str, Any]] | None) -> str | None:
    """The text of the assistant messages after the last user message; None while there are none."""
    parts = []
    for message in reversed(chat or []):
        if message.get("role") != "assistant":
            break
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        parts.append("".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"))
    return "".join(reversed(parts)) if parts else None
