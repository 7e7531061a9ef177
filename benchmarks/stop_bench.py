"""How soon Stop lands: the time from a click on Stop to the engine's request being closed, for
clicks early in a reply, on a quiet machine and on a busy one (both cores kept busy by burner
processes for the run). Chromium (Playwright) on the app's real page, fed by the stand-in engine
(benchmarks/page_engine.py), so the page and the server are measured, not a model; or, with
--model, by vLLM on the tests' slow tiny model (its engine core busy on the same two cores).

The click is a real mouse event (CDP), timed just before it is sent: a page whose main thread is
busy handles it late, and that counts. The server's clock notes when the page's Stop requests
arrive (Gradio's /cancel, and the app's own stop) and when the engine has no request left.

    .venv/bin/python -m benchmarks.stop_bench                        # quiet, then busy
    .venv/bin/python -m benchmarks.stop_bench --delays 0.1,0.3,0.7,1.5 --busy 0
    .venv/bin/python -m benchmarks.stop_bench --model vllm           # the real engine (lock it)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.page_engine import PageEngine
from tests.chromium import ARGS, CHROMIUM

# One core's worth of work for `seconds`, then exit (bounded even if this script dies).
BURN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


# Installed before the page's own scripts: the page's requests (wall-clock start, end, status),
# its Stop clicks as handled, and its long tasks, in window.bench.
OBSERVERS = """
window.bench = {fetches: [], clicks: [], long: []};
const now = () => performance.timeOrigin + performance.now();
const fetched = window.fetch;
window.fetch = async (url, ...rest) => {
  const entry = [String(url), now(), null, null];
  bench.fetches.push(entry);
  const response = await fetched(url, ...rest);
  entry[2] = now(); entry[3] = response.status;
  return response;
};
document.addEventListener("click", e => { if (e.target.closest("#stop")) bench.clicks.push(now()); }, true);
new PerformanceObserver(l => l.getEntries().forEach(e => bench.long.push([performance.timeOrigin + e.startTime,
  e.duration]))).observe({type: "longtask", buffered: true});
"""
# The message box opens once the page has loaded the saved chat.
OPEN = "() => document.querySelector('#chat-input textarea')?.disabled === false"


class Arrivals:
    """ASGI wrapper noting when requests whose path ends with one of `paths` arrive."""

    def __init__(self, app: Any, paths: tuple[str, ...]) -> None:
        self.app, self.paths, self.seen = app, paths, []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith(self.paths):
            self.seen.append((scope["path"], time.time()))
        await self.app(scope, receive, send)


@contextlib.contextmanager
def burners(count: int, seconds: float) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", BURN.format(seconds=seconds)]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


class Requests(threading.Thread):
    """The engine's unfinished requests, polled every millisecond: (wall time, count) at each change."""

    def __init__(self, engine: Any) -> None:
        super().__init__(daemon=True)
        self.engine, self.changes, self.done = engine, [(time.time(), 0)], threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            count = self.engine.num_unfinished_requests()
            if count != self.changes[-1][1]:
                self.changes.append((time.time(), count))

    def ended_after(self, at: float) -> float | None:
        """When the requests running after `at` were all gone: `at` itself if none ever ran."""
        after = [(t, n) for t, n in self.changes if t > at]
        running = [n for t, n in self.changes if t <= at][-1]
        if not running and not any(n for _, n in after):
            return at
        return next((t for t, n in after if n == 0), None)


def one_stop(page: Any, requests: Requests, arrivals: Arrivals, delay: float) -> dict[str, Any]:
    """Send a message, click Stop `delay` s after Enter; the ms from the click to each step."""
    # A new chat each time: a long stopped reply would leave the next prompt no room.
    page.locator("#new-chat").click()
    page.wait_for_function("() => !document.querySelector('#chatbot .message-row')")
    box = page.locator("#chat-input textarea")
    stop = page.locator("#stop").bounding_box()
    box.fill("Explain gradient descent once more, with code and a table.")
    seen = len(arrivals.seen)
    page.evaluate("bench.fetches = []; bench.clicks = []; bench.long = []")
    box.press("Enter")
    sent = time.time()
    time.sleep(max(0.0, sent + delay - time.time()))
    clicked = time.time()
    page.mouse.click(stop["x"] + stop["width"] / 2, stop["y"] + stop["height"] / 2)
    # Settle: the page has heard of the stop and the next message may go; a reply that starts
    # after a lost Stop has started by then.
    page.wait_for_function("() => !window.vllmChatSending", timeout=120_000)
    page.wait_for_timeout(1500)
    ended = requests.ended_after(clicked)
    bench = page.evaluate("bench")

    def ms(at: float | None) -> int | None:
        return round(at - clicked * 1000) if at else None

    return {
        "delay_s": delay,
        "click_handled_ms": [ms(at) for at in bench["clicks"]],
        # The page's request for the reply (its queue/join) and its cancel, as the page saw them.
        "page_fetches_ms": [
            [url.rsplit("/", 1)[-1].split("?")[0], ms(start), ms(end), status]
            for url, start, end, status in bench["fetches"]
            if url.endswith(("/cancel", "/reset")) or ("/join" in url and -1000 < ms(start) < 1000)
        ],
        "server_requests_ms": [[path.rsplit("/", 1)[-1], ms(at * 1000)] for path, at in arrivals.seen[seen:]],
        "long_tasks_ms": [[ms(start), round(duration)] for start, duration in bench["long"] if duration > 100],
        # From the click to no request left in the engine (0: none had started, none started).
        "abort_ms": ms(ended * 1000) if ended else None,
    }


@contextlib.contextmanager
def serving(model: str | None, tokens: int, rate: float) -> Iterator[tuple[Any, str, Arrivals]]:
    """(engine, url, arrivals): the app around the stand-in engine or vLLM on the slow tiny model,
    served on the tests' engine loop."""
    from app.application import App
    from app.config.settings import AppPaths, AppSettings, SamplingSettings
    from app.engine import Engine
    from app.server import build_http_app
    from tests.conftest import LONG_MAX_MODEL_LEN, EngineLoop, RunningServer, tiny_engine_settings
    from tests.tiny_model import build_tiny_model

    loop = EngineLoop()
    with tempfile.TemporaryDirectory(prefix="stop-bench-") as home:
        os.environ["VLLM_CHAT_HOME"] = home
        if model:
            engine = Engine()
            folder = build_tiny_model(Path(home) / "slow", hidden_size=1024, layers=12)
            settings = tiny_engine_settings()
            loop.run(engine.load(str(folder), dataclasses.replace(settings, max_model_len=LONG_MAX_MODEL_LEN)))
            sampling = SamplingSettings(max_tokens=min(tokens, 1500), ignore_eos=True)
        else:
            engine, sampling = PageEngine(tokens, rate), SamplingSettings()
        app = App.build(AppSettings(sampling=sampling), AppPaths.default(), engine=engine)
        arrivals = Arrivals(build_http_app(app, unload_on_exit=False), ("/cancel", "/stop"))
        server = RunningServer(loop, arrivals)
        try:
            yield engine, server.url, arrivals
        finally:
            server.stop()
            app.conversations.close()
            if model:
                loop.run(engine.unload())
            loop.close()


def run(model: str | None, delays: list[float], busy: list[int], tokens: int, rate: float) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright, serving(model, tokens, rate) as (engine, url, arrivals):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.add_init_script(OBSERVERS)
            page.goto(url)
            page.wait_for_function(OPEN, timeout=60_000)
            requests = Requests(engine)
            requests.start()
            for cores in busy:
                with burners(cores, seconds=len(delays) * 30 + 30):
                    for delay in delays:
                        results.append({"busy_cores": cores, **one_stop(page, requests, arrivals, delay)})
                        print(json.dumps(results[-1]), flush=True)
            requests.done.set()
        finally:
            browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0.05,0.1,0.3,0.7,1.5", help="seconds from Enter to Stop, comma-separated")
    parser.add_argument("--busy", default="0,2", help="burner processes per round, comma-separated")
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=60.0, help="tokens per second of the stand-in engine")
    parser.add_argument("--model", choices=["vllm"], help="vLLM on the slow tiny model instead of the stand-in")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    delays = [float(d) for d in args.delays.split(",")]
    results = run(args.model, delays, [int(b) for b in args.busy.split(",")], args.tokens, args.rate)
    for cores in sorted({r["busy_cores"] for r in results}):
        aborts = [r["abort_ms"] for r in results if r["busy_cores"] == cores]
        print(f"busy cores {cores}: click -> abort ms {aborts}")


if __name__ == "__main__":
    main()
