"""The four ways to reach vLLM that the benchmark compares, all with the same workload.

1. `engine`: `AsyncLLM.generate` in this process, prompts rendered before the clock starts (the floor);
2. `api`: the app's OpenAI-compatible API, through the official `openai` async SDK;
3. `ui`: the app's Gradio chat, as a browser tab streams it;
4. `vllm_serve`: `vllm serve` (vLLM's own OpenAI server), through the same SDK as (2).

Each path renders a batch of prompts with `prepare` (outside the timing), then `send`s
request `index` of that batch, noting when each streamed piece of the reply arrives.
`frontend_pid` is the process that serves the path outside the engine's own processes (this
one for path 1): its CPU time per request is what the path costs, however busy the machine.
The engine's processes are that process's children (for path 1, `engine_pids`).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any, Protocol

import openai

from benchmarks.gradio_stream import GradioChat
from benchmarks.workload import Messages, RequestRecord

PATH_KEYS = ("engine", "api", "ui", "vllm_serve")
LABELS = {
    "engine": "1 engine (AsyncLLM in-process)",
    "api": "2 app API (/v1, openai SDK)",
    "ui": "3 app UI (Gradio stream)",
    "vllm_serve": "4 vllm serve (openai SDK)",
}


class LoadPath(Protocol):
    key: str
    frontend_pid: int

    async def prepare(self, batch: list[Messages]) -> None: ...

    async def send(self, index: int, record: RequestRecord) -> None: ...

    async def close(self) -> None: ...


class EnginePath:
    """Path 1: the AsyncLLM itself; sampling merged as `vllm serve` merges it (model defaults, then ours)."""

    key = "engine"

    def __init__(self, llm: Any, engine_pids: list[int], max_tokens: int, temperature: float) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self.llm = llm
        self.frontend_pid = os.getpid()
        self.engine_pids = engine_pids
        self.params = SamplingParams(**{
            **llm.model_config.get_diff_sampling_param(),
            "temperature": temperature,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "output_kind": RequestOutputKind.DELTA,
        })
        self._inputs: list[Any] = []

    async def prepare(self, batch: list[Messages]) -> None:
        from vllm.renderers import ChatParams

        _, self._inputs = await self.llm.renderer.render_chat_async(batch, ChatParams())

    async def send(self, index: int, record: RequestRecord) -> None:
        async for out in self.llm.generate(self._inputs[index], self.params, f"bench-{uuid.uuid4().hex}"):
            completion = out.outputs[0]
            if completion.token_ids:
                record.chunks.append(time.perf_counter())
                record.output_tokens += len(completion.token_ids)

    async def close(self) -> None:
        # The engine belongs to the caller; a reference kept here would keep its AsyncLLM alive
        # after the caller unloads it.
        self.llm = None
        self._inputs = []


class OpenAIPath:
    """Paths 2 and 4: a streamed chat completion through the `openai` SDK, usage included."""

    def __init__(
        self, key: str, base_url: str, frontend_pid: int, model: str, max_tokens: int, temperature: float
    ) -> None:
        self.key = key
        self.frontend_pid = frontend_pid
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="benchmark", max_retries=0, timeout=600)
        self._batch: list[Messages] = []

    async def prepare(self, batch: list[Messages]) -> None:
        self._batch = batch

    async def send(self, index: int, record: RequestRecord) -> None:
        stream = await self.client.chat.completions.create(
            model=self.model,
            messages=self._batch[index],
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            arrived = time.perf_counter()
            if chunk.usage is not None:
                record.output_tokens = chunk.usage.completion_tokens
            if not chunk.choices:
                continue
            # Both servers open with an empty chunk naming the role; the reply starts after it.
            if chunk.choices[0].delta.role is not None and not chunk.choices[0].delta.content:
                continue
            record.chunks.append(arrived)

    async def close(self) -> None:
        await self.client.close()


class GradioPath:
    """Path 3: the chat tab's send event. Every reply is `max_tokens` long: the app's saved
    sampling settings say so (checked once per run with `check_reply_length`)."""

    key = "ui"

    def __init__(self, url: str, frontend_pid: int, max_tokens: int) -> None:
        self.url = url
        self.frontend_pid = frontend_pid
        self.max_tokens = max_tokens
        self.chat = GradioChat(url)
        self._batch: list[Messages] = []
        self._sessions: list[str] = []

    async def prepare(self, batch: list[Messages]) -> None:
        """One browser session per request, opened now (outside the timing), as a page load would."""
        opening = asyncio.Semaphore(8)

        async def open_one() -> str:
            async with opening:
                return await self.chat.open_session()

        self._batch = batch
        self._sessions = list(await asyncio.gather(*(open_one() for _ in batch)))

    async def send(self, index: int, record: RequestRecord) -> None:
        async for update in self.chat.reply(self._sessions[index], self._batch[index][-1]["content"]):
            if update.replying:
                record.chunks.append(update.time)
        record.output_tokens = self.max_tokens

    async def check_reply_length(self) -> None:
        """The newest saved reply must have exactly `max_tokens` tokens, or path 3's token counts are wrong."""
        from gradio_client import Client

        def newest_reply_tokens() -> int:
            client = Client(self.url, verbose=False)
            try:
                history = client.predict(api_name="/history")
            finally:
                client.close()
            return history["messages"][-1]["stats"]["completion_tokens"]

        tokens = await asyncio.to_thread(newest_reply_tokens)
        if tokens != self.max_tokens:
            raise RuntimeError(f"the UI replied with {tokens} tokens, not {self.max_tokens}: "
                               "the benchmark's saved settings were not applied")

    async def close(self) -> None:
        await self.chat.close()
