"""Turning vLLM's exceptions and log lines into one sentence with the fix.

The memory hints use app.models.memory, the same model the doctor and the fit check use,
but with what vLLM measured: its message says how much KV cache its profile left.
"""

from __future__ import annotations

import re
from typing import Any

from app.config.settings import EngineSettings
from app.errors import EngineError, SettingsError
from app.hardware import Hardware, detect
from app.models import memory
from app.models.memory import GIB, Gpus

# vllm/v1/core/kv_cache_utils.py, _check_enough_kv_cache_memory.
_KV_TOO_SMALL = re.compile(
    r"\((\d+)\), \(([\d.]+) GiB KV cache is needed, which is larger than the available KV cache "
    r"memory \(([\d.]+) GiB\)\.(?: Based on the available memory, the estimated maximum model "
    r"length is (\d+))?"
)
# vllm/v1/worker/utils.py, request_memory.
_GPU_BUSY = re.compile(
    r"Free memory on device \S+ \(([\d.]+)/([\d.]+) GiB\) on startup is less than desired GPU "
    r"memory utilization \(([\d.]+), ([\d.]+) GiB\)"
)
_CUDA_OOM = re.compile(
    r"CUDA out of memory\. Tried to allocate ([\d.]+ [GM]iB)\. GPU \d+ has a total capacity of "
    r"([\d.]+ [GM]iB) of which ([\d.]+ [GM]iB) is free"
)
# vLLM prints GiB to two decimals: a printed free figure may stand for up to this much less.
_PRINTED_GIB_ROUNDING = GIB // 200


def error_text(exc: BaseException) -> str:
    """The exception and its causes, one `Type: message` a line."""
    parts = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def explain_load_error(
    exc: BaseException,
    model: str,
    settings: EngineSettings,
    engine_log: str = "",
    hardware: Hardware | None = None,
) -> EngineError:
    """One sentence with the fix, from the exception and what the EngineCore process logged.
    `hardware`: the machine as it is now (None: look at it, when the error is about GPU memory)."""
    if isinstance(exc, SettingsError):
        return exc
    text = error_text(exc) + "\n" + engine_log
    return _explain_memory_error(text, settings, hardware) or _explain_other_load_error(text, exc, model, settings)


def _explain_memory_error(text: str, settings: EngineSettings, hardware: Hardware | None) -> EngineError | None:
    util = settings.gpu_memory_utilization
    if m := _KV_TOO_SMALL.search(text):
        max_len, needed, available, fits = m.groups()
        params: dict[str, Any] = dict(max_len=max_len, needed=needed, available=available, util=util)
        key = "engine.load_oom_len" if fits else "engine.load_oom_kv"
        if fits:
            params["fits"] = fits
        raise_to = _utilization_for_kv(_engine_gpus(settings, hardware), util, _bytes(needed), _bytes(available))
        if raise_to is not None:
            return EngineError(f"{key}_raise", util_fits=raise_to, **params)
        return EngineError(key, **params)
    if m := _GPU_BUSY.search(text):
        free, total, util_asked, wanted = m.groups()
        highest = memory.highest_utilization(_bytes(total), _bytes(free) - _PRINTED_GIB_ROUNDING)
        if highest is None:
            return EngineError("engine.load_gpu_full", free=free, total=total)
        return EngineError("engine.load_gpu_busy", free=free, total=total, util=util_asked, wanted=wanted, fits=highest)
    if m := _CUDA_OOM.search(text):
        return EngineError("engine.load_cuda_oom", asked=m.group(1), total=m.group(2), free=m.group(3), util=util)
    if re.search(r"out of memory|No available memory for the cache blocks|Insufficient memory", text, re.I):
        return EngineError("engine.load_oom", util=util)
    return None


def _utilization_for_kv(gpus: Gpus | None, util: float, needed: int, available: int) -> float | None:
    """The utilization at which the KV cache vLLM needed fits, from what its profile took (per GPU)."""
    if gpus is None:
        return None
    non_kv = memory.measured_non_kv_bytes(gpus.total_bytes, util, available)
    return memory.utilization_that_fits(non_kv, needed, gpus.total_bytes, gpus.free_at_start).usable


def _engine_gpus(settings: EngineSettings, hardware: Hardware | None) -> Gpus | None:
    """The GPUs the failed engine used, as NVML sees them now that it is gone; None on the CPU,
    where the KV cache has a fixed size instead of a share."""
    if hardware is None:
        from vllm.platforms import current_platform  # imported by the load that failed

        hardware = Hardware() if current_platform.is_cpu() else detect()
    return Gpus.of(hardware.gpus, settings.tensor_parallel_size) if hardware.gpus else None


def _bytes(printed_gib: str) -> int:
    return int(float(printed_gib) * GIB)


def _explain_other_load_error(text: str, exc: BaseException, model: str, settings: EngineSettings) -> EngineError:
    if re.search(r"trust_remote_code|trust-remote-code", text):
        return EngineError("engine.needs_trust_remote_code", model=model)
    if m := re.search(r"architectures? \[?'?([\w.]+)'?\]? (?:are|is) not supported", text) or re.search(
        r"Model architectures \['?([\w.]+)", text
    ):
        return EngineError("engine.unknown_arch", arch=m.group(1))
    if m := re.search(
        r"max_model_len.*?\((\d+)\).*?(?:max_position_embeddings|derived max_model_len).*?(\d+)", text, re.S | re.I
    ) or re.search(
        r"User-specified max_model_len \((\d+)\) is greater than "
        r"the derived max_model_len \(\w+=(\d+)",
        text,
    ):
        return EngineError("engine.max_len_too_big", asked=m.group(1), limit=m.group(2))
    if re.search(r"safetensors|HeaderTooSmall|HeaderTooLarge|invalid load key|unexpected EOF|corrupt", text, re.I):
        return EngineError("engine.corrupt_files", path=model, file="*.safetensors")
    if re.search(
        r"RepositoryNotFound|not a valid model identifier|does not appear to have a file named "
        r"config.json|Invalid repository ID|LocalEntryNotFound|offline",
        text,
        re.I,
    ):
        return EngineError("engine.model_not_found", model=model)
    if "Engine core initialization failed" in text:
        return EngineError("engine.core_failed", util=settings.gpu_memory_utilization)
    return EngineError("engine.load_failed", reason=_first_line(exc))


def explain_render_error(exc: BaseException, llm: Any) -> EngineError:
    text = error_text(exc)
    if getattr(exc, "parameter", None) == "input_tokens":
        return EngineError("engine.prompt_too_long", tokens=exc.value, max_len=llm.model_config.max_model_len)
    if "chat template" in text.lower() or "chat_template" in text:
        return EngineError("engine.no_chat_template")
    if m := re.search(r"(?:length|contains|prompt of) (\d+).*?(?:maximum|max)[^\d]*(\d+)", text, re.S | re.I):
        return EngineError("engine.prompt_too_long", tokens=m.group(1), max_len=m.group(2))
    return EngineError("engine.request_failed", reason=_first_line(exc))


def explain_generate_error(exc: BaseException, prompt_tokens: int, max_len: int) -> EngineError:
    text = error_text(exc)
    if "maximum model length" in text or "max_model_len" in text:
        return EngineError("engine.prompt_too_long", tokens=prompt_tokens, max_len=max_len)
    if "EngineDeadError" in text or "EngineDead" in type(exc).__name__:
        return EngineError("engine.dead")
    return EngineError("engine.request_failed", reason=_first_line(exc))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
