"""Fetching a media URL from a request (an `image_url`, an Anthropic image `source`, a Responses
`input_image`) from the public internet only.

A request may come from any API client, or from a web page whose text reached a chat: the URL
it names must not make the app request this computer (127.0.0.1, localhost), the user's
network (10/8, 192.168/16, fc00::/7, ...) or a cloud metadata service (169.254.169.254,
fd00:ec2::254). So, for every hop, redirects included:
- the scheme is http or https, and the host one of --allowed-media-domains when those are given;
- the host is resolved once and every address it has must be public unicast (an address that
  embeds IPv4, mapped or NAT64 or 6to4, is judged by that IPv4);
- the connection goes to exactly the addresses checked: a DNS server that answers differently
  the second time (DNS rebinding) is never asked again;
- redirects are followed here, each a new hop, at most MAX_REDIRECTS;
- the body is read up to a limit, never after.
Every refusal and failure is a UserError (one sentence); nothing here knows vLLM.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from app.errors import UserError
from app.models.sources import offline_variable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses the host name has (IP strings).
Resolve = Callable[[str, int], Awaitable[list[str]]]

WEB_SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_TIMEOUT_S = 10.0
READ_CHUNK = 64 * 1024
# Cloud metadata services: link-local or unique-local already, named for the reader.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """A public unicast address: not loopback, private, link-local, multicast, reserved,
    unspecified or a metadata service, and not one that embeds such an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
        return is_public(inner)
    if address in METADATA_ADDRESSES:
        return False
    flags = (
        address.is_loopback,
        address.is_private,
        address.is_link_local,
        address.is_multicast,
        address.is_reserved,
        address.is_unspecified,
    )
    return address.is_global and not any(flags)


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


@dataclass(frozen=True)
class MediaPolicy:
    """Where media may come from this run: --allowed-media-domains (empty: any public host)."""

    allowed_domains: tuple[str, ...] = ()
    resolve: Resolve = system_resolve
    # Which addresses count as public; tests stand in a loopback address for a public one.
    public: Callable[[IPAddress], bool] = is_public
    max_redirects: int = MAX_REDIRECTS

    def with_domains(self, domains: Sequence[str]) -> MediaPolicy:
        extra = tuple(d for d in domains if d not in self.allowed_domains)
        return MediaPolicy(self.allowed_domains + extra, self.resolve, self.public, self.max_redirects)


@dataclass(frozen=True)
class Hop:
    """One URL about to be requested, with the addresses its host was checked to have."""

    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


async def check_hop(url: str, policy: MediaPolicy) -> Hop:
    """The URL's scheme, host and every address of it, as the module's docstring says."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise UserError("api.media_bad_url") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    if scheme not in WEB_SCHEMES:
        raise UserError("api.media_scheme", scheme=scheme[:20] or "none")
    if not host:
        raise UserError("api.media_bad_url")
    # Started offline (HF_HUB_OFFLINE, read as huggingface_hub reads it): nothing is fetched.
    if offline_variable() is not None:
        raise UserError("api.media_offline")
    if policy.allowed_domains and host not in {d.lower().rstrip(".") for d in policy.allowed_domains}:
        raise UserError("api.media_domain", host=host[:100], domains=", ".join(policy.allowed_domains))
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolved(host, port, policy)
    if not addresses or not all(policy.public(a) for a in addresses):
        raise UserError("api.media_private", host=host[:100])
    return Hop(url, host, port, tuple(str(a) for a in addresses))


async def _resolved(host: str, port: int, policy: MediaPolicy) -> list[IPAddress]:
    try:
        found = await policy.resolve(host, port)
    except OSError:
        raise UserError("api.media_unresolved", host=host[:100]) from None
    # A scope id (fe80::1%eth0) is link-local whatever follows it.
    return [ipaddress.ip_address(a.split("%")[0]) for a in found]


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one hop's session (one host, redirects off): the addresses checked."""

    def __init__(self, hop: Hop) -> None:
        self.hop = hop

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.hop.addresses
        ]

    async def close(self) -> None:
        return None


async def fetch_media(
    url: str, policy: MediaPolicy, *, timeout_s: float | None = None, max_bytes: int | None = None
) -> bytes:
    """The body at `url` (following checked redirects), at most `max_bytes` long."""
    for _ in range(policy.max_redirects + 1):
        hop = await check_hop(url, policy)
        try:
            next_url, body = await _get(hop, timeout_s or DEFAULT_TIMEOUT_S, max_bytes)
        except TimeoutError:
            raise UserError(
                "api.media_timeout", host=hop.host[:100], seconds=f"{timeout_s or DEFAULT_TIMEOUT_S:g}"
            ) from None
        except (aiohttp.ClientError, OSError, ValueError):
            raise UserError("api.media_failed", host=hop.host[:100]) from None
        if next_url is None:
            return body
        url = next_url
    raise UserError("api.media_redirects", host=hop.host[:100], count=policy.max_redirects)


async def _get(hop: Hop, timeout_s: float, max_bytes: int | None) -> tuple[str | None, bytes]:
    """(the redirect's target, b"") or (None, the body)."""
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(hop), use_dns_cache=False)
    # trust_env=False: no proxy from the environment, which would connect to an unchecked host.
    async with (
        aiohttp.ClientSession(connector=connector, trust_env=False) as session,
        session.get(hop.url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response,
    ):
        if response.status in REDIRECTS and "Location" in response.headers:
            return urljoin(hop.url, response.headers["Location"]), b""
        if response.status >= 400:
            raise UserError("api.media_status", host=hop.host[:100], status=response.status)
        return None, await _read_bounded(response, hop, max_bytes)


async def _read_bounded(response: aiohttp.ClientResponse, hop: Hop, max_bytes: int | None) -> bytes:
    def too_large() -> UserError:
        return UserError("api.media_too_large", host=hop.host[:100], limit=f"{(max_bytes or 0) / 2**20:,.1f}")

    if max_bytes is not None and (response.content_length or 0) > max_bytes:
        raise too_large()
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)
