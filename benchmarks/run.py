"""The one command: `python -m benchmarks.run --quick` (CPU, the tiny test model, a few minutes)
or `python -m benchmarks.run --model DIR` (any local model folder). See benchmarks/README.md.

One run, one model, one machine: cold starts first (bare engine, the app, `vllm serve`), then
the same workload through the four paths at every concurrency, the order of the paths
reversed every other repetition so that drift on a busy machine cancels; then vLLM's own
load generator on paths 2 and 4, the chat tab's bytes per update, and a model switch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.processes import ROOT

MODES: dict[str, dict[str, Any]] = {
    "quick": dict(concurrency="1,4,16", prompt_tokens=32, output_tokens=128, requests_per_client=4, repetitions=3,
                  long_reply=2000, max_model_len=2048),
    "full": dict(concurrency="1,4,16,64", prompt_tokens=256, output_tokens=256, requests_per_client=4,
                 repetitions=3, long_reply=2000, max_model_len=4096),
}
# On a GPU the three engines (this process, the app, `vllm serve`) share it, as long as they run side by side.
SHARED_GPU_UTILIZATION = 0.28


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized: the tiny test model, built in the results folder")
    p.add_argument("--model", help="a local model folder (full mode)")
    p.add_argument("--switch-model", help="model B of the switch measurement (default: a tiny Llama with --quick, "
                                          "else --model again)")
    p.add_argument("--load-format", default="auto", choices=("auto", "dummy"),
                   help="dummy: random weights from config.json alone (real shapes on a GPU, no download)")
    p.add_argument("--concurrency", help="comma-separated levels (quick 1,4,16; full 1,4,16,64)")
    p.add_argument("--prompt-tokens", type=int)
    p.add_argument("--output-tokens", type=int)
    p.add_argument("--requests-per-client", type=int, help="requests measured per concurrent client and level")
    p.add_argument("--repetitions", type=int)
    p.add_argument("--long-reply", type=int, help="tokens of the reply whose UI updates are weighed")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--gpu-memory-utilization", type=float,
                   help=f"per engine (default {SHARED_GPU_UTILIZATION}: three engines share one GPU)")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (always so on CPU)")
    p.add_argument("--cpu-kv-cache-gib", type=int, default=1, help="KV cache of each engine on CPU")
    p.add_argument("--bandwidth-gbs", type=float, help="memory bandwidth (GB/s) when NVML cannot tell")
    p.add_argument("--no-second-opinion", action="store_true", help="skip vllm.benchmarks on paths 2 and 4")
    p.add_argument("--no-pin", action="store_true",
                   help="on CPU, let the engines and the frontends share every core (default: apart, as on a GPU)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<time>-<mode>)")
    args = p.parse_args(argv)
    if not args.quick and not args.model:
        p.error("give --model DIR (a local model folder), or --quick for the tiny CPU model")
    mode = MODES["quick" if args.quick else "full"]
    for name, default in mode.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.concurrency = tuple(int(c) for c in str(args.concurrency).split(","))
    if args.prompt_tokens + max(args.output_tokens, args.long_reply) + 16 > args.max_model_len:
        p.error("--max-model-len must hold the prompt and the longest reply (--output-tokens, --long-reply)")
    args.out = args.out or ROOT / "benchmarks" / "results" / f"{datetime.now():%Y%m%d-%H%M%S}-{mode_name(args)}"
    return args


def mode_name(args: argparse.Namespace) -> str:
    return "quick" if args.quick else "full"


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def models(args: argparse.Namespace) -> tuple[str, str]:
    """Model A (benchmarked) and model B (switched to)."""
    if args.quick and not args.model:
        from tests.tiny_model import build_tiny_model

        folder = args.out / "models"
        a = build_tiny_model(folder / "tiny-qwen2")
        b = args.switch_model or build_tiny_model(folder / "tiny-llama", arch="llama")
        return str(a), str(b)
    return str(Path(args.model).resolve()), args.switch_model or str(Path(args.model).resolve())


async def measure(path: Any, prompts: Any, concurrency: int, requests: int) -> dict[str, Any]:
    """Warm up with one request per client (not counted), then the measured requests."""
    from benchmarks.report import level_stats
    from benchmarks.workload import closed_loop

    await settle()
    frontend = psutil.Process(path.frontend_pid)
    client = psutil.Process()
    engine = engine_processes(path)
    await path.prepare(prompts.batch(concurrency))
    await closed_loop(path.send, concurrency, concurrency)
    await path.prepare(prompts.batch(requests))
    before = [cpu_seconds(frontend), cpu_seconds(client), sum(map(cpu_seconds, engine))]
    run = await closed_loop(path.send, concurrency, requests)
    run.frontend_cpu_s = cpu_seconds(frontend) - before[0]
    # Path 1 is served by this process itself: its CPU is the frontend's, there is no other client.
    run.client_cpu_s = 0.0 if client.pid == frontend.pid else cpu_seconds(client) - before[1]
    run.engine_cpu_s = sum(map(cpu_seconds, engine)) - before[2]
    return level_stats(run)


def engine_processes(path: Any) -> list[psutil.Process]:
    """The vLLM engine processes (EngineCore, workers) behind a path: its server's children, or for
    path 1 those of the engine in this process."""
    if path.frontend_pid == os.getpid():
        return [psutil.Process(pid) for pid in path.engine_pids]
    return psutil.Process(path.frontend_pid).children(recursive=True)


async def settle(idle_cores: float = 0.1, window_s: float = 0.25, timeout_s: float = 10.0) -> None:
    """Wait until every process this run started is idle. vLLM's engine processes keep spinning on
    their shared-memory queues for a second after their last step: the path measured next would
    share the CPU with the engine of the path measured before it."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        before = _children_cpu_seconds()
        await asyncio.sleep(window_s)
        if _children_cpu_seconds() - before < idle_cores * window_s:
            return


def _children_cpu_seconds() -> float:
    return sum(map(cpu_seconds, psutil.Process().children(recursive=True)))


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # The app started below and the one served in this process keep their settings and
    # history in the results folder, not in the user's.
    os.environ["VLLM_CHAT_HOME"] = str(args.out / "home")
    # vLLM lets this legacy variable override the app's own KV cache setting.
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logs = args.out / "logs"

    from transformers import AutoTokenizer

    from app.config.file import save_settings
    from app.config.settings import AppPaths, AppSettings, SamplingSettings
    from app.engine import Engine
    from app.engine.build import on_cpu
    from app.hardware import detect
    from benchmarks import report
    from benchmarks.bandwidth import decode_vs_bandwidth, gpu_bandwidth
    from benchmarks.lifecycle import memory_now, switch_cost
    from benchmarks.paths import PATH_KEYS, EnginePath, GradioPath, OpenAIPath
    from benchmarks.processes import (
        EngineConfig,
        bare_engine_start,
        pin_apart,
        set_affinity,
        start_app,
        start_vllm_serve,
    )
    from benchmarks.second_opinion import vllm_bench
    from benchmarks.ui_stream import ui_stream_cost
    from benchmarks.workload import Prompts, Workload, rendered_length

    model_a, model_b = models(args)
    cpu = on_cpu()
    workload = Workload(args.prompt_tokens, args.output_tokens, args.concurrency, args.requests_per_client,
                        args.repetitions)
    config = EngineConfig(
        model=model_a,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization or (0.9 if cpu else SHARED_GPU_UTILIZATION),
        enforce_eager=args.enforce_eager,
        on_cpu=cpu,
        cpu_kv_cache_gib=args.cpu_kv_cache_gib,
        load_format=args.load_format,
    )
    settings = config.engine_settings()
    # Path 3 cannot pass sampling per request: the UI uses the saved settings, so save ours.
    save_settings(AppSettings(engine=settings, sampling=SamplingSettings(
        temperature=workload.temperature, max_tokens=workload.output_tokens, ignore_eos=True)), AppPaths.default())
    tokenizer = AutoTokenizer.from_pretrained(model_a)
    prompts = Prompts(tokenizer, workload.prompt_tokens)
    hardware = detect()
    result: dict[str, Any] = {"meta": {
        "mode": mode_name(args),
        "model": config.name,
        "model_path": model_a,
        "device": f"CPU ({hardware.cpu_count} cores)" if cpu else hardware.gpus[0].name,
        "started": datetime.now().isoformat(timespec="seconds"),
        "vllm_version": _version("vllm-cpu" if cpu else "vllm"),
        "workload": dataclasses.asdict(workload),
        "prompt_tokens_rendered": rendered_length(tokenizer, [{"role": "user", "content": f"000000 {prompts.filler}"}]),
        "engine": dataclasses.asdict(config),
        "machine": {"cpu_count": hardware.cpu_count, "ram_total_gib": hardware.ram_total / 2**30,
                    "load_average": os.getloadavg(), "gpus": [g.name for g in hardware.gpus]},
    }}
    before_first_load = memory_now()
    all_cpus = os.sched_getaffinity(0)

    async with contextlib.AsyncExitStack() as stack:
        if not config.on_cpu and not config.enforce_eager:
            progress("warming vLLM's compile cache (one bare start, not counted)")
            await bare_engine_start(config, logs / "bare-engine-warmup.log")
        progress("cold start: bare AsyncLLM")
        bare_s = await bare_engine_start(config, logs / "bare-engine.log")
        progress(f"cold start: the app (bare took {bare_s:.1f} s)")
        app, app_url, app_s = await start_app(config, logs / "app.log")
        stack.callback(app.stop)
        progress(f"cold start: vllm serve (the app took {app_s:.1f} s)")
        server, vllm_url, vllm_s = await start_vllm_serve(config, logs / "vllm-serve.log")
        stack.callback(server.stop)
        progress(f"path 1 engine in this process (vllm serve took {vllm_s:.1f} s)")
        engine = Engine()
        started = time.perf_counter()
        await engine.load(model_a, settings)
        engine_load_s = time.perf_counter() - started
        stack.push_async_callback(engine.unload)
        result["cold_start"] = {"bare_s": bare_s, "app_s": app_s, "app_minus_bare_s": app_s - bare_s,
                                "vllm_serve_s": vllm_s, "engine_load_s": engine_load_s}

        ui = GradioPath(app_url, app.proc.pid, workload.output_tokens)
        await ui.chat.connect()
        paths = {
            "engine": EnginePath(engine.vllm, engine.child_pids(), workload.output_tokens, workload.temperature),
            "api": OpenAIPath("api", app_url, app.proc.pid, config.name, workload.output_tokens,
                              workload.temperature),
            "ui": ui,
            "vllm_serve": OpenAIPath("vllm_serve", vllm_url, server.proc.pid, config.name,
                                     workload.output_tokens, workload.temperature),
        }
        for path in paths.values():
            stack.push_async_callback(path.close)
        if cpu and not args.no_pin:
            engines = {p.pid for path in paths.values() for p in engine_processes(path)}
            result["meta"]["cpu_pinning"] = pin_apart(sorted(engines), [os.getpid(), app.proc.pid, server.proc.pid])

        reps: dict[str, dict[int, list]] = {key: {c: [] for c in workload.concurrency} for key in PATH_KEYS}
        order = []
        for rep in range(workload.repetitions):
            keys = list(PATH_KEYS) if rep % 2 == 0 else list(reversed(PATH_KEYS))
            order.append(keys)
            for c in workload.concurrency:
                for key in keys:
                    stats = await measure(paths[key], prompts, c, workload.requests(c))
                    reps[key][c].append(stats)
                    progress(f"rep {rep + 1}/{workload.repetitions} concurrency {c:>3} {key:<10} "
                             f"{stats['output_tps']:8.1f} tok/s  TTFT p50 {stats['ttft_median_ms'] or 0:7.1f} ms"
                             + (f"  {stats['errors']} errors: {stats['first_error']}" if stats["errors"] else ""))
        await ui.check_reply_length()
        result["meta"]["order"] = order
        result["paths"] = {key: {"levels": {str(c): report.combine(reps[key][c]) for c in workload.concurrency}}
                           for key in PATH_KEYS}

        if not args.no_second_opinion:
            result["second_opinion"] = {}
            for key, url in (("api", app_url), ("vllm_serve", vllm_url)):
                levels = {}
                for c in workload.concurrency:
                    progress(f"vllm.benchmarks on {key} at concurrency {c}")
                    levels[str(c)] = await vllm_bench(url, config.name, tokenizer,
                                                      prompts.batch(workload.requests(c)), workload.prompt_tokens,
                                                      workload.output_tokens, c, workload.temperature)
                result["second_opinion"][key] = levels

        progress(f"UI bytes per update over a {args.long_reply}-token reply")
        result["ui_stream"] = await ui_stream_cost(engine, args.out / "ui-stream-home", args.long_reply,
                                                   workload.temperature)
        # The switch is measured alone: the other engines are stopped first, and nothing
        # but the Engine holds on to the AsyncLLM.
        for path in paths.values():
            await path.close()
        await asyncio.gather(asyncio.to_thread(app.stop), asyncio.to_thread(server.stop))
        # Model B's engine processes inherit this process's cores: all of them again.
        set_affinity(os.getpid(), all_cpus, keep_narrower=False)
        progress(f"switch: unload {config.name}, load {Path(model_b).name}")
        result["switch"] = await switch_cost(engine, model_b, settings, before_first_load)

    bandwidth = args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else (None if cpu else gpu_bandwidth())
    single = result["paths"]["engine"]["levels"].get("1", {}).get("median", {}).get("tpot_median_ms")
    if bandwidth and single:
        context = result["meta"]["prompt_tokens_rendered"] + workload.output_tokens // 2
        result["decode_vs_bandwidth"] = decode_vs_bandwidth(model_a, bandwidth, single, context)
    result["ratios"] = report.ratios(result["paths"])
    result["targets"] = report.targets(result)
    # How busy the machine was says how far the timings can be trusted.
    result["meta"]["machine"]["load_average_end"] = os.getloadavg()
    return result


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    from benchmarks import report

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    progress(f"results go to {args.out}")
    result = asyncio.run(run(args))
    json_path, png_path = report.write(result, args.out)
    print(report.table(result))
    print(f"\n{json_path}\n{png_path}")
    return 0


# vLLM starts its engine processes with "spawn" on CPU: the entry module must be import-safe.
if __name__ == "__main__":
    sys.exit(main())
