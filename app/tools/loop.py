"""The tool loop of one chat turn: generate, read the calls, ask the user, run, send the results
back, and generate again, until a reply calls no tool or the rounds limit is reached (the last
round is then offered no tools, so the model answers with what it has).

The consumer (the chat tab) draws the steps and saves each round (`RoundEnd`) as a reply with
its calls; on Stop it saves what `open_calls` says was in flight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from app.config.settings import SamplingSettings
from app.engine.reasoning import THINK_OPEN
from app.engine.types import ChatDelta, ChatEngine, ChatOptions
from app.errors import UserError
from app.history.records import CallState, ToolCallRecord
from app.history.turns import answer_text, tool_round_messages
from app.i18n import translate
from app.tools.calls import (
    CallReader,
    OfferedTool,
    ParsedCall,
    check_call,
    fit_result,
    parse_forced,
    required_schema,
)
from app.tools.host import Decision, PendingCall, ToolHost

WAITING = "waiting"  # for the user's answer
RUNNING = "running"


@dataclass(frozen=True)
class CallView:
    """A call of the current round as the page shows it."""

    call_id: str
    server: str
    name: str
    arguments: str
    state: str  # WAITING, RUNNING or a CallState
    result: str = ""

    def record(self) -> ToolCallRecord:
        state = CallState(self.state) if self.state in set(CallState) else CallState.STOPPED
        result = self.result if state != CallState.STOPPED else ""
        return ToolCallRecord(self.call_id, self.name, self.arguments, state, result, self.server)


@dataclass(frozen=True)
class TextStep:
    delta: ChatDelta


@dataclass(frozen=True)
class CallsStep:
    text: str
    calls: tuple[CallView, ...]


@dataclass(frozen=True)
class RoundEnd:
    """A round whose calls all have their results: save it; the next round follows."""

    text: str
    calls: tuple[ToolCallRecord, ...]
    last: ChatDelta


Step = TextStep | CallsStep | RoundEnd


class ToolLoop:
    def __init__(
        self,
        engine: ChatEngine,
        host: ToolHost,
        session: str,
        lang: str,
        template_kwargs: dict[str, Any] | None = None,
        first_choice: Literal["auto", "required"] = "auto",
        thinking_budget: int | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.session = session
        self.lang = lang
        self.template_kwargs = tuple((template_kwargs or {}).items())
        self.first_choice = first_choice
        self.thinking_budget = thinking_budget
        self._calls: list[CallView] = []
        self._context_used = 0
        # The round being generated: how its text is read (`shown`).
        self._reader: CallReader | None = None
        self._forced = False

    def shown(self, text: str) -> str:
        """A round's text as the page shows it while it streams: its thinking, then its words
        without the markup of its calls, which show as blocks once the round is read (a forced
        round is its calls alone). Asked only when the page is updated, not at every token."""
        answer = answer_text(text)
        if answer == text and THINK_OPEN in text:
            return text  # still thinking
        words = "" if self._forced or self._reader is None else self._reader.words(answer)
        return text[: len(text) - len(answer)] + words

    def open_calls(self) -> tuple[ToolCallRecord, ...]:
        """The current round's calls, for saving a stopped round (unfinished ones as stopped)."""
        return tuple(c.record() for c in self._calls)

    async def run(self, messages: list[dict[str, Any]], sampling: SamplingSettings) -> AsyncIterator[Step]:
        tools = await self.host.offered_tools()
        messages = list(messages)
        for round_number in range(self.host.settings.max_rounds + 1):
            offered = tools if round_number < self.host.settings.max_rounds else []
            forced = bool(offered) and round_number == 0 and self.first_choice == "required"
            reader = CallReader(_parser_name(self.engine), self.engine.tokenizer, [] if forced else offered)
            self._reader, self._forced = reader, forced
            options = ChatOptions(
                tools=tuple(t.as_openai() for t in offered),
                template_kwargs=self.template_kwargs,
                json_schema=required_schema(offered) if forced else None,
                skip_special_tokens=reader.skip_special_tokens,
                thinking_budget=self.thinking_budget,
            )
            text, last = "", None
            async for delta in self.engine.stream_chat(messages, sampling, options=options):
                text += delta.text
                last = delta
                yield TextStep(delta)
            if last is None:
                return
            # Models that think write the calls after the reasoning.
            answer = answer_text(text)
            content, parsed = parse_forced(answer.strip()) if forced else reader.read(answer)
            if not parsed:
                return
            self._calls = [CallView(c.call_id, "", c.name, c.arguments, WAITING) for c in parsed]
            self._context_used = last.prompt_tokens + last.completion_tokens
            for index, call in enumerate(parsed):
                async for step in self._run_call(index, call, offered, text):
                    yield step
            records = self.open_calls()
            self._calls = []
            # Saved and shown: the reasoning and the text around the calls, not the calls' markup.
            yield RoundEnd(text[: len(text) - len(answer_text(text))] + content, records, last)
            messages += tool_round_messages(content, records)

    async def _run_call(
        self, index: int, call: ParsedCall, offered: list[OfferedTool], text: str
    ) -> AsyncIterator[Step]:
        tool, arguments, error = check_call(call, offered, self.lang)
        if tool is None:
            self._set(index, state=CallState.ERROR, result=error or "")
            yield CallsStep(text, tuple(self._calls))
            return
        self._set(index, server=tool.server)
        yield CallsStep(text, tuple(self._calls))
        pending = PendingCall(call.call_id, tool.server, tool.server_tool, call.arguments)
        decision = await self.host.ask(self.session, pending)
        if decision == Decision.DENY:
            self._set(index, state=CallState.DENIED, result=translate("tools.denied_result", self.lang))
            yield CallsStep(text, tuple(self._calls))
            return
        self._set(index, state=RUNNING)
        yield CallsStep(text, tuple(self._calls))
        try:
            outcome = await self.host.call(tool.server, tool.server_tool, arguments)
        except UserError as exc:
            self._set(index, state=CallState.ERROR, result=exc.message(self.lang))
        else:
            room = self._room()
            result = fit_result(outcome.text, self.engine.tokenizer, room, self.lang)
            self._set(index, state=CallState.ERROR if outcome.is_error else CallState.DONE, result=result)
        yield CallsStep(text, tuple(self._calls))

    def _set(self, index: int, **fields: Any) -> None:
        self._calls[index] = dataclasses.replace(self._calls[index], **fields)

    def _room(self) -> int:
        """Tokens left in the context for a result: after the prompt, the reply, and the results
        of this round so far."""
        used = self._context_used + sum(self._tokens(c.result) for c in self._calls)
        return max(0, (self.engine.max_model_len or 0) - used)

    def _tokens(self, text: str) -> int:
        tokenizer = self.engine.tokenizer
        return len(tokenizer.encode(text, add_special_tokens=False)) if tokenizer is not None and text else 0


def _parser_name(engine: ChatEngine) -> str:
    return engine.settings.tool_call_parser if engine.settings is not None else ""


def tools_supported(engine: ChatEngine) -> bool:
    """Whether the loaded model can be offered tools here (a tool-call parser for its family, and
    an in-process engine: a remote server returns calls as data, not text)."""
    return engine.capabilities.tools


def thinking_budget_applies(engine: ChatEngine) -> bool:
    """Whether vLLM can end the loaded model's thinking after a budget: its engine runs with a
    reasoning parser that knows the model's thinking tags (vLLM's reasoning config)."""
    return engine.capabilities.thinking_budget


def thinking_switch_applies(engine: ChatEngine) -> bool:
    """Whether the loaded model's chat template takes `enable_thinking` (Qwen3 and its kin)."""
    return engine.capabilities.thinking_switch
