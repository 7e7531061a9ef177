"""The Models tab's browser: the catalog as a table with what runs on this machine, the Hub search,
and "Download and load" in one step (progress in the row, then load, then the Chat tab).

`BrowserPanel` holds the logic and returns plain values (tests call it without a browser);
`browser_section` lays it out and wires the events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.errors import UserError
from app.hardware import Hardware
from app.i18n import translate
from app.models.browser import BrowserFilters, BrowserRow, browse, families
from app.models.cache import list_cached
from app.models.catalog import find_entry
from app.models.downloads import DownloadState, format_eta, progress_line
from app.models.fit import format_bytes
from app.models.hub_search import search_hub
from app.models.sources import refuse_if_offline
from app.ui.i18n import request_language
from app.ui.models_panel import ModelsPanel

# How often a running "Download and load" updates its row.
PROGRESS_REFRESH_S = 1.0
# No context column: the verdict says the context a load gets, beside the model's own.
TABLE_COLUMNS = ("name", "params", "quant", "size", "license", "fit", "state")
# Each narrow column holds its header's longest word in either language at a 1,000-pixel window
# (a 700-pixel table), where Gradio's percentages left 49 pixels for "Parameters".
COLUMN_WIDTHS = ["19%", "10%", "12%", "8%", "12%", "29%", "10%"]
SEARCH_COLUMNS = ("repo", "downloads", "likes", "updated", "gated")


class BrowserPanel:
    def __init__(self, models: ModelsPanel, hardware: Hardware | None = None) -> None:
        self.models = models
        self.app = models.app
        self.catalog = models.catalog
        # Tests pass a fabricated GPU in; the app asks NVML.
        self.hardware = hardware

    def machine(self) -> Hardware:
        return self.hardware or self.models.machine()

    def cached_repos(self) -> set[str]:
        return {m.repo_id.lower() for m in list_cached(self.models.store) if m.path}

    # ---- the catalog table ----

    def rows(self, filters: BrowserFilters) -> list[BrowserRow]:
        return browse(self.catalog, self.machine(), self.app.settings.engine, self.cached_repos(), filters)

    def table(self, filters: BrowserFilters, lang: str) -> tuple[list[list[Any]], list[str]]:
        """The table's cells and, row by row, the catalog key each row stands for."""
        rows = self.rows(filters)
        return [self._cells(r, lang) for r in rows], [r.entry.key for r in rows]

    def headers(self, lang: str) -> list[str]:
        return [translate(f"browser.col_{c}", lang) for c in TABLE_COLUMNS]

    def _cells(self, row: BrowserRow, lang: str) -> list[Any]:
        e = row.entry
        name = ("↳ " if row.is_variant else "") + e.name + (" 👁" if e.vision else "")
        license_ = e.license + (" · " + translate("browser.gated", lang) if e.gated else "")
        quant = (e.quantization or "").upper() or translate("browser.quant_none", lang)
        return [
            name,
            f"{e.params_b:g}B",
            quant,
            format_bytes(e.download_bytes),
            license_,
            row.fit_line(lang, self.catalog),
            self._state(row, lang),
        ]

    def _state(self, row: BrowserRow, lang: str) -> str:
        download = self.app.downloads.find(row.entry.repo_for(self.app.settings.download_source))
        if download is not None and download.running:
            p = download.progress()
            eta = format_eta(p.eta) if p.eta is not None else "?"
            return translate(
                "browser.state_downloading",
                lang,
                percent=f"{p.fraction * 100:.0f}",
                done=format_bytes(p.done_bytes),
                total=format_bytes(p.total_bytes),
                speed=format_bytes(p.speed),
                eta=eta,
            )
        return translate("browser.state_downloaded" if row.downloaded else "browser.state_not", lang)

    def describe(self, name: str, lang: str) -> tuple[str, bool]:
        """A picked catalog row: its fit line, and whether it is already on this computer."""
        entry = find_entry(self.catalog, name)
        if entry is None:
            return self.models.check(name, None, lang), self.is_cached(name)
        row = next(
            r
            for r in browse(self.catalog, self.machine(), self.app.settings.engine, self.cached_repos())
            if r.entry.key == entry.key
        )
        text = translate(
            "browser.picked",
            lang,
            name=entry.name,
            repo=entry.repo_for(self.app.settings.download_source),
            fit=row.fit_line(lang, self.catalog),
        )
        return text, row.downloaded

    def is_cached(self, name: str) -> bool:
        return self.models.repo_id(name).lower() in self.cached_repos()

    # ---- the Hub ----

    def search_off(self, lang: str) -> str:
        """Why the Hub search is off (offline), or "" when it works."""
        try:
            refuse_if_offline(self.app.settings.offline, "browser.offline_search")
        except UserError as exc:
            return "⚠️ " + exc.message(lang)
        return ""

    def search(self, query: str, lang: str) -> tuple[list[list[Any]], str]:
        """Matching text-generation models as table cells, and a sentence when there is none."""
        source = self.models.source()
        try:
            hits = search_hub(query, source, self.models.store)
        except UserError as exc:
            return [], "⚠️ " + exc.message(lang)
        if not hits:
            return [], translate("browser.search_none", lang, source=source.describe(), query=query.strip())
        cells = [[h.repo_id, h.downloads, h.likes, (h.last_modified or "")[:10], "🔒" if h.gated else ""] for h in hits]
        return cells, ""

    # ---- one step: download, load, chat ----

    async def download_and_load(self, name: str, lang: str) -> AsyncIterator[tuple[str, bool]]:
        """(what is happening, loaded) as the download runs, then the load; ends loaded or with a sentence."""
        if not name:
            yield translate("browser.pick_row", lang), False
            return
        try:
            if not self.is_cached(name):
                async for line, ok in self._download(name, lang):
                    yield line, False
                    if not ok:
                        return
            yield translate("browser.loading", lang, model=self.models.repo_id(name)), False
            text = await self.models.load_or_raise(name, None, lang)
        except UserError as exc:
            yield "⚠️ " + self.models.explain(exc, name, lang), False
            return
        yield text + "\n\n" + translate("browser.ready", lang, model=self.models.repo_id(name)), True

    async def _download(self, name: str, lang: str) -> AsyncIterator[tuple[str, bool]]:
        plan = await asyncio.to_thread(self.models.plan, name, None)
        plan.require_supported()
        if not plan.download_bytes:
            return
        download = self.app.downloads.start(plan)
        while download.running:
            yield progress_line(download.progress(), lang), True
            await asyncio.sleep(PROGRESS_REFRESH_S)
        final = download.progress()
        yield progress_line(final, lang), final.status == DownloadState.DONE

    def cancel(self, name: str, lang: str) -> str:
        return self.models.cancel(name, lang)


def _filters(fits: bool, downloaded: bool, family: str | None, max_b: float | None) -> BrowserFilters:
    return BrowserFilters(
        fits_only=bool(fits),
        downloaded_only=bool(downloaded),
        family=family or None,
        max_params_b=max_b if max_b else None,
    )


@dataclass(frozen=True)
class BrowserLayout:
    """The browser's components, for its event wiring."""

    filters: list[Any]  # fits only, downloaded only, family, largest size: the table's inputs
    table: gr.Dataframe
    keys: gr.State  # the catalog key of each row shown
    picked: gr.State  # the picked row's key or Hub repo id
    go: gr.Button
    cancel: gr.Button
    note: gr.Markdown
    query: gr.Textbox
    search: gr.Button
    results: gr.Dataframe
    search_note: gr.Markdown
    search_box: gr.Accordion


def browser_section(panel: BrowserPanel, i18n: gr.I18n, tabs: gr.Tabs | None) -> None:
    """Render the browser inside the open Models tab; `tabs` is switched to the chat when a model is ready."""
    _wire(panel, _layout(panel, i18n), tabs)


def _layout(panel: BrowserPanel, i18n: gr.I18n) -> BrowserLayout:
    with gr.Row():
        fits = gr.Checkbox(False, label=i18n("browser.filter_fits"))
        downloaded = gr.Checkbox(False, label=i18n("browser.filter_downloaded"))
        family = gr.Dropdown(
            [(i18n("browser.filter_family_all"), "")] + [(f, f) for f in families(panel.catalog)],
            value="",
            label=i18n("browser.filter_family"),
        )
        max_b = gr.Slider(0, 10, value=0, step=0.5, label=i18n("browser.filter_size"))
    table = gr.Dataframe(
        label=i18n("browser.catalog_label"),
        show_label=False,
        interactive=False,
        wrap=True,
        elem_id="model-browser",
        column_widths=COLUMN_WIDTHS,
    )
    keys = gr.State([])
    picked = gr.State("")
    with gr.Row():
        go = gr.Button(i18n("browser.download_and_load"), variant="primary", elem_id="browser-go")
        cancel = gr.Button(i18n("browser.cancel"), variant="stop")
    note = gr.Markdown(elem_id="browser-note")
    with gr.Accordion(i18n("browser.search"), open=False) as search_box:
        with gr.Row():
            query = gr.Textbox(label=i18n("browser.search"), placeholder=i18n("browser.search_placeholder"), scale=4)
            search = gr.Button(i18n("browser.search_button"))
        results = gr.Dataframe(
            label=i18n("browser.results_label"), show_label=False, interactive=False, elem_id="hub-results"
        )
        search_note = gr.Markdown()
    return BrowserLayout(
        [fits, downloaded, family, max_b],
        table,
        keys,
        picked,
        go,
        cancel,
        note,
        query,
        search,
        results,
        search_note,
        search_box,
    )


def _wire(panel: BrowserPanel, ui: BrowserLayout, tabs: gr.Tabs | None) -> None:
    def on_table(f: bool, d: bool, fam: str, mb: float, request: gr.Request):
        lang = request_language(request)
        cells, row_keys = panel.table(_filters(f, d, fam, mb), lang)
        return gr.Dataframe(value=cells, headers=panel.headers(lang)), row_keys

    def on_pick(row_keys: list[str], evt: gr.SelectData, request: gr.Request):
        key = row_keys[evt.index[0]] if evt.index and evt.index[0] < len(row_keys) else ""
        return _picked(key, request)

    def on_pick_result(evt: gr.SelectData, request: gr.Request):
        return _picked(str(evt.row_value[0]) if evt.row_value else "", request)

    def _picked(name: str, request: gr.Request):
        lang = request_language(request)
        if not name:
            return "", translate("browser.pick_row", lang), gr.Button()
        text, cached = panel.describe(name, lang)
        label = translate("browser.load" if cached else "browser.download_and_load", lang)
        return name, text, gr.Button(value=label)

    def on_search_state(request: gr.Request):
        # Offline: the box says why before anyone types (Settings → Offline may change meanwhile).
        off = panel.search_off(request_language(request))
        return gr.Textbox(interactive=not off), gr.Button(interactive=not off), off

    def on_search(text: str, request: gr.Request):
        lang = request_language(request)
        cells, message = panel.search(text, lang)
        headers = [translate(f"browser.search_col_{c}", lang) for c in SEARCH_COLUMNS]
        return gr.Dataframe(value=cells, headers=headers), message

    async def on_go(name: str, f: bool, d: bool, fam: str, mb: float, request: gr.Request):
        lang = request_language(request)
        async for text, loaded in panel.download_and_load(name, lang):
            table_update, _ = on_table(f, d, fam, mb, request)
            if tabs is None:
                yield text, table_update
            else:
                yield text, table_update, gr.Tabs(selected="chat") if loaded else gr.update()

    def on_cancel(name: str, request: gr.Request) -> str:
        return panel.cancel(name, request_language(request))

    private = {"api_visibility": "private"}
    show_table = (on_table, ui.filters, [ui.table, ui.keys])
    gr.on([c.change for c in ui.filters], *show_table, **private)
    gr.on(None, *show_table, **private)
    ui.table.select(on_pick, ui.keys, [ui.picked, ui.note, ui.go], **private)
    ui.results.select(on_pick_result, None, [ui.picked, ui.note, ui.go], **private)
    search_state = (on_search_state, None, [ui.query, ui.search, ui.search_note])
    gr.on(None, *search_state, **private)
    ui.search_box.expand(*search_state, **private)
    searching = {"show_progress_on": ui.search_note, **private}
    ui.search.click(on_search, ui.query, [ui.results, ui.search_note], **searching)
    ui.query.submit(on_search, ui.query, [ui.results, ui.search_note], **searching)
    tab_output = [tabs] if tabs is not None else []
    ui.go.click(on_go, [ui.picked, *ui.filters], [ui.note, ui.table, *tab_output], show_progress_on=ui.note, **private)
    ui.cancel.click(on_cancel, ui.picked, ui.note, **private)
