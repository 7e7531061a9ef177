"""The chat tab's tools: a reply that may call tools (the core's `ToolLoop`), drawn as it goes,
each call a collapsible block; the approval bar (Allow once / Always allow / Deny) for the call
waiting in this page; the thinking switch.

A call waits for the page that sent the message: approvals are keyed by the page's Gradio
session, so another tab, another user or a script on the API cannot answer for it. The bar
follows the waiting call at `APPROVAL_POLL_S` (the streamed reply has its own outputs).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.application import App
from app.config.settings import SamplingSettings
from app.engine.types import ChatDelta, ChatOptions
from app.errors import UserError
from app.history.replies import Outcome, ReplyRecorder
from app.i18n import translate
from app.tools.config import MAX_THINKING_BUDGET
from app.tools.host import Decision, ToolHost
from app.tools.loop import (
    CallsStep,
    RoundEnd,
    TextStep,
    ToolLoop,
    thinking_budget_applies,
    thinking_switch_applies,
    tools_supported,
)
from app.ui.chat_display import LiveTurn, display
from app.ui.i18n import request_language, shown_error
from app.ui.tool_blocks import call_block

APPROVAL_POLL_S = 0.5
UPDATE_INTERVAL_S = 0.1


@dataclass
class ToolControls:
    approval: gr.Group
    approval_text: gr.Markdown
    allow_once: gr.Button
    allow_always: gr.Button
    deny: gr.Button
    call_id: gr.State
    thinking: gr.Checkbox
    budget: gr.Number
    note: gr.Markdown


class ChatTools:
    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def host(self) -> ToolHost:
        assert self.app.tools is not None
        return self.app.tools

    def active(self) -> bool:
        """Whether replies go through the tool loop: servers set up and a model that can call tools."""
        return self.app.tools is not None and self.host.has_servers() and tools_supported(self.app.engine)

    def options(self) -> ChatOptions | None:
        """The thinking switch, for a model whose template takes it, and the thinking budget."""
        kwargs, budget = self._template_kwargs(), self._thinking_budget()
        if not kwargs and budget is None:
            return None
        return ChatOptions(template_kwargs=tuple(kwargs.items()), thinking_budget=budget)

    def plain_stream(self, prompt: list[dict[str, Any]], sampling: SamplingSettings) -> AsyncIterator[ChatDelta]:
        """A reply without tools; the thinking switch goes only to a model whose template takes it."""
        options = self.options()
        if options is None:
            return self.app.engine.stream_chat(prompt, sampling)
        return self.app.engine.stream_chat(prompt, sampling, options=options)

    def _template_kwargs(self) -> dict[str, Any]:
        if self.app.tools is None or not thinking_switch_applies(self.app.engine):
            return {}
        return {"enable_thinking": self.host.settings.thinking}

    def _thinking_budget(self) -> int | None:
        """The budget, where vLLM can hold the model to it and thinking is not switched off."""
        if self.app.tools is None or not thinking_budget_applies(self.app.engine):
            return None
        if thinking_switch_applies(self.app.engine) and not self.host.settings.thinking:
            return None
        return self.host.settings.thinking_budget

    # ---- the reply ---------------------------------------------------------------------

    async def stream(
        self, recorder: ReplyRecorder, sampling: SamplingSettings, lang: str, session: str
    ) -> AsyncIterator[tuple]:
        """Yields (live chat, conversation id) like the chat panel's plain reply, through the tool
        rounds. Each round is saved when its calls have their results; on Stop or an error the
        round in progress is saved as far as it got (calls not finished marked stopped)."""
        loop = ToolLoop(
            self.app.engine,
            self.host,
            session,
            lang,
            self._template_kwargs(),
            self.host.first_choice,
            self._thinking_budget(),
        )
        steps = loop.run(recorder.turn.prompt(recorder.system_prompt, self.app.conversations), sampling)
        files = self.app.conversations.files
        calls, outcome, next_update, live = (), Outcome.STOPPED, 0.0, LiveTurn(lang, files)
        try:
            yield display([recorder.user], lang, files), gr.skip()
            async for step in steps:
                recorder.start()
                if isinstance(step, TextStep):
                    recorder.feed(step.delta)
                    if time.monotonic() < next_update:
                        continue
                    next_update = time.monotonic() + UPDATE_INTERVAL_S
                elif isinstance(step, CallsStep):
                    calls = step.calls
                elif isinstance(step, RoundEnd):
                    recorder.end_round(step.text, step.calls, step.last)
                    calls = ()
                yield self._live(recorder, loop, calls, live, lang), recorder.turn.conversation_id
            outcome = Outcome.FINISHED
        except UserError as exc:
            outcome = Outcome.FAILED
            raise shown_error(exc.message(lang)) from None
        finally:
            await steps.aclose()
            recorder.finish(outcome, loop.open_calls())
        if recorder.begun:
            # As in chat_panel: its inline math as it streamed, so that only new text is sent.
            yield display(recorder.saved(), lang, files, live=True), recorder.turn.conversation_id

    def _live(self, recorder: ReplyRecorder, loop: ToolLoop, calls: tuple, live: LiveTurn, lang: str) -> list:
        """The turn so far: saved rounds, the round streaming now, each of its calls as a block."""
        turn = recorder.turn
        blocks = [call_block(c.name, c.arguments, c.state, c.result, lang) for c in calls]
        return [*live.show([turn.user, *turn.rounds], loop.shown(recorder.text)), *blocks]

    # ---- the approval bar and the switch -------------------------------------------------

    def poll(self, shown_call: str | None, request: gr.Request) -> tuple:
        """The bar for the call waiting in this page (hidden when none); unchanged if it is shown."""
        pending = self.host.pending(request.session_hash or "") if self.app.tools is not None else None
        if (pending.call_id if pending else None) == shown_call:
            return gr.skip(), gr.skip(), gr.skip()
        if pending is None:
            return gr.update(visible=False), "", None
        lang = request_language(request)
        text = translate("chat_tools.approval_question", lang, tool=pending.tool, server=pending.server)
        return gr.update(visible=True), text, pending.call_id

    def decide(self, decision: Decision) -> Any:
        def handler(call_id: str | None, request: gr.Request) -> tuple:
            if call_id:
                self.host.decide(request.session_hash or "", call_id, decision)
            return gr.update(visible=False), "", None

        return handler

    def refresh(self, request: gr.Request) -> tuple:
        """The switch and the budget (each shown for a model it applies to) and the line about
        tools under the box."""
        lang = request_language(request)
        thinking = gr.update(visible=thinking_switch_applies(self.app.engine), value=self._thinking_on())
        # The budget's value is left alone: the user may be typing in it.
        budget = gr.update(visible=self.app.tools is not None and thinking_budget_applies(self.app.engine))
        return thinking, budget, self._note(lang)

    def budget_value(self) -> int | None:
        """The saved budget, for the field when the page opens."""
        return self.host.settings.thinking_budget if self.app.tools is not None else None

    def set_thinking(self, on: bool) -> None:
        if self.app.tools is not None:
            self.host.set_thinking(on)

    def set_budget(self, tokens: float | None, request: gr.Request) -> int | None:
        """An empty field (or 0) is no limit; anything else must be a whole number of tokens.
        Returns what the field shows: the budget now saved."""
        if self.app.tools is None:
            return None
        if tokens is not None and (tokens < 0 or tokens != int(tokens) or tokens > MAX_THINKING_BUDGET):
            raise shown_error(translate("chat_tools.bad_budget", request_language(request), most=MAX_THINKING_BUDGET))
        self.host.set_thinking_budget(int(tokens) if tokens else None)
        return self.budget_value()

    def _thinking_on(self) -> bool:
        return self.app.tools is None or self.host.settings.thinking

    def _note(self, lang: str) -> dict[str, Any]:
        if self.app.tools is None or not self.host.has_servers() or self.app.engine.model_name is None:
            return gr.update(value="", visible=False)
        if not tools_supported(self.app.engine):
            return gr.update(value=translate("chat_tools.model_cannot", lang), visible=True)
        return gr.update(value="", visible=False)


def tool_controls(i18n: gr.I18n) -> ToolControls:
    """Render, under the message box, the approval bar (hidden), the switch and the tools line."""
    with gr.Group(visible=False, elem_id="tool-approval") as approval:
        approval_text = gr.Markdown(elem_id="tool-approval-text")
        with gr.Row():
            allow_once = gr.Button(i18n("chat_tools.allow_once"), variant="primary", size="sm", elem_id="tool-allow")
            allow_always = gr.Button(i18n("chat_tools.allow_always"), size="sm", elem_id="tool-allow-always")
            deny = gr.Button(i18n("chat_tools.deny"), variant="stop", size="sm", elem_id="tool-deny")
    with gr.Row():
        thinking = gr.Checkbox(label=i18n("chat_tools.thinking"), value=True, visible=False, elem_id="thinking")
        budget = gr.Number(
            label=i18n("chat_tools.thinking_budget"),
            info=i18n("chat_tools.thinking_budget_info"),
            value=None,
            precision=None,
            visible=False,
            elem_id="thinking-budget",
        )
        note = gr.Markdown(visible=False, elem_classes="chat-notice", elem_id="tools-note")
    controls = (approval, approval_text, allow_once, allow_always, deny, gr.State(None), thinking, budget, note)
    return ToolControls(*controls)


def wire_tool_controls(tools: ChatTools, controls: ToolControls, timer: gr.Timer) -> None:
    private = {"api_visibility": "private", "show_progress": "hidden"}
    bar = [controls.approval, controls.approval_text, controls.call_id]
    gr.Timer(APPROVAL_POLL_S).tick(tools.poll, [controls.call_id], bar, queue=False, **private)
    for button, decision in (
        (controls.allow_once, Decision.ONCE),
        (controls.allow_always, Decision.ALWAYS),
        (controls.deny, Decision.DENY),
    ):
        button.click(tools.decide(decision), [controls.call_id], bar, queue=False, **private)
    switch = [controls.thinking, controls.budget, controls.note]
    gr.on(None, tools.refresh, inputs=None, outputs=switch, **private)
    timer.tick(tools.refresh, None, switch, **private)
    controls.thinking.input(tools.set_thinking, [controls.thinking], None, queue=False, **private)
    gr.on(None, tools.budget_value, None, controls.budget, **private)
    # Saved when the user is done with the field (Enter or leaving it), not at every key.
    gr.on([controls.budget.submit, controls.budget.blur], tools.set_budget, controls.budget, controls.budget, **private)
