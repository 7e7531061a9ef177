"""The history file over time: schema versions, the full-text index, private file modes.

`fixtures/history-v1.sqlite3` was written by the store as it was before schema versions
(user_version 0, no search index): three conversations, one renamed, one with a system
prompt, replies with stats, Chinese text. It must open with everything in it, searchable.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from app.conversations import Conversations, ReplyStats
from app.history import migrations
from benchmarks.history_search import QUERIES, build, measure, report

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "history-v1.sqlite3"


def v1_copy(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    shutil.copyfile(FIXTURE, path)
    return path


def ids(store: Conversations, search: str) -> list[int]:
    return [c.id for c in store.list(search)]


def index_matches_text(store: Conversations) -> None:
    for index in ("messages_fts", "titles_fts"):
        # rank 1: compare the index with the table's text, not only with itself.
        store._db.execute(f"INSERT INTO {index}({index}, rank) VALUES ('integrity-check', 1)")


def test_a_file_from_before_versions_is_upgraded_with_everything_in_it(tmp_path: Path) -> None:
    assert not Path(f"{FIXTURE}-wal").exists() and not Path(f"{FIXTURE}-shm").exists()
    path = v1_copy(tmp_path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 0
    store = Conversations(path)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST

    assert [(c.id, c.title, c.system_prompt) for c in store.list()] == [
        (3, "Python 函数 question", ""),  # renamed last, so first
        (2, "你好！请写一首关于大海的短诗。", "你是一位诗人，回答要简短。"),
        (1, "What is the capital of France?", ""),
    ]
    assert [(m.role, m.content, m.stats) for m in store.messages(2)] == [
        ("user", "你好！请写一首关于大海的短诗。", None),
        (
            "assistant",
            "海上生明月，\n天涯共此时。🌊",
            ReplyStats("Qwen/Qwen3-0.6B", {"temperature": 0.6}, 30, 21, 0.2, 1.2, "abort"),
        ),
        ("user", "再写一首关于机器学习的。", None),
        ("assistant", "机器在学习，\n数据如潮水。", ReplyStats("Qwen/Qwen3-0.6B", {}, 60, 4096, 0.25, 40.25, "length")),
    ]
    reply = store.messages(1)[1]
    assert reply.stats == ReplyStats("Qwen/Qwen3-0.6B", {"temperature": 0.7, "top_p": 0.8}, 15, 9, 0.12, 0.52, "stop")
    assert [m.content for m in store.messages(3)] == [
        "def f():\n    return 1\nWhat does this do?",
        "  It returns 1.\n\tAlways.  ",
    ]
    assert [m.id for m in store.messages(2)] == [3, 4, 5, 6]
    # One path: each message follows the one before it, the only version of its turn.
    assert [(m.parent_id, m.version, m.versions) for m in store.messages(2)] == [
        (None, 1, 1),
        (3, 1, 1),
        (4, 1, 1),
        (5, 1, 1),
    ]
    regenerated = store.add_child(2, 5, "assistant", "新的回答")
    assert [(m.content, m.version, m.versions) for m in store.messages(2)][-1] == ("新的回答", 2, 2)
    assert store.show_version(2, regenerated.id, -1)[-1].content == "机器在学习，\n数据如潮水。"

    # The old rows are in the new index.
    index_matches_text(store)
    assert ids(store, "机器学习") == [2]
    assert ids(store, "学习") == [2]  # two characters: found without the index
    assert ids(store, "PARIS") == [1]
    assert ids(store, "函数") == [3]  # in the renamed title only
    assert ids(store, "returns always") == [3]
    assert ids(store, "capital 函数") == []
    store.close()

    reopened = Conversations(path)  # already at the latest version: nothing runs twice
    assert ids(reopened, "机器学习") == [2]
    index_matches_text(reopened)


def test_a_new_file_has_the_schema_an_upgraded_one_has(tmp_path: Path) -> None:
    def schema(db: sqlite3.Connection) -> dict[str, object]:
        names = db.execute("SELECT type, name FROM sqlite_master ORDER BY name").fetchall()
        columns = {t: db.execute(f"PRAGMA table_xinfo({t})").fetchall() for _, t in names if _ == "table"}
        return {"names": names, "columns": columns}

    new = Conversations(tmp_path / "new.sqlite3")
    upgraded = Conversations(v1_copy(tmp_path))
    assert schema(new._db) == schema(upgraded._db)
    assert new._db.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST


def test_a_failed_step_leaves_the_file_at_the_version_before(tmp_path: Path, monkeypatch) -> None:
    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("power cut")

    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    monkeypatch.setattr(migrations, "LATEST", migrations.LATEST + 1)
    path = v1_copy(tmp_path)
    with pytest.raises(RuntimeError):
        Conversations(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == migrations.LATEST - 1
    assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'half_done'").fetchall()


def test_several_openers_at_once_migrate_once(tmp_path: Path) -> None:
    path = v1_copy(tmp_path)
    stores, errors = [], []

    def open_it() -> None:
        try:
            stores.append(Conversations(path))
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ids(stores[0], "机器学习") == [2]
    index_matches_text(stores[0])


def test_a_file_from_a_newer_app_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    Conversations(path).create("from the future")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    store = Conversations(path)
    assert [c.title for c in store.list()] == ["from the future"]
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == 99


# ---- search -----------------------------------------------------------------------------------


def test_the_index_follows_every_change(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "history.sqlite3")
    trip = store.create("Trip to Paris")
    store.add_message(trip.id, "user", "where to eat a croissant")
    store.add_message(trip.id, "assistant", "The bakery 面包店 on the corner")
    other = store.create("Other")
    store.add_message(other.id, "user", "nothing here")
    assert ids(store, "croissant") == [trip.id]
    assert ids(store, "面包店") == [trip.id]

    # An edit starts a branch and a regenerated reply is a new version: the old text stays
    # findable, as it stays reachable in the chat.
    edited = store.add_child(trip.id, None, "user", "where to eat ramen")
    assert ids(store, "croissant") == [trip.id]
    assert ids(store, "ramen") == [trip.id]
    store.add_child(trip.id, edited.id, "assistant", "Ichiran, in Shibuya")
    store.add_child(trip.id, edited.id, "assistant", "Try Fuunji")
    assert ids(store, "Ichiran") == ids(store, "fuunji") == [trip.id]

    store.rename(trip.id, "Tokyo food")
    assert ids(store, "paris") == []
    assert ids(store, "tokyo") == [trip.id]
    index_matches_text(store)

    store.delete(trip.id)  # messages go through the foreign key; their index rows too
    store.delete(other.id)
    assert ids(store, "ramen") == []
    index_matches_text(store)
    store._db.execute("CREATE VIRTUAL TABLE temp.terms USING fts5vocab(main, messages_fts, 'row')")
    assert store._db.execute("SELECT count(*) FROM temp.terms").fetchone()[0] == 0


def test_search_in_chinese_short_words_and_across_messages(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "history.sqlite3")
    notes = store.create("机器学习笔记")
    store.add_message(notes.id, "user", "什么是梯度下降？")
    trip = store.create("Trip")
    store.add_message(trip.id, "user", "去北京旅行")
    store.add_message(trip.id, "assistant", "AI 可以帮你 plan 行程")
    assert ids(store, "学习") == [notes.id]  # two characters, in the title
    assert ids(store, "梯度下降") == [notes.id]
    assert ids(store, "京") == [trip.id]
    assert ids(store, "ai") == [trip.id]  # short ASCII ignores case too
    assert ids(store, "旅行 行程") == [trip.id]  # each word in a different message
    assert ids(store, "trip 北京 PLAN") == [trip.id]  # and in the title
    assert ids(store, "学习 北京") == []
    assert ids(store, "   ") == ids(store, "") == [trip.id, notes.id]


@pytest.mark.parametrize(
    "query",
    ['"foo', "AND", "*", "OR", "NOT", "NEAR(a b)", "a:b", "^x", "(", ")", '""', "'", "\\", "%", "_", "-x", "{a b}"],
)
def test_search_takes_what_is_typed_literally(tmp_path: Path, query: str) -> None:
    store = Conversations(tmp_path / "history.sqlite3")
    hit = store.create("first")
    store.add_message(hit.id, "user", f"text with {query} inside")
    miss = store.create("second")
    store.add_message(miss.id, "user", "plain text only")
    assert ids(store, query) == [hit.id]


def test_search_on_a_small_benchmark_history_agrees_with_reading_everything(tmp_path: Path) -> None:
    store = build(tmp_path, conversations=50, messages=6)
    texts = {c.id: [c.title.lower()] + [m.content.lower() for m in store.messages(c.id)] for c in store.list(limit=100)}
    for queries in QUERIES.values():
        for query in queries:
            words = query.lower().split()
            expected = [cid for cid, parts in texts.items() if all(any(w in p for p in parts) for w in words)]
            assert ids(store, query) == expected, query
    times = measure(store, repeats=1)
    assert set(times) == set(QUERIES)
    assert "all" in report(times)


# ---- private files ----------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_history_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = Conversations(tmp_path / "data" / "history.sqlite3")
        store.add_message(store.create("secret").id, "user", "secret")
        assert mode(tmp_path / "data") == 0o700
        for name in ("history.sqlite3", "history.sqlite3-wal", "history.sqlite3-shm"):
            assert mode(tmp_path / "data" / name) == 0o600, name
    finally:
        os.umask(old)
        store.close()


def test_an_existing_readable_history_is_made_private(tmp_path: Path) -> None:
    path = v1_copy(tmp_path)
    os.chmod(tmp_path, 0o755)
    for file in (path, Path(f"{path}-wal")):  # an empty -wal left behind is valid
        file.touch()
        os.chmod(file, 0o644)
    store = Conversations(path)
    store.add_message(1, "user", "more")
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert mode(file) == 0o600, file
    assert mode(tmp_path) == 0o755  # a folder it did not make is left as it is
