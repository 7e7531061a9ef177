"""Offline (HF_HUB_OFFLINE=1, or Settings → Offline) means nothing leaves this computer, and the token
rule for a custom HF_ENDPOINT. Against the loopback Hub (tests/hub_server.py), which records every
request and its Authorization header, through the Models tab's own logic (no browser, no engine: a
stand-in records what would be loaded, and from where)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.config.file import load_settings, save_settings
from app.config.settings import AppPaths, AppSettings
from app.errors import UserError
from app.hardware import Gpu, Hardware
from app.models.cache import ModelStore
from app.models.sources import token_choice_applies
from benchmarks.page_engine import LoadableEngine
from tests.browser_pages import browser_fixture, shot  # noqa: F401 (Chromium, as a fixture)
from tests.conftest import wait_until
from tests.hub_server import HubRepo, HubServer

GRANTED = "hf_granted_token"
REPO, GATED = "org/tiny", "gated-org/tiny-gated"
CARD = Hardware(gpus=[Gpu(0, "Fake 24 GB", 24 * 10**9, 0)], cpu_count=8, ram_total=64 * 2**30)
SEARCH_OFF = {
    "env": "⚠️ Offline (HF_HUB_OFFLINE=1): Hub search is off; models already on this computer still load.",
    "setting": "⚠️ Offline (Settings → Offline is on): Hub search is off; models already on this computer still load.",
}
HUB_OFF = {
    "env": "Offline (HF_HUB_OFFLINE=1): nothing is downloaded or looked up on the Hub",
    "setting": "Offline (Settings → Offline is on): nothing is downloaded or looked up on the Hub",
}


@pytest.fixture
def hub(tiny_model: Path, hub_online: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    repos = [
        HubRepo.from_folder(REPO, tiny_model),
        HubRepo.from_folder(GATED, tiny_model, gated=True, allowed_tokens={GRANTED}),
    ]
    with HubServer(repos) as server:
        yield server


@pytest.fixture
def panels(hub: HubServer, make_app, tmp_path: Path):
    from app.ui.model_browser import BrowserPanel
    from app.ui.models_panel import ModelsPanel

    app = make_app(LoadableEngine())
    models = ModelsPanel(app)
    models.store = ModelStore(tmp_path / "hf-cache", tmp_path / "modelscope")
    models.tokens.save(GRANTED)
    # The saved token goes with every request to this mirror: anything sent would show it.
    assert models.set_source("mirror", hub.url, True) == ""
    return models, BrowserPanel(models, hardware=CARD)


def go_offline(how: str, models: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        models.app.update_settings(offline=True)


async def _collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


@pytest.mark.parametrize("how", ["env", "setting"])
def test_offline_nothing_leaves_and_the_page_says_why(panels, hub: HubServer, how: str, monkeypatch):
    models, browser = panels
    go_offline(how, models, monkeypatch)

    searched = browser.search("tiny", "en")
    checked = models.check(REPO, "", "en")
    downloaded = models.download(REPO, "", "en")
    steps = asyncio.run(_collect(browser.download_and_load(REPO, "en")))
    assert models.set_source("modelscope", hub.url, False) == ""
    from_modelscope = models.check(REPO, "", "en")
    # The Hub saw nothing at all, so no token either.
    assert hub.requests == []
    with pytest.raises(UserError) as load:  # vLLM would fetch a repo id that is not here
        asyncio.run(models.app.load_model(REPO))

    assert searched == ([], SEARCH_OFF[how])
    assert browser.search_off("en") == SEARCH_OFF[how]
    assert "Hub 搜索已关闭" in browser.search_off("zh-CN")
    for refusal in (checked, downloaded, steps[-1][0], from_modelscope, "⚠️ " + load.value.message("en")):
        assert refusal.startswith("⚠️ " + HUB_OFF[how]), refusal
    assert steps[-1][1] is False and models.app.downloads.all() == [] and models.app.engine.loaded == []
    assert "本机已有的模型仍可加载" in models.check(GATED, "", "zh-CN")


def test_offline_a_cached_model_still_checks_and_loads(panels, hub: HubServer, tiny_model: Path):
    models, browser = panels
    models.download(REPO, "", "en")
    assert models.app.downloads.find(REPO).wait(120).status == "done"
    seen = len(hub.requests)
    models.app.update_settings(offline=True)

    report = models.check(REPO, "", "en")
    assert "Everything is already downloaded" in report and "Offline" not in report
    # The fit check, from the cached config.json.
    assert "token" in report and "config.json" not in report
    assert browser.describe(REPO, "en")[1] is True
    steps = asyncio.run(_collect(browser.download_and_load(REPO, "en")))
    assert steps[-1][1] is True, steps
    ((loaded, _),) = models.app.engine.loaded
    assert (Path(loaded) / "config.json").read_bytes() == (tiny_model / "config.json").read_bytes()
    assert len(hub.requests) == seen


def test_turning_offline_on_stops_the_running_download_and_is_saved(panels, hub: HubServer):
    from app.ui.network_settings import NetworkPanel

    models, _ = panels
    hub.throttle = 100_000  # bytes/s: the weights take several seconds
    models.download(REPO, "", "en")
    assert wait_until(lambda: hub.bytes_sent.get("model.safetensors", 0) > 50_000, timeout=60)
    note = NetworkPanel(models.app).set_offline(True, None)
    assert note == "Offline: nothing leaves this computer (downloads that were running are stopped)."
    assert models.app.downloads.find(REPO).progress().status == "cancelled"
    assert wait_until(lambda: hub.active_transfers == 0, timeout=5)
    assert load_settings(models.app.paths).offline is True


def test_a_token_withheld_from_hf_endpoint_is_named_with_the_switch_that_sends_it(panels, hub, monkeypatch):
    models, _ = panels
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert models.set_source("huggingface", "https://hf-mirror.com", False) == ""
    # The switch shows for Hugging Face too when HF_ENDPOINT points elsewhere.
    assert token_choice_applies("huggingface")

    refusal = models.check(GATED, "", "en")
    assert f"your Hugging Face token is not sent to {hub.url} (HF_ENDPOINT)" in refusal
    assert "turn on “Also send my Hugging Face token to the mirror”" in refusal
    assert "同时把我的 Hugging Face 令牌发送给镜像站" in models.check(GATED, "", "zh-CN")
    assert hub.requests and all(auth is None for _, _, auth in hub.requests)

    assert models.set_source("huggingface", "https://hf-mirror.com", True) == ""
    assert "Download: **" in models.check(GATED, "", "en")
    assert any(auth == f"Bearer {GRANTED}" for _, _, auth in hub.requests)

    monkeypatch.delenv("HF_ENDPOINT")
    assert not token_choice_applies("huggingface") and token_choice_applies("mirror")


@pytest.mark.e2e
def test_the_download_command_offline_prints_a_cached_model_and_refuses_the_rest(hub: HubServer, tmp_path: Path):
    env = {**os.environ, "VLLM_CHAT_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "hf-cache")}

    def download(repo: str, **extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "app", "download", repo, "--source", "mirror", "--mirror", hub.url]
        return subprocess.run(command, env=env | extra, capture_output=True, text=True, timeout=300)

    first = download(REPO)
    assert first.returncode == 0, first.stderr
    seen = len(hub.requests)
    again = download(REPO, HF_HUB_OFFLINE="1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
    refused = download(GATED, HF_HUB_OFFLINE="1")
    assert refused.returncode == 1 and refused.stderr.startswith(HUB_OFF["env"]), refused.stderr
    assert len(hub.requests) == seen


@pytest.mark.parametrize("how", ["env", "setting"])
def test_the_doctor_offline_tries_no_source_and_says_why(hub: HubServer, tmp_path: Path, how: str):
    home = tmp_path / "home"
    paths = AppPaths(home / "config", home / "data", home / "cache", home / "logs")
    paths.create()
    save_settings(AppSettings(offline=how == "setting", download_source="mirror", mirror_endpoint=hub.url), paths)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "VLLM_CHAT_"))}
    # Every source the doctor would probe is the loopback Hub.
    env |= {"LANG": "C.UTF-8", "VLLM_CHAT_HOME": str(home), "HF_ENDPOINT": hub.url, "MODELSCOPE_ENDPOINT": hub.url}
    if how == "env":
        env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "app", "doctor", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    checks = {f["check"]: f for f in json.loads(done.stdout)["findings"]}
    assert checks["hub"]["why"].startswith(HUB_OFF[how].split(":")[0] + ": the download sources were not tried")
    assert hub.requests == []


@pytest.mark.browser
def test_the_page_says_why_search_is_off_and_has_the_switch(browser, app_home, start_server, monkeypatch):
    from playwright.sync_api import expect

    from app.application import App
    from app.engine import Engine

    app = App.build(AppSettings(), AppPaths.default(), engine=Engine())
    server = start_server(app)
    # The suite's HF_HUB_OFFLINE=1: the Chinese page says so where the search is.
    zh = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 1000})
    try:
        page = zh.new_page()
        page.goto(server.url)
        page.get_by_role("tab", name="模型").click()
        page.get_by_text("搜索 Hub").first.click()
        expect(page.get_by_text("离线（HF_HUB_OFFLINE=1）：Hub 搜索已关闭；本机已有的模型仍可加载。")).to_be_visible()
        expect(page.get_by_placeholder("qwen、llama 8b")).to_be_disabled()
        shot(page, "offline-search-zh")
    finally:
        zh.close()

    monkeypatch.delenv("HF_HUB_OFFLINE")
    en = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 1000})
    try:
        page = en.new_page()
        page.goto(server.url)
        page.get_by_role("tab", name="Models").click()
        page.get_by_text("Search the Hub").first.click()
        expect(page.get_by_placeholder("qwen, llama 8b")).to_be_editable()
        page.get_by_role("tab", name="Settings").click()
        page.get_by_label("Offline: never contact Hugging Face, the mirror or ModelScope").check()
        expect(page.get_by_text("Offline: nothing leaves this computer")).to_be_visible()
        shot(page, "offline-settings-switch")
        assert app.settings.offline is True
        page.get_by_role("tab", name="Models").click()
        page.get_by_text("Search the Hub").first.click()  # closes it
        page.get_by_text("Search the Hub").first.click()  # and opens it again, with what the switch did
        expect(page.get_by_text(SEARCH_OFF["setting"].removeprefix("⚠️ "))).to_be_visible()
        expect(page.get_by_placeholder("qwen, llama 8b")).to_be_disabled()
        shot(page, "offline-search-en")
    finally:
        en.close()
