"""The settings events and the history after a restart, through `gradio_client` against the
real app server and the shared tiny-model engine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gradio_client.exceptions import AppError

from app.application import App
from app.engine import Engine
from app.settings import AppPaths, AppSettings
from app.settings_file import load_settings
from tests.ui_clients import SHORT, app_fixture, connect_fixture, make_ui_app, server_fixture  # noqa: F401


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
        "temperature": 0.7,
        "max_tokens": 16,
        "ignore_eos": True,
    }
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
