"""What the engine's users see of it: its states and status, the streamed deltas, and the
interface that the in-process `Engine` and `app.remote.RemoteEngine` share."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.errors import UserError
from app.settings import EngineSettings, SamplingSettings


class EngineState(enum.StrEnum):
    EMPTY = "empty"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class EngineStatus:
    """What the engine is doing, for status bars and health checks."""

    state: EngineState
    model: str | None = None
    stage: str | None = None  # i18n key of the loading stage
    error: UserError | None = None
    since: float = 0.0
    max_model_len: int | None = None
    device: str | None = None  # "cuda" or "cpu"


@dataclass(frozen=True)
class ChatDelta:
    """One streamed step of a reply. Token counts are running totals."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    ttft: float | None = None  # seconds from request to first token
    elapsed: float = 0.0  # seconds since the request was made


@dataclass(frozen=True)
class Message:
    role: str
    content: str


class ChatEngine(Protocol):
    """What adapters need from an engine: the in-process `Engine` or `app.remote.RemoteEngine`."""

    @property
    def status(self) -> EngineStatus: ...

    @property
    def model_name(self) -> str | None: ...

    @property
    def max_model_len(self) -> int | None: ...

    async def load(self, model: str, settings: EngineSettings, name: str | None = None) -> None: ...

    async def unload(self) -> None: ...

    def resolve_sampling(self, overrides: Mapping[str, Any] | None = None) -> SamplingSettings: ...

    def model_sampling_defaults(self) -> dict[str, Any]: ...

    async def check_alive(self, reason: str = "engine.died") -> bool: ...

    def stream_chat(
        self, messages: Sequence[Message | Mapping[str, str]], sampling: SamplingSettings, request_id: str | None = None
    ) -> AsyncIterator[ChatDelta]: ...

    def stream_completion(
        self, prompt: str, sampling: SamplingSettings, request_id: str | None = None
    ) -> AsyncIterator[ChatDelta]: ...

    async def abort(self, request_id: str) -> None: ...

    def num_unfinished_requests(self) -> int: ...
