"""What a tool round costs on top of the tool's own time and the model's own work.

One turn: the model is made to call `echo` (vLLM's forced tool choice, a tool that takes no time
of its own), the call is always allowed, the result goes back and the model answers. Timed from
the last token of the first round to the first token of the next, less that request's own time to
first token (the model reading its prompt): what remains is the host's work, reading the call
(vLLM's parser), checking its arguments, the approval check, the MCP round trip to the server
(stdio), fitting the result and rendering the next prompt. Also the MCP call alone.

    .venv/bin/python -m benchmarks.tool_roundtrip                 # CPU: the tiny test model
    .venv/bin/python -m benchmarks.tool_roundtrip --model DIR     # any local model (GPU)

Results: printed, and written to benchmarks/results/<time>-tools/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app.config.settings import EngineSettings, SamplingSettings
from app.engine import Engine
from app.tools.host import ToolHost
from app.tools.loop import CallsStep, RoundEnd, TextStep, ToolLoop

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "fixtures" / "mcp_tools_server.py"


async def one_turn(loop: ToolLoop, sampling: SamplingSettings) -> dict[str, float]:
    marks: dict[str, float] = {}
    ttft_next = None
    async for step in loop.run([{"role": "user", "content": "Say a word"}], sampling):
        now = time.perf_counter()
        if isinstance(step, TextStep):
            if "round_end" in marks and ttft_next is None:
                marks["next_first_token"] = now
                ttft_next = step.delta.ttft or 0.0
            elif "round_end" not in marks:
                marks["generated"] = now
        elif isinstance(step, CallsStep):
            state = step.calls[0].state
            marks.setdefault(f"call_{state}", now)
        elif isinstance(step, RoundEnd):
            marks["round_end"] = now
    gap = marks["next_first_token"] - marks["generated"]
    return {
        "overhead_ms": (gap - (ttft_next or 0.0)) * 1000,
        "mcp_call_ms": (marks["call_done"] - marks["call_running"]) * 1000,
        "next_ttft_ms": (ttft_next or 0.0) * 1000,
    }


async def main(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tool-bench-"))
    model = args.model
    if model is None:
        sys.path.insert(0, str(ROOT))
        from tests.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "tiny"))
    engine = Engine()
    settings = EngineSettings(max_model_len=args.max_model_len, enforce_eager=True)
    if args.model is None:
        settings = EngineSettings(max_model_len=512, enforce_eager=True, cpu_kv_cache_gib=1)
    await engine.load(model, settings)
    host = ToolHost(work / "config")
    host.save_server({"name": "bench", "kind": "stdio", "command": sys.executable, "args": [str(SERVER)]})
    for tool in ("slow", "crash", "huge"):
        host.set_tool_enabled("bench", tool, False)
    host.allow_always("bench", "echo")
    await host.connect("bench")
    sampling = SamplingSettings(temperature=1.0, seed=3, max_tokens=args.max_tokens)
    runs = []
    try:
        for i in range(args.turns + 1):
            loop = ToolLoop(engine, host, "bench", "en", first_choice="required")
            result = await one_turn(loop, sampling)
            if i:  # the first turn warms up the schema compilation and the connection
                runs.append(result)
    finally:
        await host.close()
        await engine.unload()
    summary = {key: _stats([r[key] for r in runs]) for key in runs[0]}
    return {"model": engine.model_name or model, "turns": len(runs), "summary": summary, "runs": runs}


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 2),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
        "min": round(ordered[0], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model folder (default: the tiny test model)")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--max-model-len", type=int, default=4096)
    report = asyncio.run(main(parser.parse_args()))
    out = ROOT / "benchmarks" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-tools"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    for key, values in report["summary"].items():
        print(f"{key:>14}: median {values['median']:8.2f}  p90 {values['p90']:8.2f}  min {values['min']:8.2f}")
    print(f"results: {out / 'results.json'}")
