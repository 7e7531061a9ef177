"""How saved messages are drawn in the chatbot: text, math as models write it, and under a
message the line with its version count (2/3) and, for a reply, its speed.

The chatbot's own Markdown renders `$$`, `\\[` and `\\(`. Models also write inline math as
`$...$`, but so do prices ("$5 and $10"): a lone `$` is not a delimiter there. Inline math
follows Pandoc's rule instead, decided here, and is handed to the chatbot with a word joiner
(U+2060, invisible) inside each `$`: a delimiter pair no price makes. The page's copy buttons
drop the joiners again (assets/chat.js), so that what is copied is what the model wrote, and so
does an edit of the user's own message (`without_math_marks`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any

from app.attachments import AttachmentFiles
from app.conversations import StoredMessage, stats_line
from app.engine.reasoning import THINK_CLOSE, THINK_OPEN
from app.i18n import translate
from app.ui.chat_attachments import history_block
from app.ui.tool_blocks import call_block

# A long chat opens on its last messages: the page draws every message it is given (Markdown,
# code, math), at a cost that grows with their text; a 500-message chat took it many seconds.
# It opens on the last 20 messages or about 24,000 characters (six pages), whichever is less,
# and always on a whole turn; the rest is a click away.
OPEN_WITH_MESSAGES = 20
OPEN_WITH_CHARS = 24_000

# The joiner inside inline math's `$`; assets/chat.js removes exactly these pairs when copying.
JOINER = "\u2060"
LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "$" + JOINER, "right": JOINER + "$", "display": False},
]

# Code is left exactly as written: fenced blocks (to their closing fence or the end of a reply
# still streaming) and inline code spans.
_CODE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\1[^\n]*$|\Z)|(`+).+?\2", re.M | re.S)
# A spell of thinking: to its closing tag, or to the end of a reply still thinking.
_THINKING = re.compile(f"{re.escape(THINK_OPEN)}(.*?)(?:{re.escape(THINK_CLOSE)}|\\Z)", re.S)
# Pandoc's inline math: no space just inside either `$`, no digit just after the closing one, on
# one line; `\$` is a dollar sign, and `$$` belongs to display math.
_MARKS = re.compile(f"\\${JOINER}|{JOINER}\\$")
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?![\s$])((?:\\.|[^\\$\n])+?)(?<![\s\\])\$(?![\d$])")


def with_inline_math(text: str) -> str:
    """`text` with each inline `$...$` marked as math (a joiner inside each `$`), outside code."""
    marked = f"${JOINER}\\1{JOINER}$"
    parts, end = [], 0
    for code in _CODE.finditer(text):
        parts.append(_INLINE_MATH.sub(marked, text[end : code.start()]))
        parts.append(code.group())
        end = code.end()
    parts.append(_INLINE_MATH.sub(marked, text[end:]))
    return "".join(parts)


def without_math_marks(text: str) -> str:
    """`text` as written, from the page's copy of it (an edited message) with inline math marked."""
    return _MARKS.sub("$", text)


def display(
    messages: list[StoredMessage], lang: str, files: AttachmentFiles | None = None, live: bool = False
) -> list[dict[str, Any]]:
    """Chatbot messages: their files (thumbnails of pictures from `files`), text blocks (kept
    verbatim, no dedenting), then a line of their own (so that copying a reply copies the reply
    only) with the version count and the speed."""
    return [item for group in display_groups(messages, lang, files, live) for item in group]


def display_groups(
    messages: list[StoredMessage], lang: str, files: AttachmentFiles | None = None, live: bool = False
) -> list[list[dict[str, Any]]]:
    """`display`, as the chatbot messages of each saved message (a reply's tool calls follow it).

    `live`: a reply still streaming. Its inline math stays as written until it is saved: marking
    a `$...$` pair changes text already sent (the joiner after the opening `$`), and the page
    would be sent the whole reply again instead of its new words. The user's message, which does
    not change, is marked in both (the page matches the live turn with the saved one by it)."""
    math = (lambda text: text) if live else with_inline_math
    groups = []
    for m in messages:
        thoughts, text = thinking_blocks(m, lang, math) if m.role == "assistant" else ([], m.content)
        attached = history_block(m.attachments, files, lang)
        text = text.strip()
        parts = [
            attached,
            *thoughts,
            {"type": "text", "text": math(text) if m.role == "assistant" else with_inline_math(text)} if text else None,
            {"type": "text", "text": line} if (line := meta_line(m, lang)) else None,
        ]
        # Each part a bubble of its own: copying a reply copies its words, not its speed line.
        bubbles = [p if "metadata" in p else {"role": m.role, "content": [p]} for p in parts if p]
        calls = [call_block(c.name, c.arguments, c.state.value, c.result, lang) for c in m.tool_calls]
        groups.append([*bubbles, *calls])
    return groups


def thinking_blocks(
    reply: StoredMessage, lang: str, math: Callable[[str], str] = with_inline_math
) -> tuple[list[dict[str, Any]], str]:
    """A reply's thinking as folded blocks ("Thought (3.2s)", or "Thinking…" while it goes on),
    and the answer outside them."""
    blocks, answer, end = [], [], 0
    for match in _THINKING.finditer(reply.content):
        answer.append(reply.content[end : match.start()])
        end = match.end()
        thought, done = match.group(1).strip(), match.group(0).endswith(THINK_CLOSE)
        if not thought:
            continue
        title = translate("chat_tools.thought" if done else "chat_tools.thinking_now", lang)
        metadata: dict[str, Any] = {"title": title, "status": "done" if done else "pending"}
        blocks.append(
            {
                "role": "assistant",
                "content": [{"type": "text", "text": math(thought)}],
                "metadata": metadata,
            }
        )
    answer.append(reply.content[end:])
    thinking = reply.stats.thinking if reply.stats is not None else None
    if blocks and thinking is not None and blocks[-1]["metadata"]["status"] == "done":
        # One figure for the reply: on its last spell of thinking, the one the answer follows.
        blocks[-1]["metadata"]["duration"] = round(thinking, 1)
    return blocks, "".join(answer).strip() if blocks else reply.content


class LiveTurn:
    """The turn being answered, as the live chat under the saved one shows it, on each update of
    the reply: the messages before the reply so far (the user's, finished tool rounds) as `display`
    draws them, each drawn once and not on every update (a picture's thumbnail is read, decoded
    and encoded again each time it is drawn), then the reply so far (none before its first
    words). The one place where streamed text becomes what the page shows."""

    def __init__(self, lang: str, files: AttachmentFiles | None = None) -> None:
        self.lang = lang
        self.files = files
        # Keyed by identity: a message saved meanwhile (its id given) is a new object, drawn anew.
        self._drawn: dict[int, tuple[StoredMessage, list[dict[str, Any]]]] = {}

    def show(self, before: Sequence[StoredMessage], reply: str | None) -> list[dict[str, Any]]:
        shown = [item for message in before for item in self._draw(message)]
        if reply is None:
            return shown
        return [*shown, *display([StoredMessage(0, "assistant", reply, 0.0)], self.lang, live=True)]

    def _draw(self, message: StoredMessage) -> list[dict[str, Any]]:
        drawn = self._drawn.get(id(message))
        if drawn is None or drawn[0] is not message:
            drawn = (message, display([message], self.lang, self.files, live=True))
            self._drawn[id(message)] = drawn
        return drawn[1]


def meta_line(message: StoredMessage, lang: str) -> str:
    """The version count (when the turn has several versions) and the speed line, as HTML."""
    parts = []
    if message.versions > 1:
        parts.append(f'<span class="version-count">{message.version}/{message.versions}</span>')
    if message.stats is not None:
        parts.append(f'<span class="reply-stats">{html.escape(stats_line(message.stats, lang))}</span>')
    return f'<div class="turn-meta">{" ".join(parts)}</div>' if parts else ""


def window_start(messages: list[StoredMessage], whole: bool) -> int:
    """Where the shown part of a path starts: its first message when `whole`, else the start of
    the turn that holds the first of the last messages within OPEN_WITH_MESSAGES and OPEN_WITH_CHARS
    (the last message at least)."""
    if whole or not messages:
        return 0
    start, chars = len(messages) - 1, len(messages[-1].content)
    while start > 0 and len(messages) - start < OPEN_WITH_MESSAGES:
        chars += len(messages[start - 1].content)
        if chars > OPEN_WITH_CHARS:
            break
        start -= 1
    while start > 0 and messages[start].role != "user":
        start -= 1
    return start


def version_target(messages: list[StoredMessage], focus: int | None) -> int | None:
    """Where on the shown path the version buttons act: the message the user picked, if it has
    versions, else the last one that has (a regenerated reply, or an edited message)."""
    forks = [i for i, m in enumerate(messages) if m.versions > 1]
    picked = [i for i in forks if messages[i].id == focus]
    return (picked or forks or [None])[-1]
