"""Files and pictures given to a message: reading real files, counting them in the model's own
tokens, the prompt the engine receives, refusals of bad input, storage, export and import."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from app.attachments import Attachment, AttachmentKind, attach, check_fits, check_size, file_part, read_file
from app.attachments.counting import pieces
from app.conversations import Conversations, begin, edit_turn, new_turn, regenerate_turn
from app.engine import Engine
from app.engine.remote import RemoteEngine
from app.errors import UserError
from app.i18n import translate
from tests.attachment_files import (
    CHINESE_TEXT,
    DOCX_PARAGRAPH,
    HTML_PAGE,
    PDF_TEXT,
    docx_bytes,
    pdf_bytes,
    png_bytes,
)
from tests.conftest import TEST_MAX_MODEL_LEN


def refusal(call, *args) -> UserError:
    with pytest.raises(UserError) as caught:
        call(*args)
    return caught.value


def one_sentence_in_both_languages(error: UserError) -> None:
    for lang in ("en", "zh-CN"):
        text = error.message(lang)
        assert text != error.key and "{" not in text and "\n" not in text
        assert "Traceback" not in text


# ---- reading files -------------------------------------------------------------------------


def test_documents_of_every_kind_are_read_as_text() -> None:
    pdf = read_file("report.pdf", pdf_bytes())
    assert pdf.kind == AttachmentKind.TEXT and PDF_TEXT in pdf.text
    docx = read_file("notes.docx", docx_bytes())
    assert DOCX_PARAGRAPH in docx.text and "李雷 | 2026-12-01" in docx.text
    html = read_file("guide.html", HTML_PAGE.encode())
    assert "# Install guide" in html.text and "**start.sh**" in html.text and "Step two" in html.text
    assert "| Linux | yes |" in html.text
    assert "stolen cookies" not in html.text and "color: red" not in html.text
    chinese = read_file("笔记.md", CHINESE_TEXT.encode("utf-8"))
    assert chinese.text == CHINESE_TEXT and chinese.name == "笔记.md"
    code = read_file("../../etc/add.py", b"def add(a, b):\n    return a + b\n")
    assert code.name == "add.py" and "return a + b" in code.text


def test_a_pdf_encrypted_without_a_user_password_still_opens() -> None:
    assert PDF_TEXT in read_file("open.pdf", pdf_bytes(password="")).text


@pytest.mark.parametrize(
    ("name", "data", "key"),
    [
        ("empty.txt", b"", "attachments.empty"),
        ("blob.txt", bytes(range(256)) * 20, "attachments.binary"),
        ("locked.pdf", None, "attachments.pdf_locked"),
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage", "attachments.pdf_broken"),
        ("broken.docx", b"PK\x03\x04 not really a zip", "attachments.docx_broken"),
        ("setup.exe", b"MZ\x90\x00", "attachments.unsupported"),
        ("photo.png", b"\x89PNG\r\n\x1a\n but not a picture", "attachments.image_broken"),
        ("huge.png", None, "attachments.image_too_large"),
    ],
)
def test_bad_files_get_one_sentence(name: str, data: bytes | None, key: str) -> None:
    if data is None:
        # A locked PDF; a 48-megapixel picture (1 bit per pixel, so tiny on disk).
        data = pdf_bytes(password="secret") if name.endswith(".pdf") else png_bytes((8000, 6000), mode="1")
    error = refusal(read_file, name, data)
    assert error.key == key and name in error.message("en")
    one_sentence_in_both_languages(error)


def test_a_file_over_the_size_limit_is_refused_unread() -> None:
    error = refusal(check_size, "video-notes.txt", 2000 * 2**20, 1024)
    assert error.key == "attachments.too_big"
    # Where to change the limit, and numbers as people write them.
    assert "2,000.0 MB" in error.message("en") and "1,024 MB" in error.message("en")
    assert "Settings → Attachments" in error.message("en") and "设置 → 附件" in error.message("zh-CN")
    one_sentence_in_both_languages(error)


def test_a_type_not_read_gets_the_apps_own_sentence() -> None:
    error = refusal(read_file, "setup.exe", b"MZ\x90\x00")
    assert error.message("en") == "setup.exe: .exe files are not read; attach text, code, PDF, Word, HTML or pictures."
    assert ".exe" in error.message("zh-CN")


def test_text_is_counted_in_pieces_cut_at_line_ends() -> None:
    text = "".join(f"line {n}\n" for n in range(50_000))
    cut = list(pieces(text, size=4096))
    assert "".join(cut) == text and len(cut) > 50
    assert all(piece.endswith("\n") and 4096 <= len(piece) < 2 * 4096 for piece in cut[:-1])
    # One long line is cut where it must be.
    assert [len(p) for p in pieces("x" * 10_000, size=4096)] == [4096, 4096, 1808]


# ---- counting and the prompt, with the shared tiny engine ----------------------------------


def test_token_counts_are_the_models_own(engine: Engine, tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    _content, attachment = attach(engine, "笔记.txt", CHINESE_TEXT.encode(), 50)
    expected = len(tokenizer.encode(file_part("笔记.txt", CHINESE_TEXT), add_special_tokens=False))
    assert attachment.tokens == expected > len(CHINESE_TEXT) // 4
    _, pdf = attach(engine, "report.pdf", pdf_bytes(), 50)
    assert pdf.tokens == len(tokenizer.encode(file_part("report.pdf", pdf.text), add_special_tokens=False))


def test_the_engine_receives_each_file_under_its_name(engine: Engine, engine_loop, tmp_path: Path) -> None:
    store = Conversations(tmp_path / "history.sqlite3")
    _pdf, pdf_attachment = attach(engine, "report.pdf", pdf_bytes(), 50)
    _html, html_attachment = attach(engine, "guide.html", HTML_PAGE.encode(), 50)
    turn = new_turn(store, None, "Summarise both files.", [pdf_attachment, html_attachment])
    prompt = turn.prompt("", store)
    text = prompt[-1]["content"]
    assert text.index("[File: report.pdf]") < text.index(PDF_TEXT) < text.index("[End of file: report.pdf]")
    assert text.index("[File: guide.html]") < text.index("Summarise both files.")

    async def rendered() -> str:
        from vllm.renderers import ChatParams

        llm = engine.vllm
        _, prompts = await llm.renderer.render_chat_async([prompt], ChatParams())
        return llm.get_tokenizer().decode(prompts[0]["prompt_token_ids"])

    seen = engine_loop.run(rendered())
    assert PDF_TEXT in seen and "[File: guide.html]" in seen and "# Install guide" in seen

    async def reply() -> list:
        return [d async for d in engine.stream_chat(prompt, engine.resolve_sampling({"max_tokens": 4}))]

    deltas = engine_loop.run(reply())
    assert deltas[-1].prompt_tokens > pdf_attachment.tokens + html_attachment.tokens


def test_a_file_that_overflows_the_context_is_refused_with_both_numbers(engine: Engine) -> None:
    long_text = ("The quick brown fox jumps over the lazy dog. " * 200).encode()
    error = refusal(attach, engine, "book.txt", long_text, 50)
    assert error.key == "attachments.too_long"
    assert int(error.params["tokens"].replace(",", "")) > TEST_MAX_MODEL_LEN
    assert error.message("en").startswith("book.txt is longer than the loaded model's context (at least 2,")
    assert "the context holds 512" in error.message("en") and "longer context" in error.message("en")
    one_sentence_in_both_languages(error)
    # Two files that fit one by one, but not together with the message.
    half = ("The quick brown fox jumps over the lazy dog. " * 25).encode()
    files = [attach(engine, f"part{i}.txt", half, 50)[1] for i in range(3)]
    error = refusal(check_fits, engine, "Compare them.", files)
    assert error.key == "attachments.overflow" and "fewer" in error.message("en")
    assert int(error.params["tokens"].replace(",", "")) >= TEST_MAX_MODEL_LEN


def test_counting_stops_once_the_context_is_exceeded(engine: Engine, tiny_model: Path) -> None:
    """A long text is refused after its first piece: the count it names is a true lower bound,
    far below the whole file's."""
    text = "".join(f"{n:06d} the sea is calm today; 海面平静。\n" for n in range(20_000))
    error = refusal(attach, engine, "log.txt", text.encode(), 50)
    at_least = int(error.params["tokens"].replace(",", ""))
    whole = len(AutoTokenizer.from_pretrained(tiny_model).encode(text, add_special_tokens=False))
    assert TEST_MAX_MODEL_LEN < at_least <= whole / 4


def test_a_long_pdf_is_read_only_until_the_context_is_full(engine: Engine) -> None:
    page_text = "Revenue grew by forty percent in the third quarter, and costs fell. " * 3
    shares: list[float] = []
    error = refusal(attach, engine, "annual.pdf", pdf_bytes(page_text, pages=200), 50, 0, shares.append)
    assert error.key == "attachments.too_long"
    # About ten pages of two hundred were read (the progress the page shows says how far).
    assert 0 < max(shares) < 0.2


def test_attaching_while_the_model_loads_says_to_attach_again() -> None:
    loading = RemoteEngine("http://127.0.0.1:9/v1")  # still connecting: a model on its way
    error = refusal(attach, loading, "notes.txt", b"some notes", 50)
    assert error.key == "attachments.model_loading"
    assert error.message("en") == "http://127.0.0.1:9/v1 is still loading: attach notes.txt again once it is ready."
    one_sentence_in_both_languages(error)


def test_a_text_only_model_says_it_cannot_see_pictures(engine: Engine) -> None:
    error = refusal(attach, engine, "cat.png", png_bytes(), 50)
    assert error.key == "attachments.no_vision" and "cannot see pictures" in error.message("en")
    # The picture was never attached: nothing to remove.
    assert "cat.png was not attached" in error.message("en") and "remove" not in error.message("en")
    one_sentence_in_both_languages(error)


# ---- storage, reload, edit, regenerate, export, import -------------------------------------


def _saved_turn(store: Conversations) -> tuple[int, list[Attachment]]:
    pdf = read_file("report.pdf", pdf_bytes())
    picture = read_file("chart.png", png_bytes())
    attachments = [Attachment.of(pdf, 40), Attachment.of(picture)]
    for content in (pdf, picture):
        store.files.save(content)
    turn = begin(store, new_turn(store, None, "", attachments), "")
    return turn.conversation_id, attachments


def test_files_are_kept_private_with_the_chat_and_survive_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "data" / "history.sqlite3"
    store = Conversations(path)
    conversation_id, attachments = _saved_turn(store)
    assert store.get(conversation_id).title == "report.pdf, chart.png"
    store.close()
    reopened = Conversations(path)
    (message,) = reopened.messages(conversation_id)
    assert message.attachments == tuple(attachments)
    for attachment in attachments:
        file = reopened.files.path(attachment.sha256)
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    assert reopened.files.read(attachments[1]) == png_bytes()
    # Another chat with the same picture shares its file; deleting one chat keeps it for the other.
    other = begin(reopened, new_turn(reopened, None, "again", [attachments[1]]), "").conversation_id
    reopened.delete(conversation_id)
    assert not reopened.files.path(attachments[0].sha256).exists()
    assert reopened.files.path(attachments[1].sha256).exists()
    reopened.delete(other)
    assert not reopened.files.path(attachments[1].sha256).exists()


def test_edit_and_regenerate_keep_the_files(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "history.sqlite3")
    conversation_id, attachments = _saved_turn(store)
    (user,) = store.messages(conversation_id)
    again = regenerate_turn(store, conversation_id)
    assert again.attachments == tuple(attachments)
    edited = begin(store, edit_turn(store, conversation_id, user.id, "Only the chart, please."), "")
    assert edited.user.attachments == tuple(attachments)
    assert store.messages(conversation_id)[-1].attachments == tuple(attachments)
    without = edit_turn(store, conversation_id, edited.user.id, "No files now.", attachments=[])
    assert without.attachments == ()


def test_export_lists_the_files_and_import_brings_them_back(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "a" / "history.sqlite3")
    conversation_id, attachments = _saved_turn(store)
    exported = store.export_json(conversation_id)
    (entry,) = exported["messages"]
    assert [a["name"] for a in entry["attachments"]] == ["report.pdf", "chart.png"]
    assert base64.b64decode(entry["attachments"][1]["data"]) == png_bytes()
    assert "report.pdf" in store.export_markdown(conversation_id)
    fresh = Conversations(tmp_path / "b" / "history.sqlite3")
    imported = fresh.import_json(json.dumps(exported).encode())
    (message,) = fresh.messages(imported.id)
    assert message.attachments == tuple(attachments)
    assert fresh.files.read(attachments[0]) == pdf_bytes()


def test_an_import_with_a_bad_file_stores_nothing(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "history.sqlite3")
    conversation_id, _ = _saved_turn(store)
    exported = store.export_json(conversation_id)
    exported["messages"][0]["attachments"][0]["data"] = base64.b64encode(b"%PDF-1.7 broken").decode()
    error = refusal(store.import_json, exported)
    assert error.key == "conversations.bad_import" and "report.pdf" in error.message("en")
    exported["messages"][0]["attachments"][0]["data"] = "not base64!"
    assert refusal(store.import_json, exported).key == "conversations.bad_import"
    assert len(store.list()) == 1
    assert translate("conversations.bad_import", "zh-CN", reason="x")


def test_attaching_with_no_model_loaded_says_so() -> None:
    error = refusal(attach, Engine(), "notes.txt", b"some notes", 50)
    assert error.key == "engine.no_model"
