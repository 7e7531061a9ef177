"""Thinking folded from the first token: vLLM's own reasoning parsers split a streamed reply
into thinking and answer, and the chat's text carries the thinking between <think> tags.

The parsers and the tokenizer are vLLM's and real; the stream is fed token by token as the
engine yields it (the tiny random model never writes a closing tag by itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.reasoning import ReplySplit, parser_class
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
    from app.remote import _ChunkReader

    reader = _ChunkReader()
    lines = [
        'data: {"choices":[{"delta":{"reasoning":"Let me "}}]}',
        'data: {"choices":[{"delta":{"reasoning":"think."}}]}',
        'data: {"choices":[{"delta":{"content":"Four."}}]}',
        'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}',
        "data: [DONE]",
    ]
    text = "".join(d.text for line in lines for d in reader.feed(line))
    final = reader.final()
    assert text + (final.text if final else "") == "<think>Let me think.</think>Four."


def test_the_api_reads_the_reasoning_parser_where_vllm_serve_puts_it():
    """vLLM's serving classes take the parser from the structured-outputs config, which `vllm
    serve` fills in while building its engine; without it /v1 returned thinking as content."""
    import dataclasses

    from app.api.openai import serve_args
    from app.settings import EngineSettings

    chosen = dataclasses.replace(EngineSettings(), reasoning_parser="deepseek_r1")
    assert serve_args("m", "m", chosen).structured_outputs_config.reasoning_parser == "deepseek_r1"
    none = dataclasses.replace(EngineSettings(), reasoning_parser="")
    assert serve_args("m", "m", none).structured_outputs_config.reasoning_parser == ""
