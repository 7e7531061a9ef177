"""Attaching in the chat tab: the chips of the files waiting, the reply that uses them, what a
reload shows, and the sentence for a picture given to a text-only model. The handlers run as the
page calls them, on the shared tiny engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.attachments import AttachmentKind
from app.engine import Engine
from app.settings import AppSettings, SamplingSettings
from app.ui.chat_attachments import AttachmentTray, history_block
from app.ui.chat_panel import ChatPanel
from tests.attachment_files import CHINESE_TEXT, PDF_TEXT, pdf_bytes, png_bytes

REQUEST = type("Request", (), {"headers": {"accept-language": "en"}, "session_hash": "page-1"})()
ZH_REQUEST = type("Request", (), {"headers": {"accept-language": "zh-CN"}, "session_hash": "page-2"})()


def _files(tmp_path: Path) -> list[str]:
    (tmp_path / "report.pdf").write_bytes(pdf_bytes())
    (tmp_path / "笔记.txt").write_text(CHINESE_TEXT, encoding="utf-8")
    (tmp_path / "cat.png").write_bytes(png_bytes())
    return [str(tmp_path / name) for name in ("report.pdf", "笔记.txt", "cat.png")]


def test_attached_files_show_as_chips_go_with_the_message_and_stay_after_a_reload(
    engine: Engine, engine_loop: Any, make_app: Any, tmp_path: Path
) -> None:
    app = make_app(engine, AppSettings(sampling=SamplingSettings(max_tokens=8, ignore_eos=True)))
    tray = AttachmentTray(app)
    with pytest.warns(UserWarning, match="cannot see pictures"):
        pending, chips = tray.add(_files(tmp_path), [], REQUEST)
    # The picture was refused for the text-only model; the two documents wait, counted.
    assert [a.name for a in pending] == ["report.pdf", "笔记.txt"]
    assert f"report.pdf · {pending[0].tokens:,} tokens" in chips and "笔记.txt" in chips
    _, zh_chips = tray.add([], pending, ZH_REQUEST)
    assert f"{pending[1].tokens:,} 个 token" in zh_chips

    panel = ChatPanel(app, chatbot=None)

    async def send() -> list:
        return [update async for update in panel.send("Summarise them.", None, "", REQUEST, pending)]

    updates = engine_loop.run(send())
    chatbot, conversation_id = updates[-1]
    # The files, then the words: bubbles of their own.
    files, words = chatbot[0]["content"][0]["text"], chatbot[1]["content"][0]["text"]
    assert 'class="attachments"' in files and "report.pdf" in files and words == "Summarise them."
    assert (chatbot[1]["role"], chatbot[2]["role"]) == ("user", "assistant")
    (saved_user, reply) = app.conversations.messages(conversation_id)
    assert saved_user.attachments == tuple(pending) and reply.stats.prompt_tokens > sum(a.tokens for a in pending)
    # A reload (the page opening the latest chat) shows the files again.
    reopened = ChatPanel(app, chatbot=None).open_latest(REQUEST)[0]
    assert "笔记.txt" in reopened[0]["content"][0]["text"]


def test_a_file_over_the_size_setting_is_refused_before_it_is_read(
    engine: Engine, make_app: Any, tmp_path: Path
) -> None:
    app = make_app(engine, AppSettings(max_attachment_mb=0.01))
    big = tmp_path / "big.txt"
    big.write_text(PDF_TEXT * 1000)
    with pytest.warns(UserWarning, match="more than the 0.01 MB"):
        pending, chips = AttachmentTray(app).add([str(big)], [], REQUEST)
    assert pending == [] and chips == ""


def test_pictures_in_the_history_are_thumbnails(make_app: Any, tmp_path: Path) -> None:
    app = make_app(Engine())
    from app.attachments import Attachment, read_file

    picture = read_file("big-photo.png", png_bytes((1200, 800)))
    app.conversations.files.save(picture)
    attachment = Attachment.of(picture)
    assert attachment.kind == AttachmentKind.IMAGE
    block = history_block([attachment], app.conversations.files, "en")
    assert '<img class="attachment-thumb" src="data:image/jpeg;base64,' in block["text"]
    assert 'alt="big-photo.png"' in block["text"]
    # The thumbnail, not the picture, goes to the page.
    import base64
    import io

    from PIL import Image

    src = block["text"].split('src="data:image/jpeg;base64,')[1].split('"')[0]
    with Image.open(io.BytesIO(base64.b64decode(src))) as thumbnail:
        assert thumbnail.size == (160, 107)
