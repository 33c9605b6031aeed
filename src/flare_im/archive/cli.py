"""``flare archive run|status|verify``: the cold tier of the embedded message log (docs/operations.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_im.archive.lock import ServerRunning, take_exclusive
from flare_im.config import Settings

if TYPE_CHECKING:
    from flare_im.archive.format import Manifest


def add_parser(sub: Any) -> None:
    archive = sub.add_parser("archive", help="move old messages to Parquet files in the object store")
    archive.add_argument("action", choices=["run", "status", "verify"])
    archive.add_argument("--data-dir", help="where embedded data lives (FLARE_DATA_DIR, default ./flare-data)")
    archive.add_argument(
        "--older-than", type=float, help="archive messages older than this many seconds (default: archive_after_days)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load({"data_dir": args.data_dir})
        if args.older_than is not None and args.older_than < 0:
            raise ValueError("--older-than must be >= 0")
        if settings.distributed:
            return asyncio.run(_cluster(settings, args.action, args.older_than))
        if not settings.effective_message_store_url.startswith("sqlite://"):
            raise ValueError("flare archive works on the embedded SQLite message store or a cluster's ClickHouse")
        return asyncio.run(_main(settings, args.action, args.older_than))
    except ValueError as exc:
        print(f"flare: {exc}", file=sys.stderr)
        return 2


async def _main(settings: Settings, action: str, older_than: float | None) -> int:
    from flare_im.archive import archiver
    from flare_im.backends.objects.base import open_object_store
    from flare_im.backends.sqlite_db import parse_sqlite_url

    path = parse_sqlite_url(settings.effective_message_store_url)
    if not Path(path).exists():
        raise ValueError(f"no message store at {path}")
    conn = archiver.open_catalog(path)
    store = await open_object_store(settings.object_store_url, str(Path(settings.data_dir) / "media"))
    try:
        if action == "status":
            parts = archiver.catalog(conn)
            hot = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
            print(f"hot rows (SQLite): {hot}")
            print(
                f"archived: {len(parts)} parts, {sum(p.rows for p in parts)} rows, {sum(p.size for p in parts)} bytes"
            )
            for p in parts:
                print(f"  {p.conv} {p.month} seq {p.lo}..{p.hi} {p.rows} rows {p.size} bytes {p.key}")
            return 0
        if action == "verify":
            failures = await archiver.verify(conn, store)
            for part, reason in failures:
                print(f"FAILED {part.conv} {part.month} seq {part.lo}..{part.hi}: {reason}")
            print(f"verified {len(archiver.catalog(conn))} parts, {len(failures)} failed")
            return 1 if failures else 0
        seconds = older_than if older_than is not None else settings.archive_after_days * 86400
        if seconds < 0:
            raise ValueError("archive_after_days must be >= 0")
        lock = take_exclusive(Path(settings.data_dir))
        try:
            report = await archiver.run(
                conn,
                store,
                older_than_s=seconds,
                progress=lambda m: print(
                    f"archived {m.conv} {m.month} seq {m.lo}..{m.hi}: {m.rows} rows, {m.size} bytes"
                ),
            )
        finally:
            os.close(lock)
        print(f"archived {report.parts} parts, {report.rows} rows, {report.bytes} bytes ({report.resumed} resumed)")
        return 0
    except archiver.ArchiveError as exc:
        print(f"flare: {exc}", file=sys.stderr)
        return 1
    except ServerRunning as exc:
        print(f"flare: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
        await store.close()


def _print_part(m: Manifest, suffix: str = "") -> None:
    print(f"  {m.conv} {m.month} seq {m.lo}..{m.hi} {m.rows} rows {m.size} bytes {m.key}{suffix}")


async def _cluster(settings: Settings, action: str, older_than: float | None) -> int:
    """The same three actions on a cluster (archive/cluster.py): ClickHouse, PostgreSQL, the object store."""
    from flare_im.archive import archiver, cluster
    from flare_im.archive.pg_catalog import ArchiveBusy

    try:
        if action == "status":
            hot, parts = await cluster.status(settings)
            print(f"hot rows (ClickHouse, every version): {hot}")
            manifests = [p.manifest for p in parts]
            print(
                f"archived: {len(parts)} parts, {sum(m.rows for m in manifests)} rows,"
                f" {sum(m.size for m in manifests)} bytes"
            )
            for p in parts:
                _print_part(p.manifest, "" if p.removed else " (rows not yet removed from ClickHouse)")
            return 0
        if action == "verify":
            count, failures = await cluster.verify(settings)
            for part, reason in failures:
                print(f"FAILED {part.conv} {part.month} seq {part.lo}..{part.hi}: {reason}")
            print(f"verified {count} parts, {len(failures)} failed")
            return 1 if failures else 0
        seconds = older_than if older_than is not None else settings.archive_after_days * 86400
        report = await cluster.run_once(
            settings,
            seconds,
            progress=lambda m: print(f"archived {m.conv} {m.month} seq {m.lo}..{m.hi}: {m.rows} rows, {m.size} bytes"),
        )
        print(f"archived {report.parts} parts, {report.rows} rows, {report.bytes} bytes ({report.resumed} resumed)")
        return 0
    except archiver.ArchiveError as exc:
        print(f"flare: {exc}", file=sys.stderr)
        return 1
    except ArchiveBusy as exc:
        print(f"flare: {exc}", file=sys.stderr)
        return 2
