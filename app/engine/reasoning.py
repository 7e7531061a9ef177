"""A reply's thinking, told apart from its answer the way `vllm serve --reasoning-parser` does.

The chat keeps a reply as one text with the thinking between <think> tags, as most reasoning
models write it, and the page folds what is between them. Models whose chat template opens
<think> itself (DeepSeek-R1 distills, Qwen3) never write the opening tag, so the page could not
fold their thinking until it ended. vLLM's reasoning parser for the model's family knows where
thinking starts and ends, from the prompt and the token ids; this puts the tags back where it
says, so thinking is folded from the first token, for local and remote models alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class ThinkingClock:
    """How long a reply thought, read from its tagged text as it streams: from the step that
    opened the thinking to the one that closed it, in the reply's own seconds (`elapsed` of its
    steps). A reply that thinks again later (between tool calls) adds up its spells."""

    def __init__(self) -> None:
        self._open_since: float | None = None
        self._total: float | None = None
        self._tail = ""  # a tag may be split between two steps

    def feed(self, text: str, elapsed: float) -> None:
        window, position = self._tail + text, 0
        while (found := window.find(THINK_CLOSE if self._open_since is not None else THINK_OPEN, position)) >= 0:
            if self._open_since is None:
                self._open_since, position = elapsed, found + len(THINK_OPEN)
            else:
                self._total = (self._total or 0.0) + elapsed - self._open_since
                self._open_since, position = None, found + len(THINK_CLOSE)
        self._tail = window[max(position, len(window) - len(THINK_CLOSE) + 1) :]

    def seconds(self, elapsed: float) -> float | None:
        """The thinking so far (a spell still open counts up to `elapsed`); None if it never began."""
        if self._open_since is None:
            return self._total
        return (self._total or 0.0) + max(0.0, elapsed - self._open_since)


def parser_class(reasoning_parser: str | None, tokenizer: Any, model_name: str) -> Any:
    """vLLM's reply parser for this reasoning parser name over the model's tokenizer, or None
    for a model without one. Raises vLLM's own error for a name or tokenizer that cannot work."""
    if not reasoning_parser:
        return None
    from vllm.parser.parser_manager import ParserManager

    return ParserManager.get_parser(reasoning_parser_name=reasoning_parser, model_name=model_name, tokenizer=tokenizer)


class ReplySplit:
    """One reply's stream, turned into tagged text by a fresh instance of the model's parser."""

    def __init__(
        self,
        parser_cls: Any,
        tokenizer: Any,
        model_config: Any,
        prompt_token_ids: Sequence[int],
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        # The template's arguments decide for some parsers (Qwen3's reads `enable_thinking`), as
        # they do in vLLM's server.
        kwargs = dict(template_kwargs or {})
        self._parser = parser_cls(tokenizer, None, chat_template_kwargs=kwargs, model_config=model_config)
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
