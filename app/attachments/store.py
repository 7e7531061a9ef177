"""Where attached files live: one private file per distinct content under the data folder.

Files are named by the SHA-256 of their bytes, so the same picture attached twice (or kept by
an edited message and its new branch) is stored once, and a name from the browser never
becomes a path. The history database holds which message has which file (`Attachment`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.attachments.content import AttachmentKind, FileContent
from app.errors import UserError
from app.files import private_dir, write_private

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Attachment:
    """A file given to a message, as saved with it: what the page shows and the prompt needs."""

    name: str
    kind: AttachmentKind
    mime: str
    sha256: str
    size: int
    text: str = ""  # the extracted text (documents); empty for pictures
    tokens: int = 0  # its part of the prompt, in the tokens of the model it was attached for

    @classmethod
    def of(cls, content: FileContent, tokens: int = 0) -> Attachment:
        return cls(content.name, content.kind, content.mime, content.sha256, len(content.data), content.text, tokens)


class AttachmentFiles:
    """The folder of attached files (0700, each file 0600)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, content: FileContent) -> Path:
        path = self.path(content.sha256)
        if not path.exists():
            write_private(path, content.data)
        return path

    def path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.folder / sha256[:2] / sha256

    def read(self, attachment: Attachment) -> bytes:
        try:
            return self.path(attachment.sha256).read_bytes()
        except FileNotFoundError:
            raise UserError("attachments.missing", name=attachment.name) from None

    def prune(self, keep: Iterable[str]) -> int:
        """Delete the files no message refers to any more (after a chat is deleted); how many."""
        keep = set(keep)
        removed = 0
        if not self.folder.is_dir():
            return 0
        for path in self.folder.glob("??/*"):
            if path.name not in keep and _SHA256.fullmatch(path.name):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def create(self) -> None:
        private_dir(self.folder)
