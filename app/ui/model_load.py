"""The Models tab's Load and Unload as lines under their button: what the engine is doing while
it loads (its load stage) and for how long, then how it ended.

Both run as the app's own tasks, so they go on if the page closes; each yields its first line
only once the engine has taken the job, so that the status bar, updated with it, already says
"Loading ..." or "No model loaded".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from app.application import App
from app.engine.types import EngineState
from app.i18n import translate
from app.ui.models_panel import ModelsPanel

# How often the line under Load says what the load is doing.
LOAD_POLL_S = 0.5


async def load_steps(
    panel: ModelsPanel, name: str, revision: str | None = None, lang: str = "en", trust: bool = False
) -> AsyncIterator[str]:
    """`panel.load`, with a line while it works, then its own last line."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = panel.app.spawn(panel.load(name, revision, lang, trust))
    await asyncio.sleep(0)
    while not task.done():
        yield load_progress(panel.app, name, int(loop.time() - started), lang)
        await asyncio.wait({task}, timeout=LOAD_POLL_S)
    yield task.result()


def load_progress(app: App, name: str, seconds: int, lang: str = "en") -> str:
    status = app.engine.status
    if status.state != EngineState.LOADING or not status.stage:
        return translate("models.load_starting", lang, model=status.model or name)
    stage = translate(status.stage, lang)
    return translate("models.load_progress", lang, model=status.model, stage=stage, seconds=f"{seconds:,}")


async def unload_steps(app: App, lang: str = "en") -> AsyncIterator[str]:
    """Unload the model: a line at once, and one when its memory is free."""
    status = app.engine.status
    if status.state == EngineState.EMPTY:
        yield translate("models.nothing_loaded", lang)
        return
    task = app.spawn(app.engine.unload())
    await asyncio.sleep(0)
    yield translate("models.unloading", lang, model=status.model)
    await asyncio.wait({task})
    task.result()
    yield translate("models.unloaded", lang, model=status.model)
