"""The ``flare`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from flare_im.config import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flare", description="Flare instant-messaging server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (embedded backends by default)")
    serve.add_argument("--host", help="address to bind (FLARE_HOST, default 127.0.0.1)")
    serve.add_argument("--api-port", type=int, help="HTTP API port (FLARE_API_PORT, default 8080)")
    serve.add_argument("--ws-port", type=int, help="WebSocket port (FLARE_WS_PORT, default 8081)")
    serve.add_argument("--data-dir", help="where embedded data lives (FLARE_DATA_DIR, default ./flare-data)")
    serve.add_argument("--node-id", type=int, help="0..1023, unique per node (FLARE_NODE_ID, default 0)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (FLARE_LOG_LEVEL, default INFO)")
    serve.add_argument("--roles", help="gateway,api (FLARE_ROLES): gateway adds the WebSocket; the API always runs")
    worker = sub.add_parser("worker", help="run a background role (distributed mode, configured by FLARE_* URLs)")
    worker.add_argument("role", choices=["store"], help="store: the messages topic into the message store")
    worker.add_argument("--node-id", type=int, help="0..1023 (FLARE_NODE_ID)")
    worker.add_argument("--log-level", help="DEBUG, INFO, WARNING (FLARE_LOG_LEVEL, default INFO)")
    dev = sub.add_parser("dev", help="development tools")
    dev_sub = dev.add_subparsers(dest="tool", required=True)
    cluster = dev_sub.add_parser("cluster", help="N nodes + store worker behind HAProxy on scripts/services.sh engines")
    cluster.add_argument("--nodes", type=int, default=2)
    cluster.add_argument("--dir", default=".cluster", help="logs and node data")
    cluster.add_argument("--api-port", type=int, default=8080, help="HAProxy's API port")
    cluster.add_argument("--ws-port", type=int, default=8081, help="HAProxy's WebSocket port")
    migrate = sub.add_parser("migrate", help="apply pending schema migrations to the database (database_url)")
    migrate.add_argument("--data-dir", help="where embedded data lives (FLARE_DATA_DIR, default ./flare-data)")
    migrate.add_argument("--status", action="store_true", help="list applied and pending migrations, change nothing")
    from flare_im.benchmark.cli import add_parser

    add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        overrides = {k: v for k, v in vars(args).items() if k != "command"}
        try:
            settings = Settings.load(overrides)
        except ValueError as exc:
            print(f"flare: {exc}", file=sys.stderr)
            return 2
        _logging(settings)
        from flare_im.oslimits import raise_fd_limit

        raise_fd_limit()
        from flare_im.app import serve
        from flare_im.backends.migrations import SchemaError

        try:
            return _run(serve(settings))
        except SchemaError as exc:
            print(f"flare: {exc}", file=sys.stderr)
            return 1
    if args.command == "worker":
        try:
            settings = Settings.load({"node_id": args.node_id, "log_level": args.log_level})
        except ValueError as exc:
            print(f"flare: {exc}", file=sys.stderr)
            return 2
        _logging(settings)
        from flare_im.distributed import run_store_worker

        try:
            return _run(run_store_worker(settings))
        except ValueError as exc:
            print(f"flare: {exc}", file=sys.stderr)
            return 2
    if args.command == "dev":
        from pathlib import Path

        from flare_im.devcluster import run as run_cluster

        return run_cluster(args.nodes, Path(args.dir), args.api_port, args.ws_port)
    if args.command == "migrate":
        return _migrate(args.data_dir, status=args.status)
    if args.command == "bench":
        from flare_im.benchmark.cli import run

        return run(args)
    return 2


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
    )
    logging.getLogger("picows").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main)
    result: int = uvloop.run(main)
    return result


def _migrate(data_dir: str | None, *, status: bool) -> int:
    from flare_im.backends.migrations import SchemaError
    from flare_im.migrate import MigrateError, migrate, report

    try:
        settings = Settings.load({"data_dir": data_dir})
        states = asyncio.run(migrate(settings, apply=not status))
    except (ValueError, SchemaError, MigrateError) as exc:
        print(f"flare: {exc}", file=sys.stderr)
        return 1
    report(states, status=status, write=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
