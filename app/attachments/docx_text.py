"""A Word document's text, read as its XML is unpacked, so that a long document is refused as
soon as its text is more than the model can take, and a zip bomb before it is unpacked.

python-docx parses the whole of word/document.xml into a tree before any text can be counted
(and a zip bomb unpacks whole into memory). Here the document's part is streamed out of the zip
into lxml's pull parser a piece at a time; each element is dropped once read, and the text is
given to the budget as it comes. The text is what `docx.Document` gave before: the body's
paragraphs (runs and hyperlinks' runs; tabs, line breaks and no-break hyphens as python-docx
writes them), then each row of the body's tables, its cells' text joined by " | " (a cell
spanning columns repeated for each, a vertically merged cell giving the text of its first row).
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from typing import TYPE_CHECKING

from app.errors import UserError

if TYPE_CHECKING:
    from lxml import etree

    from app.attachments.content import TextBudget

log = logging.getLogger(__name__)

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
RELATIONSHIPS = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
# A part may unpack to this many times its packed size, or to this many bytes whatever its ratio:
# real documents stay below (the most repetitive seen here: 290 times, for a 1 MB part), a zip
# bomb does not (deflate packs a run of one byte about 1,000 times).
MAX_RATIO = 100
ANY_RATIO_BYTES = 32 * 2**20
CHUNK_BYTES = 64 * 1024
# What python-docx writes for the elements of a run (w:br: a line break, not a page break).
_RUN_TEXT = {f"{W}tab": "\t", f"{W}ptab": "\t", f"{W}cr": "\n", f"{W}noBreakHyphen": "-"}


def docx_text(name: str, data: bytes, budget: TextBudget | None) -> str:
    """The document's text; `UserError` if it is not a DOCX that can be read, would unpack like a
    zip bomb, or (from `budget`) has more text than the model can take."""
    from lxml import etree

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        part = _document_part(name, archive)
        body = _Body(budget, part.file_size)
        parser = etree.XMLPullParser(events=("end",), resolve_entities=False, no_network=True)
        with archive.open(part) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                parser.feed(chunk)
                for _event, element in parser.read_events():
                    body.ended(element)
                body.count(stream.tell() / max(part.file_size, 1))
        parser.close()
    except UserError:
        raise
    except (zipfile.BadZipFile, zlib.error, etree.XMLSyntaxError, KeyError, ValueError, EOFError) as exc:
        log.info("could not read the DOCX %s: %s", name, exc)
        raise UserError("attachments.docx_broken", name=name) from None
    except NotImplementedError as exc:  # a compression zipfile does not know
        log.info("could not read the DOCX %s: %s", name, exc)
        raise UserError("attachments.docx_broken", name=name) from None
    return body.text()


def _document_part(name: str, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The main document part, as the package's relationships name it (word/document.xml in
    most), after the size check of each part read."""
    from lxml import etree

    relationships = archive.getinfo("_rels/.rels")
    _check_ratio(name, relationships)
    with archive.open(relationships) as stream:
        root = etree.fromstring(stream.read(), etree.XMLParser(resolve_entities=False, no_network=True))
    for relationship in root.iter(RELATIONSHIPS):
        if relationship.get("Type", "").endswith("/officeDocument"):
            part = archive.getinfo(relationship.get("Target", "").lstrip("/"))
            _check_ratio(name, part)
            return part
    raise KeyError("no main document part")


def _check_ratio(name: str, part: zipfile.ZipInfo) -> None:
    """Refuse a part that would unpack to far more than it packs. The sizes are the zip's own:
    one that lies about the unpacked size is cut there by zipfile, whose check of the part's
    CRC then fails (a broken file)."""
    if part.file_size > max(MAX_RATIO * part.compress_size, ANY_RATIO_BYTES):
        raise UserError(
            "attachments.docx_bomb",
            name=name,
            size=f"{part.file_size / 2**20:,.0f}",
            ratio=f"{MAX_RATIO:,}",
        )


class _Body:
    """The text of the body's paragraphs and tables, gathered from the parser's end events."""

    def __init__(self, budget: TextBudget | None, size: int) -> None:
        self.budget = budget
        self.paragraphs: list[str] = []  # the body's text, each paragraph's runs as they come
        self.rows: list[str] = []  # the tables' rows
        self._counted = [0, 0]  # how much of each was given to the budget
        self._paragraph_open = False
        self._cell: list[str] = []  # the runs of the cell paragraph being read
        self._cell_paragraphs: list[str] = []
        self._cells: list[tuple[int, int, str]] = []  # (grid column, span, text) of the row being read
        self._above: dict[int, tuple[int, str]] = {}  # the previous row's (span, text) by grid column
        self._cell_span, self._cell_merged = 1, False
        self._row_before = self._row_spans = 0

    def ended(self, element: etree._Element) -> None:
        tag, parent = element.tag, element.getparent()
        if tag == f"{W}r":
            self._run(element, parent)
        elif tag == f"{W}p" and _tag(parent) == f"{W}body":
            self._paragraph()
        elif tag == f"{W}p" and self._in_body_cell(parent):
            self._cell_paragraphs.append("".join(self._cell))
            self._cell = []
        elif tag == f"{W}gridSpan" and self._in_body_cell(_parent(parent)):
            self._cell_span = _number(element, 1)
        elif tag == f"{W}vMerge" and self._in_body_cell(_parent(parent)):
            self._cell_merged = element.get(f"{W}val", "continue") == "continue"
        elif tag == f"{W}gridBefore" and self._in_body_row(_parent(parent)):
            self._row_before = _number(element, 0)
        elif tag == f"{W}tc" and self._in_body_row(parent):
            self._end_cell()
        elif tag == f"{W}tr" and self._in_body_table(parent):
            self._end_row()
        elif tag == f"{W}tbl" and _tag(parent) == f"{W}body":
            self._above = {}
        if tag != f"{W}r" and _tag(parent) != f"{W}r" and parent is not None:
            # Read: dropped, so that memory holds only the elements still open (a run keeps its
            # own elements until it ends).
            parent.remove(element)

    def _run(self, run: etree._Element, parent: etree._Element | None) -> None:
        paragraph = parent.getparent() if _tag(parent) == f"{W}hyperlink" else parent
        if _tag(paragraph) == f"{W}p":
            holder = _parent(paragraph)
            if _tag(holder) == f"{W}body":
                self._paragraph_text(_run_text(run))
            elif self._in_body_cell(holder):
                self._cell.append(_run_text(run))
        if parent is not None:
            parent.remove(run)

    def _paragraph_text(self, text: str) -> None:
        if not self._paragraph_open:
            self._paragraph_open = True
            self.paragraphs.append("\n" if self.paragraphs else "")
        self.paragraphs.append(text)

    def _paragraph(self) -> None:
        self._paragraph_text("")
        self._paragraph_open = False

    def _end_cell(self) -> None:
        # Its grid column, from the widths the row's cells declare (as python-docx finds it).
        column = self._row_before + self._row_spans
        self._row_spans += self._cell_span
        span, text = self._cell_span, "\n".join(self._cell_paragraphs)
        if self._cell_merged:
            # The cell continues the one above it: python-docx gives that one (as wide as it is).
            span, text = self._above.get(column, (span, ""))
        self._cells.append((column, span, text))
        self._cell_paragraphs, self._cell_span, self._cell_merged = [], 1, False

    def _end_row(self) -> None:
        cells = [text.strip() for _column, span, text in self._cells for _ in range(span)]
        self.rows.append(("\n" if self.rows else "") + " | ".join(cells))
        self._above = {column: (span, text) for column, span, text in self._cells}
        self._cells, self._row_before, self._row_spans = [], 0, 0

    def _in_body_cell(self, element: etree._Element | None) -> bool:
        return _tag(element) == f"{W}tc" and self._in_body_row(_parent(element))

    def _in_body_row(self, element: etree._Element | None) -> bool:
        return _tag(element) == f"{W}tr" and self._in_body_table(_parent(element))

    @staticmethod
    def _in_body_table(element: etree._Element | None) -> bool:
        return _tag(element) == f"{W}tbl" and _tag(_parent(element)) == f"{W}body"

    def count(self, done: float) -> None:
        """Give the budget the text read since the last count, once there is a piece's worth."""
        from app.attachments.counting import PIECE_CHARS

        if self.budget is None:
            return
        for n, parts in enumerate((self.paragraphs, self.rows)):
            new = "".join(parts[self._counted[n] :])
            if len(new) >= PIECE_CHARS or (done >= 1 and new):
                self.budget.take(new, min(done, 1.0))
                self._counted[n] = len(parts)

    def text(self) -> str:
        self.count(1.0)
        body, rows = "".join(self.paragraphs), "".join(self.rows)
        return f"{body}\n{rows}" if self.paragraphs and self.rows else body or rows


def _run_text(run: etree._Element) -> str:
    pieces = []
    for child in run:
        if child.tag == f"{W}t":
            pieces.append(child.text or "")
        elif child.tag == f"{W}br":
            pieces.append("\n" if child.get(f"{W}type", "textWrapping") == "textWrapping" else "")
        else:
            pieces.append(_RUN_TEXT.get(child.tag, ""))
    return "".join(pieces)


def _number(element: etree._Element | None, default: int) -> int:
    value = element.get(f"{W}val", "") if element is not None else ""
    return int(value) if value.isascii() and value.isdigit() else default


def _tag(element: etree._Element | None) -> object:
    return element.tag if element is not None else None


def _parent(element: etree._Element | None) -> etree._Element | None:
    return element.getparent() if element is not None else None
