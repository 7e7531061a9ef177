"""Where downloads come from (the Hub, a mirror, ModelScope), the user's Hugging Face token, and
whether the app is offline: then nothing leaves this computer (no search, repo check, download,
ModelScope call or reachability probe)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from app.config.settings import AppSettings
from app.errors import SettingsError, UserError

SOURCES = ("huggingface", "mirror", "modelscope")
HF_HOME_PAGE = "https://huggingface.co"
# The variables huggingface_hub goes offline for, in the order it reads them.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class Offline(StrEnum):
    """Why the app is offline (the values name the sentences that say so)."""

    ENV = "env"  # HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set
    SETTING = "setting"  # Settings → Offline


def offline_variable() -> str | None:
    """The variable that makes huggingface_hub offline, parsed as it does. Read now, not at import as the
    library does, so that the environment our Hub child processes would inherit is the one obeyed."""
    from huggingface_hub import constants

    name = next((n for n in OFFLINE_VARIABLES if os.environ.get(n)), None)
    return name if name and os.environ[name].upper() in constants.ENV_VARS_TRUE_VALUES else None


def offline_reason(setting: bool = False) -> Offline | None:
    """Whether the app is offline (`setting`: AppSettings.offline), and why; None when online."""
    if offline_variable():
        return Offline.ENV
    return Offline.SETTING if setting else None


def refuse_if_offline(setting: bool, key: str = "models.offline") -> None:
    """Raise the sentence `<key>_env` or `<key>_setting` when offline, before anything is sent."""
    reason = offline_reason(setting)
    if reason is not None:
        raise UserError(f"{key}_{reason}", variable=offline_variable() or "")


def env_endpoint() -> str | None:
    """HF_ENDPOINT when it points somewhere other than huggingface.co (a mirror, as is common in China)."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    return endpoint if endpoint != HF_HOME_PAGE else None


def token_choice_applies(kind: str) -> bool:
    """Whether "send my token to the mirror" means anything for this source: a mirror, or Hugging Face
    through HF_ENDPOINT."""
    return kind == "mirror" or (kind == "huggingface" and env_endpoint() is not None)


@dataclass(frozen=True)
class Source:
    """Where a download comes from, and the token sent there (None: no token is sent)."""

    kind: str  # "huggingface", "mirror" or "modelscope"
    endpoint: str | None = None  # None: the library's default (HF_ENDPOINT, or the Hub itself)
    token: str | None = field(default=None, repr=False)
    # The user has a token, but the endpoint is a mirror they did not allow it to go to.
    token_withheld: bool = False
    # Settings → Offline was on when the source was chosen (HF_HUB_OFFLINE is checked at each call).
    offline: bool = False

    @property
    def page_host(self) -> str:
        return "https://www.modelscope.cn/models" if self.kind == "modelscope" else HF_HOME_PAGE

    def describe(self) -> str:
        return self.endpoint or {"huggingface": "huggingface.co", "modelscope": "modelscope.cn"}.get(self.kind, "")

    def require_online(self, key: str = "models.offline") -> None:
        """Every call to this source checks this first: offline, nothing is sent."""
        refuse_if_offline(self.offline, key)


def source_from_settings(settings: AppSettings, token: str | None) -> Source:
    """The source the user chose. The Hugging Face token goes to a mirror only if they allowed it."""
    kind = settings.download_source
    if kind not in SOURCES:
        raise SettingsError("settings.bad_choice", name="download_source", value=kind, choices=", ".join(SOURCES))
    if kind == "modelscope":
        return Source("modelscope", offline=settings.offline)
    if kind == "mirror":
        endpoint = settings.mirror_endpoint.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", endpoint):
            raise UserError("models.bad_mirror", endpoint=endpoint)
    else:
        # HF_ENDPOINT set in the environment is a mirror too (common in China): same rule for the token.
        endpoint = env_endpoint()
    withheld = bool(token) and endpoint is not None and not settings.send_token_to_mirror
    return Source(kind, endpoint, None if withheld else token, token_withheld=withheld, offline=settings.offline)


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
