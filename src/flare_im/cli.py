"""The ``flare`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from flare_im import __version__
from flare_im.config import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flare", description="Flare instant-messaging server")
    parser.add_argument("--version", action="version", version=f"flare {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (embedded backends by default)")
    serve.add_argument("--host", help="address to bind (FLARE_HOST, default 127.0.0.1)")
    serve.add_argument("--api-port", type=int, help="HTTP API port (FLARE_API_PORT, default 8080)")
    serve.add_argument("--ws-port", type=int, help="WebSocket port (FLARE_WS_PORT, default 8081)")
    serve.add_argument("--data-dir", help="where embedded data lives (FLARE_DATA_DIR, default ./flare-data)")
    serve.add_argument("--node-id", type=int, help="0..1023, unique per node (FLARE_NODE_ID, default 0)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (FLARE_LOG_LEVEL, default INFO)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: https and wss on the same ports (FLARE_TLS_CERT)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert (FLARE_TLS_KEY)")
    serve.add_argument("--grpc-port", type=int, help="gRPC API port (FLARE_GRPC_PORT, default 0: no gRPC server)")
    serve.add_argument("--metrics-port", type=int, help="/metrics, /healthz, /readyz also here (FLARE_METRICS_PORT)")
    serve.add_argument("--roles", help="gateway,api (FLARE_ROLES): gateway adds the WebSocket; the API always runs")
    worker = sub.add_parser("worker", help="run a background role (distributed mode, configured by FLARE_* URLs)")
    worker.add_argument(
        "role",
        choices=["store", "push", "webhooks", "archive"],
        help="store: the messages topic into the message store; push: notifications; webhooks: after-events;"
        " archive: old messages to the object store every archive_interval_s",
    )
    worker.add_argument("--node-id", type=int, help="0..1023 (FLARE_NODE_ID)")
    worker.add_argument("--log-level", help="DEBUG, INFO, WARNING (FLARE_LOG_LEVEL, default INFO)")
    worker.add_argument("--metrics-port", type=int, help="/metrics, /healthz, /readyz (FLARE_METRICS_PORT; 0: any)")
    dev = sub.add_parser("dev", help="development tools")
    dev_sub = dev.add_subparsers(dest="tool", required=True)
    cluster = dev_sub.add_parser("cluster", help="N nodes + store worker behind HAProxy on scripts/services.sh engines")
    cluster.add_argument("--nodes", type=int, default=2)
    cluster.add_argument("--dir", default=".cluster", help="logs and node data")
    cluster.add_argument("--api-port", type=int, default=8080, help="HAProxy's API port")
    cluster.add_argument("--ws-port", type=int, default=8081, help="HAProxy's WebSocket port")
    rotate = sub.add_parser(
        "rotate-jwt-secret", help="sign new tokens with a new key; tokens of the old one stay valid until they expire"
    )
    rotate.add_argument("--data-dir", help="where embedded data lives (FLARE_DATA_DIR, default ./flare-data)")
    migrate = sub.add_parser("migrate", help="apply pending schema migrations to the database (database_url)")
    migrate.add_argument("--data-dir", help="where embedded data lives (FLARE_DATA_DIR, default ./flare-data)")
    migrate.add_argument("--status", action="store_true", help="list applied and pending migrations, change nothing")
    from flare_im.benchmark.arguments import add_parser

    add_parser(sub)
    from flare_im.archive.cli import add_parser as add_archive_parser

    add_archive_parser(sub)
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
        from flare_im.app import ListenError, serve
        from flare_im.backends.migrations import SchemaError

        try:
            return _run(serve(settings))
        except (SchemaError, ListenError) as exc:
            print(f"flare: {exc}", file=sys.stderr)
            return 1
    if args.command == "worker":
        try:
            settings = Settings.load(
                {"node_id": args.node_id, "log_level": args.log_level, "metrics_port": args.metrics_port}
            )
        except ValueError as exc:
            print(f"flare: {exc}", file=sys.stderr)
            return 2
        _logging(settings)
        from flare_im.distributed import run_store_worker
        from flare_im.notify_node import run_push_worker

        try:
            if args.role == "archive":
                from flare_im.archive.worker import run_archive_worker

                return _run(run_archive_worker(settings))
            if args.role == "webhooks":
                from flare_im.webhook_node import run_webhook_worker

                return _run(run_webhook_worker(settings))
            return _run(run_push_worker(settings) if args.role == "push" else run_store_worker(settings))
        except ValueError as exc:
            print(f"flare: {exc}", file=sys.stderr)
            return 2
    if args.command == "dev":
        from pathlib import Path

        from flare_im.devcluster import run as run_cluster

        return run_cluster(args.nodes, Path(args.dir), args.api_port, args.ws_port)
    if args.command == "migrate":
        return _migrate(args.data_dir, status=args.status)
    if args.command == "rotate-jwt-secret":
        return _rotate_jwt_secret(args.data_dir)
    if args.command == "archive":
        from flare_im.archive.cli import run as run_archive

        return run_archive(args)
    if args.command == "bench":
        from flare_im.benchmark.cli import run

        return run(args)
    return 2


def _logging(settings: Settings) -> None:
    from flare_im.observability.logs import configure_logging

    configure_logging(settings.log_level)


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main)
    result: int = uvloop.run(main)
    return result


def _rotate_jwt_secret(data_dir: str | None) -> int:
    from pathlib import Path

    from flare_im.services.signing_keys import rotate_in_dir

    settings = Settings.load({"data_dir": data_dir})
    if settings.jwt_secret:
        print("flare: jwt_secret is configured: rotate it in the configuration (docs/operations.md)", file=sys.stderr)
        return 2
    try:
        kid = rotate_in_dir(Path(settings.data_dir))
    except FileNotFoundError as exc:
        print(f"flare: {exc}", file=sys.stderr)
        return 1
    print(f"new signing key {kid}; restart the server to use it (older tokens stay valid until they expire)")
    return 0


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
