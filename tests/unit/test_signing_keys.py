"""Access-token signing keys: the kid in every token, rotation that logs nobody out, retired keys that expire."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.abuse import HashPool
from flare_im.services.auth import AuthService
from flare_im.services.signing_keys import (
    MAX_TOKEN_TTL_S,
    key_id,
    previous_in_dir,
    previous_secrets,
    rotate_in_dir,
)

OLD = "the-old-secret-of-at-least-32-bytes!!"
NEW = "the-new-secret-of-at-least-32-bytes!!"
OTHER = "someone-else-s-secret-of-32-bytes!!!!"


def auth(secret: str, previous: tuple[str, ...] = ()) -> AuthService:
    store: Any = None  # decoding reads no state
    return AuthService(
        store,
        jwt_secret=secret,
        previous_jwt_secrets=previous,
        admin_key="admin",
        access_ttl_s=3600,
        refresh_ttl_s=3600,
        hasher=PasswordHasher(),
        hash_pool=HashPool(1, wait_s=1),
    )


def test_every_token_names_its_key_and_the_kid_reveals_nothing() -> None:
    token = auth(NEW).issue_access_token("alice")
    assert jwt.get_unverified_header(token)["kid"] == key_id(NEW)
    assert key_id(NEW) != key_id(OLD)
    assert len(key_id(NEW)) == 16
    assert NEW not in token
    assert NEW[:8] not in key_id(NEW)


def test_after_rotation_tokens_of_the_old_key_still_verify_until_it_is_retired() -> None:
    old_token = auth(OLD).issue_access_token("alice", sid="s1")
    rotated = auth(NEW, (OLD,))
    assert rotated.decode_access_token(old_token).uid == "alice"
    new_token = rotated.issue_access_token("bob")
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(NEW)
    assert rotated.decode_access_token(new_token).uid == "bob"
    # once the old key is dropped, its tokens are refused with a reason that says so
    with pytest.raises(FlareError) as refused:
        auth(NEW).decode_access_token(old_token)
    assert refused.value.code == ErrorCode.UNAUTHORIZED
    assert "does not know" in refused.value.message
    # a server that has only the old key does not take the new key's tokens
    with pytest.raises(FlareError):
        auth(OLD).decode_access_token(new_token)


def test_a_token_without_kid_is_tried_against_each_key_and_a_forged_kid_gains_nothing() -> None:
    claims = {"sub": "alice", "iat": time.time(), "exp": int(time.time()) + 60, "iss": "flare", "typ": "access"}
    legacy = jwt.encode(claims, OLD, algorithm="HS256")  # issued before tokens carried a kid
    assert auth(NEW, (OLD,)).decode_access_token(legacy).uid == "alice"
    with pytest.raises(FlareError, match="Signature verification failed"):
        auth(NEW).decode_access_token(legacy)
    # signed by a stranger's key but naming ours: the signature is checked against our key and fails
    forged = jwt.encode(claims, OTHER, algorithm="HS256", headers={"kid": key_id(NEW)})
    with pytest.raises(FlareError, match="Signature verification failed"):
        auth(NEW, (OLD,)).decode_access_token(forged)
    with pytest.raises(FlareError, match="invalid token"):
        auth(NEW).decode_access_token("not.a.jwt")


def test_rotation_in_the_data_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rotate_in_dir(tmp_path)
    (tmp_path / "jwt.secret").write_text(OLD + "\n")
    now = 1_800_000_000
    kid = rotate_in_dir(tmp_path, now=now)
    new = (tmp_path / "jwt.secret").read_text().strip()
    assert kid == key_id(new)
    assert new != OLD
    assert previous_in_dir(tmp_path, now=now) == (OLD,)
    for name in ("jwt.secret", "jwt.previous"):  # keys are readable by the server's user only
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    # a second rotation keeps the first retired key with its own date; past the longest token's life it is gone
    rotate_in_dir(tmp_path, now=now + 10)
    assert previous_in_dir(tmp_path, now=now + 10) == (new, OLD)
    assert previous_in_dir(tmp_path, now=now + MAX_TOKEN_TTL_S + 5) == (new,)
    rotate_in_dir(tmp_path, now=now + MAX_TOKEN_TTL_S + 5)
    assert OLD not in (tmp_path / "jwt.previous").read_text()  # dropped from the file, not only ignored
    # configured previous keys come first, the directory's after, each once
    assert previous_secrets(f" {OTHER} ,{new}", tmp_path)[:2] == (OTHER, new)
    assert len(set(previous_secrets(new, tmp_path))) == len(previous_secrets(new, tmp_path))


def test_lines_not_written_by_rotation_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "jwt.previous").write_text("garbage\n\nnot-a-time secret\n")
    assert previous_in_dir(tmp_path) == ()
