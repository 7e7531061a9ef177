"""Attached files in exported conversations, and back: the JSON lists each file whole (its
bytes in base64, so the export is the whole chat), the Markdown names them."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from app.attachments.content import AttachmentKind
from app.attachments.files import read_file
from app.attachments.store import Attachment, AttachmentFiles
from app.errors import UserError
from app.history.imports import ImportedFile
from app.i18n import translate


def attachment_entries(attachments: Sequence[Attachment], files: AttachmentFiles) -> dict[str, Any]:
    """The `attachments` key of one exported message (nothing for a message without files)."""
    if not attachments:
        return {}
    return {
        "attachments": [
            {
                "name": a.name,
                "kind": a.kind.value,
                "mime": a.mime,
                "size": a.size,
                "sha256": a.sha256,
                "tokens": a.tokens,
                "text": a.text,
                "data": base64.b64encode(files.read(a)).decode("ascii"),
            }
            for a in attachments
        ]
    }


def attachments_markdown(attachments: Sequence[Attachment], lang: str) -> list[str]:
    """One line naming a message's files, for the Markdown export (which carries no bytes)."""
    if not attachments:
        return []
    names = ", ".join(
        f"{a.name} ({translate('attachments.kind_' + a.kind.value, lang)})"
        if a.kind == AttachmentKind.IMAGE
        else a.name
        for a in attachments
    )
    return [f"*{translate('attachments.listed', lang, names=names)}*\n"]


def imported_attachments(imported: Sequence[ImportedFile], files: AttachmentFiles) -> list[Attachment]:
    """Read each imported file as if it had been attached now, and keep it; any that cannot be
    read makes the whole import fail with its reason (nothing is stored)."""
    attachments = []
    for item in imported:
        try:
            content = read_file(item.name, item.data)
        except UserError as exc:
            raise UserError("conversations.bad_import", reason=exc.message("en")) from None
        files.save(content)
        attachments.append(Attachment.of(content, item.tokens))
    return attachments
