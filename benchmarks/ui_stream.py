"""What the chat tab sends the browser per streamed update of one long reply.

A browser re-renders what it receives; if every update carried the whole reply so far,
the bytes (and the work on both ends) would grow with the reply. The app is served from
this process around the benchmark's engine, with its own empty history, so the sidebar
holds one conversation and the reply length comes from the settings given here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import statistics
from pathlib import Path
from typing import Any

import uvicorn

from app.application import App
from app.engine import Engine
from app.server import build_http_app
from app.settings import AppPaths, AppSettings, SamplingSettings
from benchmarks.gradio_stream import GradioChat, Update
from benchmarks.processes import free_port

LONG_REPLY_PROMPT = "Tell me a long story about the sea and the stars. 请讲一个很长的故事。"
# Growth beyond this (late updates vs early ones) means updates carry the reply so far.
FLAT_LIMIT = 1.5


async def ui_stream_cost(engine: Engine, home: Path, reply_tokens: int, temperature: float) -> dict[str, Any]:
    settings = AppSettings(sampling=SamplingSettings(temperature=temperature, max_tokens=reply_tokens,
                                                     ignore_eos=True))
    paths = dataclasses.replace(AppPaths.default(), data_dir=home)
    app = App.build(settings, paths, engine=engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_http_app(app, unload_on_exit=False), host="127.0.0.1",
                                           port=port, log_level="warning"))
    serving = asyncio.get_running_loop().create_task(server.serve())
    chat = GradioChat(f"http://127.0.0.1:{port}")
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        await chat.connect()
        session = await chat.open_session()
        updates = [update async for update in chat.reply(session, LONG_REPLY_PROMPT)]
    finally:
        await chat.close()
        server.should_exit = True
        await serving
    return stream_cost(updates, reply_tokens)


def stream_cost(updates: list[Update], reply_tokens: int) -> dict[str, Any]:
    sizes = [u.size for u in updates]
    # The first update carries the whole chat and the sidebar, the last the saved reply with its
    # stats line; the updates in between are the ones that must not grow.
    middle = sizes[1:-1] or sizes
    third = max(1, len(middle) // 3)
    early, late = statistics.median(middle[:third]), statistics.median(middle[-third:])
    intervals = [b.time - a.time for a, b in itertools.pairwise(updates)]
    return {
        "reply_tokens": reply_tokens,
        "updates": len(sizes),
        "total_bytes": sum(sizes),
        "bytes_per_token": sum(sizes) / reply_tokens,
        "first_update_bytes": sizes[0],
        "last_update_bytes": sizes[-1],
        "early_median_bytes": early,
        "late_median_bytes": late,
        "growth": late / early,
        "flat": late <= FLAT_LIMIT * early,
        "update_interval_median_ms": statistics.median(intervals) * 1000 if intervals else None,
    }
