"""Building a vLLM engine: checking a model folder before anything starts and the engine
arguments from our settings (its processes: app.engine.processes)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from app.config.settings import EngineSettings
from app.config.speculative import resolve as resolve_speculative
from app.engine.fields import engine_arg_values
from app.engine.types import Capabilities
from app.errors import EngineError, UserError

log = logging.getLogger(__name__)

# On CPU, vLLM would otherwise reserve most of the RAM for the KV cache and refuse to start
# on a machine that is doing anything else.
DEFAULT_CPU_KV_CACHE_GIB = 4.0


# ---- helpers: engine arguments ------------------------------------------------------------


def _import_vllm() -> None:
    """vLLM keeps some import errors of optional packages (torchcodec, ...) for later, and with
    them the stack that first imported it: run from `load`, that would keep the first engine
    (a local there) alive after its unload. A worker thread's stack holds nothing of ours."""
    import vllm.engine.arg_utils
    import vllm.v1.engine.async_llm  # noqa: F401


def _build_llm(config: Any, args: Any) -> Any:
    """What AsyncLLM.from_engine_args does, from a config built beforehand."""
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_vllm_config(
        config, enable_log_requests=args.enable_log_requests, disable_log_stats=args.disable_log_stats
    )


def capabilities_of(llm: Any, settings: EngineSettings) -> Capabilities:
    """What a model started with `settings` can do, read from its built AsyncLLM."""
    mm_config = llm.model_config.multimodal_config
    template = getattr(llm.tokenizer, "chat_template", None)
    reasoning = llm.vllm_config.reasoning_config
    return Capabilities(
        tools=bool(settings.tool_call_parser),
        images=mm_config.get_limit_per_prompt("image") if mm_config is not None else 0,
        thinking_switch=isinstance(template, str) and "enable_thinking" in template,
        thinking_budget=bool(reasoning is not None and reasoning.enabled),
        sleep=bool(llm.model_config.enable_sleep_mode),
        speculative=getattr(llm.vllm_config.speculative_config, "method", None) or "",
    )


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def sleep_mode_available() -> bool:
    """Whether vLLM can put an engine to sleep here (CUDA/ROCm); never on the CPU build."""
    from vllm.platforms import current_platform

    return current_platform.is_sleep_mode_available()


def _device_type() -> str:
    return "cpu" if on_cpu() else "cuda"


def _engine_args(model: str, name: str, settings: EngineSettings) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = dict(
        model=model,
        served_model_name=[name],
        **engine_arg_values(settings),
        disable_log_stats=False,
        enable_log_requests=False,
        # No cache of processed pictures: vLLM's front-end copy of it assumes every rendered prompt
        # reached the engine, so a picture rendered once without being run fails the next request
        # that carries it (finish reason "error", "multimodal_cache_miss"). It would keep 4 GiB too.
        mm_processor_cache_gb=0,
    )
    speculative = resolve_speculative(settings.speculative_config, _model_config(model))
    if speculative is not None:
        kwargs["speculative_config"] = speculative
        # Each reply's own acceptance figures, for the line under it.
        kwargs["per_request_spec_decode_metrics"] = "summary"
    if sleep_mode_available():
        # Idle members of the engine pool sleep (weights to CPU RAM) instead of unloading.
        kwargs["enable_sleep_mode"] = True
    if on_cpu():
        # Inductor compilation takes minutes on CPU for no gain at chat sizes.
        kwargs["enforce_eager"] = True
        if settings.cpu_kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(settings.cpu_kv_cache_gib * 2**30)
        elif "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            kwargs["kv_cache_memory_bytes"] = int(DEFAULT_CPU_KV_CACHE_GIB * 2**30)
    return AsyncEngineArgs(**kwargs)


def _model_config(model: str) -> dict[str, Any]:
    """A local model folder's config.json ({} for a repo id vLLM fetches, or an unreadable one)."""
    try:
        config = json.loads((Path(model).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def without_speculation(args: Any) -> Any:
    """The same engine arguments without speculative decoding (the fallback when vLLM refuses it)."""
    return dataclasses.replace(args, speculative_config=None, per_request_spec_decode_metrics="none")


async def engine_config(args: Any) -> tuple[Any, UserError | None]:
    """vLLM's config for `args`; where vLLM refuses their speculative decoding (a method this
    build or model lacks), the config without it and the sentence that says so."""
    if args.speculative_config and on_cpu():
        # vLLM 0.32's CPU sampler fails on a sampled (top-k) reply at a step with no draft
        # (`k.max()` of an empty tensor in apply_top_k_only): the engine would die on the first
        # such chat. Greedy replies pass, but a chat app's replies are sampled.
        method = args.speculative_config.get("method", "?")
        notice = UserError("engine.speculative_cpu", method=method)
        return await asyncio.to_thread(without_speculation(args).create_engine_config), notice
    try:
        return await asyncio.to_thread(args.create_engine_config), None
    except Exception as exc:
        if not args.speculative_config:
            raise
        method = args.speculative_config.get("method", "?")
        log.warning("speculative decoding %s refused, loading without it: %s", method, exc)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        notice = UserError("engine.speculative_refused", method=method, reason=reason)
        return await asyncio.to_thread(without_speculation(args).create_engine_config), notice


def _display_name(model: str) -> str:
    path = Path(model).expanduser()
    if path.is_dir():
        # Cached snapshots look like models--org--name/snapshots/<hash>: show org/name.
        for parent in path.parents:
            if parent.name.startswith("models--"):
                return parent.name[len("models--") :].replace("--", "/")
        return path.name
    return model


_HF_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def looks_like_repo_id(model: str) -> bool:
    """Hugging Face ids are `name` or `org/name`; anything else is meant as a folder."""
    return not model.startswith((".", "~")) and bool(_HF_ID.match(model))


def _check_model_files(model: str, weights: bool = True) -> None:
    """Catch the common local-folder mistakes before vLLM turns them into a stack trace.
    `weights=False`: a config-only folder is enough (random weights of its shape)."""
    path = Path(model).expanduser()
    if not path.exists():
        if not looks_like_repo_id(model):
            raise EngineError("engine.model_missing", path=model)
        return  # a Hugging Face id: vLLM resolves it through the cache
    if not path.is_dir():
        raise EngineError("engine.model_not_folder", path=model)
    if not (path / "config.json").is_file():
        raise EngineError("engine.no_config", path=model)
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except ValueError:
        raise EngineError("engine.corrupt_files", path=model, file="config.json") from None
    if not weights:
        return
    files = list(path.glob("*.safetensors")) + list(path.glob("*.bin")) + list(path.glob("*.pt"))
    if not files:
        raise EngineError("engine.no_weights", path=model)
    for file in path.glob("*.safetensors"):
        if not _safetensors_header_ok(file):
            raise EngineError("engine.corrupt_files", path=model, file=file.name)


def _safetensors_header_ok(file: Path) -> bool:
    """A truncated or half-downloaded safetensors file fails this cheap header check."""
    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                return False
            header = json.loads(f.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return 8 + header_len + end <= size
    except (OSError, ValueError, KeyError, TypeError):
        return False


# ---- helpers: sampling --------------------------------------------------------------------
