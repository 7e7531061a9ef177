"""Attaching in a real browser: pick a PDF, see its chip with the token count, send, see the
reply and the file in the history, reload and find it there still. Shares test_browser's
Chromium and page fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from app.application import App
from tests.attachment_files import pdf_bytes
from tests.browser_pages import app_fixture, browser_fixture, open_page_fixture, shot  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def test_attach_a_pdf_send_it_and_find_it_after_a_reload(open_page: Any, app: App, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(pdf_bytes())
    page = open_page(app)
    with page.expect_file_chooser() as chooser:
        page.locator("#attach").click()
    chooser.value.set_files(str(pdf))
    chips = page.locator("#attachment-chips .attachment-chip")
    expect(chips).to_contain_text("report.pdf · ")
    expect(chips).to_contain_text(" tokens")
    shot(page, "20-attached")
    box = page.locator("#chat-input textarea")
    box.fill("Summarise the file.")
    box.press("Enter")
    expect(page.locator("#chatbot .reply-stats")).to_contain_text("8 tokens")
    expect(page.locator("#chatbot .attachment-chip")).to_contain_text("report.pdf")
    # Sent: the tray is empty for the next message.
    expect(chips).to_have_count(0)
    (conversation,) = app.conversations.list()
    (user, _) = app.conversations.messages(conversation.id)
    assert [a.name for a in user.attachments] == ["report.pdf"]
    page.reload()
    expect(page.locator("#chatbot .attachment-chip")).to_contain_text(f"report.pdf · {user.attachments[0].tokens}")
    shot(page, "21-attached-after-reload")


def test_a_file_dropped_on_the_message_box_is_attached(open_page: Any, app: App) -> None:
    page = open_page(app)
    page.locator("#chat-input textarea").wait_for()
    # What the browser does when a file is dragged from the desktop onto the box.
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(["温度是 21 度。\\nThe sea is calm."], "notes.txt", {type: "text/plain"}));
        const box = document.querySelector("#chat-input textarea");
        for (const type of ["dragenter", "dragover", "drop"]) {
            box.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data}));
        }
    }""")
    expect(page.locator("#attachment-chips .attachment-chip")).to_contain_text("notes.txt · ")
