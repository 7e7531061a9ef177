"""The user's MCP servers and tool settings, saved in the config folder (tools.json, 0600).

A server's bearer token is a secret: it is kept in a file of its own (mcp-tokens.json, 0600),
never in tools.json, the logs or a message, and the page only learns whether one is set.
"""

from __future__ import annotations

import enum
import json
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.errors import UserError
from app.files import write_private

TOOLS_FILE = "tools.json"
TOKENS_FILE = "mcp-tokens.json"
DEFAULT_MAX_ROUNDS = 8
DEFAULT_CALL_TIMEOUT_S = 60.0
# Beyond any context a model here has: a budget is a few hundred to some thousands of tokens.
MAX_THINKING_BUDGET = 1_000_000
_NAME = re.compile(r"^[\w][\w .-]{0,63}$", re.UNICODE)


class ServerKind(enum.StrEnum):
    STDIO = "stdio"  # a local command the app starts, talking over its stdin/stdout
    HTTP = "http"  # a URL (streamable HTTP)


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    kind: ServerKind
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    url: str = ""
    enabled: bool = True
    # Tools of this server the user turned off: never offered to the model.
    disabled_tools: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not _NAME.match(value):
            raise ValueError("a name of letters, digits, spaces, dots or dashes, up to 64")
        return value

    @model_validator(mode="after")
    def _target(self) -> ServerConfig:
        if self.kind == ServerKind.STDIO and not self.command.strip():
            raise ValueError("a command to run")
        if self.kind == ServerKind.HTTP and not re.match(r"^https?://[^\s/]+", self.url):
            raise ValueError("a URL that starts with http:// or https://")
        return self


class ToolSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    servers: tuple[ServerConfig, ...] = ()
    # "server/tool" pairs the user chose "Always allow" for; revocable in Settings -> Tools.
    always_allowed: tuple[str, ...] = ()
    max_rounds: Annotated[int, Field(ge=1, le=64)] = DEFAULT_MAX_ROUNDS
    call_timeout_s: Annotated[float, Field(gt=0, le=3600)] = DEFAULT_CALL_TIMEOUT_S
    # The chat's thinking switch (`enable_thinking` for templates that take it); on by default.
    thinking: bool = True
    # Tokens of thinking before vLLM makes the model answer; None: no limit.
    thinking_budget: Annotated[int, Field(ge=1, le=MAX_THINKING_BUDGET)] | None = None

    @model_validator(mode="after")
    def _unique(self) -> ToolSettings:
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError("server names must differ")
        return self

    def server(self, name: str) -> ServerConfig | None:
        return next((s for s in self.servers if s.name == name), None)

    def allowed_always(self, server: str, tool: str) -> bool:
        return allow_key(server, tool) in self.always_allowed


def allow_key(server: str, tool: str) -> str:
    return f"{server}/{tool}"


def parse_settings(data: object) -> ToolSettings:
    """Validated settings; one sentence (`tools.bad_settings`) for anything wrong."""
    try:
        return ToolSettings.model_validate(data)
    except ValidationError as exc:
        raise UserError("tools.bad_settings", reason=_reason(exc)) from None


def parse_server(data: object) -> ServerConfig:
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError("tools.bad_server", reason=_reason(exc)) from None


class ToolConfigFiles:
    """Reads and writes tools.json and the token file in one folder."""

    def __init__(self, folder: Path) -> None:
        self.settings_path = folder / TOOLS_FILE
        self.tokens_path = folder / TOKENS_FILE

    def load(self) -> ToolSettings:
        """The saved settings; defaults when there are none or the file cannot be read."""
        try:
            return parse_settings(json.loads(self.settings_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, UserError):
            return ToolSettings()

    def save(self, settings: ToolSettings) -> None:
        write_private(self.settings_path, settings.model_dump_json(indent=2))

    def token(self, server: str) -> str | None:
        return self._tokens().get(server)

    def set_token(self, server: str, token: str | None) -> None:
        """Store (or with None or "", forget) a server's bearer token."""
        tokens = self._tokens()
        if token:
            tokens[server] = token
        else:
            tokens.pop(server, None)
        write_private(self.tokens_path, json.dumps(tokens))

    def _tokens(self) -> dict[str, str]:
        try:
            data = json.loads(self.tokens_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _reason(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
