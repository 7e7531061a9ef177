"""The benchmark harness end to end, in its smallest shape, so that it cannot rot unnoticed:
every path, every concurrency and every measurement must come out of `python -m benchmarks.run`.

The numbers themselves are not checked against targets: on a shared machine they say little.
The harness starts its own engines (a bare one, the app, `vllm serve`, its own path-1 engine,
a second model for the switch): cold start and switch cost are about starting and stopping
engines, which the shared session engine must not do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.paths import LABELS, PATH_KEYS
from benchmarks.processes import pin_apart
from benchmarks.report import METRICS

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--quick", "--concurrency", "1,2", "--prompt-tokens", "16", "--output-tokens", "8",
        "--requests-per-client", "1", "--repetitions", "1", "--long-reply", "64"]
LEVELS = ("1", "2")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.engine
@pytest.mark.timeout(1200)
def test_harness_reports_every_path_concurrency_and_measurement(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", *TINY, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1150)
    assert done.returncode == 0, done.stderr[-6000:]
    result = json.loads((out / "results.json").read_text(encoding="utf-8"))

    for key in PATH_KEYS:
        for c in LEVELS:
            level = result["paths"][key]["levels"][c]
            assert level["median"]["errors"] == 0, level["reps"][0]["first_error"]
            assert level["reps"][0]["output_tokens"] == int(c) * 8, (key, c)
            for metric in METRICS:
                # CPU times come in 10 ms ticks: a few 8-token replies may not reach one.
                least = 0 if "cpu" in metric else 1e-9
                assert level["median"][metric] >= least, (key, c, metric)
            # Path 1 is served by the benchmark's own process: there is no separate client.
            assert key != "engine" or level["median"]["client_cpu_ms_per_request"] == 0
    for comparison in ("api/engine", "ui/engine", "vllm_serve/engine", "api/vllm_serve"):
        assert set(result["ratios"][comparison]) == set(LEVELS)
        assert all(v["output_tps"] > 0 for v in result["ratios"][comparison].values())
    for key in ("api", "vllm_serve"):
        for c in LEVELS:
            second = result["second_opinion"][key][c]
            assert second["completed"] == int(c) and second["failed"] == 0, (key, c, second)
            assert second["output_throughput"] > 0 and second["median_ttft_ms"] > 0

    if result["meta"]["device"].startswith("CPU") and len(os.sched_getaffinity(0)) >= 2:
        pinning = result["meta"]["cpu_pinning"]
        assert pinning["engine"] and pinning["frontends"] and not set(pinning["engine"]) & set(pinning["frontends"])
    cold = result["cold_start"]
    assert min(cold["bare_s"], cold["app_s"], cold["vllm_serve_s"], cold["engine_load_s"]) > 0
    ui = result["ui_stream"]
    assert ui["reply_tokens"] == 64 and ui["updates"] > ui["updates_before_reply"] and ui["total_bytes"] > 0
    assert isinstance(ui["flat"], bool)
    switch = result["switch"]
    assert switch["model_b"] == "tiny-llama" and switch["unload_s"] > 0 and switch["load_s"] > 0
    assert switch["memory"]["loaded_b"]["rss_bytes"] > switch["memory"]["after_unload_b"]["rss_bytes"]
    assert {t["target"] for t in result["targets"]} >= {
        "path 2 / path 1 output tokens/s", "path 3 / path 1 output tokens/s", "path 2 / path 4 output tokens/s",
        "app cold start minus bare engine start, s"}
    assert all(t["value"] is not None for t in result["targets"])

    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for label in LABELS.values():
        assert label in done.stdout
    assert "targets:" in done.stdout


# A process that names itself as vLLM names its processes, binds itself where told, and waits.
NAMED_CHILD = """
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode())  # PR_SET_NAME
if sys.argv[2]:
    os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to set apart")
def test_cpu_engines_and_frontends_get_cores_of_their_own() -> None:
    """On CPU the harness gives the engines the cores vLLM bound their workers to, and the frontends
    the others, so that the engine's busy-waiting does not take the frontends' time."""
    cpus = sorted(os.sched_getaffinity(0))
    children = {}
    for name, bind in (("VLLM::Worker", str(cpus[0])), ("VLLM::EngineCor", ""), ("python", "")):
        children[name] = subprocess.Popen([sys.executable, "-c", NAMED_CHILD, name, bind], stdout=subprocess.PIPE)
    try:
        for child in children.values():
            assert child.stdout.readline().strip() == b"ready"
        worker, core, frontend = (c.pid for c in children.values())
        assert os.sched_getaffinity(core) == set(cpus)

        assert pin_apart([worker, core], [frontend]) == {"engine": cpus[:1], "frontends": cpus[1:]}
        assert os.sched_getaffinity(worker) == os.sched_getaffinity(core) == {cpus[0]}
        assert os.sched_getaffinity(frontend) == set(cpus[1:])
        # Without a worker bound to some cores there is nothing to set apart.
        assert pin_apart([core], [frontend]) is None
    finally:
        for child in children.values():
            child.kill()
            child.wait()
    assert os.sched_getaffinity(0) == set(cpus)
