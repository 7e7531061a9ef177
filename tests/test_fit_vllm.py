"""Our fit numbers against vLLM's own, for every catalog model, from the published config.json files
kept in tests/fixtures/configs (no weights, no network).

vLLM's `ModelConfig` reads each config as `vllm serve` would and gives the layer count, KV heads
and head size its attention layers are built with; its `FullAttentionSpec` is the page the KV
cache is allocated in. Our shipped weight bytes are checked against the tensors the config
describes: every parameter of the architecture, at the checkpoint's bytes per element.

The same arithmetic against the KV cache a real CPU engine allocates is checked end to end in
tests/test_model_browser_page.py (one engine start serves that and the "Download and load" page).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from app.models.architectures import supported_architectures
from app.models.catalog import CatalogEntry, load_catalog
from app.models.fit import ModelShape
from app.models.memory import BLOCK_TOKENS

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
CATALOG = load_catalog()
# Qwen3's two smallest checkpoints store lm_head beside the tied embeddings (their index lists it).
STORES_TIED_HEAD = {"Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B"}
# vLLM cannot inspect Qwen2.5-VL here (its image processor needs torchvision, which the CPU build
# leaves out); its language model is a Qwen2 one, which vLLM builds from the same config.
TEXT_ONLY_ARCH = {"Qwen2_5_VLForConditionalGeneration": "Qwen2ForCausalLM"}


def config_of(entry: CatalogEntry) -> dict:
    return json.loads((CONFIGS / entry.hf.replace("/", "--") / "config.json").read_text())


def test_every_catalog_model_has_its_published_config():
    missing = [e.hf for e in CATALOG if not (CONFIGS / e.hf.replace("/", "--") / "config.json").is_file()]
    assert missing == []
    wanted = {
        "Qwen/Qwen2.5-7B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "THUDM/glm-4-9b-chat-hf",
        "Qwen/Qwen3-8B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    }
    assert wanted <= {e.hf for e in CATALOG}
    assert {"awq", "fp8", "gptq"} <= {e.quantization for e in CATALOG}


@pytest.fixture(scope="module")
def vllm_configs() -> dict[str, object]:
    from vllm.config import ModelConfig

    configs = {}
    for entry in CATALOG:
        folder = CONFIGS / entry.hf.replace("/", "--")
        arch = TEXT_ONLY_ARCH.get(entry.architecture)
        overrides = {"hf_overrides": {"architectures": [arch]}} if arch else {}
        configs[entry.key] = ModelConfig(
            model=str(folder), tokenizer=str(folder), skip_tokenizer_init=True, **overrides
        )
    return configs


@pytest.mark.parametrize("entry", CATALOG, ids=[e.key for e in CATALOG])
def test_shape_and_kv_bytes_equal_vllms(entry: CatalogEntry, vllm_configs: dict):
    from vllm.config import ParallelConfig
    from vllm.utils.torch_utils import kv_cache_dtype_str_to_dtype
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    model_config = vllm_configs[entry.key]
    parallel = ParallelConfig()
    ours = ModelShape.from_entry(entry)
    assert ours == ModelShape.from_config(config_of(entry))  # the catalog ships what the config says
    assert model_config.architectures[0] == TEXT_ONLY_ARCH.get(entry.architecture, entry.architecture)
    assert ours.layers == model_config.get_num_layers(parallel)
    assert ours.kv_heads == model_config.get_num_kv_heads(parallel)
    assert ours.head_dim == model_config.get_head_size()
    assert ours.max_position_embeddings == model_config.max_model_len
    page = FullAttentionSpec(
        block_size=BLOCK_TOKENS,
        num_kv_heads=model_config.get_num_kv_heads(parallel),
        head_size=model_config.get_head_size(),
        dtype=kv_cache_dtype_str_to_dtype("auto", model_config),
    ).page_size_bytes
    assert ours.kv_bytes_per_token == page * model_config.get_num_layers(parallel) // BLOCK_TOKENS


@pytest.mark.parametrize("entry", CATALOG, ids=[e.key for e in CATALOG])
def test_weight_bytes_equal_the_tensors_of_the_config(entry: CatalogEntry):
    assert entry.weight_bytes == checkpoint_bytes(config_of(entry), stores_tied_head=entry.hf in STORES_TIED_HEAD)
    # The download holds the weights and a tokenizer of a few MB.
    assert 0 <= entry.download_bytes - entry.weight_bytes < 30e6


def test_supported_by_vllms_registry():
    from vllm.model_executor.models import ModelRegistry

    supported = set(ModelRegistry.get_supported_archs())
    assert {e.architecture for e in CATALOG} <= supported
    # What a download checks against, read from the registry's source without importing vLLM.
    assert supported_architectures() == supported


# ---- the tensors a config describes ------------------------------------------------------------


def checkpoint_bytes(config: dict, stores_tied_head: bool = False) -> int:
    """Bytes of every tensor of a Qwen2/Qwen3/Llama/GLM (+ Qwen2.5-VL vision) checkpoint."""
    h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or h // heads
    inter = config["intermediate_size"]
    bias = config.get("attention_bias", config["model_type"].startswith("qwen2"))
    linears = [(h, heads * hd), (h, kv * hd), (h, kv * hd), (heads * hd, h), (h, inter), (h, inter), (inter, h)]
    quant = config.get("quantization_config") or {}
    small = 2 * h + (heads * hd + 2 * kv * hd if bias else 0) + (2 * hd if config["model_type"] == "qwen3" else 0)
    per_layer = sum(_linear_bytes(i, o, quant) for i, o in linears) + small * 2
    embeddings = vocab * h * (1 if config["tie_word_embeddings"] and not stores_tied_head else 2)
    total = layers * per_layer + (embeddings + h) * 2
    if "vision_config" in config:
        total += _vision_params(config["vision_config"]) * 2
    return total


def _linear_bytes(inputs: int, outputs: int, quant: dict) -> int:
    method = quant.get("quant_method")
    if method in ("awq", "gptq"):
        # int4 packed in int32, zero points packed likewise, fp16 scales per group (GPTQ adds g_idx).
        groups = inputs // quant["group_size"]
        g_idx = inputs * 4 if method == "gptq" else 0
        return inputs * outputs // 2 + groups * outputs // 8 * 4 + groups * outputs * 2 + g_idx
    if method == "fp8":
        block_out, block_in = quant["weight_block_size"]
        return inputs * outputs + math.ceil(outputs / block_out) * math.ceil(inputs / block_in) * 4
    return inputs * outputs * 2


def _vision_params(vision: dict) -> int:
    h, inter = vision["hidden_size"], vision["intermediate_size"]
    block = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * (h * inter + inter) + (inter * h + h)
    patch = h * vision["in_chans"] * vision["temporal_patch_size"] * vision["patch_size"] ** 2
    merged = h * vision["spatial_merge_size"] ** 2
    merger = h + (merged * merged + merged) + (merged * vision["out_hidden_size"] + vision["out_hidden_size"])
    return vision["depth"] * block + patch + merger
