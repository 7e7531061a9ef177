"""Attaching in a real browser: pick a PDF, see its chip with the token count, send, see the
reply and the file in the history, reload and find it there still. Shares test_browser's
Chromium and page fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from app.application import App
from tests.attachment_files import pdf_bytes, png_bytes
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


def _pick(page: Any, *paths: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator("#attach").click()
    chooser.value.set_files([str(p) for p in paths])


def test_refusals_are_the_apps_own_sentences_and_the_limit_is_in_settings(
    open_page: Any, app: App, tmp_path: Path
) -> None:
    exe = tmp_path / "setup.exe"
    exe.write_bytes(b"MZ\x90\x00" * 100)
    big = tmp_path / "big60mb.txt"
    with big.open("wb") as f:
        f.truncate(60 * 2**20)
    page = open_page(app)
    _pick(page, exe)
    toasts = page.locator(".toast-body")
    expect(toasts.filter(has_text="setup.exe")).to_contain_text(
        "setup.exe: .exe files are not read; attach text, code, PDF, Word, HTML or pictures."
    )
    _pick(page, big)
    expect(toasts.filter(has_text="big60mb.txt")).to_contain_text(
        "big60mb.txt is 60.0 MB, more than the 50 MB a file may have: attach a smaller file, "
        "or raise Largest attachment under Settings → Attachments."
    )
    expect(page.get_by_text("maximum allowed size")).to_have_count(0)
    expect(page.locator("#attachment-chips .attachment-chip")).to_have_count(0)
    shot(page, "22-refused")
    # The field the sentence names, showing the saved limit after a reload (another tab changed
    # it). Seeing it also says the page's load-time refresh of the field has landed: typed into
    # before that, on a busy machine, the refresh put the old value back.
    app.update_settings(max_attachment_mb=40)
    page.reload()
    expect(page.locator("#chat-input textarea")).to_be_editable()
    page.get_by_role("tab", name="Settings").click()
    page.locator("#attachment-settings").get_by_text("Attachments", exact=True).click()
    field = page.get_by_label("Largest attachment (MB)")
    expect(field).to_have_value("40")
    field.fill("100")
    field.press("Tab")
    page.locator("#attachment-settings-save").click()
    expect(page.locator("#attachment-settings-result")).to_contain_text("files up to 100 MB can be attached")
    assert app.settings.max_attachment_mb == 100


def test_reading_a_slow_file_shows_its_progress(open_page: Any, app: App, tmp_path: Path) -> None:
    # 1,500 pages without text, read page by page to the end (a page with text would be refused as
    # soon as the context is full: HTML too, since it is read in parts).
    slow = tmp_path / "scan.pdf"
    slow.write_bytes(pdf_bytes(" ", pages=1500))
    page = open_page(app)
    _pick(page, slow)
    expect(page.locator("#attachment-chips")).to_contain_text("Reading scan.pdf")
    shot(page, "23-reading")
    expect(page.locator(".toast-body")).to_contain_text("scan.pdf has no text to read")


def test_a_file_bigger_than_the_page_takes_gets_the_apps_sentence(open_page: Any, app: App, tmp_path: Path) -> None:
    """Over Gradio's max_file_size (1 GiB) the page does not upload the file, and says so in the
    app's words, not Gradio's; a file picked with it is attached."""
    huge = tmp_path / "recording.txt"
    with huge.open("wb") as f:
        f.truncate(1100 * 2**20)  # sparse: no disk used
    notes = tmp_path / "notes.txt"
    notes.write_text("The sea is calm.", encoding="utf-8")
    page = open_page(app)
    _pick(page, huge, notes)
    expect(page.locator(".toast-body").filter(has_text="recording.txt")).to_contain_text(
        "recording.txt is 1,100.0 MB, more than the 50 MB a file may have"
    )
    expect(page.locator("#attachment-chips .attachment-chip")).to_contain_text("notes.txt · ")
    expect(page.get_by_text("maximum allowed size")).to_have_count(0)


def test_the_clear_button_is_named_and_thumbnails_keep_their_shape(open_page: Any, app: App) -> None:
    from app.attachments import Attachment, read_file
    from app.conversations import begin, new_turn

    pictures = [read_file("wide.png", png_bytes((1200, 800))), read_file("tall.png", png_bytes((300, 900)))]
    for picture in pictures:
        app.conversations.files.save(picture)
    begin(app.conversations, new_turn(app.conversations, None, "Look.", [Attachment.of(p) for p in pictures]), "")
    page = open_page(app)
    clear = page.get_by_role("button", name="Remove all attached files")
    expect(clear).to_have_attribute("title", "Remove all attached files")
    thumbs = page.locator("#chatbot img.attachment-thumb")
    expect(thumbs).to_have_count(2)
    sizes = thumbs.evaluate_all(
        "imgs => imgs.map(i => [i.clientWidth, i.clientHeight, i.naturalWidth, i.naturalHeight])"
    )
    shot(page, "24-thumbnails")
    # Each as wide or tall as 160 CSS pixels at most, in its own shape, from twice as many pixels.
    assert [(nw, nh) for _, _, nw, nh in sizes] == [(320, 213), (107, 320)]
    assert [max(w, h) for w, h, _, _ in sizes] == [160, 160]
    for w, h, nw, nh in sizes:
        assert abs(w * nh - h * nw) <= max(nw, nh)  # the same shape, to a pixel
