"""A new user's path in a real browser: search the Hub (the loopback one), pick a model, "Download
and load" (the Hub stopped once the download is done: the load needs nothing of it), land on the
Chat tab and get a streamed reply; then the KV cache vLLM allocated for that
model against our "tokens that fit".

One engine start serves both: the model is Qwen2.5-7B's published config cut to 2 layers of 1024
(its 4 KV heads of 128 kept), with the tiny model's tokenizer and random weights
(load_format="dummy"), so it loads in seconds on this machine and its replies are noise.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.config.settings import AppPaths, AppSettings, EngineSettings, SamplingSettings
from app.engine import Engine, EngineState
from app.hardware import Hardware
from app.models.fit import ModelShape, check_fit
from app.models.memory import CPU_BLOCK_TOKENS
from tests.browser_pages import browser_fixture  # noqa: F401 (Chromium, as a fixture)
from tests.conftest import wait_until
from tests.hub_server import HubRepo, HubServer

pytestmark = [pytest.mark.browser, pytest.mark.engine]

CONFIG = Path(__file__).parent / "fixtures" / "configs" / "Qwen--Qwen2.5-7B-Instruct" / "config.json"
CUT = {
    "num_hidden_layers": 2,
    "hidden_size": 1024,
    "num_attention_heads": 8,
    "intermediate_size": 2048,
    "max_position_embeddings": 4096,
    "sliding_window": 4096,
    "max_window_layers": 2,
}
REPO = "org/qwen2.5-7b-cut"
KV_CACHE_GIB = 0.05


@pytest.fixture
def hub(tiny_model: Path) -> Iterator[HubServer]:
    config = {
        **json.loads(CONFIG.read_text()),
        **CUT,
        "vocab_size": json.loads((tiny_model / "config.json").read_text())["vocab_size"],
    }
    files = {"config.json": json.dumps(config).encode()}
    # Its tokenizer, chat template and generation config; no weights.
    files |= {
        p.name: p.read_bytes() for p in tiny_model.iterdir() if p.name != "config.json" and p.suffix != ".safetensors"
    }
    with HubServer([HubRepo(REPO, files, downloads=10)]) as server:
        yield server


def test_search_download_and_load_then_chat(
    hub, hub_online, browser, app_home, start_server, engine_loop, tmp_path, monkeypatch
):
    from app.application import App

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    engine_settings = EngineSettings(
        load_format="dummy",
        max_model_len=256,
        enforce_eager=True,
        cpu_kv_cache_gib=KV_CACHE_GIB,
        max_num_seqs=4,
        max_num_batched_tokens=256,
    )
    settings = AppSettings(
        download_source="mirror",
        mirror_endpoint=hub.url,
        engine=engine_settings,
        sampling=SamplingSettings(max_tokens=8, ignore_eos=True),
    )
    # The page's store is a Hugging Face cache of this test's own.
    paths = dataclasses.replace(AppPaths.default(), hf_cache=tmp_path / "hf-cache")
    app = App.build(settings, paths, engine=Engine())
    server = start_server(app)
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 1000})
    try:
        page = context.new_page()
        page.goto(server.url)
        page.get_by_role("tab", name="Models").click()
        # Offline-capable catalog first, then the Hub search.
        expect(page.locator("#model-browser")).to_contain_text("Qwen2.5 7B Instruct")
        page.get_by_text("Search the Hub").click()
        page.get_by_placeholder("qwen, llama 8b").fill("7b-cut")
        page.get_by_role("button", name="Search", exact=True).click()
        page.locator("#hub-results").get_by_text(REPO).locator("visible=true").first.click()
        expect(page.locator("#browser-note")).to_contain_text("Download:")
        expect(page.locator("#browser-go")).to_have_text("Download and load")
        page.locator("#browser-go").click()
        # Downloaded: the Hub is stopped as the load begins, and the engine starts from the
        # folder on disk (a load that asked the Hub for anything would fail).
        assert wait_until(lambda: app.engine.status.state == EngineState.LOADING, 120)
        hub.stop()
        # Loaded, and the Chat tab is in front, ready to type.
        expect(page.get_by_role("tab", name="Chat")).to_have_attribute("aria-selected", "true", timeout=300_000)
        box = page.locator("#chat-input textarea")
        expect(box).to_be_editable()
        box.fill("Hello")
        box.press("Enter")
        expect(page.locator("#chatbot .reply-stats")).to_contain_text("8 tokens", timeout=120_000)
    finally:
        context.close()

    try:
        assert app.engine.model_name == REPO
        cache = app.engine.vllm.vllm_config.cache_config
        allocated = cache.num_gpu_blocks * cache.block_size
        shape = ModelShape.from_config(json.loads(hub.repos[REPO].files["config.json"]))
        ours = check_fit(shape, 0, Hardware(ram_total=24 * 2**30), engine_settings).max_fit_len
        assert cache.block_size == CPU_BLOCK_TOKENS
        # Equal, which is within one block: 0.05 GiB // (4,096 bytes × 128 tokens) = 102 blocks.
        assert ours == allocated == 13_056
    finally:
        engine_loop.run(app.engine.unload())
