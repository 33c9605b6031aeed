"""A local cluster for development, benchmarks and tests (``flare dev cluster``): N gateway nodes and a store
worker as separate processes behind a real HAProxy, on the engines ``scripts/services.sh start`` runs.

Every process is this machine's: ports on 127.0.0.1, logs and data under one directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None, timeout: float = 40) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it; closed with the test dir
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log, env={**os.environ, **self.env})
        if ready is None:
            return
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(ready.encode()):
                return
        raise RuntimeError(f"{self.name} did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


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
