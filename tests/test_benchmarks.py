"""The benchmark harness end to end, in its smallest shape, so that it cannot rot unnoticed:
every path, every concurrency and every measurement must come out of `python -m benchmarks.run`.

The numbers themselves are not checked against targets: on a shared machine they say little.
The harness starts its own engines (a bare one, the app, `vllm serve`, its own path-1 engine,
a second model for the switch): cold start and switch cost are about starting and stopping
engines, which the shared session engine must not do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.paths import LABELS, PATH_KEYS
from benchmarks.report import METRICS

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--quick", "--concurrency", "1,2", "--prompt-tokens", "16", "--output-tokens", "8",
        "--requests-per-client", "1", "--repetitions", "1", "--long-reply", "64"]
LEVELS = ("1", "2")


@pytest.mark.slow
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
                assert level["median"][metric] > 0, (key, c, metric)
    for comparison in ("api/engine", "ui/engine", "vllm_serve/engine", "api/vllm_serve"):
        assert set(result["ratios"][comparison]) == set(LEVELS)
        assert all(v["output_tps"] > 0 for v in result["ratios"][comparison].values())
    for key in ("api", "vllm_serve"):
        for c in LEVELS:
            second = result["second_opinion"][key][c]
            assert second["completed"] == int(c) and second["failed"] == 0, (key, c, second)
            assert second["output_throughput"] > 0 and second["median_ttft_ms"] > 0

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
