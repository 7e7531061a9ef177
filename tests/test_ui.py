"""The chat UI's events against the real app server and the shared tiny-model engine:
through `gradio_client`, and through Gradio's own queue protocol (what the browser speaks)
where the client cannot go (edit events, bytes on the wire)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app.application import App
from app.conversations import Turn
from app.engine import ChatDelta, Engine, EngineState, EngineStatus
from app.settings import AppPaths, AppSettings, SamplingSettings
from app.settings_file import load_settings
from app.ui.chat_panel import ChatPanel
from tests.conftest import wait_until

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Needs the `long_engine` fixture: the shared engine stops at 512 tokens.
LONGEST = SamplingSettings(max_tokens=2000, ignore_eos=True)
# Past the end-of-sequence token: the tiny model's random weights would otherwise stop anywhere.
LONG = SamplingSettings(max_tokens=480, ignore_eos=True)
SHORT = SamplingSettings(max_tokens=16, ignore_eos=True)


def make_ui_app(make_app: Any, engine: Engine, sampling: SamplingSettings = SHORT) -> App:
    return make_app(engine, AppSettings(sampling=sampling))


@pytest.fixture
def app(engine: Engine, make_app: Any) -> App:
    return make_ui_app(make_app, engine)


@pytest.fixture
def server(app: App, start_server: Any) -> Any:
    return start_server(app)


@pytest.fixture
def connect(start_server: Any) -> Any:
    """connect(server, lang=None) -> gradio_client.Client; every client is closed before its server stops
    (an open client keeps a heartbeat stream that holds the server's shutdown)."""
    clients: list[Client] = []

    def make(server: Any, lang: str | None = None) -> Client:
        headers = {"Accept-Language": lang} if lang else None
        clients.append(Client(server.url, verbose=False, headers=headers))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def texts(chatbot: list[dict]) -> list[tuple[str, str]]:
    """(role, text) of each chatbot bubble."""
    return [(m["role"], "".join(part.get("text", "") for part in m["content"])) for m in chatbot]


class QueueSession:
    """One browser-like session over Gradio's queue: join an event, read its server-sent events."""

    def __init__(self, url: str, lang: str = "en") -> None:
        self.url = url
        self.session_hash = uuid.uuid4().hex[:11]
        self.headers = {"Accept-Language": lang}
        self.config = httpx.get(f"{url}/config").json()

    def fn_index(self, api_name: str) -> int:
        return next(d["id"] for d in self.config["dependencies"] if d.get("api_name") == api_name)

    def run(self, api_name: str, data: list, event_data: dict | None = None) -> list[tuple[int, dict]]:
        """All messages of one event as (bytes on the wire, message), until it completes."""
        body = {
            "data": data,
            "event_data": event_data,
            "fn_index": self.fn_index(api_name),
            "trigger_id": None,
            "session_hash": self.session_hash,
        }
        event_id = httpx.post(f"{self.url}/gradio_api/queue/join", json=body, headers=self.headers).json()["event_id"]
        messages = []
        params = {"session_hash": self.session_hash}
        with httpx.stream(
            "GET", f"{self.url}/gradio_api/queue/data", params=params, headers=self.headers, timeout=120
        ) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != event_id:
                    continue
                messages.append((len(line.encode("utf-8")), message))
                if message.get("msg") == "process_completed":
                    return messages
        raise AssertionError("the event stream ended before the event completed")


# ---- streaming, stop, regenerate, edit ------------------------------------------------------


def test_reply_streams_in_several_updates_and_is_saved_with_its_speed_line(
    server: Any, app: App, engine: Engine, connect: Any
) -> None:
    app.update_settings(sampling=dataclasses.replace(LONG, max_tokens=120))
    client = connect(server)
    job = client.submit("Hello, how are you today?", "", api_name="/send")
    updates = list(job)
    assert len(updates) > 3, "the reply came in one piece instead of streaming"
    lengths = [len(texts(u)[1][1]) for u in updates if len(u) > 1]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]

    final = texts(job.outputs()[-1])
    assert final[0] == ("user", "Hello, how are you today?")
    # The last bubble is the speed line: model, tokens, first-token time, tokens/s.
    speed = final[-1][1]
    assert engine.model_name in speed and "120 tokens" in speed and "tokens/s" in speed

    saved = client.predict(api_name="/history")
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    reply = saved["messages"][1]
    assert reply["stats"]["completion_tokens"] == 120
    assert reply["stats"]["finish_reason"] == "length"
    assert reply["stats"]["model"] == engine.model_name
    assert reply["stats"]["ttft"] > 0 and reply["stats"]["sampling"]["max_tokens"] == 120
    assert reply["content"].strip() == final[1][1]


def test_stop_aborts_the_request_in_the_engine_and_keeps_the_partial_reply(
    server: Any, app: App, engine: Engine, connect: Any
) -> None:
    app.update_settings(sampling=LONG)
    client = connect(server)
    job = client.submit("Write a short poem about the sea and the stars.", "", api_name="/send")
    assert wait_until(lambda: len(job.outputs()) >= 3), "no streamed updates"
    assert engine.num_unfinished_requests() == 1
    job.cancel()
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=10), "the engine kept generating"

    def saved_reply() -> dict | None:
        messages = client.predict(api_name="/history").get("messages", [])
        return messages[1] if len(messages) == 2 else None

    assert wait_until(lambda: saved_reply() is not None)
    reply = saved_reply()
    assert reply["stats"]["finish_reason"] == "abort"
    assert 0 < reply["stats"]["completion_tokens"] < LONG.max_tokens
    assert reply["content"]


def test_regenerate_keeps_the_earlier_reply_as_a_version(server: Any, connect: Any) -> None:
    client = connect(server)
    client.predict("What is the capital of France?", "", api_name="/send")
    before = client.predict(api_name="/history")["messages"]
    chatbot = client.predict("", api_name="/regenerate")
    after = client.predict(api_name="/history")["messages"]
    # Both replies answer the one question; the new one is shown, marked 2/2.
    assert [(m["role"], m["parent"]) for m in after] == [("user", None), ("assistant", 0), ("assistant", 0)]
    assert after[:2] == before
    assert after[2]["created"] > before[1]["created"]
    assert texts(chatbot)[0] == ("user", "What is the capital of France?")
    assert "2/2" in texts(chatbot)[-1][1]


def test_editing_a_message_continues_from_the_new_text(server: Any) -> None:
    session = QueueSession(server.url)
    session.run("send", ["First question", None, "", None])
    session.run("send", ["Second question", None, "", None])
    # Bubble 0 is the first question; edit it: a new branch from there, with a new reply.
    messages = session.run("edit", [None, ""], {"index": 0, "value": "大海和星星", "previous_value": "First question"})
    final = messages[-1][1]
    assert final["success"], final
    shown = texts(final["output"]["data"][0])
    assert shown[0] == ("user", "大海和星星")
    # Under it, the switch back to the first branch; the second question is on that branch only.
    assert "2/2" in shown[1][1]
    assert [role for role, _ in shown] == ["user", "user", "assistant", "assistant"]
    assert all("Second question" not in text for _, text in shown)


# ---- languages and bad input ----------------------------------------------------------------


def test_chinese_text_round_trips_exactly(server: Any, connect: Any) -> None:
    client = connect(server)
    message = "你好，今天过得怎么样？\n请写一首关于大海和星星的短诗。🌊 “引号” 《书名》\n    缩进保留"
    chatbot = client.predict(message, "", api_name="/send")
    assert texts(chatbot)[0] == ("user", message)
    saved = client.predict(api_name="/history")
    assert saved["title"] == "你好，今天过得怎么样？"
    assert saved["messages"][0]["content"] == message
    # The reply as shown is the reply as saved.
    assert saved["messages"][1]["content"].strip() == texts(chatbot)[1][1]


def test_bad_input_gets_a_clear_message_and_nothing_saved_is_lost(
    server: Any, app: App, connect: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    client = connect(server)
    client.predict("Keep this chat", "", api_name="/send")
    kept = client.predict(api_name="/history")

    with pytest.raises(AppError, match="The message is empty"):
        client.predict("   \n ", "", api_name="/send")
    with pytest.raises(AppError, match=r"tokens long, but this model is loaded with a maximum length of 512"):
        client.predict("hello " * 600, "", api_name="/send")
    with pytest.raises(AppError, match="消息为空"):
        connect(server, "zh-CN,zh;q=0.9").predict("", "", api_name="/send")
    with pytest.raises(AppError, match="最大长度为 512"):
        connect(server, "zh-CN").predict("你好" * 600, "", api_name="/send")
    # A refusal is an answer, not a fault: no stack trace in the console that started the app.
    assert "Traceback" not in capfd.readouterr().err

    assert client.predict(api_name="/history") == kept
    assert len(client.predict(api_name="/conversations")) == 1

    app.update_settings()
    settings_before = app.paths.settings_file.read_bytes()
    fields = [0.7, 1.0, 0, 0.0, 256, 1.0, 0.0, 0.0, None, ""]
    with pytest.raises(AppError, match="max_tokens must be at least 1"):
        client.predict(*fields[:4], 0, *fields[5:], api_name="/save_sampling")
    with pytest.raises(AppError, match="top_p 必须大于 0"):
        connect(server, "zh-CN").predict(0.7, 0.0, *fields[2:], api_name="/save_sampling")
    with pytest.raises(AppError, match="top_k must be at least 0"):
        client.predict(*fields[:2], -5, *fields[3:], api_name="/save_sampling")
    assert app.paths.settings_file.read_bytes() == settings_before
    assert app.settings.sampling == SHORT


def test_sampling_settings_apply_to_the_next_message_and_persist(server: Any, app: App, connect: Any) -> None:
    client = connect(server)
    result = client.predict(0.0, 1.0, 0, 0.0, 5, 1.0, 0.0, 0.0, 7, "", api_name="/save_sampling")
    assert "next message" in result
    assert load_settings(app.paths).sampling.max_tokens == 5
    assert load_settings(app.paths).sampling.seed == 7
    client.predict("Hello", "", api_name="/send")
    reply = client.predict(api_name="/history")["messages"][1]
    assert reply["stats"]["completion_tokens"] <= 5
    assert reply["stats"]["sampling"]["temperature"] == 0.0


def test_a_value_equal_to_the_app_default_is_sent_on_a_model_that_differs(server: Any, app: App, connect: Any) -> None:
    """The tiny model's generation_config says temperature 0.9 and top_k 40. The user sets 0.7 (the
    app's own fallback) and leaves top_k at the 40 the panel shows: the engine gets 0.7 and 40."""
    client = connect(server)
    client.predict(0.7, 1.0, 40, 0.0, 16, 1.0, 0.0, 0.0, None, "", api_name="/save_sampling")
    assert json.loads(app.paths.settings_file.read_text())["sampling"] == {
        "temperature": 0.7, "max_tokens": 16, "ignore_eos": True}
    client.predict("Hello", "", api_name="/send")
    used = client.predict(api_name="/history")["messages"][1]["stats"]["sampling"]
    assert (used["temperature"], used["top_k"], used["max_tokens"]) == (0.7, 40, 16)


def test_engine_settings_are_validated_and_saved_for_the_next_load(server: Any, app: App, connect: Any) -> None:
    client = connect(server)
    with pytest.raises(AppError, match="max_model_len must be at least 16"):
        client.predict("balanced", 0.9, 8, "auto", "none", "auto", "auto", api_name="/apply_engine")
    result = client.predict("memory_saver", 0.7, 2048, "float16", "none", "hermes", "none", api_name="/apply_engine")
    assert "when you load a model" in result
    saved = load_settings(app.paths)
    assert saved.preset == "memory_saver"
    assert (saved.engine.max_model_len, saved.engine.dtype, saved.engine.max_num_seqs) == (2048, "float16", 16)
    assert (saved.engine.tool_call_parser, saved.engine.reasoning_parser) == ("hermes", "")


# ---- restart, concurrency, bytes on the wire ------------------------------------------------


def test_history_endpoint_returns_the_saved_chat_after_an_app_restart(
    engine: Engine, make_app: Any, start_server: Any, connect: Any
) -> None:
    first = start_server(make_ui_app(make_app, engine))
    client = connect(first)
    client.predict("Remember me: 记住我", "", api_name="/send")
    saved = client.predict(api_name="/conversations")
    client.close()
    first.stop()

    # A new App over the same VLLM_CHAT_HOME, as after restarting the program.
    restarted = App.build(AppSettings(), AppPaths.default(), engine=engine)
    second = start_server(restarted)
    client = connect(second)
    assert client.predict(api_name="/conversations") == saved
    history = client.predict(api_name="/history")
    assert history["messages"][0]["content"] == "Remember me: 记住我"
    assert history["messages"][1]["stats"]["completion_tokens"] == SHORT.max_tokens


def test_two_tabs_stream_at_the_same_time(server: Any, app: App, engine: Engine, connect: Any) -> None:
    app.update_settings(sampling=LONG)
    jobs = [connect(server).submit(f"Tab {i}: hello", "", api_name="/send") for i in range(2)]
    both_streaming = wait_until(
        lambda: all(len(j.outputs()) >= 2 for j in jobs) and not any(j.done() for j in jobs), timeout=30
    )
    running = engine.num_unfinished_requests()
    for job in jobs:
        job.result()
    assert both_streaming, "the second chat waited for the first one"
    assert running == 2


def test_bytes_per_streamed_update_stay_flat_as_a_2000_token_reply_grows(
    long_engine: Engine, make_app: Any, start_server: Any
) -> None:
    server = start_server(make_ui_app(make_app, long_engine, LONGEST))
    session = QueueSession(server.url)
    messages = session.run("send", ["Write a long story about the sea.", None, "", None])
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
        "reply_tokens": LONGEST.max_tokens,
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
    # the empty first piece does not hold "Hello" back for a whole interval.
    assert replies[:2] == ["", "Hello"], replies
    assert replies[-1].startswith("Hello there, friend.")


def test_closing_the_tab_while_the_message_shows_aborts_the_request(
    engine_loop: Any, long_engine: Engine, make_app: Any
) -> None:
    # The slow engine needs 20 s or more for this reply: only an abort ends it within 2 s.
    engine = long_engine
    app = make_ui_app(make_app, engine, LONGEST)
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


def test_the_page_opens_a_chat_whatever_its_stats_and_refuses_bad_imports(make_app: Any, tmp_path: Path) -> None:
    """An import with odd stats is refused with the one sentence; a chat whose stored stats went
    odd (an older version, a hand edit) still opens first on page load, its bad stat left out."""
    import sqlite3

    from app.conversations import ReplyStats

    app = make_app(Engine())
    panel = ChatPanel(app, chatbot=None)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"title": "t", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "stats": {"ttft": "soon"}}]}))
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
    assert [m["role"] for m in shown] == ["user", "assistant"]
    speed = shown[1]["content"][-1]["text"]
    assert "9 tokens" in speed and "first token" not in speed
