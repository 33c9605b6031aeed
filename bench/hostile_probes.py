"""Issue 10's hostile-input probes against a running `flare serve` (docs/performance.md, "Hostile input, the
issue's probes run again"): a 100 MB login body, declared and chunked; 1,000 registrations and 500 wrong
passwords from one address; 300 connections sending their headers a byte every 2 s; a catastrophic regex rule.
Prints what the server answered and its RSS (from /proc, so run it on the server's machine).

Run: .venv/bin/python bench/hostile_probes.py PID API_PORT ADMIN_KEY [3 7 8 11]   (the issue's item numbers)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import httpx

PID, PORT, ADMIN = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
BASE = f"http://127.0.0.1:{PORT}"


def rss() -> float:
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


class Peak:
    def __init__(self):
        self.peak = rss()
        self.on = True

    async def run(self):
        while self.on:
            self.peak = max(self.peak, rss())
            await asyncio.sleep(0.02)


async def big_post(chunked: bool, total=100 * 2**20) -> tuple[str, int, float]:
    t = time.perf_counter()
    r, w = await asyncio.open_connection("127.0.0.1", PORT)
    head = "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    w.write(head.encode())
    sent = 0
    chunk = b"x" * 2**20
    answer = b""
    try:
        while sent < total:
            if chunked:
                w.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            else:
                w.write(chunk)
            await asyncio.wait_for(w.drain(), 5)
            sent += len(chunk)
            try:
                answer = await asyncio.wait_for(r.read(200), 0.001)
                if answer:
                    break
            except TimeoutError:
                pass
        if not answer:
            answer = await asyncio.wait_for(r.read(200), 10)
    except (TimeoutError, ConnectionError) as e:
        if not answer:
            try:
                answer = await asyncio.wait_for(r.read(200), 2)
            except Exception:
                answer = repr(e).encode()
    w.close()
    return answer.split(b"\r\n")[0].decode(errors="replace"), sent, time.perf_counter() - t


async def item3():
    before = rss()
    one = await big_post(False)
    after_one = rss()
    p = Peak()
    task = asyncio.create_task(p.run())
    eight = await asyncio.gather(*(big_post(False) for _ in range(8)))
    p.on = False
    await task
    await asyncio.sleep(1)
    ch = await big_post(True)
    print(
        f"item 3: one 100 MB POST: {one[0]!r}, {one[1] / 2**20:.0f} MiB written before the answer,"
        f" {one[2]:.2f} s; RSS {before:.0f} -> {after_one:.0f} MB"
    )
    print(f"item 3: 8 in parallel: {sorted(set(e[0] for e in eight))}, RSS peak {p.peak:.0f} MB, after {rss():.0f} MB")
    print(f"item 3: chunked 100 MB: {ch[0]!r} after {ch[1] / 2**20:.0f} MiB, RSS {rss():.0f} MB")


async def item7():
    async with httpx.AsyncClient(base_url=BASE, timeout=60) as c:
        p = Peak()
        task = asyncio.create_task(p.run())
        before = rss()
        sem = asyncio.Semaphore(16)
        codes: dict[int, int] = {}
        times = []

        async def reg(i):
            async with sem:
                t = time.perf_counter()
                r = await c.post(
                    "/v1/auth/register", json={"username": f"probe{i}", "password": "correct horse battery"}
                )
                times.append(time.perf_counter() - t)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                return r

        rs = await asyncio.gather(*(reg(i) for i in range(1000)))
        p.on = False
        await task
        ra = next((r.headers.get("retry-after") for r in rs if r.status_code == 429), None)
        print(
            f"item 7: 1,000 registrations at 16 in parallel: {codes}, median {statistics.median(times) * 1000:.1f} ms,"
            f" Retry-After {ra}; RSS {before:.0f} -> peak {p.peak:.0f} MB"
        )
        codes = {}
        for i in range(500):
            r = await c.post("/v1/auth/login", json={"username": "probe0", "password": f"wrong{i}"})
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
        print(f"item 7: 500 wrong passwords for one user: {codes}")


async def item8(n=300):
    t0 = time.perf_counter()
    conns = []
    closed_at = {}
    for i in range(n):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", PORT)
            conns.append((i, r, w))
        except OSError:
            closed_at[i] = 0.0

    async def trickle(i, r, w):
        try:
            for b in b"GET /v1/healthz HTTP/1.1\r\nHost: x\r\n":
                w.write(bytes([b]))
                await w.drain()
                try:
                    data = await asyncio.wait_for(r.read(100), 2)
                    if data or r.at_eof():
                        closed_at[i] = (time.perf_counter() - t0, data.split(b"\r\n")[0].decode())
                        return
                except TimeoutError:
                    pass
            closed_at[i] = (None, "held to the end")
        except (ConnectionError, OSError) as e:
            closed_at[i] = (time.perf_counter() - t0, type(e).__name__)

    await asyncio.wait_for(asyncio.gather(*(trickle(*c) for c in conns), return_exceptions=True), 90)
    outcomes: dict[str, list[float]] = {}
    for v in closed_at.values():
        t, what = v if isinstance(v, tuple) else (0.0, "refused")
        outcomes.setdefault(what, []).append(t or 0.0)
    for what, ts in outcomes.items():
        print(f"item 8: {len(ts)} of {n} slow-header connections: {what!r}, at {min(ts):.1f}-{max(ts):.1f} s")
    for _, _, w in conns:
        w.close()


async def item11():
    async with httpx.AsyncClient(base_url=BASE, timeout=60, headers={"X-Admin-Key": ADMIN}) as c:
        r = await c.post("/v1/admin/filter/rules", json={"pattern": "(x+x+)+y", "match": "regex", "action": "block"})
        print("item 11: rule", r.status_code)
        for n in (40, 1000, 60000, 600000):
            t = time.perf_counter()
            r = await c.post("/v1/admin/filter/check", json={"text": "x" * n})
            print(
                f"item 11: '(x+x+)+y' on {n} x's: {r.status_code} blocked={r.json().get('blocked')}"
                f" in {(time.perf_counter() - t) * 1000:.1f} ms"
            )
        r = await c.post("/v1/admin/filter/rules", json={"pattern": "(a)\\1", "match": "regex"})
        print("item 11: backreference rule:", r.status_code, r.text[:120])


async def main():
    which = sys.argv[4:] or ["3", "7", "8", "11"]
    for w in which:
        await {"3": item3, "7": item7, "8": item8, "11": item11}[w]()


asyncio.run(main())
