"""One live connection to an MCP server, with the official `mcp` SDK's client.

The SDK's client is an async context manager whose task group must be entered and left by the
same task, so each connection is a task of its own that opens the client, lists the tools and
then holds the connection until it is closed; calls are made from the chat's task and sent over
it. A call cancelled (Stop, timeout) is cancelled on the server too: the SDK sends MCP's
`notifications/cancelled` for a request its caller abandons.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from app.errors import UserError
from app.tools.config import ServerConfig, ServerKind
from app.tools.stdio import StderrTail, shown_command, stdio_transport

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 60.0
# A server that failed to start is stopped by then; its stderr ends once all it started has ended.
STDERR_END_S = 3.0


class ConnectionState(enum.StrEnum):
    OFF = "off"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ServerStatus:
    state: ConnectionState
    tools: tuple[ToolInfo, ...] = ()
    error: UserError | None = None


@dataclass(frozen=True)
class CallOutcome:
    text: str
    is_error: bool = False


@dataclass
class ServerConnection:
    config: ServerConfig
    token: str | None = field(default=None, repr=False)
    start_timeout_s: float = CONNECT_TIMEOUT_S
    _status: ServerStatus = field(default_factory=lambda: ServerStatus(ConnectionState.OFF))
    _client: Any = None
    _task: asyncio.Task | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    # HTTP statuses 401/403 the server answered with (the SDK's errors do not carry them).
    _refused: list[int] = field(default_factory=list)

    @property
    def status(self) -> ServerStatus:
        return self._status

    async def connect(self) -> ServerStatus:
        """Connected (or failed, with the reason) once this returns; reconnects after a failure."""
        if self._task is None or self._task.done():
            self._ready.clear()
            self._closing.clear()
            self._status = ServerStatus(ConnectionState.CONNECTING)
            self._task = asyncio.get_running_loop().create_task(self._hold())
        try:
            await asyncio.wait_for(self._ready.wait(), self.start_timeout_s)
        except TimeoutError:
            await self.close()
            self._status = ServerStatus(ConnectionState.FAILED, error=self._timeout_error())
        return self._status

    def _timeout_error(self) -> UserError:
        if self.config.kind == ServerKind.HTTP:
            return UserError("tools.connect_timeout")
        # A command that is no MCP server (`sleep`, a shell) may never answer at all.
        seconds = f"{self.start_timeout_s:,g}"
        return UserError(
            "tools.not_mcp_in_time", name=self.config.name, command=shown_command(self.config), seconds=seconds
        )

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> CallOutcome:
        """Run one tool; UserError (one sentence) if the server cannot answer in `timeout` seconds."""
        if self._status.state != ConnectionState.CONNECTED:
            status = await self.connect()
            if status.error is not None:
                raise status.error
        from mcp.shared.exceptions import MCPError

        try:
            async with asyncio.timeout(timeout):
                result = await self._client.call_tool(tool, arguments)
        except TimeoutError:
            raise UserError("tools.call_timeout", tool=tool, seconds=f"{timeout:g}") from None
        except MCPError as exc:
            if self._task is not None and not self._task.done() and "closed" not in str(exc).lower():
                raise UserError("tools.call_failed", tool=tool, reason=_first_line(exc)) from None
            # The server went away mid-call: the next call starts it again.
            await self.close()
            self._status = ServerStatus(ConnectionState.FAILED, error=UserError("tools.server_exited"))
            raise UserError("tools.server_exited_call", tool=tool, server=self.config.name) from None
        return CallOutcome(_result_text(result), bool(result.is_error))

    async def close(self) -> None:
        task, self._task = self._task, None
        self._closing.set()
        if task is not None and not task.done():
            # A connected server's session ends itself; one still starting (a command that
            # never answers) has nothing to end gracefully.
            if self._client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(task), 10)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._client = None
        self._status = ServerStatus(ConnectionState.OFF)

    async def _hold(self) -> None:
        from mcp import Client

        stderr = StderrTail() if self.config.kind == ServerKind.STDIO else None
        try:
            async with Client(self._target(stderr)) as client:
                listed = await client.list_tools()
                tools = tuple(ToolInfo(t.name, t.description or "", dict(t.input_schema or {})) for t in listed.tools)
                self._client = client
                self._status = ServerStatus(ConnectionState.CONNECTED, tools)
                self._ready.set()
                await self._closing.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the SDK raises exception groups
            if stderr is not None:
                await stderr.wait_ended(STDERR_END_S)
            error = explain_connect_error(exc, self.config, bool(self._refused), stderr)
            log.info("MCP server %s: %s", self.config.name, error.message("en"))
            self._status = ServerStatus(ConnectionState.FAILED, error=error)
        finally:
            if stderr is not None:
                stderr.close()
            self._client = None
            self._ready.set()

    def _target(self, stderr: StderrTail | None) -> Any:
        if stderr is not None:
            return stdio_transport(self.config, stderr)
        return _http_transport(self.config.url, self.token, self._refused)


@contextlib.asynccontextmanager
async def _http_transport(url: str, token: str | None, refused: list[int]) -> AsyncIterator[Any]:
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else None

    async def note_refusal(response: Any) -> None:
        if response.status_code in (401, 403):
            refused.append(response.status_code)

    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        # The SDK reports a refused request without its status: a refusal is noted here.
        http.event_hooks["response"].append(note_refusal)
        yield streams


def explain_connect_error(
    exc: BaseException, config: ServerConfig, refused: bool = False, stderr: StderrTail | None = None
) -> UserError:
    """One sentence for a server that would not start or answer (`refused`: it said 401/403;
    `stderr`: what a stdio server wrote there, and how it ended)."""
    leaf = _innermost(exc)
    if config.kind == ServerKind.STDIO:
        return _explain_stdio_start(leaf, config, stderr)
    text = f"{type(leaf).__name__}: {leaf}"
    if refused or "401" in text or "403" in text:
        return UserError("tools.unauthorized", url=config.url)
    if "connect" in text.lower():
        return UserError("tools.unreachable", url=config.url)
    if "closed" in text.lower():
        return UserError("tools.server_exited")
    return UserError("tools.connect_failed", reason=_first_line(leaf))


def _explain_stdio_start(leaf: BaseException, config: ServerConfig, stderr: StderrTail | None) -> UserError:
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED, METHOD_NOT_FOUND

    if isinstance(leaf, FileNotFoundError) or not (shutil.which(config.command) or os.path.exists(config.command)):
        return UserError("tools.command_not_found", command=config.command)
    closed = isinstance(leaf, MCPError) and leaf.code == CONNECTION_CLOSED
    code = stderr.exit_code() if stderr is not None else None
    lines = stderr.last_lines(config.env) if stderr is not None else []
    # Exiting at once, silent and content (`true`, a script that only prints), is no MCP server either.
    if closed and code is not None and (code != 0 or lines):
        if not lines:
            return UserError("tools.exited_at_start_silent", name=config.name, code=str(code))
        return UserError("tools.exited_at_start", name=config.name, code=str(code), output="\n".join(lines))
    # It closed its output, or does not know MCP's first request (`cat` echoes our own
    # requests back, and our answer to them); another error is a server's own reason.
    if isinstance(leaf, MCPError) and leaf.code in (CONNECTION_CLOSED, METHOD_NOT_FOUND):
        return UserError("tools.not_mcp", name=config.name, command=shown_command(config))
    return UserError("tools.connect_failed", reason=_first_line(leaf))


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _result_text(result: Any) -> str:
    """A tool result as text for the model: its text blocks, else its structured content."""
    parts = [getattr(block, "text", None) for block in result.content]
    texts = [p for p in parts if isinstance(p, str)]
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        import json

        return json.dumps(result.structured_content, ensure_ascii=False)
    return ""
