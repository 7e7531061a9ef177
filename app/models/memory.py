"""The one memory model: how vLLM 0.32 shares out GPU memory (or RAM) between weights, its
runtime and the KV cache. The doctor, the fit check and the engine's load-error hints all
ask this module, so they give the same numbers for the same card and model.

On each GPU an engine uses, vLLM's worker (vllm/v1/worker/gpu_worker.py) works like this:
- `init_device` creates the CUDA context and NCCL, then takes a memory snapshot and
  `request_memory` (vllm/v1/worker/utils.py) sets the budget, `ceil(total × utilization)`,
  refusing to start unless the free memory it measured is at least that.
- `determine_available_memory` loads the weights, profiles one forward pass of
  `max_num_batched_tokens` tokens and the sampler, estimates the CUDA graphs, and gives
  the KV cache `budget − weights − non-torch increase − activation peak − CUDA graphs`.
- `check_enough_kv_cache_memory` (vllm/v1/core/kv_cache_utils.py) refuses to start
  unless one request of `max_model_len` tokens, in whole 16-token blocks, fits in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.hardware import Gpu

GIB = 2**30
# vLLM allocates the KV cache in blocks of 16 tokens on GPUs; its CPU backend makes them 128
# (vllm/platforms/cpu.py, when the user sets no block size): seen on the CPU engine in
# tests/test_fit_vllm.py, where 16-token rounding overstated the cache by 3 blocks of 16.
BLOCK_TOKENS = 16
CPU_BLOCK_TOKENS = 128
# The KV cache follows the model dtype, and vLLM runs float32 checkpoints in 16 bits.
KV_BYTES_PER_ELEMENT = 2
# Per GPU, what vLLM's profile takes from the budget beside weights and KV cache: the
# activation peak at the default 2048 batched tokens and 128 sequences (sampler logits in
# float32 included), the non-torch increase (cuBLAS and attention workspaces) and the CUDA
# graphs, which vLLM 0.32 profiles and subtracts by default. Reported for 4-8B models in
# eager mode, the first two alone are 1.3-1.8 GiB; 2 GiB, so that "fits" means it starts.
GPU_RUNTIME_RESERVE = 2 * GIB
# What vLLM's own process holds before it measures free memory (CUDA context, NCCL): not
# in the budget, but the free memory NVML shows before the start must also cover it.
CUDA_CONTEXT_BYTES = 512 * 2**20
# Python, vLLM and the tokenizer in RAM on top of weights and KV cache when running on the CPU.
CPU_RUNTIME_RESERVE = 2 * GIB
# The range EngineSettings accepts for gpu_memory_utilization.
MIN_UTILIZATION = 0.05
MAX_UTILIZATION = 0.99
# Shorter than this, a chat model is not worth loading: suggest a smaller model instead.
MIN_USEFUL_TOKENS = 2048


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int) -> int:
    """Keys and values of every layer for one token: 2 × layers × kv_heads × head_dim × bytes."""
    return 2 * layers * kv_heads * head_dim * KV_BYTES_PER_ELEMENT


def weights_in_memory(file_bytes: int, dtype: str | None, quantization: str | None) -> int:
    """Checkpoint bytes as loaded: float32 checkpoints are run in 16 bits."""
    if dtype == "float32" and not quantization:
        return file_bytes // 2
    return file_bytes


def tokens_that_fit(kv_bytes: int, per_token: int, block_tokens: int = BLOCK_TOKENS) -> int:
    """Tokens of one request that fit in `kv_bytes`, in whole blocks (vLLM's estimated max length)."""
    return max(kv_bytes, 0) // (per_token * block_tokens) * block_tokens


def kv_bytes_for(tokens: int, per_token: int) -> int:
    """The KV cache vLLM asks for to hold one request of `tokens` tokens."""
    return -(-tokens // BLOCK_TOKENS) * BLOCK_TOKENS * per_token


def vllm_budget(total_bytes: int, utilization: float) -> int:
    """What vLLM may use of one GPU, as `request_memory` computes it."""
    return math.ceil(total_bytes * utilization)


def cpu_need_bytes(weights: int, kv_cache_bytes: int) -> int:
    """RAM an engine on the CPU needs: its KV cache is a fixed size, not a share."""
    return weights + kv_cache_bytes + CPU_RUNTIME_RESERVE


def cpu_kv_cache_room(ram_available: int, weights: int, held_bytes: int = 0) -> int:
    """The largest KV cache an engine on the CPU can get: the RAM free once the engine loaded now
    has gone (it holds `held_bytes`), less the weights and the runtime. Zero when none is left."""
    return max(ram_available + held_bytes - weights - CPU_RUNTIME_RESERVE, 0)


@dataclass(frozen=True)
class Gpus:
    """The GPUs one engine uses. vLLM's arithmetic runs on each, so the smallest and fullest bound it."""

    count: int
    total_bytes: int  # memory of the smallest one
    free_bytes: int  # free memory of the fullest one, as NVML shows it before vLLM starts
    used_bytes: int  # what other programs hold on the fullest one
    name: str

    @classmethod
    def of(cls, gpus: Sequence[Gpu], tensor_parallel_size: int) -> Gpus:
        used = gpus[: max(1, tensor_parallel_size)]
        name = used[0].name if len(used) == 1 else f"{len(used)} × {used[0].name}"
        return cls(
            count=len(used),
            total_bytes=min(g.memory_total for g in used),
            free_bytes=min(g.memory_free for g in used),
            used_bytes=max(g.memory_used for g in used),
            name=name,
        )

    @property
    def free_at_start(self) -> int:
        """Free memory at vLLM's start check, after its own CUDA context."""
        return self.free_bytes - CUDA_CONTEXT_BYTES

    def budget(self, utilization: float, weights: int, per_token: int | None = None) -> KvBudget:
        """vLLM's budget at `utilization`, and the KV cache the estimated runtime leaves in it."""
        budget = vllm_budget(self.total_bytes, utilization) * self.count
        non_kv = estimated_non_kv_bytes(weights, self.count) * self.count
        kv = budget - non_kv
        tokens = tokens_that_fit(kv, per_token) if per_token else None
        return KvBudget(budget, non_kv, kv, tokens)

    def utilization_that_fits(self, weights: int, kv_bytes_needed: int) -> UtilizationFit:
        """The utilizations at which the weights, the runtime and `kv_bytes_needed` of KV cache fit."""
        per_gpu_kv = -(-kv_bytes_needed // self.count)
        non_kv = estimated_non_kv_bytes(weights, self.count)
        return utilization_that_fits(non_kv, per_gpu_kv, self.total_bytes, self.free_at_start)


@dataclass(frozen=True)
class KvBudget:
    """vLLM's budget on the GPUs of one engine and what is left of it for the KV cache."""

    budget_bytes: int  # all GPUs together
    non_kv_bytes: int  # weights and runtime reserve, all GPUs together
    kv_bytes: int  # budget − non-KV; zero or less: no room for any KV cache
    tokens: int | None  # tokens of one request that fit; None when the KV bytes per token are unknown


def estimated_non_kv_bytes(weights: int, gpus: int) -> int:
    """Per GPU: its share of the weights and the runtime reserve."""
    return -(-weights // gpus) + GPU_RUNTIME_RESERVE


def measured_non_kv_bytes(total_bytes: int, utilization: float, available_kv_bytes: int) -> int:
    """Per GPU: what vLLM's profile took from its budget, from the KV cache it says is left."""
    return vllm_budget(total_bytes, utilization) - available_kv_bytes


@dataclass(frozen=True)
class UtilizationFit:
    """The gpu_memory_utilization values, in hundredths, that would work on one GPU."""

    # The smallest whose budget holds what is needed; None when not even MAX_UTILIZATION does.
    lowest: float | None
    # The largest that passes vLLM's start check with the memory free; None when not even MIN_UTILIZATION does.
    highest: float | None

    @property
    def usable(self) -> float | None:
        """The utilization to suggest: the smallest that fits, when the free memory allows it."""
        if self.lowest is None or self.highest is None or self.lowest > self.highest:
            return None
        return self.lowest


def utilization_that_fits(non_kv_bytes: int, kv_bytes_needed: int, total_bytes: int, free_bytes: int) -> UtilizationFit:
    """Per GPU: `non_kv_bytes` (estimated or measured) and `kv_bytes_needed` against the GPU's
    `total_bytes` and the `free_bytes` vLLM sees at its start check."""
    return UtilizationFit(
        lowest_utilization(non_kv_bytes + kv_bytes_needed, total_bytes), highest_utilization(total_bytes, free_bytes)
    )


def lowest_utilization(need_bytes: int, total_bytes: int) -> float | None:
    """The smallest utilization whose budget on a GPU of `total_bytes` holds `need_bytes`."""
    cents = max(-(-need_bytes * 100 // total_bytes), _MIN_CENTS)
    while cents <= _MAX_CENTS and vllm_budget(total_bytes, cents / 100) < need_bytes:
        cents += 1  # the float product fell a byte short
    return cents / 100 if cents <= _MAX_CENTS else None


def highest_utilization(total_bytes: int, free_bytes: int) -> float | None:
    """The largest utilization whose budget is free, so that vLLM agrees to start."""
    cents = min(free_bytes * 100 // total_bytes, _MAX_CENTS)
    while cents >= _MIN_CENTS and vllm_budget(total_bytes, cents / 100) > free_bytes:
        cents -= 1  # the float product rounded up past the free memory
    return cents / 100 if cents >= _MIN_CENTS else None


_MIN_CENTS = round(MIN_UTILIZATION * 100)
_MAX_CENTS = round(MAX_UTILIZATION * 100)
