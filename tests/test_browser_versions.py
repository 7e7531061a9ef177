"""Versions and branches in a real browser: regenerate and switch versions, edit to branch, and
both survive a reload."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from app.application import App
from tests.browser_pages import app_fixture, browser_fixture, open_page_fixture, shot  # noqa: F401 (fixtures)
from tests.conftest import wait_until

pytestmark = pytest.mark.browser


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


def test_clicking_a_message_points_the_version_buttons_at_its_turn(open_page: Any, app: App) -> None:
    page = open_page(app)
    chat = page.locator("#chatbot")
    label = page.locator("#version-label")
    box = page.locator("#chat-input textarea")
    # Two turns, each with a regenerated reply: the buttons act on the last one at first.
    for question in ("First question", "Second question"):
        box.fill(question)
        box.press("Enter")
        expect(chat.locator(".reply-stats")).to_have_count(1 if question.startswith("First") else 2)
        page.wait_for_function("() => !window.vllmChatSending")
        page.locator("#regenerate").click()
        expect(chat.locator(".version-count")).to_have_text(["2/2"] if question.startswith("First") else ["2/2", "2/2"])
    expect(label).to_have_text("Reply 2/2")
    # The first reply clicked: ‹ now shows its first version, and the second question (asked
    # under its second version) is off the path shown.
    chat.locator(".bot").first.click()
    page.get_by_role("button", name="Previous version").click()
    expect(label).to_have_text("Reply 1/2")
    expect(chat.get_by_text("Second question")).to_have_count(0)
    expect(chat.locator(".version-count")).to_have_text("1/2")
    shot(page, "17-picked-turn")
