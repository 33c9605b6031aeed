"""``flare migrate``: apply pending schema migrations to the configured database, or show where it stands."""

from __future__ import annotations

import datetime
import sqlite3
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flare_im.backends.migrations import AppliedMigration, Migration, PostgresMigrator, Schema, SqliteMigrator
from flare_im.backends.sqlite_db import parse_sqlite_url
from flare_im.config import Settings


class MigrateError(Exception):
    """The database could not be reached or a migration failed (it was rolled back)."""


@dataclass(frozen=True, slots=True)
class SchemaState:
    component: str
    where: str  # the database URL without its password
    applied: list[AppliedMigration]  # recorded before this run
    pending: list[Migration]  # still pending after this run
    just_applied: list[Migration]
    latest: int


def redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def migrate(settings: Settings, *, apply: bool) -> list[SchemaState]:
    """The relational, webhooks and safety schemas of ``settings.effective_database_url``: brought up to date when
    ``apply``."""
    url = settings.effective_database_url
    if url.startswith("sqlite://"):
        from flare_im.backends.media.sqlite import SCHEMA as SQLITE_MEDIA
        from flare_im.backends.safety.sqlite import SCHEMA as SQLITE_SAFETY
        from flare_im.backends.webhooks.sqlite import SCHEMA as SQLITE_WEBHOOKS

        return [
            _sqlite(url, apply=apply),
            _sqlite(url, apply=apply, schema=SQLITE_WEBHOOKS),
            _sqlite(url, apply=apply, schema=SQLITE_SAFETY),
            _sqlite(url, apply=apply, schema=SQLITE_MEDIA),
        ]
    if url.startswith(("postgresql://", "postgres://")):
        from flare_im.backends.media.postgres import SCHEMA as POSTGRES_MEDIA
        from flare_im.backends.safety.postgres import SCHEMA as POSTGRES_SAFETY
        from flare_im.backends.webhooks.postgres import SCHEMA as POSTGRES_WEBHOOKS

        return [
            await _postgres(url, apply=apply),
            await _postgres(url, apply=apply, schema=POSTGRES_WEBHOOKS),
            await _postgres(url, apply=apply, schema=POSTGRES_SAFETY),
            await _postgres(url, apply=apply, schema=POSTGRES_MEDIA),
        ]
    raise ValueError(f"unsupported database_url {url!r} (sqlite://, postgresql://)")


def _sqlite(url: str, *, apply: bool, schema: Schema | None = None) -> SchemaState:
    from flare_im.backends.relational.sqlite import SCHEMA as RELATIONAL

    SCHEMA = schema or RELATIONAL

    path = parse_sqlite_url(url)
    if path == ":memory:":
        raise ValueError("an in-memory SQLite database has no schema to migrate")
    if not apply and not Path(path).exists():  # --status creates nothing
        return SchemaState(SCHEMA.component, url, [], SCHEMA.after(0), [], SCHEMA.latest)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            migrator = SqliteMigrator(conn, SCHEMA)
            before = migrator.applied()
            done = migrator.apply() if apply else []
            return SchemaState(SCHEMA.component, url, before, migrator.pending(), done, SCHEMA.latest)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise MigrateError(f"{path}: {exc}") from exc


async def _postgres(url: str, *, apply: bool, schema: Schema | None = None) -> SchemaState:
    import asyncpg

    from flare_im.backends.relational.postgres import SCHEMA as RELATIONAL

    SCHEMA = schema or RELATIONAL

    try:
        conn = await asyncpg.connect(url)
        try:
            migrator = PostgresMigrator(conn, SCHEMA)
            before = await migrator.applied()
            done = await migrator.apply() if apply else []
            return SchemaState(SCHEMA.component, redact(url), before, await migrator.pending(), done, SCHEMA.latest)
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        raise MigrateError(f"{redact(url)}: {exc}") from exc


def report(states: list[SchemaState], *, status: bool, write: Callable[[str], None]) -> None:
    for s in states:
        if status:
            version = s.applied[-1].version if s.applied else 0
            write(f"{s.component} schema at {s.where}: version {version} of {s.latest}")
            for a in s.applied:
                write(f"  applied  {a.version:3d}  {a.name}  {_when(a.applied_at)}")
            for m in s.pending:
                write(f"  pending  {m.version:3d}  {m.name}")
            continue
        for m in s.just_applied:
            write(f"{s.component}: applied {m.version} {m.name}")
        if not s.just_applied:
            write(f"{s.component} schema at {s.where}: up to date (version {s.latest})")


def _when(applied_at: int) -> str:
    if not applied_at:
        return "(made before versioning, not yet recorded)"
    return datetime.datetime.fromtimestamp(applied_at / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
