"""The chat page's own cost in long chats: Chromium (Playwright) on the app's real page, fed by a
stand-in engine at a fixed token rate (benchmarks/page_engine.py), so only the page is measured.

For each number of earlier messages (half questions, half long Markdown answers): the time from
opening the page to a chat ready to type in (the box open and the messages a long chat opens
on drawn: "shown"), then one reply streamed into it while a key is pressed in the message box
every 400 ms, until the reply has joined the saved chat with its speed line. Long tasks come
from PerformanceObserver('longtask'), frame gaps from requestAnimationFrame, input delay from
Event Timing (key events; the browser reports only those of 16 ms or more, so "16" means "16 or
less"), and the page's main-thread time while the reply streamed (busy; style and layout within
it) from Chromium's own counters, which see work too short to be a long task.

    .venv/bin/python -m benchmarks.page_bench                      # 0, 30, 100, 500 messages
    .venv/bin/python -m benchmarks.page_bench --counts 0,100 --rate 120 --tokens 2000

Results: printed, and benchmarks/results/page-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from app.ui.chat_display import window_start
from benchmarks.page_engine import PageEngine, reply_text
from tests.chromium import ARGS, CHROMIUM

RESULTS = Path(__file__).resolve().parent / "results"
KEY_EVERY_MS = 400

# Installed before the page's own scripts: everything it records lands in window.bench.
OBSERVERS = """
window.bench = {long: [], keys: [], frames: []};
new PerformanceObserver(l => l.getEntries().forEach(e => bench.long.push([e.startTime, e.duration])))
  .observe({type: 'longtask', buffered: true});
new PerformanceObserver(l => l.getEntries().forEach(e => {
  if (e.name.startsWith('key') || e.name === 'beforeinput' || e.name === 'input') bench.keys.push(e.duration);
})).observe({type: 'event', buffered: true, durationThreshold: 16});
const frame = t => { bench.frames.push(t); requestAnimationFrame(frame); };
requestAnimationFrame(frame);
"""
# Ready to type in: the box open, and the chat's messages drawn (a long chat opens on its last ones).
READY = """n => { const box = document.querySelector('#chat-input textarea');
  return box && !box.disabled && document.querySelectorAll('#chatbot .message-row').length >= n; }"""


def seed(app: Any, messages: int, tokens: int) -> int:
    """One conversation of `messages` earlier messages: questions and answers as long as the reply.
    Returns how many of them the page shows on opening it (a long chat opens on its last ones)."""
    if not messages:
        return 0
    conv = app.conversations.create("Earlier questions")
    answer = reply_text(tokens)
    for i in range(messages // 2):
        app.conversations.add_message(conv.id, "user", f"Question {i + 1}: explain gradient descent again?")
        app.conversations.add_message(conv.id, "assistant", answer)
    path = app.conversations.messages(conv.id)
    return len(path) - window_start(path, whole=False)


class Server:
    """The app's HTTP server on a loopback port, on an event loop of its own thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from app.server import build_http_app
        from tests.conftest import free_port

        self.port = free_port()
        config = uvicorn.Config(
            build_http_app(app, unload_on_exit=False), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return
            time.sleep(0.05)
        raise TimeoutError("the app did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def measure(browser: Any, url: str, messages: int, shown: int, tokens: int, rate: float) -> dict[str, Any]:
    """One page: open it on a chat of `messages` earlier messages (`shown` of them drawn), then
    stream one reply."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.add_init_script(OBSERVERS)
        # The page's busy time by kind (Chromium's own counters), also below the 50 ms of a long task.
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(url)
        page.wait_for_function(READY, arg=shown, timeout=120_000, polling=50)
        first_ms = page.evaluate("performance.now()")
        # Opened again, as a returning user does: the page's own files are cached by now.
        page.reload()
        page.wait_for_function(READY, arg=shown, timeout=120_000, polling=50)
        ready_ms = page.evaluate("performance.now()")
        page.wait_for_timeout(1000)  # let the opening settle before the streaming window
        box = page.locator("#chat-input textarea")
        box.fill("Explain gradient descent once more, with code and a table.")
        page.evaluate("bench.long = []; bench.keys = []; bench.frames = []; bench.start = performance.now()")
        busy_before = busy(cdp)
        box.press("Enter")
        stats_before = page.locator("#chatbot .reply-stats").count()
        unanswered = 0
        deadline = time.monotonic() + tokens / rate * 3 + 30
        while time.monotonic() < deadline:  # bounded: a stuck page ends the run
            if page.locator("#chatbot .reply-stats").count() > stats_before:
                page.evaluate("bench.saved = performance.now()")
                break
            try:
                box.press("x", timeout=10_000)
            except PlaywrightTimeout:
                unanswered += 1  # the page did not take a key press for 10 s
            page.wait_for_timeout(KEY_EVERY_MS)
        recorded = page.evaluate("() => ({...bench, end: performance.now()})")
        busy_after = busy(cdp)
    finally:
        context.close()
    return {
        "first_open_s": round(first_ms / 1000, 2),
        **summary(messages, ready_ms, recorded),
        "keys_unanswered_10s": unanswered,
        **{f"{kind}_s": round(busy_after[kind] - busy_before[kind], 2) for kind in BUSY},
    }


# Chromium's counters of the page's main-thread time: all tasks, and style and layout within them.
BUSY = {"busy": "TaskDuration", "style": "RecalcStyleDuration", "layout": "LayoutDuration"}


def busy(cdp: Any) -> dict[str, float]:
    """The page's main-thread seconds so far, by kind (BUSY)."""
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {kind: metrics[name] for kind, name in BUSY.items()}


def summary(messages: int, ready_ms: float, bench: dict[str, Any]) -> dict[str, Any]:
    seconds = (bench["end"] - bench["start"]) / 1000
    frames = bench["frames"]
    gaps = [(b - a, a) for a, b in itertools.pairwise(frames)]
    worst, worst_at = max(gaps, default=(0, bench["start"]))
    long_ms = sum(d for start, d in bench["long"] if start >= bench["start"])
    # Where the page's time goes: the longest tasks, in seconds from the key press that sent.
    longest = sorted(((d, s) for s, d in bench["long"] if s >= bench["start"]), reverse=True)[:5]
    return {
        "messages": messages,
        "open_ready_s": round(ready_ms / 1000, 2),
        "stream_s": round(seconds, 1),
        "long_tasks_s": round(long_ms / 1000, 2),
        "long_tasks_count": len(bench["long"]),
        "frames_per_s": round(len(frames) / seconds, 1) if seconds else 0,
        "max_frame_gap_ms": round(worst),
        "max_frame_gap_at_s": round((worst_at - bench["start"]) / 1000, 2),
        "saved_at_s": round((bench.get("saved", bench["end"]) - bench["start"]) / 1000, 2),
        "longest_tasks": [[round(d), round((s - bench["start"]) / 1000, 2)] for d, s in longest],
        "max_key_ms": round(max(bench["keys"], default=16)),
    }


def run(counts: list[int], tokens: int, rate: float) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    from app.application import App
    from app.config.settings import AppPaths, AppSettings

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        for messages in counts:
            with tempfile.TemporaryDirectory(prefix="page-bench-") as home:
                os.environ["VLLM_CHAT_HOME"] = home
                app = App.build(AppSettings(), AppPaths.default(), engine=PageEngine(tokens, rate))
                shown = seed(app, messages, tokens)
                server = Server(app)
                try:
                    url = f"http://127.0.0.1:{server.port}"
                    results.append({**measure(browser, url, messages, shown, tokens, rate), "shown": shown})
                finally:
                    server.stop()
                    app.conversations.close()
            print(json.dumps(results[-1]), flush=True)
        browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="0,30,100,500", help="earlier messages per run, comma-separated")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens in the streamed reply (and each answer)")
    parser.add_argument("--rate", type=float, default=120.0, help="tokens per second of the stand-in engine")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    results = run([int(n) for n in args.counts.split(",")], args.tokens, args.rate)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"page-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"tokens": args.tokens, "rate": args.rate, "results": results}, indent=2))
    head = f"{'messages':>8} {'open s':>7} {'long s':>7} {'fps':>5} {'gap ms':>7} {'key ms':>7}"
    print(f"{head} {'busy/style/layout s':>20}")
    for r in results:
        print(
            f"{r['messages']:>8} {r['open_ready_s']:>7} {r['long_tasks_s']:>7} {r['frames_per_s']:>5} "
            f"{r['max_frame_gap_ms']:>7} {r['max_key_ms']:>7} {r['busy_s']:>8}/{r['style_s']}/{r['layout_s']}"
        )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
