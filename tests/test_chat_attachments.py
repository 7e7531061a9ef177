"""Attaching in the chat tab: the chips of the files waiting, the reply that uses them, what a
reload shows, and the sentence for a picture given to a text-only model. The handlers run as the
page calls them, on the shared tiny engine."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import gradio as gr
import psutil
import pytest

from app.attachments import AttachmentKind
from app.config.settings import AppSettings, SamplingSettings
from app.engine import Engine
from app.ui.chat_attachments import AttachmentTray, history_block
from app.ui.chat_panel import ChatPanel
from tests.attachment_files import CHINESE_TEXT, PDF_TEXT, pdf_bytes, png_bytes, write_big_text
from tests.conftest import TEST_MAX_MODEL_LEN

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


def test_files_the_page_did_not_upload_get_the_size_sentence(make_app: Any) -> None:
    """The page keeps a file over Gradio's upload limit from Gradio and names it (assets/chat.js)."""
    tray = AttachmentTray(make_app(Engine()))
    unsent = '[{"name": "C:\\\\films\\\\trip.mov", "size": 2147483648}, {"name": 3}, "x"]'
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        tray.refuse_unsent(unsent, REQUEST)
        tray.refuse_unsent("not json", REQUEST)
    assert [str(w.message) for w in warned] == [
        "trip.mov is 2,048.0 MB, more than the 50 MB a file may have: attach a smaller file, "
        "or raise Largest attachment under Settings → Attachments."
    ]


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
        # Twice the 160 CSS pixels it is shown at (sharp on HiDPI), in the picture's own shape.
        assert thumbnail.size == (320, 213)


def test_a_type_not_read_gets_one_sentence_and_the_others_are_attached(
    engine: Engine, make_app: Any, tmp_path: Path
) -> None:
    (tmp_path / "setup.exe").write_bytes(b"MZ\x90\x00" * 100)
    (tmp_path / "notes.txt").write_text(CHINESE_TEXT, encoding="utf-8")
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        pending, chips = AttachmentTray(make_app(engine)).add(
            [str(tmp_path / "setup.exe"), str(tmp_path / "notes.txt")], [], REQUEST
        )
    assert [str(w.message) for w in warned] == [
        "setup.exe: .exe files are not read; attach text, code, PDF, Word, HTML or pictures."
    ]
    assert [a.name for a in pending] == ["notes.txt"] and "notes.txt" in chips


def test_pictures_attached_for_another_model_are_refused_at_send_with_what_to_do(engine: Engine, make_app: Any) -> None:
    from app.attachments import Attachment, read_file

    picture = Attachment.of(read_file("cat.png", png_bytes()))
    with pytest.raises(gr.Error) as caught:
        AttachmentTray(make_app(engine)).check("What is this?", [picture], "en")
    # Attached while a vision model was loaded: now it is there, and can be removed.
    assert "cannot see the attached pictures" in caught.value.message
    assert "remove the attached files (✕ beside Attach)" in caught.value.message


# ---- a big file: refused soon, and its memory comes back -----------------------------------

BIG_TEXT_BYTES = 40 * 2**20


class PeakRss:
    """The process's resident memory, sampled every 10 ms in a thread while the block runs."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_40_mb_text_is_refused_within_seconds_and_its_memory_comes_back(
    engine: Engine, make_app: Any, tmp_path: Path
) -> None:
    app = make_app(engine)
    tray = AttachmentTray(app)
    big = write_big_text(tmp_path / "big40mb.txt", BIG_TEXT_BYTES)
    # Once, so that what any first attach allocates (the tokenizer's caches) is not counted.
    (tmp_path / "small.txt").write_text(CHINESE_TEXT, encoding="utf-8")
    assert len(tray.add([str(tmp_path / "small.txt")], [], REQUEST)[0]) == 1
    gc.collect()
    before = psutil.Process().memory_info().rss
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as warned, PeakRss() as rss:
        warnings.simplefilter("always")
        pending, chips = tray.add([str(big)], [], REQUEST)
    seconds = time.monotonic() - started
    gc.collect()
    after = psutil.Process().memory_info().rss
    mib = 2**20
    print(
        f"\n40 MB text: refused in {seconds:.2f} s; RSS before {before / mib:,.0f} MiB, "
        f"peak {rss.peak / mib:,.0f} MiB, after {after / mib:,.0f} MiB"
    )
    assert pending == [] and chips == ""
    (message,) = [str(w.message) for w in warned]
    assert message.startswith("big40mb.txt is longer than the loaded model's context (at least ")
    assert f"the context holds {TEST_MAX_MODEL_LEN:,})" in message
    assert seconds < 5
    assert after - before < 200 * mib


def test_the_largest_attachment_is_a_setting_of_the_page(make_app: Any) -> None:
    from app.ui.attachment_settings import AttachmentSettings

    app = make_app(Engine())
    panel = AttachmentSettings(app)
    assert panel.save(120, REQUEST) == "Saved: files up to 120 MB can be attached."
    assert app.settings.max_attachment_mb == 120 and panel.current() == 120
    with pytest.raises(gr.Error) as caught:
        panel.save(None, ZH_REQUEST)
    assert "max_attachment_mb" in caught.value.message and app.settings.max_attachment_mb == 120
