// The chat pane's page behaviour, run once when the pane mounts (the body of a gr.HTML
// js_on_load: `element` is that component, inside the pane's scroller #chat-scroll).
//
// 1. Follow the reply. The saved chat and the reply streaming under it (#live-chat) scroll
//    together in #chat-scroll; the chatbots' own auto-scroll is off (it forced a layout of the
//    whole conversation after every update). The view follows growing content while the user
//    is at the bottom, and stays where the user scrolled to otherwise. Sending, regenerating,
//    editing a message or opening a chat goes back to the bottom. When the finished reply joins
//    the saved chat (drawn anew there, its blocks out of view not yet laid out: see style.css), a
//    reader further up is put back on the block they were reading, where it was.
// 2. Copy what the model wrote. Inline math reaches the chatbot as `$⁠...⁠$` (a word joiner,
//    U+2060, inside each `$`: see app/ui/chat_display.py); the copy buttons drop the joiners.
// 3. Files dropped on the message box or the chat go to the attach button, as if picked there.
// 4. Gradio's no-op re-assignment of `dir` on each update is skipped: it restyled the whole reply
//    (at the end).
// 5. Stop reaches a reply that Gradio's own cancel misses (clicked before Gradio has sent the
//    reply's event, or before it knows the event's id): each reply's event and Stop carry the same
//    key (app/ui/chat_stream.py, ReplyStops). A reply begun after a Stop gets a new key, taken
//    when the user sends (Enter, Send, Regenerate, an edit), before Gradio sends the event.
// 6. A file bigger than the page takes (Gradio's max_file_size) is not given to Gradio's client,
//    which would refuse it in its own English words: the tray's hidden #attach-unsent has the app
//    refuse it in its own sentence (app/ui/chat_attachments.py), and the files picked or dropped
//    with it go on.
if (!window.vllmChatKey) {
  const fresh = () => Array.from(crypto.getRandomValues(new Uint32Array(4)), n => n.toString(16)).join("-");
  let key = fresh(), stopped = null;
  window.vllmChatKey = () => key;
  window.vllmChatStopped = () => (stopped = key);
  window.vllmChatBegin = () => { if (key === stopped) key = fresh(); };
}
const scroller = element.closest("#chat-scroll");
if (scroller && !scroller.dataset.follows) {
  scroller.dataset.follows = "1";
  // Only the user's own scrolling (wheel, touch, scrollbar, keys) starts or stops the following:
  // up stops it, down to the bottom starts it again. Rows that change size as they come into view
  // move the scroll position too, and must not.
  let follow = true;
  let userUntil = 0, dragging = false, lastTop = 0;
  const byUser = () => dragging || performance.now() < userUntil;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };
  for (const type of ["wheel", "touchmove", "keydown"]) {
    scroller.addEventListener(type, () => { userUntil = performance.now() + 1000; }, {passive: true});
  }
  // A press on the scrollbar is a press on the scroller itself.
  // A press on the track or an arrow scrolls smoothly after the button is up.
  scroller.addEventListener("mousedown", event => {
    if (event.target === scroller) { dragging = true; userUntil = performance.now() + 1000; }
  });
  document.addEventListener("mouseup", () => {
    if (dragging) userUntil = performance.now() + 1000;
    dragging = false;
  });
  scroller.addEventListener("scroll", () => {
    const down = scroller.scrollTop > lastTop;
    lastTop = scroller.scrollTop;
    if (byUser()) {
      if (!down) follow = false;
      else if (scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40) follow = true;
    }
    if (!follow) remember();
  }, {passive: true});
  // The reader's place in the live turn: which row of it, which block of that row's message, and
  // how far below the top of the view.
  let place = null;
  const chat = id => scroller.querySelector(id);
  const rowsOf = el => (el ? Array.from(el.querySelectorAll(".message-row")) : []);
  const blocksOf = row => Array.from(row.querySelectorAll(".md > *"));
  const viewTop = () => scroller.getBoundingClientRect().top;
  const liveRows = () => (chat("#live-chat.joined") ? [] : rowsOf(chat("#live-chat")));
  const remember = () => {
    const rows = liveRows();
    if (!rows.length) return;
    place = null;
    rows.forEach((row, r) => blocksOf(row).forEach((block, b) => {
      const y = block.getBoundingClientRect().top - viewTop();
      if (y <= 0 && (!place || y > place.y)) place = {r, b, y};
    }));
  };
  // The live turn at the end of the saved chat: its rows there (its first row is the user's
  // message, drawn), or null. The saved turn may have one row more: the speed line of a reply
  // that was stopped.
  const savedTurn = () => {
    const rows = liveRows(), saved = rowsOf(chat("#chatbot"));
    if (!rows.length) return null;
    for (const start of [saved.length - rows.length, saved.length - rows.length - 1]) {
      if (start >= 0 && saved[start].textContent === rows[0].textContent) return saved.slice(start);
    }
    return null;
  };
  const drawn = rows => !rows.some(row => row.querySelector(".md:empty"));
  // A reply ended: the saved chat is about to show the finished turn (app/ui/chat.py), drawn anew,
  // a moment after it has the text (Gradio draws Markdown asynchronously). Until it is drawn
  // there, the live turn shows and the saved one hides (rows not yet drawn hide too); in the
  // frame where it is, the live turn hides instead, and a reader further up stays on the same
  // block. No frame shows the turn twice or not at all. The page then empties the live chat.
  let joining = null, joined = null;
  const join = () => {
    const turn = savedTurn();
    if (!turn) return false;
    if (!drawn(turn)) {
      for (const row of turn) row.classList.add("joining");
      return false;
    }
    for (const row of turn) row.classList.remove("joining");
    scroller.classList.remove("joining");
    const block = !follow && place && turn[place.r] && blocksOf(turn[place.r])[place.b];
    const live = liveRows();
    joined = {rows: live.length, first: live[0].textContent};
    chat("#live-chat").classList.add("joined");
    if (block) {
      // Laid out at their real sizes for once (not yet seen, they count 3em each): the block's
      // place, and the room under it, are then what the reader had.
      const blocks = turn.flatMap(blocksOf);
      for (const each of blocks) each.style.contentVisibility = "visible";
      scroller.scrollTop += block.getBoundingClientRect().top - viewTop() - place.y;
      requestAnimationFrame(() => { for (const each of blocks) each.style.contentVisibility = ""; });
    }
    place = null;
    return true;
  };
  // Before the saved chat comes: from now on each change of the page tries to join. `turns`
  // counts the turns begun on this page: a message sent meanwhile keeps its live turn.
  let turns = 0, joiningTurn = 0;
  window.vllmChatJoin = () => {
    joiningTurn = ++turns;
    scroller.classList.add("joining");
    joining = () => { if (join()) stopJoining(); };
  };
  const stopJoining = () => {
    joining = null;
    scroller.classList.remove("joining");
    for (const row of scroller.querySelectorAll(".joining")) row.classList.remove("joining");
  };
  // Once the page has the saved chat: resolves when joined, or when the saved chat is drawn
  // without the turn (a message refused), or after a second; to whether the live chat is still
  // that turn's. Gradio runs both of the listeners after a stopped reply, so this may come twice.
  window.vllmChatJoined = () => new Promise(resolve => {
    const until = performance.now() + 1000;
    let settled = 0;
    const poll = () => {
      if (joining) joining();
      settled = drawn(rowsOf(chat("#chatbot"))) ? settled + 1 : 0;
      if (!joining || settled > 2 || performance.now() > until || !liveRows().length) {
        if (joiningTurn === turns) stopJoining();
        resolve(joiningTurn === turns);
      } else setTimeout(poll, 16);
    };
    poll();
  });
  // The live chat shows again once it holds another turn (or none).
  // (Called on every update of a streaming reply: nothing is looked up unless joining or joined.)
  new MutationObserver(() => {
    const live = chat("#live-chat.joined");
    if (joining) joining();
    else if (live) {
      const rows = rowsOf(live);
      if (!rows.length || rows.length !== joined.rows || rows[0].textContent !== joined.first) live.classList.remove("joined");
    }
  }).observe(scroller, {childList: true, subtree: true});
  // Measured after layout, before paint: no layout of its own, and no frame drawn off the bottom.
  const grown = new ResizeObserver(() => {
    if (follow) toBottom();
    else remember();
  });
  // The chatbots may mount after this script runs: watch the scroller's children as they come.
  const watch = () => { for (const child of scroller.children) grown.observe(child); };
  new MutationObserver(watch).observe(scroller, {childList: true});
  watch();
  const back = () => {
    window.vllmChatBegin();
    // The chat may shrink now (an edit or a regenerate cuts it): that scroll is not the user's,
    // even a moment after their last key or wheel.
    userUntil = 0;
    dragging = false;
    follow = true;
    place = null;
    turns++;
    stopJoining();
    toBottom();
  };
  // (An edited message is submitted from inside the chatbot: its event calls this.)
  window.vllmChatBack = back;
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
if (!document.body.dataset.keepsBigFiles) {
  document.body.dataset.keepsBigFiles = "1";
  let unsent = [];
  window.vllmChatUnsent = () => { const named = JSON.stringify(unsent); unsent = []; return named; };
  document.addEventListener("change", event => {
    const input = event.target, limit = window.gradio_config?.max_file_size;
    if (!limit || !(input instanceof HTMLInputElement) || input.type !== "file") return;
    if (!input.closest("#attachment-tray") || !input.files) return;
    const files = Array.from(input.files), big = files.filter(file => file.size > limit);
    const button = document.querySelector("#attach-unsent");
    if (!big.length || !button) return;
    unsent = big.map(file => ({name: file.name, size: file.size}));
    button.click();
    const kept = new DataTransfer();
    files.filter(file => file.size <= limit).forEach(file => kept.items.add(file));
    input.files = kept.files;
    if (!kept.files.length) event.stopImmediatePropagation();
  }, true);
}
// Gradio's components (its chat messages among them) assign their `dir` to itself on every
// update: Svelte compiles a dynamic `dir` so, for Chromium to recompute `dir="auto"` as the text
// changes. But Chromium then restyles and lays out the whole element even when the value is
// "ltr" and stays so: 20-30 ms for a 2,000-token reply, on every streamed update. Assigning any
// element the direction it already has, other than "auto", is skipped: it would change nothing
// but a mutation record, which nothing here watches.
const dir = Object.getOwnPropertyDescriptor(HTMLElement.prototype, "dir");
if (dir && !dir.set.vllmChatSame) {
  const set = function (value) {
    const text = `${value}`;
    if (text.toLowerCase() === "auto" || this.getAttribute("dir") !== text) dir.set.call(this, text);
  };
  set.vllmChatSame = true;
  Object.defineProperty(HTMLElement.prototype, "dir", {...dir, set});
}
if (navigator.clipboard && !navigator.clipboard.vllmChatCopy) {
  const write = navigator.clipboard.writeText.bind(navigator.clipboard);
  navigator.clipboard.writeText = text => write(String(text).replace(/\$\u2060|\u2060\$/g, "$"));
  navigator.clipboard.vllmChatCopy = true;
}
