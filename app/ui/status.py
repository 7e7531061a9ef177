"""The status bar: loaded model, engine state (stage while loading, reason when failed), memory in use."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from app.application import App
from app.engine import EngineState
from app.engine.pool import HOLDING
from app.hardware import Hardware, detect
from app.i18n import translate
from app.ui.i18n import request_language

GIB = 2**30


def status_text(app: App, hardware: Hardware, lang: str) -> str:
    """One line of HTML; text from the engine (model names, errors) is escaped."""
    status = app.engine.status
    model = status.model or ""
    if status.state == EngineState.READY:
        state = translate("engine.state_ready", lang, model=model)
        if status.max_model_len:
            state += " · " + translate("status.max_len", lang, tokens=status.max_model_len)
        if app.engine.capabilities.speculative:
            state += " · " + translate("status.speculative", lang, method=app.engine.capabilities.speculative)
        if status.notice is not None:
            state += " · ⚠️ " + status.notice.message(lang)
        css = "ready"
    elif status.state == EngineState.LOADING:
        state = translate("engine.state_loading", lang, model=model)
        if status.stage:
            state += " " + translate(status.stage, lang)
        css = "loading"
    elif status.state == EngineState.FAILED:
        state = translate("engine.state_failed", lang, model=model)
        if status.error is not None:
            state += ": " + status.error.message(lang)
        css = "failed"
    else:
        state = translate("engine.state_empty", lang) + " · " + translate("status.pick_model", lang)
        css = "empty"
    others = other_members_text(app, lang)
    if others:
        state += " · " + others
    return (
        f'<div class="status-bar status-{css}"><span class="status-state">{html.escape(state)}</span>'
        f'<span class="status-memory">{html.escape(memory_text(hardware, lang))}</span></div>'
    )


def other_members_text(app: App, lang: str) -> str:
    """The models loaded beside the chat's (they answer /v1 requests that name them), each with
    its state; empty when there are none."""
    current = app.pool.current
    others = [m for m in app.pool.members() if m is not current and m.state in HOLDING]
    if not others:
        return ""
    names = ", ".join(
        translate("status.member", lang, model=m.name, state=translate(f"status.member_{m.state.value}", lang))
        for m in others
    )
    return translate("status.also_loaded", lang, models=names)


def memory_text(hardware: Hardware, lang: str) -> str:
    """Device memory in use: each GPU, or the RAM when there is none."""
    if hardware.gpus:
        return " · ".join(
            translate(
                "status.gpu_memory",
                lang,
                index=gpu.index,
                used=f"{gpu.memory_used / GIB:.1f}",
                total=f"{gpu.memory_total / GIB:.1f}",
            )
            for gpu in hardware.gpus
        )
    used = hardware.ram_total - hardware.ram_available
    return translate("status.ram", lang, used=f"{used / GIB:.1f}", total=f"{hardware.ram_total / GIB:.1f}")


@dataclass(frozen=True)
class PageStatus:
    """The status bar and the page's timer, for events elsewhere that change what the bar says
    (a load, an unload) and would otherwise wait up to a tick for it."""

    bar: gr.HTML
    timer: gr.Timer


def status_bar(app: App, timer: gr.Timer) -> PageStatus:
    """Render the bar; it refreshes on each tick of `timer` and when the page loads."""
    bar = gr.HTML(elem_id="status-bar")

    def refresh(request: gr.Request) -> str:
        return status_now(app, request)

    # No triggers: runs when the page loads.
    gr.on(None, refresh, None, bar, show_progress="hidden", api_visibility="private")
    timer.tick(refresh, None, bar, show_progress="hidden", api_visibility="private")
    return PageStatus(bar, timer)


def status_now(app: App, request: gr.Request) -> str:
    """The bar's HTML now, in the page's language."""
    return status_text(app, detect(), request_language(request))
