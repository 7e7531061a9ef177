"""The Models table in Chromium at a wide and a narrow window: every column header keeps its
words whole (Gradio's table let "Parameters" break into "Paramete / rs"), in both languages.
No engine: the catalog table needs none."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from app.engine import Engine
from tests.browser_pages import ARTIFACTS, browser_fixture  # noqa: F401 (Chromium, as a fixture)

pytestmark = pytest.mark.browser

# The words of each header cell drawn on more than one line: a word cut by the line break.
BROKEN_WORDS = """(selector) => {
  const broken = [];
  for (const th of document.querySelectorAll(selector)) {
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const word of node.textContent.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (lines.size > 1) broken.push(word[0]);
      }
    }
  }
  return broken;
}"""


@pytest.mark.parametrize("width", [1400, 1000])
@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_models_table_headers_keep_their_words_whole(
    browser: Any, make_app: Any, start_server: Any, width: int, locale: str
) -> None:
    server = start_server(make_app(Engine()))
    context = browser.new_context(locale=locale, viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        page.goto(server.url)
        page.get_by_role("tab").nth(1).click()  # Models, in either language
        headers = page.locator("#model-browser thead th")
        expect(headers.first).to_be_visible()
        expect(page.locator("#model-browser")).to_contain_text("Qwen2.5 7B Instruct")
        texts = [t.strip() for t in headers.all_inner_texts()]
        assert len([t for t in texts if t]) == 7, texts
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#model-browser").screenshot(path=str(ARTIFACTS / f"models-table-{locale}-{width}.png"))
        assert page.evaluate(BROKEN_WORDS, "#model-browser thead th") == []
    finally:
        context.close()
