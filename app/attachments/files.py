"""What a file given to a message is, read from its name and bytes: its kind, and its text.

Text, code and Markdown are decoded (UTF-8 first, then what charset-normalizer finds); PDF text
comes from pypdf, DOCX text from its XML as it is unpacked (app.attachments.docx_text), HTML
becomes Markdown through markdownify, part by part (app.attachments.html_text: headings, lists,
links and tables survive, scripts and styles do not). Pictures are checked by Pillow
(app.attachments.images). Every way a file can be unreadable ends in one `UserError` naming it.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
from pathlib import PurePath

from app.attachments.content import AttachmentKind, FileContent, TextBudget
from app.attachments.docx_text import docx_text
from app.attachments.images import read_image
from app.errors import UserError

log = logging.getLogger(__name__)

# Suffixes read as plain text: prose, Markdown, data, configuration and the common languages.
TEXT_SUFFIXES = frozenset(
    {
        *(".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml"),
        *(".ini", ".cfg", ".conf", ".log", ".xml", ".tex", ".srt", ".diff", ".patch", ".sql", ".css", ".scss"),
        *(".py", ".pyi", ".ipynb", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".c", ".h", ".cc"),
        *(".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".zsh"),
        *(".ps1", ".bat", ".r", ".lua", ".pl", ".m", ".dart", ".vue"),
    }
)
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
MAX_NAME_LENGTH = 255
# Control characters other than tab, newline, carriage return and form feed: a "text" file
# with more than this share of them is binary data.
BINARY_SHARE = 0.01
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")


def clean_name(name: str) -> str:
    """The file's own name, without any folder a browser or an import put before it."""
    base = PurePath(str(name).replace("\\", "/")).name.strip()
    return base[:MAX_NAME_LENGTH] or "file"


def check_size(name: str, n_bytes: int, limit_mb: float) -> None:
    """Refuse a file over the size limit before reading it."""
    if n_bytes > limit_mb * 2**20:
        raise UserError("attachments.too_big", name=name, size=f"{n_bytes / 2**20:,.1f}", limit=f"{limit_mb:,g}")


def read_file(name: str, data: bytes, budget: TextBudget | None = None) -> FileContent:
    """Read a file given to a message; `UserError` if it is empty, unreadable or of a type not
    read, or as soon as `budget` refuses what was read so far."""
    name = clean_name(name)
    suffix = PurePath(name).suffix.lower()
    if not data:
        raise UserError("attachments.empty", name=name)
    if suffix in IMAGE_SUFFIXES:
        return read_image(name, data)
    # PDF, DOCX and HTML are given to the budget as they are read (a PDF page by page), so that a
    # long one stops being read once the budget is spent; plain text is counted once decoded.
    counted = True
    if suffix == ".pdf":
        text, mime = _pdf_text(name, data, budget), "application/pdf"
    elif suffix == ".docx":
        text, mime = docx_text(name, data, budget), DOCX_MIME
    elif suffix in HTML_SUFFIXES:
        text, mime = _html_text(name, data, budget), "text/html"
    elif suffix in TEXT_SUFFIXES or not suffix:
        text, mime, counted = _decode(name, data), "text/plain", False
    else:
        raise UserError("attachments.unsupported", name=name, suffix=suffix)
    if not text.strip():
        raise UserError("attachments.no_text", name=name)
    if budget is not None and not counted:
        budget.take(text, 1.0)
    return FileContent(name, AttachmentKind.TEXT, mime, data, text)


def _decode(name: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise UserError("attachments.binary", name=name) from None
        text = str(best)
    # A scan in C that stops at the first control character over the share: a 40 MB text takes
    # a fraction of a second, where a loop over its characters took seconds.
    allowed = int(BINARY_SHARE * len(text))
    controls = sum(1 for _ in itertools.islice(_CONTROL.finditer(text), allowed + 1))
    if "\x00" in text or controls > allowed:
        raise UserError("attachments.binary", name=name)
    return text


def _pdf_text(name: str, data: bytes, budget: TextBudget | None) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    pages = []
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _unlocks_without_password(reader):
            raise UserError("attachments.pdf_locked", name=name)
        count = len(reader.pages)
        for number, page in enumerate(reader.pages, 1):
            text = (page.extract_text() or "").strip()
            if budget is not None:
                budget.take(("\n\n" if pages else "") + text if text else "", number / count)
            if text:
                pages.append(text)
    except UserError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        log.info("could not read the PDF %s: %s", name, exc)
        raise UserError("attachments.pdf_broken", name=name) from None
    return "\n\n".join(pages)


def _unlocks_without_password(reader: object) -> bool:
    """Many PDFs are encrypted with an empty user password (only printing or copying is
    restricted): those open as they are."""
    from pypdf.errors import PyPdfError

    try:
        return bool(reader.decrypt(""))  # type: ignore[attr-defined]
    except (PyPdfError, NotImplementedError, ValueError):
        return False


def _html_text(name: str, data: bytes, budget: TextBudget | None) -> str:
    from bs4.exceptions import ParserRejectedMarkup

    from app.attachments.html_text import PageReader

    try:
        return PageReader(_decode(name, data), budget).read()
    except (AssertionError, ParserRejectedMarkup) as exc:  # html.parser's way of giving up on markup
        log.info("could not read the HTML %s: %s", name, exc)
        raise UserError("attachments.html_broken", name=name) from None
