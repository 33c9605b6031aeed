"""`flare bench`'s arguments, apart from the runs (cli.py) so that every other command starts without loading them."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="measure throughput, latency and memory (see docs/performance.md)")
    kinds = bench.add_subparsers(dest="bench", required=True)
    p2p = kinds.add_parser("p2p", help="1:1 load: pairs of clients sending to each other through Flare")
    p2p.add_argument("--pairs", type=int, default=500)
    p2p.add_argument(
        "--compare-relay",
        action="store_true",
        help="also run the same load against the bare relay and report ratio_to_relay",
    )
    relay = kinds.add_parser("relay", help="the same 1:1 load against the bare picows relay (the ceiling)")
    relay.add_argument("--pairs", type=int, default=500)
    group = kinds.add_parser("group", help="fan-out load: one large group, some members sending")
    group.add_argument("--members", type=int, default=1000)
    group.add_argument("--senders", type=int, default=10)
    group.add_argument("--online", type=int, default=0, help="members connected (0: all); the rest are offline")
    idle = kinds.add_parser("idle", help="server memory per authenticated idle connection")
    idle.add_argument("--connections", type=int, default=10_000)
    idle.add_argument("--hold", type=float, default=3.0, help="seconds to hold the connections before measuring")
    soak = kinds.add_parser("soak", help="the p2p load held long (use --rate), a trend line every --interval seconds")
    soak.add_argument("--pairs", type=int, default=500)
    soak.add_argument("--interval", type=float, default=30.0, help="seconds between trend lines")
    soak.add_argument("--data-dir", help="data directory of the --url server, for its file sizes")
    soak.add_argument(
        "--control",
        action="store_true",
        help="then one minute of the same load on a fresh server: the machine's drift apart from the server's",
    )
    for p in (p2p, relay, group, idle, soak):
        p.add_argument("--window", type=int, default=10, help="messages in flight per sending client")
        p.add_argument("--rate", type=float, default=0.0, help="fixed offered load in msgs/s (0: saturate)")
        p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
        p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
        p.add_argument("--size", type=int, default=64, help="message text bytes")
        p.add_argument("--workers", type=int, default=1, help="load-generator processes")
        p.add_argument("--spawn", action="store_true", help="start a fresh server for the run (default)")
        p.add_argument("--url", help="API URL of a running Flare server instead of spawning one")
        p.add_argument("--admin-key", help="admin API key of that server")
        p.add_argument("--server-pid", type=int, help="pid of that server, for its CPU and RSS")
        p.add_argument("--server-cpu", type=int, help="pin the spawned server to this CPU")
        p.add_argument("--load-cpu", type=int, help="pin the load processes to this CPU")
        p.add_argument("--json", action="store_true", help="print one JSON object")
    soak.set_defaults(duration=300.0)
