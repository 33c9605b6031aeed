"""Relational port on PostgreSQL, the account part: users, refresh-token families and revoked sessions, invites
and the identity flags of migration 3 (mixed into PostgresRelational)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from flare_im.backends.relational.base import (
    AlreadyExists,
    IdentityFlag,
    Invite,
    InviteUnusable,
    RefreshGrant,
    TokenState,
    User,
)
from flare_im.identity import postgres_control_class

# Stored ids were checked against [A-Za-z0-9_.@-] before normalisation existed, so lower() is their normal form
# (NFKC changes no ASCII); the flags match what the SQLite migration records from the same data.
_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"
_CONTROL = postgres_control_class()


def _flag_ids(kind: str, table: str, key: str) -> tuple[str, str]:
    collisions = f"""INSERT INTO identity_flags (kind, subject, reason, detail, flagged_at)
    SELECT '{kind}', t.{key}, 'id_collision',
        (SELECT string_agg(o.{key}, ', ' ORDER BY o.{key}) FROM {table} o
         WHERE lower(o.{key}) = lower(t.{key}) AND o.{key} <> t.{key}), {_NOW_MS}
    FROM {table} t
    WHERE EXISTS (SELECT 1 FROM {table} o WHERE lower(o.{key}) = lower(t.{key}) AND o.{key} <> t.{key})
    ON CONFLICT DO NOTHING"""
    not_normal = f"""INSERT INTO identity_flags (kind, subject, reason, detail, flagged_at)
    SELECT '{kind}', t.{key}, 'id_not_normal',
        CASE WHEN lower(t.{key}) ~ '^[a-z0-9_.@-]{{1,64}}$' THEN lower(t.{key}) ELSE '' END, {_NOW_MS}
    FROM {table} t
    WHERE t.{key} <> lower(t.{key})
      AND NOT EXISTS (SELECT 1 FROM {table} o WHERE lower(o.{key}) = lower(t.{key}) AND o.{key} <> t.{key})
    ON CONFLICT DO NOTHING"""
    return collisions, not_normal


def _flag_texts(kind: str, table: str, key: str, texts: tuple[str, str]) -> str:
    a, b = texts
    return f"""INSERT INTO identity_flags (kind, subject, reason, detail, flagged_at)
    SELECT '{kind}', {key}, 'control_chars',
        concat_ws(', ', CASE WHEN {a} ~ '{_CONTROL}' THEN '{a}' END, CASE WHEN {b} ~ '{_CONTROL}' THEN '{b}' END),
        {_NOW_MS}
    FROM {table} WHERE {a} ~ '{_CONTROL}' OR {b} ~ '{_CONTROL}'
    ON CONFLICT DO NOTHING"""


ACCOUNT_STEPS: tuple[str, ...] = (
    "ALTER TABLE refresh_tokens ADD COLUMN family TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE refresh_tokens ADD COLUMN used BOOLEAN NOT NULL DEFAULT false",
    "UPDATE refresh_tokens SET family = token_hash",  # a token issued before families is a family of its own
    "CREATE INDEX refresh_tokens_family ON refresh_tokens (family)",
    "CREATE INDEX refresh_tokens_uid ON refresh_tokens (uid, expires_at)",
    "ALTER TABLE users ADD COLUMN tokens_after BIGINT NOT NULL DEFAULT 0",
    "CREATE INDEX users_uid_folded ON users (lower(uid))",
    "CREATE TABLE revoked_sessions (sid TEXT PRIMARY KEY, uid TEXT NOT NULL, expires_at BIGINT NOT NULL)",
    "CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at)",
    """CREATE TABLE invites (
    invite_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, max_uses INT NOT NULL, uses INT NOT NULL,
    expires_at BIGINT NOT NULL, created_at BIGINT NOT NULL, note TEXT NOT NULL)""",
    """CREATE TABLE identity_flags (
    kind TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    flagged_at BIGINT NOT NULL, PRIMARY KEY (kind, subject, reason))""",
    *_flag_ids("user", "users", "uid"),
    *_flag_ids("group", "groups", "gid"),
    _flag_texts("user", "users", "uid", ("display_name", "avatar")),
    _flag_texts("group", "groups", "gid", ("name", "avatar")),
)

_INVITE_COLS = "invite_id, token_hash, max_uses, uses, expires_at, created_at, note"

_INSERT_USER = (
    "INSERT INTO users (uid, username, password_hash, display_name, avatar, created_at) VALUES ($1, $2, $3, $4, $5, $6)"
)
# The row lock orders concurrent registrations with one invite: the last use goes to exactly one of them.
_TAKE_INVITE = (
    "UPDATE invites SET uses = uses + 1 WHERE token_hash = $1 AND uses < max_uses AND expires_at > $2 RETURNING 1"
)


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


class PostgresAccounts:
    """UserStore (writes), TokenStore and InviteStore over ``self._pool``."""

    _pool: asyncpg.Pool
    commits: int

    async def create_user(
        self, user: User, password_hash: str | None, *, invite: str | None = None, now: int = 0
    ) -> None:
        args = (user.uid, user.username, password_hash, user.display_name, user.avatar, user.created_at)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if await conn.fetchval("SELECT 1 FROM users WHERE lower(uid) = lower($1)", user.uid) is not None:
                    raise AlreadyExists(f"user id {user.uid!r} is taken")
                if invite is not None and await conn.fetchval(_TAKE_INVITE, invite, now) is None:
                    raise InviteUnusable("unknown, used up or expired invite")
                await conn.execute(_INSERT_USER, *args)  # a unique violation rolls the invite use back
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(str(exc)) from None
        self.commits += 1

    async def identity_flags(self) -> list[IdentityFlag]:
        rows = await self._pool.fetch(
            "SELECT kind, subject, reason, detail, flagged_at FROM identity_flags ORDER BY kind, subject, reason"
        )
        return [IdentityFlag(*row) for row in rows]

    # ---------------------------------------------------------------- tokens

    async def put_refresh_token(self, token_hash: str, uid: str, expires_at: int, family: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM refresh_tokens WHERE uid = $1 AND expires_at < $2", uid, int(time.time()))
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, uid, expires_at, family) VALUES ($1, $2, $3, $4)",
                token_hash,
                uid,
                expires_at,
                family,
            )
        self.commits += 1

    async def take_refresh_token(self, token_hash: str) -> RefreshGrant | None:
        async with self._pool.acquire() as conn, conn.transaction():
            # The row lock orders concurrent takes: exactly one of them sees used = false.
            row = await conn.fetchrow(
                "SELECT uid, expires_at, family, used FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
                token_hash,
            )
            if row is None:
                return None
            uid, expires_at, family, used = row
            if used:
                until = await conn.fetchval("SELECT max(expires_at) FROM refresh_tokens WHERE family = $1", family)
                await _revoke(conn, family, uid, until)
            else:
                await conn.execute("UPDATE refresh_tokens SET used = true WHERE token_hash = $1", token_hash)
        self.commits += 1
        return RefreshGrant(uid, expires_at, family, reused=used)

    async def revoke_session(self, sid: str, uid: str, until: int) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await _revoke(conn, sid, uid, until)
        self.commits += 1

    async def revoke_user_tokens(self, uid: str, after_ms: int) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM refresh_tokens WHERE uid = $1", uid)
            await conn.execute(
                "UPDATE users SET tokens_after = greatest(tokens_after, $1) WHERE uid = $2", after_ms, uid
            )
        self.commits += 1

    async def token_state(self, uid: str, sid: str) -> TokenState | None:
        row = await self._pool.fetchrow(
            "SELECT tokens_after, EXISTS (SELECT 1 FROM revoked_sessions WHERE sid = $1) FROM users WHERE uid = $2",
            sid,
            uid,
        )
        return TokenState(row[0], row[1]) if row else None

    # ---------------------------------------------------------------- invites

    async def create_invite(self, invite: Invite) -> None:
        try:
            await self._pool.execute(
                f"INSERT INTO invites ({_INVITE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                invite.invite_id,
                invite.token_hash,
                invite.max_uses,
                invite.uses,
                invite.expires_at,
                invite.created_at,
                invite.note,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(str(exc)) from None
        self.commits += 1

    async def get_invite(self, token_hash: str) -> Invite | None:
        row = await self._pool.fetchrow(f"SELECT {_INVITE_COLS} FROM invites WHERE token_hash = $1", token_hash)
        return _invite(row) if row else None

    async def invites(self) -> list[Invite]:
        rows = await self._pool.fetch(f"SELECT {_INVITE_COLS} FROM invites ORDER BY created_at DESC, invite_id")
        return [_invite(r) for r in rows]

    async def delete_invite(self, invite_id: str) -> bool:
        status: str = await self._pool.execute("DELETE FROM invites WHERE invite_id = $1", invite_id)
        self.commits += 1
        return status == "DELETE 1"


async def _revoke(conn: asyncpg.Connection, sid: str, uid: str, until: int) -> None:
    await conn.execute("DELETE FROM refresh_tokens WHERE family = $1", sid)
    await conn.execute(
        "INSERT INTO revoked_sessions (sid, uid, expires_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (sid) DO UPDATE SET expires_at = greatest(revoked_sessions.expires_at, excluded.expires_at)",
        sid,
        uid,
        until,
    )
    await conn.execute("DELETE FROM revoked_sessions WHERE expires_at < $1", int(time.time()))
