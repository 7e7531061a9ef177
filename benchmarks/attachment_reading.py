"""Time to refusal and memory of attaching a long web page or Word document (issue 33).

Each file is attached in a process of its own, as the chat tab's tray does it (read from disk,
then `attach`), with a stand-in engine that counts in the tiny test model's tokenizer and has
the context given. The process's resident memory is sampled every 10 ms: before, at the peak,
and after (once collected). `--source DIR` measures another checkout's `app` (the one before a
change, say) on the same files.

    .venv/bin/python -m benchmarks.attachment_reading [--context 32768] [--source DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.attachment_files import long_docx, long_page

CASES = {
    "page-1.5MB.html": lambda: long_page(int(1.5 * 2**20)),
    "page-15MB.html": lambda: long_page(15 * 2**20),
    "minutes-200k-paragraphs.docx": lambda: long_docx(200_000),
}
# Run in the measured process, with the checkout measured first on its path.
MEASURE = """
import gc, json, sys, threading, time
import psutil
from app.attachments import attach
from app.engine.types import Capabilities
from app.errors import UserError
from tests.tiny_model import build_tokenizer

path, context = sys.argv[1], int(sys.argv[2])
tokenizer = build_tokenizer()

class Counter:
    model_name, max_model_len, capabilities = "tiny", context, Capabilities()
    def count_tokens(self, text):
        return len(tokenizer.encode(text, add_special_tokens=False))

attach(Counter(), "warm.html", b"<p>warm up</p>", 1024)
gc.collect()
process, peak, done = psutil.Process(), [0], threading.Event()
def sample():
    while not done.wait(0.01):
        peak[0] = max(peak[0], process.memory_info().rss)
before = process.memory_info().rss
sampler = threading.Thread(target=sample)
sampler.start()
started = time.monotonic()
try:
    with open(path, "rb") as f:
        attach(Counter(), path.rsplit("/", 1)[-1], f.read(), 1024)
    outcome = "attached"
except UserError as exc:
    outcome = exc.key
seconds = time.monotonic() - started
done.set()
sampler.join()
gc.collect()
after = process.memory_info().rss
figures = {"seconds": seconds, "before": before, "peak": max(peak[0], after), "after": after}
print(json.dumps({**figures, "outcome": outcome}))
"""


def measure(source: Path, path: Path, context: int) -> dict:
    code = f"import sys; sys.path.insert(0, {str(source)!r})\n{MEASURE}"
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(context)], capture_output=True, text=True, check=True, cwd=source
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, default=32768, help="the stand-in model's context, in tokens")
    parser.add_argument("--source", type=Path, default=Path.cwd(), help="the checkout whose app is measured")
    args = parser.parse_args()
    mib = 2**20
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'file':32} {'size':>9} {'seconds':>8} {'RSS before':>11} {'peak':>9} {'after':>9}  outcome")
        for name, make in CASES.items():
            path = Path(folder) / name
            path.write_bytes(make())
            r = measure(args.source.resolve(), path, args.context)
            print(
                f"{name:32} {path.stat().st_size / mib:7.1f}MB {r['seconds']:8.2f} {r['before'] / mib:9.0f}MB "
                f"{r['peak'] / mib:7.0f}MB {r['after'] / mib:7.0f}MB  {r['outcome']}"
            )


if __name__ == "__main__":
    main()
