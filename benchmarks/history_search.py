"""History search at scale: how long the sidebar's search takes on a big history.

    .venv/bin/python -m benchmarks.history_search                  # 10,000 conversations x 20 messages
    .venv/bin/python -m benchmarks.history_search --conversations 500

Builds a history of mixed English and Chinese chats in a temporary folder (the real schema,
migrations and full-text triggers; rows written in one transaction per 100 conversations,
as a history grows, only faster), then times `Conversations.list(search)` over a fixed set of
queries: English words common and rare, several words, Chinese words of two characters
(shorter than a trigram: LIKE) and of three or more (the index), misses, and FTS syntax
that must be taken literally. Prints p50 and p95 over every timed call, and per kind.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from app.conversations import Conversations

COMMON_EN = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "you",
    "with",
    "on",
    "as",
    "this",
    "be",
    "are",
    "can",
    "not",
    "or",
    "your",
    "have",
    "what",
    "how",
]
COMMON_ZH = [
    "的",
    "是",
    "了",
    "我",
    "你",
    "在",
    "有",
    "这个",
    "可以",
    "什么",
    "怎么",
    "如何",
    "为什么",
    "我们",
    "请问",
    "一下",
    "因为",
    "所以",
]
# Each conversation is about one topic, as chats are: a topic's words are in about one conversation
# in twelve, the common words in nearly all of them.
TOPICS = [
    (
        "python function error import class list string return exception module package",
        "函数 代码 错误 异常 模块 列表 字符串",
    ),
    ("docker container kubernetes deploy linux server nginx port volume image", "容器 部署 服务器 镜像 端口 集群"),
    ("recipe chicken garlic onion tomato rice noodle soup oven minutes", "菜谱 鸡肉 大蒜 米饭 面条 红烧肉 火候"),
    ("travel ticket hotel airport train museum paris tokyo visa luggage", "旅行 酒店 机场 火车 博物馆 签证 行李"),
    (
        "matrix vector gradient learning network layer loss accuracy dataset training",
        "机器学习 深度学习 神经网络 梯度 训练 数据集",
    ),
    ("database index query table column sqlite postgres transaction schema join", "数据库 索引 查询 事务 表格 主键"),
    ("poem story chapter character dragon castle ocean mountain river forest", "诗 故事 章节 城堡 大海 山 河流 森林"),
    (
        "budget invoice email meeting schedule report manager deadline project client",
        "预算 会议 邮件 报告 项目 客户 截止",
    ),
    ("weather rain summer winter garden flower tree soil water season", "天气 下雨 夏天 冬天 花园 植物 季节"),
    ("music guitar piano chord melody song rhythm concert practice band", "音乐 吉他 钢琴 和弦 旋律 歌曲"),
    ("history empire war dynasty king revolution century culture capital france", "历史 帝国 朝代 皇帝 文化 首都 北京"),
    ("model token memory gpu inference batch speed vllm quantization context", "模型 显卡 内存 推理 速度 量化 上下文"),
]
TOPICS = [(en.split(), zh.split()) for en, zh in TOPICS]
QUERIES = {
    "en common": ["the", "what", "how to"],
    "en topic word": ["python", "kubernetes", "garlic", "invoice", "gradient"],
    "en several words": ["python exception", "train ticket hotel", "loss accuracy gradient"],
    "en rare (a name)": ["proj_4711", "server-0042", "ticket 9313"],
    "zh 1-2 chars (LIKE)": ["的", "诗", "大海", "预算"],
    "zh 3+ chars": ["机器学习", "数据库", "神经网络", "红烧肉"],
    "mixed": ["python 代码", "sqlite 数据库", "paris 旅行"],
    "no hit": ["zzzqqx", "量子纠缠态", "nonexistentword"],
    "syntax, literal": ['"foo', "AND", "*", "NEAR(a b)", "a OR b", "col:val"],
}


def _sentence(rng: random.Random, topic: tuple[list[str], list[str]], chinese: bool) -> str:
    en, zh = topic
    if chinese:
        words = [rng.choice(zh) if rng.random() < 0.3 else rng.choice(COMMON_ZH) for _ in range(rng.randint(5, 14))]
        return "".join(words) + rng.choice("。？！")
    words = [rng.choice(en) if rng.random() < 0.25 else rng.choice(COMMON_EN) for _ in range(rng.randint(6, 18))]
    if rng.random() < 0.1:  # names, numbers, file names: the rare words people search for
        words.append(
            rng.choice(["proj", "server", "ticket", "build"]) + rng.choice("_- ") + f"{rng.randint(0, 9999):04}"
        )
    return " ".join(words).capitalize() + rng.choice(".?!")


def _text(rng: random.Random, topic: tuple[list[str], list[str]], chinese: float, sentences: int) -> str:
    return " ".join(_sentence(rng, topic, rng.random() < chinese) for _ in range(sentences))


def build(folder: Path, conversations: int, messages: int, seed: int = 0) -> Conversations:
    """A history of `conversations` x `messages`, alternating questions and longer replies."""
    rng = random.Random(seed)
    store = Conversations(folder / "history.sqlite3")
    start = time.time() - 365 * 86400
    db = store._db  # bulk rows through the store's connection: the same triggers, no per-row commit
    for first in range(0, conversations, 100):
        db.execute("BEGIN")
        for i in range(first, min(first + 100, conversations)):
            created = start + i * 365 * 86400 / conversations
            topic = rng.choice(TOPICS)
            chinese = rng.choice((0.0, 0.0, 0.0, 1.0, 1.0, 0.5))  # English, Chinese or both
            title = _sentence(rng, topic, rng.random() < chinese)[:60]
            cur = db.execute(
                "INSERT INTO conversations (title, system_prompt, created, updated) VALUES (?, '', ?, ?)",
                (title, created, created + messages * 30),
            )
            rows = [
                (
                    cur.lastrowid,
                    "user" if j % 2 == 0 else "assistant",
                    _text(rng, topic, chinese, rng.randint(1, 3) if j % 2 == 0 else rng.randint(4, 16)),
                    created + j * 30,
                )
                for j in range(messages)
            ]
            parent = None
            for row in rows:  # one path: each message follows the one before it
                parent = db.execute(
                    "INSERT INTO messages (conversation_id, role, content, created, parent_id) VALUES (?, ?, ?, ?, ?)",
                    (*row, parent),
                ).lastrowid
        db.execute("COMMIT")
    return store


def measure(store: Conversations, repeats: int) -> dict[str, list[float]]:
    """Seconds per `list(search)` call, by kind of query; one untimed call of each first."""
    times: dict[str, list[float]] = {}
    for _kind, query in _queries():
        store.list(query)
    for _ in range(repeats):
        for kind, query in _queries():
            t0 = time.perf_counter()
            store.list(query)
            times.setdefault(kind, []).append(time.perf_counter() - t0)
    return times


def _queries() -> Iterator[tuple[str, str]]:
    for kind, queries in QUERIES.items():
        for query in queries:
            yield kind, query


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(times: dict[str, list[float]]) -> str:
    lines = [f"{'queries':<20} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"]
    every = [t for values in times.values() for t in values]
    for kind, values in [*times.items(), ("all", every)]:
        lines.append(
            f"{kind:<20} {percentile(values, 50) * 1e3:8.1f} {percentile(values, 95) * 1e3:8.1f}"
            f" {max(values) * 1e3:8.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=20, help="per conversation")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each query")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        store = build(Path(folder), args.conversations, args.messages)
        size = sum(f.stat().st_size for f in Path(folder).iterdir()) / 2**20
        print(
            f"built {args.conversations:,} conversations x {args.messages} messages in "
            f"{time.perf_counter() - t0:.0f} s ({size:.0f} MB on disk)"
        )
        times = measure(store, args.repeats)
        store.close()
    print(report(times))


if __name__ == "__main__":
    main()
