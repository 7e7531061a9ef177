"""Files and pictures in the chat tab: the attach button, the chips of the files waiting for
the next message (name and token count), and the thumbnails of those saved in the history.

The files waiting to be sent are the page's state (a list of `Attachment`s, already saved in
the app's attachments folder); they go with the next message and stay when it is refused, so
nothing attached is lost. Reading, counting and checking are the core's (app.attachments).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from app.application import App
from app.attachments import Attachment, AttachmentFiles, AttachmentKind, attach, check_fits, check_images, check_size
from app.attachments.files import clean_name
from app.errors import UserError
from app.i18n import translate
from app.ui.i18n import request_language, shown_error

# The size of a thumbnail on the page, in CSS pixels; its JPEG has twice as many, to be sharp
# on a HiDPI screen (assets/style.css keeps its shape).
THUMBNAIL_PX = 160
THUMBNAIL_SCALE = 2
# The ✕ beside the attach button: its text is the translated "Remove all attached files", which
# screen readers read (the page shows a cross in its place, assets/style.css); this makes it the
# tooltip too.
# Files bigger than the page takes are kept from Gradio's client (which refuses them in its own
# English words) by assets/chat.js, which names them here for their refusal.
UNSENT_JS = "() => window.vllmChatUnsent?.() ?? '[]'"
MAX_UNSENT = 100
CLEAR_TOOLTIP_JS = """() => {
  const button = document.querySelector('#attachments-clear');
  if (button) button.title = button.textContent.trim();
}"""


class AttachmentTray:
    """Handlers for the files waiting for the next message."""

    def __init__(self, app: App) -> None:
        self.app = app

    def add(
        self,
        uploaded: Any,
        pending: list[Attachment] | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (how Gradio hands a handler its progress)
    ) -> tuple[list, str]:
        """Read the files the user picked or dropped; each bad one gets its sentence, the good ones
        stay. The page shows how far the reading is, file by file (a PDF page by page)."""
        lang = request_language(request)
        pending = list(pending or [])
        problems = []
        files = _uploads(uploaded)
        for number, (path, name) in enumerate(files):
            told = _told_progress(progress, number, len(files), translate("attachments.reading", lang, name=name))
            told(0.0)
            try:
                pending.append(self._read(path, name, pending, told))
            except UserError as exc:
                problems.append(exc.message(lang))
        for problem in problems:
            gr.Warning(problem)
        return pending, chips(pending, lang)

    def _read(self, path: str, name: str, pending: list[Attachment], progress: Callable[[float], None]) -> Attachment:
        limit = self.app.settings.max_attachment_mb
        # Refused by its size on disk, before a byte of it is read.
        check_size(name, os.path.getsize(path), limit)
        with open(path, "rb") as f:
            data = f.read()
        pictures = sum(a.kind == AttachmentKind.IMAGE for a in pending)
        content, attachment = attach(self.app.engine, name, data, limit, pictures, progress)
        self.app.conversations.files.save(content)
        return attachment

    def refuse_unsent(self, unsent: str, request: gr.Request) -> None:
        """Files the page did not upload, bigger than it takes (assets/chat.js): each gets the size
        sentence, as one uploaded over the limit does."""
        lang = request_language(request)
        for name, size in _unsent(unsent):
            try:
                check_size(name, size, self.app.settings.max_attachment_mb)
            except UserError as exc:
                gr.Warning(exc.message(lang))

    def remove_all(self, request: gr.Request) -> tuple[list, str]:
        return [], chips([], request_language(request))

    def check(self, message: str, pending: list[Attachment] | None, lang: str) -> list[Attachment]:
        """Before sending: the files must fit in the context with the message, and pictures need a
        model that sees them (the model may have changed since they were attached)."""
        pending = list(pending or [])
        try:
            check_images(self.app.engine, sum(a.kind == AttachmentKind.IMAGE for a in pending))
            check_fits(self.app.engine, message, pending)
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None
        return pending


def _told_progress(progress: gr.Progress, before: int, count: int, desc: str) -> Callable[[float], None]:
    """The share read of one of `count` files picked together, as the page's progress of all of them."""
    return lambda done: progress((before + done) / count, desc=desc)


def chips(pending: Sequence[Attachment], lang: str) -> str:
    """The files waiting to be sent, as chips: the name and the token count (pictures say so)."""
    return "".join(f'<span class="attachment-chip">{html.escape(_chip_text(a, lang))}</span>' for a in pending)


def _chip_text(attachment: Attachment, lang: str) -> str:
    if attachment.kind == AttachmentKind.IMAGE:
        return translate("attachments.chip_image", lang, name=attachment.name)
    return translate("attachments.chip", lang, name=attachment.name, tokens=f"{attachment.tokens:,}")


def history_block(attachments: Sequence[Attachment], files: AttachmentFiles | None, lang: str) -> dict | None:
    """A saved message's files for the chatbot: a chip per document, a thumbnail per picture."""
    if not attachments:
        return None
    parts = []
    for a in attachments:
        thumbnail = _thumbnail(files, a) if files is not None and a.kind == AttachmentKind.IMAGE else None
        if thumbnail:
            parts.append(f'<img class="attachment-thumb" src="{thumbnail}" alt="{html.escape(a.name)}">')
        else:
            parts.append(f'<span class="attachment-chip">{html.escape(_chip_text(a, lang))}</span>')
    return {"type": "text", "text": f'<div class="attachments">{"".join(parts)}</div>'}


def _thumbnail(files: AttachmentFiles, attachment: Attachment) -> str | None:
    """A small JPEG of the picture, inline: the page never gets a path into the data folder."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(files.read(attachment))) as image:
            image.thumbnail((THUMBNAIL_PX * THUMBNAIL_SCALE,) * 2)
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=85)
    except (UserError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _unsent(unsent: str) -> list[tuple[str, int]]:
    """(name, size) of each file the page says it did not upload (JSON from the page: what is not
    a name and a size is left out)."""
    try:
        items = json.loads(unsent or "[]")
    except ValueError:
        return []
    found = []
    for item in items[:MAX_UNSENT] if isinstance(items, list) else []:
        name, size = (item.get("name"), item.get("size")) if isinstance(item, dict) else (None, None)
        if isinstance(name, str) and isinstance(size, int) and size >= 0:
            found.append((clean_name(name), size))
    return found


def _uploads(uploaded: Any) -> list[tuple[str, str]]:
    """(path, name) of each uploaded file, whatever form Gradio gives them in."""
    items = uploaded if isinstance(uploaded, list) else [uploaded] if uploaded else []
    found = []
    for item in items:
        path = item if isinstance(item, str) else getattr(item, "path", None) or getattr(item, "name", None)
        if path:
            name = getattr(item, "orig_name", None) or os.path.basename(path)
            found.append((path, clean_name(name)))
    return found


class Tray:
    """The attach row under the message box: the button, the chips, the files waiting (state)."""

    def __init__(self, app: App, i18n: gr.I18n) -> None:
        self.handlers = AttachmentTray(app)
        self.pending = gr.State([])
        with gr.Row(equal_height=True, elem_id="attachment-tray"):
            # Any file may be picked or dropped: the core says in one sentence what it does not read
            # (Gradio's own refusal of a type lists every suffix allowed).
            self.button = gr.UploadButton(
                i18n("attachments.attach"), file_count="multiple", size="sm", scale=0, elem_id="attach"
            )
            self.chips = gr.HTML(elem_id="attachment-chips")
            self.clear = gr.Button(
                i18n("attachments.clear_all"), size="sm", scale=0, min_width=40, elem_id="attachments-clear"
            )
        # Rendered, never shown: the page clicks it for the files it did not upload (see UNSENT_JS).
        self.unsent_button = gr.Button(visible="hidden", elem_id="attach-unsent")
        unsent = gr.Textbox(visible=False)
        private = {"api_visibility": "private"}
        self.unsent_button.click(
            self.handlers.refuse_unsent, [unsent], None, js=UNSENT_JS, show_progress="hidden", **private
        )
        # Reading a big file takes a while: its progress shows where its chip will be.
        self.button.upload(
            self.handlers.add,
            [self.button, self.pending],
            [self.pending, self.chips],
            show_progress="full",
            show_progress_on=[self.chips],
            **private,
        )
        self.clear.click(self.handlers.remove_all, None, [self.pending, self.chips], show_progress="hidden", **private)
        gr.on(None, None, None, None, js=CLEAR_TOOLTIP_JS, **private)

    def sent(self, event: Any) -> None:
        """After a message was sent with them, the files leave the tray (a refused one keeps them)."""
        event.then(self.handlers.remove_all, None, [self.pending, self.chips], api_visibility="private")
