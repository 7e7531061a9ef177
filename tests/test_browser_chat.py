"""The chat page in a real browser: type, watch the reply stream, stop it, reload and find the
chat again; edit a message; a refused message and one sent while a reply streams stay in the
box; the view follows the reply at the bottom and stays where the user scrolled to, also when
the finished reply joins the saved chat, with no frame lost or doubled, and follows again after
an edit.

Where only the page is under test (streaming, Stop, scrolling) the reply comes from the stand-in
engine (benchmarks/page_engine.py), which writes Markdown at a fixed pace for as long as asked and
counts its open streams: a Stop that does not reach the engine leaves one open. That Stop aborts
the request in vLLM is tested on the real engine (test_ui_chat.py, test_engine.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from app.application import App
from app.config.settings import AppSettings, SamplingSettings
from benchmarks.page_engine import PageEngine
from tests.browser_pages import MARKDOWN_REPLY, STOP_WHEN_GROWING, app_fixture, browser_fixture, open_page_fixture, shot  # noqa: F401 (fixtures)
from tests.conftest import wait_until

pytestmark = pytest.mark.browser


def long_writer() -> PageEngine:
    """A stand-in engine whose 2,000-token replies take 33 s: none ends before its Stop."""
    return PageEngine(tokens=2000, rate=60)


def test_type_stream_stop_reload(open_page: Any, make_app: Any) -> None:
    engine = long_writer()
    app = make_app(engine, AppSettings(sampling=SamplingSettings(max_tokens=8)))
    page = open_page(app)
    # With no chat yet, the chat pane invites a first message.
    expect(page.locator("#chatbot").get_by_text("Ask anything")).to_be_visible()

    box = page.locator("#chat-input textarea")
    box.fill("Hello, how are you today?")
    shot(page, "01-typed")
    box.press("Enter")
    # A short first reply, with its speed line.
    expect(page.locator("#chatbot .reply-stats")).to_contain_text("8 tokens")

    # A reply of up to 2,000 tokens (33 s): it cannot end before Stop even if the page freezes
    # for seconds while it renders.
    app.update_settings(sampling=SamplingSettings())
    page.evaluate(STOP_WHEN_GROWING)
    box.fill("Write a short poem about the sea and the stars.")
    box.press("Enter")
    # The reply grows on screen, update after update; then Stop.
    sent = page.evaluate("Math.round(performance.now())")
    lengths, clicked = page.evaluate("window.stopWhenGrowing")
    assert lengths == sorted(lengths) and len(set(lengths)) == 3, lengths
    shot(page, "02-streaming")
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=10), "Stop did not abort"

    # The stopped reply is saved with what was written, and the speed line says it was stopped.
    def saved() -> list:
        convs = app.conversations.list()
        return app.conversations.messages(convs[0].id) if convs else []

    assert wait_until(lambda: len(saved()) == 4)
    reply = saved()[3]
    # Stopped when clicked: far from the 2,000 tokens it was allowed.
    assert reply.stats.finish_reason == "abort", f"Stop clicked {clicked - sent} ms after sending: {reply.stats}"
    assert 0 < reply.stats.completion_tokens < 1500, reply.stats
    expect(page.locator("#chatbot .reply-stats").last).to_contain_text("stopped")
    shot(page, "03-stopped")
    assert box.input_value() == ""

    page.reload()
    expect(page.locator("#chatbot").get_by_text("Write a short poem about the sea and the stars.")).to_be_visible()
    expect(page.locator("#chatbot .reply-stats").last).to_contain_text("stopped")
    # The sidebar lists the chat, titled from its first message.
    expect(page.get_by_role("radio", name="Hello, how are you today?")).to_be_checked()
    shot(page, "04-reloaded")


def test_edit_a_message_and_continue(open_page: Any, app: App) -> None:
    page = open_page(app)
    expect(page.locator("#chatbot").get_by_text("Ask anything")).to_be_visible()
    box = page.locator("#chat-input textarea")
    box.fill("First question")
    box.press("Enter")
    expect(page.locator("#chatbot .reply-stats")).to_contain_text("8 tokens")

    page.locator("#chatbot").get_by_role("button", name="Edit").first.click()
    editor = page.locator("#chatbot textarea").first
    editor.fill("Edited question")
    shot(page, "08-editing")
    page.locator("#chatbot").get_by_role("button", name="Submit").first.click()

    def saved() -> list[str]:
        convs = app.conversations.list()
        return [m.content for m in app.conversations.messages(convs[0].id)] if convs else []

    assert wait_until(lambda: len(saved()) == 2 and saved()[0] == "Edited question"), saved()
    expect(page.locator("#chatbot .reply-stats")).to_contain_text("8 tokens")
    expect(page.locator("#chatbot").get_by_text("Edited question")).to_be_visible()
    expect(page.locator("#chatbot").get_by_text("First question")).to_have_count(0)
    shot(page, "09-edited")


def test_a_refused_message_goes_back_into_the_box(open_page: Any, app: App) -> None:
    page = open_page(app)
    box = page.locator("#chat-input textarea")
    too_long = "hello " * 600
    box.fill(too_long)
    box.press("Enter")
    expect(page.get_by_text("Start a new chat, shorten the message")).to_be_visible()
    # The box emptied when the message was sent; the refused message is not lost.
    expect(box).to_have_value(too_long)
    assert app.conversations.list() == []
    shot(page, "10-refused")


def test_enter_while_a_reply_streams_keeps_the_new_text(open_page: Any, make_app: Any) -> None:
    engine = long_writer()
    app = make_app(engine)
    page = open_page(app)
    box = page.locator("#chat-input textarea")
    box.fill("Write a long story about the sea.")
    box.press("Enter")
    expect(box).to_have_value("")
    assert wait_until(lambda: engine.num_unfinished_requests() == 1)
    # The reply's first words show.
    expect(page.locator("#live-chat .message-row")).to_have_count(2, timeout=30_000)
    # A second message typed and sent while the first is being answered stays in the box.
    box.fill("And then about the stars.")
    box.press("Enter")
    page.get_by_role("button", name="Send").click()
    page.wait_for_timeout(500)
    expect(box).to_have_value("And then about the stars.")
    page.locator("#stop").click()
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=10), "Stop did not abort"
    # Stopped: the first message was answered in part and saved; the new text is still there.
    assert wait_until(lambda: len(app.conversations.list()) == 1)
    expect(box).to_have_value("And then about the stars.")
    # The page hears of the stop a moment after the server: until then Enter is still held back.
    page.wait_for_function("() => !window.vllmChatSending")
    box.press("Enter")
    expect(box).to_have_value("")
    assert wait_until(lambda: engine.num_unfinished_requests() == 1)
    page.locator("#stop").click()
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=10), "Stop did not abort"
    shot(page, "11-sent-while-streaming")


def test_stop_clicked_early_in_a_reply_always_lands(open_page: Any, make_app: Any) -> None:
    """Stop clicked at once after Enter (before the page has sent the reply's event, or before
    it knows the event's id: Gradio's own cancel misses both) and a moment later: every time the
    reply stops within a second and never starts again. The stand-in engine writes for 30 s."""
    engine = long_writer()
    app = make_app(engine)
    page = open_page(app)
    box = page.locator("#chat-input textarea")
    stop = page.locator("#stop").bounding_box()
    for delay in (0, 0, 0.03, 0.1, 0.4, 1.0):
        box.fill(f"Explain gradient descent ({delay} s).")
        box.press("Enter")
        page.wait_for_timeout(delay * 1000)
        # A real click, as soon as the page can take it: not one that waits for the page to settle.
        page.mouse.click(stop["x"] + stop["width"] / 2, stop["y"] + stop["height"] / 2)
        clicked = time.monotonic()
        page.wait_for_function("() => !window.vllmChatSending", timeout=10_000)
        assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=5), f"Stop {delay} s in was lost"
        # (A reply that starts after a lost Stop would be running by now.)
        page.wait_for_timeout(1500)
        assert engine.num_unfinished_requests() == 0, f"Stop {delay} s in was lost"
        assert time.monotonic() - clicked < 10
    # Stopped replies are saved as stopped, short; a message stopped before its reply began went
    # back into the box instead, and was not saved.
    (conv,) = app.conversations.list()
    replies = [m for m in app.conversations.messages(conv.id) if m.role == "assistant"]
    assert all(r.stats.finish_reason == "abort" and r.stats.completion_tokens < 200 for r in replies), replies
    questions = [m.content for m in app.conversations.messages(conv.id) if m.role == "user"]
    assert len(questions) == len(replies) and len(replies) >= 2, questions


# Where the chat is scrolled to, and how far it can be: the saved chat and the live turn scroll as one.
SCROLLER = """() => { const el = document.querySelector('#chat-scroll');
  return [el.scrollTop, el.scrollHeight - el.clientHeight]; }"""


def follows(page: Any) -> None:
    """The view is at the bottom of the growing reply; an update that has just grown it may be
    drawn a frame before the view catches up."""
    at_bottom = f"() => {{ const [top, bottom] = ({SCROLLER})(); return bottom - top < 60; }}"
    try:
        page.wait_for_function(at_bottom, timeout=2_000)
    except PlaywrightTimeout:
        raise AssertionError(f"the view stayed above the reply's end: {page.evaluate(SCROLLER)}") from None


def test_auto_scroll_follows_at_the_bottom_and_stays_when_scrolled_up(open_page: Any, make_app: Any) -> None:
    engine = long_writer()
    app = make_app(engine)
    conv = app.conversations.create("Long")
    # Earlier messages, taller than the view: there is somewhere to scroll up to.
    for i in range(2):
        app.conversations.add_message(conv.id, "user", f"Question {i}")
        app.conversations.add_message(conv.id, "assistant", "\n".join(f"- step {n}" for n in range(30)))
    page = open_page(app)
    question = "Write a long story about the sea."
    page.evaluate(COUNT_FRAMES, question)
    box = page.locator("#chat-input textarea")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function(f"() => ({REPLY_HEIGHT})() > 800", timeout=30_000, polling=100)
    # At the bottom: the view follows the growing reply (within a frame or two of each update).
    follows(page)
    # Scrolled up with the mouse wheel, into the reply: the view stays where the user put it
    # while the reply grows under it.
    page.locator("#chat-scroll").hover()
    page.mouse.wheel(0, -200)
    page.wait_for_function(f"() => {{ const [top, bottom] = ({SCROLLER})(); return bottom - top > 150; }}")
    page.wait_for_timeout(300)
    before, height = page.evaluate(SCROLLER)[0], page.evaluate(REPLY_HEIGHT)
    page.wait_for_function(f"() => ({REPLY_HEIGHT})() > {height + 100}", polling=100)
    after, bottom = page.evaluate(SCROLLER)
    assert abs(after - before) < 5 and bottom - after > 250, (before, after, bottom)
    # Stopped: the reply joins the saved chat, drawn anew there, and the reader stays on the same
    # message, at the same height (within a line or two).
    reading = page.evaluate(READING)
    assert reading[0].startswith(
        page.evaluate("document.querySelector('#live-chat .bot').textContent.trim().slice(0, 20)")
    )
    page.locator("#stop").click()
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=10)
    expect(page.locator("#chatbot .reply-stats")).to_have_count(1)
    expect(page.locator("#live-chat .message-row")).to_have_count(0)
    page.wait_for_timeout(500)
    read = page.evaluate(READING)
    assert read[0] == reading[0] and abs(read[1] - reading[1]) < 60, (reading, read)
    # From the frame the message first showed to now, each frame showed it once: never gone while
    # the saved chat drew the reply, never twice.
    times = page.evaluate("window.shownTimes")
    shown = times[times.index(1) :]
    assert set(shown) == {1} and len(shown) > 30, [(i, n) for i, n in enumerate(shown) if n != 1][:10]
    shot(page, "19-joined-scrolled-up")

    # Scrolled up to an earlier question and edited it: the view follows the new reply again.
    page.locator("#chat-scroll").hover()
    page.mouse.wheel(0, -5000)
    page.wait_for_function(f"() => ({SCROLLER})()[0] === 0")
    chat = page.locator("#chatbot")
    chat.get_by_role("button", name="Edit").nth(1).click()
    chat.locator("textarea").first.fill("Question 1, edited")
    chat.get_by_role("button", name="Submit").first.click()
    page.wait_for_function(f"() => ({REPLY_HEIGHT})() > 800", timeout=30_000, polling=100)
    follows(page)
    page.locator("#stop").click()
    assert wait_until(lambda: engine.num_unfinished_requests() == 0, timeout=10)


# The height of the reply streaming in the live chat.
REPLY_HEIGHT = """() => { const bot = document.querySelector('#live-chat:not(.joined) .bot');
  return bot ? bot.getBoundingClientRect().height : 0; }"""

# The message row at the top of the chat's view: its first words and how far its top is above
# the top of the view. Only the words before the reply's first formula: the saved chat typesets
# the math that the live turn showed as written.
READING = """() => { const view = document.querySelector('#chat-scroll').getBoundingClientRect();
  const rows = [...document.querySelectorAll('#chatbot .message-row, #live-chat:not(.joined) .message-row')];
  const row = rows.find(r => { const b = r.getBoundingClientRect(); return b.top <= view.top && b.bottom > view.top; });
  if (!row) return null;
  return [row.textContent.trim().slice(0, 30), Math.round(view.top - row.getBoundingClientRect().top)]; }"""

# From the page's next frame on, how many times each frame shows the message `text` (in the saved
# chat or in the live turn under it, not hidden), into window.shownTimes.
COUNT_FRAMES = """text => { window.shownTimes = [];
  const count = () => [...document.querySelectorAll('#chatbot .message-row, #live-chat:not(.joined) .message-row')]
    .filter(row => row.checkVisibility() && row.textContent.trim() === text).length;
  const frame = () => { shownTimes.push(count()); if (shownTimes.length < 20000) requestAnimationFrame(frame); };
  requestAnimationFrame(frame); }"""


def test_a_long_chat_opens_on_its_last_messages_and_shows_the_rest_on_a_click(open_page: Any, app: App) -> None:
    conv = app.conversations.create("Long")
    for i in range(15):
        app.conversations.add_message(conv.id, "user", f"Question {i}")
        app.conversations.add_message(conv.id, "assistant", f"Answer {i}")
    page = open_page(app)
    chat = page.locator("#chatbot")
    # The last 20 messages: from question 5 on; the rest a click away.
    expect(chat.get_by_text("Question 5", exact=True)).to_be_visible()
    expect(chat.get_by_text("Question 4", exact=True)).to_have_count(0)
    earlier = page.get_by_role("button", name="Show the 10 earlier messages")
    earlier.click()
    expect(chat.get_by_text("Question 0", exact=True)).to_be_visible()
    expect(earlier).to_be_hidden()

    # Opened again: editing the first message shown edits that one, not the chat's first.
    page.reload()
    expect(chat.get_by_text("Question 4", exact=True)).to_have_count(0)
    chat.get_by_role("button", name="Edit").first.click()
    chat.locator("textarea").first.fill("Question 5, edited")
    chat.get_by_role("button", name="Submit").first.click()

    def shown() -> list[str]:
        return [m.content for m in app.conversations.messages(conv.id)]

    assert wait_until(lambda: len(shown()) == 12 and shown()[10] == "Question 5, edited"), shown()
    assert shown()[:10] == [f"{kind} {i}" for i in range(5) for kind in ("Question", "Answer")]
    expect(chat.get_by_text("Question 5, edited")).to_be_visible()
    shot(page, "18-long-chat-edited")
