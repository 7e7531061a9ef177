"""Quantized versions of a Hub repo that is not in the catalog: repos named like it with a
quantization after the name (`<name>-AWQ`, `<name>-GPTQ-Int4`, `<name>-FP8`), by its author or
others, found through the app's Hub search (a child process, with its offline and source rules)."""

from __future__ import annotations

import re

from app.errors import UserError
from app.models.cache import ModelStore
from app.models.hub_search import search_hub
from app.models.sources import Source

# The name parts that mark weights vLLM loads quantized (GGUF is not one: vLLM needs safetensors).
QUANT_MARKERS = frozenset({"awq", "gptq", "fp8", "int4", "int8", "w4a16", "w8a8"})
# Hits looked through: the search matches the name anywhere, fine-tunes included.
SIBLING_POOL = 50
MAX_SIBLINGS = 4


def quantized_siblings(repo_id: str, source: Source, store: ModelStore) -> list[str]:
    """Quantized versions of `repo_id` on the source, its author's first, then the most downloaded.
    Empty when the search cannot run (offline, ModelScope): the fit check stands without them."""
    owner, _, name = repo_id.partition("/")
    try:
        hits = search_hub(name, source, store, limit=SIBLING_POOL)
    except UserError:
        return []
    prefix = name.lower() + "-"
    found = [
        h.repo_id
        for h in hits
        if h.repo_id.lower() != repo_id.lower() and _is_quantized_version(h.repo_id.rpartition("/")[2].lower(), prefix)
    ]
    # A stable sort keeps the search's most-downloaded order within each group.
    found.sort(key=lambda r: r.partition("/")[0].lower() != owner.lower())
    return found[:MAX_SIBLINGS]


def _is_quantized_version(name: str, prefix: str) -> bool:
    """`<name>-GPTQ-Int4`, `<name>-FP8-Dynamic`; not a fine-tune's (`<name>-chat-AWQ`)."""
    return name.startswith(prefix) and re.split(r"[-_.]", name[len(prefix) :])[0] in QUANT_MARKERS
