"""The Attachments section of the Settings tab: the largest file a message may carry (the
"Largest attachment" the size refusal points to). The core validates and saves."""

from __future__ import annotations

import gradio as gr

from app.application import App
from app.errors import UserError
from app.i18n import translate
from app.ui.i18n import request_language, shown_error


class AttachmentSettings:
    def __init__(self, app: App) -> None:
        self.app = app

    def current(self) -> float:
        """The saved limit, on page load (another tab may have changed it)."""
        return self.app.settings.max_attachment_mb

    def save(self, limit_mb: float | None, request: gr.Request) -> str:
        lang = request_language(request)
        try:
            # An emptied field is a limit of 0, refused in the core's words like any value out of range.
            settings = self.app.update_settings(max_attachment_mb=float(limit_mb or 0))
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None
        return translate("attachments.saved", lang, limit=f"{settings.max_attachment_mb:,g}")


def attachment_settings(app: App, i18n: gr.I18n) -> None:
    """Render the Attachments section inside the open Settings tab."""
    panel = AttachmentSettings(app)
    # A plain number: out-of-range values reach the core's check and its translated sentence.
    with gr.Accordion(i18n("attachments.settings"), open=False, elem_id="attachment-settings"):
        limit = gr.Number(
            value=app.settings.max_attachment_mb,
            label=i18n("attachments.max_mb"),
            info=i18n("attachments.max_mb_info"),
            elem_id="max-attachment-mb",
        )
        save = gr.Button(i18n("attachments.save"), variant="primary", size="sm", elem_id="attachment-settings-save")
        result = gr.Markdown(elem_id="attachment-settings-result")
    private = {"api_visibility": "private"}
    # No triggers: runs when the page loads.
    gr.on(None, panel.current, None, limit, **private)
    save.click(panel.save, limit, result, **private)
