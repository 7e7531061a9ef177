"""What the doctor looks at on this computer: the facts its checks judge (hardware, drivers,
WSL, the model's files, the download sources' reachability), gathered once per run."""

from __future__ import annotations

import concurrent.futures
import os
import platform
import sys
import urllib.error
import urllib.request
from pathlib import Path

from app.config.settings import AppSettings, hf_cache_dir
from app.doctor.checks import Facts, SourceReach
from app.errors import UserError
from app.hardware import detect, disk_free, driver_cuda_version, port_free, torch_facts, vllm_build, wsl_facts
from app.models.fit import ModelShape, cpu_kv_cache_bytes, read_config, weight_file_bytes
from app.models.sources import offline_reason, offline_variable

HUB_TIMEOUT_S = 4.0


def gather_facts(
    settings: AppSettings,
    model: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    serving: bool = False,
    engine_holds_gpu: bool = False,
    probe_hub: bool = True,
) -> Facts:
    """Facts about this computer. `serving`: called from inside the running app (its port is ours).

    `VLLM_CHAT_FAKE_ROOT` prefixes the WSL system files, as in start.sh and wsl/setup.sh.
    """
    root = Path(os.environ.get("VLLM_CHAT_FAKE_ROOT") or "/")
    cache = hf_cache_dir()
    # Offline, nothing leaves this computer: not even a probe of the download sources.
    offline = offline_reason(settings.offline)
    weights, per_token = model_memory(model, cache) if model else (None, None)
    return Facts(
        hardware=detect(),
        python_version=tuple(sys.version_info[:3]),
        system=platform.system(),
        driver_cuda=driver_cuda_version(),
        torch=torch_facts(),
        vllm=vllm_build(),
        wsl=wsl_facts(root),
        pin_memory_env=os.environ.get("VLLM_WSL2_ENABLE_PIN_MEMORY", "0").strip() == "1",
        model=model,
        model_bytes=weights,
        model_kv_bytes_per_token=per_token,
        cpu_kv_cache_bytes=cpu_kv_cache_bytes(settings.engine),
        gpu_memory_utilization=settings.engine.gpu_memory_utilization,
        tensor_parallel_size=settings.engine.tensor_parallel_size,
        engine_holds_gpu=engine_holds_gpu,
        cache_dir=cache,
        cache_free=disk_free(cache),
        hub_offline=offline,
        offline_variable=offline_variable() or "HF_HUB_OFFLINE",
        download_source=settings.download_source,
        sources=() if offline or not probe_hub else probe_sources(source_urls(settings)),
        host=host,
        port=port,
        port_free=None if serving else port_free(host, port),
    )


def model_memory(model: str, cache: Path) -> tuple[int | None, int | None]:
    """A model's weights as loaded and its KV cache bytes per token, from its files: a local folder,
    or a snapshot in the Hugging Face cache. None when not on this computer (the doctor does not ask the Hub)."""
    folder = _model_folder(model, cache)
    file_bytes = weight_file_bytes(folder) if folder else 0
    if not file_bytes:
        return None, None
    try:
        shape = ModelShape.from_config(read_config(folder))
    except (UserError, OSError, ValueError):
        return file_bytes, None
    return shape.weight_bytes_in_memory(file_bytes), shape.kv_bytes_per_token


def _model_folder(model: str, cache: Path) -> Path | None:
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    snapshots = cache / f"models--{model.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def source_urls(settings: AppSettings) -> dict[str, str]:
    """Where each download source lives (names as in AppSettings.download_source)."""
    from huggingface_hub import constants

    return {
        "huggingface": constants.ENDPOINT,
        "mirror": settings.mirror_endpoint,
        "modelscope": os.environ.get("MODELSCOPE_ENDPOINT", "https://www.modelscope.cn"),
    }


def probe_sources(urls: dict[str, str]) -> tuple[SourceReach, ...]:
    """Try each source once, all at the same time, so an offline check costs one timeout."""
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        return tuple(pool.map(lambda item: _reach(*item), urls.items()))


def _reach(name: str, url: str) -> SourceReach:
    try:
        # Any HTTP answer means the network path (and proxy, via HTTPS_PROXY) works.
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=HUB_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return SourceReach(name, url, False, str(reason))
    return SourceReach(name, url, True)
