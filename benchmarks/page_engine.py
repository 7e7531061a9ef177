"""A stand-in engine for the page benchmark and the tests of the page: the app's `ChatEngine`,
streaming one fixed, realistic Markdown reply (headings, a table, Python code, LaTeX, some Chinese)
at a fixed token rate, so that a page measurement measures the page alone, not a model or the CPU
it shares, and a page test waits for no model. What the engine itself does (prompts, aborts in
vLLM, tool calls) is tested on the real engine.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from app.config.settings import EngineSettings, SamplingSettings
from app.engine import Capabilities, ChatDelta, EngineState, EngineStatus, LoadStage
from app.errors import UserError

SECTION = """## {n}. 梯度下降 (gradient descent), step by step

The loss $L(\\theta)$ falls fastest along $-\\nabla L$; a step of size $\\eta$ costs $5 and
saves $10 of compute in this toy example. The update rule:

$$\\theta_{{t+1}} = \\theta_t - \\eta \\nabla L(\\theta_t)$$

| step | learning rate | loss |
|---:|---|---|
| 1 | 0.1 | 2.31 |
| 2 | 0.05 | 1.87 |
| 3 | 0.025 | 1.52 |

```python
def descend(grad, theta, eta=0.1, steps=100):
    for _ in range(steps):
        theta = theta - eta * grad(theta)  # 沿负梯度方向
    return theta
```

- 学习率太大会发散, too small and it crawls.
- Momentum keeps a running average: $v_t = \\beta v_{{t-1}} + (1-\\beta) g_t$.

"""
CHARS_PER_TOKEN = 4  # about what a BPE tokenizer averages on mixed English and code


def reply_text(tokens: int) -> str:
    """The reply: sections of the Markdown above, cut at `tokens` tokens."""
    text = "".join(SECTION.format(n=n) for n in itertools.islice(itertools.count(1), tokens // 150 + 1))
    return text[: tokens * CHARS_PER_TOKEN]


class PageEngine:
    """Streams `reply_text(tokens)` at `rate` tokens per second, one token per delta, cut at the
    sampling's max_tokens when one is set. Closing the stream is its abort: the app stops a reply
    by closing the engine's stream, and `num_unfinished_requests` counts the open ones."""

    vllm = None  # no vLLM engine behind it: the app's /v1 answers "not ready", the chat works
    capabilities = Capabilities()  # no tools, pictures or thinking switch: the plain chat path
    tokenizer = None

    def __init__(self, tokens: int = 2000, rate: float = 120.0) -> None:
        self.text = reply_text(tokens)
        self.rate = rate
        self._running = 0
        self._status = EngineStatus(EngineState.READY, model="stand-in", since=time.time(), max_model_len=32768)

    @property
    def status(self) -> EngineStatus:
        return self._status

    @property
    def model_name(self) -> str | None:
        return "stand-in"

    @property
    def max_model_len(self) -> int | None:
        return 32768

    @property
    def source(self) -> str | None:
        """No folder or repo behind it (the System tab asks)."""
        return None

    @property
    def settings(self) -> EngineSettings | None:
        return None

    async def load(self, model: str, settings: EngineSettings, name: str | None = None) -> None:
        raise UserError("engine.no_model")

    async def unload(self) -> None:
        return None

    def resolve_sampling(self, overrides: Mapping[str, Any] | None = None) -> SamplingSettings:
        return SamplingSettings.from_dict(overrides or {})

    def model_sampling_defaults(self) -> dict[str, Any]:
        return {}

    async def check_alive(self) -> bool:
        return True

    def mark_failed(self, error: UserError) -> None:
        return None

    async def stream_chat(
        self, messages: Sequence[Any], sampling: SamplingSettings, request_id: str | None = None
    ) -> AsyncIterator[ChatDelta]:
        async for delta in self.stream_completion("", sampling, request_id):
            yield delta

    async def stream_completion(
        self, prompt: str, sampling: SamplingSettings, request_id: str | None = None
    ) -> AsyncIterator[ChatDelta]:
        start = time.monotonic()
        pieces = [self.text[i : i + CHARS_PER_TOKEN] for i in range(0, len(self.text), CHARS_PER_TOKEN)]
        pieces = pieces[: sampling.max_tokens]
        self._running += 1
        try:
            for i, piece in enumerate(pieces):
                # Paced against the clock, not by sleeps alone, so a busy loop does not slow the rate.
                await asyncio.sleep(max(0.0, start + (i + 1) / self.rate - time.monotonic()))
                elapsed = time.monotonic() - start
                finish = "length" if i == len(pieces) - 1 else None
                yield ChatDelta(piece, 100, i + 1, finish, ttft=1 / self.rate, elapsed=elapsed)
        finally:
            self._running -= 1

    async def abort(self, request_id: str) -> None:
        return None

    def num_unfinished_requests(self) -> int:
        return self._running


class LoadableEngine(PageEngine):
    """The stand-in, empty at first, which loads and unloads: a load passes through the engine's
    stages (checking, configuring, starting) over `load_s` seconds, as a real start does in tens
    of seconds, and records what it was asked to load, so that a test of the page or of a
    download checks what reached the engine without waiting for vLLM."""

    def __init__(self, load_s: float = 0.0, tokens: int = 400, rate: float = 400.0) -> None:
        super().__init__(tokens=tokens, rate=rate)
        self.load_s = load_s
        self.loaded: list[tuple[str, EngineSettings]] = []
        self._status = EngineStatus(EngineState.EMPTY, since=time.time())

    @property
    def model_name(self) -> str | None:
        return self._status.model if self._status.state == EngineState.READY else None

    @property
    def max_model_len(self) -> int | None:
        return self._status.max_model_len

    async def load(self, model: str, settings: EngineSettings, name: str | None = None) -> None:
        name = name or model
        self.loaded.append((model, settings))
        for stage in (LoadStage.CHECKING, LoadStage.CONFIGURING, LoadStage.STARTING):
            self._status = EngineStatus(EngineState.LOADING, model=name, stage=stage, since=time.time())
            await asyncio.sleep(self.load_s / 3)
        self._status = EngineStatus(EngineState.READY, model=name, since=time.time())

    async def unload(self) -> None:
        self._status = EngineStatus(EngineState.EMPTY, since=time.time())
