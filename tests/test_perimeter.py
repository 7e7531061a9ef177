"""The perimeter, played as the attacker would play it: a DNS-rebinding page (foreign Host), a
cross-site page (foreign Origin, text/plain POSTs that need no preflight), a password guesser,
oversized and hostile bodies, and another user of the same computer reading our files. Every
request goes to a real server on loopback; the positive controls show the app's own clients
still get in."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from app.api.perimeter import CONTENT_SECURITY_POLICY, MAX_JSON_DEPTH, json_depth
from app.config.access import Access
from app.engine import Engine
from tests.conftest import free_port

KEY = "test-key-0123"
EVIL_HOST = "attacker.example:7860"
EVIL_ORIGIN = "http://attacker.example"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
# One of each route family the server answers, with what the app's own address gets there (Gradio
# itself refuses files outside its allowed folders; no model is loaded).
ROUTES = {"/": 200, "/config": 200, "/gradio_api/info": 200, "/healthz": 200, "/metrics": 200,
          "/v1/models": 200, "/gradio_api/file=README.md": 403}


@pytest.fixture
def idle_server(make_app: Any, start_server: Any) -> Any:
    """The app as it starts by default (no key, no login), with no model: enough for the perimeter."""
    return start_server(make_app(Engine()))


@pytest.fixture
def chat_server(engine: Engine, make_app: Any, start_server: Any) -> Any:
    return start_server(make_app(engine, access=Access(allowed_origins=("http://editor.example",))))


def own_origin(server: Any) -> str:
    return server.url


@pytest.mark.parametrize("path", ROUTES)
def test_foreign_host_is_refused_on_every_route(idle_server: Any, path: str) -> None:
    reply = httpx.get(idle_server.url + path, headers={"Host": EVIL_HOST})
    assert reply.status_code == 403
    assert "attacker.example" in reply.text and "--allowed-hosts" in reply.text
    assert httpx.get(idle_server.url + path).status_code == ROUTES[path]


def test_foreign_host_cannot_read_chats_through_the_page_queue(idle_server: Any, make_app: Any) -> None:
    """A rebinding page posts to the page's own queue, as the page would."""
    join = {"data": [], "fn_index": 0, "session_hash": "abc123", "event_data": None, "trigger_id": 1}
    reply = httpx.post(f"{idle_server.url}/gradio_api/queue/join", json=join, headers={"Host": EVIL_HOST})
    assert reply.status_code == 403
    data = httpx.get(f"{idle_server.url}/gradio_api/queue/data?session_hash=abc123", headers={"Host": EVIL_HOST})
    assert data.status_code == 403


def test_allowed_hosts_and_the_bound_address_are_answered(make_app: Any, start_server: Any) -> None:
    server = start_server(make_app(Engine(), access=Access(allowed_hosts=("my-pc.local",))))
    for host in ("my-pc.local:8080", "localhost", f"127.0.0.1:{server.port}", "[::1]:80", "MY-PC.LOCAL"):
        assert httpx.get(f"{server.url}/healthz", headers={"Host": host}).status_code == 200, host
    for host in ("my-pc.local.attacker.example", "127.0.0.1.nip.io", "", "a b"):
        assert httpx.get(f"{server.url}/healthz", headers={"Host": host}).status_code in (400, 403), host


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/vllm/generate"])
def test_cross_site_text_plain_post_does_not_run(idle_server: Any, path: str) -> None:
    body = json.dumps({**CHAT, "prompt": "hi"})
    # Same Host (a plain cross-site form or fetch): the content type alone refuses it.
    plain = httpx.post(idle_server.url + path, content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert "application/json" in plain.json()["error"]["message"]
    # From a browser the Origin is also there, and is refused first.
    cross = httpx.post(idle_server.url + path, content=body,
                       headers={"Content-Type": "text/plain", "Origin": EVIL_ORIGIN})
    assert cross.status_code == 403
    assert "--allowed-origins" in cross.json()["error"]["message"]


def test_foreign_origin_cannot_join_the_page_queue(idle_server: Any) -> None:
    join = {"data": [], "fn_index": 0, "session_hash": "abc123", "event_data": None, "trigger_id": 1}
    refused = httpx.post(f"{idle_server.url}/gradio_api/queue/join", json=join, headers={"Origin": EVIL_ORIGIN})
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    # The page's own origin may (Gradio answers with the event it queued).
    own = httpx.post(f"{idle_server.url}/gradio_api/queue/join", json=join,
                     headers={"Origin": own_origin(idle_server)})
    assert own.status_code == 200 and "event_id" in own.json()


@pytest.mark.parametrize("bind", ["::1", "127.0.0.2"])
def test_no_foreign_origin_is_echoed_on_other_loopback_binds(make_app: Any, start_server: Any, bind: str) -> None:
    server = start_server(make_app(Engine(), access=Access(host=bind)))
    preflight = {"Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    for path in ("/config", "/gradio_api/queue/join", "/v1/chat/completions"):
        reply = httpx.options(server.url + path, headers=preflight)
        assert reply.status_code == 403, path
        assert "access-control-allow-origin" not in reply.headers
        assert "access-control-allow-credentials" not in reply.headers
    read = httpx.get(f"{server.url}/config", headers={"Origin": EVIL_ORIGIN})
    assert read.status_code == 403 and "access-control-allow-origin" not in read.headers
    assert httpx.get(f"{server.url}/config").status_code == 200


def test_own_origin_and_allowed_origins_keep_working(chat_server: Any, engine: Engine) -> None:
    """Positive control: the openai SDK (no Origin), a page listed in --allowed-origins, and the
    app's own origin all get answers."""
    api = openai.OpenAI(base_url=f"{chat_server.url}/v1", api_key="unused", max_retries=0)
    reply = api.chat.completions.create(model=engine.model_name, messages=CHAT["messages"], max_tokens=4)
    assert reply.usage.completion_tokens > 0
    editor = httpx.post(f"{chat_server.url}/v1/chat/completions", json={**CHAT, "model": engine.model_name},
                        headers={"Origin": "http://editor.example"})
    assert editor.status_code == 200
    assert editor.headers["access-control-allow-origin"] == "http://editor.example"
    # An allowed origin reaches the API, never the page's own API.
    page = httpx.get(f"{chat_server.url}/config", headers={"Origin": "http://editor.example"})
    assert page.status_code == 403
    own = httpx.post(f"{chat_server.url}/api/vllm/generate", json={"prompt": "hi", "max_tokens": 2},
                     headers={"Origin": own_origin(chat_server)})
    assert own.status_code == 200 and own.json()["success"]


def test_bodies_are_bounded_and_checked(idle_server: Any) -> None:
    url = f"{idle_server.url}/v1/chat/completions"
    big = b'{"prompt": "' + b"x" * (17 * 2**20) + b'"}'
    declared = httpx.post(url, content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "MiB" in declared.json()["error"]["message"]

    def chunks() -> Any:
        for _ in range(17):
            yield b"x" * 2**20

    streamed = httpx.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    nested = httpx.post(url, content=b"[" * 200_000 + b"]" * 200_000, headers={"Content-Type": "application/json"})
    assert nested.status_code == 400 and "nests" in nested.json()["error"]["message"]
    broken = httpx.post(url, content=b'{"model": ', headers={"Content-Type": "application/json; charset=utf-8"})
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    # A sane body passes the perimeter (and meets the engine's own answer: no model here).
    assert httpx.post(url, json=CHAT).status_code == 503


def test_json_depth_counts_brackets_outside_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert json_depth(b'"\\"[[["') == 0
    assert json_depth(b"[" * (MAX_JSON_DEPTH + 1)) == MAX_JSON_DEPTH + 1


def test_wrong_passwords_are_throttled(make_app: Any, start_server: Any) -> None:
    server = start_server(make_app(Engine(), access=Access(ui_auth=("ann", "pw-123"))))
    with httpx.Client(base_url=server.url) as guesser:
        answers = [guesser.post("/login", data={"username": "ann", "password": f"guess{i}"}).status_code
                   for i in range(8)]
        assert answers[:5] == [400] * 5 and answers[5:] == [429] * 3
        locked = guesser.post("/login", data={"username": "ann", "password": "pw-123"})
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        assert "seconds" in locked.text
        assert "pw-123" not in locked.text


def test_bearer_scheme_is_case_insensitive_and_schema_is_hidden(make_app: Any, start_server: Any) -> None:
    server = start_server(make_app(Engine(), access=Access(api_key=KEY)))
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"{scheme} {KEY}"}).status_code == 200
    assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Basic " + KEY}).status_code == 401
    for schema in ("/openapi.json", "/gradio_api/openapi.json"):
        assert httpx.get(server.url + schema).status_code == 404


def test_page_answers_carry_the_content_security_policy(idle_server: Any) -> None:
    page = httpx.get(idle_server.url + "/")
    policy = page.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "img-src 'self' data: blob:" in policy and "form-action 'self'" in policy
    assert "frame-ancestors 'self'" in policy


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_the_app_writes_are_private(app_home: Path, make_app: Any) -> None:
    """Without the start-up umask (tests run under the shell's), each file is still made 0600."""
    old = os.umask(0o022)
    try:
        (app_home / "config").mkdir(parents=True)
        # What an older version left: world-readable settings.
        (app_home / "config" / "settings.json").write_text("{}")
        os.chmod(app_home / "config", 0o755)
        app = make_app(Engine())
        app.update_settings()
        conv = app.conversations.create("private chat")
        app.conversations.add_message(conv.id, "user", "my secret")
    finally:
        os.umask(old)
    written = [p for p in app_home.rglob("*")]
    assert any(p.name == "settings.json" for p in written)
    for path in written:
        expected = 0o700 if path.is_dir() else 0o600
        assert mode(path) == expected, f"{path} is {oct(mode(path))}"


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "--no-browser", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "VLLM_CHAT_HOME": str(home)})


@pytest.mark.e2e
def test_start_messages_keep_secrets_and_warn_of_an_open_page(tmp_path: Path) -> None:
    bad = run_cli("--auth", "hunter2-no-colon", home=tmp_path)
    assert bad.returncode == 2 and "hunter2" not in bad.stderr + bad.stdout
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        port = busy.getsockname()[1]
        keyed = run_cli("--api-key", "sekret-key", "--port", str(port), home=tmp_path)
    out = keyed.stdout + keyed.stderr
    assert "open to every program on this computer" in out and "对本机的所有程序开放" in out
    assert "sekret-key" not in out
    assert not any("sekret-key" in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())
