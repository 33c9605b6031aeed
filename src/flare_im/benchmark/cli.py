"""`flare bench {p2p,relay,group,idle,soak}`: arguments, the runs they imply, and the report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flare_im.benchmark.runner import (
    LoadOptions,
    Server,
    bench_group,
    bench_idle,
    bench_p2p,
    connect_flare,
    machine,
    spawn_flare,
    spawn_relay,
)
from flare_im.benchmark.soak import bench_soak


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


def _options(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        window=args.window,
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        payload_bytes=args.size,
        workers=args.workers,
        load_cpu=args.load_cpu,
        tick_s=args.interval if args.bench == "soak" else 0.0,
    )


def _flare(args: argparse.Namespace, env: dict[str, str] | None = None) -> Server:
    if args.url:
        if not args.admin_key:
            raise SystemExit("flare bench: --url needs --admin-key")
        return connect_flare(args.url.rstrip("/"), args.admin_key, args.server_pid)
    return spawn_flare(args.server_cpu, env)


def _with(server: Server, fn: Any, *a: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = fn(server, *a)
        return result
    finally:
        server.stop()


def run(args: argparse.Namespace) -> int:
    opts = _options(args)
    report: dict[str, Any]
    if args.bench == "relay":
        report = _with(spawn_relay(args.server_cpu), bench_p2p, args.pairs, opts)
    elif args.bench == "p2p":
        report = _with(_flare(args), bench_p2p, args.pairs, opts)
        if args.compare_relay:
            relay = _with(spawn_relay(args.server_cpu), bench_p2p, args.pairs, opts)
            report["relay"] = {
                k: relay[k] for k in ("delivered_per_s", "acked_per_s", "latency_ms", "server", "load", "loss")
            }
            ceiling = relay["delivered_per_s"]
            report["ratio_to_relay"] = round(report["delivered_per_s"] / ceiling, 3) if ceiling else None
    elif args.bench == "soak":
        out = sys.stderr if args.json else sys.stdout

        def emit(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        report = _with(_flare(args), bench_soak, args.pairs, opts, args.data_dir, emit)
    elif args.bench == "group":
        # A spawned server takes a group of any size asked for (group_max_members).
        env = {"FLARE_GROUP_MAX_MEMBERS": str(max(args.members, 10_000))}
        report = _with(
            _flare(args, env), lambda s: bench_group(s, args.members, args.senders, opts, online=args.online)
        )
    else:
        report = _with(_flare(args), lambda s: bench_idle(s, args.connections, opts, hold_s=args.hold))
    report["pinning"] = {"server_cpu": args.server_cpu, "load_cpu": args.load_cpu}
    report["machine"] = machine()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_human(report)
    return 0 if report.get("loss", 0) == 0 and not report.get("connect_errors") else 1


def _print_human(report: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(f"{report['benchmark']} against {report['target']}\n")
    for key, value in report.items():
        if key in ("benchmark", "target", "trend"):  # a soak's trend was printed line by line
            continue
        out.write(f"  {key}: {value}\n")
