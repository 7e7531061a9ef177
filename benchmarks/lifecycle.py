"""What loading costs: memory of this process and its engine processes, and the time and
memory of switching models (unload A, load B) with the app's own Engine."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psutil

from app.config.settings import EngineSettings
from app.engine import Engine
from app.hardware import nvidia_gpus


def memory_now() -> dict[str, int | None]:
    """Resident memory of this process and every process it started; GPU memory in use (None without NVML)."""
    me = psutil.Process()
    rss = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # it ended while we looked
            rss += child.memory_info().rss
    gpus, _ = nvidia_gpus()
    return {"rss_bytes": rss, "gpu_used_bytes": sum(g.memory_used for g in gpus) if gpus else None}


async def switch_cost(
    engine: Engine, model_b: str, settings: EngineSettings, before_first_load: dict[str, int | None]
) -> dict[str, Any]:
    """Unload what `engine` holds and load `model_b`, as the app's model switch does; then
    unload B too. What B leaves behind is memory after its unload against before its load
    (`before_first_load`, from before this process loaded anything, is shown for context:
    much else was built in between)."""
    loaded_a = memory_now()
    started = time.perf_counter()
    await engine.unload()
    unloaded = time.perf_counter()
    before_load_b = memory_now()
    await engine.load(model_b, settings)
    loaded = time.perf_counter()
    loaded_b = memory_now()
    await engine.unload()
    after_unload_b = memory_now()
    return {
        "model_b": Path(model_b).name,
        "unload_s": unloaded - started,
        "load_s": loaded - unloaded,
        "switch_s": loaded - started,
        "memory": {
            "before_first_load": before_first_load,
            "loaded_a": loaded_a,
            "before_load_b": before_load_b,
            "loaded_b": loaded_b,
            "after_unload_b": after_unload_b,
        },
        "rss_left_after_unload_bytes": after_unload_b["rss_bytes"] - before_load_b["rss_bytes"],
        "gpu_left_after_unload_bytes": (
            after_unload_b["gpu_used_bytes"] - before_load_b["gpu_used_bytes"]
            if after_unload_b["gpu_used_bytes"] is not None and before_load_b["gpu_used_bytes"] is not None
            else None
        ),
    }
