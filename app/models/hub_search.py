"""Searching the Hub (or a mirror) for text-generation models, and what to suggest for a repo id
that does not exist. The query runs in app.models.hub_child, like downloads, so it goes through
the chosen source with the same token rules."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from app.errors import UserError
from app.models.cache import ModelStore
from app.models.hub_process import request_source, run_child
from app.models.sources import Source

SEARCH_LIMIT = 20
# Hits looked through for names close to a mistyped repo id.
SUGGEST_POOL = 50
MAX_SUGGESTIONS = 3
MAX_QUERY_CHARS = 100


@dataclass(frozen=True)
class HubHit:
    repo_id: str
    downloads: int
    likes: int
    last_modified: str | None  # ISO date and time
    gated: bool


def search_hub(
    query: str, source: Source, store: ModelStore, limit: int = SEARCH_LIMIT, timeout: float = 60
) -> list[HubHit]:
    """Text-generation models matching `query`, most downloaded first."""
    source.require_online("browser.offline_search")
    query = " ".join(query.split())[:MAX_QUERY_CHARS]
    if not query:
        raise UserError("models.pick_model")
    if source.kind == "modelscope":
        raise UserError("browser.search_modelscope")
    request = {
        "op": "search",
        "query": query,
        "limit": limit,
        "repo": "",
        "revision": "",
        **request_source(source, store),
    }
    events = run_child(source, store, request, timeout)
    last = events[-1] if events else {"event": "error", "kind": "crashed"}
    if last["event"] != "search":
        if last.get("kind") == "offline":
            # One sentence; the caller keeps showing the catalog and what is cached.
            raise UserError("browser.search_offline", source=source.describe())
        raise UserError(
            "models.err_unknown",
            repo=query,
            source=source.describe(),
            revision="",
            url="",
            detail=str(last.get("detail", ""))[:300],
        )
    return [
        HubHit(m["id"], int(m["downloads"]), int(m["likes"]), m.get("last_modified"), bool(m["gated"]))
        for m in last["models"]
    ]


def suggestions(repo_id: str, source: Source, store: ModelStore) -> list[str]:
    """Existing repo ids close to a mistyped one, ranked by likeness: the Hub's search for the name's
    first word and, when the typo is in that word, for the owner's repos."""
    owner, _, name = repo_id.rpartition("/")
    word = re.split(r"[-_ ]", name, maxsplit=1)[0] or name
    for query in dict.fromkeys(q for q in (word, f"{owner}/" if owner else "") if q):
        try:
            hits = search_hub(query, source, store, limit=SUGGEST_POOL)
        except UserError:
            return []
        by_lower = {h.repo_id.lower(): h.repo_id for h in hits}
        close = difflib.get_close_matches(repo_id.lower(), list(by_lower), n=MAX_SUGGESTIONS, cutoff=0.6)
        if close:
            return [by_lower[c] for c in close]
    return []
