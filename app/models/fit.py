"""Will it fit: a model's weights and KV cache against this machine's GPU memory (or RAM).

The arithmetic is app.models.memory's, the same the doctor and the engine's error hints
use; this module reads a model's config.json and sizes and turns the numbers into a verdict,
before anything is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.config.settings import EngineSettings
from app.engine.build import DEFAULT_CPU_KV_CACHE_GIB
from app.errors import UserError
from app.hardware import Hardware
from app.i18n import translate
from app.models import memory
from app.models.catalog import CatalogEntry
from app.models.memory import CUDA_CONTEXT_BYTES, GIB, MIN_USEFUL_TOKENS, Gpus

# Decoding reads every weight once per token; this is the RAM bandwidth vLLM's CPU backend
# gets on a typical desktop, so tokens/s ≈ this / weight bytes (GPUs are 20-50× faster).
CPU_BYTES_PER_SECOND = 15e9
CPU_MAX_TOKENS_PER_SECOND = 30.0


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

    @classmethod
    def from_entry(cls, entry: CatalogEntry) -> ModelShape:
        """The shape the catalog ships for an entry (read from its config.json, checked against vLLM)."""
        return cls(entry.layers, entry.kv_heads, entry.head_dim, entry.max_position, entry.dtype, entry.quantization)

    @property
    def kv_bytes_per_token(self) -> int:
        return memory.kv_bytes_per_token(self.layers, self.kv_heads, self.head_dim)

    def weight_bytes_in_memory(self, file_bytes: int) -> int:
        return memory.weights_in_memory(file_bytes, self.dtype, self.quantization)


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


class CacheOrigin(StrEnum):
    """Where the CPU engine's KV cache size comes from (models.kv_from_<origin> says it)."""

    SETTINGS = "settings"
    ENV = "env"
    DEFAULT = "default"


@dataclass(frozen=True)
class Phrase:
    """A translated part of a note's sentence, put in when the note is shown in the user's language."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)


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
    # The model's own context length (max_position_embeddings), the "full context" of a verdict.
    model_len: int | None = None
    gpu_name: str | None = None
    # GPU memory other programs hold; vLLM refuses to start unless the budget is free.
    busy_bytes: int = 0
    # The highest utilization vLLM agrees to start with, when the current one asks for more than is free.
    recommended_utilization: float | None = None
    # The lowest utilization at which the length in question fits (the asked one, or a useful one
    # when none fits), when the free memory allows it.
    fitting_utilization: float | None = None
    cpu_tokens_per_second: float | None = None
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict in ("fits", "shorter", "cpu")

    def lines(self, lang: str = "en") -> list[str]:
        """The verdict as sentences in the user's language."""
        return [translate(key, lang, **_phrased(params, lang)) for key, params in self.notes]


def _phrased(params: dict[str, Any], lang: str) -> dict[str, Any]:
    return {k: translate(v.key, lang, **v.params) if isinstance(v, Phrase) else v for k, v in params.items()}


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
        model_len = shape.max_position_embeddings
        report = _check_cpu(weights, per_token, asked, model_len, hardware, engine, quantized_alternative)
    else:
        gpus = Gpus.of(hardware.gpus, engine.tensor_parallel_size)
        report = _check_gpu(weights, per_token, asked, gpus, engine, quantized_alternative)
    return dataclasses.replace(report, model_len=shape.max_position_embeddings)


def _check_gpu(
    weights: int,
    per_token: int,
    asked: int | None,
    gpus: Gpus,
    engine: EngineSettings,
    quantized_alternative: str | None,
) -> FitReport:
    util = engine.gpu_memory_utilization
    plan = gpus.budget(util, weights, per_token)
    max_fit = plan.tokens or 0
    memory_bytes = gpus.total_bytes * gpus.count
    common = dict(
        gpu=gpus.name,
        memory=format_bytes(memory_bytes),
        util=util,
        weights=format_bytes(weights),
        kv=format_bytes(per_token),
        budget=format_bytes(plan.budget_bytes),
    )
    verdict, recommended, target, note = _gpu_verdict(max_fit, asked, engine.max_model_len is not None, common)
    notes = [note]
    fitting = gpus.utilization_that_fits(weights, memory.kv_bytes_for(target, per_token)).usable if target else None
    if fitting is not None:
        notes.append(("models.fit_raise_utilization", dict(util=fitting, length=target)))
    if verdict == "too_big":
        notes.append(_smaller_note(quantized_alternative))
    busy_note, recommended_util = _busy_note(gpus, util)
    notes.extend(busy_note)
    return FitReport(
        verdict=verdict,
        device="cuda",
        weight_bytes=weights,
        kv_bytes_per_token=per_token,
        memory_bytes=memory_bytes,
        budget_bytes=plan.budget_bytes,
        kv_budget_bytes=plan.kv_bytes,
        max_fit_len=max_fit,
        asked_len=asked,
        recommended_max_len=recommended,
        gpu_name=gpus.name,
        busy_bytes=gpus.used_bytes,
        recommended_utilization=recommended_util,
        fitting_utilization=fitting,
        notes=notes,
    )


def _gpu_verdict(
    max_fit: int, asked: int | None, length_set: bool, common: dict[str, Any]
) -> tuple[str, int | None, int | None, tuple[str, dict[str, Any]]]:
    """The verdict, the max model length to load with, the length a higher utilization should
    hold (None when it fits already) and the sentence to say."""
    if max_fit < MIN_USEFUL_TOKENS:
        target = min(asked or MIN_USEFUL_TOKENS, MIN_USEFUL_TOKENS)
        return "too_big", None, target, ("models.fit_too_big", common)
    if asked is None or max_fit >= asked:
        return "fits", asked, None, ("models.fit_fits", dict(common, length=asked or max_fit, room=max_fit))
    recommended = _pow2_floor(max_fit)
    # settings_that_fit shortens only a length the user left open; vLLM refuses the one they set.
    key = "models.fit_shorter_set" if length_set else "models.fit_shorter"
    return "shorter", recommended, asked, (key, dict(common, asked=asked, fits=max_fit, recommended=recommended))


def _smaller_note(quantized_alternative: str | None) -> tuple[str, dict[str, Any]]:
    if quantized_alternative:
        return "models.fit_try_quantized", dict(model=quantized_alternative)
    return "models.fit_try_smaller", {}


def _busy_note(gpus: Gpus, util: float) -> tuple[list[tuple[str, dict[str, Any]]], float | None]:
    """What to say when vLLM would refuse to start: its budget is not free on every GPU."""
    need = memory.vllm_budget(gpus.total_bytes, util)
    if gpus.free_at_start >= need:
        return [], None
    highest = memory.highest_utilization(gpus.total_bytes, gpus.free_at_start)
    params = dict(
        busy=format_bytes(gpus.used_bytes),
        free=format_bytes(gpus.free_bytes),
        need=format_bytes(need + CUDA_CONTEXT_BYTES),
        util=highest,
    )
    return [("models.fit_gpu_busy" if highest else "models.fit_gpu_full", params)], highest


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


def cpu_kv_cache_origin(engine: EngineSettings) -> CacheOrigin:
    if engine.cpu_kv_cache_gib:
        return CacheOrigin.SETTINGS
    return CacheOrigin.ENV if os.environ.get("VLLM_CPU_KVCACHE_SPACE") else CacheOrigin.DEFAULT


def cpu_kv_cache_bytes(engine: EngineSettings) -> int:
    """The KV cache an engine on the CPU gets: the same size app.engine.build asks vLLM for."""
    gib = engine.cpu_kv_cache_gib or float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or DEFAULT_CPU_KV_CACHE_GIB)
    return int(gib * GIB)


def _check_cpu(
    weights: int,
    per_token: int,
    asked: int | None,
    model_len: int | None,
    hardware: Hardware,
    engine: EngineSettings,
    quantized_alternative: str | None,
) -> FitReport:
    kv_budget = cpu_kv_cache_bytes(engine)
    max_fit = memory.tokens_that_fit(kv_budget, per_token, memory.CPU_BLOCK_TOKENS)
    need = memory.cpu_need_bytes(weights, kv_budget)
    # Small models are bound by compute and overheads, not by reading the weights.
    tokens_per_second = min(CPU_BYTES_PER_SECOND / max(weights, 1), CPU_MAX_TOKENS_PER_SECOND)
    # The same figures as on a GPU, in RAM: weights, the KV cache (a fixed size here) and what it holds.
    common = dict(
        weights=format_bytes(weights),
        cache=format_bytes(kv_budget),
        cache_from=Phrase(f"models.kv_from_{cpu_kv_cache_origin(engine)}"),
        kv=format_bytes(per_token),
        room=f"{max_fit:,}",
        ram=format_bytes(hardware.ram_total),
        need=format_bytes(need),
        tps=_format_rate(tokens_per_second),
    )
    if need > hardware.ram_total:
        verdict, recommended = "cpu_too_big", None
        notes = [("models.fit_cpu_too_big", common), _smaller_note(quantized_alternative)]
    else:
        verdict = "cpu"
        recommended = asked if asked is None or max_fit >= asked else _pow2_floor(max_fit)
        length = recommended or max_fit
        chosen = engine.max_model_len is not None and length == asked
        notes = [("models.fit_cpu", common), _context_note(length, model_len, chosen)]
    return FitReport(
        verdict=verdict,
        device="cpu",
        weight_bytes=weights,
        kv_bytes_per_token=per_token,
        memory_bytes=hardware.ram_total,
        budget_bytes=hardware.ram_total,
        kv_budget_bytes=kv_budget,
        max_fit_len=max_fit,
        asked_len=asked,
        recommended_max_len=recommended,
        cpu_tokens_per_second=tokens_per_second,
        notes=notes,
    )


def _context_note(length: int, model_len: int | None, chosen: bool) -> tuple[str, dict[str, Any]]:
    """The context a load gets, beside the model's own: all of it, or how much and why not more
    (`chosen`: the user's max model length; else the KV cache holds no more)."""
    if model_len is None:
        return "models.fit_context_room", dict(length=f"{length:,}")
    if length >= model_len:
        return "models.fit_context_full", dict(full=f"{model_len:,}")
    key = "models.fit_context_set" if chosen else "models.fit_context_memory"
    return key, dict(length=f"{length:,}", full=f"{model_len:,}")


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
