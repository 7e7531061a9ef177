"""The chat as an MCP host: the user's servers, their live connections, and the approvals.

A tool runs only after the user allowed it in the page: the tool loop asks here, and waits
until the page that sent the message answers (`decide`, with that page's session) or the
tool is always allowed (per server and tool, revocable). Nothing else can run a tool: the
`/v1` API never reaches this object.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.errors import UserError
from app.tools.calls import OfferedTool, offered_name
from app.tools.config import ServerConfig, ToolConfigFiles, ToolSettings, allow_key, parse_server, parse_settings
from app.tools.connections import CONNECT_TIMEOUT_S, CallOutcome, ConnectionState, ServerConnection, ServerStatus


class Decision(enum.StrEnum):
    ONCE = "once"
    ALWAYS = "always"
    DENY = "deny"


@dataclass(frozen=True)
class PendingCall:
    """A call waiting for the user: shown with Allow once / Always allow / Deny."""

    call_id: str
    server: str
    tool: str
    arguments: str


# Keep the saved token as it is (an edit that does not retype it).
KEEP_TOKEN = object()


class ToolHost:
    def __init__(self, config_dir: Path, start_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self._files = ToolConfigFiles(config_dir)
        # How long a server may take to start and answer before it is given up on.
        self._start_timeout_s = start_timeout_s
        self._settings = self._files.load()
        self._lock = threading.RLock()
        self._connections: dict[str, ServerConnection] = {}
        self._connect_locks: dict[str, asyncio.Lock] = {}
        # The loop the connections run on (the server's), known from the first connect.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Per page session: the call waiting for that page's answer.
        self._pending: dict[str, tuple[PendingCall, asyncio.Future[Decision]]] = {}
        # The first round's tool choice in the chat. The page lets the model choose ("auto");
        # tests force a call ("required": vLLM's JSON schema of the tools), since a random
        # model never chooses one by itself. Not a setting: nothing saves or exposes it.
        self.first_choice: Literal["auto", "required"] = "auto"

    # ---- settings ----------------------------------------------------------------------

    @property
    def settings(self) -> ToolSettings:
        return self._settings

    def has_token(self, server: str) -> bool:
        return bool(self._files.token(server))

    def save_server(self, data: dict[str, Any], token: Any = KEEP_TOKEN, replacing: str | None = None) -> ServerConfig:
        """Add a server, or replace `replacing` with it; UserError (one sentence) if it is not valid."""
        config = parse_server(data)
        if config.name != replacing and self._settings.server(config.name) is not None:
            raise UserError("tools.duplicate_server", name=config.name)
        kept = tuple(x for x in self._settings.servers if x.name not in (replacing, config.name))
        change = lambda s: s.model_copy(update={"servers": (*kept, config)})  # noqa: E731
        self._change(change)
        if replacing and replacing != config.name:
            old_token = self._files.token(replacing)
            self._files.set_token(replacing, None)
            if token is KEEP_TOKEN:
                token = old_token
        if token is not KEEP_TOKEN:
            self._files.set_token(config.name, token or None)
        self._drop_connection(replacing or config.name)
        self._drop_connection(config.name)
        return config

    def remove_server(self, name: str) -> None:
        self._change(
            lambda s: s.model_copy(
                update={
                    "servers": tuple(x for x in s.servers if x.name != name),
                    "always_allowed": tuple(k for k in s.always_allowed if not k.startswith(f"{name}/")),
                }
            )
        )
        self._files.set_token(name, None)
        self._drop_connection(name)

    def set_server_enabled(self, name: str, enabled: bool) -> None:
        self._replace_server(name, enabled=enabled)
        if not enabled:
            self._drop_connection(name)

    def set_tool_enabled(self, server: str, tool: str, enabled: bool) -> None:
        config = self._settings.server(server)
        if config is None:
            return
        off = [t for t in config.disabled_tools if t != tool] + ([] if enabled else [tool])
        self._replace_server(server, disabled_tools=tuple(off))

    def allow_always(self, server: str, tool: str) -> None:
        key = allow_key(server, tool)
        self._change(
            lambda s: (
                s if key in s.always_allowed else s.model_copy(update={"always_allowed": (*s.always_allowed, key)})
            )
        )

    def revoke(self, key: str) -> None:
        self._change(lambda s: s.model_copy(update={"always_allowed": tuple(k for k in s.always_allowed if k != key)}))

    def set_thinking(self, on: bool) -> None:
        self._change(lambda s: s.model_copy(update={"thinking": bool(on)}))

    def set_thinking_budget(self, tokens: int | None) -> None:
        """Raises UserError (`tools.bad_settings`) for a budget out of range."""
        self._change(lambda s: s.model_copy(update={"thinking_budget": tokens}))

    def update_limits(self, max_rounds: int, call_timeout_s: float) -> None:
        self._change(lambda s: s.model_copy(update={"max_rounds": max_rounds, "call_timeout_s": call_timeout_s}))

    def _replace_server(self, name: str, **fields: Any) -> None:
        def change(s: ToolSettings) -> ToolSettings:
            servers = tuple(x.model_copy(update=fields) if x.name == name else x for x in s.servers)
            return s.model_copy(update={"servers": servers})

        self._change(change)

    def _change(self, change: Callable[[ToolSettings], ToolSettings]) -> None:
        with self._lock:
            # Validated again as a whole (model_copy does not validate): e.g. two servers of one name.
            new = parse_settings(change(self._settings).model_dump())
            self._files.save(new)
            self._settings = new

    # ---- connections -------------------------------------------------------------------

    def status(self, name: str) -> ServerStatus:
        connection = self._connections.get(name)
        return connection.status if connection is not None else ServerStatus(ConnectionState.OFF)

    async def connect(self, name: str) -> ServerStatus:
        config = self._settings.server(name)
        if config is None or not config.enabled:
            return ServerStatus(ConnectionState.OFF)
        self._loop = asyncio.get_running_loop()
        # Two chats starting at once share one connection (one server process).
        async with self._connect_locks.setdefault(name, asyncio.Lock()):
            return await self._connect_locked(name, config)

    async def _connect_locked(self, name: str, config: ServerConfig) -> ServerStatus:
        connection = self._connections.get(name)
        if connection is None or connection.config != config:
            if connection is not None:
                await connection.close()
            connection = ServerConnection(config, self._files.token(name), self._start_timeout_s)
            self._connections[name] = connection
        if connection.status.state == ConnectionState.CONNECTED:
            return connection.status
        return await connection.connect()

    def has_servers(self) -> bool:
        return any(s.enabled for s in self._settings.servers)

    async def offered_tools(self) -> list[OfferedTool]:
        """The tools of every enabled server (connected now if needed), less those turned off;
        a server that fails offers none (its error shows in Settings -> Tools)."""
        enabled = [s for s in self._settings.servers if s.enabled]
        statuses = await asyncio.gather(*(self.connect(s.name) for s in enabled))
        tools = [
            (config.name, tool)
            for config, status in zip(enabled, statuses, strict=True)
            for tool in status.tools
            if tool.name not in config.disabled_tools
        ]
        servers_of = Counter(tool.name for _, tool in tools)
        offered: dict[str, OfferedTool] = {}
        for server, tool in tools:
            name = offered_name(server, tool.name, servers_of[tool.name] > 1)
            # A name that is still taken (a server's own tool called `files_search`) keeps the first.
            offered.setdefault(name, OfferedTool(server, name, tool.description, tool.input_schema, tool.name))
        return list(offered.values())

    async def call(self, server: str, tool: str, arguments: dict[str, Any]) -> CallOutcome:
        connection = self._connections.get(server)
        if connection is None:
            await self.connect(server)
            connection = self._connections.get(server)
        if connection is None:  # turned off or removed since the model was offered its tools
            raise UserError("tools.server_off", server=server)
        return await connection.call(tool, arguments, self._settings.call_timeout_s)

    def _drop_connection(self, name: str | None) -> None:
        """Close a server's connection (its process ends), from the loop it runs on: settings
        change in the page's worker threads as well as on that loop."""
        connection = self._connections.pop(name, None) if name else None
        if connection is not None and self._loop is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(connection.close(), self._loop)

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.close()

    # ---- approvals ---------------------------------------------------------------------

    async def ask(self, session: str, call: PendingCall) -> Decision:
        """Wait for the user of page `session` to decide (at once if the tool is always allowed)."""
        if self._settings.allowed_always(call.server, call.tool):
            return Decision.ALWAYS
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending[session] = (call, future)
        try:
            decision = await future
        finally:
            if self._pending.get(session, (None, None))[1] is future:
                del self._pending[session]
        if decision == Decision.ALWAYS:
            self.allow_always(call.server, call.tool)
        return decision

    def pending(self, session: str) -> PendingCall | None:
        entry = self._pending.get(session)
        return entry[0] if entry else None

    def decide(self, session: str, call_id: str, decision: Decision) -> bool:
        """The page's answer; False if that page has no such call waiting (stale or not its own)."""
        entry = self._pending.get(session)
        if entry is None or entry[0].call_id != call_id or entry[1].done():
            return False
        del self._pending[session]
        # Pages' handlers may run in worker threads; the loop waiting on the answer is elsewhere.
        entry[1].get_loop().call_soon_threadsafe(_settle, entry[1], decision)
        return True


def _settle(future: asyncio.Future[Decision], decision: Decision) -> None:
    if not future.done():
        future.set_result(decision)
