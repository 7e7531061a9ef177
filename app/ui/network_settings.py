"""Settings → Network and API: offline (never contact Hugging Face, the mirror or ModelScope, as
HF_HUB_OFFLINE=1 does) and, on /v1, fitting a max_tokens longer than the context instead of
refusing it. Both are saved as soon as they are switched."""

from __future__ import annotations

import gradio as gr

from app.application import App
from app.i18n import translate
from app.models.sources import offline_variable
from app.ui.i18n import field, request_language


class NetworkPanel:
    """The section's handlers."""

    def __init__(self, app: App) -> None:
        self.app = app

    def offline_state(self, request: gr.Request) -> tuple[bool, str]:
        """The switch as saved (another tab may have changed it), and why the app is offline anyway."""
        return self.app.settings.offline, offline_note(self.app.settings.offline, request_language(request), False)

    def set_offline(self, offline: bool, request: gr.Request) -> str:
        """Saved at once; turning it on also stops the downloads running now: nothing more leaves."""
        self.app.update_settings(offline=bool(offline))
        if offline:
            self.app.downloads.cancel_all()
        return offline_note(bool(offline), request_language(request), True)

    def fit_state(self) -> bool:
        return self.app.settings.api_fit_max_tokens

    def set_fit_max_tokens(self, fit: bool, request: gr.Request) -> str:
        """Saved at once; applies to the next /v1 request."""
        self.app.update_settings(api_fit_max_tokens=bool(fit))
        return translate(
            "settings_ui.fit_max_tokens_on" if fit else "settings_ui.fit_max_tokens_off", request_language(request)
        )


def offline_note(offline: bool, lang: str, changed: bool) -> str:
    """Why the app is offline whatever the switch says (HF_HUB_OFFLINE), else what a change did."""
    variable = offline_variable()
    if variable:
        return translate("settings_ui.offline_env", lang, variable=variable)
    if not changed:
        return ""
    return translate("settings_ui.offline_on" if offline else "settings_ui.offline_off", lang)


def network_section(panel: NetworkPanel, i18n: gr.I18n) -> None:
    """Settings → Network and API: never contact Hugging Face, the mirror or ModelScope (as
    HF_HUB_OFFLINE=1); on /v1, fit a max_tokens longer than the context instead of refusing it."""
    with gr.Accordion(i18n("settings_ui.network"), open=True):
        offline = field(gr.Checkbox, i18n, "offline", panel.app.settings.offline, True, elem_id="offline")
        note = gr.Markdown()
        fit = field(
            gr.Checkbox, i18n, "fit_max_tokens", panel.app.settings.api_fit_max_tokens, True, elem_id="fit-max-tokens"
        )
        fit_note = gr.Markdown()
    gr.on(None, panel.offline_state, None, [offline, note], api_visibility="private")
    gr.on(None, panel.fit_state, None, fit, api_visibility="private")
    # `input`, not `change`: the page-load refresh above must not save anything.
    offline.input(panel.set_offline, offline, note, api_visibility="private")
    fit.input(panel.set_fit_max_tokens, fit, fit_note, api_visibility="private")
