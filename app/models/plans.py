"""Planning a download: exactly which files vLLM needs, their sizes, what is cached, the model's
config.json, and whether it all fits on the disk and in memory, before anything large moves."""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config.settings import EngineSettings
from app.errors import UserError
from app.hardware import Hardware
from app.i18n import translate
from app.models.architectures import supported_architectures
from app.models.cache import ModelStore, is_weight_file, resolve_snapshot, select_model_files
from app.models.catalog import CatalogEntry, find_entry
from app.models.fit import FitReport, ModelShape, check_fit, format_bytes, read_config
from app.models.hub_errors import error_for
from app.models.hub_process import request_source, run_child
from app.models.siblings import quantized_siblings
from app.models.sources import Source, offline_reason

# Room left on the disk after a download: a completely full disk breaks everything else too.
DISK_MARGIN = 256 * 2**20
# Verdicts a smaller, quantized version would help: no fit, or a shorter context than asked.
SHORT_OF_MEMORY = frozenset({"too_big", "shorter", "cpu_too_big"})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PlannedFile:
    name: str
    size: int
    cached: bool


@dataclass(frozen=True)
class DownloadPlan:
    """Exactly what a download will fetch, read from the source's file metadata beforehand."""

    repo_id: str
    revision: str
    source: Source
    store: ModelStore
    commit: str | None
    files: tuple[PlannedFile, ...]
    config: dict[str, Any]
    free_bytes: int

    @property
    def download_bytes(self) -> int:
        return sum(f.size for f in self.files if not f.cached)

    @property
    def cached_bytes(self) -> int:
        return sum(f.size for f in self.files if f.cached)

    @property
    def weight_bytes(self) -> int:
        return sum(f.size for f in self.files if is_weight_file(f.name))

    @property
    def disk_ok(self) -> bool:
        return not self.download_bytes or self.download_bytes + DISK_MARGIN <= self.free_bytes

    def require_supported(self) -> None:
        """Refuse, before downloading, an architecture vLLM's model registry does not know. Models
        with their own code (auto_map) are left to vLLM, which may run them through Transformers."""
        archs = self.config.get("architectures") or []
        if archs and not self.needs_trust_remote_code and not set(archs) & supported_architectures():
            raise UserError("browser.unsupported_arch", repo=self.repo_id, arch=archs[0])

    @property
    def needs_trust_remote_code(self) -> bool:
        return "auto_map" in self.config

    @property
    def folder(self) -> Path:
        """Where the files land: the Hugging Face cache's repo folder, or our ModelScope folder."""
        if self.source.kind == "modelscope":
            return self.store.modelscope_folder(self.repo_id)
        return self.store.hf_repo_folder(self.repo_id)

    @property
    def key(self) -> str:
        """Downloads into the same folder are one download, whichever source they come from."""
        return str(self.folder).lower()

    def require_disk(self) -> None:
        if not self.disk_ok:
            raise UserError(
                "models.disk_full",
                need=format_bytes(self.download_bytes + DISK_MARGIN),
                free=format_bytes(self.free_bytes),
                folder=str(self.store.root(self.source.kind)),
            )


def check_repo_id(repo_id: str) -> str:
    repo_id = repo_id.strip()
    if not _REPO_ID.match(repo_id):
        raise UserError("models.bad_repo_id", repo=repo_id)
    return repo_id


def disk_free(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    for path in (folder, *folder.parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return 0


def plan_download(
    repo_id: str,
    revision: str | None,
    source: Source,
    store: ModelStore,
    free_bytes: int | None = None,
    timeout: float = 120,
) -> DownloadPlan:
    """Ask the source which files vLLM needs, their sizes and what is cached; read config.json.
    Offline, a cached model is planned from its files and anything else is refused, unasked.
    `free_bytes` overrides the measured free disk space (for previews of another disk, and tests)."""
    repo_id = check_repo_id(repo_id)
    revision = (revision or "").strip() or ("master" if source.kind == "modelscope" else "main")
    if offline_reason(source.offline):
        return cached_plan(repo_id, revision, source, store)
    request = {"op": "plan", "repo": repo_id, "revision": revision, **request_source(source, store)}
    events = run_child(source, store, request, timeout)
    last = events[-1] if events else {"event": "error", "kind": "crashed", "detail": ""}
    if last["event"] != "plan":
        raise error_for(last, repo_id, revision, source)
    return DownloadPlan(
        repo_id=repo_id,
        revision=revision,
        source=source,
        store=store,
        commit=last.get("commit"),
        files=tuple(PlannedFile(f["name"], int(f["size"]), bool(f["cached"])) for f in last["files"]),
        config=last.get("config") or {},
        free_bytes=disk_free(store.root(source.kind)) if free_bytes is None else free_bytes,
    )


def cached_plan(repo_id: str, revision: str, source: Source, store: ModelStore) -> DownloadPlan:
    """The plan of a model already on this computer, from its files alone (offline: nothing is asked);
    a model that is not fully here gets the offline sentence."""
    try:
        folder = resolve_snapshot(store, repo_id, None if source.kind == "modelscope" else revision)
    except UserError:
        source.require_online()
        raise
    names = select_model_files([str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()])
    return DownloadPlan(
        repo_id=repo_id,
        revision=revision,
        source=source,
        store=store,
        commit=None if source.kind == "modelscope" else folder.name,
        files=tuple(PlannedFile(n, (folder / n).stat().st_size, True) for n in names),
        config=read_config(folder),
        free_bytes=disk_free(store.root(source.kind)),
    )


def check_plan_fit(
    plan: DownloadPlan, hardware: Hardware, engine: EngineSettings, catalog: list[CatalogEntry]
) -> FitReport:
    """Will the planned model fit this machine. When memory is short it suggests a quantized version:
    the catalog's variant, or for any other repo those the Hub has (one search, only then)."""
    shape = ModelShape.from_config(plan.config)
    entry = find_entry(catalog, plan.repo_id)
    if entry is not None:
        smaller = find_entry(catalog, entry.quantized) if entry.quantized else None
        alternative = smaller.repo_for(plan.source.kind) if smaller else None
        return check_fit(shape, plan.weight_bytes, hardware, engine, quantized_alternative=alternative)
    report = check_fit(shape, plan.weight_bytes, hardware, engine)
    if report.verdict not in SHORT_OF_MEMORY:
        return report
    siblings = quantized_siblings(plan.repo_id, plan.source, plan.store)
    if not siblings:
        return report
    report = check_fit(shape, plan.weight_bytes, hardware, engine, quantized_alternative=siblings[0])
    note = ("models.fit_quantized_on_hub", {"repo": plan.repo_id, "repos": ", ".join(siblings)})
    return dataclasses.replace(report, notes=[*report.notes, note])


def plan_lines(plan: DownloadPlan, lang: str) -> list[str]:
    """What the plan means for the user, as Markdown sentences."""
    lines = [
        translate("models.plan_title", lang, repo=plan.repo_id, revision=plan.revision, source=plan.source.describe())
    ]
    if plan.download_bytes:
        lines.append(
            translate(
                "models.plan_sizes",
                lang,
                download=format_bytes(plan.download_bytes),
                files=sum(not f.cached for f in plan.files),
                cached=format_bytes(plan.cached_bytes),
                free=format_bytes(plan.free_bytes),
            )
        )
    else:
        lines.append(translate("models.plan_nothing", lang, cached=format_bytes(plan.cached_bytes)))
    if plan.needs_trust_remote_code:
        lines.append(translate("models.plan_remote_code", lang))
    return lines
