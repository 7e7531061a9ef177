"""The Blocks page: status bar and the Chat, Models, Settings and System tabs, mounted on the HTTP app."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from starlette.routing import Mount

from app.application import App
from app.config.settings import MAX_ATTACHMENT_MB
from app.conversations import MAX_IMPORT_BYTES
from app.files import private_dir
from app.ui.attachment_settings import attachment_settings
from app.ui.chat import chat_tab
from app.ui.chat_panel import export_dir
from app.ui.i18n import gradio_i18n
from app.ui.models import models_tab
from app.ui.settings import settings_tab
from app.ui.status import status_bar
from app.ui.system import system_tab
from app.ui.tools import tools_settings

STYLE = Path(__file__).resolve().parent.parent.parent / "assets" / "style.css"
# The status bar and the "no model" notice follow the engine at this pace.
STATUS_REFRESH_S = 2.0
QUEUE_IDLE_POLL_S = 0.02
PROGRESS_POLL_S = 0.1


def build_blocks(app: App, i18n: gr.I18n) -> gr.Blocks:
    with gr.Blocks(title="vllm-chat") as blocks:
        timer = gr.Timer(STATUS_REFRESH_S)
        page_status = status_bar(app, timer)
        with gr.Tabs() as tabs:
            with gr.Tab(i18n("ui.tab_chat"), id="chat"):
                chat_tab(app, i18n, timer)
            with gr.Tab(i18n("ui.tab_models"), id="models"):
                models_tab(app, i18n, tabs, page_status)
            with gr.Tab(i18n("ui.tab_settings"), id="settings"):
                settings_tab(app, i18n)
                attachment_settings(app, i18n)
                tools_settings(app, i18n)
            with gr.Tab(i18n("ui.tab_system"), id="system"):
                system_tab(app, i18n)
    progress_only_where_named(blocks)
    return blocks


def progress_only_where_named(blocks: gr.Blocks) -> None:
    """Every event shows Gradio's progress on the components it names in `show_progress_on`
    (the slow ones name their report), and on none otherwise; Gradio's default is all its outputs.

    Why: the page keeps a loading status for each component that any event has had as a progress
    target since the page opened, and on every update of a streaming event it refreshes all of
    them, each by a search of the whole layout and a copy of the component's value, the saved
    chat's included. In a chat of 100 messages that was 2.3 s of long tasks while one reply
    streamed for 17 s; without the targets, 0.2 s."""
    for fn in blocks.fns.values():
        if fn.show_progress_on is None:
            fn.show_progress_on = []


def mount_ui(http: FastAPI, app: App, auth: tuple[str, str] | None = None) -> Callable[[], None]:
    """Mount the page at "/"; `auth` (user, password) puts Gradio's login in front of it. Returns
    what ends the open pages' streams (each tab's session heartbeat, which lasts as long as the
    tab), for the app's stop: Gradio ends them itself only when it runs its own server."""
    i18n = gradio_i18n()
    blocks = build_blocks(app, i18n)
    # The engine batches: do not serialize chats from several tabs behind Gradio's default limit of one.
    blocks.queue(default_concurrency_limit=None)
    private_dir(export_dir(app))
    gr.mount_gradio_app(
        http,
        blocks,
        path="/",
        run_history=False,
        i18n=i18n,
        footer_links=["api"],
        css_paths=[STYLE],
        allowed_paths=[str(export_dir(app))],
        # The largest file the page takes: Gradio's client refuses bigger ones itself, in its own
        # words, before a handler sees them (the chat's attach button keeps them from it and has the
        # app's sentence said: assets/chat.js). Up to the highest attachment limit that can be set,
        # the app's own sentence (the limit set, and where to change it) refuses an attachment, and
        # an imported chat is refused by its size too (app.history.imports).
        max_file_size=max(MAX_IMPORT_BYTES, int(MAX_ATTACHMENT_MB * 2**20)),
        auth=auth,
    )
    # Gradio's queue looks for new events every millisecond while idle (50 ms on Windows), and for
    # progress every 10 ms: 5% of a core, all day, taken from the process that also serves /v1 and
    # feeds the engine (/v1 then streamed 5-8% slower than `vllm serve`). 20 ms is shorter than
    # anything a click can tell; progress bars move at the pace Gradio uses on Windows.
    blocks._queue.sleep_when_free = QUEUE_IDLE_POLL_S
    blocks._queue.progress_update_sleep_when_free = PROGRESS_POLL_S
    page = next(route.app for route in http.routes if isinstance(route, Mount) and route.path == "")
    return page.stop_event.set
