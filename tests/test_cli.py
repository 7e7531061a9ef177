"""The launcher as a user runs it: `python -m app --model ...` serves the app on its port, and
stops, leaving nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port, still_running, vllm_processes

# Each test starts `python -m app` as a user does; two of them load the tiny model in it.
pytestmark = [pytest.mark.e2e, pytest.mark.engine]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


REPO = Path(__file__).resolve().parent.parent
# What the user was promised: the app, its engine and their shared memory gone this soon.
STOP_WITHIN_S = 5.0
# What Python's multiprocessing (vLLM's shared-memory queues, its locks) creates in /dev/shm.
SHM_PREFIXES = ("psm_", "sem.mp-", "mp-")


def _shm() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(SHM_PREFIXES)}


def _group(pgid: int) -> list[psutil.Process]:
    """The live processes of the process group `pgid` (zombies waiting to be reaped are gone)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def _wait_ready(proc: subprocess.Popen, port: int, log: Path) -> None:
    url, deadline = f"http://127.0.0.1:{port}/healthz", time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=5) as resp:
            if json.loads(resp.read())["state"] == "ready":
                return
        time.sleep(0.5)
    raise AssertionError("the model never became ready: " + log.read_text()[-3000:])


def _open_page_stream(port: int) -> threading.Thread:
    """What an open tab holds for as long as it is open: Gradio's session heartbeat stream."""

    url = f"http://127.0.0.1:{port}/gradio_api/heartbeat/open-tab"

    def hold() -> None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=60) as resp:
            while resp.read(1):
                pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_app_starts_serves_ui_loads_model_and_a_term_leaves_nothing_behind(tiny_model: Path, tmp_path: Path) -> None:
    """Started as a user starts it, then stopped as a user does (a closed terminal, `start.sh
    --stop`, a TERM from the system) with a page open: within a few seconds nothing of it is
    left, no process (the engine's hold the GPU) and no shared memory (vLLM's ring buffers,
    which the resource tracker would report leaked)."""
    port = free_port()
    env = {**os.environ, "VLLM_CHAT_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    shm_before = _shm()
    log = tmp_path / "app.log"
    command = [sys.executable, "-m", "app", "--model", str(tiny_model), "--max-model-len", "256"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, "--enforce-eager", "--port", str(port), "--no-browser"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, port, log)
        status, page = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "gradio" in page.lower()
        # The model is remembered for next time.
        saved = json.loads((tmp_path / "home" / "config" / "settings.json").read_text())
        assert saved["model"] == str(tiny_model) and saved["engine"]["max_model_len"] == 256
        stream = _open_page_stream(port)
        time.sleep(1)
        engine_procs = vllm_processes(proc.pid)
        assert engine_procs and all(os.getpgid(p.pid) == proc.pid for p in engine_procs), engine_procs
        made = _shm() - shm_before
        assert any(name.startswith("psm_") for name in made), made
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        while time.monotonic() - stopped < STOP_WITHIN_S and (proc.poll() is None or _group(proc.pid)):
            time.sleep(0.05)
        took = time.monotonic() - stopped
        left = [f"{p.pid} {p.name()}" for p in _group(proc.pid)]
        assert proc.poll() is not None and not left, f"still running {took:.1f} s after TERM: {left}"
        assert not still_running(engine_procs)
        stream.join(1)
        assert not stream.is_alive(), "the page's stream outlived the app"
        assert not (made & _shm()), f"shared memory left {took:.1f} s after TERM: {made & _shm()}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # Nor a stack trace, nor a leak report.
    output = log.read_text()
    assert "leaked shared_memory" not in output, output[-3000:]
    assert "Traceback" not in output and "Exception ignored" not in output, output[-3000:]


def test_port_in_use_is_explained(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "app", "--port", str(port), "--no-browser"],
            env={**os.environ, "VLLM_CHAT_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode != 0
    assert f"--port {port + 1}" in out.stderr and "端口" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_flag_value_is_explained(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "--gpu-memory-utilization", "1.7", "--no-browser"],
        env={**os.environ, "VLLM_CHAT_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "gpu_memory_utilization" in out.stderr and "Traceback" not in out.stderr


def test_term_while_the_model_loads_stops_the_app_and_its_engine(tiny_model: Path, tmp_path: Path) -> None:
    """The engine's processes start before the page is built; a TERM that comes then (start.sh
    --stop, a closed window) must still shut them down, not leave them holding the device."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "--model",
            str(tiny_model),
            "--max-model-len",
            "256",
            "--port",
            str(free_port()),
            "--no-browser",
        ],
        env={**os.environ, "VLLM_CHAT_HOME": str(tmp_path / "home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    engine_procs: list[psutil.Process] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not engine_procs:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            engine_procs = vllm_processes(proc.pid)
            time.sleep(0.2)
        assert engine_procs, "the engine never started"
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read()
    assert "Traceback" not in output and "Exception ignored" not in output, output[-3000:]
    psutil.wait_procs(engine_procs, timeout=15)
    assert not still_running(engine_procs)
