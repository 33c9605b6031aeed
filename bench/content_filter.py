"""Benchmark of the content filter's cost per message (services/content_filter.py), by number of rules and
text length: what a send pays when rules exist.

Run: .venv/bin/python bench/content_filter.py [words ...]
For each number of word rules (default 0 100 1000 10000): microseconds per ``screen`` of a short and a long
text that match nothing, and of a long text with matches to mask; then the same with 10 regex rules added.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import timeit
from pathlib import Path

from flare_im.backends.relational.base import FilterRule
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.services.content_filter import ContentFilter

SHORT = "hello there, see you at 8?"
LONG = "The quick brown fox jumps over the lazy dog; 你好世界, ça va? " * 8  # ~480 characters
REGEXES = [r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b", r"https?://\S+\.ru\b", r"(?i)\bfree\s+money\b"] + [
    rf"\bcode{i}\d+\b" for i in range(7)
]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 9)))


def _us(f: ContentFilter, text: str) -> float:
    body = {"text": text}
    n = 2000
    return timeit.timeit(lambda: f.screen(body), number=n) / n * 1e6


async def main(word_counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = SqliteDatabase(SqliteConfig(path=str(Path(tmp) / "flare.db")))
        store = SqliteRelational(db)
        db.start()
        rng = random.Random(1)
        print(f"{'word rules':>10} {'regexes':>7} {'short µs':>9} {'long µs':>8} {'masking µs':>10}")
        try:
            for count in word_counts:
                for regexes in (0, len(REGEXES)):
                    f = ContentFilter(store)
                    for rule in await store.filter_rules():
                        await store.delete_filter_rule(rule.rule_id)
                    # "q" + 4-9 letters never occurs in the texts: a full scan that finds nothing.
                    words = {"zq" + _word(rng) for _ in range(count)}
                    for i, word in enumerate(sorted(words)):
                        await store.put_filter_rule(_rule(f"w{i}", word, "word"))
                    for i, pattern in enumerate(REGEXES[:regexes]):
                        await store.put_filter_rule(_rule(f"r{i}", pattern, "regex"))
                    masked_words = count > 0
                    if masked_words:
                        await store.put_filter_rule(_rule("fox", "fox", "word"))
                    await f.reload()
                    masking = _us(f, LONG) if masked_words else float("nan")
                    if masked_words:
                        await store.delete_filter_rule("fox")
                        await f.reload()
                    print(f"{count:>10} {regexes:>7} {_us(f, SHORT):>9.2f} {_us(f, LONG):>8.2f} {masking:>10.2f}")
        finally:
            await db.close()


def _rule(rule_id: str, pattern: str, match: str) -> FilterRule:
    return FilterRule(rule_id, pattern, match, "mask", True, "", 0, 0)


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:]] or [0, 100, 1000, 10000]
    asyncio.run(main(counts))
