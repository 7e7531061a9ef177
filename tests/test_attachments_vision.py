"""Pictures for a vision-language model, on the real CPU engine: a tiny randomly initialised
Idefics3 (tests/tiny_vision_model.py), one engine start for the module.

A picture goes to vLLM as multimodal data through the same chat renderer the text chat uses,
and through /v1 as an OpenAI `image_url` part (vLLM's own serving layer): in both, the prompt
the engine runs carries the model's image placeholder and the decoded pixels, and a reply comes.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from app.attachments import AttachmentKind, attach, check_images
from app.config.access import Access
from app.conversations import Conversations, begin, new_turn, regenerate_turn
from app.engine import Engine
from app.errors import UserError
from tests.attachment_files import PDF_TEXT, pdf_bytes, png_bytes
from tests.tiny_vision_model import IMAGE_TOKEN

KEY = "vision-key-0123"


def _rendered(engine_loop, engine: Engine, prompt: list) -> dict:
    async def render() -> dict:
        from vllm.renderers import ChatParams

        params = ChatParams(chat_template_kwargs={"add_generation_prompt": True})  # as the engine renders it
        _, prompts = await engine.vllm.renderer.render_chat_async([prompt], params)
        return prompts[0]

    return engine_loop.run(render())


def test_a_picture_and_a_pdf_reach_the_vision_model_through_the_chat(
    vision_engine: Engine, engine_loop, tmp_path: Path
) -> None:
    assert vision_engine.capabilities.images > 0
    store = Conversations(tmp_path / "history.sqlite3")
    files = [attach(vision_engine, "chart.png", png_bytes(), 50), attach(vision_engine, "report.pdf", pdf_bytes(), 50)]
    for content, _ in files:
        store.files.save(content)
    picture, pdf = (attachment for _, attachment in files)
    assert picture.kind == AttachmentKind.IMAGE and pdf.tokens > 0
    turn = new_turn(store, None, "What does the chart show?", [picture, pdf])
    prompt = turn.prompt("", store)
    # Rendered here once before the engine renders it again to run it: with vLLM's cache of
    # processed pictures on, that second request failed (see app.engine.build).
    seen = _rendered(engine_loop, vision_engine, prompt)
    image_token = vision_engine.vllm.get_tokenizer().convert_tokens_to_ids(IMAGE_TOKEN)
    assert image_token in seen["prompt_token_ids"]
    assert len(seen["mm_placeholders"]["image"]) == 1
    assert PDF_TEXT in vision_engine.vllm.get_tokenizer().decode(seen["prompt_token_ids"])

    async def reply() -> list:
        sampling = vision_engine.resolve_sampling({"max_tokens": 6, "ignore_eos": True})
        return [d async for d in vision_engine.stream_chat(prompt, sampling)]

    deltas = engine_loop.run(reply())
    # Random weights: the tokens may be special ones that decode to no text; their count is the reply.
    assert deltas[-1].completion_tokens == 6 and deltas[-1].finish_reason == "length"
    assert deltas[-1].prompt_tokens == len(_rendered(engine_loop, vision_engine, prompt)["prompt_token_ids"])
    # After a reload the saved picture goes to the model again (a regenerated reply).
    begun = begin(store, turn, "")
    store.close()
    reopened = Conversations(tmp_path / "history.sqlite3")
    again = regenerate_turn(reopened, begun.conversation_id).prompt("", reopened)
    assert image_token in _rendered(engine_loop, vision_engine, again)["prompt_token_ids"]


def test_more_pictures_than_the_model_takes_are_refused(vision_engine: Engine) -> None:
    limit = vision_engine.capabilities.images
    with pytest.raises(UserError) as caught:
        check_images(vision_engine, limit + 1)
    assert caught.value.key == "attachments.too_many_attached"
    assert f"at most {limit:,} pictures" in caught.value.message("en")
    # Attaching one more than it takes: that one is not attached, and the sentence says so.
    with pytest.raises(UserError) as caught:
        attach(vision_engine, "extra.png", png_bytes(), 50, limit)
    assert caught.value.key == "attachments.too_many_images"
    assert "so extra.png was not attached" in caught.value.message("en")


def test_v1_takes_image_url_parts(vision_engine: Engine, make_app, start_server) -> None:
    server = start_server(make_app(vision_engine, access=Access(api_key=KEY)), ui=False)
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()

    def usage(content: list | str) -> dict:
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={
                "model": vision_engine.model_name,
                "max_tokens": 3,
                "messages": [{"role": "user", "content": content}],
            },
            timeout=120,
        )
        assert response.status_code == 200, response.text
        return response.json()["usage"]

    text_only = usage("Describe it.")
    with_picture = usage([{"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": url}}])
    # The picture adds its placeholder tokens (and the tokens around them) to the prompt.
    assert with_picture["prompt_tokens"] > text_only["prompt_tokens"]
