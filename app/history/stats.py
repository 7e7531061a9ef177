"""How one reply was made (model, sampling, token counts, timings), and the line shown under it.

Stats come from the engine, from the database and from imported files; the last two may hold
anything (an older version, a hand edit, another program writing the file). A `ReplyStats`
therefore keeps only values it can show: a field of the wrong type or out of range falls back
to its default, so drawing a conversation never fails on one odd number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from app.i18n import translate

# Far beyond any real reply, and within what SQLite's 64-bit integers and JSON round-trip exactly:
# stats inside these bounds survive export and import unchanged.
MAX_COUNT = 10**12
MAX_SECONDS = 10.0**9
# Tokens one speculative step can make: vLLM's most draft tokens and its bonus token.
MAX_SPEC_TOKENS = 17.0


@dataclass(frozen=True)
class ReplyStats:
    """How one reply was made: shown under it and kept with it."""

    model: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None  # seconds to the first token
    elapsed: float = 0.0  # seconds from request to the last token
    finish_reason: str | None = None  # "stop", "length", "abort" (stopped by the user), ...
    thinking: float | None = None  # seconds from its first thought to its answer; None: no thinking
    cached_tokens: int = 0  # prompt tokens read from vLLM's prefix cache
    spec_tokens_per_step: float | None = None  # speculative decoding: tokens per step
    spec_acceptance: float | None = None  # speculative decoding: the share of drafts accepted (0-1)

    def __post_init__(self) -> None:
        clean = {
            "model": self.model if isinstance(self.model, str) else None,
            "sampling": dict(self.sampling) if isinstance(self.sampling, Mapping) else {},
            "prompt_tokens": _count(self.prompt_tokens),
            "completion_tokens": _count(self.completion_tokens),
            "ttft": _seconds(self.ttft),
            "elapsed": _seconds(self.elapsed) or 0.0,
            "finish_reason": self.finish_reason if isinstance(self.finish_reason, str) else None,
            "thinking": _seconds(self.thinking),
            "cached_tokens": min(_count(self.cached_tokens), _count(self.prompt_tokens)),
            "spec_tokens_per_step": _between(self.spec_tokens_per_step, 1.0, MAX_SPEC_TOKENS),
            "spec_acceptance": _between(self.spec_acceptance, 0.0, 1.0),
        }
        for name, value in clean.items():
            object.__setattr__(self, name, value)  # frozen: the only way to set a field here

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed: tokens after the first over the time after the first."""
        if self.ttft is None or self.completion_tokens < 2 or self.elapsed <= self.ttft:
            return None
        return (self.completion_tokens - 1) / (self.elapsed - self.ttft)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ReplyStats:
        """Stats from stored or imported values; unknown keys (a newer version's) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def stats_line(stats: ReplyStats, lang: str = "en") -> str:
    """model · 123 tokens · TTFT 0.21 s · 45.6 tokens/s (· cached prompt · speculative figures · stopped)."""
    parts = [stats.model] if stats.model else []
    parts.append(translate("conversations.stats_tokens", lang, tokens=stats.completion_tokens))
    if stats.ttft is not None:
        parts.append(translate("conversations.stats_ttft", lang, ttft=f"{stats.ttft:.2f}"))
    if stats.tokens_per_second is not None:
        parts.append(translate("conversations.stats_speed", lang, speed=f"{stats.tokens_per_second:.1f}"))
    if stats.cached_tokens:
        parts.append(
            translate(
                "conversations.stats_cached", lang, cached=f"{stats.cached_tokens:,}", prompt=f"{stats.prompt_tokens:,}"
            )
        )
    if stats.spec_tokens_per_step is not None and stats.spec_acceptance is not None:
        parts.append(
            translate(
                "conversations.stats_speculative",
                lang,
                per_step=f"{stats.spec_tokens_per_step:.2f}",
                accepted=f"{stats.spec_acceptance * 100:.0f}",
            )
        )
    if stats.finish_reason == "abort":
        parts.append(translate("conversations.stats_stopped", lang))
    elif stats.finish_reason == "length":
        parts.append(translate("conversations.stats_length", lang))
    return " · ".join(parts)


def _count(value: Any) -> int:
    # SQLite hands back 40.0 for a count someone stored as REAL; that one is still a count.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return 0


def _between(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high:
        return float(value)  # NaN fails the comparison, so it is dropped too
    return None


def _seconds(value: Any) -> float | None:
    return _between(value, 0.0, MAX_SECONDS)
