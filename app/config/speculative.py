"""The speculative decoding setting, as `vllm serve --speculative-config JSON` takes it, plus "auto": the
method that needs nothing more for the model being loaded (its own MTP layers where its config
declares them, else n-gram prompt lookup, which any model can use)."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import PydanticCustomError

AUTO = "auto"
OFF = "off"  # the page's choice for "" (no speculative decoding)
# What the page offers; any other vLLM method is accepted from the flag (vLLM checks it).
METHODS = ("auto", "ngram", "suffix", "mtp", "eagle3", "draft_model")
# Methods that run a second model, named by "model".
NEED_MODEL = frozenset({"eagle3", "eagle", "draft_model"})
DEFAULT_TOKENS = 3
MAX_TOKENS = 16
# n-gram prompt lookup: the longest n-gram of the prompt matched against the reply's tail.
PROMPT_LOOKUP_MAX = 4
# Config keys that count a model's MTP layers (DeepSeek-V3/R1, GLM-4.5, Qwen3-Next: the first;
# Qwen3.5: the second), where vLLM's SpeculativeConfig reads them.
MTP_LAYER_KEYS = ("num_nextn_predict_layers", "mtp_num_hidden_layers")


def parse(text: str) -> dict[str, Any] | None:
    """The JSON object of a `--speculative-config` value; None for "" (off). ValueError with
    what is wrong otherwise."""
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(config, dict) or not isinstance(config.get("method"), str) or not config["method"]:
        raise ValueError('not an object with a "method"')
    tokens = config.get("num_speculative_tokens", DEFAULT_TOKENS)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= MAX_TOKENS:
        raise ValueError(f"num_speculative_tokens must be 1-{MAX_TOKENS}")
    if config["method"] in NEED_MODEL and not config.get("model"):
        raise ValueError(f'{config["method"]} needs a "model"')
    return config


def speculative_json(value: str) -> str:
    """Pydantic's check of the setting (app.config.check gives the sentence)."""
    try:
        parse(value)
    except ValueError as exc:
        raise PydanticCustomError("speculative", str(exc)) from None
    return value


def has_mtp_layers(config: dict[str, Any]) -> bool:
    """Whether a model's config.json declares MTP layers (its own text config included)."""
    for part in (config, config.get("text_config") or {}):
        if any(isinstance(part.get(k), int) and part[k] > 0 for k in MTP_LAYER_KEYS):
            return True
    return False


def resolve(text: str, model_config: dict[str, Any]) -> dict[str, Any] | None:
    """vLLM's speculative_config for a model with `model_config` (its config.json): "auto"
    replaced by the method it picks, the number of tokens and n-gram's lookup filled in."""
    config = parse(text)
    if config is None:
        return None
    config = dict(config)
    if config["method"] == AUTO:
        config["method"] = "mtp" if has_mtp_layers(model_config) else "ngram"
    config.setdefault("num_speculative_tokens", DEFAULT_TOKENS)
    if config["method"] == "ngram":
        config.setdefault("prompt_lookup_max", PROMPT_LOOKUP_MAX)
    return config


def choices(text: str) -> tuple[str, int, str]:
    """(method or "off", number of tokens, draft model) of a valid setting, as the page shows them."""
    config = parse(text) or {}
    return config.get("method", OFF), config.get("num_speculative_tokens", DEFAULT_TOKENS), config.get("model", "")


def from_choices(previous: str, method: str, tokens: float | None, model: str = "") -> str:
    """The setting for the page's choices ("" for off); what else a `--speculative-config` set
    (n-gram's lookup sizes, ...) stays while its method does."""
    if not method or method == OFF:
        return ""
    try:
        kept = parse(previous) or {}
    except ValueError:
        kept = {}
    config: dict[str, Any] = kept if kept.get("method") == method else {}
    config |= {"method": method, "num_speculative_tokens": int(tokens or DEFAULT_TOKENS)}
    config.pop("model", None)
    if model and model.strip():
        config["model"] = model.strip()
    return json.dumps(config)
