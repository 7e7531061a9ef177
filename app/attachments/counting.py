"""Counting a document in the loaded model's tokens while it is read.

Tokenizing a whole file at once costs time and memory in proportion to the file (a 40 MB log,
37 million tokens, took 123 s to refuse; the process grew from 0.7 to 12 GB and kept 6.6 GB),
though a model's context holds a few thousand to a few hundred thousand tokens. So the text is
counted in pieces of about 64 KiB, cut at line ends, and refused as soon as the running count is
more than the context: the work and memory are bounded by the context, not by the file (the
same log: refused in 0.4 s, 0.2 GB more at the peak, nothing kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from app.engine.types import Capabilities, EngineState, EngineStatus
from app.errors import UserError

PIECE_CHARS = 64 * 1024
# Cutting a text where the tokenizer would not can change a token or two at each cut (a merge
# across it, a SentencePiece word prefix): the running count is read as at least this much
# less per piece, so that a refusal never claims more tokens than the file has.
CUT_SLACK_TOKENS = 2


class TokenCounter(Protocol):
    """What attaching needs from the engine: its state, context, token count and capabilities
    (pictures per prompt, remote). The remote engine (app.engine.remote) has neither a tokenizer
    nor pictures here: its files are not counted (the server refuses a prompt too long) and
    pictures are refused."""

    @property
    def status(self) -> EngineStatus: ...

    @property
    def model_name(self) -> str | None: ...

    @property
    def max_model_len(self) -> int | None: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def count_tokens(self, text: str) -> int: ...


def check_ready(engine: TokenCounter, name: str) -> None:
    """A file is counted in the loaded model's tokens: none loaded, or one still loading, is
    said before the file is read."""
    if engine.model_name is not None:
        return
    status = engine.status
    if status.state == EngineState.LOADING:
        raise UserError("attachments.model_loading", name=name, model=status.model or "?")
    raise UserError("engine.no_model")


def counter_of(engine: TokenCounter) -> Callable[[str], int] | None:
    """Files are counted in the model's own tokens where it runs here, not on a remote server."""
    return None if engine.capabilities.remote else engine.count_tokens


class ContextBudget:
    """A `TextBudget` (app.attachments.content) of the loaded model's context, for one file."""

    def __init__(self, engine: TokenCounter, name: str, progress: Callable[[float], None] | None = None) -> None:
        self._count = counter_of(engine)
        self._limit = engine.max_model_len or 0
        self._name = name
        self._progress = progress
        self.tokens = 0
        self._pieces = 0
        self._pending = (0, 0)  # tokens and pieces of text taken in place of a part not read yet

    def take(self, text: str, done: float, pending: bool = False) -> None:
        if not pending:
            self._pending = (0, 0)
        if self._count is not None:
            for piece in pieces(text):
                tokens = self._count(piece)
                if pending:
                    self._pending = (self._pending[0] + tokens, self._pending[1] + 1)
                else:
                    self.tokens += tokens
                    self._pieces += 1
                self._check()
        if self._progress is not None:
            self._progress(done)

    def _check(self) -> None:
        tokens, counted = self.tokens + self._pending[0], self._pieces + self._pending[1]
        at_least = tokens - CUT_SLACK_TOKENS * (counted - 1)
        if at_least > self._limit:
            raise UserError("attachments.too_long", name=self._name, tokens=f"{at_least:,}", max_len=f"{self._limit:,}")


def pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """`text` in pieces of about `size` characters, each ending at a line end where a line
    end follows within another `size` (a text of one long line is cut every `size`)."""
    start = 0
    while start < len(text):
        cut = text.find("\n", start + size, start + 2 * size)
        end = cut + 1 if cut >= 0 else start + size
        yield text[start:end]
        start = end
