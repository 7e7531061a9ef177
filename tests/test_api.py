"""The OpenAI-compatible API and /api/vllm/generate, driven by the official `openai` SDK and
raw HTTP against the app's real server, over the shared tiny-model engine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from app.config.access import Access, check_exposure
from app.engine import Engine
from app.errors import UserError
from tests.conftest import TEST_MAX_MODEL_LEN, RunningServer, free_port, wait_until

KEY = "test-key-0123"
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
# Seeded and past the end-of-sequence token: the same request always gives the same reply (the
# tiny model's random weights make greedy replies a run of one token).
FIXED = {"temperature": 1.0, "seed": 11, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def server(engine: Engine, engine_loop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One API-only server (no page) for the module's tests: they only send requests."""
    from app.application import App
    from app.config.settings import AppPaths, AppSettings
    from app.server import build_http_app

    home = tmp_path_factory.mktemp("api-home")
    app = App.build(AppSettings(), AppPaths(home / "c", home / "d", home / "k", home / "l"), engine=engine,
                    access=Access(api_key=KEY))
    running = RunningServer(engine_loop, build_http_app(app, unload_on_exit=False, ui=False))
    yield running
    running.stop()


def client(server: Any, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, **kw)


def test_models_lists_the_loaded_model(server, engine: Engine) -> None:
    models = client(server).models.list().data
    assert [m.id for m in models] == [engine.model_name]
    raw = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert raw["data"][0]["max_model_len"] == TEST_MAX_MODEL_LEN


def test_chat_stream_reports_usage_and_matches_the_unstreamed_reply(server, engine: Engine) -> None:
    api = client(server)
    chunks = list(api.chat.completions.create(
        model=engine.model_name, messages=HELLO, max_tokens=12, stream=True,
        stream_options={"include_usage": True}, **FIXED,
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    usage = chunks[-1].usage
    assert not chunks[-1].choices
    assert usage.completion_tokens == 12 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + 12

    whole = api.chat.completions.create(model=engine.model_name, messages=HELLO, max_tokens=12, **FIXED)
    assert whole.choices[0].message.content == text
    assert whole.choices[0].finish_reason == "length"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (usage.prompt_tokens, 12)


def test_async_client_streams_and_answers_whole(server, engine: Engine) -> None:
    async def run() -> tuple[str, str]:
        api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        stream = await api.chat.completions.create(model=engine.model_name, messages=HELLO, max_tokens=10,
                                                   stream=True, **FIXED)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        whole = await api.chat.completions.create(model=engine.model_name, messages=HELLO, max_tokens=10,
                                                  **FIXED)
        await api.close()
        return streamed, whole.choices[0].message.content

    streamed, whole = asyncio.run(run())
    assert streamed and streamed == whole


def test_completions_streamed_and_not(server, engine: Engine) -> None:
    api = client(server)
    prompt = "The quick brown fox"
    whole = api.completions.create(model=engine.model_name, prompt=prompt, max_tokens=8, **FIXED)
    assert whole.object == "text_completion"
    assert whole.usage.completion_tokens == 8 and whole.choices[0].finish_reason == "length"
    stream = api.completions.create(model=engine.model_name, prompt=prompt, max_tokens=8,
                                    stream=True, **FIXED)
    assert "".join(c.choices[0].text for c in stream if c.choices) == whole.choices[0].text


def test_stop_string_ends_the_reply_before_it(server, engine: Engine) -> None:
    api = client(server)
    ask = {"model": engine.model_name, "messages": HELLO, "max_tokens": 40, **FIXED}
    full = api.chat.completions.create(**ask).choices[0].message.content
    # A piece from the middle of the greedy reply, cut where it first occurs.
    stop = next(full[i:i + 3] for i in range(8, len(full) - 3) if full[i:i + 3].strip() and
                full.index(full[i:i + 3]) == i)
    cut = api.chat.completions.create(**ask, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_vllm_sampling_fields_are_accepted_and_checked(server, engine: Engine) -> None:
    api = client(server)
    extra = {"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True}
    reply = api.chat.completions.create(model=engine.model_name, messages=HELLO, max_tokens=6, seed=7,
                                        presence_penalty=0.5, frequency_penalty=0.5, extra_body=extra)
    assert reply.usage.completion_tokens == 6
    with pytest.raises(openai.BadRequestError) as bad:
        api.chat.completions.create(model=engine.model_name, messages=HELLO, max_tokens=6,
                                    extra_body={"repetition_penalty": -1.0})
    assert bad.value.status_code == 400
    assert "repetition_penalty" in bad.value.body["message"]


def test_key_is_required_on_v1_and_api(server, engine: Engine) -> None:
    with pytest.raises(openai.AuthenticationError) as denied:
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert denied.value.status_code == 401
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/api/vllm/generate")):
        reply = httpx.request(method, server.url + path, json={}, headers={"Accept-Language": "zh-CN"})
        assert reply.status_code == 401
        assert "API 密钥" in reply.json()["error"]["message"]
    # The health check is not behind the API key (nor the page: test_cors_only_for_allowed_origins).
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_overlong_prompt_is_a_400_with_the_limit(server, engine: Engine) -> None:
    long = [{"role": "user", "content": "Hello, how are you today? " * 200}]
    with pytest.raises(openai.BadRequestError) as bad:
        client(server).chat.completions.create(model=engine.model_name, messages=long, max_tokens=4)
    assert str(TEST_MAX_MODEL_LEN) in bad.value.body["message"]
    assert bad.value.body["type"] == "BadRequestError" and bad.value.body["code"] == 400


def test_unknown_model_is_a_404(server, engine: Engine) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client(server).chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=4)
    assert engine.model_name in missing.value.body["message"]


def test_no_model_loaded_is_a_503(make_app, start_server) -> None:
    running = start_server(make_app(Engine()), ui=False)
    api = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)
    assert api.models.list().data == []
    with pytest.raises(openai.InternalServerError) as unavailable:
        api.chat.completions.create(model="anything", messages=HELLO, max_tokens=4)
    assert unavailable.value.status_code == 503
    assert "No model is loaded" in unavailable.value.body["message"]
    reply = httpx.post(f"{running.url}/api/vllm/generate", json={"prompt": "Hi"}).json()
    assert reply["success"] is False and "No model is loaded" in reply["error"]


def test_client_hanging_up_mid_stream_aborts_the_request(server, engine: Engine) -> None:
    body = {"model": engine.model_name, "messages": HELLO, "max_tokens": 400, "ignore_eos": True,
            "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=30) as http, http.stream("POST", f"{server.url}/v1/chat/completions",
                                                       json=body, headers=headers) as reply:
        lines = reply.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any('"content"' in line for line in got)
        assert engine.num_unfinished_requests() == 1
    # The connection is closed; the engine must drop the request long before 400 tokens.
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=3)


def test_client_giving_up_on_a_whole_reply_aborts_it(server, engine: Engine) -> None:
    body = {"model": engine.model_name, "messages": HELLO, "max_tokens": 480, "ignore_eos": True}
    # The tiny model writes the whole reply in about half a second on an idle machine: the
    # client gives up well before that, and the request must have been running when it did.
    with concurrent.futures.ThreadPoolExecutor(1) as watcher:
        was_running = watcher.submit(wait_until, lambda: engine.num_unfinished_requests() > 0, 5)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", json=body,
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=httpx.Timeout(30, read=0.1))
        assert was_running.result()
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=3)


def test_api_requests_are_batched_together(server, engine: Engine) -> None:
    async def run() -> tuple[list[int], int]:
        api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, engine.num_unfinished_requests())
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        replies = await asyncio.gather(*(
            api.chat.completions.create(model=engine.model_name, messages=HELLO, max_tokens=24, **FIXED)
            for _ in range(8)
        ))
        watcher.cancel()
        await api.close()
        return [r.usage.completion_tokens for r in replies], peak

    tokens, peak = asyncio.run(run())
    assert tokens == [24] * 8
    assert peak > 1  # in the engine at the same time, not one after another


def test_integration_guide_generate_endpoint(server) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    reply = httpx.post(f"{server.url}/api/vllm/generate", headers=headers, timeout=60,
                       json={"prompt": "Hello, how are you today?", "temperature": 0.7, "top_p": 0.9,
                             "max_tokens": 16})
    assert reply.status_code == 200
    assert reply.json()["success"] is True and reply.json()["text"]

    empty = httpx.post(f"{server.url}/api/vllm/generate", headers=headers, json={"prompt": "  "})
    assert empty.status_code == 400 and empty.json()["success"] is False and "prompt" in empty.json()["error"]
    bad = httpx.post(f"{server.url}/api/vllm/generate", headers=headers,
                     json={"prompt": "Hi", "temperature": 9}, timeout=60)
    assert bad.json() == {"success": False, "error": bad.json()["error"]}
    assert "temperature" in bad.json()["error"]


def test_cors_only_for_allowed_origins(make_app, start_server) -> None:
    preflight = {"Origin": "http://editor.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    closed = start_server(make_app(Engine(), access=Access(api_key=KEY)))
    reply = httpx.options(f"{closed.url}/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in reply.headers
    # The page is not behind the API key.
    assert httpx.get(f"{closed.url}/").status_code == 200

    opened = start_server(
        make_app(Engine(), access=Access(api_key=KEY, allowed_origins=("http://editor.example",))), ui=False
    )
    reply = httpx.options(f"{opened.url}/v1/chat/completions", headers=preflight)
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == "http://editor.example"
    other = httpx.options(f"{opened.url}/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_ui_login_guards_the_page_but_not_the_keyed_api(make_app, start_server) -> None:
    running = start_server(make_app(Engine(), access=Access(api_key=KEY, ui_auth=("ann", "pw-123"))))
    assert httpx.get(f"{running.url}/config").status_code == 401
    with httpx.Client(base_url=running.url) as browser:
        assert browser.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
        assert browser.post("/login", data={"username": "ann", "password": "pw-123"}).status_code == 200
        assert browser.get("/config").status_code == 200
    models = httpx.get(f"{running.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert models.status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_needs_no_credentials(host: str) -> None:
    check_exposure(host, None, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "my-pc.local"])
def test_network_bind_needs_key_and_login(host: str) -> None:
    for key, login in ((None, None), ("k", None), (None, ("u", "p"))):
        with pytest.raises(UserError) as refused:
            check_exposure(host, key, login)
        assert host in refused.value.message("en") and "--api-key" in refused.value.message("zh-CN")
    check_exposure(host, "k", ("u", "p"))


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "--no-browser", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "VLLM_CHAT_HOME": str(home)})


@pytest.mark.e2e
def test_cli_refuses_an_open_network_server_in_both_languages(tmp_path: Path) -> None:
    refused = run_cli("--host", "0.0.0.0", "--port", str(free_port()), home=tmp_path)
    assert refused.returncode != 0
    assert "--api-key" in refused.stderr and "--auth" in refused.stderr and "拒绝" in refused.stderr
    bad_login = run_cli("--auth", "just-a-user", home=tmp_path)
    assert bad_login.returncode == 2 and "USER:PASSWORD" in bad_login.stderr and "用户名:密码" in bad_login.stderr
    no_url = run_cli("--engine", "remote", home=tmp_path)
    assert no_url.returncode == 2 and "--base-url" in no_url.stderr
