"""Files and pictures given to a message: reading them, counting them, keeping them, and
putting them into the prompt. No Gradio or HTTP here."""

from app.attachments.content import AttachmentKind, FileContent
from app.attachments.files import check_size, clean_name, read_file
from app.attachments.prompt import attach, check_fits, check_images, file_part, message_content
from app.attachments.store import Attachment, AttachmentFiles

__all__ = [
    "Attachment",
    "AttachmentFiles",
    "AttachmentKind",
    "FileContent",
    "attach",
    "check_fits",
    "check_images",
    "check_size",
    "clean_name",
    "file_part",
    "message_content",
    "read_file",
]
