"""The workload every path runs, and what each request saw.

Fixed prompt and reply lengths (the engine ignores end-of-sequence), driven by a closed
loop of `concurrency` clients that each send their next request when the last one is
done. Every prompt starts with a number not used before in the run, so no engine's prefix
cache gives one path a head start that another did not get.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Messages = list[dict[str, str]]

# English and Chinese, as our users write; the tiny test model's tokenizer knows both.
FILLER = (
    "Write a short poem about the sea and the stars. The quick brown fox jumps over the lazy dog. "
    "请写一首关于大海和星星的短诗。 Large language models run fast on a GPU with vLLM. "
    "大语言模型可以在显卡上快速运行。"
)


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int  # the rendered chat prompt, chat template included (approximately)
    output_tokens: int  # every reply is exactly this long
    concurrency: tuple[int, ...]
    requests_per_client: int
    repetitions: int
    # Sampled, not greedy: replies are ordinary text on every path, as in a chat. (Greedy
    # decoding of a randomly initialised model can repeat a special token that shows as nothing.)
    temperature: float = 1.0

    def requests(self, concurrency: int) -> int:
        return concurrency * self.requests_per_client


class Prompts:
    """Chat prompts about `tokens` long once the model's chat template is applied, each one unique."""

    def __init__(self, tokenizer: Any, tokens: int) -> None:
        self._numbers = itertools.count()
        self.filler = _filler_of_length(tokenizer, tokens)

    def batch(self, n: int) -> list[Messages]:
        return [[{"role": "user", "content": f"{next(self._numbers):06d} {self.filler}"}] for _ in range(n)]


def rendered_length(tokenizer: Any, messages: Messages) -> int:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def _filler_of_length(tokenizer: Any, tokens: int) -> str:
    """The longest run of filler words whose prompt stays within `tokens` (binary search)."""
    words = FILLER.split()

    def text(n: int) -> str:
        return " ".join(words[i % len(words)] for i in range(n))

    low, high = 0, 2 * tokens + 1
    while low < high:
        mid = (low + high + 1) // 2
        if rendered_length(tokenizer, [{"role": "user", "content": f"000000 {text(mid)}"}]) <= tokens:
            low = mid
        else:
            high = mid - 1
    return text(low)


@dataclass
class RequestRecord:
    """One request as its client saw it; times are `time.perf_counter()` seconds."""

    start: float = 0.0
    chunks: list[float] = field(default_factory=list)  # arrival of each streamed piece of the reply
    end: float = 0.0
    output_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.chunks[0] - self.start if self.chunks else None

    def itls(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.chunks)]

    @property
    def tpot(self) -> float | None:
        """Seconds per output token after the first, however the tokens were grouped into chunks."""
        if self.output_tokens < 2 or not self.chunks:
            return None
        return (self.chunks[-1] - self.chunks[0]) / (self.output_tokens - 1)


@dataclass
class LevelRun:
    """All requests of one path at one concurrency, and the wall time they took together."""

    concurrency: int
    records: list[RequestRecord]
    wall: float
    frontend_cpu_s: float = 0.0  # CPU time of the serving process (not the engine's) during the run
    client_cpu_s: float = 0.0  # CPU time of the benchmark's own client (none for path 1)
    engine_cpu_s: float = 0.0  # CPU time of the path's vLLM engine processes (EngineCore, workers)


Send = Callable[[int, RequestRecord], Awaitable[None]]


async def closed_loop(send: Send, concurrency: int, requests: int) -> LevelRun:
    """Requests 0..requests-1 through `concurrency` clients, each starting its next when the last ends."""
    numbers = iter(range(requests))
    records: list[RequestRecord] = []

    async def client() -> None:
        for index in numbers:
            record = RequestRecord()
            records.append(record)
            record.start = time.perf_counter()
            try:
                await send(index, record)
            except Exception as exc:  # a failed request is reported, not fatal to the run
                record.error = f"{type(exc).__name__}: {exc}"[:500]
            record.end = time.perf_counter()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return LevelRun(concurrency, records, time.perf_counter() - started)
