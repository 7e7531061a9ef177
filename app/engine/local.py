"""The engine core: one in-process vLLM `AsyncLLM`, its lifecycle and streaming chat.

No Gradio or HTTP here. The UI, the API and the benchmarks all drive this class.
Engine objects bind to the event loop they are first used on, so the heavy build
runs in a worker thread while generation and shutdown stay on the serving loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from app.config.settings import EngineSettings, SamplingSettings
from app.engine.build import (
    _build_llm,
    _check_model_files,
    _device_type,
    _display_name,
    _engine_args,
    _import_vllm,
    capabilities_of,
    engine_config,
)
from app.engine.errors import explain_load_error, explain_render_error
from app.engine.generate import generate
from app.engine.logs import log_size, read_since
from app.engine.processes import EngineProcesses, shut_down, stop_starting, wait_through_cancellation
from app.engine.reasoning import ReplySplit, parser_class
from app.engine.requests import model_defaults_as_settings, prompt_token_ids
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
from app.errors import EngineError, UserError
from app.models.catalog import load_catalog
from app.models.parsers import check_parser_names, with_parsers

log = logging.getLogger(__name__)

# On a switch, requests already running on the old model may finish first (new ones get 503).
DRAIN_TIMEOUT_S = 30.0


class Engine:
    """Owns at most one vLLM engine at a time: load, unload, switch, stream."""

    def __init__(self, log_file: Path | None = None) -> None:
        # vLLM's log file (app.engine.logs), where a failed EngineCore leaves the reason.
        self._log_file = log_file
        self._llm: Any = None
        self._processes = EngineProcesses()
        self._status = EngineStatus(EngineState.EMPTY, since=time.time())
        self._lock = asyncio.Lock()
        self._settings: EngineSettings | None = None
        self._source: str | None = None
        self._model_defaults: dict[str, Any] = {}
        self._reply_parser: Any = None
        self._capabilities = Capabilities()
        # The start under way, which `unload` stops.
        self._start_task: asyncio.Task | None = None

    # ---- state -------------------------------------------------------------------------

    @property
    def status(self) -> EngineStatus:
        return self._status

    @property
    def model_name(self) -> str | None:
        return self._status.model if self._status.state == EngineState.READY else None

    @property
    def max_model_len(self) -> int | None:
        return self._llm.model_config.max_model_len if self._llm is not None else None

    @property
    def vllm(self) -> Any:
        """The underlying AsyncLLM (for vLLM's own OpenAI server, metrics and benchmarks); None
        when nothing is loaded."""
        return self._llm

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def tokenizer(self) -> Any:
        return self._llm.tokenizer if self._llm is not None else None

    @property
    def settings(self) -> EngineSettings | None:
        return self._settings

    @property
    def source(self) -> str | None:
        """What the loaded model was loaded from (a folder or a repo id); None when nothing is."""
        return self._source

    def num_unfinished_requests(self) -> int:
        return self._llm.get_num_unfinished_requests() if self._llm is not None else 0

    async def sleep(self) -> None:
        """vLLM's sleep, level 1: the weights go to CPU RAM and the KV cache is dropped; the
        status stays READY (waking takes seconds). Only for an engine with no request running."""
        if self._capabilities.sleep:
            await self._llm.sleep(level=1)

    async def wake_up(self) -> None:
        """Back from sleep, warmed up with one token so that the next reply starts at full speed."""
        if self._llm is None or not await self._llm.is_sleeping():
            return
        await self._llm.wake_up()
        from vllm import SamplingParams

        warm = self._llm.generate({"prompt_token_ids": [0]}, SamplingParams(max_tokens=1), uuid.uuid4().hex)
        async for _ in warm:
            pass

    def child_pids(self) -> list[int]:
        return self._processes.pids

    def _set(self, state: EngineState, **fields: Any) -> None:
        self._status = EngineStatus(state, since=time.time(), **fields)

    # ---- lifecycle ---------------------------------------------------------------------

    async def load(self, model: str, settings: EngineSettings, name: str | None = None) -> None:
        """Load `model` (a local folder or a Hugging Face id), replacing whatever is loaded.

        Raises EngineError with a user-facing message on failure; the engine is then
        FAILED (with that reason) and can load again.
        """
        async with self._lock:
            name = name or _display_name(model)
            # From here new requests are refused as "still loading"; those already running on
            # the old model get a moment to finish before it goes.
            self._set(EngineState.LOADING, model=name, stage=LoadStage.CHECKING)
            if self.num_unfinished_requests():
                self._set(EngineState.LOADING, model=name, stage=LoadStage.FINISHING)
                await self._drain(DRAIN_TIMEOUT_S)
            if self._llm is not None:
                self._set(EngineState.LOADING, model=name, stage=LoadStage.CLOSING)
            await self._unload_locked()
            log_offset = log_size(self._log_file)
            try:
                await self._start_stoppable(model, name, settings)
            except asyncio.CancelledError:
                await self._unload_locked()
                self._set(EngineState.EMPTY)
                raise
            except Exception as exc:  # every failure becomes a message; the app stays up
                error = (
                    exc
                    if isinstance(exc, UserError)
                    else explain_load_error(exc, model, settings, read_since(self._log_file, log_offset))
                )
                log.warning("loading %s failed: %s", model, exc, exc_info=not isinstance(exc, UserError))
                # The traceback's frames hold vLLM's half-built engine; kept with the error in
                # `status`, it would run its shutdown again at interpreter exit, and fail there.
                traceback.clear_frames(exc.__traceback__)
                await self._unload_locked()
                self._set(EngineState.FAILED, model=name, error=error)
                raise error from exc

    async def _start_stoppable(self, model: str, name: str, settings: EngineSettings) -> None:
        """`_start`, which `unload` may stop: the load then fails with a sentence saying so."""
        self._start_task = asyncio.ensure_future(self._start(model, name, settings))
        try:
            await self._start_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise EngineError("engine.load_stopped", model=name) from None
        finally:
            self._start_task = None

    async def _start(self, model: str, name: str, settings: EngineSettings) -> None:
        """Check, configure and start the engine, saying each stage in the status; READY at the end."""
        self._set(EngineState.LOADING, model=name, stage=LoadStage.CHECKING)
        settings.validate()
        await asyncio.to_thread(check_parser_names, settings)
        _check_model_files(model, weights=settings.load_format != "dummy")
        folder = Path(model).expanduser()
        settings = with_parsers(settings, name, folder if folder.is_dir() else None, load_catalog())
        self._set(EngineState.LOADING, model=name, stage=LoadStage.CONFIGURING)
        await asyncio.to_thread(_import_vllm)
        args = _engine_args(model, name, settings)
        config, notice = await engine_config(args)
        self._set(EngineState.LOADING, model=name, stage=LoadStage.STARTING)
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        build = asyncio.ensure_future(asyncio.to_thread(_build_llm, config, args))
        try:
            llm = await asyncio.shield(build)
        except asyncio.CancelledError:
            # The build thread cannot be interrupted, but it fails as soon as the processes it
            # started are gone; one that was up already is shut down by the caller.
            await stop_starting(build, before)
            failed = build.exception()
            if failed is not None:
                # Its frames hold the half-built engine (see `load`).
                traceback.clear_frames(failed.__traceback__)
            self._llm = None if failed else build.result()
            raise
        finally:
            self._processes = EngineProcesses.started_since(before)
        self._llm = llm
        self._reply_parser = parser_class(settings.reasoning_parser, llm.renderer.tokenizer, llm.model_config.model)
        self._settings = settings
        self._source = model
        self._model_defaults = llm.model_config.get_diff_sampling_param()
        self._capabilities = capabilities_of(llm, settings)
        self._set(
            EngineState.READY,
            model=name,
            max_model_len=llm.model_config.max_model_len,
            device=_device_type(),
            notice=notice,
        )

    async def unload(self) -> None:
        """Stop the loaded engine; the status says "no model" from the start, and the device
        memory is free when this returns. A start under way is stopped, not waited for (the
        Models tab's Unload, the app's exit)."""
        if self._start_task is not None:
            self._start_task.cancel()
        async with self._lock:
            self._set(EngineState.EMPTY)
            await self._unload_locked()

    async def check_alive(self, reason: str = "engine.died") -> bool:
        """False if the loaded engine died (its process gone, or vLLM saw it fail): it is then
        FAILED with the message `reason` (a key, given the model) and shut down. True otherwise,
        loaded or not."""
        llm = self._llm
        if llm is None or self._status.state != EngineState.READY:
            return True
        gone = self._processes.gone()
        if not gone and not llm.errored:
            return True
        async with self._lock:
            if self._llm is not llm:
                return True
            model = self._status.model
            log.warning("the engine of %s died (processes gone: %s)", model, [p.pid for p in gone])
            # Said first: shutting down what is left can take seconds, and no request may
            # reach the dead engine meanwhile.
            self._set(EngineState.FAILED, model=model, error=EngineError(reason, model=model))
            await self._unload_locked()
        return False

    async def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._llm is not None and self.num_unfinished_requests() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _unload_locked(self) -> None:
        """Shut the engine down and wait until its processes are gone: only then is the device
        memory free for the next engine, which checks free memory at start. Runs to the end even
        if the caller is cancelled meanwhile (the processes must not be left behind)."""
        llm, self._llm = self._llm, None
        processes, self._processes = self._processes, EngineProcesses()
        self._settings = None
        self._source = None
        self._model_defaults = {}
        self._reply_parser = None
        self._capabilities = Capabilities()
        if llm is None and not processes.procs:
            return
        stopping = asyncio.ensure_future(shut_down(llm, processes))
        del llm
        if await wait_through_cancellation(stopping):
            raise asyncio.CancelledError
        stopping.result()

    # ---- generation --------------------------------------------------------------------

    def resolve_sampling(self, overrides: Mapping[str, Any] | None = None) -> SamplingSettings:
        """App fallbacks, then the model's generation_config, then what the caller set."""
        return SamplingSettings.from_dict(overrides or {}).filled(self.model_sampling_defaults())

    def model_sampling_defaults(self) -> dict[str, Any]:
        """What the loaded model's generation_config sets (empty without a model)."""
        return model_defaults_as_settings(self._model_defaults)

    async def stream_chat(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        sampling: SamplingSettings,
        request_id: str | None = None,
        options: ChatOptions | None = None,
    ) -> AsyncIterator[ChatDelta]:
        """Stream a reply to `messages` rendered with the model's own chat template (given the
        tools and template arguments of `options`, as vLLM's server renders them)."""
        llm = self._require_ready()
        sampling = sampling.filled(self.model_sampling_defaults())
        conversation = [as_message_dict(m) for m in messages]
        if not conversation:
            raise EngineError("engine.empty_chat")
        from vllm.renderers import ChatParams

        options = options or ChatOptions()
        # The template ends the prompt with the assistant's turn opening, as `vllm serve` asks it
        # to (its default `add_generation_prompt`): the model answers instead of writing the
        # next message's header itself, and templates that open <think> there do so.
        kwargs = {"add_generation_prompt": True} | dict(options.template_kwargs)
        kwargs |= {"tools": list(options.tools)} if options.tools else {}
        try:
            _, prompts = await llm.renderer.render_chat_async([conversation], ChatParams(chat_template_kwargs=kwargs))
        except Exception as exc:
            raise explain_render_error(exc, llm) from exc
        # Close the inner stream now, not at garbage collection: closing it aborts the request.
        split = None
        if self._reply_parser is not None:
            split = ReplySplit(
                self._reply_parser,
                llm.renderer.tokenizer,
                llm.model_config,
                prompt_token_ids(prompts[0]),
                dict(options.template_kwargs),
            )
        reply = generate(llm, prompts[0], sampling, request_id, options, split, in_use=lambda: self._llm is llm)
        async with contextlib.aclosing(reply) as deltas:
            async for delta in deltas:
                yield delta

    async def stream_completion(
        self, prompt: str, sampling: SamplingSettings, request_id: str | None = None
    ) -> AsyncIterator[ChatDelta]:
        """Stream a continuation of a raw text prompt (no chat template)."""
        llm = self._require_ready()
        sampling = sampling.filled(self.model_sampling_defaults())
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        try:
            parsed = parse_model_prompt(llm.model_config, prompt)
            (engine_input,) = await llm.renderer.render_cmpl_async([parsed], llm.renderer.default_cmpl_tok_params)
        except Exception as exc:
            raise explain_render_error(exc, llm) from exc
        # Close the inner stream now, not at garbage collection: closing it aborts the request.
        async with contextlib.aclosing(
            generate(llm, engine_input, sampling, request_id, in_use=lambda: self._llm is llm)
        ) as deltas:
            async for delta in deltas:
                yield delta

    def count_prompt_tokens(self, engine_input: Any) -> int:
        return len(prompt_token_ids(engine_input))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the loaded model's own tokenizer (as part of a prompt: no special tokens)."""
        return len(self._require_ready().get_tokenizer().encode(text, add_special_tokens=False))

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)

    def _require_ready(self) -> Any:
        if self._llm is None or self._status.state != EngineState.READY:
            if self._status.state == EngineState.LOADING:
                raise EngineError("engine.still_loading", model=self._status.model)
            raise EngineError("engine.no_model")
        return self._llm
