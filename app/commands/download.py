"""`python -m app download REPO [--revision R] [--source S]`: download a model with a progress bar.

Shows the size and whether it fits before downloading; Ctrl+C cancels cleanly (no partial files).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from app.config.file import load_settings
from app.config.settings import AppPaths
from app.errors import UserError
from app.hardware import detect
from app.i18n import normalize_language, translate
from app.models.cache import ModelStore, resolve_snapshot
from app.models.catalog import load_catalog, repo_for_source
from app.models.downloads import DownloadProgress, Downloads, DownloadState, format_eta
from app.models.fit import format_bytes
from app.models.plans import check_plan_fit, plan_download, plan_lines
from app.models.sources import SOURCES, TokenStore, source_from_settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm-chat download", description="Download a model into the local cache.")
    p.add_argument("repo", help="Hugging Face repo id (e.g. Qwen/Qwen2.5-7B-Instruct) or a catalog key")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--source", choices=SOURCES, help="where to download from (default: the saved setting)")
    p.add_argument("--mirror", help="mirror address for --source mirror (default: the saved one)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    lang = normalize_language(os.environ.get("LANG"))
    paths = AppPaths.default()
    settings = load_settings(paths)
    changes = {k: v for k, v in (("download_source", args.source), ("mirror_endpoint", args.mirror)) if v}
    settings = dataclasses.replace(settings, **changes)
    catalog = load_catalog()
    try:
        source = source_from_settings(settings, TokenStore(paths.config_dir / "hf_token").token())
        plan = plan_download(
            repo_for_source(catalog, args.repo, source.kind), args.revision, source, ModelStore.for_app(paths)
        )
        for line in plan_lines(plan, lang):
            print(line.replace("**", ""))
        plan.require_supported()
        try:
            for line in check_plan_fit(plan, detect(), settings.engine, catalog).lines(lang):
                print(line)
        except UserError as exc:  # an unusual config: the download is still worth doing
            print(exc.message(lang))
        if not plan.download_bytes:  # all here already (offline too): nothing to fetch
            print(resolve_snapshot(plan.store, plan.repo_id, plan.commit))
            return 0
        download = Downloads().start(plan)
    except UserError as exc:
        print(exc.message(lang), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        progress = download.progress()
        while not progress.finished:
            progress = download.wait(0.5)
            _draw(progress, lang)
    except KeyboardInterrupt:
        download.cancel()
        print("\n" + translate("models.cancelled", lang, repo=plan.repo_id), flush=True)
        return 130
    print()
    if progress.status == DownloadState.DONE:
        print(progress.path)
        return 0
    print(progress.error.message(lang) if progress.error else progress.status, file=sys.stderr)
    return 1


def _draw(progress: DownloadProgress, lang: str, width: int = 30) -> None:
    filled = int(progress.fraction * width)
    bar = "█" * filled + "·" * (width - filled)
    retrying = (
        "  " + translate("models.status_retrying", lang, attempt=progress.attempt)
        if progress.status == DownloadState.RETRYING
        else ""
    )
    eta = format_eta(progress.eta) if progress.eta is not None else "--"
    line = (
        f"\r{bar} {progress.fraction * 100:5.1f}%  {format_bytes(progress.done_bytes)} / "
        f"{format_bytes(progress.total_bytes)}  {format_bytes(progress.speed)}/s  ETA {eta}{retrying}"
    )
    sys.stdout.write(line.ljust(100))
    sys.stdout.flush()
