"""What the chat UI tests share: the app and server fixtures, `gradio_client` clients, and a
browser-like session over Gradio's queue protocol (for edit events and bytes on the wire).
Test modules import the fixtures they use from here."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client

from app.application import App
from app.config.settings import AppSettings, SamplingSettings
from app.engine import Engine

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Past the end-of-sequence token: the tiny model's random weights would otherwise stop anywhere.
LONG = SamplingSettings(max_tokens=480, ignore_eos=True)
SHORT = SamplingSettings(max_tokens=16, ignore_eos=True)


def make_ui_app(make_app: Any, engine: Engine, sampling: SamplingSettings = SHORT) -> App:
    return make_app(engine, AppSettings(sampling=sampling))


@pytest.fixture(name="app")
def app_fixture(engine: Engine, make_app: Any) -> App:
    return make_ui_app(make_app, engine)


@pytest.fixture(name="server")
def server_fixture(app: App, start_server: Any) -> Any:
    return start_server(app)


@pytest.fixture(name="connect")
def connect_fixture(start_server: Any) -> Any:
    """connect(server, lang=None) -> gradio_client.Client; every client is closed before its server stops
    (an open client keeps a heartbeat stream that holds the server's shutdown)."""
    clients: list[Client] = []

    def make(server: Any, lang: str | None = None) -> Client:
        headers = {"Accept-Language": lang} if lang else None
        clients.append(Client(server.url, verbose=False, headers=headers))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def texts(chatbot: list[dict]) -> list[tuple[str, str]]:
    """(role, text) of each chatbot bubble."""
    return [(m["role"], "".join(part.get("text", "") for part in m["content"])) for m in chatbot]


class QueueSession:
    """One browser-like session over Gradio's queue: join an event, read its server-sent events."""

    def __init__(self, url: str, lang: str = "en") -> None:
        self.url = url
        self.session_hash = uuid.uuid4().hex[:11]
        self.headers = {"Accept-Language": lang}
        self.config = httpx.get(f"{url}/config").json()

    def fn_index(self, api_name: str) -> int:
        return next(d["id"] for d in self.config["dependencies"] if d.get("api_name") == api_name)

    def run(self, api_name: str, data: list, event_data: dict | None = None) -> list[tuple[int, dict]]:
        """All messages of one event as (bytes on the wire, message), until it completes."""
        body = {
            "data": data,
            "event_data": event_data,
            "fn_index": self.fn_index(api_name),
            "trigger_id": None,
            "session_hash": self.session_hash,
        }
        event_id = httpx.post(f"{self.url}/gradio_api/queue/join", json=body, headers=self.headers).json()["event_id"]
        messages = []
        params = {"session_hash": self.session_hash}
        with httpx.stream(
            "GET", f"{self.url}/gradio_api/queue/data", params=params, headers=self.headers, timeout=120
        ) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != event_id:
                    continue
                messages.append((len(line.encode("utf-8")), message))
                if message.get("msg") == "process_completed":
                    return messages
        raise AssertionError("the event stream ended before the event completed")
