"""Soak: many streaming clients against the app's /v1 for minutes, on the tiny model (or any
local model). Passes when no request failed, nothing is left running in the engine at the end,
and the app process's resident memory grew under 5% from the first minute to the last.

    .venv/bin/python -m benchmarks.soak                       # 64 clients, 5 minutes, tiny model
    .venv/bin/python -m benchmarks.soak --clients 16 --seconds 60 --model DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from app.engine.build import on_cpu
from benchmarks.processes import EngineConfig, start_app

SAMPLE_S = 5.0
# Past this, a request that has not finished counts as hung.
REQUEST_TIMEOUT_S = 120.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a local model folder (default: the tiny test model, built here)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=512)
    return p.parse_args(argv)


async def client_loop(http: httpx.AsyncClient, url: str, model: str, tokens: int, until: float,
                      tally: dict[str, int], failures: list[str], n: int) -> None:
    """One client: streamed chats back to back until `until`; each one counted ok or failed."""
    i = 0
    while time.monotonic() < until:
        i += 1
        body = {"model": model, "max_tokens": tokens, "ignore_eos": True, "stream": True,
                "messages": [{"role": "user", "content": f"{n}-{i}: tell me about the sea"}]}
        try:
            async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
                text = "".join([chunk async for chunk in reply.aiter_text()])
            done = reply.status_code == 200 and text.rstrip().endswith("data: [DONE]") and '"error"' not in text
            failure = f"{reply.status_code}: {text[-300:]}"
        except httpx.HTTPError as exc:
            done, failure = False, repr(exc)
        tally["ok" if done else "failed"] += 1
        if not done and len(failures) < 5:
            failures.append(failure)


def engine_counts(metrics_text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
            counts[family.name] = sum(s.value for s in family.samples)
    return counts


async def sample_memory(pid: int, until: float, samples: list[tuple[float, int]]) -> None:
    proc, start = psutil.Process(pid), time.monotonic()
    while time.monotonic() < until:
        samples.append((time.monotonic() - start, proc.memory_info().rss))
        await asyncio.sleep(SAMPLE_S)


def minute_means(samples: list[tuple[float, int]], seconds: float) -> tuple[float, float]:
    """Mean resident memory over the first and the last minute (or fifth, on a short run)."""
    window = min(60.0, seconds / 5)
    first = [rss for t, rss in samples if t <= window]
    last = [rss for t, rss in samples if t >= seconds - window]
    return sum(first) / len(first), sum(last) / len(last)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="vllm-chat-soak-"))
    if args.model:
        model = args.model
    else:
        from tests.tiny_model import build_tiny_model

        model = str(build_tiny_model(folder / "tiny-qwen2"))
    config = EngineConfig(model=model, max_model_len=args.max_model_len, gpu_memory_utilization=0.9,
                          enforce_eager=False, on_cpu=on_cpu())
    app, url, _ = await start_app(config, folder / "app.log")
    tally = {"ok": 0, "failed": 0}
    failures: list[str] = []
    samples: list[tuple[float, int]] = []
    try:
        until = time.monotonic() + args.seconds
        limits = httpx.Limits(max_connections=args.clients + 4)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
            await asyncio.gather(
                sample_memory(app.proc.pid, until, samples),
                *(client_loop(http, url, config.name, args.output_tokens, until, tally, failures, n)
                  for n in range(args.clients)),
            )
            await asyncio.sleep(1.0)
            left = engine_counts((await http.get(f"{url}/metrics")).text)
            health = (await http.get(f"{url}/healthz")).json()
    finally:
        app.stop()
    first, last = minute_means(samples, args.seconds)
    return {
        "clients": args.clients, "seconds": args.seconds,
        "requests_ok": tally["ok"], "requests_failed": tally["failed"], "first_failures": failures,
        "requests_per_s": round(tally["ok"] / args.seconds, 1), "left_in_engine": left, "health": health,
        "rss_first_mib": round(first / 2**20, 1), "rss_last_mib": round(last / 2**20, 1),
        "rss_growth_pct": round(100 * (last - first) / first, 2),
        "passed": tally["failed"] == 0 and not any(left.values()) and last < first * 1.05,
    }


def main(argv: list[str] | None = None) -> int:
    result = asyncio.run(run(parse_args(argv)))
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
