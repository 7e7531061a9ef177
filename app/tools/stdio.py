"""Starting a stdio MCP server so that a failed start can be explained: the last lines of its
standard error and its exit code, with the server's environment values kept out of both.

The SDK's `stdio_client` takes the server's stderr as a real file (`errlog`) and keeps the
process to itself, so its stderr goes into a pipe read here into a bounded buffer, and the
command runs under `/bin/sh`, which writes the command's exit code as a last stderr line once
it ends (the exit code is otherwise never seen outside the SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.tools.config import ServerConfig

# Kept while the server writes: a server that writes without end costs no more than this.
TAIL_BYTES = 4096
TAIL_LINES = 5
LINE_CHARS = 200
COMMAND_CHARS = 200
_EXIT_MARK = "vllm-chat-mcp-exit:"
# Runs the command ($0 and its args) and reports how it ended, on a line of its own.
_REPORT_EXIT = f'"$0" "$@"; code=$?; printf "\\n{_EXIT_MARK}%s\\n" "$code" >&2; exit "$code"'
# Colour codes first: their ESC alone is a control character too.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
# Values this short (a flag such as "1") are no secret, and hiding them would garble the text.
_SHORTEST_SECRET = 4


class StderrTail:
    """The end of a server's standard error, read from a pipe while the server runs."""

    def __init__(self) -> None:
        read, write = os.pipe()
        os.set_blocking(read, False)
        self._read = read
        # The server's end; ours is closed once the server has it (`started`).
        self.writer = os.fdopen(write, "w")
        self._data = bytearray()
        self._ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(read, self._on_readable)

    def started(self) -> None:
        """The server holds its own copy now: the pipe ends when the server (and all it started) does."""
        self.writer.close()

    async def wait_ended(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        return self._ended.is_set()

    def close(self) -> None:
        self.writer.close()
        if not self._ended.is_set():
            self._end()

    def exit_code(self) -> int | None:
        """How the command ended, once the pipe has ended; None if it was killed or still runs."""
        last = self._lines()[-1:]
        if self._ended.is_set() and last and last[0].startswith(_EXIT_MARK):
            with contextlib.suppress(ValueError):
                return int(last[0].removeprefix(_EXIT_MARK))
        return None

    def last_lines(self, hidden: Mapping[str, str]) -> list[str]:
        """Its last lines as the user may see them: control codes dropped, `hidden` values masked."""
        lines = [line for line in self._lines() if not line.startswith(_EXIT_MARK)]
        shown = [_CONTROL.sub("", hide_values(line, hidden)).strip() for line in lines]
        return [line[:LINE_CHARS] for line in shown if line][-TAIL_LINES:]

    def _lines(self) -> list[str]:
        text = self._data.decode("utf-8", errors="replace")
        return [line for line in text.splitlines() if line.strip()]

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._read, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._end()
            return
        self._data += chunk
        del self._data[:-TAIL_BYTES]

    def _end(self) -> None:
        self._loop.remove_reader(self._read)
        os.close(self._read)
        self._ended.set()


@contextlib.asynccontextmanager
async def stdio_transport(config: ServerConfig, stderr: StderrTail) -> AsyncIterator[Any]:
    """The SDK's stdio transport for `config`, its stderr into `stderr`."""
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command="/bin/sh", args=["-c", _REPORT_EXIT, config.command, *config.args], env=config.env
    )
    async with stdio_client(params, errlog=stderr.writer) as streams:
        stderr.started()
        yield streams


def shown_command(config: ServerConfig) -> str:
    """The command line as the user typed it, bounded, its environment values masked."""
    text = hide_values(shlex.join([config.command, *config.args]), config.env)
    return text if len(text) <= COMMAND_CHARS else text[: COMMAND_CHARS - 1] + "…"


def hide_values(text: str, env: Mapping[str, str]) -> str:
    """`text` with each of the server's environment values (its keys, tokens) masked."""
    for value in sorted(env.values(), key=len, reverse=True):
        if len(value.strip()) >= _SHORTEST_SECRET:
            text = text.replace(value, "***")
    return text
