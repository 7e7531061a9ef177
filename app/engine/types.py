"""What the engine's users see of it: its states and status, the streamed deltas, and the
interface that the in-process `Engine` and `app.engine.remote.RemoteEngine` share."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.config.settings import EngineSettings, SamplingSettings
from app.errors import EngineError, UserError


class EngineState(enum.StrEnum):
    EMPTY = "empty"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class LoadStage(enum.StrEnum):
    """Where a load is; the value is the i18n key that says it."""

    FINISHING = "engine.stage_finishing"  # replies still running on the old model may finish
    CLOSING = "engine.stage_closing"  # the old model's processes are stopping
    CHECKING = "engine.stage_checking"
    CONFIGURING = "engine.stage_configuring"
    STARTING = "engine.stage_starting"
    CONNECTING = "remote.stage_connecting"


@dataclass(frozen=True)
class EngineStatus:
    """What the engine is doing, for status bars and health checks."""

    state: EngineState
    model: str | None = None
    stage: LoadStage | None = None
    error: UserError | None = None
    since: float = 0.0
    max_model_len: int | None = None
    device: str | None = None  # "cuda" or "cpu"
    # Ready, with something the user asked for left out (speculative decoding vLLM refused).
    notice: UserError | None = None


@dataclass(frozen=True)
class Capabilities:
    """What the loaded model can do through its engine, declared by the engine (as simonw/llm's
    models declare `supports_tools` and `attachment_types`) so that adapters ask instead of
    probing its internals. Nothing loaded: nothing."""

    # Tool calls read from the reply's text: a tool-call parser for the model's family, in-process
    # (a remote server returns calls as data, not text).
    tools: bool = False
    images: int = 0  # pictures one prompt may carry; 0 for a text-only model
    thinking_switch: bool = False  # its chat template takes `enable_thinking` (Qwen3 and its kin)
    # vLLM can end its thinking after a budget: its reasoning parser knows the model's thinking tags.
    thinking_budget: bool = False
    # Built with vLLM's sleep mode (CUDA/ROCm): idle, its weights can go to CPU RAM and wake in seconds.
    sleep: bool = False
    speculative: str = ""  # the speculative decoding method vLLM runs ("" none)
    remote: bool = False  # it runs on another server: /v1 is relayed there, its files are not here


@dataclass(frozen=True)
class ChatDelta:
    """One streamed step of a reply. Token counts are running totals."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    ttft: float | None = None  # seconds from request to first token
    elapsed: float = 0.0  # seconds since the request was made
    cached_tokens: int = 0  # prompt tokens vLLM read from its prefix cache
    # Speculative decoding, on the last delta where it ran: tokens made per step (its bonus
    # token included) and the share of drafted tokens accepted.
    spec_tokens_per_step: float | None = None
    spec_acceptance: float | None = None


@dataclass(frozen=True)
class ChatOptions:
    """What a chat request may add to the messages: tools for the chat template (OpenAI's
    function shape, as `vllm serve` passes them), chat template arguments (`enable_thinking`),
    and a JSON schema the reply must follow (how vLLM forces a tool call)."""

    tools: tuple[dict[str, Any], ...] = ()
    template_kwargs: tuple[tuple[str, Any], ...] = ()
    json_schema: dict[str, Any] | None = None
    # False where the tool-call parser needs the markup some models write in special tokens.
    skip_special_tokens: bool = True
    # Tokens of thinking after which vLLM ends it (its reasoning config must know the model's tags).
    thinking_budget: int | None = None


@dataclass(frozen=True)
class Message:
    role: str
    content: str


class ChatEngine(Protocol):
    """What adapters need from an engine: the in-process `Engine` or `app.engine.remote.RemoteEngine`."""

    @property
    def status(self) -> EngineStatus: ...

    @property
    def model_name(self) -> str | None: ...

    @property
    def max_model_len(self) -> int | None: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def tokenizer(self) -> Any:
        """The loaded model's own tokenizer where the model runs here; None otherwise."""
        ...

    @property
    def settings(self) -> EngineSettings | None:
        """The settings the loaded model runs with; None when nothing is loaded here."""
        ...

    @property
    def source(self) -> str | None:
        """Where the loaded model's files are (a folder or a repo id); None when nothing is loaded here."""
        ...

    async def load(self, model: str, settings: EngineSettings, name: str | None = None) -> None: ...

    async def unload(self) -> None: ...

    def resolve_sampling(self, overrides: Mapping[str, Any] | None = None) -> SamplingSettings: ...

    def model_sampling_defaults(self) -> dict[str, Any]: ...

    async def check_alive(self, reason: str = "engine.died") -> bool: ...

    def stream_chat(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        sampling: SamplingSettings,
        request_id: str | None = None,
        options: ChatOptions | None = None,
    ) -> AsyncIterator[ChatDelta]: ...

    def stream_completion(
        self, prompt: str, sampling: SamplingSettings, request_id: str | None = None
    ) -> AsyncIterator[ChatDelta]: ...

    async def abort(self, request_id: str) -> None: ...

    def num_unfinished_requests(self) -> int: ...


def as_message_dict(message: Message | Mapping[str, Any]) -> dict[str, Any]:
    """A message for the chat template; a tool round's calls and results keep their ids."""
    if isinstance(message, Message):
        role, content = message.role, message.content
    else:
        role, content = message.get("role"), message.get("content")
    if role not in ("system", "user", "assistant", "tool"):
        raise EngineError("engine.bad_role", role=role)
    extra = {k: message[k] for k in ("tool_calls", "tool_call_id") if isinstance(message, Mapping) and k in message}
    if isinstance(content, list) and any(_is_picture(part) for part in content):
        # Pictures stay parts for the renderer (app.attachments.prompt); only the app's own PIL
        # images count, never a URL, which vLLM would fetch.
        parts = [p if _is_picture(p) else {"type": "text", "text": content_text(p)} for p in content]
        return {"role": role, "content": parts, **extra}
    return {"role": role, "content": content_text(content), **extra}


def _is_picture(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "image_pil"


def content_text(content: Any) -> str:
    """Message content as plain text: a string, or a list of text blocks (Gradio, OpenAI)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text", ""))
    if isinstance(content, Sequence):
        return "".join(content_text(part) for part in content)
    return str(content)
