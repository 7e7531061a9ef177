"""Settings → Tools: the MCP servers (add, edit, enable or disable, remove), each one's state
(connected with its tools, or why not, in one sentence), single tools on or off, the tools
that are always allowed (revocable) and the loop's limits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.application import App
from app.errors import UserError
from app.i18n import translate
from app.tools.config import ServerConfig, ServerKind
from app.tools.connections import ConnectionState
from app.tools.host import KEEP_TOKEN, ToolHost
from app.tools.loop import tools_supported
from app.ui.i18n import request_language, shown_error

NEW = ""  # the server list's entry for a server not saved yet


class ToolsPanel:
    def __init__(self, app: App, host: ToolHost) -> None:
        self.app = app
        self.host = host

    # ---- what the panel shows -----------------------------------------------------------

    def opened(self, request: gr.Request) -> tuple:
        """On page load: the list, an empty form, the limits and the always-allowed tools."""
        lang = request_language(request)
        settings = self.host.settings
        return (
            self._server_list(NEW, lang),
            *self._form(None),
            self._status_text(None, lang),
            gr.update(choices=[], value=[], visible=False),
            self._allowed(),
            settings.max_rounds,
            settings.call_timeout_s,
            self._support_note(lang),
        )

    def select(self, name: str, request: gr.Request) -> tuple:
        lang = request_language(request)
        config = self.host.settings.server(name) if name else None
        return (*self._form(config), self._status_text(config, lang), self._tool_choices(config))

    async def check(self, name: str, request: gr.Request) -> tuple:
        """Connect (again) and show the state and the tools."""
        lang = request_language(request)
        config = self.host.settings.server(name) if name else None
        if config is None:
            raise shown_error(translate("tools_ui.choose_server", lang))
        await self.host.connect(name)
        return self._status_text(self.host.settings.server(name), lang), self._tool_choices(config)

    # ---- changes ------------------------------------------------------------------------

    async def save(
        self,
        selected: str,
        name: str,
        kind: str,
        command: str,
        args: str,
        env: str,
        url: str,
        token: str,
        enabled: bool,
        request: gr.Request,
    ) -> tuple:
        lang = request_language(request)
        data = {
            "name": name,
            "kind": kind,
            "command": command.strip(),
            "args": [line for line in args.splitlines() if line.strip()],
            "env": _env(env, lang),
            "url": url.strip(),
            "enabled": enabled,
        }
        old = self.host.settings.server(selected) if selected else None
        if old is not None:
            data["disabled_tools"] = list(old.disabled_tools)
        try:
            config = self.host.save_server(data, token=token or KEEP_TOKEN, replacing=selected or None)
        except UserError as exc:
            raise shown_error(exc.message(lang)) from None
        if config.enabled:
            await self.host.connect(config.name)
        return (
            self._server_list(config.name, lang),
            *self._form(config),
            self._status_text(config, lang),
            self._tool_choices(config),
        )

    def ask_remove(self, selected: str, request: gr.Request) -> tuple:
        """Remove asks first, naming the server: (the question shown, the server it is about)."""
        lang = request_language(request)
        if not selected or self.host.settings.server(selected) is None:
            raise shown_error(translate("tools_ui.choose_server", lang))
        question = translate("tools_ui.remove_confirm", lang, name=selected)
        return gr.update(visible=True), question, selected

    def remove(self, asked: str, request: gr.Request) -> tuple:
        """The user said yes to removing `asked` (the server the question named)."""
        lang = request_language(request)
        if asked:
            self.host.remove_server(asked)
        return (
            self._server_list(NEW, lang),
            *self._form(None),
            self._status_text(None, lang),
            self._tool_choices(None),
            self._allowed(),
            gr.update(visible=False),
            "",
        )

    def forget_token(self, selected: str, request: gr.Request) -> str:
        lang = request_language(request)
        config = self.host.settings.server(selected) if selected else None
        if config is not None:
            self.host.save_server(config.model_dump(), token=None, replacing=config.name)
        return self._status_text(config, lang)

    def refresh_allowed(self, request: gr.Request) -> tuple:
        return self._allowed(), self._support_note(request_language(request))

    def set_tools(self, selected: str, enabled_tools: list[str], request: gr.Request) -> str:
        """Turn tools on or off; the state line then counts those on."""
        status = self.host.status(selected)
        for tool in status.tools:
            self.host.set_tool_enabled(selected, tool.name, tool.name in enabled_tools)
        return self._status_text(self.host.settings.server(selected), request_language(request))

    def set_allowed(self, kept: list[str]) -> dict[str, Any]:
        """Unticked in the list: no longer always allowed (asked again next time)."""
        for key in self.host.settings.always_allowed:
            if key not in kept:
                self.host.revoke(key)
        return self._allowed()

    def save_limits(self, max_rounds: float, timeout: float, request: gr.Request) -> None:
        lang = request_language(request)
        try:
            self.host.update_limits(int(max_rounds), float(timeout))
        except (UserError, TypeError, ValueError) as exc:
            reason = exc.message(lang) if isinstance(exc, UserError) else str(exc)
            raise shown_error(reason) from None
        gr.Info(translate("tools_ui.limits_saved", lang))

    # ---- parts --------------------------------------------------------------------------

    def _server_list(self, selected: str, lang: str) -> dict[str, Any]:
        choices = [(translate("tools_ui.new_server", lang), NEW)]
        choices += [
            (s.name if s.enabled else f"{s.name} ({translate('tools_ui.off', lang)})", s.name)
            for s in self.host.settings.servers
        ]
        return gr.update(choices=choices, value=selected)

    def _form(self, config: ServerConfig | None) -> tuple:
        if config is None:
            return "", ServerKind.STDIO.value, "", "", "", "", "", True
        env = "\n".join(f"{k}={v}" for k, v in config.env.items())
        # The token never goes back to the page: the field stays empty ("leave empty to keep").
        return (
            config.name,
            config.kind.value,
            config.command,
            "\n".join(config.args),
            env,
            config.url,
            "",
            config.enabled,
        )

    def _status_text(self, config: ServerConfig | None, lang: str) -> str:
        if config is None:
            return translate("tools_ui.status_new", lang)
        if not config.enabled:
            return translate("tools_ui.status_off", lang)
        status = self.host.status(config.name)
        token = translate("tools_ui.token_set", lang) if self.host.has_token(config.name) else ""
        if status.state == ConnectionState.CONNECTED:
            names = ", ".join(t.name for t in status.tools) or "-"
            on = sum(t.name not in config.disabled_tools for t in status.tools)
            counts = {"on": f"{on:,}", "count": f"{len(status.tools):,}"}
            return translate("tools_ui.status_connected", lang, **counts, tools=names) + token
        if status.state == ConnectionState.FAILED and status.error is not None:
            # The sentence, then what the server wrote (its last stderr lines) as it wrote it.
            sentence, _, output = status.error.message(lang).partition("\n")
            failed = translate("tools_ui.status_failed", lang, error=sentence) + token
            return failed + (f"\n\n{_code_block(output)}" if output else "")
        return translate("tools_ui.status_not_connected", lang) + token

    def _tool_choices(self, config: ServerConfig | None) -> dict[str, Any]:
        tools = self.host.status(config.name).tools if config is not None else ()
        if not tools:
            return gr.update(choices=[], value=[], visible=False)
        names = [t.name for t in tools]
        return gr.update(choices=names, value=[n for n in names if n not in config.disabled_tools], visible=True)

    def _allowed(self) -> dict[str, Any]:
        keys = list(self.host.settings.always_allowed)
        return gr.update(choices=keys, value=keys, visible=bool(keys))

    def _support_note(self, lang: str) -> dict[str, Any]:
        if tools_supported(self.app.engine) or self.app.engine.model_name is None:
            return gr.update(value="", visible=False)
        return gr.update(value=translate("chat_tools.model_cannot", lang), visible=True)


def _code_block(text: str) -> str:
    """`text` verbatim in Markdown: fenced by more backticks than any run of them inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _env(text: str, lang: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise shown_error(translate("tools_ui.bad_env_line", lang, line=line.strip()[:80]))
        env[key.strip()] = value
    return env


def tools_settings(app: App, i18n: gr.I18n) -> None:
    """Render the Tools section inside the open Settings tab."""
    if app.tools is None:
        return
    panel = ToolsPanel(app, app.tools)
    private = {"api_visibility": "private"}
    with gr.Accordion(i18n("tools_ui.title"), open=False, elem_id="tools-settings") as section:
        gr.Markdown(i18n("tools_ui.help"))
        support = gr.Markdown(visible=False, elem_classes="chat-notice")
        servers = gr.Dropdown(label=i18n("tools_ui.servers"), choices=[], elem_id="tools-servers")
        form = _server_form(i18n)
        with gr.Row():
            save = gr.Button(i18n("tools_ui.save"), variant="primary", size="sm", elem_id="tools-save")
            check = gr.Button(i18n("tools_ui.check"), size="sm")
            forget = gr.Button(i18n("tools_ui.forget_token"), size="sm")
            remove = gr.Button(i18n("tools_ui.remove"), variant="stop", size="sm", elem_id="tools-remove")
        ask = _remove_question(i18n)
        status = gr.Markdown(elem_id="tools-status")
        tools = gr.CheckboxGroup(label=i18n("tools_ui.tools"), choices=[], visible=False, elem_id="tools-list")
        allowed = gr.CheckboxGroup(
            label=i18n("tools_ui.always_allowed"), choices=[], visible=False, elem_id="tools-allowed"
        )
        with gr.Row():
            max_rounds = gr.Number(label=i18n("tools_ui.max_rounds"), precision=0, minimum=1, maximum=64)
            timeout = gr.Number(label=i18n("tools_ui.timeout"), minimum=1, maximum=3600)
            limits = gr.Button(i18n("tools_ui.save_limits"), size="sm")
    gr.on(None, panel.opened, None, [servers, *form, status, tools, allowed, max_rounds, timeout, support], **private)
    hide = lambda: (gr.update(visible=False), "")  # noqa: E731
    servers.input(panel.select, [servers], [*form, status, tools], **private)
    servers.input(hide, None, [ask.group, ask.asked], queue=False, **private)
    save.click(panel.save, [servers, *form], [servers, *form, status, tools], **private)
    check.click(panel.check, [servers], [status, tools], show_progress_on=status, **private)
    forget.click(panel.forget_token, [servers], [status], **private)
    remove.click(panel.ask_remove, [servers], [ask.group, ask.text, ask.asked], **private)
    ask.no.click(hide, None, [ask.group, ask.asked], queue=False, **private)
    removed = [servers, *form, status, tools, allowed, ask.group, ask.asked]
    ask.yes.click(panel.remove, [ask.asked], removed, **private)
    tools.input(panel.set_tools, [servers, tools], [status], **private)
    allowed.input(panel.set_allowed, [allowed], [allowed], **private)
    limits.click(panel.save_limits, [max_rounds, timeout], None, **private)
    # "Always allow" may have been chosen in the chat since the page loaded.
    section.expand(panel.refresh_allowed, None, [allowed, support], **private)


def _server_form(i18n: gr.I18n) -> list[Any]:
    """One server's fields: name, kind, command, args, env, url, token, enabled (`ToolsPanel._form`'s order)."""
    with gr.Row():
        name = gr.Textbox(label=i18n("tools_ui.name"), max_lines=1, elem_id="tools-name")
        kind = gr.Radio([("stdio", "stdio"), ("HTTP", "http")], value="stdio", label=i18n("tools_ui.kind"))
        enabled = gr.Checkbox(label=i18n("tools_ui.enabled"), value=True)
    command = gr.Textbox(label=i18n("tools_ui.command"), max_lines=1, elem_id="tools-command")
    args = gr.Textbox(label=i18n("tools_ui.args"), lines=2, elem_id="tools-args")
    env = gr.Textbox(label=i18n("tools_ui.env"), lines=2, placeholder="KEY=value")
    with gr.Row():
        url = gr.Textbox(label=i18n("tools_ui.url"), max_lines=1, placeholder="http://127.0.0.1:8000/mcp")
        token = gr.Textbox(
            label=i18n("tools_ui.token"),
            type="password",
            max_lines=1,
            placeholder=i18n("tools_ui.token_placeholder"),
        )
    return [name, kind, command, args, env, url, token, enabled]


@dataclass(frozen=True)
class RemoveQuestion:
    """Remove's question, hidden until Remove is pressed."""

    group: gr.Group
    text: gr.Markdown
    yes: gr.Button
    no: gr.Button
    # The server the question names: Yes removes that one, whatever is selected by then.
    asked: gr.State


def _remove_question(i18n: gr.I18n) -> RemoveQuestion:
    with gr.Group(visible=False) as group:
        text = gr.Markdown(elem_id="tools-remove-question")
        with gr.Row():
            yes = gr.Button(i18n("tools_ui.remove_yes"), variant="stop", size="sm", elem_id="tools-remove-yes")
            no = gr.Button(i18n("tools_ui.cancel"), size="sm", elem_id="tools-remove-no")
    return RemoveQuestion(group, text, yes, no, gr.State(""))
