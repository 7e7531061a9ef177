"""The one app object: settings, paths and the core services, built once at start-up.

Adapters (UI, API, CLI) receive this object; nothing in the core imports them.
Tests build their own `App` around the shared tiny-model engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from app.access import Access
from app.conversations import Conversations
from app.engine import ChatEngine, Engine, looks_like_repo_id
from app.errors import UserError
from app.logs import configure_engine_log
from app.metrics import AppMetrics
from app.models.cache import ModelStore, resolve_snapshot
from app.models.downloads import Downloads
from app.settings import AppPaths, AppSettings, EngineSettings, save_settings

log = logging.getLogger(__name__)


@dataclass
class App:
    paths: AppPaths
    settings: AppSettings
    engine: ChatEngine
    conversations: Conversations
    # The app's own Prometheus series (one registry per App, so tests can build many).
    metrics: AppMetrics = field(default_factory=AppMetrics)
    # Model downloads running in child processes (several at once; one per model).
    downloads: Downloads = field(default_factory=Downloads)
    # Who may reach this run (address, key, login, hosts, origins): flags, never saved.
    access: Access = field(default_factory=Access)
    # Tasks we started and must not let the garbage collector drop mid-flight.
    _tasks: set[asyncio.Task] = field(default_factory=set, repr=False)

    @classmethod
    def build(cls, settings: AppSettings, paths: AppPaths, engine: ChatEngine | None = None,
              access: Access | None = None) -> App:
        paths.create()
        engine = engine or Engine(log_file=configure_engine_log(paths.log_dir))
        return cls(paths=paths, settings=settings, engine=engine, conversations=Conversations(paths.history_db),
                   access=access or Access())

    def save_settings(self) -> None:
        save_settings(self.settings, self.paths)

    async def load_model(self, model: str, engine_settings: EngineSettings | None = None,
                         name: str | None = None) -> None:
        """Load a model and remember it (and its engine settings) for the next start, unless it
        was loaded with random weights.

        A Hugging Face id that is already in the cache loads from there without the network;
        one that is not is left to vLLM to fetch, as `vllm serve` does."""
        engine_settings = engine_settings or self.settings.engine
        source = model
        if looks_like_repo_id(model) and not Path(model).expanduser().exists():
            try:
                source = str(resolve_snapshot(ModelStore.for_app(self.paths), model))
                name = name or model
            except UserError:
                pass
        await self.engine.load(source, engine_settings, name=name)
        if engine_settings.load_format == "dummy":
            # Random weights are for a benchmark run: the next start loads what the user chose.
            return
        self.settings = dataclasses.replace(self.settings, model=model, engine=engine_settings)
        self.save_settings()

    def load_model_in_background(self, model: str, engine_settings: EngineSettings | None = None) -> asyncio.Task:
        """Start loading without waiting; failures show up in `engine.status`."""

        async def run() -> None:
            try:
                await self.load_model(model, engine_settings)
            except UserError as exc:
                log.warning("%s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
