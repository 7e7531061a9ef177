"""How a reply reaches the page: bytes per streamed update, the first words at once, a closed
tab aborting the request, and a saved chat opening whatever its stats.

The long replies come from the stand-in engine (benchmarks/page_engine.py): what is measured is
the app's side, the wire and the stream it closes; that closing a stream aborts the request in
vLLM is tested on the real engine (test_engine.py, test_ui_chat.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from app.config.settings import SamplingSettings
from app.conversations import Turn
from app.engine import Capabilities, ChatDelta, Engine, EngineState, EngineStatus
from app.ui.chat_panel import ChatPanel
from benchmarks.page_engine import PageEngine
from tests.conftest import wait_until
from tests.ui_clients import ARTIFACTS, QueueSession, make_ui_app, texts

REPLY_TOKENS = 2000


def test_bytes_per_streamed_update_stay_flat_as_a_2000_token_reply_grows(make_app: Any, start_server: Any) -> None:
    # 8,000 characters of Markdown (some Chinese) in 6 s: updates are spaced out as the reply grows.
    engine = PageEngine(tokens=REPLY_TOKENS, rate=330)
    server = start_server(make_ui_app(make_app, engine, SamplingSettings()))
    session = QueueSession(server.url)
    messages = session.run("send", ["Write a long story about the sea.", None, "", None, ""])
    updates = [(size, m) for size, m in messages if m.get("msg") == "process_generating"]
    final = messages[-1][1]
    assert final["success"], final
    reply = texts(final["output"]["data"][0])[1][1]
    # The first two carry the chat so far (the user's message, then the reply's first words), the
    # last the saved reply with its speed line; in between only the reply grows. Later updates
    # carry more new text (they are spaced out as the reply grows, see chat.py): what must not
    # grow is the rest of an update.
    sizes = [size for size, _ in updates[2:-1]]
    overheads = [size - _new_text_bytes(m) for size, m in updates[2:-1]]
    quarter = len(sizes) // 4
    means = [round(sum(part) / len(part), 1) for part in (sizes[i * quarter : (i + 1) * quarter] for i in range(4))]
    report = {
        "reply_tokens": REPLY_TOKENS,
        "reply_chars": len(reply),
        "updates": len(updates),
        "first_update_bytes": updates[0][0],
        "mean_update_bytes_by_quarter": means,
        "overhead_bytes_first_last_quarter": [max(overheads[:quarter]), max(overheads[-quarter:])],
        "max_update_bytes": max(sizes),
        "final_message_bytes": messages[-1][0],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "stream_bytes.json").write_text(json.dumps(report, indent=2))
    print("\nstreamed update sizes:", report)
    assert len(reply) > 2000 and len(updates) > 20
    # Each update carries only the text that arrived since the last one, never the reply so far:
    # its overhead is the same at the end of a 5,000-character reply as at the start.
    assert max(overheads[-quarter:]) <= max(overheads[:quarter]) + 16, report
    # The last message carries the whole chat once; no update comes near it.
    assert max(sizes) < messages[-1][0] / 4, report


def _new_text_bytes(message: dict) -> int:
    """Bytes of the reply text an update appends, as they appear on the wire (UTF-8 JSON)."""
    appended = [op[2] for op in message["output"]["data"][0] if op[0] == "append" and isinstance(op[2], str)]
    return sum(len(json.dumps(text, ensure_ascii=False).encode()) - 2 for text in appended)


class ScriptedEngine:
    """Replies with fixed pieces of text, a few milliseconds apart: the first piece decodes to
    nothing, as a first token that is half of a character does."""

    status = EngineStatus(EngineState.READY, model="scripted")
    model_name = "scripted"
    capabilities = Capabilities()

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def resolve_sampling(self, overrides: dict | None = None) -> SamplingSettings:
        return SamplingSettings.from_dict(overrides or {})

    async def stream_chat(self, messages: Any, sampling: SamplingSettings, request_id: str | None = None) -> Any:
        for i, piece in enumerate(self.pieces):
            await asyncio.sleep(0.005)
            last = i == len(self.pieces) - 1
            yield ChatDelta(piece, 5, i + 1, "length" if last else None, ttft=0.005, elapsed=0.005 * (i + 1))


def reply_texts(updates: list[tuple]) -> list[str]:
    """The reply shown by each streamed update (none while only the user's message shows)."""
    shown = [texts(chatbot) for chatbot, *_ in updates]
    return [bubbles[1][1] for bubbles in shown if len(bubbles) > 1]


def test_first_words_show_as_soon_as_they_arrive(make_app: Any) -> None:
    app = make_app(ScriptedEngine(["", "Hello", " there", ",", " friend", "."]))
    panel = ChatPanel(app, chatbot=None)

    async def run() -> list[tuple]:
        return [update async for update in panel._stream(Turn(None, [], "Hi"), "", "en")]

    replies = reply_texts(asyncio.run(run()))
    # Updates are paced (one per 50 ms at first), but the pacing starts with the first text:
    # the empty first piece (no reply bubble yet) does not hold "Hello" back for a whole interval.
    assert replies[0] == "Hello", replies
    assert replies[-1].startswith("Hello there, friend.")


def test_closing_the_tab_while_the_message_shows_aborts_the_request(engine_loop: Any, make_app: Any) -> None:
    # This reply takes 33 s: only an abort ends it within 2 s.
    engine = PageEngine(tokens=REPLY_TOKENS, rate=60)
    app = make_ui_app(make_app, engine, SamplingSettings())
    panel = ChatPanel(app, chatbot=None)

    async def open_and_leave() -> list[tuple]:
        stream = panel._stream(Turn(None, [], "Write a long story about the sea."), "", "en")
        preview = await anext(stream)
        # The engine has the request already: it reads the prompt while the message shows.
        await asyncio.sleep(0.2)
        running = engine.num_unfinished_requests()
        await stream.aclose()
        return [preview, running]

    preview, running = engine_loop.run(open_and_leave())
    assert texts(preview[0]) == [("user", "Write a long story about the sea.")]
    assert running == 1
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=2)
    assert app.conversations.list() == []


def test_a_reply_dropped_between_two_updates_is_stopped_and_saved(engine_loop: Any, make_app: Any) -> None:
    """Gradio's cancel can land while its task is between two updates of a reply, before the
    queue has stored the reply to close it (seen on a busy machine when Stop is clicked at once):
    the reply is left paused, and its request would run to the last token."""
    engine = PageEngine(tokens=REPLY_TOKENS, rate=60)
    app = make_ui_app(make_app, engine, SamplingSettings())
    panel = ChatPanel(app, chatbot=None)
    dropped: list[Any] = []

    async def stop_between_updates() -> int:
        async def gradio_step() -> None:
            stream = panel._stream(Turn(None, [], "Write a long story about the sea."), "", "en", "tab", "key")
            dropped.append(stream)  # held, as Gradio's queue holds it: never closed by the collector
            while len(reply_texts([await anext(stream)])) == 0:
                pass
            await asyncio.sleep(30)  # Gradio's own work between two updates

        task = asyncio.ensure_future(gradio_step())
        await asyncio.sleep(1)
        running = engine.num_unfinished_requests()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return running

    assert engine_loop.run(stop_between_updates()) == 1
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=2), "the request ran on"
    (conv,) = app.conversations.list()
    reply = app.conversations.messages(conv.id)[-1]
    assert reply.role == "assistant" and reply.stats.finish_reason == "abort" and reply.content, reply


def test_the_page_opens_a_chat_whatever_its_stats_and_refuses_bad_imports(make_app: Any, tmp_path: Path) -> None:
    """An import with odd stats is refused with the one sentence; a chat whose stored stats went
    odd (an older version, a hand edit) still opens first on page load, its bad stat left out."""
    import sqlite3

    from app.conversations import ReplyStats

    app = make_app(Engine())
    panel = ChatPanel(app, chatbot=None)
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "title": "t",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "stats": {"ttft": "soon"}},
                ],
            }
        )
    )
    request = type("Request", (), {"headers": {"accept-language": "en"}})()
    with pytest.raises(Exception, match="not a conversation this app can import"):
        panel.import_file(str(bad), request)
    assert app.conversations.list() == []

    conv = app.conversations.create("odd stats")
    app.conversations.add_message(conv.id, "user", "q")
    reply = app.conversations.add_message(conv.id, "assistant", "a", ReplyStats("tiny", {}, 3, 9, 0.5, 1.5, "stop"))
    with sqlite3.connect(app.paths.history_db) as db:
        db.execute("UPDATE replies SET ttft = 'soon', elapsed = 'long' WHERE message_id = ?", (reply.id,))
    shown = panel.open_latest(request)[0]
    # The reply, then its speed line in a bubble of its own.
    assert [m["role"] for m in shown] == ["user", "assistant", "assistant"]
    assert shown[1]["content"][0]["text"] == "a"
    speed = shown[2]["content"][-1]["text"]
    assert "9 tokens" in speed and "first token" not in speed


def test_no_event_shows_progress_on_the_chat_only_slow_actions_on_their_report(engine: Engine, make_app: Any) -> None:
    """The page refreshes the loading status of every component any event has had as a progress
    target, on every update a streaming reply sends, copying each one's value: with the chat among
    them, a long chat made the page busy most of the time while a reply streamed."""
    from app.ui.i18n import gradio_i18n
    from app.ui.layout import build_blocks

    blocks = build_blocks(make_ui_app(make_app, engine), gradio_i18n())
    dependencies = blocks.get_config_file()["dependencies"]
    named = [(dep["api_name"], dep["show_progress_on"]) for dep in dependencies if dep["show_progress_on"]]
    kinds = {type(blocks.blocks[i]).__name__ for _, targets in named for i in targets}
    # Loading a model, the fit check, a hub search, the doctor, an MCP server check...: each on
    # its own report; nothing else, and never the chat.
    assert all(len(targets) == 1 for _, targets in named), named
    # Reports are Markdown notes; the attachment tray reports a file being read on its chips.
    assert kinds <= {"Markdown", "HTML"}, kinds
    targets = [blocks.blocks[i] for _, ids in named for i in ids]
    html = {target.elem_id for target in targets if type(target).__name__ == "HTML"}
    assert html <= {"attachment-chips"}, html
    assert 5 <= len(named) <= 12, named
    assert all(dep["show_progress_on"] == [] for dep in dependencies if not dep["show_progress_on"])
