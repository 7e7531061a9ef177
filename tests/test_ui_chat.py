"""The chat UI's reply events against the real app server and the shared tiny-model engine:
stream, stop, regenerate, edit, Chinese text, bad input and two tabs at once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from gradio_client.exceptions import AppError

from app.application import App
from app.engine import Engine
from tests.conftest import wait_until
from tests.ui_clients import LONG, SHORT, QueueSession, app_fixture, connect_fixture, server_fixture, texts  # noqa: F401

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
    # The turn as the live chat shows it when the reply ends (then the saved chat above it, cut
    # back to where the turn starts, sent once as the reply began).
    chatbot, _ = client.predict("", api_name="/regenerate")
    after = client.predict(api_name="/history")["messages"]
    # Both replies answer the one question; the new one is shown, marked 2/2.
    assert [(m["role"], m["parent"]) for m in after] == [("user", None), ("assistant", 0), ("assistant", 0)]
    assert after[:2] == before
    assert after[2]["created"] > before[1]["created"]
    assert texts(chatbot)[0] == ("user", "What is the capital of France?")
    assert "2/2" in texts(chatbot)[-1][1]


def test_editing_a_message_continues_from_the_new_text(server: Any) -> None:
    session = QueueSession(server.url)
    session.run("send", ["First question", None, "", None, ""])
    session.run("send", ["Second question", None, "", None, ""])
    # Bubble 0 is the first question; edit it: a new branch from there, with a new reply. (Inputs:
    # the conversation, the system prompt, whether the whole chat shows, and the page's stop key.)
    messages = session.run(
        "edit", [None, "", False, ""], {"index": 0, "value": "大海和星星", "previous_value": "First question"}
    )
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
    with pytest.raises(AppError, match="top_k must be at least -1"):
        client.predict(*fields[:2], -5, *fields[3:], api_name="/save_sampling")
    assert app.paths.settings_file.read_bytes() == settings_before
    assert app.settings.sampling == SHORT


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
