"""The model browser: every catalog model and its quantized variants, with what will run on this
machine, from data shipped in assets/models.toml and the GPU (NVML) alone: no network.

Rows come grouped: a full-precision model followed by its variants, so a user whose card is too
small for the model sees, next to it, the variant that runs. Groups are sorted by their best
member: the largest model that runs with its full context comes first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from app.config.settings import EngineSettings
from app.hardware import Hardware
from app.i18n import translate
from app.models.catalog import CatalogEntry, find_entry, variants_of
from app.models.fit import FitReport, ModelShape, check_fit, format_bytes


class Fit(StrEnum):
    FULL = "full"  # runs with the context length the catalog recommends (or the user set)
    SHORTER = "shorter"  # runs, with a shorter context
    NO = "no"  # does not fit this machine


@dataclass(frozen=True)
class BrowserRow:
    entry: CatalogEntry
    report: FitReport
    downloaded: bool
    # The context length is the user's max model length, not the catalog's length for chat.
    length_set: bool = False

    @property
    def fit(self) -> Fit:
        if not self.report.ok:
            return Fit.NO
        full = self.report.asked_len
        return Fit.FULL if self.context == full else Fit.SHORTER

    @property
    def context(self) -> int | None:
        """The max model length a load would use; None when the model does not fit."""
        if not self.report.ok:
            return None
        return self.report.recommended_max_len or self.report.asked_len

    @property
    def is_variant(self) -> bool:
        return self.entry.variant_of is not None

    def fit_line(self, lang: str, catalog: list[CatalogEntry] | None = None) -> str:
        """The verdict in one short phrase: the context it runs with beside the model's own / does not fit."""
        where = "cpu" if self.report.device == "cpu" else "gpu"
        full = self.report.model_len or self.report.asked_len
        if self.context is not None and (full is None or self.context >= full):
            return translate(f"browser.fit_full_{where}", lang, context=f"{full or self.context:,}")
        if self.fit is Fit.FULL:
            why = translate("browser.why_set" if self.length_set else "browser.why_catalog", lang)
            return translate(f"browser.fit_part_{where}", lang, context=f"{self.context:,}", full=f"{full:,}", why=why)
        if self.fit is Fit.SHORTER:
            return translate(f"browser.fit_shorter_{where}", lang, context=f"{self.context:,}", full=f"{full:,}")
        smaller = find_entry(catalog or [], self.entry.quantized or "")
        if smaller is not None:
            return translate("browser.fit_no_variant", lang, variant=smaller.name)
        return translate(
            f"browser.fit_no_{where}",
            lang,
            weights=format_bytes(self.report.weight_bytes),
            memory=format_bytes(self.report.memory_bytes),
        )


@dataclass(frozen=True)
class BrowserFilters:
    fits_only: bool = False
    downloaded_only: bool = False
    family: str | None = None  # None or "": every family
    max_params_b: float | None = None

    def keep(self, row: BrowserRow) -> bool:
        return (
            (not self.fits_only or row.fit is not Fit.NO)
            and (not self.downloaded_only or row.downloaded)
            and (not self.family or row.entry.family == self.family)
            and (self.max_params_b is None or row.entry.params_b <= self.max_params_b)
        )


def fit_of(entry: CatalogEntry, hardware: Hardware, engine: EngineSettings) -> FitReport:
    """The entry against this machine, at the user's max model length or the catalog's recommended one."""
    length = engine.max_model_len or min(entry.max_len, entry.max_position)
    return check_fit(
        ModelShape.from_entry(entry), entry.weight_bytes, hardware, dataclasses.replace(engine, max_model_len=length)
    )


def browse(
    catalog: list[CatalogEntry],
    hardware: Hardware,
    engine: EngineSettings,
    cached_repos: set[str],
    filters: BrowserFilters | None = None,
) -> list[BrowserRow]:
    """The browser's rows, best first; `cached_repos` are the (lowercase) repo ids on this computer."""
    filters = filters or BrowserFilters()

    def row(entry: CatalogEntry) -> BrowserRow:
        downloaded = any(repo.lower() in cached_repos for repo in entry.repo_ids)
        return BrowserRow(entry, fit_of(entry, hardware, engine), downloaded, engine.max_model_len is not None)

    groups = [[row(base), *map(row, variants_of(catalog, base))] for base in catalog if base.variant_of is None]
    groups.sort(key=lambda group: min(_rank(r) for r in group))
    return [r for group in groups for r in group if filters.keep(r)]


def _rank(row: BrowserRow) -> tuple[int, float]:
    """Running models first, the largest before the smaller; then the rest, the smallest first."""
    order = {Fit.FULL: 0, Fit.SHORTER: 1, Fit.NO: 2}[row.fit]
    return (0 if order < 2 else 1), (-row.entry.params_b if order < 2 else row.entry.params_b) + order * 0.01


def families(catalog: list[CatalogEntry]) -> list[str]:
    return sorted({e.family for e in catalog})
