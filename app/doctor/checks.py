"""The doctor: checks this computer for what stops vllm-chat or slows it down.

`gather_facts()` (app.doctor.facts) looks at the real machine; `run_checks(facts)` turns facts into
findings (OK / warning / problem, one line of why, one line of what to do). The two
are apart so tests can fabricate any machine. Texts are i18n keys (`doctor.*`);
the CLI and the System tab render them in their user's language.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.build import DEFAULT_CPU_KV_CACHE_GIB
from app.hardware import (
    CPU_BUILD,
    GPU_BUILD,
    Gpu,
    Hardware,
    TorchFacts,
    VllmBuild,
    WslFacts,
)
from app.i18n import translate
from app.models import memory
from app.models.memory import CUDA_CONTEXT_BYTES, GIB, GPU_RUNTIME_RESERVE, MIN_USEFUL_TOKENS, Gpus
from app.models.sources import Offline

# Below this the cache cannot take a download or the history database a write.
DISK_FULL_BYTES = 1 * GIB
# About one 7-8B model in 16-bit weights: the size most people start with.
TYPICAL_MODEL_BYTES = 16 * GIB
# Less KV cache than this holds only short conversations.
TIGHT_KV_BYTES = 1 * GIB
MIN_PYTHON = (3, 11)


class Status(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Finding:
    """One checked thing. `key` names the why-text (`doctor.<key>`); its fix is `doctor.<key>_fix`."""

    check: str
    status: Status
    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def title(self, lang: str) -> str:
        return translate(f"doctor.title_{self.check}", lang)

    def why(self, lang: str) -> str:
        return translate(f"doctor.{self.key}", lang, **self.params)

    def fix(self, lang: str) -> str | None:
        if self.status is Status.OK:
            return None
        return translate(f"doctor.{self.key}_fix", lang, **self.params)

    def as_dict(self, lang: str) -> dict[str, Any]:
        return {"check": self.check, "status": self.status.value, "title": self.title(lang),
                "why": self.why(lang), "fix": self.fix(lang)}


@dataclass(frozen=True)
class SourceReach:
    """Whether a model download source answered."""

    name: str  # "huggingface", "mirror", "modelscope" (as in AppSettings.download_source)
    url: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class Facts:
    """Everything the checks look at. Tests build this by hand; `gather_facts` reads the real machine."""

    hardware: Hardware
    python_version: tuple[int, int, int] = (3, 11, 0)
    system: str = "Linux"  # platform.system()
    driver_cuda: str | None = None
    torch: TorchFacts = field(default_factory=TorchFacts)
    vllm: VllmBuild = field(default_factory=VllmBuild)
    wsl: WslFacts | None = None
    pin_memory_env: bool = False  # VLLM_WSL2_ENABLE_PIN_MEMORY=1
    model: str | None = None
    model_bytes: int | None = None  # weights of the chosen model as loaded, when its files are on this computer
    model_kv_bytes_per_token: int | None = None  # from its config.json, when that is on this computer
    cpu_kv_cache_bytes: int = int(DEFAULT_CPU_KV_CACHE_GIB * GIB)
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    engine_holds_gpu: bool = False  # our own engine is loaded: GPU memory in use is ours
    cache_dir: Path = Path("~/.cache/huggingface/hub")
    cache_free: int | None = None
    hub_offline: Offline | None = None  # offline: the download sources are not tried
    offline_variable: str = "HF_HUB_OFFLINE"  # the variable that set it (Offline.ENV)
    download_source: str = "huggingface"
    sources: tuple[SourceReach, ...] = ()
    host: str = "127.0.0.1"
    port: int = 7860
    port_free: bool | None = True  # None: this app is the one listening


def run_checks(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(facts))
    return findings


def blocking(findings: list[Finding]) -> bool:
    """Whether something stops the app from working (the CLI's exit status)."""
    return any(f.status is Status.PROBLEM for f in findings)


def summary(findings: list[Finding], lang: str) -> str:
    """One sentence: does anything block the app, and how many warnings."""
    problems = sum(f.status is Status.PROBLEM for f in findings)
    warnings = sum(f.status is Status.WARNING for f in findings)
    if problems:
        return translate("doctor.summary_problems", lang, count=problems)
    if warnings:
        return translate("doctor.summary_warnings", lang, count=warnings)
    return translate("doctor.summary_ok", lang)


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def check_python(facts: Facts) -> list[Finding]:
    version = ".".join(map(str, facts.python_version))
    if facts.python_version[:2] < MIN_PYTHON:
        return [Finding("python", Status.PROBLEM, "python_old", {"version": version})]
    return [Finding("python", Status.OK, "python_ok", {"version": version})]


def check_platform(facts: Facts) -> list[Finding]:
    if facts.system == "Windows":
        return [Finding("platform", Status.PROBLEM, "platform_windows")]
    if facts.system == "Darwin":
        return [Finding("platform", Status.WARNING, "platform_macos")]
    return [Finding("platform", Status.OK, "platform_ok", {"system": facts.system})]


def check_gpu(facts: Facts) -> list[Finding]:
    gpus = facts.hardware.gpus
    if not gpus:
        reason = facts.hardware.nvml_error or "NVML"
        return [Finding("gpu", Status.WARNING, "gpu_none", {"reason": reason})]
    names = ", ".join(f"{g.index}: {g.name} ({_gib(g.memory_total)} GiB)" for g in gpus)
    params = {"count": len(gpus), "names": names, "driver": gpus[0].driver}
    return [Finding("gpu", Status.OK, "gpu_ok", params)]


def check_cuda(facts: Facts) -> list[Finding]:
    """Only with a GPU: torch's CUDA against the driver's, the classic version mismatch."""
    torch = facts.torch
    if not facts.hardware.gpus:
        return []
    if torch.version is None:
        return [Finding("cuda", Status.PROBLEM, "torch_missing", {"error": torch.error})]
    if torch.cuda is None:
        return []  # the CPU build of torch on a GPU machine: check_vllm says what to do
    params = {"torch": torch.version, "cuda": torch.cuda, "driver_cuda": facts.driver_cuda or "?",
              "count": torch.device_count, "error": torch.error}
    if facts.driver_cuda and _version(facts.driver_cuda) < _version(torch.cuda):
        return [Finding("cuda", Status.PROBLEM, "cuda_driver_old", params)]
    if not torch.cuda_available:
        return [Finding("cuda", Status.PROBLEM, "cuda_unavailable", params)]
    return [Finding("cuda", Status.OK, "cuda_ok", params)]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def check_vllm(facts: Facts) -> list[Finding]:
    builds = facts.vllm.builds
    has_gpu = bool(facts.hardware.gpus)
    if not builds:
        return [Finding("vllm", Status.PROBLEM, "vllm_missing")]
    if len(builds) > 1:
        return [Finding("vllm", Status.PROBLEM, "vllm_both")]
    build = builds[0]
    params = {"version": facts.vllm.versions[build]}
    if build == GPU_BUILD and not has_gpu:
        return [Finding("vllm", Status.PROBLEM, "vllm_gpu_on_cpu", params)]
    if build == CPU_BUILD and has_gpu:
        return [Finding("vllm", Status.WARNING, "vllm_cpu_on_gpu", params)]
    return [Finding("vllm", Status.OK, "vllm_ok_gpu" if build == GPU_BUILD else "vllm_ok_cpu", params)]


def check_memory(facts: Facts) -> list[Finding]:
    """Will the chosen model fit, and is the GPU memory vLLM asks for free right now."""
    gpus = facts.hardware.gpus[: max(1, facts.tensor_parallel_size)]
    findings = [] if facts.engine_holds_gpu else _gpu_free_findings(gpus, facts.gpu_memory_utilization)
    if not facts.model:
        return [*findings, Finding("memory", Status.OK, "fit_none")]
    if facts.model_bytes is None:
        return [*findings, Finding("memory", Status.OK, "fit_unknown", {"model": facts.model})]
    return [*findings, _gpu_fit(facts, facts.model_bytes) if gpus else _cpu_fit(facts, facts.model_bytes)]


def _gpu_free_findings(gpus: list[Gpu], util: float) -> list[Finding]:
    """vLLM refuses to start unless each GPU's free memory, once it has its own CUDA context, covers its budget."""
    findings = []
    for gpu in gpus:
        free = Gpus.of([gpu], 1).free_at_start
        budget = memory.vllm_budget(gpu.memory_total, util)
        if free >= budget:
            continue
        suggest = memory.highest_utilization(gpu.memory_total, free)
        params = {
            "index": gpu.index,
            "used": _gib(gpu.memory_used),
            "total": _gib(gpu.memory_total),
            "util": util,
            "budget": _gib(budget),
            "need": _gib(budget + CUDA_CONTEXT_BYTES),
            "suggest": suggest,
        }
        findings.append(Finding("gpu_free", Status.PROBLEM, "gpu_busy" if suggest else "gpu_full", params))
    return findings


def _gpu_fit(facts: Facts, weights: int) -> Finding:
    gpus = Gpus.of(facts.hardware.gpus, facts.tensor_parallel_size)
    per_token = facts.model_kv_bytes_per_token
    plan = gpus.budget(facts.gpu_memory_utilization, weights, per_token)
    params: dict[str, Any] = {
        "model": facts.model,
        "need": _gib(weights),
        "total": _gib(gpus.total_bytes * gpus.count),
        "util": facts.gpu_memory_utilization,
        "budget": _gib(plan.budget_bytes),
        "kv": _gib(max(plan.kv_bytes, 0)),
        "reserve": _gib(GPU_RUNTIME_RESERVE * gpus.count),
    }
    # As in the Models tab: too few tokens for a chat is no fit.
    if plan.kv_bytes <= 0 or (plan.tokens is not None and plan.tokens < MIN_USEFUL_TOKENS):
        # Without the model's config, a tight cache's worth stands in for a useful length.
        needed = memory.kv_bytes_for(MIN_USEFUL_TOKENS, per_token) if per_token else TIGHT_KV_BYTES
        raise_to = gpus.utilization_that_fits(weights, needed).usable
        if raise_to is not None:
            return Finding("memory", Status.PROBLEM, "fit_gpu_raise", params | {"util_fits": raise_to})
        key = "fit_gpu_too_big" if weights > plan.budget_bytes else "fit_gpu_no_room"
        return Finding("memory", Status.PROBLEM, key, params)
    if plan.kv_bytes < TIGHT_KV_BYTES:
        return Finding("memory", Status.WARNING, "fit_gpu_tight", params)
    return Finding("memory", Status.OK, "fit_gpu_ok", params)


def _cpu_fit(facts: Facts, weights: int) -> Finding:
    need = memory.cpu_need_bytes(weights, facts.cpu_kv_cache_bytes)
    ram = facts.hardware.ram_total
    params = {
        "model": facts.model,
        "need": _gib(weights),
        "ram_need": _gib(need),
        "ram": _gib(ram),
        "available": _gib(facts.hardware.ram_available),
    }
    if need > ram:
        return Finding("memory", Status.PROBLEM, "fit_cpu_too_big", params)
    if need > facts.hardware.ram_available:
        return Finding("memory", Status.WARNING, "fit_cpu_tight", params)
    return Finding("memory", Status.OK, "fit_cpu_ok", params)


def check_wsl(facts: Facts) -> list[Finding]:
    wsl = facts.wsl
    if wsl is None:
        return []
    findings = []
    params: dict[str, Any] = {"kernel": wsl.kernel}
    if not wsl.libcuda:
        findings.append(Finding("wsl", Status.WARNING, "wsl_no_libcuda", params))
    else:
        findings.append(Finding("wsl", Status.OK, "wsl_ok", params))
    if facts.hardware.gpus:
        # Only the CUDA platform pins memory; the CPU build never does.
        if not wsl.supports_pin_memory:
            findings.append(Finding("pin_memory", Status.WARNING, "pin_memory_old_kernel", params))
        elif not facts.pin_memory_env:
            findings.append(Finding("pin_memory", Status.WARNING, "pin_memory_off", params))
        else:
            findings.append(Finding("pin_memory", Status.OK, "pin_memory_on", params))
    need = facts.model_bytes or TYPICAL_MODEL_BYTES
    if wsl.memory_total and wsl.memory_total < need:
        config = _windows_path(wsl.wslconfig) if wsl.wslconfig else r"%UserProfile%\.wslconfig"
        suggest = -(-(need + 4 * GIB) // GIB)
        key = "wsl_memory_low" if facts.model_bytes else "wsl_memory_low_typical"
        findings.append(Finding("wsl_memory", Status.WARNING, key, {
            "ram": _gib(wsl.memory_total), "need": _gib(need), "suggest": suggest, "config": config}))
    for name, path in (("model_path", facts.model), ("cache_path", str(facts.cache_dir))):
        if path and on_windows_drive(path):
            findings.append(Finding("model_path", Status.WARNING, f"{name}_on_windows", {"path": path}))
    return findings


def on_windows_drive(path: str) -> bool:
    """A WSL path on a Windows drive (/mnt/c/...): model files there load many times slower."""
    parts = Path(os.path.realpath(os.path.expanduser(path))).parts
    return len(parts) >= 3 and parts[1] == "mnt" and len(parts[2]) == 1 and parts[2].isalpha()


def _windows_path(path: Path) -> str:
    """/mnt/c/Users/me/.wslconfig -> C:\\Users\\me\\.wslconfig (for steps a Windows user takes).
    The mount may sit under a fake root, as in tests."""
    parts = path.parts
    for i in range(len(parts) - 1):
        if parts[i] == "mnt" and len(parts[i + 1]) == 1 and parts[i + 1].isalpha():
            return parts[i + 1].upper() + ":\\" + "\\".join(parts[i + 2:])
    return str(path)


def check_disk(facts: Facts) -> list[Finding]:
    if facts.cache_free is None:
        return []
    params = {"free": _gib(facts.cache_free), "path": str(facts.cache_dir),
              "typical": _gib(TYPICAL_MODEL_BYTES)}
    if facts.cache_free < DISK_FULL_BYTES:
        return [Finding("disk", Status.PROBLEM, "disk_full", params)]
    if facts.cache_free < TYPICAL_MODEL_BYTES:
        return [Finding("disk", Status.WARNING, "disk_low", params)]
    return [Finding("disk", Status.OK, "disk_ok", params)]


def check_hub(facts: Facts) -> list[Finding]:
    if facts.hub_offline:
        return [Finding("hub", Status.OK, f"hub_offline_{facts.hub_offline}", {"variable": facts.offline_variable})]
    if not facts.sources:
        return []
    chosen = next((s for s in facts.sources if s.name == facts.download_source), facts.sources[0])
    if chosen.ok:
        return [Finding("hub", Status.OK, "hub_ok", {"source": chosen.name, "url": chosen.url})]
    other = next((s for s in facts.sources if s.ok), None)
    if other:
        return [Finding("hub", Status.WARNING, "hub_other", {
            "source": chosen.name, "url": chosen.url, "other": other.name, "other_url": other.url})]
    errors = "; ".join(f"{s.url}: {s.error}" for s in facts.sources)
    return [Finding("hub", Status.WARNING, "hub_none", {"errors": errors})]


def check_port(facts: Facts) -> list[Finding]:
    params = {"host": facts.host, "port": facts.port, "next": facts.port + 1}
    if facts.port_free is None:
        return [Finding("port", Status.OK, "port_ours", params)]
    if not facts.port_free:
        return [Finding("port", Status.PROBLEM, "port_busy", params)]
    return [Finding("port", Status.OK, "port_ok", params)]


CHECKS: tuple[Callable[[Facts], list[Finding]], ...] = (
    check_python, check_platform, check_gpu, check_cuda, check_vllm, check_memory,
    check_wsl, check_disk, check_hub, check_port,
)


# ---- the real machine -------------------------------------------------------------------------------
