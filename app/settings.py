"""Typed settings: engine, sampling and app, with presets, validation and a file on disk.

Everything a user can change lives here as dataclasses with defaults. The file is
JSON under `platformdirs.user_config_dir("vllm-chat")`; history and logs go under
`user_data_dir`; models stay in the standard Hugging Face cache so other tools share them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from app.errors import SettingsError
from app.files import private_dir, tighten

APP_NAME = "vllm-chat"
DTYPES = ("auto", "bfloat16", "float16")
QUANTIZATIONS = (None, "awq", "gptq", "fp8", "bitsandbytes", "compressed-tensors")
# "dummy" gives random weights from config.json alone: a real model's shape and speed without
# its download, for benchmarks (the replies are noise).
LOAD_FORMATS = ("auto", "dummy")
DOWNLOAD_SOURCES = ("huggingface", "mirror", "modelscope")
AUTO = "auto"


@dataclass
class EngineSettings:
    """How the vLLM engine is built; changing any of these needs a reload."""

    dtype: str = "auto"
    gpu_memory_utilization: float = 0.90
    max_model_len: int | None = None
    quantization: str | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_chunked_prefill: bool | None = None
    # For this run only, never saved: a model's own code runs only when the user says so, for
    # that model (AppSettings.trusted_models) or with this run's --trust-remote-code.
    trust_remote_code: bool = False
    # CPU only: the KV cache in GiB. None leaves it to VLLM_CPU_KVCACHE_SPACE or our small default.
    cpu_kv_cache_gib: float | None = None
    # For this run only, never saved: a later start must not answer with random weights.
    load_format: str = "auto"
    # vLLM's tool-call and reasoning parsers for the API and the chat: "auto" picks them for the
    # model (its catalog entry, else its architecture where that is unambiguous), "" is none.
    tool_call_parser: str = AUTO
    reasoning_parser: str = AUTO

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise SettingsError("settings.bad_choice", name="dtype", value=self.dtype, choices=", ".join(DTYPES))
        _check_range("gpu_memory_utilization", self.gpu_memory_utilization, 0.05, 0.99)
        if self.max_model_len is not None and self.max_model_len < 16:
            raise SettingsError("settings.too_small", name="max_model_len", value=self.max_model_len, low=16)
        if self.quantization not in QUANTIZATIONS:
            raise SettingsError(
                "settings.bad_choice",
                name="quantization",
                value=self.quantization,
                choices=", ".join(q or "none" for q in QUANTIZATIONS),
            )
        if self.load_format not in LOAD_FORMATS:
            raise SettingsError(
                "settings.bad_choice", name="load_format", value=self.load_format, choices=", ".join(LOAD_FORMATS)
            )
        if self.tensor_parallel_size < 1:
            raise SettingsError(
                "settings.too_small", name="tensor_parallel_size", value=self.tensor_parallel_size, low=1
            )
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise SettingsError("settings.too_small", name="max_num_seqs", value=self.max_num_seqs, low=1)
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 16:
            raise SettingsError(
                "settings.too_small", name="max_num_batched_tokens", value=self.max_num_batched_tokens, low=16
            )
        if self.cpu_kv_cache_gib is not None and self.cpu_kv_cache_gib <= 0:
            raise SettingsError("settings.too_small", name="cpu_kv_cache_gib", value=self.cpu_kv_cache_gib, low=0.1)


@dataclass
class SamplingSettings:
    """How one reply is sampled; applies to the next message.

    A field left at None was never set by the user: it follows the model's generation_config,
    and where the model says nothing, the app's fallback (FALLBACK_SAMPLING). A field the user
    set is sent whatever its value, even if it equals a default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # 0 = off, as the UI shows it; vLLM's "off" is also 0 or -1
    min_p: float | None = None
    max_tokens: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    ignore_eos: bool | None = None

    def validate(self) -> None:
        _check_range("temperature", self.temperature, 0.0, 2.0)
        if self.top_p is not None and (not (0.0 < self.top_p <= 1.0) or math.isnan(self.top_p)):
            raise SettingsError("settings.top_p", value=self.top_p)
        if self.top_k is not None and self.top_k < -1:
            raise SettingsError("settings.too_small", name="top_k", value=self.top_k, low=0)
        _check_range("min_p", self.min_p, 0.0, 1.0)
        if self.max_tokens is not None and self.max_tokens < 1:
            raise SettingsError("settings.too_small", name="max_tokens", value=self.max_tokens, low=1)
        if self.repetition_penalty is not None and not (0.0 < self.repetition_penalty <= 2.0):
            raise SettingsError(
                "settings.out_of_range",
                name="repetition_penalty",
                value=self.repetition_penalty,
                low="0 (excluded)",
                high=2.0,
            )
        _check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        if self.seed is not None and self.seed < 0:
            raise SettingsError("settings.too_small", name="seed", value=self.seed, low=0)
        if any(not isinstance(s, str) or not s for s in self.stop or ()):
            raise SettingsError("settings.stop")

    def chosen(self) -> dict[str, Any]:
        """The fields that were set, and only those."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def filled(self, *layers: Mapping[str, Any]) -> SamplingSettings:
        """Every field concrete: the fallbacks, then each layer (e.g. the model's defaults), then
        what this object sets. Validated."""
        values: dict[str, Any] = dict(FALLBACK_SAMPLING)
        for layer in layers:
            values.update({k: v for k, v in layer.items() if k in values and v is not None})
        values.update(self.chosen())
        sampling = SamplingSettings(**values)
        sampling.validate()
        return sampling

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SamplingSettings:
        """Build from loose input (UI or JSON), ignoring unknown keys and coercing types."""
        return _from_dict(cls, values)


# Where neither the user nor the model says: the values a chat app is expected to use.
FALLBACK_SAMPLING: dict[str, Any] = {
    "temperature": 0.7,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "max_tokens": 1024,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "seed": None,
    "stop": [],
    "ignore_eos": False,
}


# The presets from the vLLM deployment guide our users follow; each changes only what it names.
PRESETS: dict[str, dict[str, Any]] = {
    "balanced": {},
    "high_throughput": {
        "gpu_memory_utilization": 0.95,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 8192,
        "enable_chunked_prefill": True,
    },
    "low_latency": {"max_num_seqs": 1, "enable_chunked_prefill": False},
    "memory_saver": {"gpu_memory_utilization": 0.70, "max_model_len": 4096, "dtype": "float16", "max_num_seqs": 16},
}


def apply_preset(name: str, base: EngineSettings | None = None) -> EngineSettings:
    """The engine settings of a preset; fields the presets touch are reset to defaults first."""
    if name not in PRESETS:
        raise SettingsError("settings.bad_choice", name="preset", value=name, choices=", ".join(PRESETS))
    touched = {key for preset in PRESETS.values() for key in preset}
    defaults = EngineSettings()
    settings = dataclasses.replace(base or defaults, **{key: getattr(defaults, key) for key in touched})
    return dataclasses.replace(settings, **PRESETS[name])


@dataclass
class AppSettings:
    """Everything saved between runs."""

    model: str | None = None
    preset: str = "balanced"
    engine: EngineSettings = field(default_factory=EngineSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    system_prompt: str = ""
    # Downloads: "huggingface", "mirror" or "modelscope"; the token goes to a mirror only if allowed.
    download_source: str = "huggingface"
    mirror_endpoint: str = "https://hf-mirror.com"
    send_token_to_mirror: bool = False
    # Models whose own Python code the user agreed to run, asked per model in the page.
    trusted_models: list[str] = field(default_factory=list)
    # The largest file (or picture) a message may carry, in MB: bigger ones are refused unread.
    max_attachment_mb: float = 50.0
    # /v1: a max_tokens longer than the model's context is lowered to fit instead of refused
    # (`vllm serve` refuses it), for agents that ask a fixed 32,000 whatever the model.
    api_fit_max_tokens: bool = False

    def validate(self) -> None:
        self.engine.validate()
        self.sampling.validate()
        _check_range("max_attachment_mb", self.max_attachment_mb, 0.01, 1024.0)
        if self.preset not in PRESETS:
            raise SettingsError("settings.bad_choice", name="preset", value=self.preset, choices=", ".join(PRESETS))
        if self.download_source not in DOWNLOAD_SOURCES:
            raise SettingsError("settings.bad_choice", name="download_source", value=self.download_source,
                                choices=", ".join(DOWNLOAD_SOURCES))
        if not is_web_url(self.mirror_endpoint):
            raise SettingsError("settings.bad_url", name="mirror_endpoint", value=self.mirror_endpoint)
        if any(not isinstance(m, str) or not m for m in self.trusted_models):
            raise SettingsError("settings.bad_choice", name="trusted_models", value=self.trusted_models,
                                choices="model ids")

    def trusts(self, model: str) -> bool:
        return model in self.trusted_models


def is_web_url(value: str) -> bool:
    parts = urlsplit(value.strip()) if isinstance(value, str) else None
    return bool(parts and parts.scheme in ("http", "https") and parts.hostname)


@dataclass(frozen=True)
class AppPaths:
    """Where the app keeps its files. `VLLM_CHAT_HOME` puts all of them under one folder (tests, portable use)."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path
    # The Hugging Face cache models are downloaded to; None is huggingface_hub's own (HF_HUB_CACHE,
    # HF_HOME, default), shared with other programs as users expect.
    hf_cache: Path | None = None

    @classmethod
    def default(cls) -> AppPaths:
        home = os.environ.get("VLLM_CHAT_HOME")
        if home:
            root = Path(home)
            return cls(root / "config", root / "data", root / "cache", root / "logs")
        return cls(
            Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
        )

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def history_db(self) -> Path:
        return self.data_dir / "history.sqlite3"

    def create(self) -> None:
        """The app's folders, private (0700), with what an older version left in them made 0600."""
        for path in (self.config_dir, self.data_dir, self.cache_dir, self.log_dir):
            private_dir(path)
            tighten(path)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it (HF_HUB_CACHE, HF_HOME, default)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _check_range(name: str, value: float | None, low: float, high: float) -> None:
    """None is "not set" and always valid; NaN never is."""
    if value is None:
        return
    if math.isnan(value) or not (low <= value <= high):
        raise SettingsError("settings.out_of_range", name=name, value=value, low=low, high=high)


def _from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    """Coerce loose values (strings from forms, floats for ints) to a dataclass's field types."""
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        default = getattr(defaults, f.name)
        kwargs[f.name] = _coerce(f.name, value, default, str(f.type))
    return cls(**kwargs)


def _coerce(name: str, value: Any, default: Any, type_name: str) -> Any:
    if value is None or value == "":
        return None if "None" in type_name else default
    try:
        if isinstance(default, bool) or type_name.startswith("bool"):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if type_name.startswith("int"):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if type_name.startswith("float"):
            return float(value)
        if type_name.startswith("list"):
            if isinstance(value, str):
                # One stop string per line: commas are common inside stop strings.
                return [s for s in value.splitlines() if s.strip()]
            return [str(v) for v in value]
        return value
    except (TypeError, ValueError):
        raise SettingsError("settings.not_a_number", name=name, value=value) from None
