"""Stopping an engine: its own processes (the EngineCore, its workers) and the shared memory they use.

vLLM's EngineCore and workers talk through shared-memory ring buffers (Python's
`multiprocessing.shared_memory`, named `/dev/shm/psm_*`); the process that created one unlinks it
as it shuts down. A process killed before that leaves its segment behind (multiprocessing's
resource tracker then warns "leaked shared_memory objects" when the app exits), so after the
processes are gone the segments they used and left are removed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
# Python's name prefix for shared_memory segments (multiprocessing.shared_memory._SHM_NAME_PREFIX).
SHM_PREFIX = "psm_"
# After the engine's shutdown: how long its processes may take to be gone (a killed process
# still has to release its device memory), and how long after a kill.
EXIT_WAIT_S = 2.0
KILL_WAIT_S = 3.0
# How long vLLM's EngineCore (and its workers) may take to stop after being asked before vLLM
# kills them. What a clean stop needs (requests aborted, shared memory unlinked, device memory
# released) is done within about a second; the rest is the interpreters' own teardown, which the
# user would wait for with nothing to gain (measured on 2 busy cores: 4.5-5 s in all).
SHUTDOWN_GRACE_S = 3.0
# A build given up: how often to look again for processes it started meanwhile.
KILL_POLL_S = 0.5
# Aborting the running requests before the shutdown: an engine that does not answer is dead.
ABORT_TIMEOUT_S = 1.0


@dataclass
class EngineProcesses:
    """The processes one engine started, and the shared-memory segments they map."""

    procs: list[psutil.Process] = field(default_factory=list)
    segments: set[str] = field(default_factory=set)

    @classmethod
    def started_since(cls, before: set[int]) -> EngineProcesses:
        """The EngineCore and its workers started since `before` (pids of our children then);
        multiprocessing's resource tracker also appears among the children but lives as long as we do."""
        procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and _is_vllm_process(p)]
        return cls(procs, set().union(*(_mapped_segments(p) for p in procs)))

    @classmethod
    def starting_since(cls, before: set[int]) -> EngineProcesses:
        """What an engine build has started since `before` so far, named or not yet: a spawned
        EngineCore takes its name only once it has imported vLLM (seconds). Children that are
        not multiprocessing's (MCP servers, downloads) and its resource tracker are left out."""
        return cls(
            [p for p in psutil.Process().children(recursive=True) if p.pid not in before and _is_engine_child(p)]
        )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def gone(self) -> list[psutil.Process]:
        """Those that are no longer running (an exited child not yet reaped counts as gone)."""
        return [p for p in self.procs if not alive(p)]

    def end(self) -> None:
        """Wait for every process to be gone, killing what is left after a short wait, then
        remove the segments that no process unlinked. Blocks: run it in a worker thread."""
        running = [p for p in self.procs if alive(p)]
        if running:
            _, running = psutil.wait_procs(running, EXIT_WAIT_S)
        for proc in running:
            log.warning("engine process %d (%s) is still running after the shutdown: killing it", proc.pid, _name(proc))
            proc.kill()
        if running:
            _, running = psutil.wait_procs(running, KILL_WAIT_S)
        if running:
            log.warning("engine processes %s did not end yet", [p.pid for p in running])
        remove_segments(self.segments)


def remove_segments(names: set[str]) -> None:
    """Unlink the named shared-memory segments that still exist (and tell the resource tracker,
    which would otherwise report them as leaked at exit)."""
    for name in sorted(names):
        try:
            segment = shared_memory.SharedMemory(name=name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not open shared memory %s: %s", name, exc)
            continue
        segment.close()
        segment.unlink()
        log.info("removed shared memory %s left by the engine", name)


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _mapped_segments(proc: psutil.Process) -> set[str]:
    """Python shared-memory segments that `proc` maps (Linux: from /proc/PID/maps)."""
    try:
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    except OSError:
        return set()
    names = set()
    for line in maps.splitlines():
        # address perms offset device inode path, the path ending in " (deleted)" once unlinked
        path = line.split(maxsplit=5)[-1]
        folder, _, name = path.rpartition("/")
        if folder == str(SHM_DIR) and name.startswith(SHM_PREFIX) and not name.endswith(" (deleted)"):
            names.add(name)
    return names


def _is_vllm_process(proc: psutil.Process) -> bool:
    try:
        return proc.name().startswith("VLLM::")
    except psutil.Error:
        return False


def _is_engine_child(proc: psutil.Process) -> bool:
    if _is_vllm_process(proc):
        return True
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "multiprocessing.spawn" in command and "resource_tracker" not in command


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "?"


async def shut_down(llm: Any, processes: EngineProcesses) -> None:
    """Abort what is running, shut vLLM down, then wait for its processes to be gone (killing
    what is left) and remove the shared memory they left."""
    if llm is not None:
        await _abort_all(llm)
        # vLLM cancels its output handler only after its engine has ended: on a busy machine the
        # engine outlives the grace, is killed, and the handler, still reading, logs the dead
        # engine's traceback as the app's last words. Nothing is running now: cancel it first.
        handler = getattr(llm, "output_handler", None)
        if handler is not None:
            handler.cancel()
        # In a worker thread, so that the page and the API go on answering meanwhile (the
        # status bar says "no model" at once, not when the processes have stopped). With no
        # request left in flight, vLLM's output handler has nothing to fail on as its engine ends.
        await asyncio.to_thread(llm.shutdown, SHUTDOWN_GRACE_S)
        # Drop the last reference now: a later __del__ at interpreter exit runs vLLM's
        # shutdown again after its module globals are gone.
        del llm
        gc.collect()
    await asyncio.to_thread(processes.end)


async def _abort_all(llm: Any) -> None:
    """End every running request now, each stream with finish_reason "abort" (chats, /v1 streams),
    so nothing is left waiting on an engine that is going away."""
    if llm.errored:
        return
    try:
        async with asyncio.timeout(ABORT_TIMEOUT_S):
            await llm.pause_generation(mode="abort", clear_cache=False)
    except Exception as exc:  # a dying engine: its shutdown follows all the same
        log.info("aborting the running requests before the shutdown failed: %r", exc)


async def stop_starting(build: asyncio.Future, before: set[int]) -> bool:
    """End an engine build that was given up: kill the processes it has started (an EngineCore
    still importing vLLM, its workers), so that vLLM's wait for them fails at once instead of
    after a whole start (tens of seconds for a large model), and wait for the build to end.
    Returns whether the caller was cancelled meanwhile."""
    cancelled = False
    while not build.done():
        for proc in EngineProcesses.starting_since(before).procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        try:
            await asyncio.wait([build], timeout=KILL_POLL_S)
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


async def wait_through_cancellation(future: asyncio.Future) -> bool:
    """Wait for `future` to end, through any number of cancellations of the caller (cleanup
    that must finish first); returns whether the caller was cancelled meanwhile."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled
