"""The numbers of one benchmark run: per path and concurrency, ratios, targets; as JSON, a PNG and a table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.paths import LABELS, PATH_KEYS
from benchmarks.workload import LevelRun

METRICS = (
    "output_tps",
    "requests_per_s",
    "ttft_median_ms",
    "ttft_p99_ms",
    "itl_median_ms",
    "itl_p99_ms",
    "tpot_median_ms",
    "frontend_cpu_ms_per_request",
    "client_cpu_ms_per_request",
    "engine_cpu_ms_per_request",
)
# (numerator, denominator): every path against the floor, and the app's API against `vllm serve`.
COMPARISONS = (("api", "engine"), ("ui", "engine"), ("vllm_serve", "engine"), ("api", "vllm_serve"))


def _ms(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) * 1000 if values else None


def level_stats(run: LevelRun) -> dict[str, Any]:
    """One repetition of one path at one concurrency."""
    ok = [r for r in run.records if r.error is None]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    itls = [x for r in ok for x in r.itls()]
    tpots = [r.tpot for r in ok if r.tpot is not None]
    errors = [r.error for r in run.records if r.error is not None]
    return {
        "output_tps": sum(r.output_tokens for r in ok) / run.wall,
        "requests_per_s": len(ok) / run.wall,
        "ttft_median_ms": _ms(ttfts, 50),
        "ttft_p99_ms": _ms(ttfts, 99),
        "itl_median_ms": _ms(itls, 50),
        "itl_p99_ms": _ms(itls, 99),
        "tpot_median_ms": _ms(tpots, 50),
        "frontend_cpu_ms_per_request": run.frontend_cpu_s * 1000 / len(run.records),
        "client_cpu_ms_per_request": run.client_cpu_s * 1000 / len(run.records),
        "engine_cpu_ms_per_request": run.engine_cpu_s * 1000 / len(run.records),
        "requests": len(run.records),
        "output_tokens": sum(r.output_tokens for r in ok),
        "wall_s": run.wall,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def combine(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Repetitions of one path at one concurrency: the median of each metric, and every repetition."""
    median = {}
    for metric in METRICS:
        values = [r[metric] for r in reps if r[metric] is not None]
        median[metric] = statistics.median(values) if values else None
    median["errors"] = sum(r["errors"] for r in reps)
    return {"median": median, "reps": reps}


def ratios(paths: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a, b in COMPARISONS:
        if a not in paths or b not in paths:
            continue
        levels = {}
        for c, level in paths[a]["levels"].items():
            if c not in paths[b]["levels"]:
                continue
            x, y = level["median"], paths[b]["levels"][c]["median"]
            levels[c] = {
                "output_tps": _ratio(x["output_tps"], y["output_tps"]),
                "requests_per_s": _ratio(x["requests_per_s"], y["requests_per_s"]),
                "ttft_added_ms": _diff(x["ttft_median_ms"], y["ttft_median_ms"]),
                "itl_added_ms": _diff(x["itl_median_ms"], y["itl_median_ms"]),
                "frontend_cpu": _ratio(x["frontend_cpu_ms_per_request"], y["frontend_cpu_ms_per_request"]),
            }
        out[f"{a}/{b}"] = levels
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's promises, measured. Reported, never asserted: a busy machine moves them."""
    rows = []

    def check(what: str, concurrency: str | None, value: float | None, op: str, limit: float) -> None:
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        rows.append({"target": what, "concurrency": concurrency, "value": value, "op": op, "limit": limit,
                     "met": met})

    r = result["ratios"]
    for c, v in r.get("api/engine", {}).items():
        check("path 2 / path 1 output tokens/s", c, v["output_tps"], ">=", 0.95)
        check("TTFT added by path 2, median ms", c, v["ttft_added_ms"], "<=", 20.0)
    for c, v in r.get("ui/engine", {}).items():
        if c in ("1", "16"):
            check("path 3 / path 1 output tokens/s", c, v["output_tps"], ">=", 0.90)
    for c, v in r.get("api/vllm_serve", {}).items():
        check("path 2 / path 4 output tokens/s", c, v["output_tps"], ">=", 1.0)
    cold = result.get("cold_start")
    if cold:
        check("app cold start minus bare engine start, s", None, cold["app_minus_bare_s"], "<=", 3.0)
    return rows


# ---- output ---------------------------------------------------------------------------------


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "results.json", out / "results.png"
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    plot(result, png_path)
    return json_path, png_path


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    panels = (("output_tps", "output tokens/s"), ("ttft_median_ms", "time to first token, median (ms)"),
              ("frontend_cpu_ms_per_request", "serving CPU per request (ms)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(17, 4.5))
    concurrency = sorted({int(c) for data in result["paths"].values() for c in data["levels"]})
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for key, data in result["paths"].items():
            levels = sorted(data["levels"], key=int)
            ax.plot([int(c) for c in levels], [data["levels"][c]["median"][metric] for c in levels], marker="o",
                    label=LABELS[key])
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrency, [str(c) for c in concurrency])
        ax.minorticks_off()
        ax.set_xlabel("concurrent requests")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    meta = result["meta"]
    fig.suptitle(f"{meta['model']} on {meta['device']} ({meta['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(result: dict[str, Any]) -> str:
    lines = []
    header = (f"{'path':<32}{'conc':>5}{'out tok/s':>11}{'req/s':>8}{'TTFT p50':>10}{'TTFT p99':>10}"
              f"{'ITL p50':>9}{'ITL p99':>9}{'CPU serve':>10}{'client':>8}{'engine':>8}{'x path 1':>10}{'err':>5}")
    lines += [header, "-" * len(header)]
    floor = result["paths"].get("engine", {}).get("levels", {})
    for key in PATH_KEYS:
        if key not in result["paths"]:
            continue
        for c, level in sorted(result["paths"][key]["levels"].items(), key=lambda kv: int(kv[0])):
            m = level["median"]
            base = floor.get(c, {}).get("median", {}).get("output_tps")
            lines.append(
                f"{LABELS[key]:<32}{c:>5}{_fmt(m['output_tps']):>11}{_fmt(m['requests_per_s'], 2):>8}"
                f"{_fmt(m['ttft_median_ms']):>10}{_fmt(m['ttft_p99_ms']):>10}{_fmt(m['itl_median_ms']):>9}"
                f"{_fmt(m['itl_p99_ms']):>9}{_fmt(m['frontend_cpu_ms_per_request']):>10}"
                f"{_fmt(m['client_cpu_ms_per_request']):>8}{_fmt(m['engine_cpu_ms_per_request']):>8}"
                f"{_fmt(_ratio(m['output_tps'], base), 3):>10}{m['errors']:>5}"
            )
    lines.append("(times in ms; medians over repetitions; CPU: ms of CPU per request in the serving process "
                 "(for path 1, this process), the benchmark's client and the vLLM engine processes; path 3's "
                 "updates are paced by the UI, so its ITL is the time between screen updates)")
    for c, v in result["ratios"].get("api/vllm_serve", {}).items():
        lines.append(f"path 2 / path 4 at {c}: output tokens/s x{_fmt(v['output_tps'], 3)}, "
                     f"TTFT {_fmt(v['ttft_added_ms'], 1)} ms, serving CPU per request x{_fmt(v['frontend_cpu'], 2)}")
    if result.get("second_opinion"):
        lines += ["", "vllm.benchmarks (second opinion):"]
        for key, levels in result["second_opinion"].items():
            for c, v in levels.items():
                lines.append(f"  {LABELS[key]:<30}{c:>5}{_fmt(v['output_throughput']):>11}"
                             f"{_fmt(v['request_throughput'], 2):>8}{_fmt(v['median_ttft_ms']):>10}"
                             f"{_fmt(v['p99_ttft_ms']):>10}{_fmt(v['median_itl_ms']):>9}{_fmt(v['p99_itl_ms']):>9}")
    if cold := result.get("cold_start"):
        lines += ["", f"cold start: app {_fmt(cold['app_s'])} s, bare AsyncLLM {_fmt(cold['bare_s'])} s "
                      f"(app - bare {_fmt(cold['app_minus_bare_s'])} s), vllm serve {_fmt(cold['vllm_serve_s'])} s, "
                      f"Engine.load in this process {_fmt(cold['engine_load_s'])} s"]
    if ui := result.get("ui_stream"):
        lines.append(f"UI stream, {ui['reply_tokens']}-token reply: {ui['updates']} updates, "
                     f"{_fmt(ui['early_median_bytes'], 0)} B/update early vs "
                     f"{_fmt(ui['late_median_bytes'], 0)} B late; "
                     f"overhead beyond the new text {_fmt(ui['early_overhead_bytes'], 0)} B vs "
                     f"{_fmt(ui['late_overhead_bytes'], 0)} B (x{_fmt(ui['growth'], 2)}: "
                     f"{'flat' if ui['flat'] else 'GROWS'}); every {_fmt(ui['early_interval_ms'], 0)} ms early, "
                     f"{_fmt(ui['late_interval_ms'], 0)} ms late; {_fmt(ui['bytes_per_token'])} B/token")
    if sw := result.get("switch"):
        left = sw["rss_left_after_unload_bytes"] / 2**20
        gpu = sw["gpu_left_after_unload_bytes"]
        lines.append(f"switch: unload {_fmt(sw['unload_s'], 2)} s + load {sw['model_b']} {_fmt(sw['load_s'], 2)} s; "
                     f"memory after unloading B vs before loading it: {left:+.0f} MiB RSS"
                     + (f", {gpu / 2**20:+.0f} MiB GPU" if gpu is not None else ""))
    if bw := result.get("decode_vs_bandwidth"):
        lines.append(f"single-stream decode {_fmt(bw['decode_tps'])} tok/s vs bandwidth limit "
                     f"{_fmt(bw['limit_tps'])} tok/s ({_fmt(bw['efficiency'] * 100)} %)")
    lines += ["", "targets:"]
    for t in result["targets"]:
        where = f" at {t['concurrency']}" if t["concurrency"] else ""
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"  {t['target']}{where}: {_fmt(t['value'], 3)} ({t['op']} {t['limit']}) {verdict}")
    return "\n".join(lines)
