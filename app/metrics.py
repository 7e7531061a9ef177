"""Prometheus metrics: vLLM's own `vllm:` series plus the app's counters, as one scrape.

vLLM's stat logger writes into prometheus_client's global REGISTRY when the engine runs
with stats on. The app's counters live in a registry owned by each App, so building
several App objects in one process (tests) never registers a name twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AppMetrics:
    """The app's own series. Adapters and services call the methods; /metrics renders them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._api_requests = Counter(
            "vllm_chat_api_requests",
            "HTTP requests to the OpenAI-compatible and compatibility APIs, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self._conversations = Counter(
            "vllm_chat_conversations_started", "Conversations started.", registry=self.registry
        )
        self._downloads = Counter(
            "vllm_chat_downloads",
            "Model downloads that ended, by result (finished, failed, cancelled).",
            ["result"],
            registry=self.registry,
        )

    def api_request(self, endpoint: str, status: int) -> None:
        self._api_requests.labels(endpoint=endpoint, status=str(status)).inc()

    def conversation_started(self) -> None:
        self._conversations.inc()

    def download_ended(self, result: str) -> None:
        self._downloads.labels(result=result).inc()

    def watch_members(self, members: Callable[[], Iterable[MemberReading]]) -> None:
        """Per-member series of the engine pool, read from `members()` at each scrape."""
        self.registry.register(MemberCollector(members))

    def exposition(self) -> bytes:
        """The Prometheus text format: the process-wide registry (vLLM, process, GC) then ours.
        Names never overlap, so the two blocks concatenate into one valid scrape."""
        return generate_latest(REGISTRY) + generate_latest(self.registry)


@dataclass(frozen=True)
class MemberReading:
    """One engine-pool member as the metrics show it."""

    model: str
    state: str
    states: tuple[str, ...]  # every state a member can be in: each gets a 0/1 series
    memory_bytes: int


class MemberCollector(Collector):
    def __init__(self, members: Callable[[], Iterable[MemberReading]]) -> None:
        self.members = members

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "vllm_chat_model_state", "Engine-pool members: 1 for the state each is in.", labels=["model", "state"]
        )
        held = GaugeMetricFamily(
            "vllm_chat_model_memory_bytes",
            "Memory each engine-pool member is counted for (RAM on the CPU, GPU memory on a GPU).",
            labels=["model"],
        )
        for member in self.members():
            for name in member.states:
                state.add_metric([member.model, name], 1.0 if name == member.state else 0.0)
            held.add_metric([member.model], float(member.memory_bytes))
        yield state
        yield held


class RequestCounter:
    """ASGI middleware counting API requests by endpoint and final status code.

    Only the API's own paths become labels: anything else counts as "other", so that
    random URLs cannot grow the series without bound.
    """

    def __init__(self, asgi: ASGIApp, metrics: AppMetrics, endpoints: Collection[str],
                 counted: Callable[[str], bool]) -> None:
        self.asgi = asgi
        self.metrics = metrics
        self.endpoints = endpoints
        self.counted = counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.counted(scope["path"]):
            await self.asgi(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.asgi(scope, receive, send_and_note)
        finally:
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            self.metrics.api_request(endpoint, status)
