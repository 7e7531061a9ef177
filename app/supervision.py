"""Engine supervision: notice within a second or two that the engine died (its EngineCore
process killed, out of memory, a driver reset), say so in the status, and start the same model
again with the same settings, once. A second death soon after stops the retries with the usual
causes and their fixes: restarting into the same failure would only hide it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from app.errors import UserError

if TYPE_CHECKING:
    from app.application import App

log = logging.getLogger(__name__)

POLL_S = 1.0
# A second death within this long of the first is not restarted.
RETRY_WINDOW_S = 300.0


async def supervise(app: App, poll_s: float = POLL_S, retry_window_s: float = RETRY_WINDOW_S) -> None:
    """Runs until cancelled (the app's exit)."""
    last_death: float | None = None
    while True:
        await asyncio.sleep(poll_s)
        # Decided before looking, so that the status says at once whether a restart follows.
        retrying = last_death is None or time.monotonic() - last_death >= retry_window_s
        if await app.engine.check_alive("engine.died" if retrying else "engine.died_twice"):
            continue
        if not retrying:
            log.warning(
                "the engine of %s died again within %.0f s: not restarting",
                app.engine.status.model,
                time.monotonic() - last_death,
            )
            continue
        last_death = time.monotonic()
        try:
            await app.reload_last_model()
        except UserError as exc:
            log.warning("restarting %s failed: %s", app.engine.status.model, exc)
