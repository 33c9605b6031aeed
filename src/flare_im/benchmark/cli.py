"""`flare bench {p2p,relay,group,idle,soak}`: the runs each command implies, and the report."""

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
from flare_im.benchmark.soak import add_control, bench_soak, control_options


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
        if args.control and args.url:
            raise SystemExit("flare bench soak: --control starts a fresh server, so it does not go with --url")
        out = sys.stderr if args.json else sys.stdout

        def emit(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        report = _with(_flare(args), bench_soak, args.pairs, opts, args.data_dir, emit)
        if args.control:
            emit("control: a fresh server, the same load")
            control = _with(_flare(args), bench_soak, args.pairs, control_options(opts), None, emit)
            add_control(report, control)
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
    lost = report.get("loss", 0) + report.get("control_minute", {}).get("loss", 0)
    return 0 if lost == 0 and not report.get("connect_errors") else 1


def _print_human(report: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(f"{report['benchmark']} against {report['target']}\n")
    for key, value in report.items():
        if key in ("benchmark", "target", "trend"):  # a soak's trend was printed line by line
            continue
        out.write(f"  {key}: {value}\n")
