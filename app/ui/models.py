"""The Models tab: the browser on top (app/ui/model_browser.py: the catalog with what runs here,
Hub search, "Download and load"), then any Hugging Face repo or a local folder, the token, and the
models on this computer. Sizes and fit are shown before anything downloads.

All the work is in app/models/*; `ModelsPanel` turns it into Markdown in the browser's language
and is what the Gradio events call (tests call it directly, without a browser).
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

import gradio as gr

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
from app.models.sources import Source, TokenStore, source_from_settings, token_choice_applies
from app.ui.i18n import gradio_i18n, request_language
from app.ui.model_browser import BrowserPanel, browser_section
from app.ui.model_load import load_steps, unload_steps
from app.ui.status import PageStatus, status_now

# How often the download progress refreshes while something downloads.
PROGRESS_REFRESH_S = 1.0


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


def models_tab(
    app: App, i18n: gr.I18n | None = None, tabs: gr.Tabs | None = None, page: PageStatus | None = None
) -> None:
    """Render the Models tab inside an open gr.Tab; `tabs` is switched to the chat once a model is
    ready; loads and unloads update `page`'s status bar at once, and on its ticks the models on
    this computer follow downloads that end (wherever they were started)."""
    i18n = i18n or gradio_i18n()
    panel = ModelsPanel(app)
    settings = app.settings
    with gr.Row():
        source = gr.Radio(
            [(i18n(f"models.source_{k}"), k) for k in ("huggingface", "mirror", "modelscope")],
            value=settings.download_source,
            label=i18n("models.source"),
        )
        mirror = gr.Textbox(
            settings.mirror_endpoint, label=i18n("models.mirror_endpoint"), visible=settings.download_source == "mirror"
        )
        send_token = gr.Checkbox(
            settings.send_token_to_mirror,
            label=i18n("models.send_token_to_mirror"),
            visible=token_choice_applies(settings.download_source),
        )
    source_note = gr.Markdown()
    browser_section(BrowserPanel(panel), i18n, tabs)
    with gr.Accordion(i18n("browser.any_repo"), open=False):
        with gr.Row():
            catalog = gr.Dropdown(
                [(catalog_label(e), e.key) for e in panel.catalog], value=None, label=i18n("models.catalog"), scale=2
            )
            name = gr.Textbox(label=i18n("models.repo_or_folder"), placeholder=i18n("models.repo_placeholder"), scale=2)
            revision = gr.Textbox(label=i18n("models.revision"), placeholder="main")
        with gr.Row():
            check = gr.Button(i18n("models.check"))
            download = gr.Button(i18n("models.download"), variant="primary")
            cancel = gr.Button(i18n("models.cancel"), variant="stop")
            load = gr.Button(i18n("models.load"), variant="primary", elem_id="models-load")
        trust = gr.Checkbox(False, label=i18n("models.trust_code"), info=i18n("models.trust_code_info"))
        report = gr.Markdown(elem_id="models-report")
        progress = gr.Markdown()
    timer = gr.Timer(PROGRESS_REFRESH_S, active=False)
    with gr.Accordion(i18n("models.token_title"), open=False):
        with gr.Row():
            token = gr.Textbox(type="password", label=i18n("models.token"), scale=3)
            save_token = gr.Button(i18n("models.save_token"))
            clear_token = gr.Button(i18n("models.clear_token"))
        token_note = gr.Markdown()
    with gr.Accordion(i18n("models.cached_title"), open=True):
        cached = gr.Markdown(elem_id="models-cached")
        with gr.Row():
            cached_pick = gr.Dropdown([], label=i18n("models.cached_pick"), scale=3)
            load_cached = gr.Button(i18n("models.load"), variant="primary")
            unload = gr.Button(i18n("models.unload"), elem_id="models-unload")
            delete = gr.Button(i18n("models.delete"), variant="stop")
            clean = gr.Button(i18n("models.clean_orphans"))
            refresh = gr.Button(i18n("models.refresh"))
        cache_note = gr.Markdown(elem_id="models-cache-note")

    def on_source(kind: str, mirror_url: str, send: bool, request: gr.Request):
        note = panel.set_source(kind, mirror_url, send, request_language(request))
        return note, gr.update(visible=kind == "mirror"), gr.update(visible=token_choice_applies(kind))

    def on_check(repo: str, rev: str, request: gr.Request) -> str:
        return panel.check(repo, rev, request_language(request))

    def on_download(repo: str, rev: str, request: gr.Request):
        return panel.download(repo, rev, request_language(request)), gr.Timer(active=True)

    def on_cancel(repo: str, request: gr.Request) -> str:
        return panel.cancel(repo, request_language(request))

    def on_progress(request: gr.Request):
        text, running = panel.progress(request_language(request))
        return text, gr.Timer(active=running)

    def on_cached(current: str | None, request: gr.Request):
        ended = app.downloads.ended
        text, choices = panel.cached_table(request_language(request))
        values = [value for _, value in choices]
        # Refreshes come every second while downloading: keep what the user picked.
        picked = current if current in values else next(iter(values), None)
        return ended, text, gr.Dropdown(choices=choices, value=picked)

    def on_downloads_ended(seen: int, current: str | None, request: gr.Request):
        if app.downloads.ended == seen:
            return gr.skip(), gr.skip(), gr.skip()
        return on_cached(current, request)

    def with_bar(line: str, request: gr.Request) -> Any:
        return (line, status_now(app, request)) if page is not None else line

    async def on_load(repo: str, rev: str, trusted: bool, request: gr.Request):
        async for line in load_steps(panel, repo, rev, request_language(request), trust=trusted):
            yield with_bar(line, request)

    async def on_load_cached(choice: str, trusted: bool, request: gr.Request):
        async for line in load_steps(panel, choice, None, request_language(request), trust=trusted):
            yield with_bar(line, request)

    async def on_unload(request: gr.Request):
        async for line in unload_steps(app, request_language(request)):
            yield with_bar(line, request)

    def on_delete(choice: str, request: gr.Request) -> str:
        return panel.delete(choice, request_language(request))

    def on_clean(request: gr.Request) -> str:
        return panel.clean_orphans(request_language(request))

    def on_save_token(value: str, request: gr.Request):
        return panel.save_token(value, request_language(request)), ""

    def on_clear_token(request: gr.Request) -> str:
        return panel.clear_token(request_language(request))

    private = {"api_visibility": "private"}
    seen_ended = gr.State(0)
    bar = [page.bar] if page is not None else []
    show_cache = (on_cached, cached_pick, [seen_ended, cached, cached_pick])
    show_progress = (on_progress, None, [progress, timer])
    gr.on(None, *show_cache, **private)
    gr.on(None, *show_progress, **private)
    for control in (source, mirror, send_token):
        control.change(on_source, [source, mirror, send_token], [source_note, mirror, send_token], **private)
    catalog.change(panel.pick, catalog, name, **private)
    check.click(on_check, [name, revision], report, show_progress_on=report, **private)
    download.click(on_download, [name, revision], [report, timer], **private).then(*show_progress, **private)
    cancel.click(on_cancel, name, report, **private).then(*show_progress, **private).then(*show_cache, **private)
    timer.tick(*show_progress, **private).then(*show_cache, **private)
    load.click(on_load, [name, revision, trust], [report, *bar], **private)
    save_token.click(on_save_token, token, [token_note, token], **private)
    clear_token.click(on_clear_token, None, token_note, **private)
    load_cached.click(on_load_cached, [cached_pick, trust], [cache_note, *bar], **private)
    unload.click(on_unload, None, [cache_note, *bar], **private)
    delete.click(on_delete, cached_pick, cache_note, **private).then(*show_cache, **private)
    clean.click(on_clean, None, cache_note, **private).then(*show_cache, **private)
    refresh.click(*show_cache, **private)
    if page is not None:
        page.timer.tick(
            on_downloads_ended, [seen_ended, cached_pick], [seen_ended, cached, cached_pick], queue=False, **private
        )
