"""The child processes the benchmark starts: the app (`python -m app`), `vllm serve`, and a bare
engine, all with one set of engine settings, each timed from process start to ready."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.config.settings import EngineSettings
from app.models.catalog import load_catalog
from app.models.parsers import parsers_for
from benchmarks.bare_engine import BARE_READY

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class EngineConfig:
    """One set of engine settings, spoken as `vllm serve` flags and as the app's EngineSettings."""

    model: str
    max_model_len: int
    gpu_memory_utilization: float
    enforce_eager: bool
    on_cpu: bool
    cpu_kv_cache_gib: int = 1  # CPU only
    load_format: str = "auto"

    @property
    def name(self) -> str:
        """The model name the app serves a local folder under (its folder name)."""
        return Path(self.model).name

    def vllm_flags(self) -> list[str]:
        flags = [
            "--model", self.model,
            "--served-model-name", self.name,
            "--max-model-len", str(self.max_model_len),
            "--gpu-memory-utilization", str(self.gpu_memory_utilization),
        ]
        # The app always runs eager on CPU (inductor compiles for minutes there).
        if self.enforce_eager or self.on_cpu:
            flags.append("--enforce-eager")
        if self.load_format != "auto":
            flags += ["--load-format", self.load_format]
        return flags

    def serve_flags(self) -> list[str]:
        """`vllm serve`'s: the engine's, and the parsers the app picks for this model, so both
        servers do the same work per request."""
        flags = self.vllm_flags()
        parsers = parsers_for(self.name, Path(self.model), load_catalog())
        if parsers.tool_call:
            flags += ["--enable-auto-tool-choice", "--tool-call-parser", parsers.tool_call]
        if parsers.reasoning:
            flags += ["--reasoning-parser", parsers.reasoning]
        return flags

    def vllm_env(self) -> dict[str, str]:
        """What vLLM reads from the environment: on CPU, the KV cache size the app sets through its settings."""
        return {"VLLM_CPU_KVCACHE_SPACE": str(self.cpu_kv_cache_gib)} if self.on_cpu else {}

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
            enforce_eager=self.enforce_eager,
            cpu_kv_cache_gib=float(self.cpu_kv_cache_gib),
            load_format=self.load_format,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChildProcess:
    """A child in its own process group (its engine processes go with it), output to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    async def wait_until(self, ready: Callable[[], Awaitable[bool]], timeout: float = 900) -> float:
        """Seconds from start until `ready()`, checked every 50 ms."""
        deadline = self.started + timeout
        while not await ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.name} was not ready after {timeout:.0f} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        return time.perf_counter() - self.started

    async def wait_for_http(self, url: str, check: Callable[[httpx.Response], bool], timeout: float = 900) -> float:
        """Seconds from start until GET `url` passes `check`. One client for all the polls: a new
        one per poll costs a TLS context each time, CPU taken from the process being timed."""
        async with httpx.AsyncClient(timeout=2) as client:

            async def ready() -> bool:
                try:
                    return check(await client.get(url))
                except httpx.HTTPError:
                    return False

            return await self.wait_until(ready, timeout)

    async def wait_exit(self, timeout: float = 120) -> None:
        deadline = time.perf_counter() + timeout
        while self.proc.poll() is None and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        self.stop()

    def stop(self) -> None:
        """Ask politely (the app unloads its engine on the way out), then end what is left of the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone: nothing left behind
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _app_ready(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    state = response.json().get("state")
    if state == "failed":
        raise RuntimeError("the app could not load the model (GET /healthz says failed); see its log")
    return state == "ready"


async def start_app(config: EngineConfig, log: Path) -> tuple[ChildProcess, str, float]:
    """The app as users start it, reading the settings saved in its home (VLLM_CHAT_HOME); the load
    format, which is never saved, is given as a flag.
    Returns the process, its URL and seconds from process start to model ready."""
    port = free_port()
    app = ChildProcess(
        "the app",
        [sys.executable, "-m", "app", "--model", config.model, "--no-browser", "--host", "127.0.0.1",
         "--port", str(port), "--load-format", config.load_format],
        log,
    )
    app.start()
    url = f"http://127.0.0.1:{port}"
    try:
        seconds = await app.wait_for_http(f"{url}/healthz", _app_ready)
    except BaseException:
        app.stop()
        raise
    return app, url, seconds


async def start_vllm_serve(config: EngineConfig, log: Path) -> tuple[ChildProcess, str, float]:
    """`vllm serve` as the deployment guide runs it (the `vllm` command fails under vllm-cpu; this is its module)."""
    port = free_port()
    server = ChildProcess(
        "vllm serve",
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *config.serve_flags(),
         "--host", "127.0.0.1", "--port", str(port)],
        log,
        env=config.vllm_env(),
    )
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        seconds = await server.wait_for_http(f"{url}/health", lambda r: r.status_code == 200)
    except BaseException:
        server.stop()
        raise
    return server, url, seconds


async def bare_engine_start(config: EngineConfig, log: Path) -> float:
    """Seconds from process start to a built AsyncLLM with nothing else loaded: the reference for cold start."""
    bare = ChildProcess(
        "the bare engine", [sys.executable, "-m", "benchmarks.bare_engine", *config.vllm_flags()], log,
        env=config.vllm_env(),
    )
    bare.start()
    try:
        seconds = await bare.wait_until(lambda: _logged(log, BARE_READY))
        await bare.wait_exit()
    finally:
        bare.stop()
    return seconds


async def _logged(log: Path, marker: str) -> bool:
    try:
        return marker in log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def pin_apart(engine_pids: list[int], frontend_pids: list[int]) -> dict[str, list[int]] | None:
    """On a CPU-only machine, give the engines the cores vLLM bound their workers to and the
    frontends (the app, `vllm serve`, this process) the other cores, as a GPU machine does: the
    model runs on the GPU there, the frontends on the CPU. Left to itself, vLLM's CPU engine keeps
    every core it can get busy (its processes spin while they wait for each other), so every
    frontend microsecond would be taken from the engine. The EngineCore goes with its workers,
    off the core vLLM leaves free for it: there it would spin beside the frontends, while next to
    its worker the two hand the core to each other (each yields while it waits). Returns the CPU
    sets, or None when there is no core to spare."""
    everything = set(os.sched_getaffinity(0))
    engine_cpus: set[int] = set()
    for pid in engine_pids:
        with contextlib.suppress(OSError):
            if _process_name(pid).startswith("VLLM::Worker"):
                # Every thread: with an OpenMP runtime preloaded, each is bound to one core.
                for tid in _threads(pid):
                    engine_cpus |= os.sched_getaffinity(tid)
    frontend_cpus = everything - engine_cpus
    if not engine_cpus or not frontend_cpus:
        return None
    for pids, cpus in ((engine_pids, engine_cpus), (frontend_pids, frontend_cpus)):
        for pid in pids:
            set_affinity(pid, cpus)
    return {"engine": sorted(engine_cpus), "frontends": sorted(frontend_cpus)}


def set_affinity(pid: int, cpus: set[int], keep_narrower: bool = True) -> None:
    """Every thread of the process (Linux applies an affinity to one thread at a time). With
    `keep_narrower`, threads bound inside `cpus` already (vLLM's compute threads) keep their binding."""
    for tid in _threads(pid):
        with contextlib.suppress(OSError):
            if not (keep_narrower and os.sched_getaffinity(tid) <= cpus):
                os.sched_setaffinity(tid, cpus)


def _process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _threads(pid: int) -> list[int]:
    return [int(task.name) for task in Path(f"/proc/{pid}/task").glob("*") if task.name.isdigit()]

