"""The model architectures vLLM runs, read from its model registry's own table without importing
vLLM: importing the registry starts vLLM's whole import (5-10 s on a small machine), which every
`download` command and the first plan in the page would otherwise wait for."""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

# Where vLLM's registry is, inside the vllm package (finding a submodule would import its parents).
REGISTRY_FILE = ("model_executor", "models", "registry.py")
# The table vLLM builds its ModelRegistry from: a dict of its per-kind tables.
TABLE = "_VLLM_MODELS"


@functools.cache
def supported_architectures() -> frozenset[str]:
    """What `ModelRegistry.get_supported_archs()` returns (without plugins, which only an engine
    start loads). Falls back to importing the registry if its table is not where it was."""
    archs = _read_table()
    if archs:
        return archs
    from vllm.model_executor.models import ModelRegistry

    return frozenset(ModelRegistry.get_supported_archs())


def _read_table() -> frozenset[str]:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    registry = Path(next(iter(spec.submodule_search_locations)), *REGISTRY_FILE)
    try:
        tree = ast.parse(registry.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    tables: dict[str, ast.Dict] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    tables[target.id] = node.value
    return frozenset(_keys(tables, TABLE, set()))


def _keys(tables: dict[str, ast.Dict], name: str, seen: set[str]) -> set[str]:
    """The string keys of the dict literal `name`, with those of the tables it unpacks (`**other`)."""
    if name in seen or name not in tables:
        return set()
    seen.add(name)
    keys: set[str] = set()
    for key, value in zip(tables[name].keys, tables[name].values, strict=True):
        if key is None and isinstance(value, ast.Name):
            keys |= _keys(tables, value.id, seen)
        elif isinstance(key, ast.Constant) and isinstance(key.value, str):
            keys.add(key.value)
    return keys
