"""Web pages and Word documents are read as they are unpacked and parsed, and counted as they
are read: a long one is refused after its first parts (reading stopped early, little memory
used), a zip bomb before it is unpacked, and one that fits reads as it read before. No engine:
the stand-in counts in the tiny test model's own tokenizer."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from app.attachments import attach, read_file
from app.attachments.html_text import REMOVED, PageReader
from app.engine.types import Capabilities, EngineState, EngineStatus
from app.errors import UserError
from tests.attachment_files import HTML_PAGE, docx_bytes, long_docx, long_page, zip_bomb_docx

MIB = 2**20


class TokenCounter:
    """What attaching asks of the engine, with a real tokenizer and no model."""

    def __init__(self, count: Callable[[str], int], max_model_len: int) -> None:
        self.count_tokens = count
        self.max_model_len = max_model_len
        self.model_name = "tiny"
        self.capabilities = Capabilities()  # text only, in-process
        self.status = EngineStatus(EngineState.READY, "tiny")


@pytest.fixture(scope="module")
def count() -> Callable[[str], int]:
    from tests.tiny_model import build_tokenizer

    tokenizer = build_tokenizer()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def refused_reading(counter: TokenCounter, name: str, data: bytes) -> tuple[UserError, list[float], float]:
    """The refusal, the shares of the file read that the progress heard, and the peak of memory
    Python allocated meanwhile (MiB)."""
    shares: list[float] = []
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as caught:
            attach(counter, name, data, 1024, 0, shares.append)
        peak = tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()
    return caught.value, shares, peak


def one_sentence_in_both_languages(error: UserError) -> None:
    for lang in ("en", "zh-CN"):
        text = error.message(lang)
        assert text != error.key and "{" not in text and "\n" not in text


# ---- what fits reads as it did ---------------------------------------------------------------


def test_a_small_page_and_document_read_as_before() -> None:
    page = read_file("guide.html", HTML_PAGE.encode()).text
    assert page == (
        "Guide\n\n\n# Install guide\n\nRun **start.sh** first.\n\n* Step one\n* Step two\n\n"
        "| OS | Works |\n| --- | --- |\n| Linux | yes |"
    )
    document = read_file("notes.docx", docx_bytes()).text
    assert document == "Launch\nMeeting notes for the launch.\nOwner | Date\n李雷 | 2026-12-01"


PAGES = [
    HTML_PAGE,
    # Blocks inside plain containers, a numbered list that starts at 3, a table with a head and two
    # bodies, a list inside an item, a space markdownify keeps at a block's end, a <br> after a block.
    "<body><div id=app><section><h1>Title</h1><p>One <i>two</i></p>\n<p>three&nbsp;</p></section>"
    "<br>after<ol start='3'><li>a</li> <li>b<ul><li>inner</li></ul></li><li>c</li><li></li><li>d</li></ol>"
    "<table><thead><tr><th>h</th></tr></thead><tbody><tr><td>1</td></tr><tr><td>2</td></tr></tbody>"
    "<tbody><tr><td>3</td></tr></tbody></table><blockquote><p>quoted</p></blockquote><pre>  code\n x</pre>"
    "<span><p>in a span</p></span>tail <!-- note --> <hr> end</div></body>",
    # Tags left open (as html.parser nests them: each <p> inside the one before), a table without
    # </tr>, scripts between the parts.
    "<p>first<p>second<div>third</div><script>var p = '<p>';</script><table><tr><td>x<tr><td>y</table>"
    "<ul><li>one<li>two</ul><p>last",
]


@pytest.mark.parametrize("page", PAGES)
def test_a_page_read_in_parts_is_the_page_read_whole(page: str) -> None:
    """Cut at every place it can be (parts of one character, fed a few characters at a time), the
    page gives markdownify's text of the whole page."""
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(page, "html.parser")
    for tag in soup(list(REMOVED)):
        tag.decompose()
    whole = MarkdownConverter(heading_style="ATX").convert_soup(soup).strip()
    for feed in (1, 5, 64):
        assert PageReader(page, None, part_chars=1, feed_chars=feed).read() == whole


# ---- too long: refused early ------------------------------------------------------------------


def test_a_long_page_is_refused_after_its_first_parts(count: Callable[[str], int]) -> None:
    error, shares, peak = refused_reading(TokenCounter(count, 100_000), "manual.html", long_page(3 * MIB))
    assert error.key == "attachments.too_long" and error.message("en").startswith("manual.html is longer than")
    # A few parts of a 3 MB page were read (converting it whole held ~170 MiB here).
    assert shares and max(shares) < 0.1
    assert peak < 40


def test_a_page_with_no_place_to_cut_is_refused_by_its_plain_text(count: Callable[[str], int]) -> None:
    """A <p> never closed holds the whole page: it is counted by its text while it is read."""
    page = ("<p>" + "The sea is calm today. " * 150_000).encode()
    error, shares, peak = refused_reading(TokenCounter(count, 100_000), "open.html", page)
    assert error.key == "attachments.too_long"
    assert shares and max(shares) < 0.1
    assert peak < 30


def test_a_long_document_is_refused_after_its_first_paragraphs(count: Callable[[str], int]) -> None:
    data = long_docx(200_000)  # document.xml: 18 MB
    error, shares, peak = refused_reading(TokenCounter(count, 200_000), "minutes.docx", data)
    assert error.key == "attachments.too_long" and "minutes.docx" in error.message("en")
    assert shares and max(shares) < 0.05
    # python-docx's tree of the same document held ~70 MiB here.
    assert peak < 10


# ---- a zip bomb, a lying zip, broken markup ---------------------------------------------------


def test_a_docx_zip_bomb_is_refused_before_it_is_unpacked(count: Callable[[str], int]) -> None:
    bomb = zip_bomb_docx(64)  # 64 MB of spaces, about 65 KB packed
    error, _shares, peak = refused_reading(TokenCounter(count, 4096), "bomb.docx", bomb)
    assert error.key == "attachments.docx_bomb"
    assert error.message("en").startswith("bomb.docx would unpack to 64 MB, more than 100 times its packed size")
    one_sentence_in_both_languages(error)
    assert peak < 5
    # Read without a model too (importing a chat): refused the same way.
    with pytest.raises(UserError) as caught:
        read_file("bomb.docx", bomb)
    assert caught.value.key == "attachments.docx_bomb"


def test_a_docx_that_says_it_unpacks_small_is_cut_there_and_broken() -> None:
    data = bytearray(zip_bomb_docx(64))
    name = b"word/document.xml"
    (header,) = [at for at in _central_headers(data) if data[at + 46 : at + 46 + len(name)] == name]
    struct.pack_into("<I", data, header + 24, 4096)  # the unpacked size it claims
    with pytest.raises(UserError) as caught:
        read_file("liar.docx", bytes(data))
    assert caught.value.key == "attachments.docx_broken"


def _central_headers(data: bytearray) -> Iterator[int]:
    """Where the zip's central directory headers begin."""
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        yield at
        at = data.find(b"PK\x01\x02", at + 4)


def test_markup_html_parser_gives_up_on_gets_one_sentence() -> None:
    with pytest.raises(UserError) as caught:
        read_file("odd.html", b"<p>text</p><![odd declaration")
    assert caught.value.key == "attachments.html_broken" and "odd.html" in caught.value.message("en")
    one_sentence_in_both_languages(caught.value)


def test_the_count_of_an_open_stretch_gives_way_to_its_own(count: Callable[[str], int]) -> None:
    """A page whose long open stretch fits: its plain text, counted while it was read, is replaced
    by the part's own count once converted, so the page is accepted (counted once, not twice)."""
    words = "calm sea " * 9_000
    page = f"<div><p>{words}</p></div><p>end</p>"
    room = count(words) * 3 // 2
    content, attachment = attach(TokenCounter(count, room), "fits.html", page.encode(), 50)
    assert content.text.endswith("calm sea\n\nend") and 0 < attachment.tokens < room
