"""The app's /v1 against a real `vllm serve` on the same tiny model with the same flags: one fixed
list of requests to both, the same status codes, the same JSON keys, the same greedy and seeded
text. What tools, coding assistants and front ends built for `vllm serve` send must work here."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.application import App
from app.config.settings import AppPaths, AppSettings
from app.engine import Engine
from app.server import build_http_app
from tests.conftest import REMOTE_KEY, VLLM_SERVE_NAME, RunningServer

MODEL = VLLM_SERVE_NAME
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}},
                   "required": ["city"], "additionalProperties": False}}}
# Closed choices: a random model's strings would otherwise run on past any max_tokens.
PERSON = {"type": "object", "properties": {"name": {"enum": ["Ann", "Bo"]}, "age": {"enum": [7, 30]}},
          "required": ["name", "age"], "additionalProperties": False}
GREEDY = {"temperature": 0.0, "max_tokens": 8}
# Under a grammar, greedy decoding of random weights picks whitespace forever: sample, seeded.
FORCED = {"temperature": 1.0, "seed": 5, "max_tokens": 120}
SEEDED = {"temperature": 1.0, "seed": 11, "max_tokens": 8, "ignore_eos": True}
CHAT = "/v1/chat/completions"

# (name, path, body): the parity list. Bodies are sent as JSON; a str body is sent as raw bytes.
REQUESTS: list[tuple[str, str, Any]] = [
    ("chat greedy", CHAT, {"messages": HELLO, **GREEDY}),
    ("completion greedy", "/v1/completions", {"prompt": "The quick brown fox", **GREEDY}),
    ("chat seeded", CHAT, {"messages": HELLO, **SEEDED}),
    ("completion seeded", "/v1/completions", {"prompt": "Once upon a time", **SEEDED}),
    ("logprobs", CHAT, {"messages": HELLO, **GREEDY, "logprobs": True, "top_logprobs": 2}),
    ("completion logprobs", "/v1/completions", {"prompt": "Hi", **GREEDY, "logprobs": 2}),
    ("n=2", CHAT, {"messages": HELLO, **SEEDED, "n": 2}),
    ("stop strings", CHAT, {"messages": HELLO, **SEEDED, "max_tokens": 40, "stop": ["a", "e", "o"]}),
    ("json_schema", CHAT, {"messages": HELLO, **FORCED, "response_format": {
        "type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}}),
    ("json_object", CHAT, {"messages": HELLO, **GREEDY, "max_tokens": 30, "response_format": {"type": "json_object"}}),
    ("tools none", CHAT, {"messages": HELLO, **GREEDY, "tools": [WEATHER], "tool_choice": "none"}),
    ("tools auto", CHAT, {"messages": HELLO, **GREEDY, "tools": [WEATHER], "tool_choice": "auto"}),
    ("tools required", CHAT, {"messages": HELLO, **FORCED, "tools": [WEATHER],
                              "tool_choice": "required"}),
    ("tools named", CHAT, {"messages": HELLO, **FORCED, "tools": [WEATHER],
                           "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ("tokenize", "/tokenize", {"prompt": "Hello world"}),
    ("tokenize chat", "/tokenize", {"messages": HELLO}),
    ("detokenize", "/detokenize", {"tokens": [72, 101, 108, 108, 111]}),
    ("responses", "/v1/responses", {"input": "Hello there", "temperature": 0.0, "max_output_tokens": 8}),
    ("over-long prompt", CHAT, {"messages": [{"role": "user", "content": "hello " * 600}], "max_tokens": 4}),
    ("bad temperature", CHAT, {"messages": HELLO, "temperature": -3, "max_tokens": 4}),
    ("unknown model", CHAT, {"messages": HELLO, "max_tokens": 4, "model": "no-such-model"}),
    ("bad JSON", CHAT, '{"messages": [{"role": "user", "content": "hi"'),
]
# Fields whose values differ run to run or server to server (ids, clocks), compared by key only.
VOLATILE = {"id", "created", "created_at", "system_fingerprint", "completed_at", "message", "response_id"}


def keys(value: Any, prefix: str = "") -> set[str]:
    """Every key path in a JSON value (list items share one path)."""
    if isinstance(value, dict):
        found = set()
        for key, item in value.items():
            found |= {f"{prefix}.{key}"} | keys(item, f"{prefix}.{key}")
        return found
    if isinstance(value, list):
        return set().union(*(keys(item, f"{prefix}[]") for item in value)) if value else {f"{prefix}[]"}
    return set()


def without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k != "id"}
    return [without_ids(v) for v in value] if isinstance(value, list) else value


def texts(value: Any) -> list[str]:
    """The generated text of a reply (tool calls included, their random ids left out), wherever
    the endpoint puts it."""
    if "choices" in value:
        return [json.dumps(without_ids(c.get("message") or c.get("text")), sort_keys=True) for c in value["choices"]]
    if "tokens" in value or "prompt" in value:
        return [json.dumps({k: value.get(k) for k in ("tokens", "prompt", "count")})]
    if "output" in value:
        return [json.dumps([o.get("content") for o in value["output"]], sort_keys=True)]
    return []


def post(base: str, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    if isinstance(body, dict):
        body = json.dumps({"model": MODEL, **body})
    return httpx.post(base + path, content=body, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def servers(engine: Engine, vllm_serve: str, engine_loop: Any) -> Any:
    """(the app's URL, vllm serve's URL), both over the tiny model: one app server for the module."""
    home = Path(tempfile.mkdtemp(prefix="vllm-chat-parity-"))
    paths = AppPaths(home / "config", home / "data", home / "cache", home / "logs")
    app = App.build(AppSettings(), paths, engine=engine)
    running = RunningServer(engine_loop, build_http_app(app, unload_on_exit=False, ui=False))
    yield running.url, vllm_serve.removesuffix("/v1")
    running.stop()


@pytest.mark.parametrize(("name", "path", "body"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_app_answers_as_vllm_serve_does(servers: Any, name: str, path: str, body: Any) -> None:
    ours_url, theirs_url = servers
    ours, theirs = post(ours_url, path, body), post(theirs_url, path, body, key=REMOTE_KEY)
    assert ours.status_code == theirs.status_code, (name, ours.text[:300], theirs.text[:300])
    mine, reference = ours.json(), theirs.json()
    assert keys(mine) == keys(reference), name
    assert texts(mine) == texts(reference), name
    if name == "json_schema" and ours.is_success:
        person = json.loads(mine["choices"][0]["message"]["content"])
        assert person["name"] in ("Ann", "Bo") and person["age"] in (7, 30)
    if name == "tools named":
        # The call is the named tool's (its arguments, from random weights, are whatever both
        # servers' grammar let through: compared above).
        assert mine["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def stream(base: str, body: dict[str, Any], key: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    chunks = []
    with httpx.stream("POST", base + CHAT, json={"model": MODEL, **body, "stream": True}, headers=headers,
                      timeout=120) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def test_a_stream_with_usage_matches(servers: Any) -> None:
    ours_url, theirs_url = servers
    body = {"messages": HELLO, **SEEDED, "max_tokens": 12, "stream_options": {"include_usage": True}}
    mine, reference = stream(ours_url, body), stream(theirs_url, body, key=REMOTE_KEY)
    assert len(mine) == len(reference)
    assert [keys(c) for c in mine] == [keys(c) for c in reference]

    def text(chunks: list[dict[str, Any]]) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    assert text(mine) == text(reference) and text(mine)
    assert mine[-1]["usage"] == reference[-1]["usage"] and mine[-1]["usage"]["completion_tokens"] == 12
