"""A reply's thinking, told apart from its answer the way `vllm serve --reasoning-parser` does.

The chat keeps a reply as one text with the thinking between <think> tags, as most reasoning
models write it, and the page folds what is between them. Models whose chat template opens
<think> itself (DeepSeek-R1 distills, Qwen3) never write the opening tag, so the page could not
fold their thinking until it ended. vLLM's reasoning parser for the model's family knows where
thinking starts and ends, from the prompt and the token ids; this puts the tags back where it
says, so thinking is folded from the first token, for local and remote models alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class ThinkingTags:
    """Writes streamed thinking and answer as one text with the thinking between tags."""

    def __init__(self) -> None:
        self.open = False

    def add(self, thought: str, content: str) -> str:
        text = ""
        if thought:
            text += ("" if self.open else THINK_OPEN) + thought
            self.open = True
        if content:
            text += (THINK_CLOSE if self.open else "") + content
            self.open = False
        return text

    def close(self) -> str:
        """What ends the text: the closing tag of thinking that never ended."""
        closing = THINK_CLOSE if self.open else ""
        self.open = False
        return closing


def parser_class(reasoning_parser: str | None, tokenizer: Any, model_name: str) -> Any:
    """vLLM's reply parser for this reasoning parser name over the model's tokenizer, or None
    for a model without one. Raises vLLM's own error for a name or tokenizer that cannot work."""
    if not reasoning_parser:
        return None
    from vllm.parser.parser_manager import ParserManager

    return ParserManager.get_parser(
        reasoning_parser_name=reasoning_parser, model_name=model_name, tokenizer=tokenizer
    )


class ReplySplit:
    """One reply's stream, turned into tagged text by a fresh instance of the model's parser."""

    def __init__(self, parser_cls: Any, tokenizer: Any, model_config: Any, prompt_token_ids: Sequence[int]) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        self._parser = parser_cls(tokenizer, None, chat_template_kwargs={}, model_config=model_config)
        # The parser reads the request only for tool settings; this reply has no tools.
        self._request = ChatCompletionRequest(model=model_config.model if model_config else "", messages=[])
        self._prompt = list(prompt_token_ids)
        self._tags = ThinkingTags()

    def feed(self, text: str, token_ids: Sequence[int], finished: bool) -> str:
        """The text to show for this step: thinking in tags, the answer after them."""
        delta = self._parser.parse_delta(
            text, list(token_ids), self._request, prompt_token_ids=self._prompt, finished=finished
        )
        shown = "" if delta is None else self._tags.add(delta.reasoning or "", delta.content or "")
        return shown + (self._tags.close() if finished else "")
