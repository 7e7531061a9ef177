"""Files and rows from elsewhere: an import is checked whole before anything is stored, and
stats already in the database draw whatever they hold."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from app.conversations import MAX_IMPORT_BYTES, Conversations, ReplyStats, check_import_size, stats_line
from app.errors import UserError

STATS = {
    "model": "tiny",
    "sampling": {"temperature": 0.7, "seed": None, "stop": ["</s>"]},
    "prompt_tokens": 12,
    "completion_tokens": 40,
    "ttft": 0.25,
    "elapsed": 2.25,
    "finish_reason": "stop",
    "thinking": 1.5,
}
GOOD = {
    "format": "vllm-chat/conversation",
    "version": 1,
    "title": "Poem",
    "system_prompt": "Be brief.",
    "messages": [
        {"role": "user", "content": "写一首诗", "created": 1_700_000_000.5},
        {"role": "assistant", "content": "海上生明月", "created": 1_700_000_001, "stats": STATS},
    ],
}


@pytest.fixture
def store(tmp_path: Path) -> Conversations:
    store = Conversations(tmp_path / "history.sqlite3")
    store.create("keep me")
    return store


def changed(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the value at a dotted path replaced (a number is a list index)."""
    data = copy.deepcopy(GOOD)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = data
    for p in parents:
        target = target[p]
    target[last] = value
    return data


def assert_refused(store: Conversations, data: Any) -> UserError:
    with pytest.raises(UserError) as err:
        store.import_json(data)
    assert err.value.key in {"conversations.bad_import", "conversations.not_json", "conversations.not_json_at"}
    assert "JSON" in err.value.message("en") and "JSON" in err.value.message("zh-CN")
    assert [c.title for c in store.list()] == ["keep me"]
    assert store._db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    return err.value


def test_a_good_file_and_an_export_with_nulls_import_whole(store: Conversations) -> None:
    conv = store.import_json(json.dumps(GOOD, ensure_ascii=False))
    assert (conv.title, conv.system_prompt) == ("Poem", "Be brief.")
    user, reply = store.messages(conv.id)
    assert (user.content, user.created) == ("写一首诗", 1_700_000_000.5)
    assert reply.stats == ReplyStats.from_dict(STATS)
    # What an export writes for a reply with no model or first token, and keys other apps add.
    nulls = {**STATS, "model": None, "ttft": None, "finish_reason": None, "future_field": [1]}
    data = changed("messages.1.stats", nulls) | {"title": "  two\n lines  ", "system_prompt": None}
    data["messages"][0]["name"] = "alice"
    conv = store.import_json(data)
    assert (conv.title, conv.system_prompt) == ("two lines", "")
    assert store.messages(conv.id)[1].stats.ttft is None


BAD = {
    "ttft as text": changed("messages.1.stats.ttft", "soon"),
    "number as text": changed("messages.1.stats.ttft", "0.5"),
    "null count": changed("messages.1.stats.completion_tokens", None),
    "null elapsed": changed("messages.1.stats.elapsed", None),
    "null sampling": changed("messages.1.stats.sampling", None),
    "bool count": changed("messages.1.stats.prompt_tokens", True),
    "fractional count": changed("messages.1.stats.prompt_tokens", 1.5),
    "negative count": changed("messages.1.stats.completion_tokens", -1),
    "huge count": changed("messages.1.stats.completion_tokens", 10**20),
    "negative elapsed": changed("messages.1.stats.elapsed", -3),
    "thinking as text": changed("messages.1.stats.thinking", "long"),
    "stats a list": changed("messages.1.stats", [1]),
    "model a number": changed("messages.1.stats.model", 5),
    "nested sampling": changed("messages.1.stats.sampling", {"a": {"b": 1}}),
    "NaN sampling": changed("messages.1.stats.sampling", {"temperature": float("nan")}),
    "NaN ttft": changed("messages.1.stats.ttft", float("nan")),
    "infinite elapsed": changed("messages.1.stats.elapsed", float("inf")),
    "NaN timestamp": changed("messages.0.created", float("nan")),
    "-inf timestamp": changed("messages.0.created", float("-inf")),
    "timestamp past 9999": changed("messages.0.created", 1e20),
    "timestamp as text": changed("messages.0.created", "yesterday"),
    "title of 1,000,000 characters": changed("title", "t" * 1_000_000),
    "title of 201 characters": changed("title", "t" * 201),
    "title a number": changed("title", 5),
    "system prompt a list": changed("system_prompt", ["x"]),
    "no content": changed("messages.0.content", None),
    "content a number": changed("messages.0.content", 5),
    "image block": changed("messages.0.content", [{"type": "image_url", "image_url": {"url": "x"}}]),
    "block text a number": changed("messages.0.content", [{"type": "text", "text": 5}]),
    "content too long": changed("messages.0.content", "x" * 1_000_001),
    "blocks together too long": changed("messages.0.content", [{"text": "x" * 600_000}] * 2),
    "lone surrogate": changed("messages.0.content", "\ud800"),
    "tool role": changed("messages.0.role", "tool"),
    "messages not a list": changed("messages", {"0": GOOD["messages"][0]}),
    "only a system prompt": {"messages": [{"role": "system", "content": "Be kind."}]},
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_a_bad_shape_is_refused_with_the_one_sentence(store: Conversations, data: dict[str, Any]) -> None:
    assert_refused(store, data)  # decoded,
    assert_refused(store, json.dumps(data).encode())  # and as the file's bytes (NaN as JSON's NaN)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000,  # Python's JSON parser recurses per bracket
        b'{"messages": [{"role": "user", "content": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
        b"\xff\xfe not UTF-8",
        b'{"messages": [{"role": "user", "content": "x", "created": 1' + b"0" * 5000 + b"}]}",
        b"",
    ],
    ids=["brackets", "deep content", "not UTF-8", "5,000-digit number", "empty"],
)
def test_a_broken_file_is_refused_with_the_one_sentence(store: Conversations, raw: bytes) -> None:
    assert_refused(store, raw)
    assert_refused(store, raw.decode("utf-8", "replace"))


def test_a_file_that_is_not_json_is_told_by_its_line_not_the_parser(store: Conversations) -> None:
    # A comma left out at the end of line 2: the parser stops at the start of line 3.
    raw = json.dumps(GOOD, indent=1).encode().replace(b",\n", b"\n", 1)
    error = assert_refused(store, raw)
    assert error.message("en") == "The file is not valid JSON (line 3). Choose a JSON file exported from vllm-chat."
    assert error.message("zh-CN") == "此文件不是有效的 JSON（第 3 行）。请选择从 vllm-chat 导出的 JSON 文件。"


def test_a_file_over_50_mb_is_refused_before_parsing(store: Conversations) -> None:
    check_import_size(MAX_IMPORT_BYTES)
    with pytest.raises(UserError) as err:
        check_import_size(MAX_IMPORT_BYTES + 1)
    assert err.value.key == "conversations.bad_import"
    padded = json.dumps(GOOD).encode() + b" " * MAX_IMPORT_BYTES  # valid JSON, too big
    assert "50 MB" in assert_refused(store, padded).message("en")


def test_a_row_the_database_refuses_stores_nothing(store: Conversations) -> None:
    store._db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN new.content = '海上生明月'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    assert "refused" in assert_refused(store, GOOD).message("en")


# ---- odd stats already stored -------------------------------------------------------------------


ODD_ROWS = [
    # column = value written straight into SQLite, and what the reply's stats read back as
    ("ttft = 'soon'", {"ttft": None}),
    ("elapsed = -3", {"elapsed": 0.0}),
    ("completion_tokens = 'many'", {"completion_tokens": 0}),
    ("completion_tokens = 40.0", {"completion_tokens": 40}),
    ("prompt_tokens = 1e300", {"prompt_tokens": 0}),
    ("ttft = 9e999", {"ttft": None}),  # infinity
    ("ttft = NULL, model = NULL, finish_reason = NULL", {"ttft": None, "model": None}),
    ("sampling = 'not json'", {"sampling": {}}),
    ("sampling = '[1, 2]'", {"sampling": {}}),
    ("sampling = '" + "[" * 100_000 + "'", {"sampling": {}}),
    ("model = x'ff', finish_reason = x'00'", {"model": None, "finish_reason": None}),  # blobs
    ("elapsed = 'long'", {"elapsed": 0.0}),
]


def test_odd_stats_in_the_file_still_draw(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = Conversations(path)
    conv = store.create("odd")
    good = ReplyStats("tiny", {"temperature": 0.7}, 12, 40, 0.25, 2.25, "abort")
    replies = [store.add_message(conv.id, "assistant", f"reply {i}", good) for i in range(len(ODD_ROWS))]
    store.close()
    db = sqlite3.connect(path)
    for reply, (assignment, _) in zip(replies, ODD_ROWS, strict=True):
        db.execute(f"UPDATE replies SET {assignment} WHERE message_id = ?", (reply.id,))
    db.commit()
    db.close()

    store = Conversations(path)
    for message, (assignment, expected) in zip(store.messages(conv.id), ODD_ROWS, strict=True):
        for name, value in expected.items():
            assert getattr(message.stats, name) == value, assignment
        line = stats_line(message.stats, "en")
        assert stats_line(message.stats, "zh-CN")
        if "ttft" in expected:
            assert "first token" not in line and "tokens/s" not in line, assignment
    # What draws also exports, and the export imports again.
    assert store.import_json(json.dumps(store.export_json(conv.id)).encode()).title == "odd"


def test_stats_of_any_shape_make_a_line() -> None:
    odd = {"ttft": "soon", "elapsed": None, "completion_tokens": True, "model": 3, "sampling": "x", "extra": 1}
    assert ReplyStats.from_dict(odd) == ReplyStats()
    assert stats_line(ReplyStats(ttft=float("nan"), elapsed=float("inf"), completion_tokens=-5)) == "0 tokens"
    assert stats_line(ReplyStats(model="m", completion_tokens=11, ttft=0.5, elapsed=1.5)) == (
        "m · 11 tokens · first token 0.50 s · 10.0 tokens/s"
    )
