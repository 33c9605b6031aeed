"""Load-generator worker process: many WebSocket clients on one uvloop, driven by a plan.

It speaks either Flare's protocol (``send``/``ack``/``msg``) or the bare relay's, with the same flow
control: each sending client keeps at most ``window`` messages unacknowledged, and either refills its
window on every ack (saturating) or follows a fixed global rate. Timestamps are taken here, by the load
generator: a message carries its send time (CLOCK_MONOTONIC, the same in every process of the machine),
the receiving client subtracts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from flare_im.oslimits import raise_fd_limit

FLARE = "flare"
RELAY = "relay"
QUIET_S = 0.3  # drain: no delivery for this long after the last ack means the fan-out is done


@dataclass(frozen=True, slots=True)
class Endpoint:
    user: str
    token: str = ""
    device: str = "bench"
    target: str = ""  # what this client sends to: a conversation (Flare) or a user (relay); "" = receive only


@dataclass(slots=True)
class WorkerPlan:
    protocol: str  # FLARE | RELAY
    url: str  # WebSocket URL (the relay's is completed with ?user=...)
    endpoints: list[Endpoint]
    window: int = 10
    rate_per_s: float = 0.0  # this worker's share of a fixed offered load; 0 = saturate
    payload_bytes: int = 64
    warmup_s: float = 1.0
    duration_s: float = 10.0
    drain_s: float = 5.0
    cpu: int | None = None
    local_addr: str | None = None  # source address (many idle connections need several)
    exact_loss: bool = True  # track every (conversation, seq): each message has exactly one receiver here
    connect_batch: int = 200
    tick_s: float = 0.0  # > 0: report counts and latencies every tick_s of the window (soak), keep none of them


@dataclass(slots=True)
class WorkerResult:
    connected: int = 0
    connect_errors: int = 0
    sent: int = 0
    acked: int = 0
    acked_in_window: int = 0
    delivered: int = 0
    delivered_in_window: int = 0
    errors: int = 0
    lost: int = 0  # acked but never delivered (exact mode)
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    cpu_s: float = 0.0  # CPU seconds this process used during the measured window


class _Body(msgspec.Struct):
    t: int = 0


class _FlareIn(msgspec.Struct):
    type: str = ""
    conv: str = ""
    seq: int = 0
    body: _Body | None = None


class _RelayIn(msgspec.Struct):
    a: int = -1  # ack of message n
    n: int = -1
    t: int = 0
    frm: str = msgspec.field(default="", name="from")


_decode_flare = msgspec.json.Decoder(_FlareIn).decode
_decode_relay = msgspec.json.Decoder(_RelayIn).decode


class _Client(WSListener):
    def __init__(self, run: _Run, endpoint: Endpoint) -> None:
        self.run = run
        self.endpoint = endpoint
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflight = 0
        self.next_n = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.run.plan.protocol == FLARE:
            ep = self.endpoint
            transport.send(
                WSMsgType.TEXT,
                msgspec.json.encode({"type": "auth", "id": 0, "token": ep.token, "device": ep.device}),
            )
        elif not self.ready.done():
            self.ready.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected before ready"))
        self.run.disconnected += 1

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                transport.disconnect()
            return
        payload = frame.get_payload_as_bytes()
        run = self.run
        if run.fast_pushes and payload.startswith(b'{"type":"msg"'):
            # Fan-out receivers only count and time pushes: read the body's "t" without a full decode.
            start = payload.rfind(b'"t":') + 4
            run.count_push(time.monotonic_ns(), int(payload[start : payload.index(b"}", start)]))
        elif run.plan.protocol == FLARE:
            run.on_flare(self, _decode_flare(payload))
        else:
            self.run.on_relay(self, _decode_relay(payload))

    def send_one(self, now_ns: int) -> None:
        run = self.run
        n = self.next_n
        self.next_n = n + 1
        self.inflight += 1
        run.sent += 1
        ep = self.endpoint
        if run.plan.protocol == FLARE:
            data = b'{"type":"send","id":%d,"conv":"%s","cmid":"%s-%d","body":{"text":"%s","t":%d}}' % (
                n,
                run.enc(ep.target),
                run.enc(ep.user + "." + ep.device),
                n,
                run.payload,
                now_ns,
            )
        else:
            data = b'{"to":"%s","n":%d,"t":%d,"from":"%s","p":"%s"}' % (
                run.enc(ep.target),
                n,
                now_ns,
                run.enc(ep.user),
                run.payload,
            )
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, data)


class _Run:
    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.payload = b"x" * plan.payload_bytes
        self.clients: list[_Client] = []
        self.senders: list[_Client] = []
        self.result = WorkerResult()
        self.sent = 0
        self.disconnected = 0
        self.sending = False
        self.window_start = 0
        self.window_end = 0
        # Exact loss: the keys seen on one side only (acked, not yet delivered and the reverse), so a long run
        # keeps only what is in flight.
        self.unmatched_acks: set[tuple[str, int]] = set()
        self.unmatched_deliveries: set[tuple[str, int]] = set()
        self.latencies = array("q")  # since the last tick (tick mode), else of the whole window
        self._enc_cache: dict[str, bytes] = {}
        self.fast_pushes = plan.protocol == FLARE and not plan.exact_loss

    def enc(self, text: str) -> bytes:
        cached = self._enc_cache.get(text)
        if cached is None:
            cached = self._enc_cache[text] = text.encode()
        return cached

    # ------------------------------------------------------------------ incoming

    def on_flare(self, client: _Client, frame: _FlareIn) -> None:
        kind = frame.type
        now = time.monotonic_ns()
        if kind == "msg":
            self._delivered(now, frame.body.t if frame.body else 0, frame.conv, frame.seq)
        elif kind == "ack":
            self._acked(client, now, frame.conv, frame.seq)
        elif kind == "auth_ok":
            if not client.ready.done():
                client.ready.set_result(None)
        elif kind == "error":
            self.result.errors += 1
            if not client.ready.done():
                client.ready.set_exception(ConnectionError("auth failed"))
            elif client.inflight:
                client.inflight -= 1
                self._refill(client, now)

    def on_relay(self, client: _Client, frame: _RelayIn) -> None:
        now = time.monotonic_ns()
        if frame.a >= 0:
            self._acked(client, now, client.endpoint.user, frame.a)
        else:
            self._delivered(now, frame.t, frame.frm, frame.n)

    def count_push(self, now: int, sent_at: int) -> None:
        result = self.result
        result.delivered += 1
        if self.window_start <= now < self.window_end:
            result.delivered_in_window += 1
        if self.window_start <= sent_at < self.window_end:
            self.latencies.append(now - sent_at)

    def _delivered(self, now: int, sent_at: int, key: str, seq: int) -> None:
        self.count_push(now, sent_at)
        if self.plan.exact_loss:
            _match((key, seq), self.unmatched_acks, self.unmatched_deliveries)

    def _acked(self, client: _Client, now: int, key: str, seq: int) -> None:
        result = self.result
        result.acked += 1
        if self.window_start <= now < self.window_end:
            result.acked_in_window += 1
        if self.plan.exact_loss:
            _match((key, seq), self.unmatched_deliveries, self.unmatched_acks)
        client.inflight -= 1
        self._refill(client, now)

    def _refill(self, client: _Client, now: int) -> None:
        if self.sending and not self.plan.rate_per_s and client.inflight < self.plan.window:
            client.send_one(now)

    # ------------------------------------------------------------------ phases

    async def connect(self) -> None:
        plan = self.plan
        kwargs: dict[str, Any] = {"enable_auto_ping": False, "websocket_handshake_timeout": 30}
        if plan.local_addr:
            kwargs["local_addr"] = (plan.local_addr, 0)

        async def one(endpoint: Endpoint) -> None:
            url = plan.url if plan.protocol == FLARE else f"{plan.url}/?user={endpoint.user}"
            holder: dict[str, _Client] = {}

            def factory() -> _Client:
                holder["c"] = _Client(self, endpoint)
                return holder["c"]

            try:
                await ws_connect(factory, url, **kwargs)
                await asyncio.wait_for(holder["c"].ready, 30)
            except Exception:
                self.result.connect_errors += 1
                return
            self.clients.append(holder["c"])
            if endpoint.target:
                self.senders.append(holder["c"])

        for i in range(0, len(plan.endpoints), plan.connect_batch):
            await asyncio.gather(*(one(e) for e in plan.endpoints[i : i + plan.connect_batch]))
        self.result.connected = len(self.clients)

    async def traffic(self, start_ns: int, report: Callable[[Any], None]) -> None:
        """Send during warm-up and window, then drain; in tick mode ``report`` gets each tick's numbers."""
        plan = self.plan
        self.window_start = start_ns + int(plan.warmup_s * 1e9)
        self.window_end = self.window_start + int(plan.duration_s * 1e9)
        await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        self.sending = True
        probe = asyncio.ensure_future(self._cpu_probe())
        ticker = asyncio.ensure_future(self._ticks(report)) if plan.tick_s > 0 else None
        if plan.rate_per_s:
            await self._paced(start_ns)
        else:
            now = time.monotonic_ns()
            for client in self.senders:
                for _ in range(plan.window):
                    client.send_one(now)
            await asyncio.sleep(max(0.0, (self.window_end - time.monotonic_ns()) / 1e9))
        self.sending = False
        await probe
        if ticker is not None:
            await ticker
        # Drain: wait for outstanding acks, then until deliveries stop arriving (a large group's fan-out goes on
        # after the last ack) for QUIET_S, within drain_s.
        deadline = time.monotonic() + plan.drain_s
        delivered, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            inflight = sum(c.inflight for c in self.senders)
            if self.result.delivered != delivered:
                delivered, quiet_since = self.result.delivered, time.monotonic()
            if inflight == 0 and not self.unmatched_acks and time.monotonic() - quiet_since >= QUIET_S:
                break
            await asyncio.sleep(0.05)

    async def _ticks(self, report: Callable[[Any], None]) -> None:
        """At each tick boundary of the window (the last one is its end): ("tick", n, delivered, acked, errors,
        latencies). Counts are since the window began; latencies are those taken since the previous tick."""
        tick_ns = int(self.plan.tick_s * 1e9)
        n = 0
        while True:
            n += 1
            at = min(self.window_start + n * tick_ns, self.window_end)
            await asyncio.sleep(max(0.0, (at - time.monotonic_ns()) / 1e9))
            latencies, self.latencies = self.latencies, array("q")
            r = self.result
            report(("tick", n, r.delivered_in_window, r.acked_in_window, r.errors, latencies))
            if at >= self.window_end:
                return

    async def _cpu_probe(self) -> None:
        await asyncio.sleep(max(0.0, (self.window_start - time.monotonic_ns()) / 1e9))
        start = _cpu_seconds()
        await asyncio.sleep(max(0.0, (self.window_end - time.monotonic_ns()) / 1e9))
        self.result.cpu_s = _cpu_seconds() - start

    async def _paced(self, start_ns: int) -> None:
        plan = self.plan
        senders = self.senders
        if not senders:
            await asyncio.sleep(max(0.0, (self.window_end - time.monotonic_ns()) / 1e9))
            return
        per_ns = plan.rate_per_s / 1e9
        offered = 0
        turn = 0
        while True:
            now = time.monotonic_ns()
            if now >= self.window_end:
                return
            due = int((now - start_ns) * per_ns) - offered
            while due > 0:
                due -= 1
                offered += 1
                for _ in range(len(senders)):  # the next sender with room in its window
                    client = senders[turn]
                    turn = (turn + 1) % len(senders)
                    if client.inflight < plan.window:
                        client.send_one(now)
                        break
                else:
                    # Every window is full: the rest due now is not offered. (Scanning every sender for
                    # each of them made a lagging server's load generator burn its CPU, which then read
                    # the acks late and kept the windows full: the run collapsed.)
                    offered += due
                    break
            await asyncio.sleep(0.001)

    def finish(self) -> WorkerResult:
        result = self.result
        result.sent = self.sent
        if self.plan.exact_loss:
            result.lost = len(self.unmatched_acks)
        if not self.plan.tick_s:
            result.latencies_ns = self.latencies
        return result

    def close(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                with contextlib.suppress(Exception):
                    client.transport.disconnect(graceful=False)


def tick_count(plan: WorkerPlan) -> int:
    """How many ticks a worker reports over the window (the last one may be shorter)."""
    return max(1, -(-int(plan.duration_s * 1e9) // int(plan.tick_s * 1e9)))


def _match(key: tuple[str, int], other_side: set[tuple[str, int]], this_side: set[tuple[str, int]]) -> None:
    """Pair ``key`` with its ack or delivery seen before, or remember it until the other one comes."""
    if key in other_side:
        other_side.discard(key)
    else:
        this_side.add(key)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _main(plan: WorkerPlan, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    run = _Run(plan)
    await run.connect()
    conn.send(("ready", run.result.connected, run.result.connect_errors))
    command = await loop.run_in_executor(None, conn.recv)
    if command[0] == "go":
        await run.traffic(command[1], conn.send)
        conn.send(("result", run.finish()))
    elif command[0] == "hold":  # idle connections: stay connected until told to stop
        conn.send(("result", run.finish()))
        await loop.run_in_executor(None, conn.recv)
    run.close()
    await asyncio.sleep(0.1)


def worker_main(plan: WorkerPlan, conn: Connection) -> None:
    """Entry point of a load process (multiprocessing target)."""
    if plan.cpu is not None:
        os.sched_setaffinity(0, {plan.cpu})
    raise_fd_limit()
    gc.set_threshold(50_000, 20, 100)  # the load generator holds many live objects too (see app.tune_gc)
    import uvloop

    uvloop.run(_main(plan, conn))
