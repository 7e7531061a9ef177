"""Where downloads come from (the Hub, a mirror, ModelScope) and the user's Hugging Face token."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import SettingsError, UserError
from app.settings import AppSettings

SOURCES = ("huggingface", "mirror", "modelscope")
HF_HOME_PAGE = "https://huggingface.co"


@dataclass(frozen=True)
class Source:
    """Where a download comes from, and the token sent there (None: no token is sent)."""

    kind: str  # "huggingface", "mirror" or "modelscope"
    endpoint: str | None = None  # None: the library's default (HF_ENDPOINT, or the Hub itself)
    token: str | None = field(default=None, repr=False)

    @property
    def page_host(self) -> str:
        return "https://www.modelscope.cn/models" if self.kind == "modelscope" else HF_HOME_PAGE

    def describe(self) -> str:
        return self.endpoint or {"huggingface": "huggingface.co", "modelscope": "modelscope.cn"}.get(self.kind, "")


def source_from_settings(settings: AppSettings, token: str | None) -> Source:
    """The source the user chose. The Hugging Face token goes to a mirror only if they allowed it."""
    kind = settings.download_source
    if kind not in SOURCES:
        raise SettingsError("settings.bad_choice", name="download_source", value=kind, choices=", ".join(SOURCES))
    if kind == "mirror":
        endpoint = settings.mirror_endpoint.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", endpoint):
            raise UserError("models.bad_mirror", endpoint=endpoint)
        return Source("mirror", endpoint, token if settings.send_token_to_mirror else None)
    if kind == "modelscope":
        return Source("modelscope")
    # HF_ENDPOINT set in the environment is a mirror too (common in China): same rule for the token.
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    if endpoint and endpoint != HF_HOME_PAGE and not settings.send_token_to_mirror:
        token = None
    return Source("huggingface", endpoint, token)


class TokenStore:
    """The user's Hugging Face token in a file only they can read (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def save(self, token: str) -> None:
        token = token.strip()
        if not token or any(c.isspace() for c in token):
            raise UserError("models.bad_token_format")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token)
        os.chmod(tmp, 0o600)  # in case the file existed with wider permissions
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def token(self) -> str | None:
        """Ours, else the one the Hugging Face tools keep (HF_TOKEN or `hf auth login`)."""
        from huggingface_hub import get_token

        return self.load() or get_token()
