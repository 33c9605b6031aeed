"""Conversation ids (src/flare_im/services/conversations.py): parse_conv, direct_conv, group_conv, check_id;
and member counts of many conversations at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.clock import ManualClock

from flare_im.backends.relational.base import Member
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.conversations import (
    DIRECT,
    GROUP,
    ConversationService,
    ConvRef,
    check_id,
    direct_conv,
    group_conv,
    parse_conv,
)


@pytest.mark.parametrize("value", ["a", "alice", "bob_2", "a.b-c@d", "x" * 64, "0", "_", "@", "-"])
def test_check_id_accepts(value: str) -> None:
    assert check_id(value, "user id") == value


@pytest.mark.parametrize(
    ("value", "normal"),
    [("Alice", "alice"), ("BOB_2", "bob_2"), ("\uff21lice", "alice"), ("\u212a", "k"), ("Stra\u00dfe", "strasse")],
    ids=repr,
)
def test_check_id_normalises(value: str, normal: str) -> None:
    assert check_id(value, "user id") == normal


@pytest.mark.parametrize(
    "value",
    ["", "x" * 65, "a b", "a:b", "a/b", "ä", "a\tb", "a\nb", "\nabc", "a,b", "a+b", "<script>", "a\u202eb", "A" * 300],
    ids=repr,
)
def test_check_id_rejects(value: str) -> None:
    with pytest.raises(FlareError) as info:
        check_id(value, "user id")
    assert info.value.code is ErrorCode.INVALID
    assert "user id" in info.value.message


def test_check_id_rejects_a_trailing_newline() -> None:
    with pytest.raises(FlareError):
        check_id("alice\n", "user id")


@pytest.mark.parametrize("conv", ["g:abc\n", "d:alice:bob\n"], ids=repr)
def test_parse_conv_rejects_a_trailing_newline(conv: str) -> None:
    with pytest.raises(FlareError):
        parse_conv(conv)


def test_direct_conv_sorts_the_two_ids() -> None:
    assert direct_conv("alice", "bob") == "d:alice:bob"
    assert direct_conv("bob", "alice") == "d:alice:bob"
    assert direct_conv("B", "a") == "d:a:b"  # ids in normal form, then sorted


def test_group_conv() -> None:
    assert group_conv("team") == "g:team"


def test_parse_direct() -> None:
    assert parse_conv("d:alice:bob") == ConvRef("d:alice:bob", DIRECT, users=("alice", "bob"))
    conv = direct_conv("zed", "amy")
    assert parse_conv(conv).users == ("amy", "zed")


def test_parse_group() -> None:
    assert parse_conv("g:team") == ConvRef("g:team", GROUP, gid="team")
    assert parse_conv("g:" + "x" * 64).gid == "x" * 64


@pytest.mark.parametrize(
    "conv",
    [
        "d:bob:alice",  # not sorted
        "d:alice:alice",  # a user with itself
        "d:a:B",  # not sorted: "B" < "a"
        "d:alice",
        "d:alice:bob:carol",
        "d::bob",
        "d:alice:",
        "d:al ice:bob",
        "g:",
        "g:a:b",
        "g:" + "x" * 65,
        "g:te am",
        "s:notices",  # system conversations are not accepted here
        "x:alice",
        "",
        "alice",
        "G:team",
        "D:alice:bob",
    ],
    ids=repr,
)
def test_parse_conv_rejects(conv: str) -> None:
    with pytest.raises(FlareError) as info:
        parse_conv(conv)
    assert info.value.code is ErrorCode.INVALID


@pytest.mark.parametrize(
    ("conv", "normal"), [("d:Alice:bob", "d:alice:bob"), ("d:bob:ALICE", "d:alice:bob"), ("g:Team", "g:team")]
)
def test_a_conv_id_not_in_normal_form_is_refused_with_the_one_to_use(conv: str, normal: str) -> None:
    with pytest.raises(FlareError, match=f"use '{normal}'") as info:
        parse_conv(conv)
    assert info.value.code is ErrorCode.INVALID


def test_unsorted_direct_id_error_says_why() -> None:
    with pytest.raises(FlareError, match="sorted"):
        parse_conv("d:bob:alice")


def test_direct_conv_round_trips_through_parse_conv() -> None:
    for a, b in [("alice", "bob"), ("u1", "u10"), ("z", "a"), ("x.y", "x-y")]:
        ref = parse_conv(direct_conv(a, b))
        assert ref.kind == DIRECT
        assert set(ref.users) == {a, b}


async def test_member_counts_use_fresh_cache_and_one_query_for_the_rest(tmp_path: Path) -> None:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    store = SqliteRelational(db)
    db.start()
    try:
        await store.add_members([Member(conv="g:a", uid=u) for u in ("u1", "u2", "u3")])
        await store.add_members([Member(conv="g:b", uid="u1")])
        clock = ManualClock()
        service = ConversationService(store, store, group_cache_ttl_s=5.0, clock=clock)
        assert len(await service.members("g:a")) == 3  # now cached
        await store.add_members([Member(conv="g:a", uid="u4")])  # as another node would

        clock.advance(4.9)
        counts = await service.member_counts(["d:u1:u2", "g:a", "g:b", "g:gone"])
        assert counts == {"d:u1:u2": 2, "g:a": 3, "g:b": 1, "g:gone": 0}  # g:a from the fresh cache
        clock.advance(0.2)
        assert (await service.member_counts(["g:a"]))["g:a"] == 4  # stale cache: read again
    finally:
        await db.close()
