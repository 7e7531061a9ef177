"""The launcher as a user runs it: `python -m app --model ...` serves the app on its port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
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


def test_app_starts_serves_ui_loads_model_and_frees_it_on_exit(tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "VLLM_CHAT_HOME": str(tmp_path / "home")}
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
            str(port),
            "--no-browser",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        state = None
        deadline = time.time() + 240
        while time.time() < deadline and state != "ready":
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            with contextlib.suppress(OSError):
                state = json.loads(_get(f"http://127.0.0.1:{port}/healthz")[1])["state"]
            time.sleep(1)
        assert state == "ready"
        status, page = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "gradio" in page.lower()
        engine_procs = vllm_processes(proc.pid)
        assert engine_procs
        # The model is remembered for next time.
        saved = json.loads((tmp_path / "home" / "config" / "settings.json").read_text())
        assert saved["model"] == str(tiny_model) and saved["engine"]["max_model_len"] == 256
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    # Ctrl+C must not leave an engine process holding the device, nor print a stack trace.
    assert not still_running(engine_procs)
    output = proc.stdout.read()
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
        [sys.executable, "-m", "app", "--model", str(tiny_model), "--max-model-len", "256",
         "--port", str(free_port()), "--no-browser"],
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
