"""Notifications/s through one push worker (the whole path: events → jobs → claim → send → record) to the local
APNs or FCM stand-in, loopback only.

Run: .venv/bin/python bench/push_worker.py [seconds per case] [providers] [--sink [--no-pin]] [--profile]
(defaults 5, apns,fcm; ``null`` is a provider that answers at once without any I/O: the worker's own cost).
The worker runs as in ``flare serve``: SQLite relational store (claims and outcomes, group commit in its writer
thread), the target cache, settings, templates and badges per recipient. Each event is one message of a direct
conversation to a user with one offline device, so one event is one notification; events are handed to
``PushWorker.handle`` in batches of ``PushConfig.batch`` (500), as the queue consumer would. The stand-in
(tests/fakes: hypercorn, HTTP/2 over TLS, verifying provider tokens) runs in a child process; it is Python too
and is the bottleneck on a small machine (~1,000-2,000 answers/s), so the worker idles and pays a wake-up per
answer. ``--sink`` answers from haproxy instead (push_sink.py: HTTP/2 over TLS, still verifying the APNs provider
token and the FCM assertion and access token on every request) on the other CPUs, with the worker pinned to
CPU 0: the worker saturated, its rate per CPU-second (all its threads) is what it costs a core.
``--profile`` prints the top of a cProfile of one case.
"""

from __future__ import annotations

import contextlib
import cProfile
import multiprocessing
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the stand-ins live in tests/fakes
sys.path.insert(0, str(Path(__file__).resolve().parent))

from push_providers import _pem, _provider, _serve
from push_sink import HaproxySink

from flare_im.backends.message_log.base import ConvHead
from flare_im.backends.push.base import Notification, PushProvider, PushResult
from flare_im.backends.relational.base import Member, PushTarget, User
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.services.notify import MessageEvent, TargetCache
from flare_im.services.notify_worker import PushConfig, PushWorker

USERS = 2000


class NullProvider:
    """Answers every send at once: what the worker costs without a provider."""

    name = "null"

    async def send(self, n: Notification) -> PushResult:
        return PushResult("sent", provider_id=n.job_id)

    async def close(self) -> None:
        pass


def _device_token(kind: str, i: int) -> str:
    return f"{i:064x}" if kind in ("apns", "null") else f"bench-token-{i:08d}-" + "x" * 30


async def _world(directory: str, kind: str, provider: PushProvider) -> tuple[PushWorker, SqliteDatabase]:
    db = SqliteDatabase(SqliteConfig(path=f"{directory}/relational.db"))
    store = SqliteRelational(db)
    db.start()
    await store.create_user(User("ada", "ada", "Ada", "", 1), None)
    for i in range(USERS):
        uid = f"u{i}"
        await store.create_user(User(uid, uid, uid, "", 1), None)
        await store.add_members([Member(f"d:ada:{uid}", "ada"), Member(f"d:ada:{uid}", uid)])
        await store.put_push_target(PushTarget(uid, "phone", kind, _device_token(kind, i), "", "", "en", 1))
    heads: dict[str, ConvHead] = {}

    async def read_heads(convs: Sequence[str]) -> dict[str, ConvHead]:
        return {c: heads.get(c, ConvHead(c, 1, 1, None)) for c in convs}

    async def nobody_online(uids: Sequence[str]) -> dict[str, set[str]]:
        return {}

    config = PushConfig(collapse_window_s=0, device_rate=0)  # max_in_flight as in production (64)
    worker = PushWorker(
        jobs=store,
        devices=store,
        memberships=store,
        users=store,
        groups=store,
        heads=read_heads,
        online=nobody_online,
        targets=TargetCache(store),
        providers={kind: provider},
        config=config,
    )
    return worker, db


async def _drive(worker: PushWorker, seconds: float) -> tuple[int, float, float, float]:
    """Batches of events until ``seconds`` pass; returns (notifications sent, wall s, CPU s, event loop thread's
    CPU s)."""
    seq = 0
    batch = worker.config.batch

    def events() -> list[MessageEvent]:
        nonlocal seq
        out = []
        for _ in range(batch):
            seq += 1
            uid = f"u{seq % USERS}"
            conv = f"d:ada:{uid}"
            out.append(MessageEvent(conv, seq, f"m{seq}", "ada", "text", {"text": f"hello {seq}"}, 0, [uid]))
        return out

    await worker.handle(events())  # warm up: connections, credentials, the target cache
    sent0 = worker.sent
    deadline = time.perf_counter() + seconds
    cpu, wall, loop = time.process_time(), time.perf_counter(), time.thread_time()
    while time.perf_counter() < deadline:
        await worker.handle(events())
    return worker.sent - sent0, time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - loop


def run_case(kind: str, seconds: float, directory: str, profile: bool, sink: bool, sink_cpus: set[int] | None) -> None:
    """``sink``: answer from haproxy (on ``sink_cpus``, None: anywhere), not from the Python stand-in."""
    from tests.fakes.server import self_signed_certificate

    process = None
    parent: Any = None
    stack = contextlib.ExitStack()
    url, private, ca_file = "", b"", ""
    if kind != "null":
        certificate = self_signed_certificate(Path(directory))
        key: Any = ec.generate_private_key(ec.SECP256R1()) if kind == "apns" else rsa.generate_private_key(65537, 2048)
        private, public = _pem(key)
        ca_file = certificate.cert_file
    if kind != "null" and sink:
        url = stack.enter_context(
            HaproxySink(kind, directory, certificate.cert_file, certificate.key_file, public, sink_cpus)
        )
    elif kind != "null":
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(kind, public, directory, child), daemon=True)
        process.start()
        url = parent.recv()
    profiler = cProfile.Profile() if profile else None
    try:

        async def main() -> tuple[int, float, float, float]:
            provider: PushProvider = NullProvider() if kind == "null" else _provider(kind, private, url, ca_file)
            worker, db = await _world(directory, kind, provider)
            try:
                if profiler is not None:
                    profiler.enable()
                return await _drive(worker, seconds)
            finally:
                if profiler is not None:
                    profiler.disable()
                await worker.close()
                await db.close()

        sent, wall, cpu, loop = uvloop.run(main())
        accepted = "haproxy" if sink and kind != "null" else "-"
        if parent is not None:
            parent.send("stop")
            accepted = str(parent.recv())
    finally:
        stack.close()
        if process is not None:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    print(
        f"{kind:<5} {wall:.1f}s: {sent} notifications sent (stand-in accepted {accepted} with the warm-up); "
        f"{sent / wall:,.0f}/s wall, {sent / cpu:,.0f}/s per CPU-second of the worker's process "
        f"(event loop {loop / sent * 1e6:.0f} µs, other threads {(cpu - loop) / sent * 1e6:.0f} µs per notification)"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main(seconds: float, kinds: list[str], profile: bool, sink: bool, pin: bool) -> None:
    sink_cpus: set[int] | None = None
    if sink and pin and len(os.sched_getaffinity(0)) > 1:
        sink_cpus = os.sched_getaffinity(0) - {0}
        os.sched_setaffinity(0, {0})  # the worker here; haproxy on the others
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="flare-push-worker-bench-") as directory:
            run_case(kind, seconds, directory, profile, sink, sink_cpus)


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(
        float(args[0]) if args else 5.0,
        (args[1] if len(args) > 1 else "apns,fcm").split(","),
        "--profile" in flags,
        "--sink" in flags,
        "--no-pin" not in flags,
    )
