"""The System tab: the doctor's findings and this computer's facts, in the browser's language."""

from __future__ import annotations

import gradio as gr
from gradio.context import Context

from app.application import App
from app.doctor.checks import GIB, Facts, Finding, Status, run_checks, summary
from app.doctor.facts import gather_facts
from app.engine import EngineState
from app.i18n import translate
from app.ui.i18n import gradio_i18n, request_language

ICONS = {Status.OK: "✅", Status.WARNING: "⚠️", Status.PROBLEM: "❌"}


def system_markdown(app: App, lang: str) -> str:
    """Run the doctor inside the running app (its port and its engine's GPU memory are its own).
    The model is judged by where the engine loaded it from (a folder or a cached repo), not by
    its display name, which names no files."""
    status = app.engine.status
    facts = gather_facts(
        app.settings,
        model=app.engine.source or app.settings.model,
        host=app.access.host,
        port=app.access.port,
        serving=True,
        engine_holds_gpu=status.state in (EngineState.READY, EngineState.LOADING),
    )
    return render_markdown(facts, run_checks(facts), lang)


def render_markdown(facts: Facts, findings: list[Finding], lang: str) -> str:
    def t(key: str, **params: object) -> str:
        return translate(key, lang, **params)

    lines = [f"### {t('doctor.heading')}", "", f"**{summary(findings, lang)}**", ""]
    for f in findings:
        status = t(f"doctor.status_{f.status.value}")
        lines.append(f"- {ICONS[f.status]} **{status} · {f.title(lang)}** — {f.why(lang)}")
        fix = f.fix(lang)
        if fix:
            # Two trailing spaces: a line break inside the list item.
            lines[-1] += "  "
            lines.append(f"  ↳ {t('doctor.fix_line', fix=fix)}")
    lines += ["", f"### {t('doctor.facts_heading')}", ""]
    for key, value in fact_rows(facts, lang):
        lines.append("- " + t("doctor.finding_line", title=f"**{t(key)}**", why=value))
    return "\n".join(lines)


def fact_rows(facts: Facts, lang: str) -> list[tuple[str, str]]:
    hw = facts.hardware
    none = translate("doctor.fact_none", lang)
    gpus = "; ".join(
        f"{g.index}: {g.name} ({g.memory_used / GIB:.1f} / {g.memory_total / GIB:.1f} GiB)" for g in hw.gpus
    )
    driver = f"{hw.gpus[0].driver} ({facts.driver_cuda or '?'})" if hw.gpus else none
    torch = f"{facts.torch.version or none} ({facts.torch.cuda or 'CPU'})"
    vllm = ", ".join(f"{name} {version}" for name, version in facts.vllm.versions.items()) or none
    rows = [
        ("doctor.fact_gpus", gpus or none),
        ("doctor.fact_driver", driver),
        ("doctor.fact_torch", torch),
        ("doctor.fact_vllm", vllm),
        ("doctor.fact_cpu", str(hw.cpu_count)),
        ("doctor.fact_ram", f"{hw.ram_total / GIB:.1f} GiB ({hw.ram_available / GIB:.1f} GiB)"),
    ]
    if facts.wsl:
        rows.append(("doctor.fact_wsl", facts.wsl.kernel))
    free = f"{facts.cache_free / GIB:.1f} GiB" if facts.cache_free is not None else "?"
    rows.append(("doctor.fact_cache", f"`{facts.cache_dir}` ({free})"))
    rows.append(("doctor.fact_python", ".".join(map(str, facts.python_version))))
    return rows


def system_tab(app: App, i18n: gr.I18n | None = None) -> None:
    """Fill an open `gr.Tab`: the report runs when the tab is opened and on "Check again"."""
    i18n = i18n or gradio_i18n()
    report = gr.Markdown(i18n("system.placeholder"))
    check = gr.Button(i18n("system.check"), variant="secondary")

    def render(request: gr.Request) -> str:
        return system_markdown(app, request_language(request))

    def checking(request: gr.Request) -> str:
        return translate("system.checking", request_language(request))

    # Our own words while it checks: Gradio's progress says "processing | 1.6s" in every language.
    tab = Context.block
    triggers = [check.click, tab.select] if isinstance(tab, gr.Tab) else [check.click]
    gr.on(triggers, checking, None, report, queue=False, show_progress="hidden").then(
        render, None, report, show_progress="hidden"
    )
