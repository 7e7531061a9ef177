"""What the browser tests share: Debian's Chromium driven by Playwright, a page on a new server
for an app, screenshots of each step (tests/artifacts/), and a script that stops a reply from
inside the page. Test modules import the fixtures they use from here.

Without /usr/bin/chromium the tests are skipped, except under CI (CI set), where a missing
browser is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from app.application import App
from app.config.settings import AppSettings, SamplingSettings
from app.engine import Engine
from tests.chromium import ARGS, CHROMIUM

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# A reply with each kind of Markdown a model writes.
MARKDOWN_REPLY = (
    "Inline math $E = mc^2$ and prices: it costs $5 and $10.\n\n"
    "$$\\int_0^1 x^2 \\, dx = \\frac{1}{3}$$\n\n"
    "```python\ndef area(r):\n    return 3.14159 * r ** 2\n```\n\n"
    "| step | loss |\n|---|---|\n| 1 | 2.31 |\n| 2 | 1.87 |\n"
)

# Watches the live chat (the turn being answered) from inside the page: once the reply has been
# seen growing twice, clicks Stop at once, in the same task, and resolves with the lengths it
# saw. Clicking from a polling test would land late on a busy two-core machine. The text is read
# from the document (textContent): a block just drawn is laid out only when the page next paints
# (assets/style.css), and innerText counts only what is laid out.
STOP_WHEN_GROWING = """() => { window.stopWhenGrowing = new Promise(resolve => {
  const lengths = [];
  const observer = new MutationObserver(() => {
    const bubble = document.querySelector('#live-chat .bot');
    if (!bubble) return;
    const length = bubble.textContent.length;
    if (length > (lengths[lengths.length - 1] || 0)) lengths.push(length);
    if (lengths.length >= 3) {
      observer.disconnect();
      document.querySelector('#stop').click();
      resolve([lengths, Math.round(performance.now())]);
    }
  });
  observer.observe(document.querySelector('#live-chat'), {subtree: true, childList: true, characterData: true});
}); }"""


@pytest.fixture(name="browser", scope="module")
def browser_fixture() -> Iterator[Any]:
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


@pytest.fixture(name="app")
def app_fixture(engine: Engine, make_app: Any) -> App:
    return make_app(engine, AppSettings(sampling=SamplingSettings(max_tokens=8, ignore_eos=True)))


@pytest.fixture(name="open_page")
def open_page_fixture(browser: Any, start_server: Any) -> Iterator[Any]:
    """open_page(app, locale) -> a page showing a new server for `app`. Pages close before their
    server stops: an open page keeps a connection that holds the server's shutdown."""
    contexts = []

    def open_(app: App, locale: str = "en-US") -> Any:
        server = start_server(app)
        # Clipboard access, for the copy buttons' tests.
        permissions = ["clipboard-read", "clipboard-write"]
        contexts.append(
            browser.new_context(locale=locale, viewport={"width": 1280, "height": 900}, permissions=permissions)
        )
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
