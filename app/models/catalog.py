"""The curated model catalog, read from `assets/models.toml` (data, not code).

Each entry carries the facts of its config.json that the fit arithmetic needs and its exact
weight bytes, so the Models tab says what will run on this machine with no network.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

CATALOG_FILE = Path(__file__).resolve().parent.parent.parent / "assets" / "models.toml"


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    name: str
    hf: str
    modelscope: str
    family: str
    params_b: float
    size_gb: float
    license: str
    architecture: str
    layers: int
    kv_heads: int
    head_dim: int
    max_position: int
    dtype: str
    weight_bytes: int
    gated: bool = False
    trust_remote_code: bool = False
    max_len: int = 8192
    quantized: str | None = None
    quantization: str | None = None
    variant_of: str | None = None
    vision: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None

    def repo_for(self, source: str) -> str:
        """The repo id of this entry on a download source ("modelscope" has its own ids)."""
        return self.modelscope if source == "modelscope" else self.hf

    @property
    def repo_ids(self) -> tuple[str, str]:
        return self.hf, self.modelscope

    @property
    def download_bytes(self) -> int:
        return round(self.size_gb * 1e9)


def load_catalog(path: Path = CATALOG_FILE) -> list[CatalogEntry]:
    with path.open("rb") as f:
        return [CatalogEntry(**entry) for entry in tomllib.load(f)["model"]]


def find_entry(catalog: list[CatalogEntry], name: str) -> CatalogEntry | None:
    """The entry named by its key, its Hugging Face id or its ModelScope id (any letter case)."""
    wanted = name.strip().lower()
    for entry in catalog:
        if wanted in (entry.key.lower(), entry.hf.lower(), entry.modelscope.lower()):
            return entry
    return None


def variants_of(catalog: list[CatalogEntry], entry: CatalogEntry) -> list[CatalogEntry]:
    """The published quantized variants of a full-precision entry, smallest first."""
    return sorted((e for e in catalog if e.variant_of == entry.key), key=lambda e: e.weight_bytes)


def repo_for_source(catalog: list[CatalogEntry], name: str, source: str) -> str:
    """Map a catalog key or a repo id from any source to the id on `source`; unknown ids pass through."""
    entry = find_entry(catalog, name)
    return entry.repo_for(source) if entry else name.strip()
