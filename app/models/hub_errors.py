"""Download failures explained: the child classifies an exception from huggingface_hub or
ModelScope into a kind, and the app turns the kind into one sentence in the user's language."""

from __future__ import annotations

import errno
from typing import Any

from app.errors import UserError
from app.models.sources import Source


def error_for(event: dict[str, Any], repo_id: str, revision: str, source: Source) -> UserError:
    """One clear sentence for a failure the child reported."""
    kind = event.get("kind", "crashed")
    params = dict(
        repo=repo_id,
        revision=revision,
        source=source.describe(),
        url=f"{source.page_host}/{repo_id}",
        detail=str(event.get("detail", ""))[:300],
    )
    if kind == "gguf_only":
        base = event.get("base")
        return UserError("browser.gguf_only" if base else "browser.gguf_only_no_base", base=base, **params)
    if kind == "gated" and source.token_withheld:
        # The saved token stayed home: asking for one again would not help.
        return UserError(f"models.err_gated_token_withheld_{source.kind}", **params)
    if kind == "gated":
        return UserError("models.err_gated_no_access" if source.token else "models.err_gated", **params)
    if kind == "repo_not_found" and not source.token and source.kind != "modelscope":
        # The Hub answers "not found" for private repos to anonymous users.
        return UserError("models.err_repo_not_found_anonymous", **params)
    known = {
        "repo_not_found",
        "revision_not_found",
        "file_not_found",
        "bad_token",
        "offline",
        "disk_full",
        "connection_dropped",
        "server_error",
        "modelscope_missing",
    }
    return UserError(f"models.err_{kind}" if kind in known else "models.err_unknown", **params)


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, detail) of an exception from huggingface_hub or ModelScope, looking through its causes."""
    import httpx2
    from huggingface_hub import errors

    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    order: list[tuple[type | tuple[type, ...], str]] = [
        (errors.GatedRepoError, "gated"),
        (errors.RevisionNotFoundError, "revision_not_found"),
        (errors.RepositoryNotFoundError, "repo_not_found"),
        (errors.RemoteEntryNotFoundError, "file_not_found"),
        (errors.OfflineModeIsEnabled, "offline"),
        ((httpx2.ConnectError, httpx2.ConnectTimeout), "offline"),
        ((httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.TimeoutException), "connection_dropped"),
    ]
    for cls, kind in order:
        if any(isinstance(e, cls) for e in chain):
            return kind, detail
    for e in chain:
        if isinstance(e, errors.HfHubHTTPError) and e.response is not None:
            status = e.response.status_code
            if status == 401:
                return "bad_token", detail
            if status in (403,) and "gated" in str(e).lower():
                return "gated", detail
            if status >= 500 or status in (408, 429):
                return "server_error", detail
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return "disk_full", detail
        if isinstance(e, OSError) and "Consistency check failed" in str(e):
            return "connection_dropped", detail
        if type(e).__name__ in ("NotExistError", "FileNotFoundError") and "modelscope" in type(e).__module__:
            return "repo_not_found", detail
        if type(e).__name__ in ("ConnectionError", "ChunkedEncodingError", "ReadTimeout"):
            return "connection_dropped", detail
    if any(isinstance(e, (errors.LocalEntryNotFoundError, errors.DryRunError)) for e in chain):
        return "offline", detail
    return "unknown", detail
