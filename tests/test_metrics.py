"""GET /metrics: a scrape a real Prometheus accepts, with vLLM's series and the app's own."""

from __future__ import annotations

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from app.engine import Engine


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """Family name -> {(sample name, sorted labels): value}, through Prometheus' own parser."""
    reply = httpx.get(f"{url}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(reply.text)
    }


def api_requests(metrics: dict, endpoint: str, status: int) -> float:
    key = ("vllm_chat_api_requests_total", (("endpoint", endpoint), ("status", str(status))))
    return metrics.get("vllm_chat_api_requests", {}).get(key, 0.0)


def test_metrics_parse_and_move_after_a_chat(engine: Engine, make_app, start_server) -> None:
    server = start_server(make_app(engine), ui=False)
    before = scrape(server.url)
    assert {"vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:generation_tokens",
            "vllm:time_to_first_token_seconds"} <= set(before)

    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    reply = api.chat.completions.create(model=engine.model_name, max_tokens=5, extra_body={"ignore_eos": True},
                                        messages=[{"role": "user", "content": "Hello"}])
    assert reply.usage.completion_tokens == 5
    httpx.post(f"{server.url}/v1/chat/completions", content=b"not json", headers={"Content-Type": "application/json"})
    # The perimeter's refusals count too.
    httpx.post(f"{server.url}/v1/chat/completions", content=b"{}", headers={"Content-Type": "text/plain"})

    after = scrape(server.url)
    assert api_requests(after, "/v1/chat/completions", 200) == api_requests(before, "/v1/chat/completions", 200) + 1
    assert api_requests(after, "/v1/chat/completions", 400) == api_requests(before, "/v1/chat/completions", 400) + 1
    assert api_requests(after, "/v1/chat/completions", 415) == api_requests(before, "/v1/chat/completions", 415) + 1
    # vLLM's own counters moving is checked in test_engine on a freshly loaded engine: each new
    # engine takes over the process-wide series, so the session's shared engine may not own them.
    for family in ("vllm_chat_conversations_started", "vllm_chat_downloads"):
        assert family in after


def test_unknown_api_paths_share_one_label(engine: Engine, make_app, start_server) -> None:
    server = start_server(make_app(engine), ui=False)
    for n in range(3):
        httpx.get(f"{server.url}/v1/made-up-{n}")
    metrics = scrape(server.url)
    assert api_requests(metrics, "other", 404) == 3
    assert not any("made-up" in str(key) for key in metrics["vllm_chat_api_requests"])


def test_each_app_counts_only_its_own_requests(engine: Engine, make_app, start_server) -> None:
    first, second = start_server(make_app(engine), ui=False), start_server(make_app(engine), ui=False)
    httpx.get(f"{first.url}/v1/models")
    assert api_requests(scrape(first.url), "/v1/models", 200) == 1
    assert api_requests(scrape(second.url), "/v1/models", 200) == 0
