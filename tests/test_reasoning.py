"""Thinking folded from the first token: vLLM's own reasoning parsers split a streamed reply
into thinking and answer, and the chat's text carries the thinking between <think> tags.

The parsers and the tokenizer are vLLM's and real; the stream is fed token by token as the
engine yields it (the tiny random model never writes a closing tag by itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.conversations import ReplyStats, StoredMessage
from app.engine.reasoning import ReplySplit, ThinkingClock, parser_class
from app.ui.chat_display import display, display_groups
from tests.tiny_model import build_tokenizer

THOUGHT, ANSWER = "Let me think about it.", "The answer is 4."


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from vllm.tokenizers import get_tokenizer

    folder: Path = tmp_path_factory.mktemp("thinking-tokenizer")
    fast = build_tokenizer()
    fast.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    fast.save_pretrained(folder)
    return get_tokenizer(str(folder))


def stream(tokenizer, parser: str, prompt: str, reply: str, stop_after: int | None = None) -> list[str]:
    """What the chat is given step by step for `reply`, one token per step."""
    split = ReplySplit(parser_class(parser, tokenizer, "m"), tokenizer, None, tokenizer.encode(prompt))
    ids = tokenizer.encode(reply)[:stop_after]
    return [split.feed(tokenizer.decode([t]), [t], i == len(ids) - 1) for i, t in enumerate(ids)]


@pytest.mark.parametrize("parser", ["deepseek_r1", "qwen3"])
def test_thinking_opened_by_the_template_is_folded_from_the_first_token(tokenizer, parser):
    steps = stream(tokenizer, parser, "<|im_start|>assistant\n<think>\n", f"{THOUGHT}</think>{ANSWER}")
    assert steps[0].startswith("<think>")
    assert "".join(steps) == f"<think>{THOUGHT}</think>{ANSWER}"


def test_a_model_that_writes_its_own_tag_gets_no_second_one(tokenizer):
    steps = stream(tokenizer, "deepseek_r1", "<|im_start|>assistant\n", f"<think>{THOUGHT}</think>{ANSWER}")
    assert "".join(steps) == f"<think>{THOUGHT}</think>{ANSWER}"


def test_thinking_switched_off_in_the_prompt_leaves_the_answer_plain(tokenizer):
    # Qwen3's template with enable_thinking=False closes an empty thinking block itself.
    prompt = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert "".join(stream(tokenizer, "qwen3", prompt, ANSWER)) == ANSWER


def test_a_reply_stopped_while_thinking_still_closes_its_thinking(tokenizer):
    reply = f"{THOUGHT}</think>{ANSWER}"
    steps = stream(tokenizer, "deepseek_r1", "<|im_start|>assistant\n<think>\n", reply, stop_after=5)
    text = "".join(steps)
    assert text.startswith("<think>") and text.endswith("</think>")
    assert ANSWER not in text


def test_no_parser_for_a_model_without_one(tokenizer):
    assert parser_class("", tokenizer, "m") is None


def test_a_remote_servers_reasoning_field_comes_back_between_tags():
    from openai.types.chat import ChatCompletionChunk

    from app.engine.remote_chunks import ChunkReader

    reader = ChunkReader()
    deltas = [({"reasoning": "Let me "}, None), ({"reasoning": "think."}, None), ({"content": "Four."}, None),
              ({}, "stop")]
    # The chunks as the openai client types them from a vLLM server's stream.
    chunks = [
        ChatCompletionChunk.model_validate({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        for delta, finish in deltas
    ]
    text = "".join(d.text for chunk in chunks for d in reader.feed(chunk))
    final = reader.final()
    assert text + (final.text if final else "") == "<think>Let me think.</think>Four."


def test_the_api_reads_the_reasoning_parser_where_vllm_serve_puts_it():
    """vLLM's serving classes take the parser from the structured-outputs config, which `vllm
    serve` fills in while building its engine; without it /v1 returned thinking as content."""
    import dataclasses

    from app.api.openai import serve_args
    from app.config.settings import EngineSettings

    chosen = dataclasses.replace(EngineSettings(), reasoning_parser="deepseek_r1")
    assert serve_args("m", "m", chosen).structured_outputs_config.reasoning_parser == "deepseek_r1"
    none = dataclasses.replace(EngineSettings(), reasoning_parser="")
    assert serve_args("m", "m", none).structured_outputs_config.reasoning_parser == ""


def test_how_long_a_reply_thought_is_read_from_its_tags_as_it_streams() -> None:
    clock = ThinkingClock()
    for text, elapsed in (("", 0.1), ("<thi", 0.2), ("nk>Hmm", 0.3), (" still</th", 2.0), ("ink>Four.", 2.5)):
        clock.feed(text, elapsed)
    assert clock.seconds(9.0) == pytest.approx(2.5 - 0.3)  # from the step that opened it to the one that closed it
    clock.feed("<think>again", 3.0)  # a second spell (after a tool call) adds up, open ones up to now
    assert clock.seconds(4.0) == pytest.approx(2.2 + 1.0)
    plain = ThinkingClock()
    plain.feed("No thinking here, not even <thin", 0.5)
    plain.feed("g>", 0.6)
    assert plain.seconds(1.0) is None


def test_the_thinking_shows_folded_with_how_long_it_took_and_the_answer_apart() -> None:
    stats = ReplyStats(model="m", completion_tokens=9, ttft=0.1, elapsed=4.0, thinking=3.14)
    reply = StoredMessage(7, "assistant", "<think>Prices: $5 and $x^2$.</think>\n\nFour.", 0.0, stats=stats)
    thought, answer, *_ = display([reply], "en")
    assert thought["metadata"] == {"title": "Thought", "status": "done", "duration": 3.1}
    assert "Prices" in thought["content"][0]["text"] and "Four" not in thought["content"][0]["text"]
    assert answer["content"][0]["text"] == "Four."
    still = StoredMessage(0, "assistant", "<think>Let me see", 0.0)
    (thinking,) = display([still], "zh-CN")
    assert thinking["metadata"] == {"title": "思考中…", "status": "pending"}
    # A reply that never thought, and a user's own text, are left alone.
    user = StoredMessage(8, "user", "What is <think>?", 0.0)
    assert [len(group) for group in display_groups([user, StoredMessage(9, "assistant", "Four.", 0.0)], "en")] == [1, 1]
