"""Who may reach this run of the app, and how: the address it listens on, the API key, the page's
login, extra host names and the web origins allowed to call the API; and the only domains media
URLs in requests may come from (--allowed-media-domains).

All of it comes from this run's flags and is never saved: a LAN run with a key and a login must
not leave a saved host behind that a plain start next day refuses, nor a key in a file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


@dataclass(frozen=True)
class Access:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    ui_auth: tuple[str, str] | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    # Empty: any public host (never this computer or its network, see app.api.media_fetch).
    allowed_media_domains: tuple[str, ...] = ()

    @classmethod
    def from_flags(
        cls,
        *,
        host: str | None = None,
        port: int | None = None,
        api_key: str | None = None,
        auth: str | None = None,
        allowed_origins: str | None = None,
        allowed_hosts: str | None = None,
        allowed_media_domains: Sequence[str] | None = None,
    ) -> Access:
        if port is not None and not 1 <= port <= 65535:
            raise UserError("settings.out_of_range", name="port", value=port, low=1, high=65535)
        return cls(
            host=host or DEFAULT_HOST,
            port=port or DEFAULT_PORT,
            api_key=api_key or None,
            ui_auth=parse_ui_auth(auth) if auth is not None else None,
            allowed_origins=_comma_list(allowed_origins),
            allowed_hosts=_comma_list(allowed_hosts),
            allowed_media_domains=tuple(d.strip().lower() for d in allowed_media_domains or () if d.strip()),
        )

    def check_exposure(self) -> None:
        """A LAN must never get an open model server by accident."""
        check_exposure(self.host, self.api_key, self.ui_auth)

    @property
    def page_open_to_local_programs(self) -> bool:
        """A key guards the API only: without a login, any local program can use the page."""
        return bool(self.api_key) and self.ui_auth is None


def _comma_list(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def parse_ui_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        # Never echo the value: it may be the password itself.
        raise UserError("api.bad_auth")
    return user, password


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A host name other than localhost may resolve to any interface: treat it as exposed.
        return False


def check_exposure(host: str, api_key: str | None, ui_auth: tuple[str, str] | None) -> None:
    if not is_loopback(host) and not (api_key and ui_auth):
        raise UserError("api.exposed", host=host)
