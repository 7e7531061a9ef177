"""How a tool call is drawn in the chat: a collapsible block (the chatbot's metadata message)
titled with the tool and how the call ended, holding the arguments and the result."""

from __future__ import annotations

import json
from typing import Any

from app.i18n import translate

# The page shows the start of a long result; the model was given (and the export keeps) all of it.
SHOWN_RESULT_CHARS = 4000


def call_block(name: str, arguments: str, state: str, result: str, lang: str) -> dict[str, Any]:
    """One call as a chatbot message; open (with a spinner) while it waits or runs."""
    body = [f"**{translate('chat_tools.arguments', lang)}**\n\n```json\n{_pretty(arguments)}\n```"]
    if result:
        shown = result if len(result) <= SHOWN_RESULT_CHARS else result[:SHOWN_RESULT_CHARS] + "…"
        body.append(f"**{translate('chat_tools.result', lang)}**\n\n```text\n{_fenced(shown)}\n```")
    title = translate("chat_tools.block_title", lang, tool=name, state=translate(f"chat_tools.state_{state}", lang))
    pending = state in ("waiting", "running")
    return {
        "role": "assistant",
        "content": "\n\n".join(body),
        "metadata": {"title": title, "status": "pending" if pending else "done"},
    }


def _pretty(arguments: str) -> str:
    try:
        return _fenced(json.dumps(json.loads(arguments), ensure_ascii=False, indent=2))
    except ValueError:
        return _fenced(arguments)


def _fenced(text: str) -> str:
    # A fence inside the text would end the code block early.
    return text.replace("```", "ˋˋˋ")
