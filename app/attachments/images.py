"""Pictures given to a message: checked by Pillow, handed to vLLM as PIL images.

A picture is decoded fully once when attached, so that a damaged or disguised file is refused
then, not when the model is asked. Pictures with more pixels than `MAX_PIXELS` are refused
before decoding: the model resizes every picture to its own input size anyway, and decoding a
huge one (or a small file that claims to be huge) would take the memory of the whole app.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from app.attachments.content import AttachmentKind, FileContent
from app.errors import UserError

# 40 megapixels: more than any camera picture a vision model is given in practice.
MAX_PIXELS = 40_000_000
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}


def read_image(name: str, data: bytes) -> FileContent:
    """A picture that decodes, within the pixel limit; `UserError` otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise UserError(
                        "attachments.image_too_large",
                        name=name,
                        width=f"{width:,}",
                        height=f"{height:,}",
                        limit=f"{MAX_PIXELS / 1e6:g}",
                    )
                mime = FORMATS.get(image.format or "")
                if mime is None:
                    raise UserError("attachments.unsupported", name=name, suffix=image.format or "?")
                image.load()
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            "attachments.image_too_large", name=name, width="?", height="?", limit=f"{MAX_PIXELS / 1e6:g}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UserError("attachments.image_broken", name=name) from None
    return FileContent(name, AttachmentKind.IMAGE, mime, data)


def pil_image(data: bytes) -> Any:
    """The picture as an RGB `PIL.Image.Image`, the form vLLM's chat renderer takes (`image_pil`
    parts). Pillow is imported only when a picture is used."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
