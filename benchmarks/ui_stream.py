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
from app.config.settings import AppPaths, AppSettings, SamplingSettings
from app.engine import Engine
from app.server import build_http_app
from benchmarks.gradio_stream import GradioChat, Update
from benchmarks.processes import free_port

LONG_REPLY_PROMPT = "Tell me a long story about the sea and the stars. 请讲一个很长的故事。"
# Overhead growth beyond this (late updates vs early ones) means updates carry the reply so far.
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
    """Sizes of the updates that show the reply. What must stay flat is an update's overhead: its
    bytes less the reply text new in it (the app paces updates further apart as the reply grows,
    so later updates carry more new text, which is fine)."""
    replying = [u for u in updates if u.replying]
    # The first of them also carries the saved user message and the sidebar, the last the saved
    # reply with its stats line; the ones in between are those that must not grow.
    middle = replying[1:-1] or replying
    third = max(1, len(middle) // 3)
    early, late = middle[:third], middle[-third:]

    def overhead(part: list[Update]) -> float:
        return statistics.median(u.size - u.new_text_bytes for u in part)

    def interval_ms(part: list[Update]) -> float | None:
        gaps = [b.time - a.time for a, b in itertools.pairwise(part)]
        return statistics.median(gaps) * 1000 if gaps else None

    total = sum(u.size for u in updates)
    return {
        "reply_tokens": reply_tokens,
        "updates": len(updates),
        "updates_before_reply": len(updates) - len(replying),
        "total_bytes": total,
        "bytes_per_token": total / reply_tokens,
        "first_reply_update_bytes": replying[0].size if replying else None,
        "early_median_bytes": statistics.median(u.size for u in early),
        "late_median_bytes": statistics.median(u.size for u in late),
        "early_overhead_bytes": overhead(early),
        "late_overhead_bytes": overhead(late),
        "growth": overhead(late) / overhead(early),
        "flat": overhead(late) <= FLAT_LIMIT * overhead(early),
        "early_interval_ms": interval_ms(early),
        "late_interval_ms": interval_ms(late),
    }
