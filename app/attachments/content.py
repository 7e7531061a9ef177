"""What an attached file is once read, and what reading it reports to: the types that the readers
(app.attachments.files, app.attachments.images), the store and the prompt share."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Protocol


class AttachmentKind(enum.StrEnum):
    TEXT = "text"
    IMAGE = "image"


@dataclass(frozen=True)
class FileContent:
    """A file as read: `text` for documents (empty for pictures)."""

    name: str
    kind: AttachmentKind
    mime: str
    data: bytes
    text: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class TextBudget(Protocol):
    """Takes a document's text as it is read (a PDF page by page) and raises `UserError` as soon
    as there is more than the model can take, so that reading stops there."""

    def take(self, text: str, done: float, pending: bool = False) -> None:
        """`done`: the share of the file read so far (0 to 1), for progress. `pending`: text that
        stands for a part not converted yet (the plain text of an HTML stretch), counted until the
        next text taken without it, which replaces it."""
