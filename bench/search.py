"""Search latency (U9) over a large store, and what indexing costs the writes.

Run: .venv/bin/python bench/search.py [--messages 1000000] [--convs 100] [--queries 100]
     [--backend sqlite|clickhouse|chdb] [--url clickhouse://127.0.0.1:18123/default] [--no-index] [--json]

1. Load: ``--messages`` messages are written straight into the message store through its adapter (not through
   the WebSocket), in ``--convs`` conversations, all of them the searching user's (the heavy case: every
   message is in scope), spread over a year. Texts are made up: 70% English-like words drawn from a Zipf
   distribution over 2,000 words, 25% Chinese from 500 common characters, 5% Japanese. Reports the load
   rate; ``--no-index`` loads SQLite without the search index (run both to see the writer's cost of indexing).
2. Queries: ``--queries`` searches per class through the SearchIndex port, the user's 100 conversations in
   scope, the first page of 20: a common word, a rare word, two words, four/two/one Chinese characters
   taken from stored messages, a Japanese phrase, a word in no message, a common word in one conversation.
   Reports p50/p99/max per class and the mean number of hits.
SQLite runs in a temporary directory; ClickHouse in a fresh database dropped afterwards; chdb in a temporary
directory. Everything is bounded by the options above.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flare_im.backends.clickhouse_client import connect
from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.search.base import SearchIndex, SearchQuery, SearchScope
from flare_im.protocol.frames import Message

YEAR_MS = 365 * 24 * 3600 * 1000
T0 = 1_735_689_600_000  # 2025-01-01
CHUNK = 10_000  # appends in flight at once while loading
PAGE = 20
_SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
_HANZI = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然"
    "没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美"
    "点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并"
    "内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合"
    "放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎"
    "元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量"
)
_KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん東京大阪会社電車駅"


def _words(rng: random.Random, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(out, key=lambda w: (rng.random(), w))


class Corpus:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = _words(self.rng, 2000)
        self._weights = [1 / (i + 1) for i in range(len(self.words))]  # Zipf: rank r drawn with weight 1/r
        self._hanzi_weights = [1 / (i + 1) ** 0.8 for i in range(len(_HANZI))]
        self.chinese: list[str] = []  # a sample of the Chinese texts written (queries are cut from them)
        self.japanese: list[str] = []

    def text(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.70:
            return " ".join(rng.choices(self.words, self._weights, k=rng.randint(3, 15)))
        if roll < 0.95:
            text = "".join(rng.choices(_HANZI, self._hanzi_weights, k=rng.randint(5, 30)))
            if len(self.chinese) < 5000:
                self.chinese.append(text)
            return text
        text = "".join(rng.choice(_KANA) for _ in range(rng.randint(5, 20)))
        if len(self.japanese) < 5000:
            self.japanese.append(text)
        return text


def messages(corpus: Corpus, n: int, convs: int) -> list[Message]:
    rng = corpus.rng
    seqs = [0] * convs
    out = []
    for i in range(n):
        c = rng.randrange(convs)
        seqs[c] += 1
        ts = T0 + i * YEAR_MS // max(n, 1)
        out.append(
            Message(
                conv=f"g:c{c}",
                seq=seqs[c],
                msg_id=str(((ts - T0) << 22) + i % 4096),
                sender=f"u{rng.randrange(20)}",
                cmid=f"m{i}",
                kind="text",
                body={"text": corpus.text()},
                ts=ts,
            )
        )
    return out


def queries(corpus: Corpus, count: int, convs: int) -> dict[str, list[tuple[tuple[str, ...], str | None]]]:
    rng = random.Random(7)
    words = corpus.words

    def cut(texts: list[str], k: int) -> list[tuple[str, ...]]:
        """Substrings of ``k`` characters of stored texts."""
        return [(t[(s := rng.randrange(len(t) - k + 1)) : s + k],) for t in rng.choices(texts, k=count)]

    return {
        "english, common word": [((rng.choice(words[:20]),), None) for _ in range(count)],
        "english, rare word": [((rng.choice(words[1000:2000]),), None) for _ in range(count)],
        "english, two words": [((rng.choice(words[:50]), rng.choice(words[50:300])), None) for _ in range(count)],
        "chinese, 4 characters": [(q, None) for q in cut(corpus.chinese, 4)],
        "chinese, 2 characters": [(q, None) for q in cut(corpus.chinese, 2)],
        "chinese, 1 character": [(q, None) for q in cut(corpus.chinese, 1)],
        "japanese, 3 characters": [(q, None) for q in cut(corpus.japanese, 3)] if corpus.japanese else [],
        "no match": [((f"zqx{rng.randrange(10**6)}",), None) for _ in range(count)],
        "common word, one conversation": [
            ((rng.choice(words[:20]),), f"g:c{rng.randrange(convs)}") for _ in range(count)
        ],
    }


def summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(p(0.99), 2),
        "max_ms": round(ordered[-1], 2),
    }


async def load(log: MessageLog, batch: list[Message]) -> float:
    started = time.perf_counter()
    for i in range(0, len(batch), CHUNK):
        for attempt in range(3):  # a dropped HTTP connection fails a chunk; a store takes an exact replay
            try:
                await asyncio.gather(*(log.append(m, 1 + i + k) for k, m in enumerate(batch[i : i + CHUNK])))
                break
            except OSError:
                if attempt == 2:
                    raise
    return time.perf_counter() - started


async def measure(
    index: SearchIndex, plan: dict[str, list[tuple[tuple[str, ...], str | None]]], convs: int
) -> dict[str, Any]:
    everyone = [SearchScope(f"g:c{c}") for c in range(convs)]
    out: dict[str, Any] = {}
    for name, runs in plan.items():
        if not runs:
            continue
        samples: list[float] = []
        hits = 0
        for terms, conv in runs:
            scopes = [SearchScope(conv)] if conv else everyone
            started = time.perf_counter()
            found = await index.search(SearchQuery(terms=terms, scopes=scopes, limit=PAGE))
            samples.append((time.perf_counter() - started) * 1000)
            hits += len(found)
        out[name] = {**summary(samples), "mean_hits": round(hits / len(runs), 1), "queries": len(runs)}
    return out


async def run(args: argparse.Namespace, report: Callable[[str], None]) -> dict[str, Any]:
    corpus = Corpus(1)
    started = time.perf_counter()
    batch = messages(corpus, args.messages, args.convs)
    report(f"generated {len(batch):,} messages in {time.perf_counter() - started:.1f} s")
    plan = queries(corpus, args.queries, args.convs)
    result: dict[str, Any] = {"backend": args.backend, "messages": args.messages, "convs": args.convs}
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "sqlite":
            from flare_im.backends.message_log.sqlite import SqliteMessageLog
            from flare_im.backends.search.feed import FeedingLog
            from flare_im.backends.search.sqlite import SqliteSearchIndex
            from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase

            store = SqliteDatabase(SqliteConfig(path=str(Path(tmp) / "flare.db"), synchronous="NORMAL"))
            search_db = SqliteDatabase(SqliteConfig(path=str(Path(tmp) / "search.db"), synchronous="NORMAL"))
            log: MessageLog = SqliteMessageLog(store)
            index = None if args.no_index else SqliteSearchIndex(search_db, store)
            store.start()
            search_db.start()
            if index is not None:
                index.start()
                log = FeedingLog(log, index.written)
            try:
                seconds = await load(log, batch)
                result["index"] = index is not None
                result["load_s"] = round(seconds, 1)
                result["load_us_per_message"] = round(seconds * 1e6 / max(len(batch), 1), 1)
                report(f"loaded in {seconds:.1f} s ({result['load_us_per_message']} µs per message)")
                del batch
                if index is not None:
                    started = time.perf_counter()
                    await index.flush()
                    result["indexed_s_after_load"] = round(time.perf_counter() - started, 1)
                    report(f"indexed {result['indexed_s_after_load']} s after the last write")
                    result["queries"] = await measure(index, plan, args.convs)
                    await index.close()
            finally:
                await search_db.close()
                await store.close()
            for name in ("flare.db", "search.db"):
                size = sum(p.stat().st_size for p in Path(tmp).glob(name + "*"))
                result[name.replace(".", "_") + "_mb"] = round(size / 2**20, 1)
            return result
        from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog
        from flare_im.backends.search.clickhouse import ClickHouseSearchIndex

        server = None
        url = f"chdb:///{Path(tmp) / 'chdb'}"
        if args.backend == "clickhouse":
            server = args.url
            parts = urlsplit(server)
            url = urlunsplit((parts.scheme, parts.netloc, f"/flare_bench_{uuid.uuid4().hex}", "", ""))
            admin = connect(server)
            await admin.query(f"CREATE DATABASE {urlsplit(url).path.strip('/')}")
            await admin.close()
        ch_log = await ClickHouseMessageLog.open(ClickHouseConfig(url=url))
        ch_index = await ClickHouseSearchIndex.open(url)
        try:
            seconds = await load(ch_log, batch)
            result["load_s"] = round(seconds, 1)
            report(f"loaded in {seconds:.1f} s")
            del batch
            result["queries"] = await measure(ch_index, plan, args.convs)
        finally:
            await ch_index.close()
            await ch_log.close()
            if server is not None:
                admin = connect(server)
                await admin.query(f"DROP DATABASE IF EXISTS {urlsplit(url).path.strip('/')}")
                await admin.close()
        return result


async def send_path(n: int, appenders: int, index_on: bool) -> dict[str, Any]:
    """``n`` appends by ``appenders`` concurrent callers, each awaiting its append as the router does (the
    group commit of the send path), with the SQLite store's default durability (FULL): appends/s, and with
    the index on, how long after the last ack the index had them all."""
    from flare_im.backends.message_log.sqlite import SqliteMessageLog
    from flare_im.backends.search.feed import FeedingLog
    from flare_im.backends.search.sqlite import SqliteSearchIndex
    from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase

    corpus = Corpus(2)
    batch = messages(corpus, n, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteDatabase(SqliteConfig(path=str(Path(tmp) / "flare.db")))
        search_db = SqliteDatabase(SqliteConfig(path=str(Path(tmp) / "search.db")))
        log: MessageLog = SqliteMessageLog(store)
        index = SqliteSearchIndex(search_db, store) if index_on else None
        store.start()
        search_db.start()
        if index is not None:
            index.start()
            log = FeedingLog(log, index.written)
        todo = iter(batch)

        async def appender() -> None:
            for m in todo:
                await log.append(m, 1)

        started = time.perf_counter()
        await asyncio.gather(*(appender() for _ in range(appenders)))
        elapsed = time.perf_counter() - started
        out: dict[str, Any] = {"index": index_on, "appends_per_s": round(n / elapsed)}
        if index is not None:
            await index.flush()
            out["indexed_s_after_last_ack"] = round(time.perf_counter() - started - elapsed, 2)
            await index.close()
        await search_db.close()
        await store.close()
        return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--convs", type=int, default=100)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--backend", choices=("sqlite", "clickhouse", "chdb"), default="sqlite")
    parser.add_argument("--url", default="clickhouse://127.0.0.1:18123/default")
    parser.add_argument("--no-index", action="store_true", help="SQLite: load without the search index")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--send-path", type=int, default=0, metavar="N", help="instead: N appends with the index off/on, interleaved"
    )
    parser.add_argument("--rounds", type=int, default=3, help="--send-path: off/on pairs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.send_path:
        rounds = [asyncio.run(send_path(args.send_path, 1000, on)) for _ in range(args.rounds) for on in (False, True)]
        for r in rounds:
            print(json.dumps(r))
        return {"send_path": rounds}
    result = asyncio.run(run(args, (lambda _: None) if args.json else print))
    if args.json:
        print(json.dumps(result))
    else:
        for name, row in result.pop("queries", {}).items():
            print(
                f"{name:32} p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  max {row['max_ms']:8.2f} ms"
                f"  hits {row['mean_hits']}"
            )
        print(result)
    return result


if __name__ == "__main__":
    main()
