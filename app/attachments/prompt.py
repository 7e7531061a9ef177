"""Attached files in the prompt: each document's text under its file name, pictures as images.

A document goes before the user's words, between a line that names it and a line that closes
it, so the model (and a reader of the prompt) knows which text came from which file. Pictures
become `image_pil` parts, which vLLM's chat renderer turns into the model's image input with
the model's own placeholders.

Files are counted in the loaded model's own tokenizer when attached; one that cannot fit in the
context is refused then, with both numbers, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from app.attachments.content import AttachmentKind, FileContent
from app.attachments.counting import ContextBudget, TokenCounter, check_ready, counter_of
from app.attachments.files import check_size, clean_name, read_file
from app.attachments.images import pil_image
from app.attachments.store import Attachment, AttachmentFiles
from app.errors import UserError


def file_part(name: str, text: str) -> str:
    return f"[File: {name}]\n{text}\n[End of file: {name}]"


def attach(
    engine: TokenCounter,
    name: str,
    data: bytes,
    limit_mb: float,
    images_waiting: int = 0,
    progress: Callable[[float], None] | None = None,
) -> tuple[FileContent, Attachment]:
    """Read a file for the next message, count it, and check that the loaded model can take it
    (with the `images_waiting` pictures already attached). A document is counted while it is
    read and refused once it is longer than the context; only one that fits is counted whole.
    `progress` hears the share of the file read so far."""
    name = clean_name(name)
    check_size(name, len(data), limit_mb)
    check_ready(engine, name)
    content = read_file(name, data, ContextBudget(engine, name, progress))
    if content.kind == AttachmentKind.IMAGE:
        check_images(engine, images_waiting + 1, content.name)
        return content, Attachment.of(content)
    tokens = _count(engine, file_part(content.name, content.text))
    max_len = engine.max_model_len or 0
    if tokens and tokens >= max_len:
        raise UserError("attachments.too_long", name=content.name, tokens=f"{tokens:,}", max_len=f"{max_len:,}")
    return content, Attachment.of(content, tokens)


def check_images(engine: TokenCounter, count: int, name: str | None = None) -> None:
    """Refuse pictures for a model that cannot see them, or more than it takes at once: the
    picture `name` being attached (it is then not attached), or those already attached."""
    if count <= 0:
        return
    limit = engine.capabilities.images
    model = engine.model_name or "?"
    if limit <= 0:
        if name is not None:
            raise UserError("attachments.no_vision", model=model, name=name)
        raise UserError("attachments.no_vision_attached", model=model)
    if count > limit:
        if name is not None:
            raise UserError("attachments.too_many_images", model=model, name=name, limit=f"{limit:,}")
        raise UserError("attachments.too_many_attached", model=model, count=f"{count:,}", limit=f"{limit:,}")


def check_fits(engine: TokenCounter, text: str, attachments: Sequence[Attachment]) -> None:
    """The message with its files must leave room in the context: refused before sending."""
    files = sum(a.tokens for a in attachments)
    if not files:
        return
    tokens = files + _count(engine, text)
    max_len = engine.max_model_len or 0
    if tokens >= max_len:
        raise UserError(
            "attachments.overflow", tokens=f"{tokens:,}", max_len=f"{max_len:,}", count=f"{len(attachments):,}"
        )


def _count(engine: TokenCounter, text: str) -> int:
    count = counter_of(engine)
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
