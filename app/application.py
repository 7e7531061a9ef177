"""The one app object: settings, paths and the core services, built once at start-up.

Adapters (UI, API, CLI) receive this object; nothing in the core imports them.
Tests build their own `App` around the shared tiny-model engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config.access import Access
from app.config.file import save_settings
from app.config.settings import AppPaths, AppSettings, EngineSettings, SamplingSettings
from app.conversations import Conversations
from app.engine import Engine
from app.engine.build import _display_name, looks_like_repo_id
from app.engine.logs import configure_engine_log
from app.engine.pool import EnginePool, LoadRequest, Member, need_bytes
from app.engine.supervision import supervise, unload_idle
from app.engine.types import ChatEngine
from app.errors import UserError
from app.metrics import AppMetrics
from app.models.cache import ModelStore, resolve_snapshot
from app.models.downloads import Downloads
from app.models.sources import refuse_if_offline
from app.tools.host import ToolHost

log = logging.getLogger(__name__)


@dataclass
class App:
    paths: AppPaths
    settings: AppSettings
    # Every model held at once; `engine` is the chat's current one.
    pool: EnginePool
    conversations: Conversations
    # The app's own Prometheus series (one registry per App, so tests can build many).
    metrics: AppMetrics = field(default_factory=AppMetrics)
    # Model downloads running in child processes (several at once; one per model).
    downloads: Downloads = field(default_factory=Downloads)
    # Who may reach this run (address, key, login, hosts, origins): flags, never saved.
    access: Access = field(default_factory=Access)
    # The chat's MCP servers, their connections and the pending approvals (None: built by `build`).
    tools: ToolHost | None = None
    # Tasks we started and must not let the garbage collector drop mid-flight.
    _tasks: set[asyncio.Task] = field(default_factory=set, repr=False)
    # Held while the settings change and are saved (UI handlers run in several threads).
    _settings_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def build(
        cls, settings: AppSettings, paths: AppPaths, engine: ChatEngine | None = None, access: Access | None = None
    ) -> App:
        paths.create()
        log_file = configure_engine_log(paths.log_dir)
        pool = EnginePool(engine or Engine(log_file=log_file), make_engine=lambda: Engine(log_file=log_file))
        app = cls(
            paths=paths,
            settings=settings,
            pool=pool,
            conversations=Conversations(paths.history_db),
            access=access or Access(),
            tools=ToolHost(paths.config_dir),
        )
        app.metrics.watch_members(pool.readings)
        return app

    @property
    def engine(self) -> ChatEngine:
        """The chat's current model's engine (an empty one while none is current)."""
        return self.pool.current_engine

    def update_settings(
        self, change: Callable[[AppSettings], AppSettings] | None = None, /, **fields: Any
    ) -> AppSettings:
        """The one way settings change: `change(current)` and/or `fields` on top, validated, then
        saved atomically, all under one lock, so two tabs saving at once both keep their change."""
        with self._settings_lock:
            new = change(self.settings) if change else self.settings
            new = dataclasses.replace(new, **fields)
            new.validate()
            save_settings(new, self.paths)
            self.settings = new
            return new

    def reply_sampling(self) -> SamplingSettings:
        """What a chat reply samples with: the model's own defaults, with every field the user set
        on top, whatever its value. Raises UserError for a combination the engine refuses."""
        return self.engine.resolve_sampling(self.settings.sampling.chosen())

    def remember_system_prompt(self, system_prompt: str) -> None:
        """The last system prompt a chat was sent becomes the default for new chats."""
        if system_prompt != self.settings.system_prompt:
            self.update_settings(system_prompt=system_prompt)

    def trust_model(self, model: str) -> None:
        """Let this model's own Python code run, from now on, for this model id alone."""
        self.update_settings(
            lambda s: s if s.trusts(model) else dataclasses.replace(s, trusted_models=[*s.trusted_models, model])
        )

    async def load_model(
        self,
        model: str,
        engine_settings: EngineSettings | None = None,
        *,
        name: str | None = None,
        folder: Path | None = None,
        remember: EngineSettings | None = None,
        current: bool = True,
    ) -> Member:
        """Load a model as a member of the pool (replacing the member of the same name) and, with
        `current`, make it the chat's model and remember it (its repo id or folder) and `remember`
        (by default the engine settings it loaded with) for the next start, unless it was loaded
        with random weights. Other members stay loaded while they fit.

        A Hugging Face id that is already in the cache loads from there without the network;
        one that is not is left to vLLM to fetch, as `vllm serve` does; `folder` is where the
        caller already found it. Its own code runs only with this run's --trust-remote-code or if
        the user trusted this model id."""
        engine_settings = engine_settings or self.settings.engine
        source = str(folder) if folder else model
        if folder is None and looks_like_repo_id(model) and not Path(model).expanduser().exists():
            with contextlib.suppress(UserError):
                source = str(resolve_snapshot(ModelStore.for_app(self.paths), model))
            if source == model:  # vLLM would fetch it from the Hub
                refuse_if_offline(self.settings.offline)
        if source != model:
            name = name or model
        name = name or _display_name(source)
        trusted = engine_settings.trust_remote_code or self.settings.trusts(model)
        run_with = dataclasses.replace(engine_settings, trust_remote_code=trusted)
        local = Path(source).expanduser()
        request = LoadRequest(
            name,
            model,
            source,
            run_with,
            need_bytes=need_bytes(local if local.is_dir() else None, run_with, self.pool.hardware()),
            restart={
                "model": model,
                "engine_settings": engine_settings,
                "name": name,
                "folder": folder,
                "remember": remember,
            },
        )
        member = await self.pool.load(
            request,
            make_current=current,
            max_loaded=self.settings.max_loaded_models,
            pinned=name in self.settings.pinned_models,
            start=lambda engine: engine.load(source, run_with, name=name),
        )
        if current and engine_settings.load_format != "dummy":
            # Random weights are for a benchmark run: the next start loads what the user chose.
            self.update_settings(model=model, engine=remember or engine_settings)
        return member

    async def load_on_request(self, model: str) -> Member:
        """A cached model an API request named, loaded beside the others (not the chat's model);
        every request naming it meanwhile waits for the same load."""
        return await self.pool.load_once(model, lambda: self.load_model(model, current=False))

    async def reload_member(self, member: Member) -> None:
        """The same model with the same settings again (after its engine died)."""
        current = member.engine is self.pool.current_engine
        if member.request.restart:
            await self.load_model(**member.request.restart, current=current)

    def start_supervision(self) -> asyncio.Task:
        """Watch the engine for as long as the app runs; restarts it once if it dies."""
        return self.spawn(supervise(self.pool, self.reload_member, self.spawn))

    def start_idle_sweep(self) -> asyncio.Task:
        """Unload (or put to sleep) the pool's idle members, for as long as the app runs."""
        return self.spawn(unload_idle(self.pool, lambda: self.settings.idle_unload_minutes * 60))

    def load_model_in_background(self, model: str, engine_settings: EngineSettings | None = None) -> asyncio.Task:
        """Start loading without waiting; failures show up in `engine.status`."""

        async def run() -> None:
            try:
                await self.load_model(model, engine_settings)
            except UserError as exc:
                log.warning("%s", exc)

        return self.spawn(run())

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """A task of the app's, kept referenced until it ends (the loop holds only weak ones): it
        goes on if the page that started it closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
