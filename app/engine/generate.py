"""One request through a loaded vLLM engine, streamed as the app's ChatDeltas: its limits, its
figures (tokens, timings, the prefix cache, speculative decoding) and its abort when left early."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.config.settings import SamplingSettings
from app.engine.errors import explain_generate_error
from app.engine.reasoning import ReplySplit
from app.engine.requests import prompt_token_ids, sampling_params, spec_figures
from app.engine.types import ChatDelta, ChatOptions
from app.errors import EngineError, UserError


async def generate(
    llm: Any,
    engine_input: Any,
    sampling: SamplingSettings,
    request_id: str | None,
    options: ChatOptions | None = None,
    split: ReplySplit | None = None,
    *,
    in_use: Callable[[], bool],
) -> AsyncIterator[ChatDelta]:
    """Stream one request of `llm` as ChatDeltas; a request left before its end is aborted while
    `in_use()` (the engine has not been unloaded meanwhile)."""
    from vllm.sampling_params import RequestOutputKind

    max_len = llm.model_config.max_model_len
    prompt_tokens = len(prompt_token_ids(engine_input))
    if prompt_tokens >= max_len:
        raise EngineError("engine.prompt_too_long", tokens=prompt_tokens, max_len=max_len)
    # Like other chat apps, a reply is cut at the end of the context instead of refused.
    max_tokens = min(sampling.max_tokens, max_len - prompt_tokens)
    params = sampling_params(sampling, max_tokens, RequestOutputKind.DELTA, options or ChatOptions())
    request_id = request_id or uuid.uuid4().hex
    start = time.perf_counter()
    ttft: float | None = None
    completion_tokens = 0
    finished = False
    try:
        async for out in llm.generate(engine_input, params, request_id):
            completion = out.outputs[0]
            completion_tokens += len(completion.token_ids)
            now = time.perf_counter() - start
            if ttft is None and completion.token_ids:
                ttft = now
            finished = out.finished
            text = completion.text if split is None else split.feed(completion.text, completion.token_ids, finished)
            spec = spec_figures(completion) if finished else {}
            yield ChatDelta(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                finish_reason=completion.finish_reason if out.finished else None,
                ttft=ttft,
                elapsed=now,
                cached_tokens=out.num_cached_tokens or 0,
                **spec,
            )
    except UserError:
        raise
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:
        raise explain_generate_error(exc, prompt_tokens, max_len) from exc
    finally:
        # A consumer that stops iterating (Stop button, closed tab, dropped HTTP client)
        # must free its slot in the engine, not just stop reading.
        if not finished and in_use():
            await llm.abort(request_id)
