"""Attached files in the prompt: each document's text under its file name, pictures as images.

A document goes before the user's words, between a line that names it and a line that closes
it, so the model (and a reader of the prompt) knows which text came from which file. Pictures
become `image_pil` parts, which vLLM's chat renderer turns into the model's image input with
the model's own placeholders.

Files are counted in the loaded model's own tokenizer when attached; one that cannot fit in the
context is refused then, with both numbers, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from app.attachments.files import AttachmentKind, FileContent, check_size, read_file
from app.attachments.images import pil_image
from app.attachments.store import Attachment, AttachmentFiles
from app.errors import UserError


class TokenCounter(Protocol):
    """What attaching needs from the engine: its tokenizer, context and image limit. The remote
    engine (app.remote) has neither a tokenizer nor pictures here: its files are not counted
    (the server refuses a prompt too long) and pictures are refused."""

    @property
    def model_name(self) -> str | None: ...

    @property
    def max_model_len(self) -> int | None: ...

    @property
    def images_per_prompt(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...


def file_part(name: str, text: str) -> str:
    return f"[File: {name}]\n{text}\n[End of file: {name}]"


def attach(engine: TokenCounter, name: str, data: bytes, limit_mb: float) -> tuple[FileContent, Attachment]:
    """Read a file for the next message, count it, and check that the loaded model can take it."""
    check_size(name, len(data), limit_mb)
    content = read_file(name, data)
    if engine.model_name is None:
        raise UserError("engine.no_model")
    if content.kind == AttachmentKind.IMAGE:
        check_images(engine, 1)
        return content, Attachment.of(content)
    tokens = _count(engine, file_part(content.name, content.text))
    max_len = engine.max_model_len or 0
    if tokens and tokens >= max_len:
        raise UserError("attachments.too_long", name=content.name, tokens=tokens, max_len=max_len)
    return content, Attachment.of(content, tokens)


def check_images(engine: TokenCounter, count: int) -> None:
    """Refuse pictures for a model that cannot see them, or more than it takes at once."""
    if count <= 0:
        return
    limit = getattr(engine, "images_per_prompt", 0)
    if limit <= 0:
        raise UserError("attachments.no_vision", model=engine.model_name or "?")
    if count > limit:
        raise UserError("attachments.too_many_images", model=engine.model_name or "?", count=count, limit=limit)


def check_fits(engine: TokenCounter, text: str, attachments: Sequence[Attachment]) -> None:
    """The message with its files must leave room in the context: refused before sending."""
    files = sum(a.tokens for a in attachments)
    if not files:
        return
    tokens = files + _count(engine, text)
    max_len = engine.max_model_len or 0
    if tokens >= max_len:
        raise UserError("attachments.overflow", tokens=tokens, max_len=max_len, count=len(attachments))


def _count(engine: TokenCounter, text: str) -> int:
    count = getattr(engine, "count_tokens", None)
    return count(text) if count is not None else 0


def message_content(text: str, attachments: Sequence[Attachment], files: AttachmentFiles | None) -> Any:
    """A user message as the renderer takes it: a string, or parts when it carries pictures."""
    documents = [file_part(a.name, a.text) for a in attachments if a.kind == AttachmentKind.TEXT]
    body = "\n\n".join([*documents, text]) if documents else text
    images = [a for a in attachments if a.kind == AttachmentKind.IMAGE]
    if not images:
        return body
    if files is None:
        raise ValueError("pictures in a prompt need the attachment folder")
    parts: list[dict[str, Any]] = [{"type": "image_pil", "image_pil": pil_image(files.read(a))} for a in images]
    return [*parts, {"type": "text", "text": body}]
