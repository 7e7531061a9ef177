"""The chat's views for API clients only (gradio_client, scripts): no part of the page shows them."""

from __future__ import annotations

from app.application import App


class ChatViews:
    """Saved chats as the page's API gives them, bound to the app."""

    def __init__(self, app: App) -> None:
        self.app = app

    def history(self, conversation_id: int | None = None) -> dict:
        """A saved conversation as exported JSON (the newest one without an id); {} if there is none."""
        if conversation_id is None:
            latest = self.app.conversations.list(limit=1)
            if not latest:
                return {}
            conversation_id = latest[0].id
        return {"id": conversation_id, **self.app.conversations.export_json(conversation_id)}

    def conversations(self, search: str = "") -> list[dict]:
        """Saved conversations, newest first: id, title, updated."""
        return [{"id": c.id, "title": c.title, "updated": c.updated} for c in self.app.conversations.list(search)]
