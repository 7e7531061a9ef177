"""The chat tab's handlers: what each event does, given the app and the chatbot it draws into.

The saved conversation is the truth; the chatbot only displays it. Where a turn's messages go
in the tree is decided by the conversations core (`new_turn`, `edit_turn`, `regenerate_turn`,
`begin`, `save_reply`); here the reply is streamed and drawn. The reply (finished, stopped or
failed part-way) is saved in the generator's `finally`, after closing the engine stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import gradio as gr

from app.application import App
from app.config.settings import SamplingSettings
from app.conversations import (
    Conversation,
    Turn,
    check_import_size,
    edit_turn,
    new_turn,
    regenerate_turn,
)
from app.engine import EngineState, content_text
from app.errors import UserError
from app.files import private_dir, write_private
from app.history.replies import Outcome, ReplyRecorder
from app.i18n import translate
from app.ui.chat_attachments import AttachmentTray
from app.ui.chat_display import LiveTurn, display, window_start, without_math_marks
from app.ui.chat_stream import Pacer, ReplyStops, chained, close_stream
from app.ui.chat_tools import ChatTools
from app.ui.chat_versions import ChatVersions
from app.ui.i18n import request_language, shown_error


class ChatPanel:
    """The chat tab's handlers, bound to the app and the chatbot they draw into."""

    def __init__(self, app: App, chatbot: gr.Chatbot) -> None:
        self.app = app
        self.chatbot = chatbot
        self.tools = ChatTools(app)
        self.stops = ReplyStops()
        self.versions = ChatVersions(app, chatbot)

    def conversation_list(self, selected: int | None, search: str = "", lang: str = "en") -> dict[str, Any]:
        """The sidebar's chats (those matching `search`), or a line saying none matches it."""
        choices = [(c.title or "…", c.id) for c in self.app.conversations.list(search)]
        if selected is not None and all(value != selected for _, value in choices):
            selected = None
        nothing = translate("chat.no_match", lang, text=search.strip()) if search.strip() and not choices else ""
        return gr.update(choices=choices, value=selected, info=nothing)

    def notice(self, lang: str) -> dict[str, Any]:
        """The line above the chat saying why it cannot answer now, if it cannot."""
        status = self.app.engine.status
        if status.state == EngineState.READY:
            return gr.update(value="", visible=False)
        if status.state == EngineState.LOADING:
            text = translate("engine.still_loading", lang, model=status.model)
        else:
            text = translate("chat.no_model_notice", lang)
        return gr.update(value=text, visible=True)

    # ---- page load, selecting, sidebar -------------------------------------------------

    def open_latest(self, request: gr.Request) -> tuple:
        """On page load: the most recent conversation, so a reload or a restart shows the chat again."""
        lang = request_language(request)
        latest = self.app.conversations.list(limit=1)
        conv = latest[0] if latest else None
        return (*self._opened(conv, lang), gr.update(interactive=True), gr.update(interactive=True))

    def open(self, conversation_id: int | None, request: gr.Request, whole: bool = False) -> tuple:
        """A saved chat, on its last messages (`whole`: all of them)."""
        lang = request_language(request)
        if conversation_id is None:
            return self._opened(None, lang)
        return self._opened(self._get(conversation_id, lang), lang, whole)

    def open_whole(self, conversation_id: int | None, request: gr.Request) -> tuple:
        return self.open(conversation_id, request, whole=True)

    def open_saved(self, conversation_id: int | None, whole: bool, request: gr.Request) -> tuple:
        """`open`, but for the live chat: after a reply, the page empties that itself once it has
        drawn the turn in the saved chat (see chat.py). A reply stopped at once may have begun a
        new chat the page has not heard of: that one is opened."""
        if conversation_id is None:
            conversation_id = self.stops.new_chat(request.session_hash or "")
        opened = self.open(conversation_id, request, whole)
        return opened[:1] + opened[2:]

    def _opened(self, conv: Conversation | None, lang: str, whole: bool = False) -> tuple:
        """The outputs of opening a chat, in the order of `opened` in chat.py (the live chat second)."""
        messages = self.app.conversations.messages(conv.id) if conv else []
        system_prompt = conv.system_prompt if conv else self.app.settings.system_prompt
        start = window_start(messages, whole)
        earlier = translate("chat.show_earlier", lang, count=start)
        return (
            display(messages[start:], lang, self.app.conversations.files),
            [],
            whole,
            gr.update(value=earlier, visible=start > 0),
            conv.id if conv else None,
            self.conversation_list(conv.id if conv else None),
            system_prompt,
            conv.title if conv else "",
            self.notice(lang),
            *self.versions.bar(messages, None, lang),
        )

    def new_chat(self, request: gr.Request) -> tuple:
        return self._opened(None, request_language(request))

    def refresh_notice(self, request: gr.Request) -> dict[str, Any]:
        return self.notice(request_language(request))

    def search(self, text: str, conversation_id: int | None, request: gr.Request) -> dict[str, Any]:
        return self.conversation_list(conversation_id, text, request_language(request))

    def rename(self, conversation_id: int | None, title: str, search: str, request: gr.Request) -> dict[str, Any]:
        lang = request_language(request)
        self._require_conversation(conversation_id, lang)
        try:
            self.app.conversations.rename(conversation_id, title)
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None
        return self.conversation_list(conversation_id, search, lang)

    def delete(self, conversation_id: int | None, request: gr.Request) -> tuple:
        lang = request_language(request)
        self._require_conversation(conversation_id, lang)
        self.app.conversations.delete(conversation_id)
        return self._opened(None, lang)

    def export_markdown(self, conversation_id: int | None, request: gr.Request) -> dict[str, Any]:
        return self._export(conversation_id, "md", request_language(request))

    def export_json(self, conversation_id: int | None, request: gr.Request) -> dict[str, Any]:
        return self._export(conversation_id, "json", request_language(request))

    def _export(self, conversation_id: int | None, fmt: str, lang: str) -> dict[str, Any]:
        conv = self._require_conversation(conversation_id, lang)
        folder = private_dir(export_dir(self.app))
        stem = re.sub(r"[^\w\-]+", "_", conv.title, flags=re.UNICODE).strip("_")[:40] or "chat"
        path = folder / f"{stem}-{conv.id}.{fmt}"
        if fmt == "md":
            write_private(path, self.app.conversations.export_markdown(conv.id, lang))
        else:
            data = self.app.conversations.export_json(conv.id)
            write_private(path, json.dumps(data, ensure_ascii=False, indent=2))
        return gr.update(value=str(path), visible=True)

    def import_file(self, file: str | None, request: gr.Request) -> tuple:
        lang = request_language(request)
        if not file:
            raise shown_error(translate("chat.import_nothing", lang))
        try:
            check_import_size(Path(file).stat().st_size)
            conv = self.app.conversations.import_json(Path(file).read_bytes())
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise shown_error(translate("conversations.bad_import", lang, reason=str(exc))) from None
        return self._opened(conv, lang)

    # ---- replies -----------------------------------------------------------------------

    async def send(
        self,
        message: str,
        conversation_id: int | None,
        system_prompt: str,
        request: gr.Request,
        attached: list | None = None,
        stop_key: str = "",
    ) -> AsyncIterator[tuple]:
        """`attached`: the files waiting in the page (app.ui.chat_attachments), and `stop_key`
        (see ReplyStops), are not part of the API."""
        lang = request_language(request)
        conv = self._find(conversation_id)
        files = AttachmentTray(self.app).check(message, attached, lang)
        turn = self._turn(new_turn, lang, conv.id if conv else None, message, files)
        async for update in self._stream(turn, system_prompt, lang, request.session_hash, stop_key):
            yield update

    def unsent(self, message: str, box: str, conversation_id: int | None, request: gr.Request) -> Any:
        """After a send failed or was stopped: the message for the box if it was not saved (so that
        nothing typed is lost), else no change; nor when the user is typing another one."""
        if box or not message:
            return gr.skip()
        if conversation_id is None:
            conversation_id = self.stops.new_chat(request.session_hash or "")
        conv = self._find(conversation_id)
        saved = [m.content for m in self.app.conversations.messages(conv.id) if m.role == "user"] if conv else []
        return gr.skip() if saved and saved[-1] == message else message

    async def regenerate(
        self, conversation_id: int | None, system_prompt: str, whole: bool, request: gr.Request, stop_key: str = ""
    ) -> AsyncIterator[tuple]:
        """Another version of the last reply shown; the earlier ones stay, a ‹ › away."""
        lang = request_language(request)
        conv = self._find(conversation_id)
        turn = self._turn(regenerate_turn, lang, conv.id if conv else None)
        async for update in self._restream(turn, system_prompt, whole, lang, request.session_hash, stop_key):
            yield update

    async def edit(
        self,
        conversation_id: int | None,
        system_prompt: str,
        whole: bool,
        edit: gr.EditData,
        request: gr.Request,
        stop_key: str = "",
    ) -> AsyncIterator[tuple]:
        """A user message was edited in place: a new branch from there, the old one kept."""
        lang = request_language(request)
        conv = self._require_conversation(conversation_id, lang)
        messages = self.app.conversations.messages(conv.id)
        message = messages[self.versions.stored_position(messages, whole, edit.index, lang)]
        turn = self._turn(edit_turn, lang, conv.id, message.id, without_math_marks(content_text(edit.value)))
        async for update in self._restream(turn, system_prompt, whole, lang, request.session_hash, stop_key):
            yield update

    def _turn(self, make: Any, lang: str, *args: Any) -> Turn:
        try:
            return make(self.app.conversations, *args)
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None

    async def _stream(
        self, turn: Turn, system_prompt: str, lang: str, session: str | None = None, stop_key: str = ""
    ) -> AsyncIterator[tuple]:
        """Yields (live chat, conversation id) while the reply grows: the turn alone, its user's
        message and the reply so far, under the saved chat, which is left alone (redrawing it on
        every update is what made long chats slow). When the reply ends the turn shows as saved,
        speed line included; the `.then` after the event moves it into the saved chat.

        Nothing else: Gradio rebuilds every other output component on every update, even one
        sent as gr.skip(). The box is emptied in the browser when the message is sent. With tools
        set up, the reply goes through the tool loop (`chat_tools`) instead."""
        updates = self._reply(turn, system_prompt, lang, session or "")
        async for update in self.stops.run(session or "", stop_key, lang, updates):
            yield update

    async def _reply(self, turn: Turn, system_prompt: str, lang: str, session: str) -> AsyncIterator[tuple]:
        sampling = self._sampling(lang)
        recorder = ReplyRecorder(
            self.app.conversations,
            turn,
            system_prompt,
            self.app.engine.model_name,
            dataclasses.asdict(sampling),
            self._on_begin(session, system_prompt),
        )
        if self.tools.active():
            replies = self.tools.stream(recorder, sampling, lang, session)
        else:
            replies = self._plain_reply(recorder, sampling, lang)
        # Closed with this one (on Stop, see ReplyStops.run): that saves it and aborts its request.
        async with contextlib.aclosing(replies):
            async for update in replies:
                yield update

    async def _plain_reply(
        self, recorder: ReplyRecorder, sampling: SamplingSettings, lang: str
    ) -> AsyncIterator[tuple]:
        files = self.app.conversations.files
        stream = self.tools.plain_stream(recorder.turn.prompt(recorder.system_prompt, self.app.conversations), sampling)
        # The request starts now, so the engine reads the prompt while the page shows the message.
        first = asyncio.ensure_future(anext(stream, None))
        deltas = chained(first, stream)
        outcome, pacer, live = Outcome.STOPPED, Pacer(), LiveTurn(lang, files)
        try:
            # Show the message at once, before the prompt is processed; it is saved only when the
            # engine accepts it (the first delta), so a refused one leaves the history untouched.
            yield live.show([recorder.user], None), gr.skip()
            async for delta in deltas:
                recorder.feed(delta)
                # The last words wait for the saved reply below, a moment later with its speed
                # line: one update less per reply.
                if pacer.due(recorder.text) and not delta.finish_reason:
                    yield live.show([recorder.user], recorder.text), recorder.turn.conversation_id
            outcome = Outcome.FINISHED
        except UserError as exc:
            outcome = Outcome.FAILED
            raise shown_error(exc.message(lang)) from None
        finally:
            stopped_meanwhile = await close_stream(first, deltas, stream)
            recorder.finish(outcome)
            if stopped_meanwhile:
                raise asyncio.CancelledError
        if recorder.begun:
            # Its last words and speed line; its inline math stays as it streamed (the saved chat
            # shows it typeset a moment later), so that the page is sent the new text only.
            yield display(recorder.saved(), lang, files, live=True), recorder.turn.conversation_id

    async def _restream(
        self, turn: Turn, system_prompt: str, whole: bool, lang: str, session: str | None, stop_key: str
    ) -> AsyncIterator[tuple]:
        """`_stream`, with the saved chat above cut back once to where the turn starts (the old
        reply or branch stays saved, a version away)."""
        cut = display(turn.prior[window_start(turn.prior, whole) :], lang, self.app.conversations.files)
        async for live, conversation_id in self._stream(turn, system_prompt, lang, session, stop_key):
            yield live, conversation_id, cut
            cut = gr.skip()

    def _on_begin(self, session: str, system_prompt: str) -> Callable[[Turn, Turn], None]:
        """What follows the saving of the user's message: the system prompt becomes the default,
        and a chat begun by this reply is one Stop's page may reopen."""

        def began(before: Turn, begun: Turn) -> None:
            self.app.remember_system_prompt(system_prompt)
            if before.conversation_id is None and begun.conversation_id is not None:
                self.stops.began_new_chat(session, begun.conversation_id)

        return began

    def _sampling(self, lang: str) -> SamplingSettings:
        """The model's own defaults, with every field the user set on top, whatever its value."""
        try:
            return self.app.reply_sampling()
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None

    def _find(self, conversation_id: int | None) -> Conversation | None:
        if conversation_id is None:
            return None
        try:
            return self.app.conversations.get(conversation_id)
        except UserError:
            return None  # deleted in another tab: start a new one

    def _get(self, conversation_id: int, lang: str) -> Conversation:
        try:
            return self.app.conversations.get(conversation_id)
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None

    def _require_conversation(self, conversation_id: int | None, lang: str) -> Conversation:
        if conversation_id is None:
            raise shown_error(translate("chat.no_chat_selected", lang))
        return self._get(conversation_id, lang)


def export_dir(app: App) -> Path:
    """Where exported chats are written for download (Gradio must be allowed to serve it)."""
    return app.paths.cache_dir / "exports"
