"""Tools in the chat: real MCP servers (tests/fixtures/mcp_tools_server.py, over stdio and over
streamable HTTP on loopback), the shared tiny engine, and the chat tab's own reply handler.

The tiny random model never chooses a tool by itself, so the first round is forced the way vLLM
forces `tool_choice: "required"` (its JSON schema of the tools, seeded sampling), and the reply
that follows is the model's own; everything after the call (approval, the MCP call, the result
going back, saving, showing) is what a user gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from app.application import App
from app.config.settings import AppSettings, SamplingSettings
from app.conversations import Turn
from app.engine import Engine
from app.history.records import CallState
from app.tools.calls import CallReader, OfferedTool, ParsedCall, check_call, fit_result
from app.tools.config import ToolConfigFiles
from app.tools.connections import ConnectionState
from app.tools.host import Decision, ToolHost
from app.ui.chat_api import ChatViews
from app.ui.chat_panel import ChatPanel
from tests.conftest import free_port, wait_until

SERVER_SCRIPT = Path(__file__).parent / "fixtures" / "mcp_tools_server.py"
TOOLS = ("echo", "slow", "crash", "huge")
SESSION = "page-1"
# Seeded sampling: under the tools' grammar the tiny model writes a valid call (greedy decoding
# would write whitespace for ever); the reply after it is short.
SAMPLING = SamplingSettings(temperature=1.0, seed=3, max_tokens=200)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, engine_loop: Any) -> Iterator[ToolHost]:
    """One host with the stdio test server, connected once for the module (a Python MCP server
    takes seconds to start here)."""
    tools = ToolHost(tmp_path_factory.mktemp("tools-config"))
    tools.save_server({"name": "t", "kind": "stdio", "command": sys.executable, "args": [str(SERVER_SCRIPT)]})
    status = engine_loop.run(tools.connect("t"), timeout=120)
    assert status.state == ConnectionState.CONNECTED, status
    yield tools
    engine_loop.run(tools.close())


def only(host: ToolHost, tool: str, timeout: float = 60.0) -> None:
    for name in TOOLS:
        host.set_tool_enabled("t", name, name == tool)
    host.update_limits(8, timeout)
    for key in host.settings.always_allowed:
        host.revoke(key)


@pytest.fixture
def panel(engine: Engine, make_app: Any, host: ToolHost) -> ChatPanel:
    app: App = make_app(engine, AppSettings())
    app.tools = host
    host.first_choice = "required"
    panel = ChatPanel(app, chatbot=None)
    app.update_settings(sampling=SAMPLING)
    return panel


def send(engine_loop: Any, panel: ChatPanel, text: str, answer: Decision | None, stop_when_running: bool = False):
    """Send `text` through the chat tab's handler; answer the approval as the page would.
    Returns (the calls that asked for approval, the last update, seconds taken)."""
    asked = []

    async def run() -> tuple:
        stream = panel._stream(Turn(None, [], text), "", "en", SESSION)
        updates: list[tuple] = []

        async def consume() -> None:
            async for update in stream:
                updates.append(update)

        task = asyncio.ensure_future(consume())
        start = time.monotonic()
        while not task.done() and time.monotonic() - start < 120:
            pending = panel.app.tools.pending(SESSION)
            if pending is not None and answer is not None:
                asked.append(pending)
                panel.app.tools.decide(SESSION, pending.call_id, answer)
            if stop_when_running and asked and _running(updates):
                task.cancel()
            await asyncio.sleep(0.02)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return updates, time.monotonic() - start

    updates, took = engine_loop.run(run(), timeout=180)
    return asked, updates, took


def _running(updates: list[tuple]) -> bool:
    chatbot = updates[-1][0] if updates else []
    return any("running" in (m.get("metadata") or {}).get("title", "") for m in chatbot)


def saved(panel: ChatPanel) -> list[Any]:
    conv = panel.app.conversations.list(limit=1)[0]
    return panel.app.conversations.messages(conv.id)


def test_an_allowed_call_runs_and_the_reply_continues_and_shows_again(engine_loop: Any, panel: ChatPanel) -> None:
    only(panel.app.tools, "echo")
    asked, _, _ = send(engine_loop, panel, "Say a word", Decision.ONCE)
    assert [(c.server, c.tool) for c in asked] == [("t", "echo")]
    assert json.loads(asked[0].arguments)["word"] in ("alpha", "beta")
    user, round_, reply = saved(panel)
    assert (user.role, round_.role, reply.role) == ("user", "assistant", "assistant")
    (call,) = round_.tool_calls
    word = json.loads(call.arguments)["word"]
    assert (call.name, call.state, call.result) == ("echo", CallState.DONE, f"echo: {word}")
    # The reply after the call was written by the model with the result in its prompt.
    assert reply.parent_id == round_.id and reply.stats.prompt_tokens > round_.stats.prompt_tokens
    # A reload shows the call as a collapsed block, and the export keeps it.
    shown = panel.open(panel.app.conversations.list(limit=1)[0].id, _request())[0]
    blocks = [m for m in shown if m.get("metadata")]
    assert len(blocks) == 1 and "echo" in blocks[0]["metadata"]["title"] and blocks[0]["metadata"]["status"] == "done"
    assert f"echo: {word}" in blocks[0]["content"]
    exported = ChatViews(panel.app).history()
    assert exported["messages"][1]["tool_calls"][0]["result"] == f"echo: {word}"


def test_tools_of_one_name_on_two_servers_each_reach_their_own(engine_loop: Any, panel: ChatPanel) -> None:
    host = panel.app.tools
    only(host, "echo")
    host.save_server({"name": "u", "kind": "stdio", "command": sys.executable, "args": [str(SERVER_SCRIPT)]})
    try:
        for name in TOOLS[1:]:
            host.set_tool_enabled("u", name, False)
        offered = engine_loop.run(host.offered_tools(), timeout=120)
        assert sorted((t.name, t.server, t.server_tool) for t in offered) == [
            ("t_echo", "t", "echo"),
            ("u_echo", "u", "echo"),
        ]
        asked, _, _ = send(engine_loop, panel, "Say a word", Decision.ONCE)
        # The approval names the server and its own tool; the call ran there and is saved by the
        # name the model used.
        (pending,) = asked
        (call,) = saved(panel)[1].tool_calls
        assert (call.name, call.server) == (f"{pending.server}_echo", pending.server) and pending.tool == "echo"
        assert call.state == CallState.DONE and call.result.startswith("echo: ")
    finally:
        host.remove_server("u")


def test_a_denied_call_never_runs_and_always_allow_is_remembered(engine_loop: Any, panel: ChatPanel) -> None:
    host = panel.app.tools
    only(host, "echo")
    send(engine_loop, panel, "Say a word", Decision.DENY)
    (call,) = saved(panel)[1].tool_calls
    assert (call.state, call.result) == (CallState.DENIED, "The user denied this tool call.")

    asked, _, _ = send(engine_loop, panel, "Again", Decision.ALWAYS)
    assert len(asked) == 1 and host.settings.always_allowed == ("t/echo",)
    asked, _, _ = send(engine_loop, panel, "Once more", Decision.DENY)
    assert asked == [] and saved(panel)[1].tool_calls[0].state == CallState.DONE
    host.revoke("t/echo")
    assert host.settings.always_allowed == ()


def test_a_hanging_call_times_out_and_a_crashing_server_comes_back(engine_loop: Any, panel: ChatPanel) -> None:
    host = panel.app.tools
    only(host, "slow", timeout=1)
    send(engine_loop, panel, "Wait", Decision.ONCE)
    (call,) = saved(panel)[1].tool_calls
    assert call.state == CallState.ERROR and "did not answer within 1 s" in call.result

    only(host, "crash")
    send(engine_loop, panel, "Crash", Decision.ONCE)
    (call,) = saved(panel)[1].tool_calls
    assert call.state == CallState.ERROR and "exited during the call to crash" in call.result
    # The chat goes on: the next call starts the server again.
    only(host, "echo")
    send(engine_loop, panel, "Say a word", Decision.ONCE)
    assert saved(panel)[1].tool_calls[0].state == CallState.DONE


def test_stop_during_a_slow_tool_cancels_the_call_and_keeps_the_round(
    engine_loop: Any, panel: ChatPanel, engine: Engine
) -> None:
    only(panel.app.tools, "slow")
    # The slow tool sleeps 30 or 60 s: a call still marked stopped was cancelled, not waited for.
    send(engine_loop, panel, "Wait", Decision.ONCE, stop_when_running=True)
    _user, round_ = saved(panel)
    assert [c.state for c in round_.tool_calls] == [CallState.STOPPED]
    assert engine.num_unfinished_requests() == 0


def test_a_huge_result_is_cut_to_the_context_with_a_note(engine_loop: Any, panel: ChatPanel, engine: Engine) -> None:
    only(panel.app.tools, "huge")
    send(engine_loop, panel, "Read it all", Decision.ONCE)
    messages = saved(panel)
    (call,) = messages[1].tool_calls
    assert call.state == CallState.DONE and call.result.endswith("to fit the remaining context.]")
    tokens = len(engine.vllm.tokenizer.encode(call.result, add_special_tokens=False))
    assert tokens < engine.max_model_len
    assert messages[-1].stats is not None  # the model still answered


def test_invented_tools_and_bad_arguments_go_back_to_the_model_as_errors() -> None:
    tools = [OfferedTool("t", "echo", "", {"type": "object", "properties": {"word": {"enum": ["alpha"]}}})]
    assert "no tool named “search”" in check_call(ParsedCall("1", "search", "{}"), tools, "en")[2]
    assert "not valid JSON" in check_call(ParsedCall("1", "echo", "{word"), tools, "en")[2]
    assert "do not match its schema" in check_call(ParsedCall("1", "echo", '{"word": "x"}'), tools, "en")[2]
    assert "参数不符合" in check_call(ParsedCall("1", "echo", '{"word": "x"}'), tools, "zh-CN")[2]
    assert check_call(ParsedCall("1", "echo", '{"word": "alpha"}'), tools, "en")[1] == {"word": "alpha"}


def test_replies_are_read_with_vllms_parser_and_results_fit_the_context(engine: Engine) -> None:
    tokenizer = engine.vllm.tokenizer
    tools = [OfferedTool("t", "echo", "", {"type": "object"})]
    reader = CallReader("hermes", tokenizer, tools)
    # Hermes keeps special tokens: some models write <tool_call> as one.
    assert reader.skip_special_tokens is False
    text, calls = reader.read('Let me see. <tool_call>{"name": "echo", "arguments": {"word": "alpha"}}</tool_call>')
    assert text.strip() == "Let me see." and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("echo", {"word": "alpha"})
    ]
    assert CallReader("hermes", tokenizer, tools).read("No call here.") == ("No call here.", [])
    # While the reply streams the page shows its words, not the markup of a call it is writing.
    assert reader.words('Let me see. <tool_call>{"name": "ec') == "Let me see. "
    assert reader.words("Let me see. <tool_") == "Let me see. "
    assert reader.words("If a < b, then") == "If a < b, then"
    assert CallReader("", tokenizer, tools).words("<tool_call>") == "<tool_call>"
    assert CallReader("", tokenizer, tools).skip_special_tokens is True
    assert fit_result("short", tokenizer, 1000, "en") == "short"
    cut = fit_result("word " * 2000, tokenizer, 400, "en")
    assert cut.endswith("to fit the remaining context.]") and len(tokenizer.encode(cut)) <= 400


def test_bad_servers_each_get_one_sentence(engine_loop: Any, tmp_path: Path) -> None:
    host = ToolHost(tmp_path)
    host.save_server({"name": "gone", "kind": "stdio", "command": "no-such-mcp-server"})
    status = engine_loop.run(host.connect("gone"))
    assert status.state == ConnectionState.FAILED
    assert status.error.message("en") == (
        "The command “no-such-mcp-server” was not found; give its full path or install it."
    )
    assert "找不到命令" in status.error.message("zh-CN")
    port = free_port()
    host.save_server({"name": "down", "kind": "http", "url": f"http://127.0.0.1:{port}/mcp"})
    assert "Cannot reach the server" in engine_loop.run(host.connect("down")).error.message("en")
    with pytest.raises(Exception, match="needs a command to run"):
        host.save_server({"name": "x", "kind": "stdio", "command": " "})
    with pytest.raises(Exception, match="exists already"):
        host.save_server({"name": "gone", "kind": "stdio", "command": "y"})
    engine_loop.run(host.close())


SECRET = "sk-very-secret-123"
# Much more on stderr than is kept, a line with a secret from the server's env, then exit 3.
EXITS_AT_START = (
    "import os, sys; sys.stderr.write('noise\\n' * 200_000); "
    "[print(f'line {i}', file=sys.stderr) for i in range(1, 6)]; "
    "print('using key ' + os.environ['API_KEY'], '\\x1b[31mred\\x1b[0m', 'x' * 1_000, file=sys.stderr); "
    "print('boom', file=sys.stderr); sys.exit(3)"
)


def test_a_server_that_exits_at_start_says_its_exit_code_and_last_stderr_lines(
    engine_loop: Any, tmp_path: Path, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from app.ui.tools import ToolsPanel

    panel = ToolsPanel(make_app(Engine()), ToolHost(tmp_path))
    env = f"API_KEY={SECRET}"
    shown = engine_loop.run(
        panel.save("", "bad", "stdio", sys.executable, f"-c\n{EXITS_AT_START}", env, "", "", True, _request())
    )
    status = panel.host.status("bad")
    kept = f"using key *** red {'x' * (200 - len('using key *** red '))}"
    assert status.error.message("en") == f"bad exited with code 3 at start:\nline 3\nline 4\nline 5\n{kept}\nboom"
    assert status.error.message("zh-CN").startswith("bad 启动时退出，退出码 3：\nline 3")
    # The page shows the sentence, then the lines as the server wrote them (a code block).
    assert shown[-2] == (
        f"Not connected: bad exited with code 3 at start:\n\n```text\nline 3\nline 4\nline 5\n{kept}\nboom\n```"
    )
    assert SECRET not in caplog.text and SECRET not in shown[-2]
    quiet = {"name": "quiet", "kind": "stdio", "command": sys.executable, "args": ["-c", "import sys; sys.exit(2)"]}
    panel.host.save_server(quiet)
    assert engine_loop.run(panel.host.connect("quiet")).error.message("en") == (
        "quiet exited with code 2 at start, and wrote nothing to its standard error."
    )
    engine_loop.run(panel.host.close())


# Answers every request with an MCP error of its own.
REFUSES = """import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" in m and "method" in m:
        error = {"code": -32602, "message": "Unsupported protocol version"}
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "error": error}), flush=True)
"""


def test_a_command_that_is_not_an_mcp_server_is_told_so_within_the_start_timeout(
    engine_loop: Any, tmp_path: Path
) -> None:
    host = ToolHost(tmp_path, start_timeout_s=3)
    commands = {
        "echoes": ("cat", []),  # answers, with our own requests
        "prints": (sys.executable, ["-c", "print('hello')", SECRET]),  # writes what is not MCP, exits 0
        "waits": ("sleep", ["100"]),  # never answers
        "refuses": (sys.executable, ["-c", REFUSES]),  # speaks MCP, and gives its own reason
    }
    messages = {}
    for name, (command, args) in commands.items():
        host.save_server({"name": name, "kind": "stdio", "command": command, "args": args, "env": {"KEY": SECRET}})
        start = time.monotonic()
        status = engine_loop.run(host.connect(name), timeout=60)
        messages[name] = (status.state, status.error.message("en"), time.monotonic() - start)
    python = sys.executable
    assert messages["echoes"][:2] == (
        ConnectionState.FAILED,
        "echoes did not answer as an MCP server (started `cat`: is it the right command?)",
    )
    assert messages["prints"][:2] == (
        ConnectionState.FAILED,
        f"prints did not answer as an MCP server (started `{python} -c 'print('\"'\"'hello'\"'\"')' ***`: "
        "is it the right command?)",
    )
    assert messages["waits"][:2] == (
        ConnectionState.FAILED,
        "waits did not answer as an MCP server within 3 s (started `sleep 100`: is it the right command?)",
    )
    assert messages["refuses"][1] == "The server could not start: Unsupported protocol version"
    # Bounded by the start timeout (and the SDK's few seconds to stop the process), not the sleep.
    assert messages["waits"][2] < 20, messages
    assert host.status("waits").error.message("zh-CN") == (
        "waits 在 3 秒内没有以 MCP 服务器的方式响应（启动的是 `sleep 100`：命令是否正确？）"
    )
    engine_loop.run(host.close())


@pytest.fixture
def http_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "http", str(port)],
        env={**os.environ, "TOKEN": "s3cret-token"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        assert wait_until(lambda: _answers(port), timeout=60), "the HTTP MCP server did not start"
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
    except httpx.TransportError:
        return False
    return True


def test_an_http_server_with_a_bearer_token_stored_apart(engine_loop: Any, tmp_path: Path, http_server: str) -> None:
    host = ToolHost(tmp_path)
    host.save_server({"name": "web", "kind": "http", "url": http_server}, token="wrong")
    assert "refused the token" in engine_loop.run(host.connect("web")).error.message("en")
    host.save_server({"name": "web", "kind": "http", "url": http_server}, token="s3cret-token", replacing="web")
    status = engine_loop.run(host.connect("web"))
    assert status.state == ConnectionState.CONNECTED and {t.name for t in status.tools} == set(TOOLS)
    outcome = engine_loop.run(host.call("web", "echo", {"word": "beta"}))
    assert outcome.text == "echo: beta"
    files = ToolConfigFiles(tmp_path)
    assert "s3cret-token" not in files.settings_path.read_text()
    assert files.token("web") == "s3cret-token"
    assert files.tokens_path.stat().st_mode & 0o777 == 0o600
    assert files.settings_path.stat().st_mode & 0o777 == 0o600
    engine_loop.run(host.close())


def test_a_tool_call_through_v1_runs_nothing(
    engine: Engine, make_app: Any, start_server: Any, host: ToolHost, engine_loop: Any
) -> None:
    """The API returns the call to its client, as `vllm serve` does; no MCP server is asked."""
    app = make_app(engine)
    only(host, "echo")
    engine_loop.run(host.close())
    app.tools = host
    server = start_server(app)
    tool = {
        "type": "function",
        "function": {
            "name": "echo",
            "parameters": {"type": "object", "properties": {"word": {"enum": ["alpha", "beta"]}}, "required": ["word"]},
        },
    }
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        timeout=120,
        json={
            "model": engine.model_name,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [tool],
            "tool_choice": "required",
            "temperature": 1.0,
            "seed": 3,
            "max_tokens": 200,
        },
    )
    assert reply.status_code == 200, reply.text
    calls = reply.json()["choices"][0]["message"]["tool_calls"]
    assert calls and {c["function"]["name"] for c in calls} == {"echo"}
    assert host.status("t").state == ConnectionState.OFF and host.pending(SESSION) is None


def _request(lang: str = "en") -> Any:
    return type("Request", (), {"headers": {"accept-language": lang}, "session_hash": SESSION})()


def test_settings_tools_panel_shows_state_turns_tools_off_and_explains_bad_servers(
    engine_loop: Any, engine: Engine, make_app: Any, host: ToolHost
) -> None:
    from app.ui.tools import ToolsPanel

    only(host, "echo")
    engine_loop.run(host.connect("t"))
    panel = ToolsPanel(make_app(engine), host)
    *form, status, tools = panel.select("t", _request())
    assert form[:2] == ["t", "stdio"] and status.startswith("Connected: 1 of 4 tools on (echo, slow, crash, huge)")
    assert tools["choices"] and tools["value"] == ["echo"]
    # The state line counts what is on as soon as a tool is ticked.
    assert panel.set_tools("t", ["echo", "slow"], _request()).startswith("Connected: 2 of 4 tools on")
    assert host.settings.server("t").disabled_tools == ("crash", "huge")
    with pytest.raises(Exception, match="needs a command to run"):
        engine_loop.run(panel.save("", "bad", "stdio", "", "", "", "", "", True, _request()))
    saved_ = engine_loop.run(panel.save("", "gone", "stdio", "no-such-mcp", "", "A=1", "", "", True, _request()))
    assert "“no-such-mcp” was not found" in saved_[-2]
    assert host.settings.server("gone").env == {"A": "1"}
    panel.remove("gone", _request())
    assert host.settings.server("gone") is None


def test_remove_asks_first_and_removes_the_server_it_named(engine_loop: Any, make_app: Any, host: ToolHost) -> None:
    from app.ui.tools import ToolsPanel

    panel = ToolsPanel(make_app(Engine()), host)
    host.save_server({"name": "spare", "kind": "stdio", "command": "no-such-mcp"})
    group, question, asked = panel.ask_remove("spare", _request())
    assert group["visible"] is True and asked == "spare"
    assert question == ("Remove the server “spare”? Its settings, saved token and always-allowed tools are forgotten.")
    assert "移除服务器“spare”" in panel.ask_remove("spare", _request("zh-CN"))[1]
    # Asking removes nothing; Yes removes the server the question named.
    assert host.settings.server("spare") is not None
    *_, group, asked = panel.remove(asked, _request())
    assert host.settings.server("spare") is None and host.settings.server("t") is not None
    assert group["visible"] is False and asked == ""
    with pytest.raises(Exception, match="Choose a server first"):
        panel.ask_remove("", _request())


def test_the_chat_says_when_the_model_cannot_call_tools_and_shows_the_switch_only_where_it_applies(
    engine: Engine, make_app: Any, host: ToolHost
) -> None:
    from app.ui.chat_tools import ChatTools

    loaded = ChatTools(make_app(engine))
    loaded.app.tools = host
    thinking, budget, note = loaded.refresh(_request())
    # The tiny model's template takes no `enable_thinking`: no switch; no reasoning parser: no
    # budget; it has a tool-call parser: no note.
    assert thinking["visible"] is False and budget["visible"] is False and note["visible"] is False
    assert loaded.options() is None
    # A model without a tool-call parser for its family (the same engine, told no parser).
    settings = dataclasses.replace(engine.settings, tool_call_parser="")
    capabilities = dataclasses.replace(engine.capabilities, tools=False)
    no_parser = SimpleNamespace(model_name="plain", settings=settings, capabilities=capabilities)
    plain = ChatTools(make_app(no_parser))
    plain.app.tools = host
    _, _, note = plain.refresh(_request())
    assert note["visible"] is True and "no tool-call support" in note["value"]
    assert not plain.active()


def test_tool_calls_survive_export_and_import(tmp_path: Path) -> None:
    from app.conversations import Conversations
    from app.history.records import ToolCallRecord

    store = Conversations(tmp_path / "history.sqlite3")
    conv = store.create("q")
    user = store.add_child(conv.id, None, "user", "q")
    call = ToolCallRecord("call_1", "echo", '{"word": "alpha"}', CallState.DONE, "echo: alpha", "t")
    round_ = store.add_child(conv.id, user.id, "assistant", "", None, (call,))
    store.add_child(conv.id, round_.id, "assistant", "It said alpha.")
    copy = store.import_json(json.dumps(store.export_json(conv.id)))
    assert [m.tool_calls for m in store.messages(copy.id)] == [(), (call,), ()]
    assert "🔧 `echo`" in store.export_markdown(conv.id)
    bad = store.export_json(conv.id)
    bad["messages"][1]["tool_calls"][0]["state"] = "exploded"
    with pytest.raises(Exception, match="not a conversation this app can import"):
        store.import_json(json.dumps(bad))
    store.close()
