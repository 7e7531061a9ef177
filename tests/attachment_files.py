"""Real files for the attachment tests, written with the libraries that read them back."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

PDF_TEXT = "Quarterly report: revenue grew by forty percent."
DOCX_PARAGRAPH = "Meeting notes for the launch."


def pdf_bytes(text: str = PDF_TEXT, password: str | None = None, pages: int = 1) -> bytes:
    """A PDF of `pages` pages whose text layer is `text` (Helvetica, ASCII), optionally encrypted."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for _ in range(pages):
        page = writer.add_blank_page(width=612, height=792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
    if password is not None:
        writer.encrypt(user_password=password, owner_password=password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Launch", level=1)
    document.add_paragraph(DOCX_PARAGRAPH)
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("Owner", "Date"), ("李雷", "2026-12-01")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


HTML_PAGE = """<!doctype html><html><head><title>Guide</title><style>body { color: red }</style>
<script>alert("stolen cookies")</script></head>
<body><h1>Install guide</h1><p>Run <b>start.sh</b> first.</p>
<ul><li>Step one</li><li>Step two</li></ul>
<table><tr><th>OS</th><th>Works</th></tr><tr><td>Linux</td><td>yes</td></tr></table></body></html>"""

CHINESE_TEXT = "机器学习笔记\n深度学习是人工智能的分支。\n大语言模型可以在显卡上快速运行。\n"


def png_bytes(
    size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB"
) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 0).save(out, format="PNG")
    return out.getvalue()


def write_big_text(path: Path, n_bytes: int) -> Path:
    """A text file of about `n_bytes` (log-like English and Chinese lines, each different),
    written a block at a time so that the test process does not hold it."""
    block_lines = 2_000
    with path.open("w", encoding="utf-8") as f:
        written, line = 0, 0
        while written < n_bytes:
            numbers = range(line, line + block_lines)
            block = "".join(
                f"{n:08d} INFO request {n * 7919 % 100_003} served in {n % 997} ms; 温度 21 度\n" for n in numbers
            )
            f.write(block)
            written += len(block.encode("utf-8"))
            line += block_lines
    return path


WORD_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx_with_body(write_body: Callable[[IO[bytes]], None]) -> bytes:
    """A DOCX made by python-docx whose word/document.xml body is what `write_body` writes into
    it, streamed into the zip (so that a body of many MB is never held whole)."""
    template = zipfile.ZipFile(io.BytesIO(docx_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in template.infolist():
            if item.filename != "word/document.xml":
                archive.writestr(item, template.read(item))
        with archive.open("word/document.xml", "w", force_zip64=True) as part:
            head = f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w="{WORD_NS}">'
            part.write(f"{head}<w:body>".encode())
            write_body(part)
            part.write(b"</w:body></w:document>")
    return out.getvalue()


def long_docx(paragraphs: int) -> bytes:
    """A DOCX of `paragraphs` different paragraphs (about 90 bytes of XML each)."""

    def body(part: IO[bytes]) -> None:
        for start in range(0, paragraphs, 1000):
            part.write(
                "".join(
                    f"<w:p><w:r><w:t>Paragraph {n}: the sea is calm today; 海面平静。</w:t></w:r></w:p>"
                    for n in range(start, min(start + 1000, paragraphs))
                ).encode()
            )

    return docx_with_body(body)


def zip_bomb_docx(unpacked_mb: int) -> bytes:
    """A DOCX whose document part is `unpacked_mb` MB of spaces: a few hundred KB packed."""

    def body(part: IO[bytes]) -> None:
        block = b" " * 2**20
        for _ in range(unpacked_mb):
            part.write(block)

    return docx_with_body(body)


def long_page(n_bytes: int) -> bytes:
    """A web page of about `n_bytes`: sections of a heading, a paragraph, a list and a table, each
    different, inside one <div> (as many sites wrap their content)."""
    sections, size, n = [], 0, 0
    while size < n_bytes:
        section = (
            f"<h2>Section {n}</h2><p>Paragraph {n} with <b>bold</b>, <a href='https://example.com/{n}'>a link</a> "
            f"and <code>code_{n}</code>: the sea is calm today; 海面平静。</p>"
            f"<ul><li>Item one of {n}</li><li>Item two of {n}</li></ul>"
            f"<table><tr><th>Key</th><th>Value</th></tr><tr><td>k{n}</td><td>v{n}</td></tr></table>\n"
        )
        sections.append(section)
        size += len(section.encode())
        n += 1
    return f"<!doctype html><html><body><div id='app'>{''.join(sections)}</div></body></html>".encode()
