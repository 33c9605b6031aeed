"""Micro-benchmark of the send path without sockets: router.send through SQLite group commit.

Run: .venv/bin/python bench/micro_send_path.py [messages] [concurrency] [filter_words]
It isolates the cost of the router and storage from the gateway and the network. With ``filter_words`` > 0
the content filter holds that many mask rules (words the messages do not contain, so every text is scanned
in full and stored unchanged).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time

import uvloop

from flare_im.app import build_node
from flare_im.config import Settings


async def main(n: int, concurrency: int, filter_words: int) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        node = await build_node(Settings.load({"data_dir": data_dir}))
        rng = random.Random(1)
        for _ in range(filter_words):
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(5, 9)))
            await node.api.content_filter.put_rule(None, pattern=word + "q", match="word", action="mask")
        users = node.api.users
        pairs = 100
        for i in range(2 * pairs):
            await users.create_by_admin(f"u{i}")
        router = node.router
        convs = [(f"u{2 * i}", f"d:u{2 * i}:u{2 * i + 1}") for i in range(pairs)]
        for sender, conv in convs:  # warm caches (direct conversations, sequencers)
            await router.send(sender, conv, f"warm-{conv}", "text", {"text": "hi"})
        counter = iter(range(n))

        async def worker(k: int) -> None:
            sender, conv = convs[k % pairs]
            for i in counter:
                await router.send(sender, conv, f"c{i}", "text", {"text": "hello there", "t": i})

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
        db = node.databases[0]
        print(f"{n} sends in {elapsed:.2f}s: {n / elapsed:,.0f} msgs/s; {db.commits} commits, {db.ops} write ops")
        await node.close()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    uvloop.run(main(*(args + [50_000, 1000, 0][len(args) :])))
