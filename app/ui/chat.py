"""The Chat tab: the conversation sidebar and the chat pane.

The saved conversation (app.conversations) is the truth; the chatbot only displays it.
A reply streams from the engine; the user's message is saved when the first token
arrives, and the reply (finished, stopped or failed part-way) in the generator's
`finally`, after closing the engine stream, which aborts the request in the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.application import App
from app.conversations import Conversation, ReplyStats, StoredMessage, check_import_size, stats_line
from app.engine import ChatDelta, EngineState, content_text, wait_through_cancellation
from app.errors import UserError
from app.files import private_dir, write_private
from app.i18n import translate
from app.settings import SamplingSettings
from app.ui.i18n import request_language, shown_error

# The browser re-renders the whole growing message (Markdown, code, math) on every update, so
# its work per update grows with the reply: updates are spaced out in proportion to the reply's
# length, keeping the page's work per second flat (20 updates/s up to 500 characters, 5/s
# from 2,000 on). The bytes per update stay flat anyway: Gradio sends only the new text.
MIN_UPDATE_INTERVAL_S = 0.05
MAX_UPDATE_INTERVAL_S = 0.2
UPDATE_INTERVAL_PER_CHAR_S = 0.0001

# In the page: empty the box and hand its text to the send event, unless a sent message is
# still being answered (an output given `undefined` is left as it is).
TAKE_MESSAGE_JS = """(message) => {
  if (window.vllmChatSending) return [undefined, undefined];
  window.vllmChatSending = true;
  return ["", message];
}"""
SENT_JS = "() => { window.vllmChatSending = false; }"

LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]


@dataclass(frozen=True)
class Turn:
    """One user message and the reply to it, before anything is saved."""

    conversation_id: int | None
    prior: list[StoredMessage]  # the saved history before the user message
    user_text: str
    # How the user message gets saved once the reply starts:
    # "new" appends it, "edit" rewrites `message` (dropping what followed),
    # "regenerate" keeps `message` and replaces the reply after it.
    kind: str = "new"
    message: StoredMessage | None = None


class ChatPanel:
    """The chat tab's handlers, bound to the app and the chatbot they draw into."""

    def __init__(self, app: App, chatbot: gr.Chatbot) -> None:
        self.app = app
        self.chatbot = chatbot

    # ---- display ---------------------------------------------------------------------

    def display(self, messages: list[StoredMessage], lang: str) -> list[dict[str, Any]]:
        """Chatbot messages: text blocks (kept verbatim, no dedenting) and a speed line under replies."""
        shown = []
        for m in messages:
            content = [{"type": "text", "text": m.content}]
            if m.stats is not None:
                line = html.escape(stats_line(m.stats, lang))
                content.append({"type": "text", "text": f'<span class="reply-stats">{line}</span>'})
            shown.append({"role": m.role, "content": content})
        return shown

    def conversation_list(self, selected: int | None, search: str = "") -> dict[str, Any]:
        choices = [(c.title or "…", c.id) for c in self.app.conversations.list(search)]
        if selected is not None and all(value != selected for _, value in choices):
            selected = None
        return gr.update(choices=choices, value=selected)

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

    def open(self, conversation_id: int | None, request: gr.Request) -> tuple:
        lang = request_language(request)
        if conversation_id is None:
            return self._opened(None, lang)
        return self._opened(self._get(conversation_id, lang), lang)

    def _opened(self, conv: Conversation | None, lang: str) -> tuple:
        messages = self.app.conversations.messages(conv.id) if conv else []
        system_prompt = conv.system_prompt if conv else self.app.settings.system_prompt
        return (
            self.display(messages, lang),
            conv.id if conv else None,
            self.conversation_list(conv.id if conv else None),
            system_prompt,
            conv.title if conv else "",
            self.notice(lang),
        )

    def new_chat(self, request: gr.Request) -> tuple:
        return self._opened(None, request_language(request))

    def refresh_notice(self, request: gr.Request) -> dict[str, Any]:
        return self.notice(request_language(request))

    def search(self, text: str, conversation_id: int | None) -> dict[str, Any]:
        return self.conversation_list(conversation_id, text)

    def rename(self, conversation_id: int | None, title: str, search: str, request: gr.Request) -> dict[str, Any]:
        lang = request_language(request)
        self._require_conversation(conversation_id, lang)
        try:
            self.app.conversations.rename(conversation_id, title)
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None
        return self.conversation_list(conversation_id, search)

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
        self, message: str, conversation_id: int | None, system_prompt: str, request: gr.Request
    ) -> AsyncIterator[tuple]:
        lang = request_language(request)
        if not message or not message.strip():
            raise shown_error(translate("chat.empty_message", lang))
        conv = self._find(conversation_id)
        prior = self.app.conversations.messages(conv.id) if conv else []
        turn = Turn(conv.id if conv else None, prior, message)
        async for update in self._stream(turn, system_prompt, lang):
            yield update

    def unsent(self, message: str, box: str, conversation_id: int | None) -> Any:
        """After a send failed or was stopped: the message for the box if it was not saved (so that
        nothing typed is lost), else no change; nor when the user is typing another one."""
        if box or not message:
            return gr.skip()
        conv = self._find(conversation_id)
        saved = [m.content for m in self.app.conversations.messages(conv.id) if m.role == "user"] if conv else []
        return gr.skip() if saved and saved[-1] == message else message

    async def regenerate(
        self, conversation_id: int | None, system_prompt: str, request: gr.Request
    ) -> AsyncIterator[tuple]:
        lang = request_language(request)
        conv = self._find(conversation_id)
        messages = self.app.conversations.messages(conv.id) if conv else []
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last_user is None:
            raise shown_error(translate("chat.nothing_to_regenerate", lang))
        user = messages[last_user]
        turn = Turn(conv.id, messages[:last_user], user.content, "regenerate", user)
        async for update in self._stream(turn, system_prompt, lang):
            yield update

    async def edit(
        self, conversation_id: int | None, system_prompt: str, edit: gr.EditData, request: gr.Request
    ) -> AsyncIterator[tuple]:
        """A user message was edited in place: continue the chat from the new text."""
        lang = request_language(request)
        conv = self._require_conversation(conversation_id, lang)
        messages = self.app.conversations.messages(conv.id)
        position = self._stored_position(messages, edit.index, lang)
        if messages[position].role != "user":
            raise shown_error(translate("chat.edit_not_user", lang))
        text = content_text(edit.value)
        if not text.strip():
            raise shown_error(translate("chat.empty_message", lang))
        turn = Turn(conv.id, messages[:position], text, "edit", messages[position])
        async for update in self._stream(turn, system_prompt, lang):
            yield update

    async def _stream(self, turn: Turn, system_prompt: str, lang: str) -> AsyncIterator[tuple]:
        """Yields (chatbot, conversation id) while the reply grows.

        Nothing else: Gradio rebuilds every other output component on every update, even one
        sent as gr.skip() (a quarter of the tab's CPU per reply). The box is emptied in the
        browser when the message is sent, the sidebar refreshed when the reply ends."""
        sampling = self._sampling(lang)
        prompt = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
        prompt += [{"role": m.role, "content": m.content} for m in turn.prior]
        prompt.append({"role": "user", "content": turn.user_text})
        stream = self.app.engine.stream_chat(prompt, sampling)
        # The request starts now, so the engine reads the prompt while the page shows the message.
        first = asyncio.ensure_future(anext(stream, None))
        deltas = _chained(first, stream)
        model = self.app.engine.model_name
        text, last, outcome = "", None, "abort"
        conversation_id: int | None = turn.conversation_id
        shown: list[StoredMessage] = []
        first_update = True
        # The pacing starts with the first visible text: a first token that decodes to nothing
        # must not hold the first words back for a whole interval.
        last_update = None
        try:
            # Show the message at once, before the prompt is processed; it is saved only when the
            # engine accepts it.
            preview = StoredMessage(0, "user", turn.user_text, 0.0)
            yield self.display([*turn.prior, preview], lang), gr.skip()
            async for delta in deltas:
                if last is None:
                    # The engine accepted the prompt: only now is the user's message saved,
                    # so a refused one (too long, no model) leaves the history untouched.
                    conversation_id, user = self._save_user_message(turn, system_prompt)
                    shown = [*turn.prior, user]
                text += delta.text
                last = delta
                now = time.monotonic()
                due = last_update is None or now - last_update >= update_interval(len(text))
                # The last words wait for the saved reply below, a moment later with its speed
                # line: one update less per reply.
                if ((due and text) or first_update) and not delta.finish_reason:
                    if text:
                        last_update = now
                    first_update = False
                    yield self.display([*shown, StoredMessage(0, "assistant", text, 0.0)], lang), conversation_id
            outcome = "finished"
        except UserError as exc:
            outcome = "error"
            raise shown_error(exc.message(lang)) from None
        finally:
            # Stop button, closed tab or error: closing the stream aborts the request in the
            # engine; then whatever text arrived is kept. A first delta nobody read (the tab went
            # away during the preview) is dropped: the stream can only be closed once that read
            # has ended. A Stop that lands meanwhile is passed on after the cleanup.
            first.cancel()
            stopped_meanwhile = await wait_through_cancellation(first)
            if not first.cancelled():
                first.exception()  # read (and shown through `deltas`) or dropped, never logged as lost
            await deltas.aclose()
            await stream.aclose()
            if last is not None and (text or outcome == "finished"):
                stats = ReplyStats(
                    model=model,
                    sampling=dataclasses.asdict(sampling),
                    prompt_tokens=last.prompt_tokens,
                    completion_tokens=last.completion_tokens,
                    ttft=last.ttft,
                    elapsed=last.elapsed,
                    finish_reason=last.finish_reason or ("abort" if outcome != "error" else "error"),
                )
                self.app.conversations.add_message(
                    conversation_id, "assistant", text, stats, replace_after=shown[-1].id
                )
            if stopped_meanwhile:
                raise asyncio.CancelledError
        if last is not None:
            saved = self.app.conversations.messages(conversation_id)
            yield self.display(saved, lang), conversation_id

    def _save_user_message(self, turn: Turn, system_prompt: str) -> tuple[int, StoredMessage]:
        store = self.app.conversations
        if system_prompt != self.app.settings.system_prompt:
            # The last system prompt used becomes the default for new chats.
            self.app.update_settings(system_prompt=system_prompt)
        if turn.conversation_id is None:
            conversation_id = store.create(turn.user_text, system_prompt).id
        else:
            conversation_id = turn.conversation_id
            if store.get(conversation_id).system_prompt != system_prompt:
                store.set_system_prompt(conversation_id, system_prompt)
        if turn.kind == "edit":
            user = store.edit_message(conversation_id, turn.message.id, turn.user_text)
        elif turn.kind == "regenerate":
            user = turn.message
        else:
            user = store.add_message(conversation_id, "user", turn.user_text)
        return conversation_id, user

    def _sampling(self, lang: str) -> SamplingSettings:
        """The model's own defaults, with every field the user set on top, whatever its value."""
        try:
            return self.app.engine.resolve_sampling(self.app.settings.sampling.chosen())
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None

    def _stored_position(self, messages: list[StoredMessage], index: Any, lang: str) -> int:
        """Map a chatbot message index to a stored message (a reply can show as several bubbles)."""
        shown_index = index[0] if isinstance(index, (list, tuple)) else index
        position = 0
        for stored_index, item in enumerate(self.display(messages, lang)):
            position += len(self.chatbot.postprocess([item]).root)
            if shown_index < position:
                return stored_index
        raise shown_error(translate("conversations.message_not_found", lang, id=index))

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

    # ---- API-only views ------------------------------------------------------------------

    def history(self, conversation_id: int | None = None) -> dict:
        """A saved conversation as exported JSON (the newest one without an id); {} if there is none."""
        if conversation_id is None:
            latest = self.app.conversations.list(limit=1)
            if not latest:
                return {}
            conversation_id = latest[0].id
        return {"id": conversation_id, **self.app.conversations.export_json(conversation_id)}

    def conversations(self, search: str = "") -> list[dict]:
        """Saved conversations, newest first: id, title, updated."""
        return [{"id": c.id, "title": c.title, "updated": c.updated} for c in self.app.conversations.list(search)]


async def _chained(first: asyncio.Future, rest: AsyncIterator[ChatDelta]) -> AsyncIterator[ChatDelta]:
    """The stream's first delta (already requested) and then the rest of it."""
    delta = await first
    if delta is None:
        return
    yield delta
    async for delta in rest:
        yield delta


def update_interval(reply_chars: int) -> float:
    """Seconds between two updates of a reply that is this long."""
    return min(MAX_UPDATE_INTERVAL_S, max(MIN_UPDATE_INTERVAL_S, reply_chars * UPDATE_INTERVAL_PER_CHAR_S))


def export_dir(app: App) -> Path:
    """Where exported chats are written for download (Gradio must be allowed to serve it)."""
    return app.paths.cache_dir / "exports"


def chat_tab(app: App, i18n: gr.I18n, timer: gr.Timer) -> None:
    """Render the chat tab's content inside an open gr.Tab."""
    conversation_id = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240, elem_classes="conversation-sidebar"):
            new_chat = gr.Button(i18n("chat.new_chat"), variant="secondary", size="sm")
            search = gr.Textbox(placeholder=i18n("chat.search"), show_label=False, container=False, max_lines=1)
            conversations = gr.Radio(choices=[], label=i18n("chat.conversations"), elem_classes="conversation-list")
            with gr.Accordion(i18n("chat.manage"), open=False):
                title = gr.Textbox(label=i18n("chat.rename_label"), max_lines=1)
                rename = gr.Button(i18n("chat.rename"), size="sm")
                with gr.Row():
                    export_md = gr.Button(i18n("chat.export_md"), size="sm")
                    export_json = gr.Button(i18n("chat.export_json"), size="sm")
                exported = gr.File(label=i18n("chat.export_file"), visible=False, interactive=False)
                import_button = gr.UploadButton(i18n("chat.import_json"), file_types=[".json"], size="sm")
                delete = gr.Button(i18n("chat.delete"), variant="stop", size="sm")
                with gr.Group(visible=False) as confirm_group:
                    gr.Markdown(i18n("chat.delete_confirm"))
                    with gr.Row():
                        delete_yes = gr.Button(i18n("chat.delete_yes"), variant="stop", size="sm")
                        delete_no = gr.Button(i18n("chat.cancel"), size="sm")
        with gr.Column(scale=4):
            notice = gr.Markdown(visible=False, elem_classes="chat-notice")
            with gr.Accordion(i18n("chat.system_prompt"), open=False):
                system_prompt = gr.Textbox(
                    value=app.settings.system_prompt,
                    placeholder=i18n("chat.system_prompt_placeholder"),
                    show_label=False,
                    lines=2,
                    max_lines=8,
                )
            chatbot = gr.Chatbot(
                label=i18n("chat.title"),
                height="62vh",
                editable="user",
                buttons=["copy", "copy_all"],
                latex_delimiters=LATEX_DELIMITERS,
                reasoning_tags=[("<think>", "</think>")],
                feedback_options=None,
                # The speed line is a message of its own: apart from the reply, so that copying
                # the reply copies the reply only.
                group_consecutive_messages=False,
                placeholder=i18n("chat.empty_placeholder"),
                elem_id="chatbot",
            )
            with gr.Row(equal_height=True):
                box = gr.Textbox(
                    placeholder=i18n("chat.placeholder"),
                    show_label=False,
                    container=False,
                    # One line: Enter sends and Shift+Enter starts a new line; it grows up to max_lines.
                    lines=1,
                    max_lines=10,
                    scale=8,
                    elem_id="chat-input",
                    # Until the page has loaded the saved chat, a message sent would race with it.
                    interactive=False,
                )
                send = gr.Button(
                    i18n("chat.send"), variant="primary", scale=1, min_width=80, elem_id="send", interactive=False
                )
                stop = gr.Button(i18n("chat.stop"), variant="stop", scale=1, min_width=80, elem_id="stop")
            regenerate = gr.Button(i18n("chat.regenerate"), size="sm", elem_id="regenerate")

    # The message being sent: the box is emptied in the browser at once, and the message goes
    # to the server from here (a hidden field, so that `/send` still takes the message as text).
    sending = gr.Textbox(visible=False)
    panel = ChatPanel(app, chatbot)
    opened = [chatbot, conversation_id, conversations, system_prompt, title, notice]
    streamed = [chatbot, conversation_id]

    # No triggers: runs when the page loads.
    gr.on(None, panel.open_latest, inputs=None, outputs=[*opened, box, send], api_visibility="private")
    timer.tick(panel.refresh_notice, None, notice, show_progress="hidden", api_visibility="private")

    # The growing reply is the progress indicator.
    shown_on = {"show_progress": "hidden"}
    # While a reply streams, Enter and Send leave the box alone: Gradio would skip a second send
    # of the same event, and the text would be lost.
    taken = gr.on([box.submit, send.click], None, [box], [box, sending], js=TAKE_MESSAGE_JS, queue=False,
                  api_visibility="private")
    sent = taken.then(panel.send, [sending, conversation_id, system_prompt], streamed, api_name="send", **shown_on)
    for after in (sent.then, sent.failure):
        after(None, js=SENT_JS, queue=False, api_visibility="private")
    # A message that was never saved (refused, or stopped before the reply began) goes back
    # into the box. Gradio runs `.failure` after a Stop too.
    sent.failure(panel.unsent, [sending, box, conversation_id], [box], queue=False, api_visibility="private")
    replies = [
        sent,
        regenerate.click(
            panel.regenerate, [conversation_id, system_prompt], streamed, api_name="regenerate", **shown_on
        ),
        chatbot.edit(panel.edit, [conversation_id, system_prompt], streamed, api_name="edit", **shown_on),
    ]
    stop.click(None, cancels=replies)
    for event in replies:
        # After a reply ends, is stopped or is refused: show what was saved, speed line included.
        # Gradio's page runs `.then` listeners only when the event did not fail, hence `.failure` too.
        for after in (event.then, event.failure):
            after(panel.open, [conversation_id], opened, show_progress="hidden", api_visibility="private")

    conversations.input(panel.open, [conversations], opened, api_name="open")
    # The chatbot's own clear button starts a new chat; the saved one stays in the list.
    gr.on([new_chat.click, chatbot.clear], panel.new_chat, None, opened, api_visibility="private")
    search.change(
        panel.search,
        [search, conversation_id],
        conversations,
        api_visibility="private",
        show_progress="hidden",
    )
    rename.click(panel.rename, [conversation_id, title, search], conversations, api_name="rename")
    export_md.click(panel.export_markdown, [conversation_id], exported, api_visibility="private")
    export_json.click(panel.export_json, [conversation_id], exported, api_visibility="private")
    import_button.upload(panel.import_file, [import_button], opened, api_visibility="private")
    delete.click(lambda: gr.update(visible=True), None, confirm_group, api_visibility="private")
    delete_no.click(lambda: gr.update(visible=False), None, confirm_group, api_visibility="private")
    delete_yes.click(panel.delete, [conversation_id], opened, api_name="delete").then(
        lambda: gr.update(visible=False), None, confirm_group, api_visibility="private"
    )
    gr.api(panel.history, api_name="history")
    gr.api(panel.conversations, api_name="conversations")
