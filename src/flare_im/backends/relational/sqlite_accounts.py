"""Relational port on SQLite, the account part: users, refresh-token families and revoked sessions, invites and
the identity flags of migration 6 (mixed into SqliteRelational)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from flare_im.backends.relational.base import (
    AlreadyExists,
    IdentityFlag,
    Invite,
    InviteUnusable,
    RefreshGrant,
    TokenState,
    User,
)
from flare_im.backends.sqlite_db import SqliteDatabase
from flare_im.identity import normalize_id, stored_control_char

ACCOUNT_STEPS: tuple[str, ...] = (
    "ALTER TABLE refresh_tokens ADD COLUMN family TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE refresh_tokens ADD COLUMN used INTEGER NOT NULL DEFAULT 0",
    "UPDATE refresh_tokens SET family = token_hash",  # a token issued before families is a family of its own
    "CREATE INDEX refresh_tokens_family ON refresh_tokens (family)",
    "CREATE INDEX refresh_tokens_uid ON refresh_tokens (uid, expires_at)",
    "ALTER TABLE users ADD COLUMN tokens_after INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX users_uid_folded ON users (lower(uid))",
    """CREATE TABLE revoked_sessions (
    sid TEXT PRIMARY KEY, uid TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at)",
    """CREATE TABLE invites (
    invite_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, max_uses INTEGER NOT NULL, uses INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL, note TEXT NOT NULL)""",
    """CREATE TABLE identity_flags (
    kind TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    flagged_at INTEGER NOT NULL, PRIMARY KEY (kind, subject, reason)) WITHOUT ROWID""",
)


def flag_identities(conn: sqlite3.Connection) -> None:
    """Record (in ``identity_flags``) the stored ids that collide once normalised or are not in normal form, and
    the names holding control characters. Nothing is renamed: docs/operations.md says what to do about them."""
    now = time.time_ns() // 1_000_000
    flags: list[tuple[str, str, str, str, int]] = []
    for kind, table, key, texts in (
        ("user", "users", "uid", ("display_name", "avatar")),
        ("group", "groups", "gid", ("name", "avatar")),
    ):
        rows = conn.execute(f"SELECT {key}, {', '.join(texts)} FROM {table}").fetchall()
        by_normal: dict[str, list[str]] = {}
        for row in rows:
            by_normal.setdefault(normalize_id(row[0]) or row[0].lower(), []).append(row[0])
        for row in rows:
            subject = row[0]
            others = [o for o in by_normal[normalize_id(subject) or subject.lower()] if o != subject]
            if others:
                flags.append((kind, subject, "id_collision", ", ".join(sorted(others)), now))
            elif normalize_id(subject) != subject:
                flags.append((kind, subject, "id_not_normal", normalize_id(subject) or "", now))
            bad = [name for name, text in zip(texts, row[1:], strict=True) if stored_control_char(text)]
            if bad:
                flags.append((kind, subject, "control_chars", ", ".join(bad), now))
    conn.executemany("INSERT OR IGNORE INTO identity_flags VALUES (?,?,?,?,?)", flags)


_INVITE_COLS = "invite_id, token_hash, max_uses, uses, expires_at, created_at, note"


def _invite(row: Any) -> Invite:
    return Invite(
        invite_id=row[0],
        token_hash=row[1],
        max_uses=row[2],
        uses=row[3],
        expires_at=row[4],
        created_at=row[5],
        note=row[6],
    )


class SqliteAccounts:
    """UserStore (writes), TokenStore and InviteStore over ``self._db``."""

    _db: SqliteDatabase

    async def create_user(
        self, user: User, password_hash: str | None, *, invite: str | None = None, now: int = 0
    ) -> None:
        row = (user.uid, user.username, password_hash, user.display_name, user.avatar, user.created_at)

        def op(conn: sqlite3.Connection) -> None:
            # The writer runs one op at a time: nothing can come between these checks and the insert.
            if conn.execute("SELECT 1 FROM users WHERE lower(uid) = lower(?)", (user.uid,)).fetchone():
                raise AlreadyExists(f"user id {user.uid!r} is taken")
            if invite is not None:
                used = conn.execute(
                    "SELECT 1 FROM invites WHERE token_hash = ? AND uses < max_uses AND expires_at > ?", (invite, now)
                ).fetchone()
                if not used:
                    raise InviteUnusable("unknown, used up or expired invite")
            try:
                conn.execute(
                    "INSERT INTO users (uid, username, password_hash, display_name, avatar, created_at)"
                    " VALUES (?,?,?,?,?,?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise
                raise AlreadyExists(str(exc)) from None
            if invite is not None:  # last: a failed insert took no use
                conn.execute("UPDATE invites SET uses = uses + 1 WHERE token_hash = ?", (invite,))

        await self._db.write(op)

    async def identity_flags(self) -> list[IdentityFlag]:
        rows = self._db.fetchall(
            "SELECT kind, subject, reason, detail, flagged_at FROM identity_flags ORDER BY kind, subject, reason"
        )
        return [IdentityFlag(*row) for row in rows]

    # ---------------------------------------------------------------- tokens

    async def put_refresh_token(self, token_hash: str, uid: str, expires_at: int, family: str) -> None:
        now = int(time.time())

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM refresh_tokens WHERE uid = ? AND expires_at < ?", (uid, now))
            conn.execute(
                "INSERT INTO refresh_tokens (token_hash, uid, expires_at, family, used) VALUES (?,?,?,?,0)",
                (token_hash, uid, expires_at, family),
            )

        await self._db.write(op)

    async def take_refresh_token(self, token_hash: str) -> RefreshGrant | None:
        def op(conn: sqlite3.Connection) -> RefreshGrant | None:
            row = conn.execute(
                "SELECT uid, expires_at, family, used FROM refresh_tokens WHERE token_hash = ?", (token_hash,)
            ).fetchone()
            if row is None:
                return None
            uid, expires_at, family, used = row
            if used:
                until = conn.execute(
                    "SELECT max(expires_at) FROM refresh_tokens WHERE family = ?", (family,)
                ).fetchone()[0]
                _revoke(conn, family, uid, until)
                return RefreshGrant(uid, expires_at, family, reused=True)
            conn.execute("UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?", (token_hash,))
            return RefreshGrant(uid, expires_at, family, reused=False)

        grant: RefreshGrant | None = await self._db.write(op)
        return grant

    async def revoke_session(self, sid: str, uid: str, until: int) -> None:
        await self._db.write(lambda conn: _revoke(conn, sid, uid, until))

    async def revoke_user_tokens(self, uid: str, after_ms: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM refresh_tokens WHERE uid = ?", (uid,))
            conn.execute("UPDATE users SET tokens_after = max(tokens_after, ?) WHERE uid = ?", (after_ms, uid))

        await self._db.write(op)

    async def token_state(self, uid: str, sid: str) -> TokenState | None:
        row = self._db.fetchone(
            "SELECT tokens_after, EXISTS (SELECT 1 FROM revoked_sessions WHERE sid = ?) FROM users WHERE uid = ?",
            (sid, uid),
        )
        return TokenState(row[0], bool(row[1])) if row else None

    # ---------------------------------------------------------------- invites

    async def create_invite(self, invite: Invite) -> None:
        row = (
            invite.invite_id,
            invite.token_hash,
            invite.max_uses,
            invite.uses,
            invite.expires_at,
            invite.created_at,
            invite.note,
        )

        def op(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO invites ({_INVITE_COLS}) VALUES (?,?,?,?,?,?,?)", row)
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(str(exc)) from None

        await self._db.write(op)

    async def get_invite(self, token_hash: str) -> Invite | None:
        row = self._db.fetchone(f"SELECT {_INVITE_COLS} FROM invites WHERE token_hash = ?", (token_hash,))
        return _invite(row) if row else None

    async def invites(self) -> list[Invite]:
        rows = self._db.fetchall(f"SELECT {_INVITE_COLS} FROM invites ORDER BY created_at DESC, invite_id")
        return [_invite(r) for r in rows]

    async def delete_invite(self, invite_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM invites WHERE invite_id = ?", (invite_id,)).rowcount > 0

        deleted: bool = await self._db.write(op)
        return deleted


def _revoke(conn: sqlite3.Connection, sid: str, uid: str, until: int) -> None:
    conn.execute("DELETE FROM refresh_tokens WHERE family = ?", (sid,))
    conn.execute(
        "INSERT INTO revoked_sessions (sid, uid, expires_at) VALUES (?,?,?)"
        " ON CONFLICT (sid) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
        (sid, uid, until),
    )
    conn.execute("DELETE FROM revoked_sessions WHERE expires_at < ?", (int(time.time()),))
