"""An HTML page as Markdown, read in parts, so that a long page is refused as soon as its text
is more than the model can take.

markdownify converts a page's whole tree at once: a 1.5 MB page took 7 s (the process grew by
100 MB) and a 15 MB one 120 s (900 MB) before their length was known; now 0.4 and 0.6 s, 10 and
50 MB (benchmarks/attachment_reading.py, a 32k context). Here html.parser follows the page's
open elements as BeautifulSoup's html.parser builder nests them (no element is closed for
another) and notes where the page can be cut: after a block (paragraph, heading, table,
quote...) whose ancestors keep their content as it is (div, section, body...), after a row of
such a table, after an item of such a list. Each part is converted alone, inside its ancestors
and after a stand-in for the block before it (a paragraph, row or item holding a marker), so
that markdownify renders the part as it renders that stretch of the whole page; the stand-ins'
lines are taken off and the parts joined as the whole page joins them (a blank line between
blocks, nothing between rows or items). A stretch with no place to cut (a `<p>` never closed
holds the rest of the page) is counted by its plain text while it is read, until it can be
converted. Reading a page that fits costs about a fifth more than converting it whole did.
"""

from __future__ import annotations

import enum
import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.attachments.content import TextBudget

# Elements whose content is no part of the page's text (markdownify would keep the text inside).
REMOVED = ("script", "style", "noscript", "template", "iframe", "svg", "object")
# How much of the page html.parser reads at a time, and about how long a part is.
FEED_CHARS = 8 * 1024
PART_CHARS = 32 * 1024
# Blocks that markdownify renders between blank lines whenever they hold text, and next to which
# it drops spaces: a cut after one is a blank line in the whole page too. (Not a list: the line
# after it depends on what follows it; not <hr>: the spaces after it stay.)
FLOW_BLOCKS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "div", "section", "article", "blockquote", "pre", "table", "dl"}
)
TABLE_PARTS = frozenset({"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "colgroup", "col"})
# Letters only: markdownify writes them as they are.
BEFORE, AFTER = "Vllmchatcutbefore", "Vllmchatcutafter"
_NEWLINES = re.compile(r"[\t \r\n]*[\r\n][\t \r\n]*")
_SPACES = re.compile(r"[\t ]+")
_NUMBERED = re.compile(rf"\d+\. {AFTER}")

log = logging.getLogger(__name__)


class Place(enum.Enum):
    """Where a cut is: among blocks, among a table's rows, or among a list's items."""

    FLOW = "flow"
    ROWS = "rows"
    ITEMS = "items"


STAND_INS = {Place.FLOW: "<p>{}</p>", Place.ROWS: "<tr><td>{}</td></tr>", Place.ITEMS: "<li>{}</li>"}


@dataclass
class _Open:
    """An element html.parser has opened and not yet closed."""

    name: str
    text: bool = False  # holds text markdownify keeps
    first: int | None = 1  # an <ol>'s first number; None when it is not a plain number (not cut)
    items: int = 0  # a list's <li> children so far
    head: bool = False  # a table with a <thead>


@dataclass(frozen=True)
class Cut:
    """A place to cut the page: `at` characters in, where the elements `opening` are open."""

    at: int
    place: Place
    opening: str
    bullet: str = "*"  # the stand-in item's bullet (an <ol>'s number)

    def stand_in(self, marker: str) -> str:
        """The markup of a block, row or item like the one before this place, holding `marker`."""
        return STAND_INS[self.place].format(marker)

    @property
    def joint(self) -> str:
        """What the whole page has between the text before this place and the text after it."""
        return "\n\n" if self.place == Place.FLOW else ""


class Outline(HTMLParser):
    """Follows the page's open elements and notes the first place it can be cut at or after
    `wanted_from` characters (`cut`), and the text read since `take_text`."""

    def __init__(self, page: str, plain: Callable[[str], bool]) -> None:
        super().__init__(convert_charrefs=False)
        from bs4.builder import HTMLTreeBuilder

        self._void = HTMLTreeBuilder.DEFAULT_EMPTY_ELEMENT_TAGS or set()
        self._page = page
        self._plain = plain
        self.stack: list[_Open] = []
        self._open: dict[str, int] = {}  # how many of each name are open
        self._framed = 0  # open elements that are not plain containers
        self._removed = 0  # open elements whose content is dropped
        self.wanted_from = 0
        self.cut: Cut | None = None
        self._ended: Place | None = None  # a block just ended: the next event begins at a cut
        self._fed = 0
        self._text: list[str] = []
        self.text_chars = 0
        # The last text ends in a space markdownify keeps (&nbsp;): a <div> around the block it
        # ends would strip it in the whole page, so there is no cut after that block.
        self._ends_in_space = False
        self._line, self._line_at = 1, 0

    def feed(self, data: str) -> None:
        self._fed += len(data)
        super().feed(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._event()
        if tag in self._void:
            return
        parent = self.stack[-1] if self.stack else None
        if parent is not None and tag == "li":
            parent.items += 1
        if parent is not None and tag == "thead":
            parent.head = True
        self.stack.append(_Open(tag, first=_first_number(attrs) if tag == "ol" else 1))
        self._open[tag] = self._open.get(tag, 0) + 1
        self._framed += not self._plain(tag)
        self._removed += tag in REMOVED

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self._void:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        self._event()
        if not self._open.get(tag):
            return  # as BeautifulSoup: an end tag with no such element open is ignored
        while True:
            element = self.stack.pop()
            self._open[element.name] -= 1
            self._framed -= not self._plain(element.name)
            self._removed -= element.name in REMOVED
            if element.text and self.stack:
                self.stack[-1].text = True
            if element.name == tag:
                break
        self._ended_block(element)

    def handle_data(self, data: str) -> None:
        self._event()
        self._read(data)

    def handle_charref(self, name: str) -> None:
        self._event()
        self._read(html.unescape(f"&#{name};"))

    def handle_entityref(self, name: str) -> None:
        self._event()
        self._read(html.unescape(f"&{name};"))

    def unknown_decl(self, data: str) -> None:
        # A CDATA section or a declaration such as <![if !supportLists]>: text to BeautifulSoup.
        self._event()
        self._read(data.removeprefix("CDATA["))

    def handle_pi(self, data: str) -> None:
        self._event()
        self._read(data)

    def handle_comment(self, data: str) -> None:
        self._event()

    def handle_decl(self, decl: str) -> None:
        self._event()

    def take_text(self) -> str:
        """The text read since the last call, spaced as markdownify spaces it (outside <pre>)."""
        text = _SPACES.sub(" ", _NEWLINES.sub("\n", "".join(self._text)))
        self._text.clear()
        self.text_chars = 0
        return text

    def _read(self, data: str) -> None:
        if self._removed:
            return
        self._text.append(data)
        self.text_chars += len(data)
        if kept := data.rstrip(" \t\r\n"):
            self._ends_in_space = kept[-1].isspace()
        if self.stack and data.strip():
            self.stack[-1].text = True

    def _ended_block(self, element: _Open) -> None:
        if self.cut is not None or self._fed <= self.wanted_from:
            return
        if element.name == "tr":
            wanted = Place.ROWS
        elif element.name == "li" and element.text:
            wanted = Place.ITEMS
        elif element.name in FLOW_BLOCKS and element.text and not self._ends_in_space:
            wanted = Place.FLOW
        else:
            return
        if self._place() == wanted:
            self._ended = wanted

    def _place(self) -> Place | None:
        """The place right here, if the part after it can be converted alone: among blocks whose
        ancestors are all plain containers, or among the rows or items of such a table or list."""
        stack = self.stack
        inner = stack[-1].name if stack else None
        if inner is None or self._plain(inner):
            return Place.FLOW if self._framed == 0 else None
        if inner in ("ul", "ol") and stack[-1].first is not None:
            return Place.ITEMS if self._framed == 1 else None
        if inner == "table":
            return Place.ROWS if self._framed == 1 else None
        if inner in ("tbody", "tfoot") and len(stack) > 1 and stack[-2].name == "table":
            return Place.ROWS if self._framed == 2 else None
        return None

    def _event(self) -> None:
        if self._ended is not None:
            place, self._ended = self._ended, None
            at = self._offset()
            if at >= self.wanted_from:
                self.cut = self._cut_here(place, at)

    def _cut_here(self, place: Place, at: int) -> Cut:
        opening = []
        for element in self.stack:
            if element.name == "ol":
                # The stand-in item takes the number before the next item's.
                first = (element.first or 0) + element.items - 1
                opening.append(f'<ol start="{first}">')
            else:
                opening.append(f"<{element.name}>")
            if element.name == "table" and element.head:
                opening.append("<thead></thead>")
        inner = self.stack[-1] if self.stack else None
        bullet = f"{(inner.first or 0) + inner.items - 1}." if inner is not None and inner.name == "ol" else "*"
        return Cut(at, place, "".join(opening), bullet)

    def _offset(self) -> int:
        """Where in the page the event being handled begins (html.parser says its line and column)."""
        line, column = self.getpos()
        while self._line < line:
            self._line_at = self._page.index("\n", self._line_at) + 1
            self._line += 1
        return self._line_at + column


def _first_number(attrs: list[tuple[str, str | None]]) -> int | None:
    start = dict(attrs).get("start") or "1"
    return int(start) if start.isascii() and start.isdigit() else None


def inside(markdown: str, start: Cut | None, end: Cut | None) -> str | None:
    """The part's own text in the Markdown of [stand-in, part, stand-in]; None where it does not
    look as expected (the part is then read on to the next place to cut)."""
    text = markdown
    if start is not None:
        heads = {
            Place.FLOW: [f"{BEFORE}\n\n"],
            Place.ITEMS: [f"{start.bullet} {BEFORE}\n"],
            Place.ROWS: [f"|  |\n| --- |\n| {BEFORE} |\n", f"| {BEFORE} |\n"],
        }[start.place]
        head = next((h for h in heads if text.startswith(h) or text == h.rstrip("\n")), None)
        if head is None:
            return None
        text = text[len(head) :]
    if end is None:
        return text
    if end.place == Place.FLOW:
        # A block that ends in a space markdownify keeps (&nbsp;) loses it in the whole page when it
        # is the last in a <div> (which strips its content): such a part is read on.
        part = text.removesuffix(f"\n\n{AFTER}") if text.endswith(f"\n\n{AFTER}") else None
        part = part if part and not part[-1].isspace() else None
    elif end.place == Place.ROWS:
        # A row ends in one line end, unless it holds blocks outside its cells (the last row's
        # would be stripped by the table in the whole page): such a part is read on.
        ends = text.endswith(f"\n| {AFTER} |") and not text.endswith(f"\n\n| {AFTER} |")
        part = text.removesuffix(f"| {AFTER} |") if ends else None
    else:
        cut = text.rfind("\n")
        last = text[cut + 1 :]
        part = text[: cut + 1] if cut >= 0 and (last == f"* {AFTER}" or _NUMBERED.fullmatch(last)) else None
    return part or None


class PageReader:
    """Reads one page into Markdown, part by part, giving each part to `budget` as it is read."""

    def __init__(
        self, page: str, budget: TextBudget | None, part_chars: int = PART_CHARS, feed_chars: int = FEED_CHARS
    ) -> None:
        from markdownify import MarkdownConverter

        self._converter = MarkdownConverter(heading_style="ATX")
        self._plain_names: dict[str, bool] = {}
        self.page = page
        self.budget = budget
        self.part_chars = part_chars
        self.feed_chars = feed_chars
        self.outline = Outline(page, self._plain)
        self.parts: list[str] = []
        self.start: Cut | None = None  # where the part being read begins (None: the page's start)

    def read(self) -> str:
        self.outline.wanted_from = self.part_chars
        for at in range(0, len(self.page), self.feed_chars):
            self.outline.feed(self.page[at : at + self.feed_chars])
            if self.outline.cut is not None:
                self._convert_to(self.outline.cut)
            self._count_unconverted(min(1.0, (at + self.feed_chars) / len(self.page)))
        self.outline.close()
        if not self._convert_to(None):
            # Not seen: markdownify rendered a stand-in otherwise than expected. The page is then
            # converted whole, as it was before it was read in parts (and counted whole by attach).
            log.warning("the HTML page did not convert in parts as expected: converted whole")
            return self._markdown(self.page).strip()
        return "".join(self.parts).strip()

    def _convert_to(self, end: Cut | None) -> bool:
        begin = self.start.at if self.start is not None else 0
        fragment = self.page[begin : end.at if end is not None else len(self.page)]
        if self.start is not None:
            fragment = self.start.opening + self.start.stand_in(BEFORE) + fragment
        if end is not None:
            fragment += end.stand_in(AFTER)
        part = inside(self._markdown(fragment), self.start, end)
        if end is not None:
            # The next part ends at the first place to cut a part's length on (from this place, or
            # from the start of a part that did not convert as expected: read on, not tried anew
            # at every place, which would convert a long part again and again).
            self.outline.cut = None
            self.outline.wanted_from = end.at + self.part_chars
        if part is None:
            return False
        text = (self.start.joint if self.start is not None else "") + part
        self.parts.append(text)
        if self.budget is not None:
            self.budget.take(text, end.at / len(self.page) if end is not None else 1.0)
        self.start = end
        self.outline.take_text()
        return True

    def _count_unconverted(self, done: float) -> None:
        """The plain text of a stretch not converted yet, counted meanwhile (once there is enough
        of it to be worth a count): the exact part replaces it once converted."""
        from app.attachments.counting import PIECE_CHARS

        if self.outline.text_chars < PIECE_CHARS:
            return
        text = self.outline.take_text()
        if self.budget is not None:
            self.budget.take(text, done, pending=True)

    def _markdown(self, fragment: str) -> str:
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(fragment, "html.parser")
        for tag in soup(list(REMOVED)):
            tag.decompose()
        return self._converter.convert_soup(soup)

    def _plain(self, name: str) -> bool:
        """markdownify keeps this element's content as it is (div: with blank lines around it)."""
        if name not in self._plain_names:
            self._plain_names[name] = name in ("div", "section", "article") or (
                name not in REMOVED and name not in TABLE_PARTS and self._converter.get_conv_fn(name) is None
            )
        return self._plain_names[name]
