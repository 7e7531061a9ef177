"""The Blocks page: wires the panels together and mounts them on the HTTP app."""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI

from app.application import App
from app.errors import UserError
from app.ui.i18n import gradio_i18n, request_language


def build_blocks(app: App) -> gr.Blocks:
    i18n = gradio_i18n()
    with gr.Blocks(title="vllm-chat") as blocks:
        chatbot = gr.Chatbot(label=i18n("chat.title"), reasoning_tags=[("<think>", "</think>")])
        box = gr.Textbox(placeholder=i18n("chat.placeholder"), show_label=False)
        stop = gr.Button(i18n("chat.stop"))

        async def respond(message: str, history: list, request: gr.Request):
            lang = request_language(request)
            history = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
            try:
                async for delta in app.engine.stream_chat(history[:-1], app.engine.resolve_sampling()):
                    history[-1]["content"] += delta.text
                    yield history, ""
            except UserError as exc:
                raise gr.Error(exc.message(lang)) from None

        event = box.submit(respond, [box, chatbot], [chatbot, box])
        stop.click(None, cancels=[event])
    return blocks


def mount_ui(http: FastAPI, app: App, auth: tuple[str, str] | None = None) -> FastAPI:
    blocks = build_blocks(app)
    # The engine batches: do not serialize chats behind Gradio's default limit of one.
    blocks.queue(default_concurrency_limit=None)
    return gr.mount_gradio_app(http, blocks, path="/", run_history=False, i18n=gradio_i18n(), footer_links=["api"],
                               auth=auth)
