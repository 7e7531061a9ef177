"""Typed settings: engine, sampling and app, with presets, validation and a file on disk.

Everything a user can change lives here as dataclasses with defaults; each field carries its
bounds (pydantic's `Field`, `Literal`), checked by app.config.check. The file is
JSON under `platformdirs.user_config_dir("vllm-chat")`; history and logs go under
`user_data_dir`; models stay in the standard Hugging Face cache so other tools share them.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import AfterValidator, BeforeValidator, Field

from app.config.check import check, lines, parse, web_url
from app.config.speculative import speculative_json
from app.errors import SettingsError
from app.files import private_dir, tighten

APP_NAME = "vllm-chat"
Dtype = Literal["auto", "bfloat16", "float16"]
Quantization = Literal[None, "awq", "gptq", "fp8", "bitsandbytes", "compressed-tensors"]
# "dummy" gives random weights from config.json alone: a real model's shape and speed without
# its download, for benchmarks (the replies are noise).
LoadFormat = Literal["auto", "dummy"]
DownloadSource = Literal["huggingface", "mirror", "modelscope"]
Preset = Literal["balanced", "high_throughput", "low_latency", "memory_saver"]
DTYPES = typing.get_args(Dtype)
QUANTIZATIONS = typing.get_args(Quantization)
LOAD_FORMATS = typing.get_args(LoadFormat)
DOWNLOAD_SOURCES = typing.get_args(DownloadSource)
AUTO = "auto"


def _between(low: float, high: float) -> Any:
    return Field(ge=low, le=high, allow_inf_nan=False)


@dataclass
class EngineSettings:
    """How the vLLM engine is built; changing any of these needs a reload."""

    dtype: Dtype = "auto"
    gpu_memory_utilization: Annotated[float, _between(0.05, 0.99)] = 0.90
    max_model_len: Annotated[int | None, Field(ge=16)] = None
    quantization: Quantization = None
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    enforce_eager: bool = False
    max_num_seqs: Annotated[int | None, Field(ge=1)] = None
    max_num_batched_tokens: Annotated[int | None, Field(ge=16)] = None
    enable_chunked_prefill: bool | None = None
    # For this run only, never saved: a model's own code runs only when the user says so, for
    # that model (AppSettings.trusted_models) or with this run's --trust-remote-code.
    trust_remote_code: bool = False
    # CPU only: the KV cache in GiB. None leaves it to VLLM_CPU_KVCACHE_SPACE or our small default.
    cpu_kv_cache_gib: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    # For this run only, never saved: a later start must not answer with random weights.
    load_format: LoadFormat = "auto"
    # vLLM's tool-call and reasoning parsers for the API and the chat: "auto" picks them for the
    # model (its catalog entry, else its architecture where that is unambiguous), "" is none.
    tool_call_parser: str = AUTO
    reasoning_parser: str = AUTO
    # vLLM's speculative decoding, as `vllm serve --speculative-config` takes it (JSON; the method
    # "auto" picks one for the model); "" is off.
    speculative_config: Annotated[str, AfterValidator(speculative_json)] = ""

    def validate(self) -> None:
        check(self)


@dataclass
class SamplingSettings:
    """How one reply is sampled; applies to the next message.

    A field left at None was never set by the user: it follows the model's generation_config,
    and where the model says nothing, the app's fallback (FALLBACK_SAMPLING). A field the user
    set is sent whatever its value, even if it equals a default."""

    temperature: Annotated[float | None, _between(0.0, 2.0)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1, allow_inf_nan=False)] = None
    # 0 = off, as the UI shows it; vLLM's "off" is also 0 or -1.
    top_k: Annotated[int | None, Field(ge=-1)] = None
    min_p: Annotated[float | None, _between(0.0, 1.0)] = None
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    repetition_penalty: Annotated[float | None, Field(gt=0, le=2, allow_inf_nan=False)] = None
    presence_penalty: Annotated[float | None, _between(-2.0, 2.0)] = None
    frequency_penalty: Annotated[float | None, _between(-2.0, 2.0)] = None
    seed: Annotated[int | None, Field(ge=0)] = None
    stop: Annotated[list[Annotated[str, Field(min_length=1)]] | None, BeforeValidator(lines)] = None
    ignore_eos: bool | None = None

    def validate(self) -> None:
        check(self)

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
        return parse(cls, values)


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


# The highest "largest attachment" that can be set, in MB: the page takes uploads up to this size,
# so that the app's own refusal, with the limit set, is what a user sees for a file too big.
MAX_ATTACHMENT_MB = 1024.0


@dataclass
class AppSettings:
    """Everything saved between runs."""

    model: str | None = None
    preset: Preset = "balanced"
    engine: EngineSettings = field(default_factory=EngineSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    system_prompt: str = ""
    # Downloads: "huggingface", "mirror" or "modelscope"; the token goes to a mirror only if allowed.
    download_source: DownloadSource = "huggingface"
    mirror_endpoint: Annotated[str, AfterValidator(web_url)] = "https://hf-mirror.com"
    send_token_to_mirror: bool = False
    # Never contact Hugging Face, the mirror or ModelScope (as HF_HUB_OFFLINE=1 does): cached models still load.
    offline: bool = False
    # Models whose own Python code the user agreed to run, asked per model in the page.
    trusted_models: list[Annotated[str, Field(min_length=1)]] = field(default_factory=list)
    # The largest file (or picture) a message may carry, in MB: bigger ones are refused unread.
    max_attachment_mb: Annotated[float, _between(0.01, MAX_ATTACHMENT_MB)] = 50.0
    # /v1: a max_tokens longer than the model's context is lowered to fit instead of refused
    # (`vllm serve` refuses it), for agents that ask a fixed 32,000 whatever the model.
    api_fit_max_tokens: bool = False
    # The engine pool: the most models loaded at once (None or 0: as many as fit in memory), the
    # minutes after which a model nobody uses is unloaded (0: never; the chat's model and pinned
    # ones never are), and the models never unloaded to make room or for idleness.
    max_loaded_models: Annotated[int | None, Field(ge=0, le=64)] = None
    idle_unload_minutes: Annotated[float, _between(0.0, 7 * 24 * 60.0)] = 60.0
    pinned_models: list[Annotated[str, Field(min_length=1)]] = field(default_factory=list)

    def validate(self) -> None:
        check(self)

    def trusts(self, model: str) -> bool:
        return model in self.trusted_models


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
