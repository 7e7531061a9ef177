"""The Chat tab's layout and event wiring: the conversation sidebar and the chat pane.

What each event does is in `chat_panel`, how messages are drawn in `chat_display`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import gradio as gr

from app.application import App
from app.ui.chat_api import ChatViews
from app.ui.chat_attachments import Tray
from app.ui.chat_display import LATEX_DELIMITERS
from app.ui.chat_panel import ChatPanel
from app.ui.chat_tools import tool_controls, wire_tool_controls

# In the page: empty the box and hand its text to the send event, unless a sent message is
# still being answered (an output given `undefined` is left as it is).
TAKE_MESSAGE_JS = """(message) => {
  if (window.vllmChatSending) return [undefined, undefined];
  window.vllmChatSending = true;
  return ["", message];
}"""
SENT_JS = "() => { window.vllmChatSending = false; }"
# After a reply the saved chat shows the finished turn, and the live chat under it empties once
# the page has drawn the turn above it (assets/chat.js): told before the saved chat comes, so
# that no frame shows the turn twice.
JOIN_JS = "(...shown) => { window.vllmChatJoin?.(); return shown; }"
# (Left as it is when a message was sent meanwhile.)
JOINED_JS = "async () => [(await window.vllmChatJoined?.()) === false ? undefined : []]"
# Each reply's event takes the page's stop key as its last input, and Stop sends it (see
# ReplyStops in chat_stream): the key a Stop clicked now would send.
KEYED_JS = "(...inputs) => { inputs[inputs.length - 1] = window.vllmChatKey?.() ?? ''; return inputs; }"
STOP_JS = "() => window.vllmChatStopped?.() ?? ''"
# An edited message is sent from inside the chatbot: the view goes back to the bottom, to follow
# the new reply, as after Send.
BACK_JS = "(...inputs) => { window.vllmChatBack?.(); return (" + KEYED_JS + ")(...inputs); }"
# Following the reply as it grows, and copying what the model wrote (see the file).
PAGE_JS = (Path(__file__).resolve().parent.parent.parent / "assets" / "chat.js").read_text(encoding="utf-8")


@dataclass
class Sidebar:
    new_chat: gr.Button
    search: gr.Textbox
    conversations: gr.Radio
    title: gr.Textbox
    rename: gr.Button
    export_md: gr.Button
    export_json: gr.Button
    exported: gr.File
    import_button: gr.UploadButton
    delete: gr.Button
    confirm_group: gr.Group
    delete_yes: gr.Button
    delete_no: gr.Button


@dataclass
class Pane:
    notice: gr.Markdown
    system_prompt: gr.Textbox
    earlier: gr.Button
    chatbot: gr.Chatbot
    live: gr.Chatbot
    box: gr.Textbox
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    versions: gr.Row
    previous_version: gr.Button
    version_label: gr.Markdown
    next_version: gr.Button


def chat_tab(app: App, i18n: gr.I18n, timer: gr.Timer) -> None:
    """Render the chat tab's content inside an open gr.Tab."""
    conversation_id = gr.State(None)
    # Whether the chat shows all its messages, or its last ones (see `window_start`).
    whole = gr.State(False)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240, elem_classes="conversation-sidebar"):
            side = _sidebar(i18n)
        with gr.Column(scale=4):
            pane = _pane(app, i18n)
            tools = tool_controls(i18n)
            tray = Tray(app, i18n)
    # The message the version buttons act on (see `version_target`).
    focus = gr.State(None)
    panel = ChatPanel(app, pane.chatbot)
    bar = [focus, pane.versions, pane.previous_version, pane.version_label, pane.next_version]
    opened = [
        pane.chatbot,
        pane.live,
        whole,
        pane.earlier,
        conversation_id,
        side.conversations,
        pane.system_prompt,
        side.title,
        pane.notice,
        *bar,
    ]
    # No triggers: runs when the page loads.
    gr.on(None, panel.open_latest, inputs=None, outputs=[*opened, pane.box, pane.send], api_visibility="private")
    timer.tick(panel.refresh_notice, None, pane.notice, show_progress="hidden", api_visibility="private")
    _wire_replies(panel, pane, [conversation_id, whole], opened, tray)
    wire_tool_controls(panel.tools, tools, timer)
    _wire_versions(panel, pane, [conversation_id, whole], bar)
    pane.earlier.click(panel.open_whole, [conversation_id], opened, api_visibility="private")
    _wire_sidebar(panel, side, pane, conversation_id, opened)
    views = ChatViews(app)
    gr.api(views.history, api_name="history")
    gr.api(views.conversations, api_name="conversations")


def _sidebar(i18n: gr.I18n) -> Sidebar:
    new_chat = gr.Button(i18n("chat.new_chat"), variant="secondary", size="sm", elem_id="new-chat")
    # Each field has a label, shown or not: screen readers read it (Gradio's default is "Textbox").
    search = gr.Textbox(
        label=i18n("chat.search"), placeholder=i18n("chat.search"), show_label=False, container=False, max_lines=1
    )
    conversations = gr.Radio(choices=[], label=i18n("chat.conversations"), elem_classes="conversation-list")
    with gr.Accordion(i18n("chat.manage"), open=False):
        title = gr.Textbox(label=i18n("chat.rename_label"), max_lines=1)
        rename = gr.Button(i18n("chat.rename"), size="sm")
        with gr.Row():
            export_md = gr.Button(i18n("chat.export_md"), size="sm")
            export_json = gr.Button(i18n("chat.export_json"), size="sm")
        exported = gr.File(label=i18n("chat.export_file"), visible=False, interactive=False)
        import_button = gr.UploadButton(i18n("chat.import_json"), file_types=[".json"], size="sm")
        delete = gr.Button(i18n("chat.delete"), variant="stop", size="sm")
        with gr.Group(visible=False) as confirm_group:
            gr.Markdown(i18n("chat.delete_confirm"))
            with gr.Row():
                delete_yes = gr.Button(i18n("chat.delete_yes"), variant="stop", size="sm")
                delete_no = gr.Button(i18n("chat.cancel"), size="sm")
    return Sidebar(
        new_chat,
        search,
        conversations,
        title,
        rename,
        export_md,
        export_json,
        exported,
        import_button,
        delete,
        confirm_group,
        delete_yes,
        delete_no,
    )


_CHATBOT = MappingProxyType(
    {
        # No fixed height: both chatbots grow, and #chat-scroll scrolls them (assets/chat.js follows).
        "height": None,
        "autoscroll": False,
        "buttons": ["copy", "copy_all"],
        "latex_delimiters": LATEX_DELIMITERS,
        "feedback_options": None,
        # The version switch and speed line are a message of their own: apart from the reply, so
        # that copying the reply copies the reply only.
        "group_consecutive_messages": False,
    }
)


def _pane(app: App, i18n: gr.I18n) -> Pane:
    notice = gr.Markdown(visible=False, elem_classes="chat-notice")
    with gr.Accordion(i18n("chat.system_prompt"), open=False):
        system_prompt = gr.Textbox(
            label=i18n("chat.system_prompt"),
            value=app.settings.system_prompt,
            placeholder=i18n("chat.system_prompt_placeholder"),
            show_label=False,
            lines=2,
            max_lines=8,
        )
    with gr.Column(elem_id="chat-scroll"):
        # A long chat opens on its last messages; this shows the rest.
        earlier = gr.Button(visible=False, size="sm", variant="secondary", elem_id="show-earlier")
        chatbot = gr.Chatbot(
            label=i18n("chat.title"),
            editable="user",
            placeholder=i18n("chat.empty_placeholder"),
            elem_id="chatbot",
            **_CHATBOT,
        )
        # The turn being answered, under the saved chat: a reply streams here, so that an update
        # costs the page what it costs in an empty chat, and joins the chat above when it ends.
        live = gr.Chatbot(
            label=i18n("chat.live_label"), show_label=False, container=False, elem_id="live-chat", **_CHATBOT
        )
        gr.HTML(js_on_load=PAGE_JS, elem_id="chat-follow")
    # Which version of a turn is shown: the last turn with several, or the one the user clicked.
    with gr.Row(visible=False, elem_id="version-bar") as versions:
        previous_version = gr.Button(i18n("chat.version_previous"), size="sm", elem_id="version-previous", scale=0)
        version_label = gr.Markdown(elem_id="version-label")
        next_version = gr.Button(i18n("chat.version_next"), size="sm", elem_id="version-next", scale=0)
    with gr.Row(equal_height=True):
        box = gr.Textbox(
            label=i18n("chat.message_label"),
            placeholder=i18n("chat.placeholder"),
            show_label=False,
            container=False,
            # One line: Enter sends and Shift+Enter starts a new line; it grows up to max_lines.
            lines=1,
            max_lines=10,
            scale=8,
            elem_id="chat-input",
            # Until the page has loaded the saved chat, a message sent would race with it.
            interactive=False,
        )
        send = gr.Button(i18n("chat.send"), variant="primary", scale=1, min_width=80, elem_id="send", interactive=False)
        stop = gr.Button(i18n("chat.stop"), variant="stop", scale=1, min_width=80, elem_id="stop")
    regenerate = gr.Button(i18n("chat.regenerate"), size="sm", elem_id="regenerate")
    return Pane(
        notice,
        system_prompt,
        earlier,
        chatbot,
        live,
        box,
        send,
        stop,
        regenerate,
        versions,
        previous_version,
        version_label,
        next_version,
    )


def _wire_replies(panel: ChatPanel, pane: Pane, shown: list[gr.State], opened: list, tray: Tray) -> None:
    """`shown`: the conversation id and whether the whole chat shows."""
    conversation_id = shown[0]
    # The message being sent: the box is emptied in the browser at once, and the message goes
    # to the server from here (a hidden field, so that `/send` still takes the message as text).
    sending = gr.Textbox(visible=False)
    stop_key = gr.Textbox(value="", visible=False)
    # A reply streams into the live chat only; regenerate and edit also cut the saved chat
    # above it back to where the turn starts, once.
    streamed = [pane.live, conversation_id]
    restreamed = [*streamed, pane.chatbot]
    inputs = [conversation_id, pane.system_prompt]
    # The growing reply is the progress indicator.
    shown_on = {"show_progress": "hidden"}
    # While a reply streams, Enter and Send leave the box alone: Gradio would skip a second send
    # of the same event, and the text would be lost.
    taken = gr.on(
        [pane.box.submit, pane.send.click],
        None,
        [pane.box],
        [pane.box, sending],
        js=TAKE_MESSAGE_JS,
        queue=False,
        api_visibility="private",
    )
    sent = taken.then(
        panel.send, [sending, *inputs, tray.pending, stop_key], streamed, js=KEYED_JS, api_name="send", **shown_on
    )
    tray.sent(sent)
    for after in (sent.then, sent.failure):
        after(None, js=SENT_JS, queue=False, api_visibility="private")
    # A message that was never saved (refused, or stopped before the reply began) goes back
    # into the box. Gradio runs `.failure` after a Stop too.
    sent.failure(panel.unsent, [sending, pane.box, conversation_id], [pane.box], queue=False, api_visibility="private")
    keyed = [*inputs, shown[1], stop_key]
    replies = [
        sent,
        pane.regenerate.click(panel.regenerate, keyed, restreamed, js=KEYED_JS, api_name="regenerate", **shown_on),
        pane.chatbot.edit(panel.edit, keyed, restreamed, js=BACK_JS, api_name="edit", **shown_on),
    ]
    pane.stop.click(None, cancels=replies)
    # Also for the replies Gradio's cancel misses (one clicked early on a busy machine).
    pane.stop.click(
        panel.stops.stop, [stop_key], None, js=STOP_JS, queue=False, show_progress="hidden", api_visibility="private"
    )
    # After a reply ends, is stopped or is refused: the saved chat with what was saved, speed line
    # included, and then, once the page has drawn it, no live turn under it. Gradio's page runs
    # `.then` listeners only when the event did not fail, hence `.failure` too.
    saved = [component for component in opened if component is not pane.live]
    for event in replies:
        for after in (event.then, event.failure):
            opened_saved = after(panel.open_saved, shown, saved, js=JOIN_JS, api_visibility="private")
            for then in (opened_saved.then, opened_saved.failure):
                then(None, None, pane.live, js=JOINED_JS, queue=False, api_visibility="private")


def _wire_versions(panel: ChatPanel, pane: Pane, shown: list[gr.State], bar: list) -> None:
    focus = bar[0]
    quiet = {"show_progress": "hidden", "api_visibility": "private"}
    pane.previous_version.click(panel.versions.previous_version, [focus, *shown], [pane.chatbot, *bar], **quiet)
    pane.next_version.click(panel.versions.next_version, [focus, *shown], [pane.chatbot, *bar], **quiet)
    pane.chatbot.select(panel.versions.pick_version, shown, bar, **quiet)


def _wire_sidebar(panel: ChatPanel, side: Sidebar, pane: Pane, conversation_id: gr.State, opened: list) -> None:
    side.conversations.input(panel.open, [side.conversations], opened, api_name="open")
    # The chatbot's own clear button starts a new chat; the saved one stays in the list.
    gr.on([side.new_chat.click, pane.chatbot.clear], panel.new_chat, None, opened, api_visibility="private")
    side.search.change(
        panel.search,
        [side.search, conversation_id],
        side.conversations,
        api_visibility="private",
        show_progress="hidden",
    )
    side.rename.click(panel.rename, [conversation_id, side.title, side.search], side.conversations, api_name="rename")
    side.export_md.click(panel.export_markdown, [conversation_id], side.exported, api_visibility="private")
    side.export_json.click(panel.export_json, [conversation_id], side.exported, api_visibility="private")
    side.import_button.upload(panel.import_file, [side.import_button], opened, api_visibility="private")
    side.delete.click(lambda: gr.update(visible=True), None, side.confirm_group, api_visibility="private")
    side.delete_no.click(lambda: gr.update(visible=False), None, side.confirm_group, api_visibility="private")
    side.delete_yes.click(panel.delete, [conversation_id], opened, api_name="delete").then(
        lambda: gr.update(visible=False), None, side.confirm_group, api_visibility="private"
    )
