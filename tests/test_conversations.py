"""The conversation store against real SQLite files, including a writer killed mid-write."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.conversations import Conversations, ReplyStats, stats_line, title_from
from app.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> Conversations:
    return Conversations(tmp_path / "history.sqlite3")


def stats(**kwargs) -> ReplyStats:
    values = dict(
        model="tiny",
        sampling={"temperature": 0.7},
        prompt_tokens=12,
        completion_tokens=40,
        ttft=0.25,
        elapsed=2.25,
        finish_reason="stop",
    )
    return ReplyStats(**{**values, **kwargs})


def test_messages_and_reply_metadata_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = Conversations(path)
    conv = store.create("你好！请写一首关于大海的短诗。\n第二行", system_prompt="Be brief.")
    store.add_message(conv.id, "user", "你好！请写一首关于大海的短诗。\n第二行")
    store.add_message(conv.id, "assistant", "  大海 🌊\n\tdef f():\n        return 1  ", stats())
    store.close()

    reopened = Conversations(path)
    assert reopened.get(conv.id).title == "你好！请写一首关于大海的短诗。"
    assert reopened.get(conv.id).system_prompt == "Be brief."
    user, reply = reopened.messages(conv.id)
    assert user.content == "你好！请写一首关于大海的短诗。\n第二行"
    # Exact text, whitespace and indentation included.
    assert reply.content == "  大海 🌊\n\tdef f():\n        return 1  "
    assert reply.stats == stats()
    assert reply.stats.tokens_per_second == pytest.approx(39 / 2.0)
    assert user.stats is None
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_list_is_newest_first_and_search_finds_text_in_any_message(store: Conversations) -> None:
    first = store.create("Paris trip")
    store.add_message(first.id, "user", "What is the capital of France?")
    second = store.create("数学")
    store.add_message(second.id, "user", "机器学习是什么？")
    time.sleep(0.01)
    store.add_message(first.id, "assistant", "Paris is the capital.", stats())

    assert [c.id for c in store.list()] == [first.id, second.id]  # first was updated last
    assert [c.id for c in store.list("学习")] == [second.id]
    assert [c.id for c in store.list("paris")] == [first.id]  # case-insensitive for ASCII
    assert [c.id for c in store.list("capital of")] == [first.id]
    assert store.list("100%") == []  # LIKE wildcards are taken literally
    assert store.list("no such words anywhere") == []


def test_rename_delete_and_errors(store: Conversations) -> None:
    conv = store.create("hello")
    store.add_message(conv.id, "user", "hello")
    assert store.rename(conv.id, "  Trip   plans ").title == "Trip plans"
    assert store.list()[0].title == "Trip plans"
    with pytest.raises(UserError) as err:
        store.rename(conv.id, "   ")
    assert err.value.key == "conversations.empty_title"
    store.delete(conv.id)
    assert store.list() == []
    # Its messages went with it (foreign keys are on).
    assert store._db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    with pytest.raises(UserError) as err:
        store.add_message(conv.id, "user", "late")
    assert "no longer exists" in err.value.message("en")
    assert "已不存在" in err.value.message("zh-CN")


def test_export_markdown_and_json_and_import_round_trip(store: Conversations) -> None:
    conv = store.create("Poem", system_prompt="你是诗人。")
    store.add_message(conv.id, "user", "写一首诗")
    store.add_message(conv.id, "assistant", "海上生明月，\n天涯共此时。", stats(finish_reason="abort"))

    markdown = store.export_markdown(conv.id, "zh-CN")
    assert markdown.startswith("# Poem\n")
    assert "## 系统\n\n你是诗人。" in markdown
    assert "## 用户\n\n写一首诗" in markdown
    assert "海上生明月，\n天涯共此时。" in markdown
    assert "已停止" in markdown  # the stopped reply says so
    assert "## Assistant" in store.export_markdown(conv.id, "en")

    exported = store.export_json(conv.id)
    text = json.dumps(exported, ensure_ascii=False)
    imported = store.import_json(text.encode("utf-8"))
    assert imported.id != conv.id
    assert imported.title == "Poem"
    assert imported.system_prompt == "你是诗人。"
    assert [(m.role, m.content, m.stats) for m in store.messages(imported.id)] == [
        (m.role, m.content, m.stats) for m in store.messages(conv.id)
    ]


def test_import_accepts_an_openai_message_list(store: Conversations) -> None:
    conv = store.import_json(
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello!"},
        ]
    )
    assert conv.title == "Hi there"
    assert conv.system_prompt == "Be kind."
    assert [(m.role, m.content) for m in store.messages(conv.id)] == [
        ("user", "Hi there"),
        ("assistant", "Hello!"),
    ]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (b"{not json", "conversations.not_json_at"),
        (b"[]", "conversations.bad_import"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', "conversations.bad_import"),
        (b'{"messages": [{"role": "user"}]}', "conversations.bad_import"),
        (b'"just a string"', "conversations.bad_import"),
    ],
)
def test_import_rejects_bad_files_with_a_sentence_and_saves_nothing(
    store: Conversations, data: bytes, key: str
) -> None:
    store.create("keep me")
    with pytest.raises(UserError) as err:
        store.import_json(data)
    assert err.value.key == key
    assert "JSON" in err.value.message("en") and "JSON" in err.value.message("zh-CN")
    assert [c.title for c in store.list()] == ["keep me"]


def test_title_and_stats_line() -> None:
    assert title_from("\n\n  Hello   world \nmore") == "Hello world"
    assert len(title_from("x" * 500)) == 60
    line = stats_line(stats(), "en")
    assert line == "tiny · 40 tokens · first token 0.25 s · 19.5 tokens/s"
    assert "token/秒" in stats_line(stats(), "zh-CN")
    assert stats_line(stats(finish_reason="abort", completion_tokens=1), "en").endswith("stopped")


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from app.conversations import Conversations, ReplyStats

    store = Conversations(Path(sys.argv[1]))
    conv = store.create("crash test")
    big = "回复" * 300_000  # ~1.8 MB per reply: each write takes a while, so the kill lands mid-write
    for i in range(10_000):
        q = store.add_message(conv.id, "user", f"question {i}")
        meta = ReplyStats(model="m", completion_tokens=i)
        store.add_message(conv.id, "assistant", f"reply {i} " + big, meta)
        print(i, flush=True)
    """
)


def test_killing_a_writer_mid_write_keeps_every_older_reply(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    committed = -1
    try:
        # Let several replies land, then kill it without warning while it writes the next.
        while committed < 5:
            line = proc.stdout.readline()
            assert line, "the writer died early"
            committed = int(line)
        time.sleep(0.013)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Lines still in the pipe: replies committed before the kill.
        committed = max([committed, *(int(line) for line in proc.stdout.read().split())])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Conversations(path)
    (conv,) = store.list()
    replies = [m for m in store.messages(conv.id) if m.role == "assistant"]
    # Every reply the writer reported is there, whole; at most the one in flight is missing.
    assert len(replies) >= committed + 1
    assert len(replies) <= committed + 2
    for i, reply in enumerate(replies):
        assert reply.content == f"reply {i} " + "回复" * 300_000
        assert reply.stats.completion_tokens == i
    # And the store still takes writes.
    store.add_message(conv.id, "user", "after the crash")
    assert store.messages(conv.id)[-1].content == "after the crash"
