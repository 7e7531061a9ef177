"""The engine pool's choices, on stand-in engines (no vLLM): which member a load unloads to make
room, which ones it never unloads (pinned, busy), the refusal with its numbers, idle unloading."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace

import pytest

from app.config.settings import EngineSettings, SamplingSettings
from app.engine.pool import EnginePool, LoadRequest, Member, MemberState
from app.errors import EngineError
from app.hardware import detect
from app.models.memory import GIB
from app.ui.status import status_text
from benchmarks.page_engine import LoadableEngine


def pool_of(budget_gib: float | None = None) -> EnginePool:
    pool = EnginePool(LoadableEngine(), make_engine=LoadableEngine)
    pool.budget_bytes = int(budget_gib * GIB) if budget_gib else 10**15
    return pool


async def load(
    pool: EnginePool,
    name: str,
    gib: float = 1,
    *,
    current: bool = False,
    max_loaded: int | None = None,
    pinned: bool = False,
) -> Member:
    request = LoadRequest(name, name, name, EngineSettings(), need_bytes=int(gib * GIB))
    return await pool.load(
        request,
        make_current=current,
        max_loaded=max_loaded,
        pinned=pinned,
        start=lambda engine: engine.load(name, EngineSettings(), name=name),
    )


def states(pool: EnginePool) -> dict[str, MemberState]:
    return {m.name: m.state for m in pool.members()}


def test_a_load_that_does_not_fit_unloads_the_least_recently_used_idle_member() -> None:
    async def run() -> dict[str, MemberState]:
        pool = pool_of(budget_gib=2.5)
        a = await load(pool, "a", current=True)
        await load(pool, "b")
        a.touch()  # the chat used a after b was loaded: b is the least recently used
        await load(pool, "c")
        return states(pool)

    assert asyncio.run(run()) == {"a": MemberState.LOADED, "c": MemberState.LOADED}


def test_pinned_and_busy_members_stay_and_the_refusal_names_the_numbers() -> None:
    async def run() -> tuple[EngineError, dict[str, MemberState]]:
        pool = pool_of(budget_gib=2.5)
        await load(pool, "a", current=True, pinned=True)
        b = await load(pool, "b")
        stream = b.engine.stream_completion("", SamplingSettings())
        await anext(stream)  # b is answering a request
        try:
            with pytest.raises(EngineError) as refused:
                await load(pool, "c")
        finally:
            await stream.aclose()
        return refused.value, states(pool)

    refusal, left = asyncio.run(run())
    assert left == {"a": MemberState.LOADED, "b": MemberState.LOADED}
    assert refusal.key == "engine.pool_no_room"
    text = refusal.message("en")
    assert "c does not fit" in text and "1.0 GiB" in text and "512.0 MiB of the 2.5 GiB" in text and "a, b" in text
    assert "512.0 MiB" in refusal.message("zh-CN")


def test_the_most_models_setting_unloads_the_idle_one_or_refuses_when_it_is_busy() -> None:
    async def run() -> tuple[dict[str, MemberState], EngineError]:
        pool = pool_of()
        await load(pool, "a", max_loaded=1)
        await load(pool, "b", max_loaded=1)
        swapped = states(pool)
        b = pool.find("b")
        b.serving += 1  # a request routed to b, not yet in its engine
        with pytest.raises(EngineError) as refused:
            await load(pool, "c", max_loaded=1)
        return swapped, refused.value

    swapped, refusal = asyncio.run(run())
    assert swapped == {"b": MemberState.LOADED}
    assert refusal.key == "engine.pool_too_many"
    assert "1 models are loaded" in refusal.message("en") and "(1)" in refusal.message("en")


def test_idle_members_are_unloaded_but_not_the_current_or_a_pinned_one() -> None:
    async def run() -> tuple[list[str], dict[str, MemberState], float | None]:
        pool = pool_of()
        await load(pool, "chat", current=True)
        await load(pool, "kept", pinned=True)
        await load(pool, "short")
        short = pool.find("short")
        short.ttl_s = 5  # a request's ttl: its own idle time
        await load(pool, "long")
        later = time.monotonic() + 10
        wait = pool.seconds_to_next_idle(60)
        acted = await pool.settle_idle(60, now=later)
        return [m.name for m in acted], states(pool), wait

    acted, left, wait = asyncio.run(run())
    assert acted == ["short"]
    assert left == {"chat": MemberState.LOADED, "kept": MemberState.LOADED, "long": MemberState.LOADED}
    assert wait is not None and 4 < wait <= 5


def test_loading_the_same_name_reloads_in_place_and_the_current_engine_is_reused() -> None:
    async def run() -> tuple[bool, bool, int]:
        pool = pool_of()
        empty = pool.current_engine
        first = await load(pool, "a", current=True)
        again = await load(pool, "a", current=True)
        return first.engine is empty, again is first, len(pool.members())

    reused, in_place, count = asyncio.run(run())
    assert reused and in_place and count == 1


def test_a_failed_load_on_request_leaves_nothing_behind() -> None:
    async def run() -> list[str]:
        pool = pool_of()
        await load(pool, "a", current=True)

        async def fail(_: object) -> None:
            raise EngineError("engine.no_model")

        with contextlib.suppress(EngineError):
            await pool.load(
                LoadRequest("b", "b", "b", EngineSettings()), make_current=False, max_loaded=None, start=fail
            )
        return [m.name for m in pool.members()]

    assert asyncio.run(run()) == ["a"]


def test_the_status_bar_names_the_models_loaded_beside_the_chats() -> None:
    pool = pool_of()
    asyncio.run(load(pool, "chat-model", current=True))
    page_app = SimpleNamespace(pool=pool, engine=pool.current_engine)
    assert "also loaded" not in status_text(page_app, detect(), "en")
    asyncio.run(load(pool, "api-model"))
    assert "Ready: chat-model · also loaded for the API: api-model (ready)" in status_text(page_app, detect(), "en")
    assert "另外为 API 加载：api-model（就绪）" in status_text(page_app, detect(), "zh-CN")
