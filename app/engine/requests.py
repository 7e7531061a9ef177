"""What one request asks of vLLM: the sampling parameters from the app's settings and the
chat's options, the model's own defaults as settings, and a rendered prompt's token ids."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from app.config.settings import SamplingSettings
from app.engine.types import ChatOptions


def model_defaults_as_settings(defaults: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(SamplingSettings)}
    return {k: v for k, v in defaults.items() if k in names and k != "max_tokens"}


def sampling_params(sampling: SamplingSettings, max_tokens: int, output_kind: Any, options: ChatOptions) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    return SamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else 0,
        min_p=sampling.min_p,
        max_tokens=max_tokens,
        repetition_penalty=sampling.repetition_penalty,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        seed=sampling.seed,
        stop=list(sampling.stop) or None,
        ignore_eos=sampling.ignore_eos,
        output_kind=output_kind,
        structured_outputs=StructuredOutputsParams(json=options.json_schema) if options.json_schema else None,
        skip_special_tokens=options.skip_special_tokens,
        thinking_token_budget=options.thinking_budget,
    )


def prompt_token_ids(engine_input: Any) -> list[int]:
    if isinstance(engine_input, Mapping):
        ids = engine_input.get("prompt_token_ids")
        if ids is None and "prompt" in engine_input:
            ids = (
                engine_input["prompt"].get("prompt_token_ids") if isinstance(engine_input["prompt"], Mapping) else None
            )
        return list(ids or [])
    return list(getattr(engine_input, "prompt_token_ids", None) or [])


def spec_figures(completion: Any) -> dict[str, float]:
    """A finished reply's speculative decoding figures (vLLM's per-request summary), if it ran."""
    metrics = getattr(completion, "spec_decode_metrics", None)
    if metrics is None:
        return {}
    summary = metrics.to_dict()
    if not summary["num_spec_steps"]:
        return {}
    return {
        "spec_tokens_per_step": summary["mean_acceptance_length"],
        "spec_acceptance": summary["draft_acceptance_rate"],
    }
