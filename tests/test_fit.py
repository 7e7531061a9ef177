"""The "will it fit" arithmetic against real models' config.json, with numbers worked out by hand.

Configs are the published ones (the fields the arithmetic reads). Weight bytes are the
safetensors index totals: every tensor is bf16, so total_size = 2 × parameters:
  Qwen2.5-7B:   embed 152064×3584 twice (untied) + 28 layers × 233,057,792 + norm 3584 = 7,615,616,512 params
  Llama-3.1-8B: embed 128256×4096 twice + 32 × 218,112,000 + 4096                      = 8,030,261,248 params
  GLM-4-9B-hf:  embed 151552×4096 twice + 40 × 203,960,832 + 4096                      = 9,399,951,360 params
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from app.config.settings import EngineSettings
from app.errors import UserError
from app.hardware import Gpu, Hardware
from app.models.catalog import find_entry, load_catalog, repo_for_source
from app.models.fit import ModelShape, check_fit, format_bytes, weight_file_bytes

GIB = 2**30

QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
QWEN25_7B_BYTES = 15_231_233_024

LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
LLAMA31_8B_BYTES = 16_060_522_496

GLM4_9B_HF = {
    "architectures": ["GlmForCausalLM"],
    "model_type": "glm",
    "hidden_size": 4096,
    "intermediate_size": 13696,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "vocab_size": 151552,
    "max_position_embeddings": 131072,
    "partial_rotary_factor": 0.5,
    "torch_dtype": "bfloat16",
}
GLM4_9B_BYTES = 18_799_902_720

# An RTX 3090/4090: 24 GiB. vLLM's budget at 0.90 = ceil(25,769,803,776 × 0.9) = 23,192,823,399 bytes
# (vLLM's request_memory rounds up). The runtime reserve is app.models.memory's 2 GiB per GPU.
CARD_24G = Hardware(gpus=[Gpu(0, "NVIDIA GeForce RTX 4090", 24 * GIB, 300 * 2**20, "560.94")], ram_total=64 * GIB)
CARD_16G = Hardware(gpus=[Gpu(0, "NVIDIA GeForce RTX 4060 Ti", 16 * GIB, 300 * 2**20, "560.94")], ram_total=32 * GIB)
AT_090 = EngineSettings(gpu_memory_utilization=0.90)


def test_kv_cache_bytes_per_token_by_hand():
    # 2 (K and V) × layers × kv_heads × head_dim × 2 bytes (bf16)
    assert ModelShape.from_config(QWEN25_7B).kv_bytes_per_token == 2 * 28 * 4 * 128 * 2 == 57_344
    assert ModelShape.from_config(LLAMA31_8B).kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072  # 128 KiB
    assert ModelShape.from_config(GLM4_9B_HF).kv_bytes_per_token == 2 * 40 * 2 * 128 * 2 == 40_960
    # Qwen2.5 has no head_dim key: it is hidden_size / heads = 3584 / 28 = 128.
    assert ModelShape.from_config(QWEN25_7B).head_dim == 128
    # 8k tokens of Llama-3.1-8B context = exactly 1 GiB of KV cache.
    assert ModelShape.from_config(LLAMA31_8B).kv_bytes_per_token * 8192 == GIB


def test_weight_bytes_come_from_the_safetensors_index(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA31_8B))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": LLAMA31_8B_BYTES}, "weight_map": {}})
    )
    assert weight_file_bytes(tmp_path) == LLAMA31_8B_BYTES
    assert LLAMA31_8B_BYTES == 2 * 8_030_261_248


def test_weight_bytes_without_an_index_are_the_file_sizes(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 12345)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 999)  # a duplicate, not counted
    assert weight_file_bytes(tmp_path) == 12345


def test_qwen25_7b_fits_a_24gib_card_at_full_length():
    report = check_fit(ModelShape.from_config(QWEN25_7B), QWEN25_7B_BYTES, CARD_24G, AT_090)
    # KV budget = 23,192,823,399 − 15,231,233,024 (weights) − 2 GiB (runtime) = 5,814,106,727 bytes
    assert report.budget_bytes == 23_192_823_399
    assert report.kv_budget_bytes == 5_814_106_727
    # 5,814,106,727 // 57,344 = 101,389 tokens, rounded down to 16-token blocks = 101,376
    assert report.max_fit_len == 101_376
    assert report.verdict == "fits"
    assert report.recommended_max_len == 32768  # the model's own limit
    assert "✅" in report.lines("en")[0] and "32768" in report.lines("en")[0]


@pytest.mark.parametrize(
    ("config", "weights", "kv_budget", "max_fit"),
    [
        # 23,192,823,399 − 16,060,522,496 − 2,147,483,648 = 4,984,817,255
        # 4,984,817,255 // 131,072 = 38,031 → 38,016 in 16-token blocks.
        (LLAMA31_8B, LLAMA31_8B_BYTES, 4_984_817_255, 38_016),
        # 23,192,823,399 − 18,799,902,720 − 2,147,483,648 = 2,245,437,031
        # 2,245,437,031 // 40,960 = 54,820 → 54,816. Few KV heads (2) make long context cheap.
        (GLM4_9B_HF, GLM4_9B_BYTES, 2_245_437_031, 54_816),
    ],
    ids=["llama-3.1-8b", "glm-4-9b-chat-hf"],
)
def test_128k_models_on_24gib_need_a_shorter_max_length(config, weights, kv_budget, max_fit):
    report = check_fit(ModelShape.from_config(config), weights, CARD_24G, AT_090)
    assert report.kv_budget_bytes == kv_budget
    assert report.max_fit_len == max_fit
    # Their full 131,072 tokens do not fit; the largest power of two that does is recommended.
    assert report.verdict == "shorter" and report.asked_len == 131072
    assert report.recommended_max_len == 32768
    text = report.lines("en")[0]
    assert str(max_fit) in text and "131072" in text and "32768" in text


def test_a_max_length_the_user_chose_is_what_is_checked():
    report = check_fit(
        ModelShape.from_config(LLAMA31_8B), LLAMA31_8B_BYTES, CARD_24G, dataclasses.replace(AT_090, max_model_len=8192)
    )
    assert report.verdict == "fits" and report.recommended_max_len == 8192


def test_too_big_for_16gib_suggests_the_quantized_variant():
    # Budget ceil(16 GiB × 0.9) = 15,461,882,266 < 15,231,233,024 + 2 GiB: no room for any KV cache,
    # and even 0.99 (17,008,070,493) is short of weights + 2 GiB + 2048 tokens: no utilization to suggest.
    report = check_fit(
        ModelShape.from_config(QWEN25_7B),
        QWEN25_7B_BYTES,
        CARD_16G,
        AT_090,
        quantized_alternative="Qwen2.5 7B Instruct (AWQ 4-bit)",
    )
    assert report.verdict == "too_big" and not report.ok
    assert report.recommended_max_len is None
    lines = report.lines("en")
    assert lines[0].startswith("❌") and "AWQ" in lines[1]
    llama = check_fit(ModelShape.from_config(LLAMA31_8B), LLAMA31_8B_BYTES, CARD_16G, AT_090)
    assert llama.verdict == "too_big" and "smaller model" in llama.lines("en")[1]


def test_the_awq_variant_fits_where_the_full_model_does_not():
    awq = {**QWEN25_7B, "torch_dtype": "float16", "quantization_config": {"quant_method": "awq", "bits": 4}}
    report = check_fit(ModelShape.from_config(awq), 5_583_000_000, CARD_16G, AT_090)
    # 15,461,882,266 − 5,583,000,000 − 2,147,483,648 = 7,731,398,618 → 134,824 tokens → 134,816 in blocks
    assert report.max_fit_len == 134_816
    assert report.verdict == "fits"


def test_other_programs_on_the_gpu_are_reported_with_a_utilization_that_starts():
    busy = Hardware(gpus=[Gpu(0, "NVIDIA GeForce RTX 4090", 24 * GIB, 4 * GIB)], ram_total=64 * GIB)
    report = check_fit(ModelShape.from_config(QWEN25_7B), QWEN25_7B_BYTES, busy, AT_090)
    # 20 GiB free < 21.6 GiB budget: vLLM would refuse to start. Its own CUDA context (0.5 GiB) comes
    # out of the free memory before it checks: 19.5 / 24 = 0.8125 → 0.81.
    assert report.recommended_utilization == 0.81
    assert any("0.81" in line and "4.0 GiB" in line for line in report.lines("en"))


def test_two_gpus_with_tensor_parallel_share_the_model():
    two = Hardware(gpus=[Gpu(0, "RTX 4060 Ti", 16 * GIB, 0), Gpu(1, "RTX 4060 Ti", 16 * GIB, 0)])
    report = check_fit(
        ModelShape.from_config(LLAMA31_8B), LLAMA31_8B_BYTES, two, dataclasses.replace(AT_090, tensor_parallel_size=2)
    )
    # Budget 2 × 15,461,882,266 = 30,923,764,532; minus weights and 2 × 2 GiB → 10,568,274,740 → 80,629 → 80,624
    assert report.max_fit_len == 80_624
    assert report.verdict == "shorter" and report.recommended_max_len == 65536


def test_without_a_gpu_it_runs_on_cpu_and_says_how_slowly():
    cpu = Hardware(gpus=[], cpu_count=16, ram_total=32 * GIB, ram_available=28 * GIB)
    settings = EngineSettings(cpu_kv_cache_gib=4)
    report = check_fit(ModelShape.from_config(QWEN25_7B), QWEN25_7B_BYTES, cpu, settings)
    assert report.verdict == "cpu" and report.device == "cpu" and report.ok
    # Every token reads all 15.2 GB of weights at ~15 GB/s: about one token per second.
    assert report.cpu_tokens_per_second == pytest.approx(0.98, abs=0.01)
    assert "1.0 tokens per second" in report.lines("en")[0]
    assert "每秒 1.0 个 token" in report.lines("zh-CN")[0]
    # 4 GiB of KV cache / 57,344 bytes = 74,898 tokens, in the CPU backend's 128-token blocks
    # 74,880 → the full 32,768 fit.
    assert report.max_fit_len == 74_880 and report.recommended_max_len == 32768

    small = Hardware(gpus=[], ram_total=16 * GIB)
    assert check_fit(ModelShape.from_config(LLAMA31_8B), LLAMA31_8B_BYTES, small, settings).verdict == "cpu_too_big"


def test_on_cpu_the_verdict_shows_weights_kv_cache_and_both_context_lengths(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    cpu = Hardware(gpus=[], cpu_count=16, ram_total=32 * GIB, ram_available=28 * GIB)
    shape = ModelShape.from_config(QWEN25_7B)
    lines = check_fit(shape, QWEN25_7B_BYTES, cpu, EngineSettings(cpu_kv_cache_gib=4)).lines("en")
    # Weights 15,231,233,024 B = 14.2 GiB; 2 × 28 × 4 × 128 × 2 = 57,344 B = 56.0 KiB per token;
    # 4 GiB hold 74,880 tokens (128-token blocks); with the 2 GiB runtime 21,673,683,968 B = 20.2 GiB.
    assert (
        "In RAM: weights 14.2 GiB, KV cache 4.0 GiB (your setting in Settings → Engine; 56.0 KiB per token, "
        "room for 74,880 tokens) and the runtime: about 20.2 GiB of the 32.0 GiB this computer has." in lines[0]
    )
    assert lines[1] == "Context: its full 32,768 tokens."
    mine = check_fit(shape, QWEN25_7B_BYTES, cpu, EngineSettings(cpu_kv_cache_gib=4, max_model_len=2048))
    assert mine.lines("en")[1] == "Context: 2,048 of its 32,768 tokens (your max length)."
    assert mine.lines("zh-CN")[1] == "上下文：其 32,768 个 token 中的 2,048 个（你设置的最大长度）。"
    # The app's 4 GiB default, shown as such; 1 GiB holds 18,688 tokens: a load gets 16,384.
    assert (
        "KV cache 4.0 GiB (the default; change it in Settings → Engine;"
        in check_fit(shape, QWEN25_7B_BYTES, cpu, EngineSettings()).lines("en")[0]
    )
    small = check_fit(shape, QWEN25_7B_BYTES, cpu, EngineSettings(cpu_kv_cache_gib=1))
    assert (small.max_fit_len, small.recommended_max_len) == (18_688, 16_384)
    assert small.lines("en")[1] == "Context: 16,384 of its 32,768 tokens (what the KV cache holds)."


def test_float32_checkpoints_are_loaded_in_16_bits():
    fp32 = {**QWEN25_7B, "torch_dtype": "float32"}
    report = check_fit(ModelShape.from_config(fp32), 2 * QWEN25_7B_BYTES, CARD_24G, AT_090)
    assert report.weight_bytes == QWEN25_7B_BYTES


def test_messages_are_translated():
    report = check_fit(ModelShape.from_config(LLAMA31_8B), LLAMA31_8B_BYTES, CARD_24G, AT_090)
    zh = report.lines("zh-CN")[0]
    assert "最大模型长度" in zh and "32768" in zh


def test_an_unreadable_config_is_one_clear_error():
    with pytest.raises(UserError) as err:
        ModelShape.from_config({"model_type": "mystery"})
    assert err.value.key == "models.fit_unknown"
    assert "config.json" in err.value.message("en")


def test_format_bytes():
    assert format_bytes(1536 * 2**20) == "1.5 GiB"
    assert format_bytes(512) == "512 B"


def test_catalog_has_the_promised_models_with_complete_entries():
    catalog = load_catalog()
    keys = {e.key for e in catalog}
    for hf_id in (
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Qwen/Qwen2.5-1.5B-Instruct",
        "Qwen/Qwen2.5-3B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct-AWQ",
        "Qwen/Qwen3-0.6B",
        "THUDM/glm-4-9b-chat-hf",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "meta-llama/Llama-3.1-8B-Instruct",
    ):
        assert find_entry(catalog, hf_id) is not None, hf_id
    for entry in catalog:
        assert entry.modelscope and entry.license and entry.params_b > 0 and entry.size_gb > 0
        assert entry.max_len >= 2048
        assert entry.quantized is None or entry.quantized in keys
    assert find_entry(catalog, "meta-llama/Llama-3.1-8B-Instruct").gated
    assert not find_entry(catalog, "THUDM/glm-4-9b-chat-hf").trust_remote_code
    # bf16 download ≈ 2 bytes per parameter
    qwen7 = find_entry(catalog, "qwen2.5-7b-instruct")
    assert qwen7.size_gb == pytest.approx(2 * qwen7.params_b, rel=0.01)
    # The same model under its ModelScope id, either way round.
    assert (
        repo_for_source(catalog, "meta-llama/Llama-3.1-8B-Instruct", "modelscope")
        == "LLM-Research/Meta-Llama-3.1-8B-Instruct"
    )
    assert (
        repo_for_source(catalog, "llm-research/meta-llama-3.1-8b-instruct", "huggingface")
        == "meta-llama/Llama-3.1-8B-Instruct"
    )
    assert repo_for_source(catalog, "someone/unknown-model", "modelscope") == "someone/unknown-model"
