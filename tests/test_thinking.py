"""A reasoning model in the chat: the thinking switch reaches its chat template, vLLM holds its
thinking to the budget, and the thinking shows folded with how long it took, after a reload too.

The model is the tiny one with <think> tokens and a template that opens the thinking or, switched
off, hands the model an empty one (as Qwen3's newer templates do), run with vLLM's own `qwen3`
reasoning parser: the engine's reasoning config then knows the tags, so a budget applies."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from app.config.settings import AppSettings, SamplingSettings
from app.conversations import Turn
from app.engine import Engine
from app.engine.reasoning import THINK_CLOSE, THINK_OPEN
from app.engine.types import ChatOptions
from app.ui.chat_panel import ChatPanel
from tests.conftest import tiny_engine_settings
from tests.tiny_model import build_tiny_model

# Long enough that the random model is still thinking when a budget of 6 runs out; ignore_eos so
# that an answer follows the forced end of the thinking.
SAMPLING = SamplingSettings(temperature=1.0, seed=5, max_tokens=24, ignore_eos=True)
BUDGET = 6
QUESTION = "What is 2 + 2?"


@pytest.fixture(scope="module")
def thinking_engine(engine_loop: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    model = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-thinking", thinking=True)
    eng = Engine()
    engine_loop.run(eng.load(str(model), dataclasses.replace(tiny_engine_settings(), reasoning_parser="qwen3")))
    yield eng
    engine_loop.run(eng.unload())


def _request(lang: str = "en") -> Any:
    return type("Request", (), {"headers": {"accept-language": lang}, "session_hash": "page-1"})()


def thinking_tokens(engine_loop: Any, engine: Engine, budget: int | None) -> int | None:
    """How many tokens the reply had written when its thinking ended."""

    async def run() -> int | None:
        text = ""
        options = ChatOptions(thinking_budget=budget)
        async for delta in engine.stream_chat([{"role": "user", "content": QUESTION}], SAMPLING, options=options):
            text += delta.text
            if THINK_CLOSE in text:
                return delta.completion_tokens
        return None

    return engine_loop.run(run(), timeout=120)


def reply_to(engine_loop: Any, panel: ChatPanel, text: str) -> Any:
    async def run() -> None:
        async for _ in panel._stream(Turn(None, [], text), "", "en", "page-1"):
            pass

    engine_loop.run(run(), timeout=120)
    conv = panel.app.conversations.list(limit=1)[0]
    return conv, panel.app.conversations.messages(conv.id)[-1]


def test_switch_budget_and_folded_thinking_of_a_reasoning_model(
    engine_loop: Any, thinking_engine: Engine, make_app: Any
) -> None:
    app = make_app(thinking_engine, AppSettings(sampling=SAMPLING))
    panel = ChatPanel(app, chatbot=None)
    tools = panel.tools
    switch, budget, _ = tools.refresh(_request())
    assert switch["visible"] is True and switch["value"] is True and budget["visible"] is True

    # Left alone, the random model thinks to the end of the reply (where the tag is closed for
    # it); vLLM ends the thinking after the budget.
    assert thinking_tokens(engine_loop, thinking_engine, None) == SAMPLING.max_tokens
    assert thinking_tokens(engine_loop, thinking_engine, BUDGET) == BUDGET + 1  # its </think> too

    tools.set_budget(BUDGET, _request())
    conv, reply = reply_to(engine_loop, panel, QUESTION)
    # Thinking from the first token (the template opened it), ended after the budget, an answer
    # after it.
    assert reply.content.startswith(THINK_OPEN) and THINK_CLOSE in reply.content
    assert reply.content.partition(THINK_CLOSE)[2].strip()
    assert reply.stats.thinking is not None and 0 <= reply.stats.thinking <= reply.stats.elapsed

    # Reopened: the thinking is folded, with its time, apart from the answer.
    shown = panel.open(conv.id, _request())[0]
    folded = [m for m in shown if (m.get("metadata") or {}).get("title") == "Thought"]
    assert len(folded) == 1 and folded[0]["metadata"]["duration"] == round(reply.stats.thinking, 1)
    assert folded[0]["metadata"]["status"] == "done"

    # Switched off: the template hands the model an empty thinking; the reply is all answer.
    tools.set_thinking(False)
    _, plain = reply_to(engine_loop, panel, QUESTION)
    assert THINK_OPEN not in plain.content and plain.stats.thinking is None
    assert plain.stats.prompt_tokens > reply.stats.prompt_tokens  # the empty <think></think>
    tools.set_thinking(True)

    # A budget that is no number of tokens is refused in one sentence; the one set stays.
    with pytest.raises(gr.Error, match="whole number of tokens"):
        tools.set_budget(-3, _request())
    with pytest.raises(gr.Error, match="整数"):
        tools.set_budget(2.5, _request("zh-CN"))
    assert app.tools.settings.thinking_budget == BUDGET
    tools.set_budget(None, _request())
    assert app.tools.settings.thinking_budget is None and tools.options().thinking_budget is None


def test_a_model_without_a_reasoning_parser_gets_no_budget(engine: Engine, make_app: Any, tmp_path: Path) -> None:
    panel = ChatPanel(make_app(engine), chatbot=None)
    panel.tools.set_budget(100, _request())
    # Kept for the next reasoning model, but never sent to vLLM (which would refuse the request).
    assert panel.app.tools.settings.thinking_budget == 100 and panel.tools.options() is None
