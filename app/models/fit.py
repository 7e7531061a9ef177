"""Will it fit: a model's weights and KV cache against this machine's GPU memory (or RAM).

vLLM gives itself `total GPU memory × gpu_memory_utilization`. Out of that it takes the
weights, a runtime reserve (activations profiled at the batch size, CUDA graphs, cuBLAS
workspaces, sampler buffers) and turns the rest into KV cache. One request of
`max_model_len` tokens must fit in that KV cache or the engine refuses to start.
The numbers here are that same arithmetic, done before anything is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine import DEFAULT_CPU_KV_CACHE_GIB
from app.errors import UserError
from app.hardware import Hardware
from app.i18n import translate
from app.settings import EngineSettings

GIB = 2**30
# vLLM allocates the KV cache in blocks of 16 tokens.
BLOCK_TOKENS = 16
# What vLLM's memory profile measures beside weights and KV cache for 1-10B models at the
# default batch size: about 1-2 GiB; we keep the upper end so "fits" means it starts.
GPU_RUNTIME_RESERVE = 2 * GIB
# Python, vLLM and the tokenizer in RAM on top of weights and KV cache when running on the CPU.
CPU_RUNTIME_RESERVE = 2 * GIB
# Decoding reads every weight once per token; this is the RAM bandwidth vLLM's CPU backend
# gets on a typical desktop, so tokens/s ≈ this / weight bytes (GPUs are 20-50× faster).
CPU_BYTES_PER_SECOND = 15e9
CPU_MAX_TOKENS_PER_SECOND = 30.0
# Shorter than this, a chat model is not worth loading: suggest a smaller model instead.
MIN_USEFUL_LEN = 2048
# The KV cache follows the model dtype, and vLLM runs float32 checkpoints in 16 bits.
KV_BYTES_PER_ELEMENT = 2


@dataclass(frozen=True)
class ModelShape:
    """What the KV-cache arithmetic needs from a model's config.json."""

    layers: int
    kv_heads: int
    head_dim: int
    max_position_embeddings: int | None
    dtype: str | None
    quantization: str | None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        try:
            return cls._from_config(config)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            raise UserError("models.fit_unknown") from None

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> ModelShape:
        # Multimodal models keep the language model's numbers in text_config.
        text = config.get("text_config") or config
        heads = int(text["num_attention_heads"])
        kv_heads = text.get("num_key_value_heads") or text.get("multi_query_group_num") or heads
        head_dim = text.get("head_dim") or text.get("kv_channels") or int(text["hidden_size"]) // heads
        layers = text.get("num_hidden_layers") or text.get("num_layers")
        max_pos = text.get("max_position_embeddings") or text.get("seq_length")
        quant = (config.get("quantization_config") or {}).get("quant_method")
        return cls(
            layers=int(layers),
            kv_heads=int(kv_heads),
            head_dim=int(head_dim),
            max_position_embeddings=int(max_pos) if max_pos else None,
            dtype=text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype"),
            quantization=quant,
        )

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of every layer for one token: 2 × layers × kv_heads × head_dim × bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * KV_BYTES_PER_ELEMENT

    def weight_bytes_in_memory(self, file_bytes: int) -> int:
        """Checkpoint bytes as loaded: float32 checkpoints are run in 16 bits."""
        if self.dtype == "float32" and not self.quantization:
            return file_bytes // 2
        return file_bytes


def weight_file_bytes(folder: Path) -> int:
    """Bytes of a model folder's weights: the safetensors index total, else the files' sizes."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            total = json.loads(index.read_text(encoding="utf-8")).get("metadata", {}).get("total_size")
            if total:
                return int(total)
        except (ValueError, OSError):
            pass
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files)


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class FitReport:
    """The verdict and the numbers behind it. `verdict` is one of:
    fits, shorter (fits with a smaller max model length), too_big, cpu, cpu_too_big."""

    verdict: str
    device: str  # "cuda" or "cpu"
    weight_bytes: int
    kv_bytes_per_token: int
    memory_bytes: int  # GPU memory of the GPUs used, or RAM
    budget_bytes: int  # what vLLM may use of it
    kv_budget_bytes: int
    max_fit_len: int  # tokens of one request that fit in the KV budget
    asked_len: int | None  # the max model length that would be used
    recommended_max_len: int | None
    gpu_name: str | None = None
    # GPU memory other programs hold; vLLM refuses to start unless the budget is free.
    busy_bytes: int = 0
    recommended_utilization: float | None = None
    cpu_tokens_per_second: float | None = None
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict in ("fits", "shorter", "cpu")

    def lines(self, lang: str = "en") -> list[str]:
        """The verdict as sentences in the user's language."""
        return [translate(key, lang, **params) for key, params in self.notes]


def check_fit(
    shape: ModelShape,
    weight_file_bytes: int,
    hardware: Hardware,
    engine: EngineSettings,
    quantized_alternative: str | None = None,
) -> FitReport:
    """Compare a model with this machine. `quantized_alternative` names a smaller variant to suggest."""
    weights = shape.weight_bytes_in_memory(weight_file_bytes)
    per_token = shape.kv_bytes_per_token
    asked = engine.max_model_len or shape.max_position_embeddings
    if not hardware.has_gpu:
        return _check_cpu(shape, weights, per_token, asked, hardware, engine)

    gpus = hardware.gpus[: max(1, engine.tensor_parallel_size)]
    memory = min(g.memory_total for g in gpus) * len(gpus)
    budget = int(memory * engine.gpu_memory_utilization)
    kv_budget = budget - weights - GPU_RUNTIME_RESERVE * len(gpus)
    max_fit = _block_floor(max(kv_budget, 0) // per_token)
    name = gpus[0].name if len(gpus) == 1 else f"{len(gpus)} × {gpus[0].name}"
    notes: list[tuple[str, dict[str, Any]]] = []
    common = dict(gpu=name, memory=format_bytes(memory), util=engine.gpu_memory_utilization,
                  weights=format_bytes(weights), kv=format_bytes(per_token), budget=format_bytes(budget))

    if max_fit < MIN_USEFUL_LEN:
        verdict, recommended = "too_big", None
        notes.append(("models.fit_too_big", common))
        if quantized_alternative:
            notes.append(("models.fit_try_quantized", dict(model=quantized_alternative)))
        else:
            notes.append(("models.fit_try_smaller", {}))
    elif asked is None or max_fit >= asked:
        verdict, recommended = "fits", asked
        notes.append(("models.fit_fits", dict(common, length=asked or max_fit, room=max_fit)))
    else:
        verdict, recommended = "shorter", _pow2_floor(max_fit)
        notes.append(("models.fit_shorter", dict(common, asked=asked, fits=max_fit, recommended=recommended)))

    # vLLM checks at start that the whole budget is free on each GPU.
    per_gpu_budget = budget // len(gpus)
    busy = max(g.memory_used for g in gpus)
    recommended_util = None
    if min(g.memory_free for g in gpus) < per_gpu_budget:
        free = min(g.memory_free for g in gpus)
        recommended_util = math.floor(free / gpus[0].memory_total * 100 - 1) / 100
        notes.append(("models.fit_gpu_busy", dict(busy=format_bytes(busy), free=format_bytes(free),
                                                  need=format_bytes(per_gpu_budget), util=recommended_util)))
    return FitReport(
        verdict=verdict, device="cuda", weight_bytes=weights, kv_bytes_per_token=per_token, memory_bytes=memory,
        budget_bytes=budget, kv_budget_bytes=kv_budget, max_fit_len=max_fit, asked_len=asked,
        recommended_max_len=recommended, gpu_name=name, busy_bytes=busy,
        recommended_utilization=recommended_util, notes=notes,
    )


def settings_that_fit(
    folder: Path, hardware: Hardware, engine: EngineSettings
) -> tuple[EngineSettings, FitReport | None]:
    """The engine settings to load a model folder with: the user's own, plus a max model length that
    fits when they left it open and the model's full length does not. Also returns the check."""
    try:
        report = check_fit(ModelShape.from_config(read_config(folder)), weight_file_bytes(folder), hardware, engine)
    except (UserError, OSError, ValueError):
        return engine, None  # an unusual model: let vLLM decide, and explain if it fails
    shorter = report.recommended_max_len and report.recommended_max_len != report.asked_len
    if engine.max_model_len is None and report.verdict in ("shorter", "cpu") and shorter:
        return dataclasses.replace(engine, max_model_len=report.recommended_max_len), report
    return engine, report


def _check_cpu(shape: ModelShape, weights: int, per_token: int, asked: int | None, hardware: Hardware,
               engine: EngineSettings) -> FitReport:
    # The same KV-cache size the engine will ask for (see app.engine._engine_args).
    gib = engine.cpu_kv_cache_gib or float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or DEFAULT_CPU_KV_CACHE_GIB)
    kv_budget = int(gib * GIB)
    max_fit = _block_floor(kv_budget // per_token)
    need = weights + kv_budget + CPU_RUNTIME_RESERVE
    # Small models are bound by compute and overheads, not by reading the weights.
    tokens_per_second = min(CPU_BYTES_PER_SECOND / max(weights, 1), CPU_MAX_TOKENS_PER_SECOND)
    common = dict(weights=format_bytes(weights), ram=format_bytes(hardware.ram_total), need=format_bytes(need),
                  tps=_format_rate(tokens_per_second))
    if need > hardware.ram_total:
        verdict, recommended = "cpu_too_big", None
        notes = [("models.fit_cpu_too_big", common), ("models.fit_try_smaller", {})]
    else:
        verdict = "cpu"
        recommended = asked if asked is None or max_fit >= asked else _pow2_floor(max_fit)
        notes = [("models.fit_cpu", dict(common, length=recommended or max_fit))]
    return FitReport(
        verdict=verdict, device="cpu", weight_bytes=weights, kv_bytes_per_token=per_token,
        memory_bytes=hardware.ram_total, budget_bytes=hardware.ram_total, kv_budget_bytes=kv_budget,
        max_fit_len=max_fit, asked_len=asked, recommended_max_len=recommended,
        cpu_tokens_per_second=tokens_per_second, notes=notes,
    )


def _block_floor(tokens: int) -> int:
    return tokens // BLOCK_TOKENS * BLOCK_TOKENS


def _pow2_floor(tokens: int) -> int:
    """A round max model length at or below `tokens`, leaving headroom for our estimate's error."""
    return 1 << (tokens.bit_length() - 1)


def _format_rate(tokens_per_second: float) -> str:
    return f"{tokens_per_second:.1f}" if tokens_per_second < 10 else f"{tokens_per_second:.0f}"


def format_bytes(n: int | float) -> str:
    """Sizes as people read them: 1,536 MiB → "1.5 GiB" (binary units, as GPU memory is sold)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
