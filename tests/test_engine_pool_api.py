"""Several models at once through /v1, on real engines: a cached model loaded when a request
names it while the chat's model keeps serving, both answering by name, /v1/models with each
one's status, an idle member unloaded after its `ttl`, the most-models setting unloading the
idle member or refusing with the numbers while the only member streams, an unknown name a 404."""

from __future__ import annotations

import concurrent.futures
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from app.config.settings import AppPaths, AppSettings
from app.engine import Engine
from tests.conftest import RunningServer, still_running, tiny_engine_settings, wait_until

pytestmark = pytest.mark.engine
LLAMA = "test/tiny-llama"  # in the app's model cache, not loaded at start
QWEN_COPY = "test/tiny-qwen2-copy"
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


@pytest.fixture(scope="module")
def pooled(
    engine_loop: Any, tiny_model: Path, tiny_llama_no_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, RunningServer]]:
    """(app, server): the tiny Qwen2 loaded as the chat's model; two more models in the cache."""
    from app.application import App
    from app.server import build_http_app

    home = tmp_path_factory.mktemp("pool")
    paths = AppPaths(home / "c", home / "d", home / "k", home / "l", hf_cache=home / "hf")
    for name, folder in ((LLAMA, tiny_llama_no_template), (QWEN_COPY, tiny_model)):
        shutil.copytree(folder, paths.cache_dir / "modelscope" / name)
    app = App.build(AppSettings(engine=tiny_engine_settings()), paths, engine=Engine())
    engine_loop.run(app.load_model(str(tiny_model)))
    server = RunningServer(engine_loop, build_http_app(app, unload_on_exit=True, ui=False))
    yield app, server
    server.stop()


def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def listed(server: RunningServer) -> dict[str, str]:
    return {m["id"]: m["status"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]}


def test_models_lists_the_loaded_model_and_the_cached_ones(pooled: Any) -> None:
    _, server = pooled
    assert listed(server) == {"tiny-qwen2": "loaded", LLAMA: "unloaded", QWEN_COPY: "unloaded"}
    card = next(m for m in httpx.get(f"{server.url}/v1/models").json()["data"] if m["id"] == "tiny-qwen2")
    assert card["max_model_len"] == 512  # the member's own vLLM card


def test_a_request_naming_a_cached_model_loads_it_while_the_other_keeps_answering(pooled: Any) -> None:
    app, server = pooled
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        loading = pool.submit(
            api(server).completions.create,
            model=LLAMA,
            prompt="The quick brown fox",
            max_tokens=5,
            extra_body={"ignore_eos": True},
        )
        assert wait_until(lambda: listed(server).get(LLAMA) == "loading", 30)
        # Meanwhile the chat's model answers.
        chat = api(server).chat.completions.create(model="tiny-qwen2", messages=HELLO, max_tokens=4)
        assert chat.choices[0].message.content and not loading.done()
        reply = loading.result(timeout=300)
        took = time.monotonic() - started
    assert reply.model == LLAMA and reply.usage.completion_tokens == 5
    print(f"load-on-request answer after {took:.1f} s")
    assert listed(server) == {"tiny-qwen2": "loaded", LLAMA: "loaded", QWEN_COPY: "unloaded"}
    # Both answer by name; no name is the chat's model.
    again = api(server).completions.create(
        model=LLAMA, prompt="Once upon", max_tokens=3, extra_body={"ignore_eos": True}
    )
    assert again.model == LLAMA and again.usage.completion_tokens == 3
    plain = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 3}, timeout=60)
    assert plain.json()["model"] == "tiny-qwen2"
    assert app.engine.model_name == "tiny-qwen2"
    health = httpx.get(f"{server.url}/healthz").json()
    assert {(m["model"], m["state"], m["current"]) for m in health["members"]} == {
        ("tiny-qwen2", "loaded", True),
        (LLAMA, "loaded", False),
    }
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'vllm_chat_model_state{{model="{LLAMA}",state="loaded"}} 1.0' in metrics
    for member in app.pool.members():
        rss = sum(psutil.Process(pid).memory_info().rss for pid in member.engine.child_pids())
        print(
            f"{member.name}: counted {member.request.need_bytes / 2**30:.2f} GiB, processes' RSS {rss / 2**30:.2f} GiB"
        )


def test_an_unknown_model_is_vllms_404(pooled: Any) -> None:
    _, server = pooled
    with pytest.raises(openai.NotFoundError) as missing:
        api(server).chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=4)
    assert missing.value.body["type"] == "NotFoundError" and missing.value.body["code"] == 404
    assert "no-such-model" in missing.value.body["message"] and "tiny-qwen2" in missing.value.body["message"]


def test_a_member_idle_past_its_ttl_is_unloaded(pooled: Any) -> None:
    app, server = pooled
    llama = app.pool.find(LLAMA)
    children = [psutil.Process(pid) for pid in llama.engine.child_pids()]
    # LM Studio's ttl, in seconds: vLLM never sees it (it would refuse an unknown field in some endpoints).
    reply = api(server).completions.create(model=LLAMA, prompt="Hi", max_tokens=2, extra_body={"ttl": 1})
    assert reply.usage.completion_tokens >= 1
    assert wait_until(lambda: listed(server).get(LLAMA) == "unloaded", 20), listed(server)
    # Listed as unloaded as soon as its unload begins; its processes end a moment later.
    assert app.pool.find(LLAMA) is None
    assert wait_until(lambda: not still_running(children), 30), still_running(children)
    assert listed(server)["tiny-qwen2"] == "loaded"  # the chat's model is never unloaded for idleness


def test_with_one_model_at_most_the_idle_one_makes_room_and_a_busy_one_refuses(pooled: Any) -> None:
    app, server = pooled
    app.update_settings(max_loaded_models=1)
    try:
        reply = api(server).completions.create(model=LLAMA, prompt="Hi", max_tokens=2)
        assert reply.model == LLAMA
        # The chat's model was the least recently used and idle: it made room.
        assert listed(server) == {LLAMA: "loaded", QWEN_COPY: "unloaded"}
        assert app.engine.model_name is None
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            body = {"model": LLAMA, "prompt": "Once", "max_tokens": 480, "ignore_eos": True, "stream": True}
            streaming = pool.submit(_stream, server.url, body)
            llama = app.pool.find(LLAMA)
            assert wait_until(lambda: llama.engine.num_unfinished_requests() == 1, 20)
            with pytest.raises(openai.InternalServerError) as refused:
                api(server).chat.completions.create(model=QWEN_COPY, messages=HELLO, max_tokens=2)
            assert streaming.result(timeout=120).endswith("data: [DONE]")
        assert refused.value.status_code == 503
        message = refused.value.body["message"]
        assert f"{QWEN_COPY} cannot be loaded: 1 models are loaded" in message and "(1)" in message, message
        assert LLAMA in message
    finally:
        app.update_settings(max_loaded_models=None)


def _stream(url: str, body: dict) -> str:
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as reply:
        return "".join(reply.iter_text()).rstrip()
