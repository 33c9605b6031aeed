"""Relational port on SQLite, the notification part: users' notification settings and push jobs (mixed into
SqliteRelational; the contract is in notifications.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from flare_im.backends.relational.notifications import (
    FINAL_STATES,
    QUEUED,
    RETRYING,
    SCHEDULED,
    NotifySettings,
    PushJob,
    job_values,
)
from flare_im.backends.sqlite_db import SqliteDatabase

NOTIFY_STEPS: tuple[str, ...] = (
    """CREATE TABLE notify_settings (
    uid TEXT PRIMARY KEY, mode TEXT NOT NULL, mentions_break_mute INTEGER NOT NULL, preview INTEGER NOT NULL,
    quiet_start INTEGER NOT NULL, quiet_end INTEGER NOT NULL, timezone TEXT NOT NULL, version INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE push_jobs (
    job_id TEXT PRIMARY KEY, uid TEXT NOT NULL, device TEXT NOT NULL, provider TEXT NOT NULL, category TEXT NOT NULL,
    conv TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL, tries INTEGER NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, next_at INTEGER NOT NULL, lease_until INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL, payload TEXT NOT NULL)""",
    "CREATE INDEX push_jobs_user ON push_jobs (uid, updated_at)",
    "CREATE INDEX push_jobs_updated ON push_jobs (updated_at)",
    "CREATE INDEX push_jobs_due ON push_jobs (next_at) WHERE state IN ('queued', 'scheduled', 'retrying')",
)

_SETTINGS_COLS = "uid, mode, mentions_break_mute, preview, quiet_start, quiet_end, timezone, version"
_JOB_COLS = (
    "job_id, uid, device, provider, category, conv, seq, state, reason, tries, created_at, updated_at, next_at,"
    " latency_ms, payload"
)
_FINAL = ", ".join(f"'{s}'" for s in FINAL_STATES)
_CLAIM_CHUNK = 500  # job ids per IN (...) of a claim
_UPDATE_JOB = (
    "UPDATE push_jobs SET "
    + ", ".join(f"{c.strip()} = ?" for c in _JOB_COLS.split(",")[1:])
    + ", lease_until = ? WHERE job_id = ?"
)


def _settings(row: Any) -> NotifySettings:
    return NotifySettings(row[0], row[1], bool(row[2]), bool(row[3]), row[4], row[5], row[6], row[7])


class SqliteNotifications:
    """NotificationStore over ``self._db``."""

    _db: SqliteDatabase

    async def notify_settings(self, uids: Sequence[str]) -> dict[str, NotifySettings]:
        rows = self._db.fetchall_in(f"SELECT {_SETTINGS_COLS} FROM notify_settings WHERE uid IN (?*)", uids)
        return {row[0]: _settings(row) for row in rows}

    async def put_notify_settings(self, settings: NotifySettings) -> None:
        s = settings
        row = (s.uid, s.mode, s.mentions_break_mute, s.preview, s.quiet_start, s.quiet_end, s.timezone, s.version)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT OR REPLACE INTO notify_settings ({_SETTINGS_COLS}) VALUES (?,?,?,?,?,?,?,?)", row)

        await self._db.write(op)

    async def claim_push_jobs(self, jobs: Sequence[PushJob], now: int, lease_ms: int) -> set[str]:
        if not jobs:
            return set()
        until = now + lease_ms

        rows: dict[str, tuple[Any, ...]] = {}
        for j in jobs:  # the first of a job id claims it; a repeat within the batch finds it leased
            if j.job_id not in rows:
                rows[j.job_id] = (*job_values(j)[:7], QUEUED, j.reason, j.tries, j.created_at, now, j.next_at, -1,
                                  j.payload, until)  # fmt: skip

        def op(conn: sqlite3.Connection) -> set[str]:
            # Three statements per batch, not one per job (the writer thread's CPU): the jobs already there, the
            # new ones inserted, and those whose worker died (queued, lease run out) leased again.
            ids = list(rows)
            existing: dict[str, tuple[str, int]] = {}
            for i in range(0, len(ids), _CLAIM_CHUNK):
                chunk = ids[i : i + _CLAIM_CHUNK]
                found = conn.execute(
                    f"SELECT job_id, state, lease_until FROM push_jobs WHERE job_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                existing.update((row[0], (row[1], row[2])) for row in found)
            fresh = [row for job_id, row in rows.items() if job_id not in existing]
            lapsed = [job_id for job_id, (state, lease) in existing.items() if state == QUEUED and lease <= now]
            conn.executemany(
                f"INSERT INTO push_jobs ({_JOB_COLS}, lease_until) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", fresh
            )
            conn.executemany(
                "UPDATE push_jobs SET lease_until = ?, updated_at = ? WHERE job_id = ?",
                [(until, now, job_id) for job_id in lapsed],
            )
            return {row[0] for row in fresh} | set(lapsed)

        result: set[str] = await self._db.write(op)
        return result

    async def record_push_jobs(self, jobs: Sequence[PushJob], *, only_new: bool = False) -> None:
        if not jobs:
            return
        verb = "INSERT OR IGNORE" if only_new else "INSERT OR REPLACE"
        rows = [(*job_values(j), 0) for j in jobs]

        def op(conn: sqlite3.Connection) -> None:
            if not only_new:
                # Outcomes of claimed jobs, whose rows exist: an UPDATE in place costs SQLite less than REPLACE (a
                # delete and an insert, each through every index). If any row was missing, REPLACE them all.
                updated = conn.executemany(_UPDATE_JOB, [(*row[1:], row[0]) for row in rows]).rowcount
                if updated == len(rows):
                    return
            conn.executemany(
                f"{verb} INTO push_jobs ({_JOB_COLS}, lease_until) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
            )

        await self._db.write(op)

    async def schedule_push_job(self, job: PushJob) -> bool:
        row = (*job_values(job)[:7], SCHEDULED, *job_values(job)[8:], 0)

        def op(conn: sqlite3.Connection) -> bool:
            found = conn.execute(
                f"INSERT INTO push_jobs ({_JOB_COLS}, lease_until) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (job_id) DO UPDATE SET payload = excluded.payload, next_at = excluded.next_at,"
                " seq = excluded.seq, updated_at = excluded.updated_at WHERE push_jobs.state = 'scheduled'"
                " RETURNING job_id",
                row,
            ).fetchone()
            return found is not None

        scheduled: bool = await self._db.write(op)
        return scheduled

    async def take_due_push_jobs(self, now: int, lease_ms: int, limit: int) -> list[PushJob]:
        def op(conn: sqlite3.Connection) -> list[PushJob]:
            rows = conn.execute(
                f"SELECT {_JOB_COLS} FROM push_jobs WHERE state IN (?, ?, ?) AND next_at <= ? AND lease_until <= ?"
                " ORDER BY next_at LIMIT ?",
                (QUEUED, SCHEDULED, RETRYING, now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE push_jobs SET lease_until = ? WHERE job_id = ?", [(now + lease_ms, row[0]) for row in rows]
            )
            return [PushJob(*row) for row in rows]

        taken: list[PushJob] = await self._db.write(op)
        return taken

    async def push_jobs(
        self, uid: str, *, device: str = "", state: str = "", since: int = 0, limit: int = 100
    ) -> list[PushJob]:
        where, params = ["updated_at >= ?"], list[Any]([since])
        for column, value in (("uid", uid), ("device", device), ("state", state)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self._db.fetchall(
            f"SELECT {_JOB_COLS} FROM push_jobs WHERE {' AND '.join(where)} ORDER BY updated_at DESC, job_id LIMIT ?",
            (*params, limit),
        )
        return [PushJob(*row) for row in rows]

    async def push_job_outcomes(self, since: int, until: int, limit: int) -> list[tuple[str, str, str, int]]:
        rows = self._db.fetchall(
            "SELECT provider, category, state, latency_ms FROM push_jobs WHERE updated_at >= ? AND updated_at < ?"
            " LIMIT ?",
            (since, until, limit),
        )
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    async def purge_push_jobs(self, before: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                f"DELETE FROM push_jobs WHERE state IN ({_FINAL}) AND updated_at < ?", (before,)
            ).rowcount

        purged: int = await self._db.write(op)
        return purged
