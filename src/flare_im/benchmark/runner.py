"""`flare bench`: start (or reach) a server, provision users, run load processes, report numbers."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import jwt

from flare_im.benchmark.load import FLARE, RELAY, Endpoint, WorkerPlan, WorkerResult, tick_count, worker_main
from flare_im.benchmark.stats import LatencySummary, ProcSample, cpu_percent, rate, sample_process
from flare_im.devcluster import free_port, wait_for_line

BATCH = 1000


@dataclass(slots=True)
class LoadOptions:
    window: int = 10
    rate: float = 0.0
    duration_s: float = 10.0
    warmup_s: float = 1.0
    drain_s: float = 5.0
    payload_bytes: int = 64
    workers: int = 1
    load_cpu: int | None = None
    tick_s: float = 0.0  # > 0: the workers report every tick_s (soak trend), see run_workers


@dataclass(slots=True)
class Server:
    kind: str  # FLARE | RELAY
    ws_url: str
    api_url: str = ""
    pid: int | None = None
    admin_key: str = ""
    jwt_secret: str = ""
    proc: subprocess.Popen[bytes] | None = None
    data_dir: str | None = None
    users: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def sample(self) -> ProcSample | None:
        return sample_process(self.pid, time.monotonic()) if self.pid else None


def _pin(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _wait_ready(proc: subprocess.Popen[bytes], marker: bytes) -> bytes:
    line = wait_for_line(proc, marker, 60)
    if line is not None:
        return line
    code = proc.poll()
    if code is None:
        proc.kill()
        proc.wait(10)
    raise RuntimeError(f"server did not start within 60 s (exit code {code})")


def spawn_flare(cpu: int | None, env: dict[str, str] | None = None) -> Server:
    """A fresh `flare serve` on free ports and a temporary data directory, limits opened for load."""
    data_dir = tempfile.mkdtemp(prefix="flare-bench-")
    api_port, ws_port = free_port(), free_port()
    admin_key, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    full_env = {
        **os.environ,
        "FLARE_ADMIN_KEY": admin_key,
        "FLARE_JWT_SECRET": secret,
        "FLARE_LOG_LEVEL": "WARNING",
        "FLARE_RATE_LIMIT_PER_S": "1000000000",
        "FLARE_RATE_LIMIT_BURST": "1000000000",
        "FLARE_ACCESS_TOKEN_TTL_S": "86400",
        **(env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "flare_im.cli",
        "serve",
        "--api-port",
        str(api_port),
        "--ws-port",
        str(ws_port),
        "--data-dir",
        data_dir,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=full_env, preexec_fn=_pin(cpu))
    _wait_ready(proc, b"flare ready")
    return Server(
        FLARE,
        f"ws://127.0.0.1:{ws_port}/v1/ws",
        f"http://127.0.0.1:{api_port}",
        proc.pid,
        admin_key,
        secret,
        proc,
        data_dir,
    )


def spawn_relay(cpu: int | None) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "flare_im.benchmark.relay", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=_pin(cpu))
    _wait_ready(proc, b"relay ready")
    return Server(RELAY, f"ws://127.0.0.1:{port}", pid=proc.pid, proc=proc)


def connect_flare(api_url: str, admin_key: str, pid: int | None) -> Server:
    """A server that is already running (its per-connection rate limit must allow the load)."""
    ws_url = httpx.get(f"{api_url}/v1/gateways", timeout=10).json()["websocket"][0]
    return Server(FLARE, ws_url, api_url, pid, admin_key)


def provision(server: Server, uids: Sequence[str]) -> dict[str, str]:
    """Create the users (admin batch API) and return an access token for each."""
    if server.kind == RELAY:
        return dict.fromkeys(uids, "")
    headers = {"X-Admin-Key": server.admin_key}
    tokens: dict[str, str] = {}
    with httpx.Client(base_url=server.api_url, headers=headers, timeout=120) as http:
        for i in range(0, len(uids), BATCH):
            chunk = list(uids[i : i + BATCH])
            resp = http.post("/v1/admin/users:batch", json={"users": [{"user_id": u} for u in chunk]})
            resp.raise_for_status()
            if server.jwt_secret:  # spawned: mint locally, as the server would
                now = int(time.time())
                for u in chunk:
                    claims = {"sub": u, "iat": now, "exp": now + 86400, "iss": "flare", "typ": "access"}
                    tokens[u] = jwt.encode(claims, server.jwt_secret, algorithm="HS256")
            else:
                resp = http.post("/v1/admin/tokens", json={"user_ids": chunk, "ttl_s": 86400})
                resp.raise_for_status()
                tokens.update(resp.json()["tokens"])
    return tokens


def create_group(server: Server, owner_token: str, members: Sequence[str]) -> str:
    """A group of the owner and ``members``: created with the first 9,999 (what one create takes), the rest added
    in batches of ``BATCH`` (the server's ``group_max_members`` must allow them all)."""
    first, rest = list(members[:9_999]), list(members[9_999:])
    auth = {"Authorization": f"Bearer {owner_token}"}
    with httpx.Client(base_url=server.api_url, timeout=120) as http:
        resp = http.post("/v1/groups", json={"name": "bench", "members": first}, headers=auth)
        resp.raise_for_status()
        conv: str = resp.json()["conv"]
        for i in range(0, len(rest), BATCH):
            added = http.post(f"/v1/groups/{conv[2:]}/members", json={"user_ids": rest[i : i + BATCH]}, headers=auth)
            added.raise_for_status()
        return conv


TickHandler = Callable[[list[tuple[Any, ...]], ProcSample | None, ProcSample | None], None]


def run_workers(
    plans: Sequence[WorkerPlan], server: Server, *, hold_s: float = 0.0, on_tick: TickHandler | None = None
) -> dict[str, Any]:
    """Start one process per plan, wait until all are connected, start the load at one instant, collect.

    Plans with ``tick_s`` report at every tick of the window: ``on_tick`` gets each worker's tick message
    (see ``_Run._ticks``), and samples of the server at the tick's start and once all messages arrived."""
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for plan in plans:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(plan, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    connected = errors = 0
    for pipe in pipes:
        _, ok, failed = pipe.recv()
        connected += ok
        errors += failed
    idle: dict[str, Any] = {}
    before = server.sample()
    if hold_s:
        for pipe in pipes:
            pipe.send(("hold",))
        results = [pipe.recv()[1] for pipe in pipes]
        time.sleep(hold_s)
        idle["server_after"] = server.sample()
        for pipe in pipes:
            pipe.send(("stop",))
    else:
        start_ns = time.monotonic_ns() + 200_000_000
        for pipe in pipes:
            pipe.send(("go", start_ns))
        plan = plans[0]
        time.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9 + plan.warmup_s))
        before = server.sample()  # server CPU over the measured window only
        if plan.tick_s > 0:
            previous = before
            for _ in range(tick_count(plan)):
                messages = [pipe.recv() for pipe in pipes]
                sample = server.sample()
                if on_tick is not None:
                    on_tick(messages, previous, sample)
                previous = sample
        else:
            time.sleep(plan.duration_s)
        idle["server_after"] = server.sample()
        results = [pipe.recv()[1] for pipe in pipes]
    for proc in procs:
        proc.join(timeout=30)
    return {"results": results, "server_before": before, "connected": connected, "connect_errors": errors, **idle}


def _merge(results: Sequence[WorkerResult]) -> WorkerResult:
    total = WorkerResult()
    for r in results:
        for name in (
            "connected",
            "connect_errors",
            "sent",
            "acked",
            "acked_in_window",
            "delivered",
            "delivered_in_window",
            "errors",
            "lost",
        ):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.latencies_ns.extend(r.latencies_ns)
        total.cpu_s += r.cpu_s
    return total


def _server_report(run: dict[str, Any]) -> dict[str, Any]:
    before: ProcSample | None = run["server_before"]
    after: ProcSample | None = run.get("server_after")
    if before is None or after is None:
        return {}
    return {"cpu_percent": cpu_percent(before, after), "rss_mb": round(after.rss_bytes / 2**20, 1)}


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _split(items: Sequence[Endpoint], parts: int) -> list[list[Endpoint]]:
    """Split endpoints over load processes, keeping each consecutive pair in one process."""
    pairs = [list(items[i : i + 2]) for i in range(0, len(items), 2)]
    out: list[list[Endpoint]] = [[] for _ in range(parts)]
    for i, pair in enumerate(pairs):
        out[i % parts].extend(pair)
    return [o for o in out if o]


def _plans(server: Server, groups: list[list[Endpoint]], opts: LoadOptions, *, exact: bool) -> list[WorkerPlan]:
    return [
        WorkerPlan(
            protocol=server.kind,
            url=server.ws_url,
            endpoints=eps,
            window=opts.window,
            rate_per_s=opts.rate / len(groups),
            payload_bytes=opts.payload_bytes,
            warmup_s=opts.warmup_s,
            duration_s=opts.duration_s,
            drain_s=opts.drain_s,
            cpu=opts.load_cpu,
            exact_loss=exact,
            tick_s=opts.tick_s,
        )
        for eps in groups
    ]


def bench_p2p(server: Server, pairs: int, opts: LoadOptions, on_tick: TickHandler | None = None) -> dict[str, Any]:
    """``pairs`` pairs of clients sending to each other (1:1 relay load); see run_workers for ``on_tick``."""
    tag = secrets.token_hex(3)
    endpoints: list[Endpoint] = []
    uids = [f"b{tag}-{i}" for i in range(2 * pairs)]
    tokens = provision(server, uids)
    for i in range(pairs):
        a, b = uids[2 * i], uids[2 * i + 1]
        if server.kind == FLARE:
            conv = f"d:{min(a, b)}:{max(a, b)}"
            endpoints += [Endpoint(a, tokens[a], target=conv), Endpoint(b, tokens[b], target=conv)]
        else:
            endpoints += [Endpoint(a, target=b), Endpoint(b, target=a)]
    run = run_workers(_plans(server, _split(endpoints, opts.workers), opts, exact=True), server, on_tick=on_tick)
    total = _merge(run["results"])
    return {
        "benchmark": "p2p",
        "target": server.kind,
        "pairs": pairs,
        "clients": 2 * pairs,
        **_load_params(opts),
        "connected": run["connected"],
        "connect_errors": run["connect_errors"],
        "delivered_per_s": rate(total.delivered_in_window, opts.duration_s),
        "acked_per_s": rate(total.acked_in_window, opts.duration_s),
        "latency_ms": asdict(LatencySummary.from_ns(total.latencies_ns)),
        "sent": total.sent,
        "acked": total.acked,
        "delivered": total.delivered,
        "loss": total.lost,
        "errors": total.errors,
        "server": _server_report(run),
        "load": _load_report(run["results"], opts),
    }


def bench_group(server: Server, members: int, senders: int, opts: LoadOptions, *, online: int = 0) -> dict[str, Any]:
    """One group of ``members`` members, ``online`` of them connected (0: all), ``senders`` of those sending
    (fan-out load). Offline members cost the server a route lookup per message, connected ones a delivery."""
    tag = secrets.token_hex(3)
    uids = [f"g{tag}-{i}" for i in range(members)]
    tokens = provision(server, uids)
    setup_started = time.monotonic()
    conv = create_group(server, tokens[uids[0]], uids[1:])
    setup_s = time.monotonic() - setup_started
    online = min(online or members, members)
    endpoints = [Endpoint(u, tokens[u], target=conv if i < senders else "") for i, u in enumerate(uids[:online])]
    groups: list[list[Endpoint]] = [endpoints[i :: opts.workers] for i in range(opts.workers)]
    run = run_workers(_plans(server, [g for g in groups if g], opts, exact=False), server)
    total = _merge(run["results"])
    receivers = online - 1
    return {
        "benchmark": "group",
        "target": server.kind,
        "members": members,
        "online": online,
        "senders": senders,
        "group_setup_s": round(setup_s, 1),
        **_load_params(opts),
        "connected": run["connected"],
        "connect_errors": run["connect_errors"],
        "deliveries_per_s": rate(total.delivered_in_window, opts.duration_s),
        "messages_per_s": rate(total.acked_in_window, opts.duration_s),
        "latency_ms": asdict(LatencySummary.from_ns(total.latencies_ns)),
        "sent": total.sent,
        "acked": total.acked,
        "delivered": total.delivered,
        "loss": max(0, total.acked * receivers - total.delivered),
        "errors": total.errors,
        "server": _server_report(run),
        "load": _load_report(run["results"], opts),
    }


def bench_idle(server: Server, connections: int, opts: LoadOptions, *, hold_s: float = 3.0) -> dict[str, Any]:
    """RSS growth of the server per authenticated idle connection."""
    tag = secrets.token_hex(3)
    uids = [f"i{tag}-{i}" for i in range(connections)]
    tokens = provision(server, uids)
    baseline = server.sample()
    per_process = 15_000  # below the usual per-process open-file limit and the ephemeral port range
    parts = max(opts.workers, -(-connections // per_process))
    groups = [[Endpoint(u, tokens[u]) for u in uids[i::parts]] for i in range(parts)]
    plans = [
        WorkerPlan(
            protocol=server.kind,
            url=server.ws_url,
            endpoints=g,
            cpu=opts.load_cpu,
            local_addr=f"127.0.0.{2 + i}",
            exact_loss=False,
            connect_batch=500,
        )
        for i, g in enumerate(groups)
    ]
    run = run_workers(plans, server, hold_s=hold_s)
    after: ProcSample | None = run.get("server_after")
    report: dict[str, Any] = {
        "benchmark": "idle",
        "target": server.kind,
        "connections": connections,
        "connected": run["connected"],
        "connect_errors": run["connect_errors"],
    }
    if baseline is not None and after is not None:
        growth = after.rss_bytes - baseline.rss_bytes
        report["server"] = {
            "rss_before_mb": round(baseline.rss_bytes / 2**20, 1),
            "rss_after_mb": round(after.rss_bytes / 2**20, 1),
        }
        report["bytes_per_connection"] = round(growth / max(1, run["connected"]))
    return report


def _load_params(opts: LoadOptions) -> dict[str, Any]:
    return {
        "window": opts.window,
        "rate": opts.rate or None,
        "duration_s": opts.duration_s,
        "payload_bytes": opts.payload_bytes,
    }


def _load_report(results: Sequence[WorkerResult], opts: LoadOptions) -> dict[str, Any]:
    """Load-generator CPU over the measured window: near 100% per process means it may be the bottleneck."""
    per_process = [round(100 * r.cpu_s / opts.duration_s, 1) for r in results]
    return {"processes": len(results), "cpu_percent": round(sum(per_process), 1), "per_process": per_process}
