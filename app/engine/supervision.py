"""Engine supervision: notice within a second or two that a member's engine died (its EngineCore
process killed, out of memory, a driver reset), say so in its status, and start the same model
again with the same settings, once, while the other members keep serving. A second death soon
after stops the retries with the usual causes and their fixes: restarting into the same failure
would only hide it. Beside it, the pool's idle members are unloaded (or put to sleep).

Both watch the pool alone; a restart goes through the callable its owner gives (the app, which
knows how each member was loaded), run as the owner's task so that it outlives the watch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from app.errors import UserError

if TYPE_CHECKING:
    from app.engine.pool import EnginePool, Member

log = logging.getLogger(__name__)

POLL_S = 1.0
# A second death within this long of the first is not restarted.
RETRY_WINDOW_S = 300.0
# The idle sweep looks again when the next member's idle time ends, within these bounds.
SWEEP_MIN_S = 0.25
SWEEP_MAX_S = 5.0


async def supervise(
    pool: EnginePool,
    restart: Callable[[Member], Awaitable[None]],
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task],
    poll_s: float = POLL_S,
    retry_window_s: float = RETRY_WINDOW_S,
) -> None:
    """Watch every member of `pool`; after a death, `restart(member)` once, as a task `spawn`
    starts. Runs until cancelled (the app's exit)."""
    last_death: dict[str, float] = {}
    restarting: dict[str, asyncio.Task] = {}
    while True:
        await asyncio.sleep(poll_s)
        for member in pool.members():
            if member.name in restarting:
                continue
            died = last_death.get(member.name)
            # Decided before looking, so that the status says at once whether a restart follows.
            retrying = died is None or time.monotonic() - died >= retry_window_s
            if await member.engine.check_alive("engine.died" if retrying else "engine.died_twice"):
                continue
            if not retrying:
                log.warning(
                    "the engine of %s died again within %.0f s: not restarting", member.name, time.monotonic() - died
                )
                continue
            last_death[member.name] = time.monotonic()
            # Restarted beside the others' watch: a load takes seconds, and they may die meanwhile.
            task = spawn(_restart(restart, member))
            restarting[member.name] = task
            task.add_done_callback(lambda _, name=member.name: restarting.pop(name, None))


async def _restart(restart: Callable[[Member], Awaitable[None]], member: Member) -> None:
    try:
        await restart(member)
    except UserError as exc:
        log.warning("restarting %s failed: %s", member.name, exc)


async def unload_idle(pool: EnginePool, idle_seconds: Callable[[], float]) -> None:
    """Runs until cancelled (the app's exit): members idle past their idle time (`idle_seconds()`,
    the setting as it is now, or a request's `ttl`) are put to sleep where vLLM can, else unloaded."""
    while True:
        idle_s = idle_seconds()
        wait = pool.seconds_to_next_idle(idle_s)
        await asyncio.sleep(min(max(wait if wait is not None else SWEEP_MAX_S, SWEEP_MIN_S), SWEEP_MAX_S))
        try:
            for member in await pool.settle_idle(idle_s):
                log.info("%s was idle: %s", member.name, member.state.value)
        except UserError as exc:
            log.warning("unloading an idle model failed: %s", exc)
