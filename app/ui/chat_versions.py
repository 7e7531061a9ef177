"""The chat tab's versions: the ‹ Reply 2/3 › bar for the turn it acts on, switching versions, and
which saved message a shown bubble is (a message can show as several bubbles, and a long chat
shows its last ones only)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.application import App
from app.conversations import Conversation, StoredMessage
from app.errors import UserError
from app.i18n import translate
from app.ui.chat_display import display, display_groups, version_target, window_start
from app.ui.i18n import request_language, shown_error


class ChatVersions:
    def __init__(self, app: App, chatbot: gr.Chatbot) -> None:
        self.app = app
        self.chatbot = chatbot

    def previous_version(
        self, focus: int | None, conversation_id: int | None, whole: bool, request: gr.Request
    ) -> tuple:
        return self._switch(focus, conversation_id, whole, -1, request_language(request))

    def next_version(self, focus: int | None, conversation_id: int | None, whole: bool, request: gr.Request) -> tuple:
        return self._switch(focus, conversation_id, whole, 1, request_language(request))

    def pick_version(
        self, conversation_id: int | None, whole: bool, selected: gr.SelectData, request: gr.Request
    ) -> tuple:
        """A message clicked: the version buttons act on its turn, if it has several versions."""
        lang = request_language(request)
        path = self._shown(conversation_id)
        if not path:
            return self.bar(path, None, lang)
        return self.bar(path, path[self.stored_position(path, whole, selected.index, lang)].id, lang)

    def _switch(self, focus: int | None, conversation_id: int | None, whole: bool, step: int, lang: str) -> tuple:
        """The chat with the version `step` away of the turn the buttons act on; they then act on it."""
        conv = self._conversation(conversation_id, lang)
        path = self.app.conversations.messages(conv.id)
        at = version_target(path, focus)
        if at is not None:
            path = self.app.conversations.show_version(conv.id, path[at].id, step)
        shown = display(path[window_start(path, whole) :], lang, self.app.conversations.files)
        return shown, *self.bar(path, path[at].id if at is not None else None, lang)

    def bar(self, path: list[StoredMessage], focus: int | None, lang: str) -> tuple:
        """(focus, row, ‹ button, "Reply 2/3", › button) for the turn `version_target` picks;
        the row hidden when no turn on the shown path has versions."""
        at = version_target(path, focus)
        if at is None:
            return None, gr.update(visible=False), gr.skip(), gr.skip(), gr.skip()
        message = path[at]
        key = "chat.version_reply" if message.role == "assistant" else "chat.version_message"
        return (
            message.id,
            gr.update(visible=True),
            gr.update(interactive=message.version > 1),
            translate(key, lang, version=message.version, versions=message.versions),
            gr.update(interactive=message.version < message.versions),
        )

    def stored_position(self, messages: list[StoredMessage], whole: bool, index: Any, lang: str) -> int:
        """Map a chatbot message index to a stored message (a message can show as several bubbles,
        and a long chat shows its last ones only)."""
        shown_index = index[0] if isinstance(index, (list, tuple)) else index
        start = window_start(messages, whole)
        position = 0
        for stored_index, group in enumerate(display_groups(messages[start:], lang), start):
            position += len(self.chatbot.postprocess(group).root)
            if shown_index < position:
                return stored_index
        raise shown_error(translate("conversations.message_not_found", lang, id=index))

    def _conversation(self, conversation_id: int | None, lang: str) -> Conversation:
        if conversation_id is None:
            raise shown_error(translate("chat.no_chat_selected", lang))
        try:
            return self.app.conversations.get(conversation_id)
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None

    def _shown(self, conversation_id: int | None) -> list[StoredMessage]:
        """The shown path of a chat; none for no chat or one deleted in another tab."""
        if conversation_id is None:
            return []
        try:
            return self.app.conversations.messages(conversation_id)
        except UserError:
            return []
