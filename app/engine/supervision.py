"""Engine supervision: notice within a second or two that a member's engine died (its EngineCore
process killed, out of memory, a driver reset), say so in its status, and start the same model
again with the same settings, once, while the other members keep serving. A second death soon
after stops the retries with the usual causes and their fixes: restarting into the same failure
would only hide it. Beside it, the pool's idle members are unloaded (or put to sleep).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from app.errors import UserError

if TYPE_CHECKING:
    from app.application import App
    from app.engine.pool import Member

log = logging.getLogger(__name__)

POLL_S = 1.0
# A second death within this long of the first is not restarted.
RETRY_WINDOW_S = 300.0
# The idle sweep looks again when the next member's idle time ends, within these bounds.
SWEEP_MIN_S = 0.25
SWEEP_MAX_S = 5.0


async def supervise(app: App, poll_s: float = POLL_S, retry_window_s: float = RETRY_WINDOW_S) -> None:
    """Runs until cancelled (the app's exit)."""
    last_death: dict[str, float] = {}
    restarting: dict[str, asyncio.Task] = {}
    while True:
        await asyncio.sleep(poll_s)
        for member in app.pool.members():
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
            task = app.spawn(_restart(app, member))
            restarting[member.name] = task
            task.add_done_callback(lambda _, name=member.name: restarting.pop(name, None))


async def _restart(app: App, member: Member) -> None:
    try:
        await app.reload_member(member)
    except UserError as exc:
        log.warning("restarting %s failed: %s", member.name, exc)


async def unload_idle(app: App) -> None:
    """Runs until cancelled (the app's exit): members idle past their idle time (the setting, or
    a request's `ttl`) are put to sleep where vLLM can, else unloaded."""
    while True:
        idle_s = app.settings.idle_unload_minutes * 60
        wait = app.pool.seconds_to_next_idle(idle_s)
        await asyncio.sleep(min(max(wait if wait is not None else SWEEP_MAX_S, SWEEP_MIN_S), SWEEP_MAX_S))
        try:
            for member in await app.pool.settle_idle(idle_s):
                log.info("%s was idle: %s", member.name, member.state.value)
        except UserError as exc:
            log.warning("unloading an idle model failed: %s", exc)
