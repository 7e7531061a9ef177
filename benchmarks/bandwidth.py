"""Single-stream decode against the memory-bandwidth limit.

Decoding one token of one stream reads every weight once, plus the KV cache so far, so
tokens/s cannot exceed bandwidth / bytes read per token. How close path 1 comes says how
much of the GPU the engine itself uses at concurrency 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1}


def gpu_bandwidth() -> float | None:
    """Bytes/s of GPU 0 from NVML: double data rate x top memory clock x bus width; None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        clock_hz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM) * 1e6
        bus_bytes = pynvml.nvmlDeviceGetMemoryBusWidth(handle) / 8
    except Exception:  # no NVML, no GPU, or a driver that does not say
        return None
    return 2 * clock_hz * bus_bytes


def _config(model: str) -> dict[str, Any]:
    config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    return config.get("text_config", config)


def _dtype_bytes(config: dict[str, Any]) -> int:
    return DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"), 2)


def weight_bytes(model: str) -> int:
    """The checkpoint's size, or for a folder without weights (`--load-format dummy`) the
    parameter count of its architecture times the dtype size."""
    files = list(Path(model).glob("*.safetensors"))
    if files:
        return sum(f.stat().st_size for f in files)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        shape = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return sum(p.numel() for p in shape.parameters()) * _dtype_bytes(_config(model))


def kv_bytes_per_token(model: str) -> int:
    c = _config(model)
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    return 2 * c["num_hidden_layers"] * c.get("num_key_value_heads", heads) * head_dim * _dtype_bytes(c)


def decode_vs_bandwidth(model: str, bandwidth: float, tpot_ms: float, mean_context: int) -> dict[str, Any]:
    per_token = weight_bytes(model) + kv_bytes_per_token(model) * mean_context
    limit = bandwidth / per_token
    decode = 1000 / tpot_ms
    return {
        "bandwidth_gb_s": bandwidth / 1e9,
        "bytes_per_token": per_token,
        "limit_tps": limit,
        "decode_tps": decode,
        "efficiency": decode / limit,
    }
