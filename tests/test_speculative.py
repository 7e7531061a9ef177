"""Speculative decoding and the prefix cache, on real engines: where the platform runs it (a GPU),
n-gram speculation on the tiny model gives the greedy text the model gives without it (chat and
/v1), with vLLM's series in /metrics; on the CPU build it is left out with a sentence (vLLM 0.32's
CPU sampler kills the engine under it) and sampled replies work; a reply's figures are vLLM's
per-request summary; a method vLLM refuses is left out with a sentence instead of failing the
load; "auto" picks MTP where a config declares MTP layers, as vLLM reads them; and a 20-turn chat
reads most of each prompt from the prefix cache."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest

from app.config.settings import AppSettings, SamplingSettings
from app.config.speculative import has_mtp_layers, resolve
from app.engine import Engine, EngineState
from app.engine.build import _engine_args, _import_vllm, engine_config, on_cpu
from app.engine.requests import spec_figures
from app.engine.types import ChatDelta
from app.hardware import detect
from app.history.stats import stats_line
from app.history.turns import reply_stats
from app.models.catalog import load_catalog
from app.models.parsers import with_parsers
from app.ui.status import status_text
from tests.conftest import TEST_MAX_MODEL_LEN, collect, tiny_engine_settings
from tests.ui_clients import connect_fixture  # noqa: F401

pytestmark = pytest.mark.engine
NGRAM = json.dumps({"method": "ngram", "num_speculative_tokens": 3})
# Text that repeats itself, where prompt lookup has something to find.
REPEAT = [{"role": "user", "content": "Say it again: the quick brown fox jumps over the lazy dog. " * 4}]
GREEDY = {"temperature": 0, "max_tokens": 48, "ignore_eos": True}


@pytest.fixture(scope="module")
def ngram_engine(engine_loop: Any, tiny_model: Path) -> Iterator[Engine]:
    """The tiny model loaded with n-gram speculation asked for (on the CPU build: left out)."""
    eng = Engine()
    settings = dataclasses.replace(tiny_engine_settings(), cpu_kv_cache_gib=0.5, speculative_config=NGRAM)
    engine_loop.run(eng.load(str(tiny_model), settings))
    yield eng
    engine_loop.run(eng.unload())


def greedy(engine_loop: Any, eng: Engine) -> tuple[str, Any]:
    deltas = engine_loop.run(collect(eng.stream_chat(REPEAT, eng.resolve_sampling(GREEDY))))
    return "".join(d.text for d in deltas), deltas[-1]


def test_on_the_cpu_build_speculation_is_left_out_and_the_status_bar_says_why(
    engine_loop: Any, ngram_engine: Engine, make_app: Any
) -> None:
    """vLLM 0.32's CPU sampler kills the engine on a sampled reply under speculative decoding
    (a step with no draft: `k.max()` of an empty tensor); the model loads without it."""
    if not on_cpu():
        pytest.skip("a GPU build runs speculative decoding")
    status = ngram_engine.status
    assert status.state == EngineState.READY and ngram_engine.capabilities.speculative == ""
    assert status.notice is not None and status.notice.key == "engine.speculative_cpu"
    bar = status_text(make_app(ngram_engine), detect(), "en")
    assert "Speculative decoding (ngram) is left out on this CPU build" in bar and "NVIDIA GPU" in bar
    assert "推测解码" in status_text(make_app(ngram_engine), detect(), "zh-CN")
    # A sampled reply, with the model's own top-k (what stopped the engine with n-gram on).
    sampled = ngram_engine.resolve_sampling({"max_tokens": 32, "ignore_eos": True})
    assert sampled.top_k and sampled.temperature
    deltas = engine_loop.run(collect(ngram_engine.stream_chat(REPEAT, sampled)))
    assert deltas[-1].completion_tokens == 32 and deltas[-1].spec_tokens_per_step is None


def test_ngram_speculation_keeps_the_greedy_text_and_shows_what_it_did(
    engine_loop: Any, engine: Engine, ngram_engine: Engine, make_app: Any, start_server: Any
) -> None:
    if on_cpu():
        pytest.skip("speculative decoding is left out on the CPU build (see the test above)")
    assert ngram_engine.capabilities.speculative == "ngram" and engine.capabilities.speculative == ""
    plain, plain_last = greedy(engine_loop, engine)
    text, last = greedy(engine_loop, ngram_engine)
    assert text == plain and last.completion_tokens == plain_last.completion_tokens == GREEDY["max_tokens"]
    # Per reply: tokens per step (the bonus token included) and the share of drafts accepted.
    assert plain_last.spec_tokens_per_step is None
    assert 1 <= last.spec_tokens_per_step <= 4 and 0 <= last.spec_acceptance <= 1
    # The same through /v1, and vLLM's own counters in /metrics.
    urls = [start_server(make_app(e), ui=False).url for e in (engine, ngram_engine)]
    completions = [
        openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0).completions.create(
            model="tiny-qwen2",
            prompt=REPEAT[0]["content"],
            max_tokens=32,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        for url in urls
    ]
    assert completions[0].choices[0].text == completions[1].choices[0].text
    metrics = httpx.get(f"{urls[1]}/metrics").text
    drafts = [line for line in metrics.splitlines() if line.startswith("vllm:spec_decode_num_draft_tokens_total")]
    assert drafts and any(float(line.rsplit(" ", 1)[1]) > 0 for line in drafts), drafts


def test_a_replys_speculation_figures_are_vllms_summary_under_the_reply() -> None:
    from vllm.v1.metrics.stats import RequestSpecDecodeMetrics

    metrics = RequestSpecDecodeMetrics.new(3)
    metrics.observe(3, 2)  # two of three guesses accepted, and the step's own token
    metrics.observe(3, 3)
    figures = spec_figures(SimpleNamespace(spec_decode_metrics=metrics))
    assert figures == {"spec_tokens_per_step": 3.5, "spec_acceptance": 5 / 6}
    assert spec_figures(SimpleNamespace(spec_decode_metrics=None)) == {}
    last = ChatDelta("", 20, 7, "length", ttft=0.1, elapsed=0.5, **figures)
    line = stats_line(reply_stats("tiny-qwen2", {}, last, "length"), "en")
    assert "speculative: 3.50 tokens/step, 83% of drafts accepted" in line, line
    assert "推测解码：每步 3.50 个 token，草稿接受率 83%" in stats_line(reply_stats("m", {}, last, "length"), "zh-CN")


def test_a_method_vllm_refuses_is_left_out_with_a_sentence(tiny_model: Path) -> None:
    """Where vLLM refuses the method (MTP on a model without MTP layers, suffix decoding without
    its package), the engine is configured without it, and the status says so."""
    _import_vllm()
    for method in ("mtp", "suffix"):
        settings = dataclasses.replace(tiny_engine_settings(), speculative_config=json.dumps({"method": method}))
        settings = with_parsers(settings, "tiny-qwen2", tiny_model, load_catalog())
        config, notice = asyncio.run(engine_config(_engine_args(str(tiny_model), "tiny-qwen2", settings)))
        assert config.speculative_config is None and config.model_config.max_model_len == TEST_MAX_MODEL_LEN
        assert notice is not None and method in notice.message("en")
        if on_cpu():
            assert notice.key == "engine.speculative_cpu"
        else:
            assert notice.key == "engine.speculative_refused" and "n-gram" in notice.message("en")


def test_auto_picks_mtp_where_the_config_has_mtp_layers_as_vllm_reads_them(tiny_model: Path) -> None:
    from transformers import AutoConfig
    from vllm.config.speculative import SpeculativeConfig

    # DeepSeek-V3's published config declares one MTP layer; the tiny Qwen2 declares none.
    deepseek = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "num_nextn_predict_layers": 1}
    tiny = json.loads((tiny_model / "config.json").read_text())
    auto = json.dumps({"method": "auto"})
    assert resolve(auto, deepseek)["method"] == "mtp"
    assert resolve(auto, tiny) == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}
    # Qwen3.5 keeps them in its text config, under another name.
    assert has_mtp_layers({"text_config": {"mtp_num_hidden_layers": 1}})
    for config, mtp in ((deepseek, True), (tiny, False)):
        hf = AutoConfig.for_model(**config)
        assert SpeculativeConfig.hf_config_override(hf).model_type.endswith("_mtp") is mtp
    assert resolve("", tiny) is None


def test_a_long_chat_reads_most_of_each_prompt_from_the_prefix_cache(
    engine: Engine, make_app: Any, start_server: Any, connect: Any
) -> None:
    """Twenty turns through the chat: each turn's prompt extends the last one's (the same
    rendered history), so vLLM finds all of it but the new message in its cache (in whole
    blocks: 128 tokens on the CPU, 16 on a GPU)."""
    # Short turns: twenty of them fit in the shared engine's 512 tokens.
    app = make_app(engine, AppSettings(sampling=SamplingSettings(max_tokens=2, ignore_eos=True)))
    client = connect(start_server(app))
    for turn in range(20):
        client.predict(f"{turn}", "", api_name="/send")
    replies = [m["stats"] for m in client.predict(api_name="/history")["messages"] if m["role"] == "assistant"]
    assert len(replies) == 20
    block = engine.vllm.vllm_config.cache_config.block_size
    for before, after in itertools.pairwise(replies):
        # All of the previous prompt that fills whole blocks, and its reply, came from the cache.
        assert after["cached_tokens"] >= before["prompt_tokens"] // block * block, (before, after)
    last = replies[-1]
    print(f"turn 20: {last['cached_tokens']} of {last['prompt_tokens']} prompt tokens cached")
    assert last["cached_tokens"] >= last["prompt_tokens"] // 2, last
    delta = ChatDelta("", last["prompt_tokens"], last["completion_tokens"], cached_tokens=last["cached_tokens"])
    line = stats_line(reply_stats("tiny-qwen2", {}, delta, "length"), "en")
    assert f"{last['cached_tokens']} of {last['prompt_tokens']} prompt tokens cached" in line, line
