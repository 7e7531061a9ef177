"""Remote-engine mode: the Engine interface over an existing OpenAI-compatible server.

For users who outgrow one machine: a `vllm serve` on a multi-GPU box or a cluster does the
generation, and the UI and the API work exactly as they do over the in-process engine.
Models are loaded on the remote server; here one of its models is chosen, not loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx

from app.engine import ChatDelta, EngineState, EngineStatus, Message, as_message_dict
from app.engine_types import ChatOptions
from app.errors import EngineError
from app.reasoning import ThinkingTags
from app.settings import FALLBACK_SAMPLING, EngineSettings, SamplingSettings

# Between two streamed chunks: a long prompt on a busy server can take minutes to prefill.
TIMEOUT = httpx.Timeout(600.0, connect=10.0)


@dataclass(frozen=True)
class RemoteModel:
    id: str
    max_model_len: int | None = None


class RemoteEngine:
    """Same public surface as app.engine.Engine, over HTTP. Bound to the event loop it streams on."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._wanted = model
        self._models: list[RemoteModel] = []
        self._model: RemoteModel | None = None
        self._client: httpx.AsyncClient | None = None
        # Requests in flight, and their response once the server has answered.
        self._open: dict[str, httpx.Response | None] = {}
        self._aborted: set[str] = set()
        self._status = EngineStatus(
            EngineState.LOADING,
            model=self.base_url,
            stage="remote.stage_connecting",
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
                reply = await self._json(await client.get(f"{self.base_url}/models", headers=self.auth_headers()))
            models = [RemoteModel(m["id"], m.get("max_model_len")) for m in reply["data"]]
        except (KeyError, TypeError) as exc:
            self._fail(EngineError("remote.bad_reply", url=self.base_url, reason=f"GET /models: {exc!r}"))
        except httpx.HTTPError as exc:
            self._fail(self.transport_error(exc))
        except EngineError as exc:
            self._fail(exc)
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
            await client.aclose()

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
        response = self._open.get(request_id)
        if response is not None:
            self._aborted.add(request_id)
            await response.aclose()

    async def _stream(
        self, path: str, body: dict[str, Any], sampling: SamplingSettings, request_id: str | None
    ) -> AsyncIterator[ChatDelta]:
        if self._status.state != EngineState.READY:
            await self.refresh()  # the server may have come up since; raises if not
        assert self._model is not None
        request_id = request_id or uuid.uuid4().hex
        body = {
            **body,
            **_sampling_body(sampling),
            "model": self._model.id,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        reader = _ChunkReader()
        self._open[request_id] = None
        try:
            url = self.base_url + path
            async with self._http().stream("POST", url, json=body, headers=self.auth_headers()) as reply:
                if reply.status_code >= 400:
                    await reply.aread()
                    raise self._http_error(reply)
                self._open[request_id] = reply
                async for line in reply.aiter_lines():
                    for delta in reader.feed(line):
                        yield delta
        except httpx.HTTPError as exc:
            if request_id not in self._aborted:
                raise self.transport_error(exc) from exc
            reader.finish_reason = "abort"
        except ValueError as exc:  # not JSON: not an OpenAI-compatible server
            raise EngineError("remote.bad_reply", url=self.base_url, reason=str(exc)[:300]) from exc
        finally:
            self._open.pop(request_id, None)
            self._aborted.discard(request_id)
        if final := reader.final():
            yield final

    # ---- HTTP --------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=TIMEOUT)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    async def _json(self, reply: httpx.Response) -> Any:
        if reply.status_code >= 400:
            raise self._http_error(reply)
        try:
            return reply.json()
        except ValueError as exc:
            raise EngineError("remote.bad_reply", url=self.base_url, reason=str(exc)[:300]) from exc

    def _http_error(self, reply: httpx.Response) -> EngineError:
        reason = _error_message(reply)
        status = reply.status_code
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
            return EngineError("remote.bad_reply", url=self.base_url, reason=f"404 {reply.request.url}")
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

    def transport_error(self, exc: httpx.HTTPError) -> EngineError:
        return EngineError("remote.unreachable", url=self.base_url, reason=str(exc) or type(exc).__name__)


# vLLM's wordings for a prompt longer than the context: "This model's maximum context length
# is M tokens. However, your prompt contains N input tokens", "Input length (N) exceeds
# model's maximum context length (M)", "The prompt (length N) is longer than the maximum
# model length of M".
_CONTEXT_LIMIT = re.compile(r"maximum (?:context|model) length (?:is |of |\()(\d+)")
_PROMPT_LENGTH = re.compile(r"contains (?:at least )?(\d+) input tokens|length \(?(\d+)\)")


def _error_message(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:300] or reply.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:300]
    return str(error)[:300]


def _sampling_body(sampling: SamplingSettings) -> dict[str, Any]:
    """Only what was set: the server fills the rest from its model's generation_config."""
    body = {k: v for k, v in sampling.chosen().items() if k in _OPENAI_FIELDS}
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    # vLLM's own fields, sent only when they do something, so other servers are not confused.
    if sampling.top_k:
        body["top_k"] = sampling.top_k
    if sampling.min_p:
        body["min_p"] = sampling.min_p
    if sampling.repetition_penalty not in (None, 1.0):
        body["repetition_penalty"] = sampling.repetition_penalty
    if sampling.ignore_eos:
        body["ignore_eos"] = True
    return body


_OPENAI_FIELDS = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed")


class _ChunkReader:
    """Turns server-sent chunks into ChatDeltas with running totals.

    The exact usage comes in a last chunk after the finish reason, so the finishing delta
    is held back until the stream ends. A reasoning parser on the server splits thinking
    out of the text; it is put back between <think> tags, as a local model writes it.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ttft: float | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.held_text = ""
        self.tags = ThinkingTags()
        self.done = False

    def feed(self, line: str) -> list[ChatDelta]:
        if self.done or not line.startswith("data:"):
            return []
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            self.done = True
            return []
        chunk = json.loads(data)
        if isinstance(chunk.get("error"), dict):
            reason = chunk["error"].get("message", chunk["error"])
            raise EngineError("remote.rejected", reason=str(reason)[:300])
        if usage := chunk.get("usage"):
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
        out = []
        for choice in chunk.get("choices", [])[:1]:
            text = self._text(choice)
            if text and not usage:
                self.completion_tokens += 1  # one chunk is about one token until the exact count comes
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.held_text += text
            elif text:
                out.append(self._delta(text, None))
        return out

    def final(self) -> ChatDelta | None:
        if self.finish_reason is None and not self.held_text:
            return None
        return self._delta(self.held_text + self.tags.close(), self.finish_reason or "stop")

    def _text(self, choice: dict[str, Any]) -> str:
        if "text" in choice:
            return choice["text"] or ""
        delta = choice.get("delta") or {}
        thought = delta.get("reasoning") or delta.get("reasoning_content") or ""
        return self.tags.add(thought, delta.get("content") or "")

    def _delta(self, text: str, finish_reason: str | None) -> ChatDelta:
        now = time.perf_counter() - self.start
        if self.ttft is None and text:
            self.ttft = now
        return ChatDelta(
            text=text,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish_reason=finish_reason,
            ttft=self.ttft,
            elapsed=now,
        )
