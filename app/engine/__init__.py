"""The engine, as the rest of the app sees it: `ChatEngine` and the `Capabilities` it declares,
its states and status, the streamed deltas and the chat options; the in-process `Engine`
(app.engine.local, one vLLM AsyncLLM) and `RemoteEngine` (app.engine.remote, an OpenAI-compatible
server) behind it.

Modules inside this package import each other directly, never this face. The two engines are
imported on first use: the remote one brings the openai client (seconds to import), which the
launcher's --help, the doctor and the flag table must not wait for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from app.engine.types import (
    Capabilities,
    ChatDelta,
    ChatEngine,
    ChatOptions,
    EngineState,
    EngineStatus,
    LoadStage,
    Message,
    as_message_dict,
    content_text,
)

if TYPE_CHECKING:
    from app.engine.local import Engine
    from app.engine.processes import wait_through_cancellation
    from app.engine.remote import RemoteEngine

__all__ = [
    "Capabilities",
    "ChatDelta",
    "ChatEngine",
    "ChatOptions",
    "Engine",
    "EngineState",
    "EngineStatus",
    "LoadStage",
    "Message",
    "RemoteEngine",
    "as_message_dict",
    "content_text",
    "wait_through_cancellation",
]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        return importlib.import_module("app.engine.local").Engine
    if name == "wait_through_cancellation":
        return importlib.import_module("app.engine.processes").wait_through_cancellation
    if name == "RemoteEngine":
        return importlib.import_module("app.engine.remote").RemoteEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
