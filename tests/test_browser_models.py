"""The Models tab in a real browser: Load says what it is doing at once (in the status bar and
under the button) and Unload frees the model; a download that ends, wherever it was started,
shows in "Models on this computer" without a click on Refresh."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from app.application import App
from app.config.settings import AppPaths, AppSettings
from app.engine import Engine, EngineState
from benchmarks.page_engine import LoadableEngine
from tests.browser_pages import browser_fixture, shot  # noqa: F401 (Chromium, as a fixture)
from tests.conftest import tiny_engine_settings
from tests.hub_server import HubRepo, HubServer

pytestmark = [pytest.mark.browser]
# Sooner than the status bar's own refresh (2 s) and a busy machine's slack: "at once".
AT_ONCE_MS = 1_500
REPO = "org/tiny-chat"


def _models_tab(browser: Any, url: str) -> tuple[Any, Any]:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Models").click()
    return context, page


def test_load_and_unload_say_so_at_once(browser, make_app, start_server, tiny_model: Path) -> None:
    """The page's side, on the stand-in engine with a start of a few seconds (what the real
    engine's load and unload do, its processes started and gone, is tests/test_engine.py's)."""
    engine = LoadableEngine(load_s=3.0)
    app = make_app(engine, AppSettings(engine=tiny_engine_settings()))
    context, page = _models_tab(browser, start_server(app).url)
    bar = page.locator("#status-bar")
    try:
        expect(bar).to_contain_text("No model loaded")
        page.get_by_text("Any Hugging Face repo or a folder on this computer").click()
        page.get_by_label("Hugging Face repo id, or a model folder on this computer").fill(str(tiny_model))
        page.locator("#models-load").click()
        expect(bar).to_contain_text(f"Loading {tiny_model.name}", timeout=AT_ONCE_MS)
        # Under the button, the stage the engine is at.
        expect(page.locator("#models-report")).to_contain_text("⏳ Loading", timeout=AT_ONCE_MS)
        shot(page, "models-loading")
        expect(bar).to_contain_text(f"Ready: {tiny_model.name}", timeout=30_000)
        expect(page.locator("#models-report")).not_to_contain_text("⏳")
        # The folder typed, with the engine settings of Settings → Engine.
        assert engine.loaded == [(str(tiny_model), tiny_engine_settings())]

        page.locator("#models-unload").click()
        expect(bar).to_contain_text("No model loaded", timeout=AT_ONCE_MS)
        expect(page.locator("#models-cache-note")).to_contain_text(f"Unloaded {tiny_model.name}", timeout=15_000)
        shot(page, "models-unloaded")
        assert engine.status.state == EngineState.EMPTY
    finally:
        context.close()


@pytest.fixture
def hub(tiny_model: Path) -> Iterator[HubServer]:
    files = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file()}
    with HubServer([HubRepo(REPO, files)]) as server:
        yield server


def test_a_download_that_ends_shows_among_the_models_on_this_computer(
    browser, hub, hub_online, app_home, start_server, tmp_path, monkeypatch
) -> None:
    from app.ui.models_panel import ModelsPanel

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    settings = AppSettings(download_source="mirror", mirror_endpoint=hub.url)
    paths = dataclasses.replace(AppPaths.default(), hf_cache=tmp_path / "hf-cache")
    app = App.build(settings, paths, engine=Engine())
    context, page = _models_tab(browser, start_server(app).url)
    cached = page.locator("#models-cached")
    try:
        expect(cached).to_contain_text("No models downloaded yet")
        # Started elsewhere (another tab, "Download and load"): this tab's own progress is not running.
        download = app.downloads.start(ModelsPanel(app).plan(REPO, None))
        assert download.wait(120).status == "done", download.progress()
        expect(cached).to_contain_text(REPO, timeout=10_000)
        shot(page, "models-downloaded")
    finally:
        context.close()
