"""A local cluster for development, benchmarks and tests (``flare dev cluster``): N gateway nodes and a store
worker as separate processes behind a real HAProxy, on the engines ``scripts/services.sh start`` runs.

Every process is this machine's: ports on 127.0.0.1, logs and data under one directory.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


def wait_for_line(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float) -> bytes | None:
    """The first line of ``proc``'s stdout pipe that starts with ``prefix``; None when the pipe ends first or
    ``timeout`` passes. A bare ``readline`` would wait for ever on a child that hangs before its ready line."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.startswith(prefix):
                    return line
    return None


# Ports for servers this process starts come from below the kernel's ephemeral range (32768-60999 by default):
# a port the kernel hands out for ``bind(0)`` can be taken, between its release and the server's bind, as the
# local port of any outgoing connection on the machine. A pytest-xdist worker walks its own slice of the range,
# so two workers never hand out the same port; the pid chooses where in it (a child process it runs has its own).
_PORTS_LOW, _SLICE, _SLICES = 20000, 1000, 12
_worker = os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
_slice_low = _PORTS_LOW + _SLICE * ((int(_worker) if _worker.isdigit() else os.getpid()) % _SLICES)
_next_port = _slice_low + (os.getpid() * 97) % _SLICE


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now and this process has not handed out lately."""
    global _next_port
    for _ in range(_SLICE):
        port = _next_port
        _next_port = _slice_low + (port + 1 - _slice_low) % _SLICE
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {_slice_low}-{_slice_low + _SLICE - 1}")


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: BinaryIO | None = None

    def start(self, ready: str | None = None, timeout: float = 40) -> None:
        self._release()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process is gone
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=self._log, env={**os.environ, **self.env}
        )
        if ready is None:
            return
        if wait_for_line(self.proc, ready.encode(), timeout) is not None:
            return
        self.proc.kill()  # hung or dead: either way it must not outlive the failed start
        self.proc.wait(10)
        self._release()
        raise RuntimeError(f"{self.name} did not start within {timeout:.0f} s: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._release()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._release()

    def _release(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Cluster:
    tmp: Path
    env: dict[str, str]
    nodes: list[Proc] = field(default_factory=list)
    node_ports: list[tuple[int, int]] = field(default_factory=list)  # (api, ws)
    worker: Proc | None = None
    haproxy: Proc | None = None
    api_port: int = 0
    ws_port: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/v1/ws"

    def flare(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "flare_im.cli", *args]

    def start_node(self, index: int) -> None:
        api, ws = self.node_ports[index]
        node = Proc(
            f"node{index}",
            self.flare("serve", "--roles", "gateway,api", "--api-port", str(api), "--ws-port", str(ws)),
            {**self.env, "FLARE_NODE_ID": str(index + 1), "FLARE_DATA_DIR": str(self.tmp / f"node{index}")},
            self.tmp / f"node{index}.log",
        )
        node.start("flare ready")
        if index < len(self.nodes):
            self.nodes[index] = node
        else:
            self.nodes.append(node)

    def start_worker(self) -> None:
        self.worker = Proc("worker", self.flare("worker", "store"), self.env, self.tmp / "worker.log")
        self.worker.start("flare worker ready")

    def start_haproxy(self, haproxy: str) -> None:
        self.api_port = self.api_port or free_port()
        self.ws_port = self.ws_port or free_port()
        servers_api = "\n".join(
            f"    server n{i} 127.0.0.1:{api} check inter 300 fall 2 rise 2"
            for i, (api, _) in enumerate(self.node_ports)
        )
        servers_ws = "\n".join(
            f"    server n{i} 127.0.0.1:{ws} check port {api} inter 300 fall 2 rise 2"
            for i, (api, ws) in enumerate(self.node_ports)
        )
        config = f"""
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option redispatch
    retries 3
frontend api
    bind 127.0.0.1:{self.api_port}
    default_backend api
frontend ws
    bind 127.0.0.1:{self.ws_port}
    default_backend ws
backend api
    balance roundrobin
    option httpchk GET /healthz
{servers_api}
backend ws
    balance roundrobin
    option httpchk GET /healthz
{servers_ws}
"""
        path = self.tmp / "haproxy.cfg"
        path.write_text(config)
        self.haproxy = Proc("haproxy", [haproxy, "-db", "-f", str(path)], {}, self.tmp / "haproxy.log")
        self.haproxy.start()
        _wait_http(f"{self.api_url}/healthz")

    def migrate(self) -> None:
        subprocess.run(self.flare("migrate"), env={**os.environ, **self.env}, check=True, capture_output=True)

    def start(self, nodes: int, haproxy: str = "/usr/sbin/haproxy") -> None:
        """Migrate the database, then start the worker, ``nodes`` gateway nodes and HAProxy in front."""
        self.migrate()
        self.node_ports = [(free_port(), free_port()) for _ in range(nodes)]
        self.start_worker()
        for i in range(nodes):
            self.start_node(i)
        self.start_haproxy(haproxy)

    def stop(self) -> None:
        for p in [*self.nodes, self.worker, self.haproxy]:
            if p is not None:
                p.stop()


def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        time.sleep(0.1)


# Where scripts/services.sh runs the engines (docs/development.md).
DEV_ENGINES = {
    "FLARE_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/flare_dev",
    "FLARE_MESSAGE_STORE_URL": "clickhouse://127.0.0.1:18123/flare_dev",
    "FLARE_CACHE_URL": "redis://127.0.0.1:6379/0",
    "FLARE_QUEUE_URL": "kafka://127.0.0.1:19092",
}


def prepare_engines(env: dict[str, str]) -> None:
    """Create the PostgreSQL and ClickHouse databases the URLs name, if missing."""
    import asyncio

    import asyncpg

    database_url = env["FLARE_DATABASE_URL"]
    base, name = database_url.rsplit("/", 1)

    async def create() -> None:
        conn = await asyncpg.connect(f"{base}/postgres")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    store = env["FLARE_MESSAGE_STORE_URL"]
    if store.startswith("clickhouse://"):
        host, database = store.split("://", 1)[1].split("/", 1)
        request = urllib.request.Request(f"http://{host}/", data=f"CREATE DATABASE IF NOT EXISTS {database}".encode())
        with urllib.request.urlopen(request, timeout=30):
            pass


def run(nodes: int, directory: Path, api_port: int, ws_port: int) -> int:
    """``flare dev cluster``: run until Ctrl-C, printing where clients connect."""
    env = {**DEV_ENGINES, **{k: v for k, v in os.environ.items() if k.startswith("FLARE_")}}
    env.setdefault("FLARE_JWT_SECRET", "dev-cluster-secret-change-me-0123456789")
    env.setdefault("FLARE_ADMIN_KEY", "dev-cluster-admin-key")
    env["FLARE_PUBLIC_WS_URL"] = f"ws://127.0.0.1:{ws_port}/v1/ws"
    prepare_engines(env)
    directory.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(directory, env, api_port=api_port, ws_port=ws_port)
    try:
        cluster.start(nodes)
        print(
            f"flare cluster ready api={cluster.api_url} ws={cluster.ws_url} nodes={nodes} admin_key="
            f"{env['FLARE_ADMIN_KEY']} logs={directory}",
            flush=True,
        )
        # Blocked only now: the children must not inherit a mask that ignores their SIGTERM.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
    return 0
