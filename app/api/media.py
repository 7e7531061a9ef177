"""vLLM's media connector for this app: media URLs in requests are fetched by
app.api.media_fetch (public addresses only, redirects checked, bounded), never by vLLM's own.

vLLM builds a connector from its MEDIA_CONNECTOR_REGISTRY, by the name in VLLM_MEDIA_CONNECTOR,
for every request that carries media: its documented extension point. Its own ("http") fetches
any address, follows redirects anywhere and checks --allowed-media-domains by name only. Chosen
here, in the connector rather than in the perimeter, because only the fetch itself sees the
redirects and the addresses it connects to; and the chat page's own pictures take this path too.

data: URLs stay vLLM's. Files and paths are refused unless vLLM's allowed_local_media_path is
set (the app never sets it). A refusal or a failed fetch is a client error, which vLLM's
serving layer answers with 400 and its message: one sentence, in the caller's language.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import vllm.envs as envs
from vllm.exceptions import VLLMClientError
from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY, MediaConnector

from app.api.errors import CALLER_LANGUAGE
from app.api.media_fetch import MediaPolicy, fetch_media
from app.errors import UserError

CONNECTOR_NAME = "vllm-chat"


class MediaRefused(VLLMClientError):
    """A media URL refused or not fetched: 400, its message as the client's sentence."""


class PublicMediaConnector(MediaConnector):
    """vLLM's connector with every http(s) fetch replaced by app.api.media_fetch's."""

    policy: ClassVar[MediaPolicy] = MediaPolicy()

    def load_from_url(self, url: str, media_io: Any, *, fetch_timeout: int | None = None) -> Any:
        if self._vllms(url):
            return super().load_from_url(url, media_io, fetch_timeout=fetch_timeout)
        return media_io.load_bytes(asyncio.run(self._fetch(url, media_io, fetch_timeout)))

    async def load_from_url_async(self, url: str, media_io: Any, *, fetch_timeout: int | None = None) -> Any:
        if self._vllms(url):
            return await super().load_from_url_async(url, media_io, fetch_timeout=fetch_timeout)
        data = await self._fetch(url, media_io, fetch_timeout)
        return await asyncio.to_thread(media_io.load_bytes, data)

    def _vllms(self, url: str) -> bool:
        """data: URLs, and files when vLLM was told a folder they may come from."""
        scheme = url[:5].lower()
        return scheme == "data:" or (scheme == "file:" and self.allowed_local_media_path is not None)

    async def _fetch(self, url: str, media_io: Any, fetch_timeout: int | None) -> bytes:
        try:
            if urlsplit(url).scheme.lower() in ("", "file"):
                raise UserError("api.media_local")
            policy = self.policy.with_domains(self.allowed_media_domains)
            return await fetch_media(url, policy, timeout_s=fetch_timeout, max_bytes=_max_bytes(media_io))
        except UserError as exc:
            raise MediaRefused(exc.message(CALLER_LANGUAGE.get())) from None


def _max_bytes(media_io: Any) -> int | None:
    """The smaller of the media kind's own limit and VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB."""
    limits = [media_io.get_max_bytes()]
    if envs.VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB > 0:
        limits.append(envs.VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB * 2**20)
    return min((limit for limit in limits if limit is not None), default=None)


def use_public_media(domains: Sequence[str]) -> None:
    """From now on vLLM fetches media, in this process, through PublicMediaConnector, allowing
    only `domains` when any are given (this run's --allowed-media-domains)."""
    bound = type(PublicMediaConnector.__name__, (PublicMediaConnector,), {"policy": MediaPolicy(tuple(domains))})
    MEDIA_CONNECTOR_REGISTRY.register(CONNECTOR_NAME)(bound)
    # Read by vLLM each time it builds a connector (its cache of variables is only ever turned
    # on in the engine's own processes, which fetch nothing).
    os.environ["VLLM_MEDIA_CONNECTOR"] = CONNECTOR_NAME
