"""Tools in the real page: the approval bar, Allow once, the collapsed block after a reload;
Remove in Settings → Tools asks before a server goes."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from app.config.settings import AppSettings
from app.engine import Engine
from app.tools.host import ToolHost
from tests.browser_pages import browser_fixture, open_page_fixture, shot  # noqa: F401 (fixtures)
from tests.conftest import wait_until
from tests.test_tools import SAMPLING, host, only  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def test_the_user_allows_a_call_in_the_page_and_sees_it_collapsed_after_a_reload(
    open_page: Any,
    engine: Engine,
    make_app: Any,
    host: ToolHost,  # noqa: F811
) -> None:
    app = make_app(engine, AppSettings(sampling=SAMPLING))
    app.tools = host
    host.first_choice = "required"
    only(host, "echo")
    page = open_page(app)
    # The saved chat and, under it while a reply streams, the live one.
    chat = page.locator("#chat-scroll")
    box = page.locator("#chat-input textarea")
    box.fill("Say a word")
    box.press("Enter")
    allow = page.locator("#tool-allow")
    expect(allow).to_be_visible()
    expect(page.locator("#tool-approval-text")).to_contain_text("echo")
    expect(chat.locator(".thought-group")).to_contain_text("waiting for your approval")
    shot(page, "tools-1-approval")
    allow.click()
    expect(allow).to_be_hidden()
    block = chat.locator(".thought-group")
    expect(block).to_contain_text("echo · done")
    expect(chat.locator(".reply-stats")).to_have_count(2)  # the round and the reply after it
    messages = app.conversations.messages(app.conversations.list()[0].id)
    result = messages[1].tool_calls[0].result
    assert result.startswith("echo: ")

    page.reload()
    block = chat.locator(".thought-group")
    expect(block).to_contain_text("echo · done")
    # Collapsed: the result shows only once the block is opened.
    expect(chat.get_by_text(result)).to_have_count(0)
    block.get_by_role("button").first.click()
    expect(chat.get_by_text(result)).to_be_visible()
    shot(page, "tools-2-after-reload")


def test_remove_asks_in_the_page_and_only_yes_removes_the_server(
    browser: Any, start_server: Any, make_app: Any
) -> None:
    # No model is needed: the page opens with none loaded.
    app = make_app(Engine())
    app.tools.save_server({"name": "spare", "kind": "stdio", "command": "no-such-mcp"})
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 1000})
    try:
        page = context.new_page()
        page.goto(start_server(app).url)
        page.get_by_role("tab", name="Settings").click()
        page.locator("#tools-settings").get_by_text("Tools (MCP servers)").click()
        page.locator("#tools-servers input").click()
        page.get_by_role("option", name="spare").click()
        expect(page.locator("#tools-status")).to_contain_text("Not connected yet")
        question = page.locator("#tools-remove-question")
        expect(question).to_be_hidden()
        page.locator("#tools-remove").click()
        expect(question).to_contain_text("Remove the server “spare”?")
        shot(page, "tools-3-remove-question")
        page.locator("#tools-remove-no").click()
        expect(question).to_be_hidden()
        assert app.tools.settings.server("spare") is not None
        page.locator("#tools-remove").click()
        page.locator("#tools-remove-yes").click()
        expect(page.locator("#tools-status")).to_contain_text("Fill in the form")
        expect(question).to_be_hidden()
        assert wait_until(lambda: app.tools.settings.server("spare") is None, timeout=10)
    finally:
        context.close()
