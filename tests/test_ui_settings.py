"""The settings events and the history after a restart, through `gradio_client` against the
real app server and the shared tiny-model engine; the engine's memory fields on fabricated
machines, through the panel's own functions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest
from gradio_client.exceptions import AppError
from playwright.sync_api import expect

from app.application import App
from app.config.file import load_settings
from app.config.settings import AppPaths, AppSettings
from app.engine import Engine
from app.hardware import Gpu, Hardware, detect
from app.models.fit import format_bytes, weight_file_bytes
from app.ui.settings import KV_CACHE, SAMPLING_FIELDS, UTILIZATION, SettingsPanel
from tests.browser_pages import ARTIFACTS, browser_fixture  # noqa: F401 (Chromium, as a fixture)
from tests.ui_clients import SHORT, app_fixture, connect_fixture, make_ui_app, server_fixture  # noqa: F401


def test_sampling_settings_apply_to_the_next_message_and_persist(server: Any, app: App, connect: Any) -> None:
    client = connect(server)
    result = client.predict(0.0, 1.0, 0, 0.0, 5, 1.0, 0.0, 0.0, 7, "", api_name="/save_sampling")
    assert "next message" in result
    assert load_settings(app.paths).sampling.max_tokens == 5
    assert load_settings(app.paths).sampling.seed == 7
    client.predict("Hello", "", api_name="/send")
    reply = client.predict(api_name="/history")["messages"][1]
    assert reply["stats"]["completion_tokens"] <= 5
    assert reply["stats"]["sampling"]["temperature"] == 0.0


def test_a_value_equal_to_the_app_default_is_sent_on_a_model_that_differs(server: Any, app: App, connect: Any) -> None:
    """The tiny model's generation_config says temperature 0.9 and top_k 40. The user sets 0.7 (the
    app's own fallback) and leaves top_k at the 40 the panel shows: the engine gets 0.7 and 40."""
    client = connect(server)
    client.predict(0.7, 1.0, 40, 0.0, 16, 1.0, 0.0, 0.0, None, "", api_name="/save_sampling")
    assert json.loads(app.paths.settings_file.read_text())["sampling"] == {
        "temperature": 0.7,
        "max_tokens": 16,
        "ignore_eos": True,
    }
    client.predict("Hello", "", api_name="/send")
    used = client.predict(api_name="/history")["messages"][1]["stats"]["sampling"]
    assert (used["temperature"], used["top_k"], used["max_tokens"]) == (0.7, 40, 16)


def test_engine_settings_are_validated_and_saved_for_the_next_load(server: Any, app: App, connect: Any) -> None:
    client = connect(server)
    with pytest.raises(AppError, match="max_model_len must be at least 16"):
        client.predict("balanced", 0.9, 8, "auto", "none", "auto", "auto", None, "off", 3, "", api_name="/apply_engine")
    result = client.predict(
        "memory_saver", 0.7, 2048, "float16", "none", "hermes", "none", None, "ngram", 4, "", api_name="/apply_engine"
    )
    assert "when you load a model" in result
    saved = load_settings(app.paths)
    assert saved.preset == "memory_saver"
    assert (saved.engine.max_model_len, saved.engine.dtype, saved.engine.max_num_seqs) == (2048, "float16", 16)
    assert (saved.engine.tool_call_parser, saved.engine.reasoning_parser) == ("hermes", "")
    # Speculative decoding as `vllm serve --speculative-config` takes it.
    assert json.loads(saved.engine.speculative_config) == {"method": "ngram", "num_speculative_tokens": 4}
    with pytest.raises(AppError, match="eagle3 or draft_model"):
        client.predict(
            "balanced", 0.9, None, "auto", "none", "auto", "auto", None, "eagle3", 3, "", api_name="/apply_engine"
        )


# ---- the memory fields: GPU memory utilization on a GPU, the KV cache size on the CPU ---------

GIB = 2**30
CPU_BOX = Hardware(gpus=[], cpu_count=2, ram_total=16 * GIB, ram_available=8 * GIB)
GPU_BOX = Hardware(gpus=[Gpu(0, "RTX 4090", 24 * GIB, GIB)], cpu_count=16, ram_total=64 * GIB, ram_available=50 * GIB)


def memory_fields_shown(panel: SettingsPanel, lang: str = "en") -> tuple[dict, dict]:
    """The page-load updates of the GPU memory utilization and KV cache size fields."""
    browser = SimpleNamespace(headers={"accept-language": lang})
    values = panel.current(browser)  # type: ignore[arg-type]
    return values[len(SAMPLING_FIELDS) + UTILIZATION], values[len(SAMPLING_FIELDS) + KV_CACHE]


async def apply(panel: SettingsPanel, kv_gib: float | None) -> list[str]:
    return [
        m
        async for m in panel.apply_engine(
            "balanced", 0.9, None, "auto", "none", "auto", "auto", kv_gib, "off", 3, "", None
        )
    ]


def test_without_a_gpu_the_kv_cache_size_is_offered_and_bounded(
    make_app: Any, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    panel = SettingsPanel(make_app(Engine(), AppSettings(model=str(tiny_model))), CPU_BOX)
    utilization, kv_cache = memory_fields_shown(panel)
    assert utilization["interactive"] is False and utilization["info"].startswith("GPU only: no NVIDIA GPU found")
    assert utilization["value"] == 0.9 and kv_cache["interactive"] is True and kv_cache["value"] is None
    # 8 GiB free less the tiny model's bf16 weights and the 2 GiB runtime.
    weights = weight_file_bytes(tiny_model)
    room = 8 * GIB - weights - 2 * GIB
    assert f"Empty: 4.0 GiB (the app’s default). At most {format_bytes(room)} on this computer now" in kv_cache["info"]
    assert "本机当前最多" in memory_fields_shown(panel, "zh-CN")[1]["info"]
    with pytest.raises(gr.Error) as refused:
        asyncio.run(apply(panel, 7.0))
    assert refused.value.message == (
        f"A KV cache of 7.0 GiB is too big for this computer now: 8.0 GiB of RAM is free, less the weights "
        f"({format_bytes(weights)}) and the runtime (2.0 GiB) leaves {format_bytes(room)}. "
        f"Set {int(room / GIB * 10) / 10:g} GiB or less, or leave it empty."
    )
    assert load_settings(panel.app.paths).engine.cpu_kv_cache_gib is None

    # With no model chosen yet, the setting is saved for the next load.
    unloaded = SettingsPanel(make_app(Engine()), CPU_BOX)
    assert asyncio.run(apply(unloaded, 5.5)) == ["Saved. They take effect when you load a model."]
    assert load_settings(unloaded.app.paths).engine.cpu_kv_cache_gib == 5.5
    assert memory_fields_shown(unloaded)[1]["value"] == 5.5


def test_on_a_gpu_the_utilization_applies_and_the_kv_cache_size_is_cpu_only(make_app: Any) -> None:
    panel = SettingsPanel(make_app(Engine()), GPU_BOX)
    utilization, kv_cache = memory_fields_shown(panel)
    assert utilization["interactive"] is True and kv_cache["interactive"] is False
    assert kv_cache["info"].startswith("CPU only")
    # The RAM does not bound a cache the GPU holds.
    assert asyncio.run(apply(panel, 100.0)) == ["Saved. They take effect when you load a model."]


@pytest.mark.browser
def test_the_engine_panel_in_the_page_enables_the_field_this_machine_uses(
    browser: Any, make_app: Any, start_server: Any
) -> None:
    server = start_server(make_app(Engine()))
    context = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1200})
    try:
        page = context.new_page()
        page.goto(server.url)
        page.get_by_role("tab", name="Settings").click()
        kv_cache = page.get_by_label("KV cache size (GiB)")
        utilization = page.locator("input[type=range][aria-label*='GPU memory utilization']")
        if detect().has_gpu:
            expect(page.get_by_text("CPU only: on a GPU")).to_be_visible()
            expect(kv_cache).to_be_disabled()
            expect(utilization).to_be_enabled()
        else:
            expect(page.get_by_text("GPU only: no NVIDIA GPU found")).to_be_visible()
            expect(kv_cache).to_be_enabled()
            expect(utilization).to_be_disabled()
            expect(page.get_by_text("Empty: 4.0 GiB (the app’s default). At most")).to_be_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "settings-engine-memory.png"), full_page=True)
    finally:
        context.close()


# ---- restart, concurrency, bytes on the wire ------------------------------------------------


def test_history_endpoint_returns_the_saved_chat_after_an_app_restart(
    engine: Engine, make_app: Any, start_server: Any, connect: Any
) -> None:
    first = start_server(make_ui_app(make_app, engine))
    client = connect(first)
    client.predict("Remember me: 记住我", "", api_name="/send")
    saved = client.predict(api_name="/conversations")
    client.close()
    first.stop()

    # A new App over the same VLLM_CHAT_HOME, as after restarting the program.
    restarted = App.build(AppSettings(), AppPaths.default(), engine=engine)
    second = start_server(restarted)
    client = connect(second)
    assert client.predict(api_name="/conversations") == saved
    history = client.predict(api_name="/history")
    assert history["messages"][0]["content"] == "Remember me: 记住我"
    assert history["messages"][1]["stats"]["completion_tokens"] == SHORT.max_tokens


def test_the_api_max_tokens_switch_is_saved_and_read_back(make_app) -> None:
    """Settings → Network and API: fitting an agent's max_tokens is off by default, as vllm serve
    behaves; turned on in the page it is saved for the next start."""
    from app.config.file import load_settings
    from app.ui.network_settings import NetworkPanel

    app = make_app(Engine())
    panel = NetworkPanel(app)
    assert panel.fit_state() is False
    assert panel.set_fit_max_tokens(True, None).startswith("On: a max_tokens longer")
    assert load_settings(app.paths).api_fit_max_tokens is True and panel.fit_state() is True
    assert panel.set_fit_max_tokens(False, None).startswith("Off:")
    assert load_settings(app.paths).api_fit_max_tokens is False
