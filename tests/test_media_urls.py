"""Media URLs in API requests are fetched from public hosts only (app.api.media_fetch and the
connector vLLM builds from it): never from this computer or its network, after DNS and after
every redirect, never twice-resolved, bounded; files and paths refused; data: URLs as before.

The first part drives the fetch and the connector directly against loopback servers; a policy
that counts 127.0.0.1 (only) as "public" stands in for the internet, so that a redirect from an
allowed public host to a private one (127.0.0.2) can be shown without leaving this computer.
The second part goes through the app's real /v1 on a tiny vision model.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from urllib.parse import quote

import httpx
import pytest

from app.api.media_fetch import MediaPolicy, fetch_media, is_public
from app.config.access import Access
from app.errors import UserError
from app.i18n import translate
from tests.media_server import PICTURE, media_server

KEY = "media-key-0123"
STAND_IN_PUBLIC = ipaddress.ip_address("127.0.0.1")


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test session runs offline (conftest); these tests are about an app that is online.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def names(table: dict[str, str]):
    """A resolver from a fixed table; it records every name asked."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in table:
            raise OSError("no such name")
        return [table[host]]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def loopback_is_public(**kw) -> MediaPolicy:
    return MediaPolicy(public=lambda a: a == STAND_IN_PUBLIC, **kw)


def refused(url: str, policy: MediaPolicy | None = None, **kw) -> UserError:
    with pytest.raises(UserError) as caught:
        asyncio.run(fetch_media(url, policy or MediaPolicy(), **kw))
    return caught.value


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.10",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "2002:c0a8:0101::1",
        "::7f00:1",
    ],
)
def test_addresses_of_this_computer_its_network_and_metadata_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_internet_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_loopback_urls_are_refused_before_any_request() -> None:
    with media_server() as server:
        for url in (f"{server.base}/x.png", f"http://localhost:{server.server_address[1]}/x.png"):
            error = refused(url)
            assert error.key == "api.media_private"
        assert server.requests == 0


def test_a_public_host_is_fetched_through_the_address_it_was_checked_at() -> None:
    resolve = names({"images.example": "127.0.0.1"})
    with media_server() as server:
        url = f"http://images.example:{server.server_address[1]}/x.png"
        body = asyncio.run(fetch_media(url, loopback_is_public(resolve=resolve)))
    assert body == PICTURE
    # One lookup, by the check: the connection used its answer (the system knows no such name),
    # so a DNS server cannot answer the connection differently (rebinding).
    assert resolve.asked == ["images.example"]


def test_a_name_that_resolves_to_a_private_address_is_refused() -> None:
    resolve = names({"rebind.example": "127.0.0.2"})
    with media_server("127.0.0.2") as private:
        error = refused(f"http://rebind.example:{private.server_address[1]}/x.png", loopback_is_public(resolve=resolve))
        assert error.key == "api.media_private" and "rebind.example" in error.message("en")
        assert private.requests == 0


def test_a_redirect_from_an_allowed_public_host_to_a_private_one_is_refused() -> None:
    resolve = names({"images.example": "127.0.0.1", "intranet.example": "127.0.0.2"})
    with media_server() as public, media_server("127.0.0.2") as private:
        port = public.server_address[1]
        for target in (f"{private.base}/x.png", f"http://intranet.example:{private.server_address[1]}/x.png"):
            url = f"http://images.example:{port}/redirect?to={quote(target)}"
            # Even a host the user listed: its address is private.
            listed = ("images.example", "intranet.example", "127.0.0.2")
            assert refused(url, loopback_is_public(resolve=resolve, allowed_domains=listed)).key == "api.media_private"
            # Only the domains named: the redirect's host is not one of them.
            only_images = loopback_is_public(resolve=resolve, allowed_domains=("images.example",))
            assert refused(url, only_images).key == "api.media_domain"
        assert public.requests == 4 and private.requests == 0


def test_redirects_to_files_and_endless_redirects_are_refused() -> None:
    resolve = names({"images.example": "127.0.0.1"})
    with media_server() as server:
        base = f"http://images.example:{server.server_address[1]}"
        policy = loopback_is_public(resolve=resolve)
        assert refused(f"{base}/redirect?to={quote('file:///etc/passwd')}", policy).key == "api.media_scheme"
        loop = refused(f"{base}/loop", policy)
        assert loop.key == "api.media_redirects"
        assert server.requests == 2 + policy.max_redirects
        assert refused(f"{base}/missing", policy).key == "api.media_status"


def test_only_the_allowed_domains_are_fetched() -> None:
    with media_server() as server:
        error = refused(f"{server.base}/x.png", MediaPolicy(allowed_domains=("images.example",)))
        assert error.key == "api.media_domain" and "images.example" in error.message("en")
        assert server.requests == 0


def test_the_body_is_bounded_while_it_is_read() -> None:
    resolve = names({"images.example": "127.0.0.1"})
    with media_server() as server:
        url = f"http://images.example:{server.server_address[1]}/x.png"
        assert (
            refused(url, loopback_is_public(resolve=resolve), max_bytes=len(PICTURE) - 1).key == "api.media_too_large"
        )


def test_nothing_is_fetched_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolve = names({"images.example": "127.0.0.1"})
    with media_server() as server:
        url = f"http://images.example:{server.server_address[1]}/x.png"
        assert refused(url, loopback_is_public(resolve=resolve)).key == "api.media_offline"
        assert server.requests == 0


def test_the_connector_refuses_files_and_keeps_data_urls() -> None:
    from app.api.media import MediaRefused, PublicMediaConnector

    connector = PublicMediaConnector()
    for url in ("file:///etc/passwd", "/etc/passwd"):
        with pytest.raises(MediaRefused) as caught:
            asyncio.run(connector.fetch_image_async(url))
        assert str(caught.value) == translate("api.media_local", "en")
    data_url = "data:image/png;base64," + base64.b64encode(PICTURE).decode()
    assert asyncio.run(connector.fetch_image_async(data_url)).size == (32, 24)
    assert connector.fetch_image(data_url).size == (32, 24)


# ---- through the app's /v1, on a tiny vision model -------------------------------------------


def _chat(server, model: str, url: str, lang: str = "en") -> httpx.Response:
    content = [{"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": url}}]
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}", "Accept-Language": lang},
        json={"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": content}]},
        timeout=120,
    )


def test_v1_refuses_media_urls_on_this_computer_with_one_sentence(vision_engine, make_app, start_server) -> None:
    server = start_server(make_app(vision_engine, access=Access(api_key=KEY)))
    name = vision_engine.model_name
    with media_server() as pictures:
        port = pictures.server_address[1]
        for host in ("127.0.0.1", "localhost"):
            response = _chat(server, name, f"http://{host}:{port}/x.png")
            assert response.status_code == 400, response.text
            assert response.json()["error"]["message"] == translate("api.media_private", "en", host=host)
        chinese = _chat(server, name, f"http://127.0.0.1:{port}/x.png", lang="zh-CN")
        assert chinese.json()["error"]["message"] == translate("api.media_private", "zh-CN", host="127.0.0.1")
        for path in ("file:///etc/passwd", "/etc/passwd"):
            response = _chat(server, name, path)
            assert response.status_code == 400
            assert response.json()["error"]["message"] == translate("api.media_local", "en")
        assert pictures.requests == 0
    # A picture sent as data still reaches the model.
    data_url = "data:image/png;base64," + base64.b64encode(PICTURE).decode()
    assert _chat(server, name, data_url).status_code == 200


def test_anthropic_and_responses_image_urls_take_the_same_check(vision_engine, make_app, start_server) -> None:
    import anthropic
    import openai

    server = start_server(make_app(vision_engine, access=Access(api_key=KEY)))
    expected = translate("api.media_private", "en", host="127.0.0.1")
    with media_server() as pictures:
        url = f"{pictures.base}/x.png"
        claude = anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude.messages.create(
                model=vision_engine.model_name,
                max_tokens=2,
                messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": url}}]}],
            )
        assert expected in str(caught.value)
        api = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            api.responses.create(
                model=vision_engine.model_name,
                max_output_tokens=2,
                input=[{"role": "user", "content": [{"type": "input_image", "image_url": url, "detail": "auto"}]}],
            )
        assert expected in str(caught.value)
        assert pictures.requests == 0


def test_v1_fetches_only_the_allowed_domains(vision_engine, make_app, start_server) -> None:
    server = start_server(
        make_app(vision_engine, access=Access(api_key=KEY, allowed_media_domains=("images.example",)))
    )
    with media_server() as pictures:
        response = _chat(server, vision_engine.model_name, f"{pictures.base}/x.png")
        assert response.status_code == 400
        assert response.json()["error"]["message"] == translate(
            "api.media_domain", "en", host="127.0.0.1", domains="images.example"
        )
        assert pictures.requests == 0


def test_v1_answers_say_vary_origin_once(vision_engine, make_app, start_server) -> None:
    server = start_server(make_app(vision_engine, access=Access(api_key=KEY)))
    headers = {"Authorization": f"Bearer {KEY}"}
    for extra in ({}, {"Origin": server.url}):
        response = httpx.get(f"{server.url}/v1/models", headers={**headers, **extra})
        assert response.status_code == 200
        assert response.headers.get_list("vary", split_commas=True) == ["Origin"]
