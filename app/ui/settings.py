"""The Settings tab: sampling (applies to the next message) and engine settings (need a reload).

Both persist through app.update_settings(). The core validates; this panel only turns its
errors into one translated sentence. A sampling field the user never changed follows the
model's own default, shown beside it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.application import App
from app.config import speculative
from app.config.settings import (
    AUTO,
    DTYPES,
    FALLBACK_SAMPLING,
    PRESETS,
    QUANTIZATIONS,
    EngineSettings,
    SamplingSettings,
    apply_preset,
)
from app.engine import EngineState
from app.errors import UserError
from app.hardware import Hardware, detect
from app.i18n import translate
from app.models.parsers import reasoning_parser_names, tool_call_parser_names
from app.ui.engine_memory import MemoryFields
from app.ui.engine_memory import updates as memory_updates
from app.ui.i18n import field, request_language, shown_error
from app.ui.network_settings import NetworkPanel, network_section

RELOAD_POLL_S = 0.5
NO_QUANTIZATION = "none"
# How the panel shows "no parser" (stored as "").
NO_PARSER = "none"


SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
)
# Fields whose label has an explanation below it (settings_ui.<name>_info).
EXPLAINED = frozenset({"temperature", "top_p", "top_k", "max_tokens", "seed", "stop"})


def sampling_values(sampling: SamplingSettings) -> list[Any]:
    """The sampling fields in the order the panel shows them."""
    return [("\n".join(sampling.stop or ()) if name == "stop" else getattr(sampling, name)) for name in SAMPLING_FIELDS]


# Where the memory fields are among the engine values.
UTILIZATION, KV_CACHE = 1, 7


def engine_values(preset: str, engine: EngineSettings) -> list[Any]:
    return [
        preset,
        engine.gpu_memory_utilization,
        engine.max_model_len,
        engine.dtype,
        engine.quantization or NO_QUANTIZATION,
        engine.tool_call_parser or NO_PARSER,
        engine.reasoning_parser or NO_PARSER,
        engine.cpu_kv_cache_gib,
        *speculative.choices(engine.speculative_config),
    ]


def chosen_after_save(
    previous: SamplingSettings, submitted: SamplingSettings, defaults: SamplingSettings
) -> SamplingSettings:
    """What the user has set after saving the panel: every field set before that still has a
    value, and every field now different from the default it showed. A field left at its
    default keeps following the model."""
    before = previous.chosen()
    chosen = {k: v for k, v in submitted.chosen().items() if k in before or v != getattr(defaults, k)}
    if previous.ignore_eos is not None:
        chosen["ignore_eos"] = previous.ignore_eos
    return SamplingSettings(**chosen)


class SettingsPanel:
    def __init__(self, app: App, hardware: Hardware | None = None) -> None:
        self.app = app
        # Tests pass a fabricated machine in; the app detects its own.
        self.hardware = hardware

    def machine(self) -> Hardware:
        return self.hardware or detect()

    def memory_fields(self) -> MemoryFields:
        return MemoryFields.of(self.app, self.machine())

    def current(self, request: gr.Request) -> list[Any]:
        """Every field from the saved settings (on page load: another tab may have changed them),
        each sampling field with the default it follows when left alone."""
        lang = request_language(request)
        shown = self.app.reply_sampling()
        updates = [
            gr.update(value=value, info=self.default_note(name, lang))
            for name, value in zip(SAMPLING_FIELDS, sampling_values(shown), strict=True)
        ]
        engine = engine_values(self.app.settings.preset, self.app.settings.engine)
        # The memory field this machine uses is enabled, the other one says where it applies.
        utilization, kv_cache = memory_updates(self.memory_fields(), lang)
        engine[UTILIZATION] = {**utilization, "value": engine[UTILIZATION]}
        engine[KV_CACHE] = {**kv_cache, "value": engine[KV_CACHE]}
        return updates + engine

    def default_note(self, name: str, lang: str) -> str:
        """ "Model default: 0.9" where the model's generation_config sets it, else the app's."""
        model = self.app.engine.model_sampling_defaults()
        if name in model:
            note = translate("settings_ui.model_default", lang, value=_shown(model[name]))
        else:
            note = translate("settings_ui.app_default", lang, value=_shown(FALLBACK_SAMPLING[name]))
        explained = translate(f"settings_ui.{name}_info", lang) if name in EXPLAINED else ""
        return f"{explained} · {note}" if explained else note

    def save_sampling(
        self,
        temperature: float,
        top_p: float,
        top_k: float,
        min_p: float,
        max_tokens: float,
        repetition_penalty: float,
        presence_penalty: float,
        frequency_penalty: float,
        seed: float | None,
        stop: str,
        request: gr.Request,
    ) -> str:
        lang = request_language(request)
        # fmt: off
        fields = (temperature, top_p, top_k, min_p, max_tokens, repetition_penalty, presence_penalty,
                  frequency_penalty, seed, stop or "")
        # fmt: on
        try:
            submitted = SamplingSettings.from_dict(dict(zip(SAMPLING_FIELDS, fields, strict=True)))
            submitted.validate()
            defaults = self.app.engine.resolve_sampling({})
            self.app.update_settings(
                lambda s: dataclasses.replace(s, sampling=chosen_after_save(s.sampling, submitted, defaults))
            )
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None
        return translate("settings_ui.sampling_saved", lang)

    def reset_sampling(self, request: gr.Request) -> list[Any]:
        """Back to following the model (and the app's fallbacks) in every field."""
        settings = self.app.update_settings(
            lambda s: dataclasses.replace(s, sampling=SamplingSettings(ignore_eos=s.sampling.ignore_eos))
        )
        shown = self.app.engine.resolve_sampling(settings.sampling.chosen())
        return [
            *sampling_values(shown),
            translate("settings_ui.sampling_reset", request_language(request)),
        ]

    def preset_values(self, preset: str) -> list[Any]:
        """Choosing a preset fills the engine fields; nothing applies until "Apply and reload"."""
        if preset not in PRESETS:
            return [gr.skip()] * (len(engine_values(preset, self.app.settings.engine)) - 1)
        return engine_values(preset, apply_preset(preset, self.app.settings.engine))[1:]

    async def apply_engine(
        self,
        preset: str,
        gpu_memory_utilization: float,
        max_model_len: float | None,
        dtype: str,
        quantization: str,
        tool_call_parser: str,
        reasoning_parser: str,
        cpu_kv_cache_gib: float | None,
        speculative_method: str,
        speculative_tokens: float | None,
        speculative_model: str,
        request: gr.Request,
    ) -> AsyncIterator[str]:
        """Save the engine settings and reload the model with them, reporting each loading stage."""
        lang = request_language(request)
        try:
            kv_gib = None if cpu_kv_cache_gib is None else float(cpu_kv_cache_gib)
            self.memory_fields().check_kv(kv_gib)
            engine = apply_preset(preset, self.app.settings.engine)
            engine = dataclasses.replace(
                engine,
                gpu_memory_utilization=float(gpu_memory_utilization),
                max_model_len=int(max_model_len) if max_model_len else None,
                dtype=dtype,
                quantization=None if quantization in (None, "", NO_QUANTIZATION) else quantization,
                tool_call_parser="" if tool_call_parser in (None, NO_PARSER) else tool_call_parser,
                reasoning_parser="" if reasoning_parser in (None, NO_PARSER) else reasoning_parser,
                cpu_kv_cache_gib=kv_gib,
                speculative_config=speculative.from_choices(
                    engine.speculative_config, speculative_method, speculative_tokens, speculative_model
                ),
            )
            self.app.update_settings(preset=preset, engine=engine)
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None
        model = self.app.settings.model
        if not model:
            yield translate("settings_ui.engine_saved_no_model", lang)
            return
        # The load goes on even if this tab closes; chats are saved apart from the engine.
        task = self.app.load_model_in_background(model, engine)
        started = asyncio.get_running_loop().time()
        while not task.done():
            status = self.app.engine.status
            stage = translate(status.stage, lang) if status.stage else ""
            elapsed = int(asyncio.get_running_loop().time() - started)
            yield translate("settings_ui.reloading", lang, model=status.model or model, stage=stage, seconds=elapsed)
            await asyncio.wait({task}, timeout=RELOAD_POLL_S)
        status = self.app.engine.status
        if status.state == EngineState.READY:
            yield translate("settings_ui.reloaded", lang, model=status.model)
        else:
            reason = status.error.message(lang) if status.error else ""
            yield translate("settings_ui.reload_failed", lang, reason=reason)


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " / ".join(value) or "—"
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def parser_field(i18n: gr.I18n, name: str, value: str, names: list[str]) -> gr.Dropdown:
    """ "auto" (from the model), "none", or one of vLLM's parsers by the name `vllm serve` takes."""
    choices = [(i18n("settings_ui.parser_auto"), AUTO), (i18n("settings_ui.parser_none"), NO_PARSER), *names]
    return field(gr.Dropdown, i18n, name, value or NO_PARSER, True, choices=choices)


@dataclass(frozen=True)
class Section:
    """One accordion's inputs, in the order the panel's functions take them, and its buttons' output."""

    fields: list[Any]
    result: gr.Markdown


def settings_tab(app: App, i18n: gr.I18n) -> None:
    """Render the settings inside an open gr.Tab."""
    panel = SettingsPanel(app)
    with gr.Accordion(i18n("settings_ui.sampling"), open=True):
        sampling = _sampling_fields(app, i18n)
        with gr.Row():
            save = gr.Button(i18n("settings_ui.save_sampling"), variant="primary")
            reset = gr.Button(i18n("settings_ui.reset_sampling"))
        sampling_section = Section(sampling, gr.Markdown())
    with gr.Accordion(i18n("settings_ui.engine"), open=True):
        engine = _engine_fields(app, i18n, panel.machine().has_gpu)
        apply = gr.Button(i18n("settings_ui.apply_reload"), variant="primary", elem_id="apply-reload")
        engine_section = Section(engine, gr.Markdown())
    network_section(NetworkPanel(app), i18n)
    _wire(panel, sampling_section, engine_section, save, reset, apply)


def _sampling_fields(app: App, i18n: gr.I18n) -> list[Any]:
    # What the chat would use now; the page's load event brings the loaded model's defaults.
    sampling = app.engine.resolve_sampling(app.settings.sampling.chosen())
    gr.Markdown(i18n("settings_ui.sampling_help"))
    with gr.Row():
        temperature = field(
            gr.Slider, i18n, "temperature", sampling.temperature, True, minimum=0.0, maximum=2.0, step=0.05
        )
        top_p = field(gr.Slider, i18n, "top_p", sampling.top_p, True, minimum=0.0, maximum=1.0, step=0.01)
        min_p = field(gr.Slider, i18n, "min_p", sampling.min_p, minimum=0.0, maximum=1.0, step=0.01)
    with gr.Row():
        # Plain numbers: out-of-range values reach the core's check and its translated message.
        top_k = field(gr.Number, i18n, "top_k", sampling.top_k, True, precision=0)
        max_tokens = field(gr.Number, i18n, "max_tokens", sampling.max_tokens, True, precision=0)
        seed = field(gr.Number, i18n, "seed", sampling.seed, True, precision=0)
    with gr.Row():
        repetition_penalty = field(
            gr.Slider, i18n, "repetition_penalty", sampling.repetition_penalty, minimum=0.0, maximum=2.0, step=0.01
        )
        presence_penalty = field(
            gr.Slider, i18n, "presence_penalty", sampling.presence_penalty, minimum=-2.0, maximum=2.0, step=0.05
        )
        frequency_penalty = field(
            gr.Slider, i18n, "frequency_penalty", sampling.frequency_penalty, minimum=-2.0, maximum=2.0, step=0.05
        )
    stop = field(gr.Textbox, i18n, "stop", "\n".join(sampling.stop or ()), True, lines=2)
    # fmt: off
    return [temperature, top_p, top_k, min_p, max_tokens, repetition_penalty, presence_penalty,
            frequency_penalty, seed, stop]
    # fmt: on


def _engine_fields(app: App, i18n: gr.I18n, on_gpu: bool) -> list[Any]:
    """The engine's inputs; the page's load event says what the memory fields mean on this machine."""
    engine = app.settings.engine
    gr.Markdown(i18n("settings_ui.engine_help"))
    with gr.Row():
        preset = gr.Dropdown(
            choices=[(i18n(f"settings_ui.preset_{name}"), name) for name in PRESETS],
            value=app.settings.preset if app.settings.preset in PRESETS else "balanced",
            label=i18n("settings_ui.preset"),
        )
        gpu_memory_utilization = field(
            gr.Slider,
            i18n,
            "gpu_memory_utilization",
            engine.gpu_memory_utilization,
            True,
            minimum=0.05,
            maximum=0.99,
            step=0.01,
            interactive=on_gpu,
        )
        # Plain number: one too big for the RAM gets the panel's sentence, not a silent clamp.
        cpu_kv_cache_gib = field(
            gr.Number, i18n, "cpu_kv_cache_gib", engine.cpu_kv_cache_gib, step=0.5, interactive=not on_gpu
        )
    with gr.Row():
        max_model_len = field(gr.Number, i18n, "max_model_len", engine.max_model_len, True, precision=0)
        dtype = gr.Dropdown(choices=list(DTYPES), value=engine.dtype, label=i18n("settings_ui.dtype"))
        quantization = gr.Dropdown(
            choices=[(i18n("settings_ui.quantization_none"), NO_QUANTIZATION)] + [q for q in QUANTIZATIONS if q],
            value=engine.quantization or NO_QUANTIZATION,
            label=i18n("settings_ui.quantization"),
        )
    with gr.Row():
        tool_call_parser = parser_field(i18n, "tool_call_parser", engine.tool_call_parser, tool_call_parser_names())
        reasoning_parser = parser_field(i18n, "reasoning_parser", engine.reasoning_parser, reasoning_parser_names())
    # fmt: off
    return [preset, gpu_memory_utilization, max_model_len, dtype, quantization, tool_call_parser, reasoning_parser,
            cpu_kv_cache_gib, *speculative_fields(i18n, engine.speculative_config)]
    # fmt: on


def speculative_fields(i18n: gr.I18n, setting: str) -> list[Any]:
    """Speculative decoding: the method (named as vLLM names it), its tokens per step, and the
    draft model the EAGLE-3 and draft-model methods run."""
    method, tokens, model = speculative.choices(setting)
    with gr.Row():
        choices = [(i18n(f"settings_ui.speculative_{name}"), name) for name in (speculative.OFF, *speculative.METHODS)]
        return [
            field(gr.Dropdown, i18n, "speculative_method", method, True, choices=choices, elem_id="speculative-method"),
            field(
                gr.Number, i18n, "speculative_tokens", tokens, precision=0, minimum=1, maximum=speculative.MAX_TOKENS
            ),
            field(gr.Textbox, i18n, "speculative_model", model, True, elem_id="speculative-model"),
        ]


def _wire(
    panel: SettingsPanel, sampling: Section, engine: Section, save: gr.Button, reset: gr.Button, apply: gr.Button
) -> None:
    private = {"api_visibility": "private"}
    # No triggers: runs when the page loads.
    gr.on(None, panel.current, None, sampling.fields + engine.fields, **private)
    save.click(panel.save_sampling, sampling.fields, sampling.result, api_name="save_sampling")
    reset.click(panel.reset_sampling, None, [*sampling.fields, sampling.result], **private)
    engine.fields[0].input(panel.preset_values, engine.fields[0], engine.fields[1:], **private)
    apply.click(
        panel.apply_engine, engine.fields, engine.result, api_name="apply_engine", show_progress_on=engine.result
    )
