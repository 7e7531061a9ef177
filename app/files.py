"""Files only the user can read: everything the app writes holds private chats, settings or a
token, and other users of the same computer must not read them."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_umask() -> None:
    """New files 0600 and folders 0700 for this process and its children, whatever the shell's umask."""
    os.umask(0o077)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) private; tighten it if an older version left it open."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    with contextlib.suppress(PermissionError):
        path.chmod(PRIVATE_DIR)
    return path


def tighten(folder: Path) -> None:
    """Make the files and folders an older version left under `folder` private."""
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), PRIVATE_DIR)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, PRIVATE_FILE)


def write_private(path: Path, data: str | bytes) -> None:
    """Replace `path` atomically with a 0600 file (a crash mid-write never leaves half a file)."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 already; fchmod is for platforms where it does not.
        os.fchmod(fd, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
