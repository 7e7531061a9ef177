"""The model browser's verdicts for fabricated cards (8, 12, 24, 80 GB) and a CPU-only machine,
from the shipped catalog alone (HF_HUB_OFFLINE is set for the whole suite: nothing is fetched)."""

from __future__ import annotations

import pytest

from app.config.settings import EngineSettings
from app.hardware import Gpu, Hardware
from app.models.browser import BrowserFilters, Fit, browse
from app.models.catalog import load_catalog

GB = 10**9
CATALOG = load_catalog()


def card(size_gb: int) -> Hardware:
    """A card as sold (decimal GB, what NVML reports in MiB is a little less) with the desktop's 300 MiB used."""
    return Hardware(gpus=[Gpu(0, f"Fake {size_gb} GB", size_gb * GB, 300 * 2**20)], cpu_count=8, ram_total=64 * 2**30)


def rows_by_key(size_gb: int, **filters) -> dict:
    return {r.entry.key: r for r in browse(CATALOG, card(size_gb), EngineSettings(), set(), BrowserFilters(**filters))}


def test_12_gb_card_is_led_to_the_4_bit_variant():
    rows = browse(CATALOG, card(12), EngineSettings(), set())
    keys = [r.entry.key for r in rows]
    by_key = {r.entry.key: r for r in rows}
    assert by_key["qwen2.5-7b-instruct"].fit is Fit.NO
    assert "AWQ" in by_key["qwen2.5-7b-instruct"].fit_line("en", CATALOG)
    assert by_key["qwen2.5-7b-instruct-awq"].fit is Fit.FULL
    assert by_key["qwen2.5-7b-instruct-awq"].context == 32768
    # Each variant follows its model, and the first row is a model that runs.
    assert keys.index("qwen2.5-7b-instruct-awq") == keys.index("qwen2.5-7b-instruct") + 1
    assert rows[0].fit is not Fit.NO or any(r.fit is not Fit.NO for r in rows[1:3])
    first_group = [r for r in rows[:3] if r.fit is not Fit.NO]
    assert first_group and first_group[0].entry.params_b >= 7


@pytest.mark.parametrize(
    ("size_gb", "runs_full", "shorter", "does_not_fit"),
    [
        (8, {"qwen2.5-1.5b-instruct", "qwen2.5-0.5b-instruct"}, {"qwen3-1.7b", "qwen3-0.6b"}, {"qwen3-4b"}),
        (12, {"qwen2.5-3b-instruct", "qwen2.5-7b-instruct-awq"}, {"qwen3-8b-awq"}, {"llama-3.1-8b-instruct"}),
        (
            24,
            {"qwen2.5-7b-instruct", "qwen3-8b-fp8", "llama-3.1-8b-instruct-awq"},
            {"qwen3-8b", "llama-3.1-8b-instruct", "glm-4-9b-chat-hf"},
            set(),
        ),
        (80, {e.key for e in CATALOG}, set(), set()),
    ],
)
def test_what_runs_on_each_card(size_gb: int, runs_full: set, shorter: set, does_not_fit: set):
    rows = rows_by_key(size_gb)
    assert {k for k in runs_full if rows[k].fit is Fit.FULL} == runs_full
    assert {k for k in shorter if rows[k].fit is Fit.SHORTER} == shorter
    assert {k for k in does_not_fit if rows[k].fit is Fit.NO} == does_not_fit
    for key in shorter:
        line = rows[key].fit_line("zh-CN")
        assert f"{rows[key].context:,}" in line and "token" in line


def test_filters():
    assert all(r.fit is not Fit.NO for r in rows_by_key(12, fits_only=True).values())
    assert {r.entry.family for r in rows_by_key(24, family="qwen3").values()} == {"qwen3"}
    assert max(r.entry.params_b for r in rows_by_key(80, max_params_b=4).values()) <= 4
    assert rows_by_key(80, downloaded_only=True) == {}
    cached = {"qwen/qwen3-0.6b"}
    rows = browse(CATALOG, card(80), EngineSettings(), cached, BrowserFilters(downloaded_only=True))
    assert [r.entry.key for r in rows] == ["qwen3-0.6b"]


def test_cpu_only_machine_says_slowly():
    hardware = Hardware(gpus=[], cpu_count=2, ram_total=16 * 2**30)
    rows = {r.entry.key: r for r in browse(CATALOG, hardware, EngineSettings(), set())}
    assert rows["qwen2.5-0.5b-instruct"].fit is not Fit.NO
    assert "CPU" in rows["qwen2.5-0.5b-instruct"].fit_line("en")
    assert rows["glm-4-9b-chat-hf"].fit is Fit.NO


def test_cpu_verdict_names_the_context_used_and_the_models_own():
    """Qwen2.5-0.5B: 32,768 tokens of context; 2 × 24 × 2 × 64 × 2 = 12,288 B per token, so the
    4 GiB CPU KV cache holds all of it."""
    hardware = Hardware(gpus=[], cpu_count=2, ram_total=16 * 2**30)
    key = "qwen2.5-0.5b-instruct"
    full = {r.entry.key: r for r in browse(CATALOG, hardware, EngineSettings(), set())}[key]
    assert full.fit_line("en") == "🐢 Runs on the CPU with its full context (32,768 tokens), slowly"
    mine = {r.entry.key: r for r in browse(CATALOG, hardware, EngineSettings(max_model_len=2048), set())}[key]
    assert mine.fit_line("en") == (
        "🐢 Runs on the CPU with 2,048 of its 32,768 tokens of context (your max length), slowly"
    )
    # Llama 3.1 8B AWQ: the catalog's 32,768 of the model's 131,072.
    awq = {r.entry.key: r for r in browse(CATALOG, card(80), EngineSettings(), set())}["llama-3.1-8b-instruct-awq"]
    assert awq.fit_line("en") == "✅ Runs with 32,768 of its 131,072 tokens of context (the catalog's length for chat)"
