"""Real clients on /v1 with a model whose tool-call parser is not known (a Llama language model,
whose architecture Llama versions share while calling tools differently): the `llm` CLI with tools
(chat completions with `tools`, no tool_choice) and a coding agent speaking the Anthropic API
(/v1/messages with tools and max_tokens 32,000), driven by the openai and anthropic SDKs."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import anthropic
import openai
import pytest

from app.__main__ import access_from_args, serve_parser, settings_from_args
from app.config.access import Access
from app.config.settings import AppSettings
from app.engine import Engine
from app.i18n import translate
from tests.conftest import TEST_MAX_MODEL_LEN

KEY = "clients-key-0123"
HELLO = [{"role": "user", "content": "Hello there."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
AGENT_MAX_TOKENS = 32_000


@pytest.fixture
def llama_engine(vision_engine: Engine) -> Engine:
    """The session's tiny Idefics3, whose language model is a Llama: no tool-call parser is
    known for it (one engine fewer to start than a Llama of its own)."""
    return vision_engine


def _clients(server) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    return (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0),
        anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0),
    )


def test_tools_without_a_parser_say_where_the_app_sets_one(llama_engine, make_app, start_server) -> None:
    assert llama_engine.settings.tool_call_parser == ""
    api, claude = _clients(start_server(make_app(llama_engine, access=Access(api_key=KEY))))
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model=llama_engine.model_name, messages=HELLO, tools=[WEATHER], max_tokens=4)
    assert caught.value.body["message"] == translate("api.tools_need_parser", "en", choice='"auto"')
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(
            model=llama_engine.model_name, messages=HELLO, tools=[WEATHER], tool_choice="required", max_tokens=4
        )
    assert caught.value.body["message"] == translate("api.tools_need_parser", "en", choice='"required"')
    tool = {"name": "weather", "description": "The weather.", "input_schema": WEATHER["function"]["parameters"]}
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=llama_engine.model_name, max_tokens=4, messages=HELLO, tools=[tool])
    message = caught.value.body["error"]["message"]
    assert "Settings → Engine → Tool-call parser" in message and "--tool-call-parser NAME" in message
    assert "--enable-auto-tool-choice" not in message


def test_a_max_tokens_past_the_context_is_refused_unless_the_setting_fits_it(
    llama_engine, make_app, start_server
) -> None:
    agent_request = {"model": llama_engine.model_name, "max_tokens": AGENT_MAX_TOKENS, "messages": HELLO}
    _, claude = _clients(start_server(make_app(llama_engine, access=Access(api_key=KEY))))
    # As `vllm serve` does, by default. (The SDK streams a request this long, as agents do.)
    with pytest.raises(anthropic.BadRequestError), claude.messages.stream(**agent_request) as stream:
        stream.get_final_message()

    fitting = make_app(llama_engine, settings=AppSettings(api_fit_max_tokens=True), access=Access(api_key=KEY))
    api, claude = _clients(start_server(fitting))
    with claude.messages.stream(**agent_request) as stream:
        reply = stream.get_final_message()
    assert reply.usage.input_tokens + reply.usage.output_tokens <= TEST_MAX_MODEL_LEN
    # Lowered to the room the prompt leaves: past the end of sequence, the reply runs until the
    # context is full.
    chat = api.chat.completions.create(
        model=llama_engine.model_name, messages=HELLO, max_tokens=AGENT_MAX_TOKENS, extra_body={"ignore_eos": True}
    )
    assert chat.usage.total_tokens == TEST_MAX_MODEL_LEN and chat.choices[0].finish_reason == "length"
    # A length that fits is left as asked.
    short = api.chat.completions.create(
        model=llama_engine.model_name, messages=HELLO, max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert short.usage.completion_tokens == 5


def test_the_flags_fit_max_tokens_and_name_the_media_domains_for_this_run() -> None:
    saved = AppSettings()
    args = serve_parser().parse_args(["--fit-max-tokens", "--allowed-media-domains", "Images.example", "cdn.example"])
    assert settings_from_args(args, saved).api_fit_max_tokens is True
    assert access_from_args(args).allowed_media_domains == ("images.example", "cdn.example")
    plain = serve_parser().parse_args([])
    assert settings_from_args(plain, dataclasses.replace(saved, api_fit_max_tokens=True)).api_fit_max_tokens is True
    assert settings_from_args(plain, saved).api_fit_max_tokens is False
    assert access_from_args(plain).allowed_media_domains == ()


def test_the_reworded_refusal_follows_the_callers_language_and_other_errors_pass_unchanged() -> None:
    from app.api.adapting import in_app_words

    vllms = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'

    def answer(message: str) -> dict:
        sent: list[dict] = []

        async def send(msg: dict) -> None:
            sent.append(msg)

        async def run() -> None:
            body = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
            length = str(len(body.encode())).encode()
            relay = in_app_words(send, "zh-CN")
            await relay({"type": "http.response.start", "status": 400, "headers": [(b"content-length", length)]})
            await relay({"type": "http.response.body", "body": body.encode()})

        asyncio.run(run())
        assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()
        return json.loads(sent[1]["body"])["error"]

    assert answer(vllms)["message"] == translate("api.tools_need_parser", "zh-CN", choice='"auto"')
    assert answer("Something else.")["message"] == "Something else."
