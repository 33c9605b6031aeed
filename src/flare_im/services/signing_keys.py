"""The keys that sign and verify access tokens, and their rotation.

One key signs; every token names it in its JWT header as ``kid`` (a fingerprint of the key, never the key). Older
keys still verify the tokens they signed until those expire, so a rotation logs nobody out. A token without a
``kid`` (issued before rotation existed) is tried against each key.

Where the keys come from:

* ``jwt_secret`` and ``jwt_previous_secrets`` (comma-separated), for a cluster, whose nodes must agree: roll a new
  key out first as a previous secret on every node, then make it ``jwt_secret`` with the old one previous, and
  drop the old one after ``MAX_TOKEN_TTL_S``;
* otherwise the data directory: ``jwt.secret`` (made on first start) and ``jwt.previous``, which
  ``flare rotate-jwt-secret`` fills, one ``<retired epoch s> <secret>`` line per retired key; a line older than
  ``MAX_TOKEN_TTL_S`` is dropped at the next rotation and ignored when read.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

MAX_TOKEN_TTL_S = 30 * 24 * 3600  # the longest access token the API issues (an admin-issued token's ttl_s)
SECRET_FILE = "jwt.secret"
PREVIOUS_FILE = "jwt.previous"


def key_id(secret: str) -> str:
    """The ``kid`` of ``secret``: 16 hex digits of a hash (it names the key, it does not reveal it)."""
    return hashlib.sha256(b"flare-jwt-kid:" + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SigningKeys:
    current: str
    previous: tuple[str, ...] = ()

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def by_id(self) -> dict[str, str]:
        return {key_id(s): s for s in (*self.previous, self.current)}


def previous_secrets(configured: str, data_dir: Path) -> tuple[str, ...]:
    """The keys that verify but no longer sign: ``jwt_previous_secrets`` (comma-separated) and the data
    directory's retired keys."""
    listed = tuple(s.strip() for s in configured.split(",") if s.strip())
    return listed + tuple(s for s in previous_in_dir(data_dir) if s not in listed)


def previous_in_dir(data_dir: Path, now: float | None = None) -> tuple[str, ...]:
    """The retired keys of ``data_dir/jwt.previous`` that may still have unexpired tokens, newest first."""
    return tuple(secret for _, secret in _retired(data_dir, time.time() if now is None else now))


def _retired(data_dir: Path, now: float) -> list[tuple[int, str]]:
    path = data_dir / PREVIOUS_FILE
    if not path.exists():
        return []
    keys: list[tuple[int, str]] = []
    for line in path.read_text().splitlines():
        retired, _, secret = line.strip().partition(" ")
        try:
            if secret and int(retired) >= now - MAX_TOKEN_TTL_S:
                keys.append((int(retired), secret))
        except ValueError:
            continue  # not a line this module wrote
    return sorted(keys, reverse=True)


def rotate_in_dir(data_dir: Path, now: float | None = None) -> str:
    """Retire ``data_dir/jwt.secret`` to ``jwt.previous`` and write a new one; the new key's id. The server reads
    the files when it starts: restart it (tokens signed by the retired key stay valid until they expire)."""
    now = time.time() if now is None else now
    secret_path = data_dir / SECRET_FILE
    if not secret_path.exists():
        raise FileNotFoundError(f"{secret_path}: no key to rotate (the server makes it on its first start)")
    old = secret_path.read_text().strip()
    kept = [f"{int(now)} {old}"] + [f"{retired} {s}" for retired, s in _retired(data_dir, now)]
    _write_private(data_dir / PREVIOUS_FILE, "\n".join(kept) + "\n")
    new = secrets.token_urlsafe(32)
    _write_private(secret_path, new + "\n")
    return key_id(new)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
