// The chat pane's page behaviour, run once when the pane mounts (the body of a gr.HTML
// js_on_load: `element` is that component, inside the pane's scroller #chat-scroll).
//
// 1. Follow the reply. The saved chat and the reply streaming under it (#live-chat) scroll
//    together in #chat-scroll; the chatbots' own auto-scroll is off (it forced a layout of the
//    whole conversation after every update). The view follows growing content while the user
//    is at the bottom, and stays where the user scrolled to otherwise. Sending, regenerating
//    or opening a chat goes back to the bottom.
// 2. Copy what the model wrote. Inline math reaches the chatbot as `$⁠...⁠$` (a word joiner,
//    U+2060, inside each `$`: see app/ui/chat_display.py); the copy buttons drop the joiners.
// 3. Files dropped on the message box or the chat go to the attach button, as if picked there.
const scroller = element.closest("#chat-scroll");
if (scroller && !scroller.dataset.follows) {
  scroller.dataset.follows = "1";
  // Only the user's own scrolling (wheel, touch, scrollbar, keys) stops the following: rows
  // that change size as they come into view move the scroll position too, and must not.
  let follow = true;
  let byUser = false;
  const toBottom = () => { byUser = false; scroller.scrollTop = scroller.scrollHeight; };
  for (const type of ["wheel", "touchstart", "keydown"]) {
    scroller.addEventListener(type, () => { byUser = true; }, {passive: true});
  }
  // A press on the scrollbar is a press on the scroller itself.
  scroller.addEventListener("mousedown", event => { if (event.target === scroller) byUser = true; });
  scroller.addEventListener("scroll", () => {
    if (scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40) follow = true;
    else if (byUser) follow = false;
  }, {passive: true});
  // Measured after layout, before paint: no layout of its own, and no frame drawn off the bottom.
  const grown = new ResizeObserver(() => { if (follow) toBottom(); });
  // The chatbots may mount after this script runs: watch the scroller's children as they come.
  const watch = () => { for (const child of scroller.children) grown.observe(child); };
  new MutationObserver(watch).observe(scroller, {childList: true});
  watch();
  const back = () => { follow = true; toBottom(); };
  document.addEventListener("click", event => {
    if (event.target.closest("#send, #regenerate, .conversation-list, #new-chat")) back();
  }, true);
  document.addEventListener("keydown", event => {
    if (event.key === "Enter" && !event.shiftKey && event.target.closest("#chat-input")) back();
  }, true);
}
if (!document.body.dataset.dropsAttach) {
  document.body.dataset.dropsAttach = "1";
  const onChat = event => event.target.closest && event.target.closest("#chat-input, #chat-scroll");
  const hasFiles = event => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
  document.addEventListener("dragover", event => { if (onChat(event) && hasFiles(event)) event.preventDefault(); });
  document.addEventListener("drop", event => {
    const input = document.querySelector("#attachment-tray input[type=file]");
    if (!onChat(event) || !hasFiles(event) || !input) return;
    event.preventDefault();
    input.files = event.dataTransfer.files;
    input.dispatchEvent(new Event("change", {bubbles: true}));
  });
}
if (navigator.clipboard && !navigator.clipboard.vllmChatCopy) {
  const write = navigator.clipboard.writeText.bind(navigator.clipboard);
  navigator.clipboard.writeText = text => write(String(text).replace(/\$\u2060|\u2060\$/g, "$"));
  navigator.clipboard.vllmChatCopy = true;
}
