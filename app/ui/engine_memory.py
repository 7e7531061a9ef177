"""Settings → Engine's memory fields. On a GPU, vLLM takes a share of its memory (GPU memory
utilization); its CPU build takes a KV cache of a fixed size instead (`cpu_kv_cache_gib`),
bounded by the RAM free for it. The field that does not apply on this machine is shown
disabled, saying where it applies.

`MemoryFields` is the panel logic (tests build it with a fabricated machine); `updates` turns
it into the two fields' Gradio updates.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.application import App
from app.config.settings import hf_cache_dir
from app.doctor.facts import model_memory
from app.errors import UserError
from app.hardware import Hardware
from app.i18n import translate
from app.models.fit import CacheOrigin, cpu_kv_cache_bytes, cpu_kv_cache_origin, format_bytes
from app.models.memory import CPU_RUNTIME_RESERVE, GIB, cpu_kv_cache_room


@dataclass(frozen=True)
class MemoryFields:
    on_gpu: bool
    default_kv_bytes: int  # the KV cache an empty field gives
    default_origin: CacheOrigin
    ram_available: int
    weights: int  # of the model the next load loads; 0 when its files are not here
    room_bytes: int  # the largest KV cache that load can get

    @classmethod
    def of(cls, app: App, hardware: Hardware) -> MemoryFields:
        """The fields for the model the next load loads (the saved one), on this machine now."""
        weights = _weights(app.settings.model)
        engine = app.engine
        held = 0
        if engine.status.device == "cpu" and engine.source and engine.settings:
            # A reload shuts the loaded engine down first: what it holds is free for the next.
            held = _weights(engine.source) + cpu_kv_cache_bytes(engine.settings) + CPU_RUNTIME_RESERVE
        unset = dataclasses.replace(app.settings.engine, cpu_kv_cache_gib=None)
        return cls(
            on_gpu=hardware.has_gpu,
            default_kv_bytes=cpu_kv_cache_bytes(unset),
            default_origin=cpu_kv_cache_origin(unset),
            ram_available=hardware.ram_available,
            weights=weights,
            room_bytes=cpu_kv_cache_room(hardware.ram_available, weights, held),
        )

    def utilization_info(self, lang: str) -> str:
        return translate("settings_ui.gpu_memory_utilization_info" if self.on_gpu else "settings_ui.gpu_only", lang)

    def kv_info(self, lang: str) -> str:
        if self.on_gpu:
            return translate("settings_ui.cpu_only", lang)
        return translate(
            "settings_ui.cpu_kv_cache_gib_info",
            lang,
            default=format_bytes(self.default_kv_bytes),
            origin=translate(f"settings_ui.kv_default_{self.default_origin}", lang),
            room=format_bytes(self.room_bytes),
        )

    def check_kv(self, gib: float | None) -> None:
        """Refuse, on the CPU, a KV cache the RAM cannot hold next to the weights."""
        if self.on_gpu or gib is None or gib * GIB <= self.room_bytes:
            return
        raise UserError(
            "settings_ui.kv_cache_too_big",
            asked=format_bytes(gib * GIB),
            free=format_bytes(self.ram_available),
            weights=format_bytes(self.weights),
            reserve=format_bytes(CPU_RUNTIME_RESERVE),
            room=format_bytes(self.room_bytes),
            most=f"{math.floor(self.room_bytes / GIB * 10) / 10:g}",
        )


def updates(fields: MemoryFields, lang: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The GPU memory utilization field's update and the KV cache size field's, for this machine."""
    return (
        gr.update(interactive=fields.on_gpu, info=fields.utilization_info(lang)),
        gr.update(interactive=not fields.on_gpu, info=fields.kv_info(lang)),
    )


def _weights(model: str | None) -> int:
    return (model_memory(model, hf_cache_dir())[0] or 0) if model else 0
