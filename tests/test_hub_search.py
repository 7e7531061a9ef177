"""Hub search and the bad inputs of the Models tab, against the loopback Hub server with the real
huggingface_hub client in real child processes (no engine: picking a model only reads its
config.json and file sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.engine import Engine
from app.hardware import Gpu, Hardware
from app.models.cache import ModelStore
from tests.conftest import free_port
from tests.hub_server import HubRepo, HubServer

GATED_TOKEN = "hf_granted_token"


@pytest.fixture(autouse=True)
def plain_http(monkeypatch: pytest.MonkeyPatch, hub_online: None) -> None:
    # Online to the loopback Hub, which speaks plain HTTP, not Xet.
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


@pytest.fixture(scope="module")
def hub(tiny_model: Path):
    config = json.loads((tiny_model / "config.json").read_text())
    alien = json.dumps({**config, "architectures": ["FooBarForCausalLM"], "model_type": "foobar"}).encode()
    repos = [
        HubRepo.from_folder("org/tiny", tiny_model, downloads=900, likes=12),
        HubRepo.from_folder("org/tiny-chat", tiny_model, downloads=50, likes=1),
        HubRepo.from_folder("gated-org/tiny-gated", tiny_model, gated=True, allowed_tokens={GATED_TOKEN}, downloads=7),
        HubRepo("org/tiny-embedder", {"config.json": b"{}"}, pipeline_tag="feature-extraction", downloads=5000),
        HubRepo(
            "org/tiny-GGUF",
            {"tiny.Q4_K_M.gguf": b"GGUF" + b"\0" * 2000, "README.md": b"# gguf"},
            card_data={"base_model": "org/tiny"},
            downloads=1,
        ),
        HubRepo("org/weights-only", {"model.safetensors": b"\0" * 1000}),
        HubRepo.from_folder("org/alien", tiny_model, extra={"config.json": alien}),
    ]
    with HubServer(repos) as server:
        yield server


@pytest.fixture
def panels(hub: HubServer, make_app, tmp_path: Path):
    from app.ui.model_browser import BrowserPanel
    from app.ui.models_panel import ModelsPanel

    app = make_app(Engine())
    models = ModelsPanel(app)
    assert models.set_source("mirror", hub.url, False) == ""
    models.store = ModelStore(tmp_path / "hf-cache", tmp_path / "modelscope")
    card = Hardware(gpus=[Gpu(0, "Fake 24 GB", 24 * 10**9, 0)], cpu_count=8, ram_total=64 * 2**30)
    return models, BrowserPanel(models, hardware=card)


def test_search_lists_text_generation_models_most_downloaded_first(panels, hub: HubServer):
    _, browser = panels
    cells, note = browser.search("tiny", "en")
    assert note == ""
    # The embedder is not a text-generation model: left out, though it is the most downloaded.
    assert [row[0] for row in cells] == ["org/tiny", "org/tiny-chat", "gated-org/tiny-gated", "org/tiny-GGUF"]
    assert cells[0][1:3] == [900, 12] and cells[0][3] == "2025-01-01"
    assert cells[2][4] == "🔒"
    cells, note = browser.search("nothing-like-this", "zh-CN")
    assert cells == [] and "nothing-like-this" in note


def test_picking_a_result_reads_only_config_and_sizes(panels, hub: HubServer):
    _, browser = panels
    before = len(hub.requests)
    text, cached = browser.describe("org/tiny-chat", "en")
    assert not cached
    assert "Download: **" in text and ("GPU" in text or "Fits" in text)
    fetched = [path for method, path, _ in hub.requests[before:] if method == "GET" and "/resolve/" in path]
    assert fetched and all(path.endswith("/config.json") for path in fetched)


def test_offline_says_so_in_one_sentence_and_the_catalog_still_shows(panels):
    models, browser = panels
    assert models.set_source("mirror", f"http://127.0.0.1:{free_port()}", False) == ""
    cells, note = browser.search("qwen", "en")
    assert cells == [] and "offline" in note and note.count(". ") <= 1
    from app.models.browser import BrowserFilters

    rows, keys = browser.table(BrowserFilters(), "zh-CN")
    assert len(rows) == len(browser.catalog) and keys[0] in {e.key for e in browser.catalog}


def test_bad_inputs_get_one_sentence_each(panels):
    models, _ = panels
    typo = models.check("org/tinny", "", "en")
    assert "Did you mean" in typo and "org/tiny" in typo
    gguf = models.check("org/tiny-GGUF", "", "en")
    assert "safetensors" in gguf and "org/tiny." in gguf
    assert "no config.json" in models.check("org/weights-only", "", "en")
    assert "sign in" in models.check("gated-org/tiny-gated", "", "en")
    alien = models.check("org/alien", "", "zh-CN")
    assert "FooBarForCausalLM" in alien and "vLLM" in alien
    assert "FooBarForCausalLM" in models.download("org/alien", "", "en")
    models.free_bytes = 10_000
    assert "Not enough disk space" in models.check("org/tiny", "", "en")
