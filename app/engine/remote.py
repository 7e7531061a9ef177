"""Remote-engine mode: the Engine interface over an existing OpenAI-compatible server.

For users who outgrow one machine: a `vllm serve` on a multi-GPU box or a cluster does the
generation, and the UI and the API work exactly as they do over the in-process engine.
Models are loaded on the remote server; here one of its models is chosen, not loaded.
The server is spoken to through the `openai` client: typed chunks, its status errors, and
closing a stream hangs up on the server, which is how `vllm serve` aborts a request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import openai

from app.config.settings import FALLBACK_SAMPLING, EngineSettings, SamplingSettings
from app.engine.remote_chunks import ChunkReader
from app.engine.types import (
    Capabilities,
    ChatDelta,
    ChatOptions,
    EngineState,
    EngineStatus,
    LoadStage,
    Message,
    as_message_dict,
)
from app.errors import EngineError

# Between two streamed chunks: a long prompt on a busy server can take minutes to prefill.
TIMEOUT = openai.Timeout(600.0, connect=10.0)


@dataclass(frozen=True)
class RemoteModel:
    id: str
    max_model_len: int | None = None


class RemoteEngine:
    """Same public surface as app.engine.local.Engine, over HTTP. Bound to the event loop it streams on."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._wanted = model
        self._models: list[RemoteModel] = []
        self._model: RemoteModel | None = None
        self._client: openai.AsyncOpenAI | None = None
        # Requests in flight, and their stream once the server has answered.
        self._open: dict[str, openai.AsyncStream[Any] | None] = {}
        self._aborted: set[str] = set()
        self._status = EngineStatus(
            EngineState.LOADING,
            model=self.base_url,
            stage=LoadStage.CONNECTING,
            since=time.time(),
            device="remote",
        )

    # ---- state -------------------------------------------------------------------------

    @property
    def status(self) -> EngineStatus:
        return self._status

    @property
    def model_name(self) -> str | None:
        return self._model.id if self._model and self._status.state == EngineState.READY else None

    @property
    def max_model_len(self) -> int | None:
        return self._model.max_model_len if self._model else None

    @property
    def vllm(self) -> None:
        """No in-process vLLM: its metrics are on the remote server's own /metrics."""
        return None

    @property
    def capabilities(self) -> Capabilities:
        """Relayed, not read here: tool calls come back as data (the chat's tool loop reads text),
        and pictures are not sent to the server."""
        return Capabilities(remote=True)

    @property
    def tokenizer(self) -> None:
        return None

    @property
    def settings(self) -> None:
        return None

    @property
    def source(self) -> None:
        """The model's files are on the remote server, not on this computer."""
        return None

    def num_unfinished_requests(self) -> int:
        return len(self._open)

    def child_pids(self) -> list[int]:
        return []

    def _set(self, state: EngineState, **fields: Any) -> None:
        self._status = EngineStatus(state, since=time.time(), device="remote", **fields)

    # ---- models ------------------------------------------------------------------------

    async def refresh(self) -> list[str]:
        """Ask the server which models it serves and keep (or pick) one. The status tells
        the UI the outcome; errors are also raised."""
        try:
            async with self._new_client() as client:
                page = await client.models.list(extra_headers=self._omitted_auth())
            models = [RemoteModel(m.id, (m.model_extra or {}).get("max_model_len")) for m in page.data]
        except (AttributeError, TypeError, ValueError) as exc:
            self._fail(EngineError("remote.bad_reply", url=self.base_url, reason=f"GET /models: {exc!r}"))
        except openai.APIStatusError as exc:
            self._fail(self._status_error(exc))
        except openai.APIError as exc:
            self._fail(self.transport_error(exc))
        self._models = models
        if not models:
            self._fail(EngineError("remote.no_models", url=self.base_url))
        ids = [m.id for m in models]
        wanted = self._wanted or (self._model.id if self._model else None) or ids[0]
        if wanted not in ids:
            self._fail(EngineError("remote.unknown_model", url=self.base_url, model=wanted, models=", ".join(ids)))
        self._model = models[ids.index(wanted)]
        self._set(EngineState.READY, model=self._model.id, max_model_len=self._model.max_model_len)
        return ids

    async def list_models(self) -> list[str]:
        return await self.refresh()

    async def select_model(self, name: str) -> None:
        """Use another of the server's models (what picking a model means in remote mode)."""
        previous, self._wanted = self._wanted, name
        try:
            await self.refresh()
        except EngineError:
            self._wanted = previous
            raise

    def _fail(self, error: EngineError) -> NoReturn:
        self._set(EngineState.FAILED, model=self._model.id if self._model else self.base_url, error=error)
        raise error

    # ---- lifecycle: the remote server owns it ------------------------------------------

    async def load(self, model: str, settings: EngineSettings | None = None, name: str | None = None) -> None:
        raise EngineError("remote.load_not_applicable", url=self.base_url)

    async def unload(self) -> None:
        """Nothing to unload here; closes this side's connections (the app calls it on exit)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # ---- generation --------------------------------------------------------------------

    def resolve_sampling(self, overrides: Mapping[str, Any] | None = None) -> SamplingSettings:
        """What the caller set, and a reply length; the rest is left to the server, which applies
        the model's own generation_config."""
        sampling = SamplingSettings.from_dict(dict(overrides or {}))
        if sampling.max_tokens is None:
            sampling = dataclasses.replace(sampling, max_tokens=FALLBACK_SAMPLING["max_tokens"])
        sampling.validate()
        return sampling

    def model_sampling_defaults(self) -> dict[str, Any]:
        """Unknown here: the server applies its model's defaults itself."""
        return {}

    async def check_alive(self, reason: str = "engine.died") -> bool:
        """The remote server's health is its own: requests say when it is unreachable."""
        return True

    async def stream_chat(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        sampling: SamplingSettings,
        request_id: str | None = None,
        options: ChatOptions | None = None,
    ) -> AsyncIterator[ChatDelta]:
        """Tools stay off in remote mode (the server returns calls as `tool_calls`, not text), but
        chat template arguments (the thinking switch) go to the server as `vllm serve` takes them."""
        sampling.validate()
        conversation = [as_message_dict(m) for m in messages]
        if not conversation:
            raise EngineError("engine.empty_chat")
        body: dict[str, Any] = {"messages": conversation}
        if options is not None and options.template_kwargs:
            body["chat_template_kwargs"] = dict(options.template_kwargs)
        stream = self._stream("/chat/completions", body, sampling, request_id)
        # Closed explicitly: a consumer that stops must hang up on the server now, not at GC.
        async with contextlib.aclosing(stream):
            async for delta in stream:
                yield delta

    async def stream_completion(
        self, prompt: str, sampling: SamplingSettings, request_id: str | None = None
    ) -> AsyncIterator[ChatDelta]:
        sampling.validate()
        stream = self._stream("/completions", {"prompt": prompt}, sampling, request_id)
        async with contextlib.aclosing(stream):
            async for delta in stream:
                yield delta

    async def abort(self, request_id: str) -> None:
        """Hang up on the request: `vllm serve` aborts a request whose client disconnects."""
        stream = self._open.get(request_id)
        if stream is not None:
            self._aborted.add(request_id)
            await stream.close()

    async def _stream(
        self, path: str, body: dict[str, Any], sampling: SamplingSettings, request_id: str | None
    ) -> AsyncIterator[ChatDelta]:
        if self._status.state != EngineState.READY:
            await self.refresh()  # the server may have come up since; raises if not
        assert self._model is not None
        request_id = request_id or uuid.uuid4().hex
        reader = ChunkReader()
        self._open[request_id] = None
        try:
            stream = await self._create(path, body, sampling)
            self._open[request_id] = stream
            async with stream:
                async for chunk in stream:
                    for delta in reader.feed(chunk):
                        yield delta
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except Exception as exc:
            # Closing the stream to abort it ends the iteration with the transport's own error.
            if request_id not in self._aborted:
                raise self._stream_error(exc) from exc
            reader.finish_reason = "abort"
        finally:
            self._open.pop(request_id, None)
            self._aborted.discard(request_id)
        if final := reader.final():
            yield final

    async def _create(self, path: str, body: dict[str, Any], sampling: SamplingSettings) -> openai.AsyncStream[Any]:
        """Start a streamed chat or completion; vLLM's own sampling fields go in the extra body."""
        assert self._model is not None
        standard, extra = _sampling_body(sampling)
        extra = {**extra, **{k: v for k, v in body.items() if k not in ("messages", "prompt")}}
        common: dict[str, Any] = {
            "model": self._model.id,
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": extra or None,
            "extra_headers": self._omitted_auth(),
            **standard,
        }
        client = self._http()
        if path == "/chat/completions":
            return await client.chat.completions.create(messages=body["messages"], **common)
        return await client.completions.create(prompt=body["prompt"], **common)

    # ---- HTTP --------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _omitted_auth(self) -> dict[str, Any] | None:
        """Without a key nothing is sent, not even a placeholder (and never OPENAI_API_KEY from
        the environment, which belongs to another service)."""
        return None if self._api_key else {"Authorization": openai.Omit()}

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key or "unused", timeout=TIMEOUT, max_retries=0
        )

    def _http(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _status_error(self, exc: openai.APIStatusError) -> EngineError:
        reason = _error_message(exc)
        status = exc.status_code
        if status in (401, 403):
            return EngineError("remote.unauthorized", url=self.base_url)
        if status == 404 and self._model and self._model.id in reason:
            return EngineError(
                "remote.unknown_model",
                url=self.base_url,
                model=self._model.id,
                models=", ".join(m.id for m in self._models),
            )
        if status == 404:
            return EngineError("remote.bad_reply", url=self.base_url, reason=f"404 {exc.request.url}")
        if status == 400 and (limit := _CONTEXT_LIMIT.search(reason)):
            tokens = _PROMPT_LENGTH.search(reason)
            return EngineError(
                "engine.prompt_too_long",
                max_len=limit[1],
                tokens=next(filter(None, tokens.groups())) if tokens else f"{limit[1]}+",
            )
        if status < 500:
            return EngineError("remote.rejected", reason=reason)
        return EngineError("remote.failed", status=status, reason=reason)

    def _stream_error(self, exc: Exception) -> Exception:
        if isinstance(exc, openai.APIConnectionError):
            return self.transport_error(exc)
        if isinstance(exc, openai.APIError):  # an error event inside the stream
            return EngineError("remote.rejected", reason=_error_message(exc))
        if isinstance(exc, ValueError):  # not JSON: not an OpenAI-compatible server
            return EngineError("remote.bad_reply", url=self.base_url, reason=str(exc)[:300])
        return exc

    def transport_error(self, exc: Exception) -> EngineError:
        return EngineError("remote.unreachable", url=self.base_url, reason=str(exc) or type(exc).__name__)


# vLLM's wordings for a prompt longer than the context: "This model's maximum context length
# is M tokens. However, your prompt contains N input tokens", "Input length (N) exceeds
# model's maximum context length (M)", "The prompt (length N) is longer than the maximum
# model length of M".
_CONTEXT_LIMIT = re.compile(r"maximum (?:context|model) length (?:is |of |\()(\d+)")
_PROMPT_LENGTH = re.compile(r"contains (?:at least )?(\d+) input tokens|length \(?(\d+)\)")


def _error_message(exc: openai.APIError) -> str:
    """The server's own sentence: vLLM's error body is {"message", "type", "code"}."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)[:300]
        return str(error)[:300]
    return str(exc.message)[:300]


def _sampling_body(sampling: SamplingSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(OpenAI's fields, vLLM's own) with only what was set: the server fills the rest from its
    model's generation_config."""
    standard = {k: v for k, v in sampling.chosen().items() if k in _OPENAI_FIELDS}
    if sampling.stop:
        standard["stop"] = list(sampling.stop)
    # vLLM's own fields, sent only when they do something, so other servers are not confused.
    extra: dict[str, Any] = {}
    if sampling.top_k:
        extra["top_k"] = sampling.top_k
    if sampling.min_p:
        extra["min_p"] = sampling.min_p
    if sampling.repetition_penalty not in (None, 1.0):
        extra["repetition_penalty"] = sampling.repetition_penalty
    if sampling.ignore_eos:
        extra["ignore_eos"] = True
    return standard, extra


_OPENAI_FIELDS = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed")
