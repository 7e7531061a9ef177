"""Remote-engine mode against a real `vllm serve` (the OpenAI server vLLM ships), started
here once for the module on loopback with the tiny model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config.settings import SamplingSettings
from app.engine import EngineState
from app.engine.remote import RemoteEngine
from app.errors import EngineError
from tests.conftest import REMOTE_KEY, TEST_MAX_MODEL_LEN, VLLM_SERVE_NAME, collect, free_port

SERVED = VLLM_SERVE_NAME
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


@pytest.fixture
def remote(vllm_serve: str, engine_loop) -> Iterator[RemoteEngine]:
    engine = RemoteEngine(vllm_serve, api_key=REMOTE_KEY)
    engine_loop.run(engine.refresh())
    yield engine
    engine_loop.run(engine.unload())


def sampling(**kw: Any) -> SamplingSettings:
    return SamplingSettings(**{"max_tokens": 8, "temperature": 1.0, "seed": 3, "ignore_eos": True, **kw})


def generation_tokens(base_url: str) -> float:
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "vllm:generation_tokens"
               for s in f.samples if s.name.endswith("_total"))


def test_remote_models_and_status(remote: RemoteEngine, engine_loop) -> None:
    assert engine_loop.run(remote.list_models()) == [SERVED]
    assert remote.status.state == EngineState.READY and remote.status.device == "remote"
    assert remote.model_name == SERVED
    assert remote.max_model_len == TEST_MAX_MODEL_LEN


def test_chat_path_streams_with_exact_counts(remote: RemoteEngine, engine_loop) -> None:
    deltas = engine_loop.run(collect(remote.stream_chat(HELLO, sampling(max_tokens=12))))
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas)
    last = deltas[-1]
    assert (last.finish_reason, last.completion_tokens) == ("length", 12)
    assert last.prompt_tokens > 0 and last.ttft is not None
    assert remote.num_unfinished_requests() == 0


def test_closing_the_stream_aborts_on_the_remote_server(remote: RemoteEngine, engine_loop, vllm_serve) -> None:
    async def read_a_little() -> None:
        stream = remote.stream_chat(HELLO, sampling(max_tokens=480))
        for _ in range(3):
            await anext(stream)
        await stream.aclose()

    engine_loop.run(read_a_little())
    assert remote.num_unfinished_requests() == 0
    time.sleep(1)  # let the server notice the closed connection
    settled = generation_tokens(vllm_serve)
    time.sleep(2)
    # Still generating 480 tokens would add dozens of tokens per second here.
    assert generation_tokens(vllm_serve) == settled


def test_abort_by_request_id(remote: RemoteEngine, engine_loop) -> None:
    async def abort_after_first() -> list:
        deltas = []
        async for delta in remote.stream_chat(HELLO, sampling(max_tokens=480), request_id="stop-me"):
            deltas.append(delta)
            if len(deltas) == 1:
                await remote.abort("stop-me")
        return deltas

    deltas = engine_loop.run(abort_after_first())
    assert deltas[-1].finish_reason == "abort"
    assert deltas[-1].completion_tokens < 480


def test_our_api_over_the_remote_engine(remote: RemoteEngine, make_app, start_server) -> None:
    server = start_server(make_app(remote), ui=False)
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in api.models.list().data] == [SERVED]

    chunks = list(api.chat.completions.create(model=SERVED, messages=HELLO, max_tokens=8, stream=True,
                                              stream_options={"include_usage": True},
                                              extra_body={"ignore_eos": True}))
    assert chunks[-1].usage.completion_tokens == 8
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    completion = api.completions.create(model=SERVED, prompt="The quick brown fox", max_tokens=5,
                                        extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 5 and completion.choices[0].text

    with pytest.raises(openai.BadRequestError) as too_long:
        api.chat.completions.create(model=SERVED, max_tokens=4,
                                    messages=[{"role": "user", "content": "Hello, how are you today? " * 200}])
    assert str(TEST_MAX_MODEL_LEN) in too_long.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="not-served", messages=HELLO, max_tokens=4)

    generated = httpx.post(f"{server.url}/api/vllm/generate", json={"prompt": "Hello", "max_tokens": 8},
                           timeout=60).json()
    assert generated["success"] is True and generated["text"]


def test_loading_is_refused_with_a_reason(remote: RemoteEngine, engine_loop, vllm_serve) -> None:
    with pytest.raises(EngineError) as refused:
        engine_loop.run(remote.load("some/model"))
    assert refused.value.key == "remote.load_not_applicable" and vllm_serve in refused.value.message()
    with pytest.raises(EngineError) as unknown:
        engine_loop.run(remote.select_model("not-served"))
    assert unknown.value.key == "remote.unknown_model" and SERVED in unknown.value.message()
    assert remote.model_name is None and remote.status.state == EngineState.FAILED
    engine_loop.run(remote.select_model(SERVED))
    assert remote.model_name == SERVED


def test_wrong_remote_key_is_explained(vllm_serve: str, engine_loop) -> None:
    engine = RemoteEngine(vllm_serve, api_key="wrong")
    with pytest.raises(EngineError) as denied:
        engine_loop.run(engine.refresh())
    assert denied.value.key == "remote.unauthorized"
    assert engine.status.state == EngineState.FAILED and engine.status.error is denied.value


def test_unreachable_server_is_a_503_with_the_url(make_app, start_server, engine_loop) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = RemoteEngine(url)
    with pytest.raises(EngineError):
        engine_loop.run(engine.refresh())
    server = start_server(make_app(engine), ui=False)
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as unavailable:
        api.chat.completions.create(model=SERVED, messages=HELLO, max_tokens=4)
    assert unavailable.value.status_code == 503 and url in unavailable.value.body["message"]


def test_no_key_sends_no_authorization_not_even_openai_api_key(engine_loop, monkeypatch) -> None:
    """A server without a key gets no Authorization header: not a placeholder, and never the
    OPENAI_API_KEY of the user's environment (a secret for another service)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-for-openai-only")
    seen: list[str | None] = []

    class Models(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": 64}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        assert engine_loop.run(RemoteEngine(url).refresh()) == ["m"]
        keyed = RemoteEngine(url, api_key="remote-key")
        engine_loop.run(keyed.refresh())
        assert keyed.max_model_len == 64
    finally:
        server.shutdown()
    assert seen == [None, "Bearer remote-key"]
