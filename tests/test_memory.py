"""One memory model: the doctor, the Models tab's fit check and the engine's load-error hints give
the same KV budget, tokens and utilization for the same card and model. Numbers worked out by hand.

The engine's hints read what vLLM printed; the messages below are the ones vLLM 0.32 prints
(vllm/v1/core/kv_cache_utils.py, vllm/v1/worker/utils.py) for these cards, when its profile
takes what app.models.memory reserves (weights + 2 GiB per GPU) and its CUDA context 0.5 GiB.
"""

from __future__ import annotations

import dataclasses

import pytest

from app.config.settings import EngineSettings
from app.doctor.checks import Facts, Status, check_memory
from app.engine.errors import explain_load_error
from app.errors import EngineError
from app.hardware import Gpu, Hardware
from app.models import memory
from app.models.fit import ModelShape, check_fit
from tests.test_fit import LLAMA31_8B, QWEN25_7B, QWEN25_7B_BYTES

GIB = 2**30
CORE_FAILED = RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")

# The card: 12 GiB with nothing else on it, and Llama-3.1-8B's shape in 9 GiB of 8-bit weights
# (128 KiB of KV cache per token).
CARD_12G = Gpu(0, "NVIDIA GeForce RTX 3060", 12 * GIB, 0, "560.94")
LLAMA_8BIT = {**LLAMA31_8B, "quantization_config": {"quant_method": "fp8"}}
LLAMA_8BIT_BYTES = 9 * GIB
# An RTX 4090 with the desktop on it, and Qwen2.5-7B in bf16 (56 KiB per token).
CARD_24G = Gpu(0, "NVIDIA GeForce RTX 4090", 24 * GIB, GIB // 2, "560.94")


def doctor_finding(card: Gpu, weights: int, per_token: int, util: float, check: str = "memory"):
    facts = Facts(
        hardware=Hardware(gpus=[card]),
        model="m",
        model_bytes=weights,
        model_kv_bytes_per_token=per_token,
        gpu_memory_utilization=util,
    )
    return next(f for f in check_memory(facts) if f.check == check)


def engine_hint(settings: EngineSettings, engine_log: str, *gpus: Gpu) -> EngineError:
    return explain_load_error(CORE_FAILED, "m", settings, engine_log, hardware=Hardware(gpus=list(gpus)))


def kv_too_small(max_len: int, needed: str, available: str, fits: int) -> str:
    """What the EngineCore logs when one request does not fit (kv_cache_utils._check_enough_kv_cache_memory)."""
    return (
        f"ValueError: To serve at least one request with the model's max seq len ({max_len}), ({needed} GiB KV "
        f"cache is needed, which is larger than the available KV cache memory ({available} GiB). Based on the "
        f"available memory, the estimated maximum model length is {fits}. Try increasing `gpu_memory_utilization`"
    )


def gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def test_9_gib_of_weights_on_a_12_gib_card_do_not_fit_at_0_9_anywhere():
    # Budget ceil(12,884,901,888 × 0.9) = 11,596,411,700; weights + 2 GiB = 11,811,160,064: −214,748,364.
    # 2048 tokens (256 MiB) more need 12,079,595,520 = 93.75 % → 0.94. Free at vLLM's check
    # 12 − 0.5 (its CUDA context) = 11.5 GiB = 95.8 % → up to 0.95, so 0.94 can be set.
    shape = ModelShape.from_config(LLAMA_8BIT)
    report = check_fit(shape, LLAMA_8BIT_BYTES, Hardware(gpus=[CARD_12G]), EngineSettings(gpu_memory_utilization=0.9))
    assert report.verdict == "too_big" and report.kv_budget_bytes == -214_748_364 and report.max_fit_len == 0
    assert report.fitting_utilization == 0.94
    assert any("0.94" in line and "2048" in line for line in report.lines("en"))

    doctor = doctor_finding(CARD_12G, LLAMA_8BIT_BYTES, shape.kv_bytes_per_token, 0.9)
    assert doctor.status is Status.PROBLEM and doctor.key == "fit_gpu_raise"
    assert doctor.params["kv"] == "0.0" and doctor.params["util_fits"] == 0.94
    assert "0.94" in doctor.fix("en") and "0.94" in doctor.fix("zh-CN")

    # vLLM itself finds no room at all; it says so in words, without numbers.
    engine = engine_hint(
        EngineSettings(gpu_memory_utilization=0.9),
        "ValueError: No available memory for the cache blocks. Try increasing "
        "`gpu_memory_utilization` when initializing the engine.",
        CARD_12G,
    )
    assert engine.key == "engine.load_oom"


@pytest.mark.parametrize(
    ("config", "weights", "card", "settings", "kv_budget", "max_fit", "fitting", "vllm_says"),
    [
        # The 12 GiB card at the 0.94 suggested above, with a max model length of 3,072 set:
        # ceil(12 GiB × 0.94) = 12,111,807,775 − 11 GiB = 300,647,711 bytes (0.28 GiB) = 2,293 tokens of
        # 131,072 bytes → 2,288 in 16-token blocks. 3,072 tokens need 402,653,184 more: 12,213,813,248
        # = 94.79 % → 0.95, just what is free. From vLLM's figures: 12,111,807,775 − 0.28 GiB + 0.38 GiB
        # = 12,219,181,958 = 94.83 % → 0.95 too.
        (
            LLAMA_8BIT,
            LLAMA_8BIT_BYTES,
            CARD_12G,
            EngineSettings(gpu_memory_utilization=0.94, max_model_len=3072),
            300_647_711,
            2288,
            0.95,
            kv_too_small(3072, "0.38", "0.28", 2288),
        ),
        # Qwen2.5-7B on 24 GiB at 0.7 with its full 32,768 tokens set: ceil(25,769,803,776 × 0.7)
        # = 18,038,862,644 − 15,231,233,024 − 2 GiB = 660,145,972 (0.61 GiB) = 11,512 tokens of 57,344 bytes
        # → 11,504. The full length needs 1,879,048,192 (1.75 GiB) more: 19,257,764,864 = 74.73 % → 0.75
        # (23.5 − 0.5 GiB free at vLLM's check allows up to 0.95). From vLLM's figures:
        # 18,038,862,644 − 0.61 GiB + 1.75 GiB = 19,262,928,447 = 74.75 % → 0.75.
        (
            QWEN25_7B,
            QWEN25_7B_BYTES,
            CARD_24G,
            EngineSettings(gpu_memory_utilization=0.7, max_model_len=32768),
            660_145_972,
            11_504,
            0.75,
            kv_too_small(32768, "1.75", "0.61", 11504),
        ),
    ],
    ids=["llama-9gib-on-12gib", "qwen2.5-7b-on-24gib"],
)
def test_a_length_that_does_not_fit_gets_the_same_numbers_from_all_three(
    config, weights, card, settings, kv_budget, max_fit, fitting, vllm_says
):
    shape = ModelShape.from_config(config)
    report = check_fit(shape, weights, Hardware(gpus=[card]), settings)
    assert report.verdict == "shorter" and report.kv_budget_bytes == kv_budget and report.max_fit_len == max_fit
    assert report.fitting_utilization == fitting
    # A length the user set is not shortened for them: the Models tab says vLLM will refuse it.
    assert "you set does not fit" in report.lines("en")[0] and str(fitting) in report.lines("en")[1]

    doctor = doctor_finding(card, weights, shape.kv_bytes_per_token, settings.gpu_memory_utilization)
    assert doctor.status is Status.WARNING and doctor.params["kv"] == gib(kv_budget)

    engine = engine_hint(settings, vllm_says, card)
    assert engine.key == "engine.load_oom_len_raise"
    assert int(engine.params["fits"]) == max_fit and engine.params["util_fits"] == fitting
    assert str(max_fit) in engine.message("en") and str(fitting) in engine.message("zh-CN")


def test_a_busy_24_gib_card_gets_the_same_utilization_that_starts():
    # 4 GiB used by other programs: 20 GiB free, 19.5 GiB once vLLM has its CUDA context, < 21.6 GiB.
    # 19.5 / 24 = 0.8125 → 0.81 (vLLM's own message rounds the free memory to 0.01 GiB).
    busy = dataclasses.replace(CARD_24G, memory_used=4 * GIB)
    settings = EngineSettings(gpu_memory_utilization=0.9)
    report = check_fit(ModelShape.from_config(QWEN25_7B), QWEN25_7B_BYTES, Hardware(gpus=[busy]), settings)
    doctor = doctor_finding(busy, QWEN25_7B_BYTES, None, 0.9, check="gpu_free")
    engine = engine_hint(
        settings,
        "ValueError: Free memory on device cuda:0 (19.5/24.0 GiB) on startup is less than "
        "desired GPU memory utilization (0.9, 21.6 GiB). Decrease GPU memory utilization",
        busy,
    )
    assert report.recommended_utilization == doctor.params["suggest"] == engine.params["fits"] == 0.81
    assert engine.key == "engine.load_gpu_busy" and doctor.key == "gpu_busy"


def test_the_engine_on_the_cpu_does_not_suggest_a_utilization():
    engine = engine_hint(EngineSettings(max_model_len=512), kv_too_small(512, "0.0", "0.0", 256))
    assert engine.key == "engine.load_oom_len" and engine.params["fits"] == "256"


def test_block_rounding_and_budget_rounding_follow_vllm():
    assert memory.tokens_that_fit(131_072 * 2293, 131_072) == 2288
    assert memory.tokens_that_fit(-1, 131_072) == 0
    assert memory.kv_bytes_for(2049, 10) == 2064 * 10  # whole blocks of 16
    assert memory.vllm_budget(24 * GIB, 0.9) == 23_192_823_399  # ceil, as request_memory
    assert memory.weights_in_memory(1000, "float32", None) == 500
    assert memory.weights_in_memory(1000, "float32", "awq") == 1000


@pytest.mark.parametrize(
    ("non_kv", "kv", "free", "lowest", "highest"),
    [
        (GIB // 10, 0, 12 * GIB, 0.05, 0.99),  # clamped into the range EngineSettings accepts
        (12 * GIB, 1, 12 * GIB, None, 0.99),  # more than the whole card
        (GIB, 0, GIB // 100, 0.09, None),  # nothing free: no utilization starts
    ],
)
def test_utilization_that_fits_stays_in_range(non_kv, kv, free, lowest, highest):
    fit = memory.utilization_that_fits(non_kv, kv, 12 * GIB, free)
    assert (fit.lowest, fit.highest) == (lowest, highest)
    assert fit.usable is None or fit.usable == lowest


def test_tensor_parallel_gpus_are_bounded_by_the_smallest_and_fullest():
    gpus = memory.Gpus.of([Gpu(0, "A", 16 * GIB, GIB), Gpu(1, "A", 12 * GIB, 0), Gpu(2, "B", 8 * GIB, 0)], 2)
    assert (gpus.count, gpus.total_bytes, gpus.free_bytes, gpus.used_bytes) == (2, 12 * GIB, 12 * GIB, GIB)
    assert gpus.name == "2 × A"
    # Each GPU holds half the weights and its own 2 GiB reserve.
    plan = gpus.budget(0.9, 10 * GIB, 1024)
    assert plan.non_kv_bytes == 2 * (5 * GIB + memory.GPU_RUNTIME_RESERVE)
