"""`python -m app doctor [--lang zh-CN|en] [--json] [--model M] [--port P]`: check this computer.

Exit status 1 when a problem stops the app from working, else 0 (warnings included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from app.config.file import load_settings
from app.config.settings import AppPaths
from app.doctor.checks import Finding, Status, blocking, run_checks, summary
from app.doctor.facts import gather_facts
from app.i18n import LANGUAGES, normalize_language, translate

MARKS = {Status.OK: "✓", Status.WARNING: "!", Status.PROBLEM: "✗"}


def environment_language() -> str:
    """The terminal's language, as gettext picks it: LC_ALL, then LC_MESSAGES, then LANG."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return normalize_language(value)
    return "en"


def render_text(findings: list[Finding], lang: str) -> str:
    lines = [translate("doctor.heading", lang), ""]
    for f in findings:
        status = translate(f"doctor.status_{f.status.value}", lang)
        line = translate("doctor.finding_line", lang, title=f.title(lang), why=f.why(lang))
        lines.append(f"{MARKS[f.status]} [{status}] {line}")
        fix = f.fix(lang)
        if fix:
            lines.append("    → " + translate("doctor.fix_line", lang, fix=fix))
    lines += ["", summary(findings, lang)]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vllm-chat doctor", description="Check this computer for what stops vllm-chat or slows it down.")
    parser.add_argument("--lang", choices=LANGUAGES, help="report language (default: from LANG/LC_ALL)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--model", help="check this model (default: the saved one)")
    parser.add_argument("--host", help="address the app will listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port the app will listen on (default: 7860)")
    parser.add_argument("--no-network", action="store_true", help="do not try the model download sources")
    args = parser.parse_args(argv)
    lang = args.lang or environment_language()
    settings = load_settings(AppPaths.default())
    facts = gather_facts(settings, model=args.model or settings.model, host=args.host or "127.0.0.1",
                         port=args.port or 7860, probe_hub=not args.no_network)
    findings = run_checks(facts)
    if args.json:
        report = {"language": lang, "blocking": blocking(findings),
                  "findings": [f.as_dict(lang) for f in findings]}
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(render_text(findings, lang))
    sys.stdout.flush()
    return 1 if blocking(findings) else 0
