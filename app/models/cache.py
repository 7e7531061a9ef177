"""Models on this computer: the Hugging Face cache (shared with other tools) and our ModelScope folder.

Lists them with size and last use, deletes them through huggingface_hub's cache API,
removes partial files that interrupted downloads left behind, and resolves a repo id to
its local snapshot folder so a cached model loads without the network.
"""

from __future__ import annotations

import fnmatch
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.config.settings import AppPaths, hf_cache_dir
from app.errors import UserError

# The files vLLM loads a model from (root of the repo only: original/, onnx/, gguf/ hold other formats).
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json", "*.bin", "*.model", "*.tiktoken", "*.txt", "*.jinja", "*.py")
# .bin and .pt/.pth checkpoints duplicate the safetensors weights when both are published.
DUPLICATE_WEIGHT_PATTERNS = ("*.bin", "*.bin.index.json", "*.pt", "*.pth")
PARTIAL_SUFFIX = ".incomplete"


@dataclass(frozen=True)
class ModelStore:
    """Where downloaded models live."""

    hf_cache: Path
    modelscope: Path

    @classmethod
    def for_app(cls, paths: AppPaths) -> ModelStore:
        return cls(hf_cache=paths.hf_cache or hf_cache_dir(), modelscope=paths.cache_dir / "modelscope")

    def root(self, source: str) -> Path:
        """The folder a download source writes into."""
        return self.modelscope if source == "modelscope" else self.hf_cache

    def hf_repo_folder(self, repo_id: str) -> Path:
        return self.hf_cache / ("models--" + repo_id.replace("/", "--"))

    def modelscope_folder(self, repo_id: str) -> Path:
        return self.modelscope / repo_id


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    source: str  # "huggingface" or "modelscope"
    size_bytes: int
    last_used: float  # seconds since the epoch
    path: Path | None  # the folder to load; None while it is incomplete (being downloaded, or interrupted)
    revisions: tuple[str, ...] = ()


def select_model_files(names: list[str]) -> list[str]:
    """The files of a repo that vLLM needs: safetensors weights, config, tokenizer, generation
    config (and remote code). Never .bin duplicates or files in sub-folders such as original/."""
    root = [n for n in names if "/" not in n and any(fnmatch.fnmatch(n, p) for p in MODEL_FILE_PATTERNS)]
    safetensors = [n for n in root if n.endswith(".safetensors")]
    if safetensors:
        root = [n for n in root if not any(fnmatch.fnmatch(n, p) for p in DUPLICATE_WEIGHT_PATTERNS)]
        # Mistral-style repos also ship the same weights as one consolidated file.
        if any(not n.startswith("consolidated") for n in safetensors):
            root = [n for n in root if not (n.startswith("consolidated") and n.endswith(".safetensors"))]
    return sorted(root)


def is_weight_file(name: str) -> bool:
    return name.endswith((".safetensors", ".bin", ".pt", ".pth")) and not name.startswith("training_args")


def list_cached(store: ModelStore) -> list[CachedModel]:
    """Every model in the cache, largest first."""
    from huggingface_hub import scan_cache_dir

    models = []
    if store.hf_cache.is_dir():
        for repo in scan_cache_dir(store.hf_cache).repos:
            if repo.repo_type != "model":
                continue
            newest = max(repo.revisions, key=lambda r: r.last_modified, default=None)
            path = _complete_snapshot(store, repo.repo_id, newest.commit_hash) if newest else None
            models.append(CachedModel(repo.repo_id, "huggingface", repo.size_on_disk, repo.last_accessed, path,
                                      tuple(r.commit_hash for r in repo.revisions)))
    if store.modelscope.is_dir():
        for config in store.modelscope.glob("*/*/config.json"):
            folder = config.parent
            files = [f for f in folder.rglob("*") if f.is_file()]
            models.append(CachedModel(
                f"{folder.parent.name}/{folder.name}", "modelscope", sum(f.stat().st_size for f in files),
                max((f.stat().st_atime for f in files), default=0.0), folder,
            ))
    return sorted(models, key=lambda m: m.size_bytes, reverse=True)


def delete_cached(store: ModelStore, repo_id: str, source: str = "huggingface") -> int:
    """Delete a cached model (all its revisions); returns the bytes freed."""
    if source == "modelscope":
        folder = store.modelscope_folder(repo_id)
        if not folder.is_dir():
            raise UserError("models.not_cached", repo=repo_id)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder)
        return size
    from huggingface_hub import scan_cache_dir

    cache = scan_cache_dir(store.hf_cache)
    repo = next((r for r in cache.repos if r.repo_id == repo_id and r.repo_type == "model"), None)
    if repo is None:
        raise UserError("models.not_cached", repo=repo_id)
    strategy = cache.delete_revisions(*(r.commit_hash for r in repo.revisions))
    strategy.execute()
    # Partial files are not part of any revision; the repo is gone, so they go with it.
    for partial in partial_files(repo.repo_path):
        partial.unlink(missing_ok=True)
    return strategy.expected_freed_size


def partial_files(folder: Path) -> set[Path]:
    """Partial downloads under a folder (huggingface_hub and ModelScope both name them *.incomplete)."""
    if not folder.is_dir():
        return set()
    return {p for p in folder.rglob("*" + PARTIAL_SUFFIX) if p.is_file()}


def remove_partial_files(paths: set[Path]) -> int:
    """Remove these partial files; returns the bytes freed."""
    freed = 0
    for path in paths:
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
    return freed


def remove_orphans(store: ModelStore, busy: set[Path] = frozenset()) -> tuple[int, int]:
    """Remove partial files of interrupted downloads, except under `busy` folders (downloads running
    now). Returns (files removed, bytes freed)."""
    orphans = {
        p for root in (store.hf_cache, store.modelscope) for p in partial_files(root)
        if not any(folder in p.parents for folder in busy)
    }
    return len(orphans), remove_partial_files(orphans)


def _complete_snapshot(store: ModelStore, repo_id: str, revision: str) -> Path | None:
    try:
        return resolve_snapshot(store, repo_id, revision)
    except UserError:
        return None


def resolve_snapshot(store: ModelStore, repo_id: str, revision: str | None = None) -> Path:
    """The local folder of a cached model, found without the network (what HF_HUB_OFFLINE does).
    Raises UserError when it is not downloaded, or only partly."""
    from huggingface_hub import get_cached_repo_tree, snapshot_download
    from huggingface_hub.errors import CachedRepoTreeNotFoundError, IncompleteSnapshotError, LocalEntryNotFoundError

    if not store.hf_repo_folder(repo_id).is_dir():
        folder = store.modelscope_folder(repo_id)
        if (folder / "config.json").is_file():
            return folder
        raise UserError("models.not_cached", repo=repo_id)
    try:
        # The listing cached at download time tells which files make the snapshot complete.
        names = [f.path for f in get_cached_repo_tree(repo_id, revision=revision, cache_dir=store.hf_cache)]
        wanted: list[str] | None = select_model_files(names)
    except CachedRepoTreeNotFoundError:
        wanted = None
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=store.hf_cache,
                                      local_files_only=True, allow_patterns=wanted))
    except IncompleteSnapshotError:
        raise UserError("models.cached_incomplete", repo=repo_id) from None
    except (LocalEntryNotFoundError, ValueError):
        raise UserError("models.not_cached", repo=repo_id) from None
    if not (path / "config.json").is_file():
        raise UserError("models.cached_incomplete", repo=repo_id)
    return path
