"""Reply versions and branches in the store: regenerate keeps the earlier replies, an edit
starts a branch beside the old one, the model is sent the shown path only, and the tree
survives export, import and reopening."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.conversations import Conversations, begin, edit_turn, new_turn, regenerate_turn, save_reply
from app.engine import ChatDelta
from app.errors import UserError

DONE = ChatDelta("", prompt_tokens=7, completion_tokens=3, finish_reason="stop", ttft=0.1, elapsed=0.4)


@pytest.fixture
def store(tmp_path: Path) -> Conversations:
    return Conversations(tmp_path / "history.sqlite3")


def chat(store: Conversations, turn, reply: str) -> int:
    """Run one turn as the chat tab does: begin when the engine accepts, save the reply."""
    started = begin(store, turn, "")
    save_reply(store, started, reply, "tiny", {"temperature": 0.7}, DONE, "abort")
    return started.conversation_id


def shown(store: Conversations, conversation_id: int) -> list[tuple[str, int, int]]:
    return [(m.content, m.version, m.versions) for m in store.messages(conversation_id)]


def test_regenerate_keeps_earlier_replies_as_versions(store: Conversations) -> None:
    cid = chat(store, new_turn(store, None, "Name a colour"), "red")
    chat(store, regenerate_turn(store, cid), "green")
    chat(store, regenerate_turn(store, cid), "blue")
    assert shown(store, cid) == [("Name a colour", 1, 1), ("blue", 3, 3)]
    blue = store.messages(cid)[1]
    assert shown(store, cid)[1] == ("blue", 3, 3) and blue.stats.completion_tokens == 3
    assert store.show_version(cid, blue.id, -1)[1].content == "green"
    green = store.messages(cid)[1]
    assert store.show_version(cid, green.id, -1)[1].content == "red"
    red = store.messages(cid)[1]
    # Past either end nothing changes.
    assert store.show_version(cid, red.id, -1)[1].content == "red"

    # The chat goes on from the version shown: the model is sent that path only.
    follow = new_turn(store, cid, "Why?")
    assert follow.prompt("Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "Why?"},
    ]
    chat(store, follow, "Because.")
    assert [m.content for m in store.messages(cid)] == ["Name a colour", "red", "Why?", "Because."]
    # Switching back to "blue" shows blue's own path, without the follow-up made under "red".
    assert [m.content for m in store.show_version(cid, red.id, 2)] == ["Name a colour", "blue"]
    # ...and back to "red" finds the follow-up again.
    assert [m.content for m in store.show_version(cid, blue.id, -2)] == ["Name a colour", "red", "Why?", "Because."]


def test_an_edit_starts_a_branch_and_the_old_one_stays(store: Conversations) -> None:
    cid = chat(store, new_turn(store, None, "one"), "reply one")
    chat(store, new_turn(store, cid, "two"), "reply two")
    two = store.messages(cid)[2]

    edit = edit_turn(store, cid, two.id, "TWO")
    assert [m["content"] for m in edit.prompt("")] == ["one", "reply one", "TWO"]
    chat(store, edit, "reply TWO")
    assert shown(store, cid) == [("one", 1, 1), ("reply one", 1, 1), ("TWO", 2, 2), ("reply TWO", 1, 1)]
    edited = store.messages(cid)[2]
    assert [m.content for m in store.show_version(cid, edited.id, -1)] == ["one", "reply one", "two", "reply two"]

    # The first message edited: a second first message, with nothing after it but its reply.
    first = store.messages(cid)[0]
    chat(store, edit_turn(store, cid, first.id, "ONE"), "reply ONE")
    assert shown(store, cid) == [("ONE", 2, 2), ("reply ONE", 1, 1)]


def test_a_turn_that_never_began_saves_nothing(store: Conversations) -> None:
    cid = chat(store, new_turn(store, None, "q"), "a")
    new_turn(store, cid, "refused by the engine")
    regenerate_turn(store, cid)
    assert [m.content for m in store.messages(cid)] == ["q", "a"]
    with pytest.raises(UserError) as refused:
        edit_turn(store, cid, store.messages(cid)[1].id, "not mine")
    assert refused.value.message("en") == "Only your own messages can be edited."
    with pytest.raises(UserError, match="empty"):
        new_turn(store, cid, "   ")
    with pytest.raises(UserError) as nothing:
        regenerate_turn(store, None)
    assert "no reply to regenerate" in nothing.value.message("en")


def test_export_carries_the_tree_and_import_restores_it(store: Conversations, tmp_path: Path) -> None:
    cid = chat(store, new_turn(store, None, "q"), "alpha")
    chat(store, regenerate_turn(store, cid), "beta")
    chat(store, new_turn(store, cid, "more"), "done")
    exported = store.export_json(cid)
    assert [(m["content"], m["parent"]) for m in exported["messages"]] == [
        ("q", None),
        ("alpha", 0),
        ("beta", 0),
        ("more", 2),
        ("done", 3),
    ]
    assert exported["shown"] == 4
    # Markdown holds the shown path only.
    markdown = store.export_markdown(cid)
    assert "beta" in markdown and "alpha" not in markdown

    imported = store.import_json(json.dumps(exported).encode())
    assert shown(store, imported.id) == shown(store, cid)
    second = store.messages(imported.id)[1]
    assert [m.content for m in store.show_version(imported.id, second.id, -1)] == ["q", "alpha"]
    # Reopened, the file shows the version shown last.
    reopened = Conversations(tmp_path / "history.sqlite3")
    assert [m.content for m in reopened.messages(imported.id)] == ["q", "alpha"]


def test_an_import_with_a_broken_tree_is_refused_with_one_sentence(store: Conversations) -> None:
    loop = {
        "messages": [{"role": "user", "content": "a", "parent": 1}, {"role": "assistant", "content": "b", "parent": 0}]
    }
    with pytest.raises(UserError) as refused:
        store.import_json(loop)
    assert (
        "not a conversation this app can import (messages.0.parent: not an earlier message)"
        in refused.value.message("en")
    )
    with pytest.raises(UserError, match=r"\(shown: no message 5\)"):
        store.import_json({"shown": 5, "messages": [{"role": "user", "content": "a"}]})
    assert store.list() == []
    # A version-1 file (no parents) is one path, as before.
    old = store.import_json(
        {"version": 1, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    )
    assert shown(store, old.id) == [("a", 1, 1), ("b", 1, 1)]
