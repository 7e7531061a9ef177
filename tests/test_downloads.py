"""Downloads against a real Hub-protocol server on loopback, with the real huggingface_hub client
in real child processes: sizes, cancel, resume, retries, gated models, errors, disk space, the
cache, the CLI, the Models tab's functions, and loading a downloaded model into a real engine.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config.file import load_settings
from app.config.settings import AppSettings
from app.engine import Engine
from app.errors import UserError
from app.models.cache import ModelStore, delete_cached, list_cached, partial_files, remove_orphans, resolve_snapshot
from app.models.downloads import Downloads
from app.models.plans import plan_download
from app.models.sources import Source, TokenStore, source_from_settings
from benchmarks.page_engine import LoadableEngine
from tests.conftest import tiny_engine_settings
from tests.hub_server import HubRepo, HubServer

# Files a real repo carries that vLLM does not need: they must never be downloaded.
EXTRAS = {
    "pytorch_model.bin": b"\x80" * 40_000,
    "original/consolidated.00.pth": b"\x80" * 30_000,
    "original/params.json": b"{}",
    "README.md": b"# tiny\n",
}
GRANTED, NOT_GRANTED = "hf_granted_token", "hf_valid_but_not_granted"


@pytest.fixture(autouse=True)
def plain_http(monkeypatch: pytest.MonkeyPatch, hub_online: None) -> None:
    # Online to the loopback Hub, which speaks plain HTTP, not Xet; children inherit this.
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


@pytest.fixture
def hub(tiny_model: Path):
    repos = [
        HubRepo.from_folder("org/tiny", tiny_model, extra=EXTRAS),
        HubRepo.from_folder("org/tiny-copy", tiny_model, extra={"README.md": b"another"}),
        HubRepo.from_folder("gated-org/tiny-gated", tiny_model, gated=True, allowed_tokens={GRANTED}),
    ]
    with HubServer(repos, valid_tokens={NOT_GRANTED}) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "hf-cache", tmp_path / "modelscope")


def cache_bytes(store: ModelStore) -> int:
    """Bytes of model files in the cache (snapshots are symlinks to the blobs; refs and listings are tiny)."""
    return sum(p.stat().st_size for p in store.hf_cache.glob("models--*/blobs/*"))


def gets(hub: HubServer, name: str) -> int:
    return sum(1 for method, path, _ in hub.requests if method == "GET" and path.endswith("/" + name))


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def test_size_shown_before_download_equals_bytes_written(hub: HubServer, store: ModelStore, tiny_model: Path):
    plan = plan_download("org/tiny", None, Source("huggingface", hub.url), store)
    names = [f.name for f in plan.files]
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert not any(n.endswith((".bin", ".pth", ".md")) or n.startswith("original/") for n in names)
    expected = sum((tiny_model / n).stat().st_size for n in names)
    assert plan.download_bytes == expected and plan.cached_bytes == 0
    assert plan.config["model_type"] == "qwen2"
    # Planning leaves nothing behind in the cache.
    assert not store.hf_repo_folder("org/tiny").exists()

    progress = Downloads().start(plan).wait(120)
    assert progress.status == "done", progress.error
    assert progress.done_bytes == progress.total_bytes == plan.download_bytes
    assert cache_bytes(store) == plan.download_bytes
    for name in names:
        assert (progress.path / name).read_bytes() == (tiny_model / name).read_bytes()
    assert gets(hub, "pytorch_model.bin") == gets(hub, "consolidated.00.pth") == gets(hub, "README.md") == 0
    # Asked again, everything is already there.
    again = plan_download("org/tiny", "main", Source("huggingface", hub.url), store)
    assert again.download_bytes == 0 and again.cached_bytes == plan.download_bytes


def test_cancel_mid_file_leaves_no_partial_file_and_a_restart_finishes(hub: HubServer, store: ModelStore):
    plan = plan_download("org/tiny", None, Source("huggingface", hub.url), store)
    hub.throttle = 100_000  # bytes/s: the 750 kB weights take several seconds
    downloads = Downloads()
    download = downloads.start(plan)
    wait_for(lambda: hub.bytes_sent.get("model.safetensors", 0) > 100_000)
    assert download.progress().done_bytes > 0 and download.progress().speed > 0
    started = time.monotonic()
    progress = download.cancel()
    assert time.monotonic() - started < 10
    assert progress.status == "cancelled"
    assert partial_files(store.hf_cache) == set()
    snapshot_weights = list(store.hf_cache.rglob("model.safetensors"))
    assert snapshot_weights == []
    # The server sees the client go away: nothing is being sent any more.
    wait_for(lambda: hub.active_transfers == 0, timeout=5)
    # The files finished before the cancel stay, but the model is not offered for loading.
    assert [(m.repo_id, m.path) for m in list_cached(store)] == [("org/tiny", None)]
    with pytest.raises(UserError) as err:
        resolve_snapshot(store, "org/tiny")
    assert err.value.key == "models.cached_incomplete"

    hub.throttle = None
    config_gets, tokenizer_gets = gets(hub, "config.json"), gets(hub, "tokenizer.json")
    progress = downloads.start(plan).wait(120)
    assert progress.status == "done", progress.error
    assert cache_bytes(store) == plan.download_bytes
    # Files finished before the cancel were not fetched again.
    assert gets(hub, "config.json") == config_gets and gets(hub, "tokenizer.json") == tokenizer_gets


def test_a_connection_dropped_mid_file_is_retried(hub: HubServer, store: ModelStore, tiny_model: Path):
    plan = plan_download("org/tiny", None, Source("huggingface", hub.url), store)
    hub.drop_once["model.safetensors"] = 300_000
    progress = Downloads().start(plan).wait(120)
    assert progress.status == "done", progress.error
    assert progress.attempt == 1  # the client's own retry carried on within the attempt
    assert gets(hub, "model.safetensors") == 2
    assert (progress.path / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert cache_bytes(store) == plan.download_bytes


def test_a_big_file_dropped_mid_way_continues_where_it_stopped(store: ModelStore, tiny_model: Path):
    # The client writes in 10 MiB pieces; past the first piece, a retry asks only for the rest.
    weights = os.urandom(12 * 2**20)
    repo = HubRepo("org/big", {"config.json": (tiny_model / "config.json").read_bytes(), "model.safetensors": weights})
    with HubServer([repo]) as hub:
        plan = plan_download("org/big", None, Source("huggingface", hub.url), store)
        hub.drop_once["model.safetensors"] = 11 * 2**20
        progress = Downloads().start(plan).wait(120)
        assert progress.status == "done", progress.error
        assert hub.ranges == [("model.safetensors", f"bytes={10 * 2**20}-")]
        assert (progress.path / "model.safetensors").read_bytes() == weights
        assert hub.bytes_sent["model.safetensors"] == 11 * 2**20 + 2 * 2**20


def test_a_server_error_is_retried_with_backoff(hub: HubServer, store: ModelStore):
    plan = plan_download("org/tiny", None, Source("huggingface", hub.url), store)
    hub.fail_once["model.safetensors"] = 503
    progress = Downloads().start(plan, backoff=0.2).wait(120)
    assert progress.status == "done", progress.error
    assert progress.attempt == 2
    assert cache_bytes(store) == plan.download_bytes
    # The second attempt fetched only what the first had not finished (the planner read config.json once).
    assert gets(hub, "config.json") == 2 and gets(hub, "model.safetensors") == 2


def test_gated_model_asks_for_a_token_then_downloads_with_it(hub: HubServer, store: ModelStore, tmp_path: Path):
    repo = "gated-org/tiny-gated"
    with pytest.raises(UserError) as err:
        plan_download(repo, None, Source("huggingface", hub.url), store)
    assert err.value.key == "models.err_gated"
    assert f"https://huggingface.co/{repo}" in err.value.message("en")
    assert "令牌" in err.value.message("zh-CN")

    with pytest.raises(UserError) as err:
        plan_download(repo, None, Source("huggingface", hub.url, NOT_GRANTED), store)
    assert err.value.key == "models.err_gated_no_access"

    with pytest.raises(UserError) as err:
        plan_download(repo, None, Source("huggingface", hub.url, "hf_not_a_real_token"), store)
    assert err.value.key == "models.err_bad_token"

    tokens = TokenStore(tmp_path / "config" / "hf_token")
    tokens.save(f"  {GRANTED}\n")
    assert (tokens.path.stat().st_mode & 0o777) == 0o600
    assert tokens.load() == GRANTED
    plan = plan_download(repo, None, Source("huggingface", hub.url, tokens.load()), store)
    progress = Downloads().start(plan).wait(120)
    assert progress.status == "done", progress.error
    assert ("GET", f"/{repo}/resolve/{plan.commit}/model.safetensors", f"Bearer {GRANTED}") in hub.requests
    with pytest.raises(UserError):
        tokens.save("not a token")


@pytest.mark.parametrize(
    ("repo", "revision", "key"),
    [
        ("org/does-not-exist", None, "models.err_repo_not_found_anonymous"),
        ("org/tiny", "v9.9", "models.err_revision_not_found"),
        ("not a repo id", None, "models.bad_repo_id"),
    ],
)
def test_hub_errors_become_one_sentence(hub: HubServer, store: ModelStore, repo, revision, key):
    with pytest.raises(UserError) as err:
        plan_download(repo, revision, Source("huggingface", hub.url), store)
    assert err.value.key == key
    for lang in ("en", "zh-CN"):
        message = err.value.message(lang)
        assert "{" not in message and "Traceback" not in message and len(message.splitlines()) == 1
    assert not store.hf_cache.exists() or not any(store.hf_cache.glob("models--*"))


def test_offline_is_one_sentence(store: ModelStore):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: refused
        with pytest.raises(UserError) as err:
            plan_download("org/tiny", None, Source("mirror", url), store)
    assert err.value.key == "models.err_offline"
    assert url in err.value.message("en")


def test_disk_full_is_refused_before_downloading(hub: HubServer, store: ModelStore):
    plan = plan_download("org/tiny", None, Source("huggingface", hub.url), store, free_bytes=500_000)
    assert not plan.disk_ok
    with pytest.raises(UserError) as err:
        Downloads().start(plan)
    assert err.value.key == "models.disk_full"
    assert "GiB" in err.value.message("en") or "MiB" in err.value.message("en")
    assert gets(hub, "model.safetensors") == 0
    assert not store.hf_repo_folder("org/tiny").exists()


def test_disk_filling_up_mid_download_leaves_no_partial_file(hub: HubServer, tmp_path: Path):
    small = tmp_path / "small-disk"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        store = ModelStore(small / "hf", small / "ms")
        # The planner is told there is room, as a disk that other programs fill meanwhile would.
        plan = plan_download("org/tiny", None, Source("huggingface", hub.url), store, free_bytes=10**12)
        progress = Downloads().start(plan).wait(120)
        assert progress.status == "failed"
        assert progress.error.key == "models.err_disk_full"
        assert partial_files(store.hf_cache) == set()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_same_model_twice_is_one_download_and_several_run_at_once(hub: HubServer, store: ModelStore):
    source = Source("huggingface", hub.url)
    first = plan_download("org/tiny", None, source, store)
    other = plan_download("org/tiny-copy", None, source, store)
    hub.throttle = 400_000
    downloads = Downloads()
    a = downloads.start(first)
    assert downloads.start(plan_download("org/tiny", "main", source, store)) is a
    b = downloads.start(other)
    assert b is not a and a.running and b.running
    assert a.wait(120).status == "done" and b.wait(120).status == "done"
    assert gets(hub, "model.safetensors") == 2  # once per repo
    assert {m.repo_id for m in list_cached(store)} == {"org/tiny", "org/tiny-copy"}


def test_cached_models_are_listed_deleted_and_resolved_offline(hub: HubServer, store: ModelStore):
    plan = plan_download("org/tiny", None, Source("huggingface", hub.url), store)
    path = Downloads().start(plan).wait(120).path
    (cached,) = list_cached(store)
    assert cached.repo_id == "org/tiny" and cached.size_bytes == plan.download_bytes and cached.last_used > 0
    assert cached.path == path
    # Resolving needs no network: the server is not asked anything.
    before = len(hub.requests)
    assert resolve_snapshot(store, "org/tiny") == path
    assert len(hub.requests) == before

    on_disk = cache_bytes(store)
    freed = delete_cached(store, "org/tiny")
    assert freed == plan.download_bytes
    assert cache_bytes(store) == on_disk - freed == 0
    assert list_cached(store) == []
    with pytest.raises(UserError) as err:
        resolve_snapshot(store, "org/tiny")
    assert err.value.key == "models.not_cached"


def test_orphaned_partial_files_are_removed_but_not_a_running_downloads(store: ModelStore):
    orphan = store.hf_repo_folder("org/old") / "blobs" / "abc.1234.incomplete"
    running = store.hf_repo_folder("org/busy") / "blobs" / "def.5678.incomplete"
    for path in (orphan, running):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 1000)
    assert remove_orphans(store, busy={store.hf_repo_folder("org/busy")}) == (1, 1000)
    assert not orphan.exists() and running.exists()


@pytest.mark.e2e
def test_the_token_goes_to_a_mirror_only_when_allowed(hub: HubServer, store: ModelStore, monkeypatch):
    settings = AppSettings(download_source="mirror", mirror_endpoint=hub.url + "/")
    source = source_from_settings(settings, GRANTED)
    assert source.endpoint == hub.url and source.token is None
    plan_download("org/tiny", None, source, store)
    assert all(auth is None for _, _, auth in hub.requests)

    allowed = source_from_settings(dataclasses.replace(settings, send_token_to_mirror=True), GRANTED)
    plan_download("org/tiny", None, allowed, store)
    assert any(auth == f"Bearer {GRANTED}" for _, _, auth in hub.requests)

    with pytest.raises(UserError) as err:
        source_from_settings(dataclasses.replace(settings, mirror_endpoint="hf-mirror"), None)
    assert err.value.key == "models.bad_mirror"

    # A mirror set through HF_ENDPOINT (as many users in China do) gets no token either.
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert source_from_settings(AppSettings(), GRANTED) == Source("huggingface", hub.url, None, token_withheld=True)
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co/")
    assert source_from_settings(AppSettings(), GRANTED).token == GRANTED


def _cli(tmp_path: Path, hub: HubServer, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "VLLM_CHAT_HOME": str(tmp_path / "home"),
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "LANG": "en_US.UTF-8",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app", "download", *args, "--source", "mirror", "--mirror", hub.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.e2e
def test_cli_downloads_with_a_progress_bar(hub: HubServer, tmp_path: Path):
    proc = _cli(tmp_path, hub, "org/tiny")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "100.0%" in out and "ETA" in out
    assert "Download:" in out and "org/tiny" in out
    snapshot = Path(out.strip().splitlines()[-1])
    assert (snapshot / "model.safetensors").is_file()

    missing = _cli(tmp_path, hub, "org/nothing-here")
    out, err = missing.communicate(timeout=120)
    assert missing.returncode == 1
    assert "org/nothing-here" in err and "Traceback" not in err


@pytest.mark.e2e
def test_cli_ctrl_c_cancels_cleanly(hub: HubServer, tmp_path: Path):
    hub.throttle = 100_000
    proc = _cli(tmp_path, hub, "org/tiny")
    wait_for(lambda: hub.bytes_sent.get("model.safetensors", 0) > 100_000, timeout=60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "cancelled" in out
    assert partial_files(tmp_path / "hf-cache") == set()
    wait_for(lambda: hub.active_transfers == 0, timeout=5)


def test_models_tab_functions(hub: HubServer, make_app, tmp_path: Path):
    from app.ui.models_panel import ModelsPanel

    app = make_app(Engine())
    panel = ModelsPanel(app)
    assert panel.set_source("mirror", "not a url", False) != ""
    assert app.settings.download_source == "huggingface"  # refused: the old choice is kept
    assert panel.set_source("mirror", hub.url, False) == ""
    panel.store = ModelStore(tmp_path / "hf-cache", tmp_path / "modelscope")

    report = panel.check("org/tiny", "", "en")
    assert "Download: **" in report and "KiB" in report
    assert "GPU" in report or "CPU" in report
    assert panel.check("org/does-not-exist", "", "zh-CN").startswith("⚠️")
    assert panel.pick("qwen2.5-7b-instruct") == "Qwen/Qwen2.5-7B-Instruct"

    assert "org/tiny" in panel.download("org/tiny", "", "en")
    wait_for(lambda: not app.downloads.find("org/tiny").running, timeout=120)
    text, running = panel.progress("en")
    assert "downloaded" in text and not running
    table, choices = panel.cached_table("en")
    assert "org/tiny" in table and "ready to load" in table
    assert choices == [(choices[0][0], "huggingface:org/tiny")]
    assert "Deleted org/tiny" in panel.delete("huggingface:org/tiny", "en")
    assert panel.cached_table("en")[1] == []
    assert "not being downloaded" in panel.cancel("org/tiny", "en")


def test_download_and_load_in_one_step_loads_the_downloaded_folder(hub, make_app, engine_loop, tiny_model, tmp_path):
    """The browser's "Download and load": progress while downloading, then a load of the folder
    just downloaded (the Hub is stopped first: nothing of the load may need it). On the stand-in
    engine; the same flow into a real engine, and its reply, is tests/test_model_browser_page.py's."""
    from app.ui.model_browser import BrowserPanel
    from app.ui.models_panel import ModelsPanel

    engine = LoadableEngine()
    app = make_app(engine)
    app.update_settings(engine=tiny_engine_settings())
    panel = ModelsPanel(app)
    panel.set_source("mirror", hub.url, False)
    panel.store = ModelStore(tmp_path / "hf-cache", tmp_path / "modelscope")
    browser = BrowserPanel(panel)
    assert browser.describe("org/tiny", "en")[1] is False  # not here yet: "Download and load"
    hub.throttle = 400_000  # slow enough to see the download's progress

    async def run() -> list[tuple[str, bool]]:
        seen = []
        async for line, loaded in browser.download_and_load("org/tiny", "en"):
            seen.append((line, loaded))
            if line.startswith("Loading"):
                hub.stop()
        return seen

    seen = engine_loop.run(run())
    assert any("%" in line and "/s" in line for line, _ in seen[:-2]), seen
    assert seen[-1][1] is True and "Loaded org/tiny." in seen[-1][0], seen[-1]
    assert app.engine.model_name == "org/tiny"
    # The engine was given the downloaded folder, whole, not the repo id to fetch.
    ((folder, settings),) = engine.loaded
    assert Path(folder).is_relative_to(tmp_path / "hf-cache") and settings == tiny_engine_settings()
    assert all((Path(folder) / f.name).read_bytes() == f.read_bytes() for f in tiny_model.iterdir() if f.is_file())
    assert browser.describe("org/tiny", "en")[1] is True  # cached now: "Load"
    # Remembered by its repo id, once, with the engine settings the user chose.
    saved = load_settings(app.paths)
    assert saved.model == "org/tiny" and saved.engine == tiny_engine_settings()


def test_modelscope_without_its_package_says_how_to_install_it(store: ModelStore):
    import importlib.util

    if importlib.util.find_spec("modelscope") is not None:
        pytest.skip("modelscope is installed here")
    with pytest.raises(UserError) as err:
        plan_download("Qwen/Qwen2.5-0.5B-Instruct", None, Source("modelscope"), store)
    assert err.value.key == "models.err_modelscope_missing"
    assert "pip install modelscope" in err.value.message("zh-CN")
