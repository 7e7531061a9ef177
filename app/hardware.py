"""Facts about this machine: GPUs (through NVML, WSL included), CPU, RAM, WSL."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total: int  # bytes
    memory_used: int  # bytes
    driver: str | None = None

    @property
    def memory_free(self) -> int:
        return self.memory_total - self.memory_used


@dataclass(frozen=True)
class Hardware:
    gpus: list[Gpu] = field(default_factory=list)
    cpu_count: int = 1
    ram_total: int = 0
    ram_available: int = 0
    is_wsl: bool = False
    nvml_error: str | None = None

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


def nvidia_gpus() -> tuple[list[Gpu], str | None]:
    """The NVIDIA GPUs NVML sees, or an empty list and why not."""
    try:
        import pynvml
    except ImportError as exc:
        return [], str(exc)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], str(exc)
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(Gpu(i, name.decode() if isinstance(name, bytes) else name, mem.total, mem.used,
                            driver.decode() if isinstance(driver, bytes) else driver))
        return gpus, None
    except pynvml.NVMLError as exc:
        return [], str(exc)
    finally:
        pynvml.nvmlShutdown()


def is_wsl(proc_version: Path = Path("/proc/version")) -> bool:
    """vLLM's own test: "microsoft" in the kernel release."""
    try:
        return "microsoft" in proc_version.read_text().lower()
    except OSError:
        return "microsoft" in platform.release().lower()


def detect() -> Hardware:
    gpus, error = nvidia_gpus()
    mem = psutil.virtual_memory()
    return Hardware(
        gpus=gpus,
        cpu_count=os.cpu_count() or 1,
        ram_total=mem.total,
        ram_available=mem.available,
        is_wsl=is_wsl(),
        nvml_error=error,
    )
