"""What the Models tab does, apart from how it is laid out (app/ui/models.py): `ModelsPanel`
turns the work in app/models/* into Markdown in the browser's language and is what the tab's
events call (tests call it directly, without a browser). No Gradio here.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

from app.application import App
from app.config.settings import AppSettings
from app.errors import UserError
from app.hardware import Hardware, detect
from app.i18n import translate
from app.models.cache import ModelStore, delete_cached, list_cached, remove_orphans, resolve_snapshot
from app.models.catalog import CatalogEntry, find_entry, load_catalog, repo_for_source
from app.models.downloads import progress_line
from app.models.fit import format_bytes, read_config, settings_that_fit, weight_file_bytes
from app.models.hub_search import suggestions
from app.models.plans import DownloadPlan, check_plan_fit, plan_download, plan_lines
from app.models.sources import Source, TokenStore, source_from_settings


def catalog_label(entry: CatalogEntry) -> str:
    gated = " 🔒" if entry.gated else ""
    return f"{entry.name} · {entry.params_b:g}B · {format_bytes(entry.size_gb * 1e9)} · {entry.license}{gated}"


def looks_like_folder(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().is_dir()


class ModelsPanel:
    def __init__(self, app: App, free_bytes: int | None = None, hardware: Hardware | None = None) -> None:
        self.app = app
        self.catalog = load_catalog()
        self.store = ModelStore.for_app(app.paths)
        self.tokens = TokenStore(app.paths.config_dir / "hf_token")
        # Tests pass the free disk space and a fabricated machine in; the app measures its own.
        self.free_bytes = free_bytes
        self.hardware = hardware

    def machine(self) -> Hardware:
        return self.hardware or detect()

    # ---- where from ----

    def source(self) -> Source:
        return source_from_settings(self.app.settings, self.tokens.token())

    def set_source(self, kind: str, mirror: str, send_token: bool, lang: str = "en") -> str:
        """Save the source choice; an unusable one is refused with a sentence, the old one kept."""

        def change(settings: AppSettings) -> AppSettings:
            settings = dataclasses.replace(
                settings, download_source=kind, mirror_endpoint=mirror.strip(), send_token_to_mirror=bool(send_token)
            )
            source_from_settings(settings, None)
            return settings

        try:
            self.app.update_settings(change)
        except UserError as exc:
            return exc.message(lang)
        return ""

    def pick(self, key: str | None) -> str:
        """The repo id of a catalog entry on the current source."""
        entry = find_entry(self.catalog, key or "")
        return entry.repo_for(self.app.settings.download_source) if entry else ""

    def repo_id(self, name: str) -> str:
        return repo_for_source(self.catalog, name, self.app.settings.download_source)

    # ---- before downloading ----

    def plan(self, name: str, revision: str | None) -> DownloadPlan:
        if not name.strip():
            raise UserError("models.pick_model")
        return plan_download(self.repo_id(name), revision, self.source(), self.store, free_bytes=self.free_bytes)

    def check(self, name: str, revision: str | None, lang: str = "en") -> str:
        """Size, free disk and "will it fit" as Markdown, before anything is downloaded."""
        name = (name or "").strip()
        try:
            if looks_like_folder(name):
                return self._check_folder(Path(name).expanduser(), lang)
            plan = self.plan(name, revision)
        except UserError as exc:
            return "⚠️ " + self.explain(exc, name, lang)
        lines = plan_lines(plan, lang)
        for refusal in (_message(plan.require_supported, lang), _message(plan.require_disk, lang)):
            if refusal:
                lines.append("❌ " + refusal)
        lines += self._fit_lines(plan, lang)
        return "\n\n".join(lines)

    def explain(self, error: UserError, name: str, lang: str) -> str:
        """The error's sentence; for a repo id that does not exist, the closest ones that do."""
        if error.key in ("models.err_repo_not_found", "models.err_repo_not_found_anonymous"):
            repo = self.repo_id(name)
            hits = suggestions(repo, self.source(), self.store)
            if hits:
                return translate(
                    "browser.did_you_mean", lang, repo=repo, source=self.source().describe(), hits=", ".join(hits)
                )
        return error.message(lang)

    def _fit_lines(self, plan: DownloadPlan, lang: str) -> list[str]:
        try:
            return check_plan_fit(plan, self.machine(), self.app.settings.engine, self.catalog).lines(lang)
        except UserError as exc:
            return [exc.message(lang)]

    def _check_folder(self, folder: Path, lang: str) -> str:
        if not (folder / "config.json").is_file():
            raise UserError("engine.no_config", path=str(folder))
        weights = format_bytes(weight_file_bytes(folder))
        lines = [translate("models.plan_local", lang, path=str(folder), weights=weights)]
        _, report = settings_that_fit(folder, self.machine(), self.app.settings.engine)
        if report is not None:
            lines += report.lines(lang)
        if "auto_map" in read_config(folder):
            lines.append(translate("models.plan_remote_code", lang))
        return "\n\n".join(lines)

    # ---- downloading ----

    def download(self, name: str, revision: str | None, lang: str = "en") -> str:
        try:
            plan = self.plan(name, revision)
            plan.require_supported()
            if not plan.download_bytes:
                return "\n\n".join(plan_lines(plan, lang))  # already here: nothing to start
            self.app.downloads.start(plan)
        except UserError as exc:
            return "⚠️ " + self.explain(exc, name, lang)
        return "\n\n".join([*plan_lines(plan, lang), translate("models.download_started", lang, repo=plan.repo_id)])

    def cancel(self, name: str, lang: str = "en") -> str:
        repo = self.repo_id(name or "")
        download = self.app.downloads.find(repo)
        if download is None or not download.running:
            return translate("models.nothing_to_cancel", lang, repo=repo)
        download.cancel()
        return translate("models.cancelled", lang, repo=repo)

    def progress(self, lang: str = "en") -> tuple[str, bool]:
        """Every download's progress, and whether any is still running (the refresh timer's state)."""
        downloads = self.app.downloads.all()
        if not downloads:
            return translate("models.no_downloads", lang), False
        lines = [progress_line(d.progress(), lang) for d in reversed(downloads)]
        return "\n\n".join(lines), any(d.running for d in downloads)

    # ---- the models on this computer ----

    def cached_table(self, lang: str = "en") -> tuple[str, list[tuple[str, str]]]:
        """A Markdown table of the cached models, and (label, value) choices to act on them."""
        models = list_cached(self.store)
        if not models:
            return translate("models.no_cached", lang), []
        head = [translate(f"models.col_{c}", lang) for c in ("model", "source", "size", "last_used", "status")]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        choices = []
        for m in models:
            used = datetime.datetime.fromtimestamp(m.last_used).strftime("%Y-%m-%d %H:%M") if m.last_used else "-"
            state = translate("models.state_ready" if m.path else "models.state_incomplete", lang)
            rows.append(
                f"| {m.repo_id} | {translate('models.source_' + m.source, lang)} | "
                f"{format_bytes(m.size_bytes)} | {used} | {state} |"
            )
            choices.append((f"{m.repo_id} ({format_bytes(m.size_bytes)})", f"{m.source}:{m.repo_id}"))
        return "\n".join(rows), choices

    def delete(self, choice: str, lang: str = "en") -> str:
        if not choice:
            return translate("models.pick_model", lang)
        source, repo = choice.split(":", 1)
        try:
            freed = delete_cached(self.store, repo, source)
        except UserError as exc:
            return "⚠️ " + exc.message(lang)
        return translate("models.deleted", lang, repo=repo, freed=format_bytes(freed))

    def clean_orphans(self, lang: str = "en") -> str:
        count, freed = remove_orphans(self.store, busy=self.app.downloads.busy_folders())
        return translate("models.orphans_removed", lang, count=count, freed=format_bytes(freed))

    # ---- the token ----

    def save_token(self, token: str, lang: str = "en") -> str:
        try:
            self.tokens.save(token or "")
        except UserError as exc:
            return "⚠️ " + exc.message(lang)
        return translate("models.token_saved", lang)

    def clear_token(self, lang: str = "en") -> str:
        self.tokens.clear()
        return translate("models.token_cleared", lang)

    # ---- loading ----

    def local_folder(self, name: str, revision: str | None = None) -> Path:
        """The folder to load: a folder as given, or the cached snapshot of a repo (no network needed)."""
        name = (name or "").strip()
        if not name:
            raise UserError("models.pick_model")
        if looks_like_folder(name):
            return Path(name).expanduser()
        return resolve_snapshot(self.store, self.repo_id(_without_source(name)), (revision or "").strip() or None)

    async def load(self, name: str, revision: str | None = None, lang: str = "en", trust: bool = False) -> str:
        """Load a model into the engine with the saved engine settings (and a max length that fits).
        It is remembered by its repo id (or folder); `trust` lets its own code run, for it alone."""
        try:
            return await self.load_or_raise(name, revision, lang, trust)
        except UserError as exc:
            return "⚠️ " + exc.message(lang)

    async def load_or_raise(self, name: str, revision: str | None = None, lang: str = "en", trust: bool = False) -> str:
        """`load`, raising UserError when the model cannot load."""
        chosen = self.app.settings.engine
        folder = self.local_folder(name, revision)
        model = str(folder) if looks_like_folder(name.strip()) else self.repo_id(_without_source(name))
        if trust:
            self.app.trust_model(model)
        settings, _ = settings_that_fit(folder, detect(), chosen)
        # The shorter length is for this model only: the user's own choice stays for the next one.
        await self.app.load_model(model, settings, folder=folder, remember=chosen)
        shown = self.app.engine.status.model or name
        if settings == chosen:
            return translate("models.loaded", lang, model=shown)
        return translate("models.loading_with_len", lang, model=shown, max_len=settings.max_model_len)


def _without_source(name: str) -> str:
    """A cached model's name as the cache list shows it ("modelscope:org/model") to its repo id."""
    name = name.strip()
    return name.split(":", 1)[1] if name.startswith(("huggingface:", "modelscope:")) else name


def _message(raise_it: Any, lang: str) -> str:
    try:
        raise_it()
    except UserError as exc:
        return exc.message(lang)
    return ""
