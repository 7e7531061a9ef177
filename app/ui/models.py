"""The Models tab: the browser on top (app/ui/model_browser.py: the catalog with what runs here,
Hub search, "Download and load"), then any Hugging Face repo or a local folder, the token, and the
models on this computer. Sizes and fit are shown before anything downloads.

Here are the tab's layout and its event wiring; what the events do is `ModelsPanel`'s
(app/ui/models_panel.py), over the work in app/models/*.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import gradio as gr

from app.application import App
from app.config.settings import AppSettings
from app.models.sources import token_choice_applies
from app.ui.i18n import gradio_i18n, request_language
from app.ui.model_browser import BrowserPanel, browser_section
from app.ui.model_load import load_steps, unload_steps
from app.ui.models_panel import ModelsPanel, catalog_label
from app.ui.status import PageStatus, status_now

# How often the download progress refreshes while something downloads.
PROGRESS_REFRESH_S = 1.0
PRIVATE = MappingProxyType({"api_visibility": "private"})


@dataclass(frozen=True)
class ModelsLayout:
    """The tab's components (the browser's are its own), for the event wiring."""

    source: gr.Radio
    mirror: gr.Textbox
    send_token: gr.Checkbox
    source_note: gr.Markdown
    catalog: gr.Dropdown
    name: gr.Textbox
    revision: gr.Textbox
    check: gr.Button
    download: gr.Button
    cancel: gr.Button
    load: gr.Button
    trust: gr.Checkbox
    report: gr.Markdown
    progress: gr.Markdown
    timer: gr.Timer
    token: gr.Textbox
    save_token: gr.Button
    clear_token: gr.Button
    token_note: gr.Markdown
    cached: gr.Markdown
    cached_pick: gr.Dropdown
    load_cached: gr.Button
    unload: gr.Button
    delete: gr.Button
    clean: gr.Button
    refresh: gr.Button
    cache_note: gr.Markdown
    seen_ended: gr.State  # how many downloads had ended when the cached list was last shown


def models_tab(
    app: App, i18n: gr.I18n | None = None, tabs: gr.Tabs | None = None, page: PageStatus | None = None
) -> None:
    """Render the Models tab inside an open gr.Tab; `tabs` is switched to the chat once a model is
    ready; loads and unloads update `page`'s status bar at once, and on its ticks the models on
    this computer follow downloads that end (wherever they were started)."""
    i18n = i18n or gradio_i18n()
    panel = ModelsPanel(app)
    ui = _layout(panel, i18n, tabs)
    show_cache = _wire_cache(panel, ui, page)
    _wire_downloads(panel, ui, show_cache)
    _wire_loads(panel, ui, page)


def _layout(panel: ModelsPanel, i18n: gr.I18n, tabs: gr.Tabs | None) -> ModelsLayout:
    source, mirror, send_token = _source_row(panel.app.settings, i18n)
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
    token, save_token, clear_token, token_note = _token_box(i18n)
    with gr.Accordion(i18n("models.cached_title"), open=True):
        cached = gr.Markdown(elem_id="models-cached")
        with gr.Row():
            cached_pick = gr.Dropdown([], label=i18n("models.cached_pick"), scale=3)
            load_cached, unload, delete, clean, refresh = _cached_buttons(i18n)
        cache_note = gr.Markdown(elem_id="models-cache-note")
    return ModelsLayout(
        source=source,
        mirror=mirror,
        send_token=send_token,
        source_note=source_note,
        catalog=catalog,
        name=name,
        revision=revision,
        check=check,
        download=download,
        cancel=cancel,
        load=load,
        trust=trust,
        report=report,
        progress=progress,
        timer=timer,
        token=token,
        save_token=save_token,
        clear_token=clear_token,
        token_note=token_note,
        cached=cached,
        cached_pick=cached_pick,
        load_cached=load_cached,
        unload=unload,
        delete=delete,
        clean=clean,
        refresh=refresh,
        cache_note=cache_note,
        seen_ended=gr.State(0),
    )


def _source_row(settings: AppSettings, i18n: gr.I18n) -> tuple[gr.Radio, gr.Textbox, gr.Checkbox]:
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
    return source, mirror, send_token


def _token_box(i18n: gr.I18n) -> tuple[gr.Textbox, gr.Button, gr.Button, gr.Markdown]:
    with gr.Accordion(i18n("models.token_title"), open=False):
        with gr.Row():
            token = gr.Textbox(type="password", label=i18n("models.token"), scale=3)
            save_token = gr.Button(i18n("models.save_token"))
            clear_token = gr.Button(i18n("models.clear_token"))
        token_note = gr.Markdown()
    return token, save_token, clear_token, token_note


def _cached_buttons(i18n: gr.I18n) -> tuple[gr.Button, ...]:
    """Load, Unload, Delete, Clean up and Refresh, beside the list of models on this computer."""
    return (
        gr.Button(i18n("models.load"), variant="primary"),
        gr.Button(i18n("models.unload"), elem_id="models-unload"),
        gr.Button(i18n("models.delete"), variant="stop"),
        gr.Button(i18n("models.clean_orphans")),
        gr.Button(i18n("models.refresh")),
    )


def _wire_cache(panel: ModelsPanel, ui: ModelsLayout, page: PageStatus | None) -> tuple[Any, ...]:
    """The models on this computer: shown at page load, after a delete or clean-up, on Refresh and
    when a download ends; returns the step that shows them, for the other events to chain."""
    downloads = panel.app.downloads

    def on_cached(current: str | None, request: gr.Request):
        ended = downloads.ended
        text, choices = panel.cached_table(request_language(request))
        values = [value for _, value in choices]
        # Refreshes come every second while downloading: keep what the user picked.
        picked = current if current in values else next(iter(values), None)
        return ended, text, gr.Dropdown(choices=choices, value=picked)

    def on_downloads_ended(seen: int, current: str | None, request: gr.Request):
        if downloads.ended == seen:
            return gr.skip(), gr.skip(), gr.skip()
        return on_cached(current, request)

    def on_delete(choice: str, request: gr.Request) -> str:
        return panel.delete(choice, request_language(request))

    def on_clean(request: gr.Request) -> str:
        return panel.clean_orphans(request_language(request))

    shown = [ui.seen_ended, ui.cached, ui.cached_pick]
    show_cache = (on_cached, ui.cached_pick, shown)
    gr.on(None, *show_cache, **PRIVATE)
    ui.delete.click(on_delete, ui.cached_pick, ui.cache_note, **PRIVATE).then(*show_cache, **PRIVATE)
    ui.clean.click(on_clean, None, ui.cache_note, **PRIVATE).then(*show_cache, **PRIVATE)
    ui.refresh.click(*show_cache, **PRIVATE)
    if page is not None:
        page.timer.tick(on_downloads_ended, [ui.seen_ended, ui.cached_pick], shown, queue=False, **PRIVATE)
    return show_cache


def _wire_downloads(panel: ModelsPanel, ui: ModelsLayout, show_cache: tuple[Any, ...]) -> None:
    """The download source, Check, Download and Cancel with their progress, and the token."""

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

    def on_save_token(value: str, request: gr.Request):
        return panel.save_token(value, request_language(request)), ""

    def on_clear_token(request: gr.Request) -> str:
        return panel.clear_token(request_language(request))

    show_progress = (on_progress, None, [ui.progress, ui.timer])
    gr.on(None, *show_progress, **PRIVATE)
    sources = [ui.source, ui.mirror, ui.send_token]
    for control in sources:
        control.change(on_source, sources, [ui.source_note, ui.mirror, ui.send_token], **PRIVATE)
    ui.catalog.change(panel.pick, ui.catalog, ui.name, **PRIVATE)
    ui.check.click(on_check, [ui.name, ui.revision], ui.report, show_progress_on=ui.report, **PRIVATE)
    ui.download.click(on_download, [ui.name, ui.revision], [ui.report, ui.timer], **PRIVATE).then(
        *show_progress, **PRIVATE
    )
    cancelled = ui.cancel.click(on_cancel, ui.name, ui.report, **PRIVATE).then(*show_progress, **PRIVATE)
    cancelled.then(*show_cache, **PRIVATE)
    ui.timer.tick(*show_progress, **PRIVATE).then(*show_cache, **PRIVATE)
    ui.save_token.click(on_save_token, ui.token, [ui.token_note, ui.token], **PRIVATE)
    ui.clear_token.click(on_clear_token, None, ui.token_note, **PRIVATE)


def _wire_loads(panel: ModelsPanel, ui: ModelsLayout, page: PageStatus | None) -> None:
    """Load (a repo or folder, or a model on this computer) and Unload, each line with the status
    bar as it is then."""
    app = panel.app
    bar = [page.bar] if page is not None else []

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

    ui.load.click(on_load, [ui.name, ui.revision, ui.trust], [ui.report, *bar], **PRIVATE)
    ui.load_cached.click(on_load_cached, [ui.cached_pick, ui.trust], [ui.cache_note, *bar], **PRIVATE)
    ui.unload.click(on_unload, None, [ui.cache_note, *bar], **PRIVATE)
