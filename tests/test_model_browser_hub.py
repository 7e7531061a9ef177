"""Quantized versions of a Hub repo that is not in the catalog, found through the app's Hub search
(real huggingface_hub in a child process) on the loopback Hub server; the fit check's figures are
the tiny model's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine import Engine
from app.hardware import Gpu, Hardware
from app.models.cache import ModelStore
from app.models.fit import format_bytes, weight_file_bytes
from tests.hub_server import HubRepo, HubServer

CONFIG_ONLY = {"config.json": b"{}"}


@pytest.fixture(autouse=True)
def online_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite runs offline by default; this user is online, through the loopback Hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


@pytest.fixture(scope="module")
def hub(tiny_model: Path):
    repos = [
        HubRepo.from_folder("org/tiny", tiny_model, downloads=900),
        HubRepo("org/tiny-AWQ", CONFIG_ONLY, downloads=10),
        HubRepo("org/tiny-GPTQ-Int4", CONFIG_ONLY, downloads=30),
        HubRepo("other/tiny-FP8", CONFIG_ONLY, downloads=500),
        # Not quantized versions of org/tiny: a fine-tune's, a GGUF, a fine-tune.
        HubRepo("org/tiny-chat-AWQ", CONFIG_ONLY, downloads=800),
        HubRepo("org/tiny-GGUF", {"tiny.Q4_K_M.gguf": b"GGUF"}, downloads=700),
        HubRepo.from_folder("org/tiny-chat", tiny_model, downloads=50),
    ]
    with HubServer(repos) as server:
        yield server


def panel(hub: HubServer, make_app, tmp_path: Path, hardware: Hardware):
    from app.ui.models_panel import ModelsPanel

    models = ModelsPanel(make_app(Engine()), hardware=hardware)
    assert models.set_source("mirror", hub.url, False) == ""
    models.store = ModelStore(tmp_path / "hf-cache", tmp_path / "modelscope")
    return models


def searches(hub: HubServer, since: int) -> int:
    return sum(method == "GET" and path == "/api/models" for method, path, _ in hub.requests[since:])


def test_a_hub_repo_too_big_for_the_card_is_offered_its_quantized_versions(
    hub: HubServer, make_app, tmp_path: Path, tiny_model: Path
) -> None:
    # A 2 GB card: vLLM's budget at 0.9 is 1,800,000,000 B, less than the 2 GiB runtime alone.
    small = Hardware(gpus=[Gpu(0, "Fake 2 GB", 2 * 10**9, 0)], cpu_count=8, ram_total=64 * 2**30)
    before = len(hub.requests)
    text = panel(hub, make_app, tmp_path, small).check("org/tiny", None, "en")
    weights = format_bytes(weight_file_bytes(tiny_model))
    assert f"❌ Does not fit on Fake 2 GB: weights {weights} plus the runtime need more than the 1.7 GiB" in text
    # The author's own first (most downloaded first), then others'; no fine-tune, no GGUF.
    assert "Try the quantized variant org/tiny-GPTQ-Int4 instead." in text
    assert "Quantized versions of org/tiny on the Hub (smaller weights, more room for context): " in text
    assert "org/tiny-GPTQ-Int4, org/tiny-AWQ, other/tiny-FP8. Check one to see how it fits." in text
    assert searches(hub, before) == 1

    # On the CPU, with too little RAM for it, the same suggestion.
    no_gpu = Hardware(gpus=[], cpu_count=2, ram_total=2**30)
    text = panel(hub, make_app, tmp_path, no_gpu).check("org/tiny", None, "zh-CN")
    assert "请改用量化版本 org/tiny-GPTQ-Int4。" in text
    assert "Hub 上 org/tiny 的量化版本" in text


def test_no_search_when_the_repo_fits(hub: HubServer, make_app, tmp_path: Path) -> None:
    card = Hardware(gpus=[Gpu(0, "Fake 24 GB", 24 * 10**9, 0)], cpu_count=8, ram_total=64 * 2**30)
    before = len(hub.requests)
    text = panel(hub, make_app, tmp_path, card).check("org/tiny", None, "en")
    assert "✅ Fits on Fake 24 GB" in text and "Quantized versions" not in text
    assert searches(hub, before) == 0
