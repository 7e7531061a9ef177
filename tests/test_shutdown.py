"""What a killed engine leaves behind is cleaned up: its shared memory is removed without the
resource tracker's leak warning. (The app stopped with a page open, leaving no process and no
shared memory, is tested with its start in test_cli.py: one start of the app for both.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LEFT_BEHIND = """
from multiprocessing import shared_memory
from app.engine.processes import remove_segments
# As an engine process killed before it unlinked its ring buffer leaves it: open, not unlinked.
segment = shared_memory.SharedMemory(create=True, size=4096)
segment.close()
print(segment.name, flush=True)
remove_segments({segment.name, "psm_never_made"})
"""


def test_shared_memory_a_killed_engine_left_is_removed_without_a_leak_warning() -> None:
    done = subprocess.run([sys.executable, "-c", LEFT_BEHIND], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip()
    assert name.startswith("psm_") and not (Path("/dev/shm") / name).exists()
    # The resource tracker would otherwise remove it at exit, saying it leaked.
    assert "leaked" not in done.stderr, done.stderr
