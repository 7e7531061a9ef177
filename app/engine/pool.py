"""The engine pool: every model the app holds at once, one engine each, keyed by served name.

One member is the chat's current model (`App.engine`); the others serve /v1 requests that name
them. Before a load the pool accounts memory with the fit check's arithmetic (app.models.fit)
and the "most models loaded at once" setting; a load that does not fit unloads the least
recently used member that runs no request and is not pinned, and is refused with the numbers
when that is not enough. Members idle longer than the idle time are put to sleep where vLLM has
sleep mode (CUDA/ROCm), else unloaded. No Gradio or HTTP here.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config.settings import EngineSettings
from app.engine.types import ChatEngine, EngineState
from app.errors import EngineError, UserError
from app.hardware import Hardware, detect
from app.metrics import MemberReading
from app.models import memory
from app.models.fit import ModelShape, cpu_kv_cache_bytes, format_bytes, read_config, weight_file_bytes


class MemberState(enum.StrEnum):
    LOADING = "loading"
    LOADED = "loaded"
    ASLEEP = "asleep"  # weights in CPU RAM (vLLM's sleep mode, level 1): wakes in seconds
    UNLOADED = "unloaded"
    FAILED = "failed"


# States in which a member holds memory (or is about to).
HOLDING = frozenset({MemberState.LOADING, MemberState.LOADED, MemberState.ASLEEP})


@dataclass(frozen=True)
class LoadRequest:
    """What a member was loaded from and how: enough to load it again after its engine died."""

    name: str  # the served model name, the member's key
    model: str  # what the user named (a repo id or a folder)
    source: str  # what vLLM loads (a folder, or a repo id vLLM fetches)
    settings: EngineSettings
    # Memory the member takes (fit arithmetic); 0 when unknown (a repo id vLLM fetches).
    need_bytes: int = 0
    # The App.load_model arguments, for a restart.
    restart: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Member:
    engine: ChatEngine
    request: LoadRequest
    pinned: bool = False
    last_used: float = field(default_factory=time.monotonic)
    # LM Studio's `ttl` of the last request that set one: its own idle time, in seconds.
    ttl_s: float | None = None
    asleep: bool = False
    # Set by the pool from the load's decision until its engine says LOADING itself.
    starting: bool = False
    # API requests routed here that vLLM may not count yet (waiting for a wake-up or a read).
    serving: int = 0

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def state(self) -> MemberState:
        state = self.engine.status.state
        if self.starting and state == EngineState.EMPTY:
            return MemberState.LOADING
        if state == EngineState.READY:
            return MemberState.ASLEEP if self.asleep else MemberState.LOADED
        return {
            EngineState.LOADING: MemberState.LOADING,
            EngineState.FAILED: MemberState.FAILED,
        }.get(state, MemberState.UNLOADED)

    @property
    def busy(self) -> bool:
        return self.serving > 0 or self.engine.num_unfinished_requests() > 0

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def idle_for(self, now: float) -> float:
        return now - self.last_used


@dataclass(frozen=True)
class Budget:
    """The memory models may take: RAM on the CPU, GPU memory on a GPU."""

    total_bytes: int
    on_gpu: bool


def need_bytes(folder: Path | None, settings: EngineSettings, hardware: Hardware) -> int:
    """Memory one member takes, as the fit check counts it: on the CPU its weights, its KV cache
    and the runtime in RAM; on a GPU vLLM's whole share (utilization × memory), which it claims
    at start whatever the weights. 0 when the folder is unknown."""
    if hardware.has_gpu:
        gpus = memory.Gpus.of(hardware.gpus, settings.tensor_parallel_size)
        return memory.vllm_budget(gpus.total_bytes, settings.gpu_memory_utilization) * gpus.count
    if folder is None or not (folder / "config.json").is_file():
        return 0
    files = weight_file_bytes(folder) if settings.load_format != "dummy" else 0
    try:
        weights = ModelShape.from_config(read_config(folder)).weight_bytes_in_memory(files)
    except (OSError, ValueError, UserError):  # an unusual config: the files as they are
        weights = files
    return memory.cpu_need_bytes(weights, cpu_kv_cache_bytes(settings))


class EnginePool:
    """The members and which one is current. Loads are decided one at a time (under a lock), so
    two loads never count the same free memory."""

    def __init__(self, engine: ChatEngine, make_engine: Callable[[], ChatEngine]) -> None:
        self._make_engine = make_engine
        self._members: list[Member] = []
        # The chat's engine: a member's, or an empty one while no model is current.
        self._current_engine = engine
        # The engine the app was built with (tests share one): kept loaded by `unload_all(keep_given=True)`.
        self._given = engine
        if engine.status.state == EngineState.READY and engine.status.model:
            # An engine loaded before the app was built (tests share one): its first member, which
            # nothing here loaded, so nothing here restarts.
            name = engine.status.model
            self._members.append(Member(engine, LoadRequest(name, name, name, EngineSettings())))
        self._lock = asyncio.Lock()
        # Engines start one at a time: on a GPU, vLLM sizes its KV cache from the memory free
        # while it starts, which another engine starting beside it is taking; and the processes
        # a start spawns are told from another's by when they appeared.
        self._starting = asyncio.Lock()
        self._pending: dict[str, asyncio.Future] = {}
        # Memory the members may take; None: the machine's (tests set a small one).
        self.budget_bytes: int | None = None
        self._hardware: Hardware | None = None

    # ---- what is here ----------------------------------------------------------------

    @property
    def current_engine(self) -> ChatEngine:
        return self._current_engine

    @property
    def current(self) -> Member | None:
        return next((m for m in self._members if m.engine is self._current_engine), None)

    def members(self) -> list[Member]:
        """The members, without those whose engine was unloaded behind the pool's back (the Models
        tab's Unload) unless it is the current one."""
        self._members = [
            m for m in self._members if m.state != MemberState.UNLOADED or m.engine is self._current_engine
        ]
        return list(self._members)

    def find(self, name: str) -> Member | None:
        return next((m for m in self.members() if name in (m.name, m.engine.status.model)), None)

    def readings(self) -> list[MemberReading]:
        """The members as /metrics shows them."""
        states = tuple(s.value for s in MemberState)
        return [MemberReading(m.name, m.state.value, states, m.request.need_bytes) for m in self.members()]

    def pending(self, name: str) -> asyncio.Future | None:
        """The load on request of `name` under way, if one is."""
        return self._pending.get(name)

    def hardware(self) -> Hardware:
        if self._hardware is None:
            self._hardware = detect()
        return self._hardware

    def budget(self) -> Budget:
        hardware = self.hardware()
        if self.budget_bytes is not None:
            return Budget(self.budget_bytes, hardware.has_gpu)
        if hardware.has_gpu:
            return Budget(sum(g.memory_total for g in hardware.gpus), True)
        return Budget(hardware.ram_total, False)

    # ---- loading -----------------------------------------------------------------------

    async def load(
        self,
        request: LoadRequest,
        *,
        make_current: bool,
        max_loaded: int | None,
        pinned: bool = False,
        start: Callable[[ChatEngine], Awaitable[None]],
    ) -> Member:
        """Add (or replace) the member `request.name` and load it with `start(engine)`; it becomes
        current with `make_current`. Raises EngineError with the numbers when it does not fit."""
        async with self._lock:
            member = self._place(request, pinned, make_current)
            others = [m for m in self.members() if m is not member]
            await self._make_room(request, others, max_loaded)
            if member not in self._members:
                self._members.append(member)
            if make_current:
                self._current_engine = member.engine
            member.starting = True
        try:
            async with self._starting:
                await start(member.engine)
        except BaseException:
            if member.engine is not self._current_engine and member in self._members:
                # A load on request that failed leaves nothing behind; the current one stays, to say why.
                self._members.remove(member)
            raise
        finally:
            member.starting = False
        member.asleep = False
        member.touch()
        return member

    async def load_once(self, name: str, load: Callable[[], Awaitable[Member]]) -> Member:
        """`load()` for a load on request, shared by every request that names `name` meanwhile."""
        pending = self._pending.get(name)
        if pending is None:
            pending = asyncio.ensure_future(load())
            self._pending[name] = pending
            pending.add_done_callback(lambda _: self._pending.pop(name, None))
        return await asyncio.shield(pending)

    def _place(self, request: LoadRequest, pinned: bool, make_current: bool) -> Member:
        """The member to load into: the one of that name (reloaded in place), the current engine
        if it holds nothing, or a new engine."""
        member = self.find(request.name)
        empty = self._current_engine.status.state in (EngineState.EMPTY, EngineState.FAILED)
        if member is None and make_current and empty:
            member = self.current
            if member is not None:
                self._members.remove(member)
            member = Member(self._current_engine, request)
        if member is None:
            member = Member(self._make_engine(), request)
        member.request = request
        member.pinned = member.pinned or pinned
        return member

    async def _make_room(self, request: LoadRequest, others: list[Member], max_loaded: int | None) -> None:
        """Unload least recently used idle members until `request` fits; EngineError if it cannot."""
        budget = self.budget()
        while True:
            holding = [m for m in others if m.state in HOLDING]
            used = sum(self._held_bytes(m, budget) for m in holding)
            too_many = bool(max_loaded) and len(holding) >= max_loaded
            too_big = request.need_bytes > 0 and used + request.need_bytes > budget.total_bytes
            if not too_many and not too_big:
                return
            victim = least_recently_used(holding)
            if victim is None:
                raise _refusal(request, holding, used, budget, max_loaded if too_many else None)
            await self.unload(victim)

    def _held_bytes(self, member: Member, budget: Budget) -> int:
        if member.asleep and budget.on_gpu:
            # Asleep at level 1 the weights are in CPU RAM; the GPU keeps its context.
            return memory.CUDA_CONTEXT_BYTES
        return member.request.need_bytes

    # ---- unloading, sleeping ---------------------------------------------------------------

    async def unload(self, member: Member) -> None:
        """Unload a member; its memory is free when this returns. The current member's engine
        stays as the (empty) current engine."""
        await member.engine.unload()
        member.asleep = False
        if member.engine is not self._current_engine and member in self._members:
            self._members.remove(member)

    async def wake(self, member: Member) -> None:
        if member.asleep:
            await member.engine.wake_up()
            member.asleep = False

    async def settle_idle(self, idle_s: float, now: float | None = None) -> list[Member]:
        """Put to sleep (where vLLM can) or unload the members idle longer than their idle time;
        an asleep member idle that long again is unloaded. Returns those it acted on."""
        now = time.monotonic() if now is None else now
        acted = []
        async with self._lock:
            for member in idle_members(self.members(), self._current_engine, idle_s, now):
                if not member.asleep and member.engine.capabilities.sleep:
                    await member.engine.sleep()
                    member.asleep = True
                    member.touch()  # the second idle time runs from here
                else:
                    await self.unload(member)
                acted.append(member)
        return acted

    async def unload_all(self, keep_given: bool = False) -> None:
        """Every member's engine stopped (at exit), at once; with `keep_given`, the engine the app
        was built with stays loaded."""
        engines = {id(m.engine): m.engine for m in self._members} | {id(self._current_engine): self._current_engine}
        await asyncio.gather(*(e.unload() for e in engines.values() if not (keep_given and e is self._given)))

    def seconds_to_next_idle(self, idle_s: float, now: float | None = None) -> float | None:
        """How long until the next member's idle time ends; None when none can become idle."""
        now = time.monotonic() if now is None else now
        waits = [
            member_idle_s(m, idle_s) - m.idle_for(now)
            for m in self.members()
            if m.engine is not self._current_engine and not m.pinned and member_idle_s(m, idle_s)
        ]
        return max(0.0, min(waits)) if waits else None


def member_idle_s(member: Member, idle_s: float) -> float:
    """The member's idle time: its request's `ttl`, else the setting (0: never)."""
    return member.ttl_s if member.ttl_s is not None else idle_s


def idle_members(members: list[Member], current: ChatEngine, idle_s: float, now: float) -> list[Member]:
    """Members past their idle time: loaded or asleep, running nothing, neither pinned nor the
    chat's current model."""
    return [
        m
        for m in members
        if m.state in (MemberState.LOADED, MemberState.ASLEEP)
        and m.engine is not current
        and not m.pinned
        and not m.busy
        and member_idle_s(m, idle_s) > 0
        and m.idle_for(now) >= member_idle_s(m, idle_s)
    ]


def least_recently_used(members: list[Member]) -> Member | None:
    """The member a load may unload: loaded or asleep, running no request, not pinned; the one
    used longest ago."""
    free = [m for m in members if m.state in (MemberState.LOADED, MemberState.ASLEEP) and not m.pinned and not m.busy]
    return min(free, key=lambda m: m.last_used, default=None)


def _refusal(
    request: LoadRequest, holding: list[Member], used: int, budget: Budget, max_loaded: int | None
) -> EngineError:
    kept = ", ".join(m.name for m in holding) or "—"
    if max_loaded is not None:
        return EngineError("engine.pool_too_many", model=request.name, count=len(holding), max=max_loaded, kept=kept)
    return EngineError(
        "engine.pool_no_room",
        model=request.name,
        need=format_bytes(request.need_bytes),
        free=format_bytes(max(budget.total_bytes - used, 0)),
        total=format_bytes(budget.total_bytes),
        kept=kept,
    )
