"""Contract of the relational ports (src/flare_im/backends/relational/base.py): UserStore, GroupStore,
MembershipStore, DeviceStore and RuleStore, for every backend. One adapter implements all of them."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace
from typing import Any

import pytest

from flare_im.backends.relational.base import (
    AlreadyExists,
    FilterRule,
    Group,
    Invite,
    InviteUnusable,
    Member,
    PushTarget,
    RefreshGrant,
    SettingsChange,
    TokenState,
    User,
)

RELATIONAL_BACKEND_NAMES = ["sqlite", "postgres"]


def user(uid: str, username: str | None = None, *, display_name: str = "", avatar: str = "") -> User:
    return User(
        uid=uid,
        username=username,
        display_name=display_name or uid.title(),
        avatar=avatar,
        created_at=1_700_000_000_000,
    )


def group(gid: str, owner: str = "alice", name: str = "Team") -> Group:
    return Group(gid=gid, name=name, avatar="a.png", owner=owner, created_at=1_700_000_000_123)


def uids(members: list[Member]) -> list[str]:
    return [m.uid for m in members]


# ---------------------------------------------------------------- users


async def test_create_and_get_user(relational: Any) -> None:
    alice = user("alice", "alice_n", display_name="Alice A", avatar="x.png")
    await relational.create_user(alice, "hash-a")
    assert await relational.get_user("alice") == alice
    assert await relational.get_user("nobody") is None


async def test_duplicate_uid_raises_and_writes_nothing(relational: Any) -> None:
    await relational.create_user(user("alice", "alice_n"), "hash-a")
    with pytest.raises(AlreadyExists):
        await relational.create_user(user("alice", "other_name", display_name="Impostor"), "hash-b")

    assert await relational.get_user("alice") == user("alice", "alice_n")
    assert await relational.get_credentials("alice_n") == ("alice", "hash-a")
    assert await relational.get_credentials("other_name") is None
    # the username of the rejected insert was not taken
    await relational.create_user(user("carol", "other_name"), "hash-c")
    assert await relational.get_credentials("other_name") == ("carol", "hash-c")


async def test_duplicate_username_raises_and_writes_nothing(relational: Any) -> None:
    await relational.create_user(user("alice", "taken"), "hash-a")
    with pytest.raises(AlreadyExists):
        await relational.create_user(user("bob", "taken"), "hash-b")

    assert await relational.get_user("bob") is None
    assert await relational.get_credentials("taken") == ("alice", "hash-a")
    # the uid of the rejected insert was not taken
    await relational.create_user(user("bob", "bob_n"), None)
    assert await relational.get_user("bob") == user("bob", "bob_n")


async def test_users_without_username_do_not_collide(relational: Any) -> None:
    await relational.create_user(user("svc1"), None)
    await relational.create_user(user("svc2"), None)
    assert {u.uid for u in await relational.get_users(["svc1", "svc2"])} == {"svc1", "svc2"}
    assert (await relational.get_user("svc1")) == user("svc1")


async def test_get_users_returns_the_existing_subset(relational: Any) -> None:
    for uid in ("a", "b", "c"):
        await relational.create_user(user(uid, f"{uid}_n"), None)

    got = await relational.get_users(["c", "nobody", "a"])
    assert sorted(got, key=lambda u: u.uid) == [user("a", "a_n"), user("c", "c_n")]
    assert await relational.get_users([]) == []
    assert await relational.get_users(["nobody"]) == []


async def test_get_users_many_ids(relational: Any) -> None:
    await relational.create_user(user("u0"), None)
    await relational.create_user(user("u999"), None)
    got = await relational.get_users([f"u{i}" for i in range(1000)])
    assert {u.uid for u in got} == {"u0", "u999"}


async def test_credentials_only_for_password_users(relational: Any) -> None:
    await relational.create_user(user("alice", "alice_n"), "argon2-hash")
    await relational.create_user(user("bot", "bot_n"), None)
    assert await relational.get_credentials("alice_n") == ("alice", "argon2-hash")
    assert await relational.get_credentials("bot_n") is None
    assert await relational.get_credentials("alice") is None  # by username, not uid
    assert await relational.get_credentials("nobody") is None


async def test_update_profile_is_partial(relational: Any) -> None:
    await relational.create_user(user("alice", "alice_n", display_name="Alice", avatar="old.png"), None)

    await relational.update_profile("alice", display_name="Ally", avatar=None)
    assert await relational.get_user("alice") == user("alice", "alice_n", display_name="Ally", avatar="old.png")

    await relational.update_profile("alice", display_name=None, avatar="new.png")
    assert await relational.get_user("alice") == user("alice", "alice_n", display_name="Ally", avatar="new.png")

    await relational.update_profile("alice", display_name=None, avatar=None)
    assert await relational.get_user("alice") == user("alice", "alice_n", display_name="Ally", avatar="new.png")

    await relational.update_profile("alice", display_name="A", avatar="")
    assert await relational.get_user("alice") == user("alice", "alice_n", display_name="A", avatar="")


FUTURE = 4_000_000_000  # epoch seconds, far ahead


async def test_refresh_token_is_single_use(relational: Any) -> None:
    await relational.put_refresh_token("h1", "alice", 3_800_000_000, "fam-a")
    await relational.put_refresh_token("h2", "bob", 3_900_000_000, "fam-b")

    assert await relational.take_refresh_token("h1") == RefreshGrant("alice", 3_800_000_000, "fam-a", reused=False)
    assert await relational.take_refresh_token("unknown") is None
    assert await relational.take_refresh_token("h2") == RefreshGrant("bob", 3_900_000_000, "fam-b", reused=False)


async def test_refresh_token_concurrent_takes_only_one_wins(relational: Any) -> None:
    await relational.put_refresh_token("h", "alice", FUTURE, "fam")
    results = await asyncio.gather(*(relational.take_refresh_token("h") for _ in range(10)))
    fresh = [r for r in results if r is not None and not r.reused]
    assert fresh == [RefreshGrant("alice", FUTURE, "fam", reused=False)]
    # every other take was a reuse (it revoked the family) or came after that revocation
    assert all(r is None or r.reused for r in results if r not in fresh)


async def test_reusing_a_refresh_token_revokes_its_whole_family(relational: Any) -> None:
    await relational.create_user(user("alice"), None)
    await relational.put_refresh_token("t1", "alice", FUTURE, "fam")
    assert (await relational.take_refresh_token("t1")).reused is False
    await relational.put_refresh_token("t2", "alice", FUTURE + 5, "fam")  # issued from t1
    await relational.put_refresh_token("other", "alice", FUTURE, "fam-2")  # another login of alice

    grant = await relational.take_refresh_token("t1")  # t1 again: a copy was kept
    assert grant == RefreshGrant("alice", FUTURE, "fam", reused=True)
    assert await relational.take_refresh_token("t2") is None  # the descendant is revoked too
    assert await relational.take_refresh_token("t1") is None
    assert await relational.token_state("alice", "fam") == TokenState(0, session_revoked=True)
    # the other login is untouched
    assert await relational.token_state("alice", "fam-2") == TokenState(0, session_revoked=False)
    assert (await relational.take_refresh_token("other")).reused is False


async def test_revoke_session_and_token_state(relational: Any) -> None:
    await relational.create_user(user("alice"), None)
    assert await relational.token_state("nobody", "s") is None
    assert await relational.token_state("alice", "") == TokenState(0, False)
    await relational.put_refresh_token("r", "alice", FUTURE, "s1")

    await relational.revoke_session("s1", "alice", FUTURE)
    await relational.revoke_session("s1", "alice", FUTURE)  # idempotent
    assert await relational.token_state("alice", "s1") == TokenState(0, True)
    assert await relational.take_refresh_token("r") is None
    assert await relational.token_state("alice", "s2") == TokenState(0, False)


async def test_revoke_user_tokens(relational: Any) -> None:
    await relational.create_user(user("alice"), None)
    await relational.create_user(user("bob"), None)
    await relational.put_refresh_token("a1", "alice", FUTURE, "f1")
    await relational.put_refresh_token("a2", "alice", FUTURE, "f2")
    await relational.put_refresh_token("b1", "bob", FUTURE, "f3")

    await relational.revoke_user_tokens("alice", 1_700_000_000_500)
    await relational.revoke_user_tokens("alice", 1_600_000_000_000)  # never moves back
    assert await relational.token_state("alice", "f1") == TokenState(1_700_000_000_500, False)
    assert await relational.take_refresh_token("a1") is None
    assert await relational.take_refresh_token("a2") is None
    assert await relational.token_state("bob", "f3") == TokenState(0, False)
    assert (await relational.take_refresh_token("b1")).reused is False


async def test_an_id_differing_only_in_case_is_taken(relational: Any) -> None:
    await relational.create_user(user("Alice", "Alice"), "h")  # stored before ids were normalised
    with pytest.raises(AlreadyExists):
        await relational.create_user(user("alice", "alice"), "h2")
    assert await relational.get_user("alice") is None
    assert await relational.get_credentials("alice") is None


# ---------------------------------------------------------------- invites


def invite(invite_id: str, token_hash: str, *, max_uses: int = 1, uses: int = 0, expires_at: int = FUTURE) -> Invite:
    return Invite(invite_id, token_hash, max_uses, uses, expires_at, created_at=1_700_000_000_000, note="n")


async def test_invites_are_created_listed_and_deleted(relational: Any) -> None:
    await relational.create_invite(invite("i1", "h1"))
    await relational.create_invite(replace(invite("i2", "h2", max_uses=5), created_at=1_700_000_000_001))
    with pytest.raises(AlreadyExists):
        await relational.create_invite(invite("i1", "h3"))
    assert await relational.get_invite("h2") == replace(invite("i2", "h2", max_uses=5), created_at=1_700_000_000_001)
    assert await relational.get_invite("h3") is None
    assert [i.invite_id for i in await relational.invites()] == ["i2", "i1"]
    assert await relational.delete_invite("i1") is True
    assert await relational.delete_invite("i1") is False
    assert [i.invite_id for i in await relational.invites()] == ["i2"]


async def test_registration_takes_one_use_of_its_invite(relational: Any) -> None:
    await relational.create_invite(invite("i", "h", max_uses=2))
    await relational.create_user(user("a"), "x", invite="h", now=1_700_000_000)
    await relational.create_user(user("b"), "x", invite="h", now=1_700_000_000)
    with pytest.raises(InviteUnusable):
        await relational.create_user(user("c"), "x", invite="h", now=1_700_000_000)
    assert await relational.get_user("c") is None
    assert (await relational.get_invite("h")).uses == 2


async def test_an_unusable_invite_writes_nothing(relational: Any) -> None:
    await relational.create_invite(invite("old", "h-old", expires_at=1_700_000_000))
    for token_hash in ("h-old", "unknown"):
        with pytest.raises(InviteUnusable):
            await relational.create_user(user("eve"), "x", invite=token_hash, now=1_700_000_000)
    assert await relational.get_user("eve") is None
    assert (await relational.get_invite("h-old")).uses == 0


async def test_a_taken_name_takes_no_use_of_the_invite(relational: Any) -> None:
    await relational.create_user(user("alice", "alice"), "x")
    await relational.create_invite(invite("i", "h"))
    for taken in (user("alice", "alice2"), user("bob", "alice"), user("ALICE", "x")):
        with pytest.raises(AlreadyExists):
            await relational.create_user(taken, "x", invite="h", now=1_700_000_000)
    assert (await relational.get_invite("h")).uses == 0
    await relational.create_user(user("bob", "bob"), "x", invite="h", now=1_700_000_000)
    assert (await relational.get_invite("h")).uses == 1


async def test_the_last_use_of_an_invite_goes_to_one_registration(relational: Any) -> None:
    await relational.create_invite(invite("i", "h", max_uses=1))
    results = await asyncio.gather(
        *(relational.create_user(user(f"u{i}"), "x", invite="h", now=1_700_000_000) for i in range(8)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, InviteUnusable) for r in results if r is not None)
    assert len(await relational.get_users([f"u{i}" for i in range(8)])) == 1


# ---------------------------------------------------------------- groups


async def test_create_group_with_members(relational: Any) -> None:
    g = group("g1")
    members = [
        Member(conv="g:g1", uid="alice", role="owner", version=7),
        Member(conv="g:g1", uid="bob", version=7),
        Member(conv="g:g1", uid="carol", role="admin", version=7),
    ]
    await relational.create_group(g, members)

    assert await relational.get_group("g1") == g
    assert await relational.get_group("g2") is None
    assert await relational.list_members("g:g1") == members
    assert await relational.get_member("g:g1", "carol") == members[2]


async def test_create_group_duplicate_gid_raises_and_writes_no_members(relational: Any) -> None:
    g = group("g1")
    await relational.create_group(g, [Member(conv="g:g1", uid="alice", role="owner", version=1)])

    with pytest.raises(AlreadyExists):
        await relational.create_group(
            group("g1", owner="mallory", name="Other"),
            [
                Member(conv="g:g1", uid="mallory", role="owner", version=2),
                Member(conv="g:g1", uid="alice", role="member", version=2),
            ],
        )

    assert await relational.get_group("g1") == g
    assert await relational.list_members("g:g1") == [Member(conv="g:g1", uid="alice", role="owner", version=1)]
    assert await relational.get_member("g:g1", "mallory") is None
    assert await relational.list_user_convs("mallory") == []
    assert await relational.max_version() == 1


async def test_get_groups_returns_the_existing_subset(relational: Any) -> None:
    for gid in ("g1", "g2", "g3"):
        await relational.create_group(group(gid, name=f"Team {gid}"), [Member(conv=f"g:{gid}", uid="alice")])
    got = await relational.get_groups(["g3", "nope", "g1"])
    assert sorted(got, key=lambda g: g.gid) == [group("g1", name="Team g1"), group("g3", name="Team g3")]
    assert await relational.get_groups([]) == []
    assert len(await relational.get_groups([f"x{i}" for i in range(1200)] + ["g2"])) == 1


async def test_count_members_of_many_conversations(relational: Any) -> None:
    await relational.add_members([Member(conv="g:a", uid=u) for u in ("alice", "bob", "carol")])
    await relational.add_members([Member(conv="g:b", uid="alice")])
    await relational.set_left("g:a", "carol", 2)
    assert await relational.count_members(["g:a", "g:b", "g:none"]) == {"g:a": 2, "g:b": 1}
    assert await relational.count_members([]) == {}
    assert await relational.count_members([f"g:x{i}" for i in range(1200)] + ["g:b"]) == {"g:b": 1}


async def test_update_group_is_partial(relational: Any) -> None:
    await relational.create_group(group("g1", name="Team"), [])
    await relational.update_group("g1", name="Renamed", avatar=None)
    assert await relational.get_group("g1") == Group(
        gid="g1", name="Renamed", avatar="a.png", owner="alice", created_at=1_700_000_000_123
    )
    await relational.update_group("g1", name=None, avatar="b.png")
    assert (await relational.get_group("g1")) == Group(
        gid="g1", name="Renamed", avatar="b.png", owner="alice", created_at=1_700_000_000_123
    )


# ---------------------------------------------------------------- memberships


async def test_list_members_in_join_order_excluding_left(relational: Any) -> None:
    await relational.add_members([Member(conv="g:x", uid=u, version=1) for u in ("carol", "alice", "bob")])
    await relational.add_members([Member(conv="g:x", uid="dave", version=2)])
    assert uids(await relational.list_members("g:x")) == ["carol", "alice", "bob", "dave"]

    await relational.set_left("g:x", "alice", 3)
    assert uids(await relational.list_members("g:x")) == ["carol", "bob", "dave"]
    left = await relational.get_member("g:x", "alice")
    assert left is not None
    assert left.left is True
    assert left.version == 3
    assert await relational.list_members("g:nobody") == []
    assert await relational.get_member("g:x", "nobody") is None


async def test_rejoin_after_left_reactivates_the_membership(relational: Any) -> None:
    await relational.add_members([Member(conv="g:x", uid=u, version=1) for u in ("alice", "bob", "carol")])
    await relational.advance_read("g:x", "alice", 4, 2)
    await relational.set_left("g:x", "alice", 3)

    rejoin = Member(conv="g:x", uid="alice", role="admin", join_seq=10, read_seq=10, version=4)
    await relational.add_members([rejoin])

    assert await relational.get_member("g:x", "alice") == rejoin
    # a re-join is the newest join
    assert uids(await relational.list_members("g:x")) == ["bob", "carol", "alice"]


async def test_set_role(relational: Any) -> None:
    await relational.add_members([Member(conv="g:x", uid="bob", join_seq=3, read_seq=3, version=1)])
    await relational.set_role("g:x", "bob", "admin", 9)
    assert await relational.get_member("g:x", "bob") == Member(
        conv="g:x", uid="bob", role="admin", join_seq=3, read_seq=3, version=9
    )


async def test_list_user_convs_includes_left(relational: Any) -> None:
    await relational.add_members([Member(conv="g:x", uid="alice"), Member(conv="g:x", uid="bob")])
    await relational.add_members([Member(conv="d:alice:bob", uid="alice"), Member(conv="d:alice:bob", uid="bob")])
    await relational.add_members([Member(conv="g:y", uid="alice", role="owner", version=5)])
    await relational.set_left("g:x", "alice", 6)

    convs = {m.conv: m for m in await relational.list_user_convs("alice")}
    assert set(convs) == {"g:x", "d:alice:bob", "g:y"}
    assert convs["g:x"].left is True
    assert convs["g:y"] == Member(conv="g:y", uid="alice", role="owner", version=5)
    assert {m.conv for m in await relational.list_user_convs("bob")} == {"g:x", "d:alice:bob"}
    assert await relational.list_user_convs("nobody") == []


async def test_list_users_convs_is_list_user_convs_of_each(relational: Any) -> None:
    await relational.add_members([Member(conv="g:x", uid="alice"), Member(conv="g:x", uid="bob")])
    await relational.add_members([Member(conv="d:alice:bob", uid="alice"), Member(conv="d:alice:bob", uid="bob")])
    await relational.set_left("g:x", "alice", 6)

    many = await relational.list_users_convs(["alice", "bob", "nobody", "alice"])
    assert set(many) == {"alice", "bob", "nobody"}
    for uid in ("alice", "bob", "nobody"):
        assert sorted(many[uid], key=lambda m: m.conv) == sorted(
            await relational.list_user_convs(uid), key=lambda m: m.conv
        )
    assert await relational.list_users_convs([]) == {}


async def test_advance_read_is_monotonic(relational: Any) -> None:
    await relational.add_members([Member(conv="g:x", uid="alice", version=1)])

    assert await relational.advance_read("g:x", "alice", 5, 10) is True
    m = await relational.get_member("g:x", "alice")
    assert m is not None
    assert (m.read_seq, m.version) == (5, 10)

    assert await relational.advance_read("g:x", "alice", 3, 11) is False  # never moves back
    assert await relational.advance_read("g:x", "alice", 5, 12) is False  # not larger
    m = await relational.get_member("g:x", "alice")
    assert m is not None
    assert (m.read_seq, m.version) == (5, 10)

    assert await relational.advance_read("g:x", "alice", 8, 13) is True
    m = await relational.get_member("g:x", "alice")
    assert m is not None
    assert (m.read_seq, m.version) == (8, 13)


async def test_advance_read_concurrently_ends_at_the_largest(relational: Any) -> None:
    await relational.add_members([Member(conv="g:x", uid="alice")])
    targets = list(range(1, 101))
    random.Random(7).shuffle(targets)
    moved = await asyncio.gather(*(relational.advance_read("g:x", "alice", s, 1000 + s) for s in targets))
    m = await relational.get_member("g:x", "alice")
    assert m is not None
    assert m.read_seq == 100
    assert m.version == 1100  # the version of the call that set read seq 100
    assert moved[targets.index(100)] is True


async def test_advance_delivered_is_monotonic(relational: Any) -> None:
    await relational.add_members([Member(conv="g:x", uid="alice", read_seq=2, version=1)])

    assert await relational.advance_delivered("g:x", "alice", 6) is True
    assert await relational.advance_delivered("g:x", "alice", 4) is False
    assert await relational.advance_delivered("g:x", "alice", 6) is False
    m = await relational.get_member("g:x", "alice")
    assert m is not None
    assert (m.delivered_seq, m.read_seq) == (6, 2)
    assert await relational.advance_delivered("g:x", "alice", 9) is True
    m = await relational.get_member("g:x", "alice")
    assert m is not None
    assert m.delivered_seq == 9


async def test_max_version(relational: Any) -> None:
    assert await relational.max_version() == 0
    await relational.add_members([Member(conv="g:x", uid="alice", version=5), Member(conv="g:x", uid="bob", version=5)])
    assert await relational.max_version() == 5
    await relational.set_role("g:x", "bob", "admin", 9)
    assert await relational.max_version() == 9
    await relational.advance_read("g:x", "alice", 3, 12)
    assert await relational.max_version() == 12
    await relational.set_left("g:x", "bob", 15)
    assert await relational.max_version() == 15


# ---------------------------------------------------------------- durability


async def test_writes_survive_close_and_reopen(relational_backend: Any) -> None:
    store = await relational_backend.open()
    await store.create_user(user("alice", "alice_n"), "hash")
    await store.create_group(group("g1"), [Member(conv="g:g1", uid="alice", role="owner", version=3)])
    await store.add_members([Member(conv="g:g1", uid="bob", version=4)])
    await store.advance_read("g:g1", "bob", 2, 5)
    await store.put_refresh_token("tok", "alice", FUTURE, "fam")
    await relational_backend.close(store)

    reopened = await relational_backend.open()
    assert await reopened.get_user("alice") == user("alice", "alice_n")
    assert await reopened.get_credentials("alice_n") == ("alice", "hash")
    assert await reopened.get_group("g1") == group("g1")
    assert uids(await reopened.list_members("g:g1")) == ["alice", "bob"]
    assert await reopened.get_member("g:g1", "bob") == Member(conv="g:g1", uid="bob", read_seq=2, version=5)
    assert await reopened.max_version() == 5
    assert await reopened.take_refresh_token("tok") == RefreshGrant("alice", FUTURE, "fam", reused=False)


# ---------------------------------------------------------------- conversation settings


async def test_update_settings_partial_and_monotonic_clear(relational: Any) -> None:
    await relational.add_members([Member(conv="g:s", uid="alice", version=1), Member(conv="g:s", uid="bob", version=1)])
    m = await relational.update_settings("g:s", "alice", SettingsChange(pinned=True, draft="hello"), 5)
    assert (m.pinned, m.muted, m.hidden, m.draft, m.cleared_seq, m.version) == (True, False, False, "hello", 0, 5)
    m = await relational.update_settings("g:s", "alice", SettingsChange(muted=True, cleared_seq=7), 6)
    assert (m.pinned, m.muted, m.draft, m.cleared_seq, m.read_seq) == (True, True, "hello", 7, 7)  # clear reads
    m = await relational.update_settings("g:s", "alice", SettingsChange(cleared_seq=3, draft=""), 7)
    assert (m.cleared_seq, m.read_seq, m.draft) == (7, 7, "")  # never moves back
    assert await relational.get_member("g:s", "alice") == m
    bob = await relational.get_member("g:s", "bob")
    assert (bob.pinned, bob.cleared_seq) == (False, 0)  # per user
    assert await relational.update_settings("g:s", "nobody", SettingsChange(pinned=True), 8) is None
    # A re-join keeps the user's settings.
    await relational.set_left("g:s", "alice", 9)
    await relational.add_members([Member(conv="g:s", uid="alice", join_seq=20, read_seq=20, version=10)])
    again = await relational.get_member("g:s", "alice")
    assert (again.pinned, again.muted, again.left) == (True, True, False)


async def test_unread_mentions_follow_the_read_position(relational: Any) -> None:
    await relational.add_members([Member(conv="g:m", uid=u, version=1) for u in ("alice", "bob", "carol")])
    await relational.mark_sent("g:m", "bob", 1, 2, ["alice"])
    await relational.mark_sent("g:m", "bob", 2, 3, ["*"])  # @all: not counted for bob himself
    await relational.mark_sent("g:m", "carol", 3, 4, ["bob"])  # carol has now read up to 3
    assert await relational.unread_mentions("alice") == {"g:m": 2}
    assert await relational.unread_mentions("bob") == {"g:m": 1}
    assert await relational.unread_mentions("carol") == {}
    assert (await relational.get_member("g:m", "bob")).read_seq == 2  # mark_sent still moves the read seq
    await relational.advance_read("g:m", "alice", 1, 5)
    assert await relational.unread_mentions("alice") == {"g:m": 1}
    await relational.advance_read("g:m", "alice", 3, 6)
    assert await relational.unread_mentions("alice") == {}


async def test_mark_sent_burst_shares_commits(relational_backend: Any) -> None:
    store = await relational_backend.open()
    senders = [f"u{i}" for i in range(200)]
    await store.add_members([Member(conv="g:burst", uid=u, version=1) for u in senders])
    before = relational_backend.commits(store)
    await asyncio.gather(*(store.mark_sent("g:burst", u, i + 1, 100 + i, ["u0"]) for i, u in enumerate(senders)))
    after = relational_backend.commits(store)
    if after is not None:
        assert after - before < len(senders) / 4, "mark_sent calls were not batched"
    members = {m.uid: m for m in await store.list_members("g:burst")}
    assert [(members[u].read_seq, members[u].version) for u in senders] == [(i + 1, 100 + i) for i in range(200)]
    assert await store.unread_mentions("u0") == {"g:burst": 199}


async def test_mark_sent_same_sender_in_one_batch_keeps_the_largest(relational: Any) -> None:
    await relational.add_members([Member(conv="g:b", uid="alice", read_seq=3, version=1)])
    seqs = [5, 9, 4, 7, 2]
    await asyncio.gather(*(relational.mark_sent("g:b", "alice", s, 10 + s) for s in seqs))
    m = await relational.get_member("g:b", "alice")
    assert (m.read_seq, m.version) == (9, 19)
    await relational.mark_sent("g:b", "alice", 8, 30)  # never moves back
    m = await relational.get_member("g:b", "alice")
    assert (m.read_seq, m.version) == (9, 19)


async def test_mark_sent_is_queued_before_it_is_awaited(relational: Any) -> None:
    await relational.add_members([Member(conv="g:q", uid="alice", version=1)])
    pending = relational.mark_sent("g:q", "alice", 4, 2)
    for _ in range(500):  # written without anyone awaiting it
        if (await relational.get_member("g:q", "alice")).read_seq == 4:
            break
        await asyncio.sleep(0.01)
    assert (await relational.get_member("g:q", "alice")).read_seq == 4
    await pending


async def test_mark_sent_a_row_the_backend_rejects_fails_alone(relational: Any) -> None:
    await relational.add_members([Member(conv="g:r", uid=u, version=1) for u in ("alice", "bob", "carol")])
    results = await asyncio.gather(
        relational.mark_sent("g:r", "alice", 1, 2, ["bob"]),
        relational.mark_sent("g:r", "bob", 2, 3, ["nul\x00byte"]),  # PostgreSQL text cannot hold NUL
        relational.mark_sent("g:r", "carol", 3, 4, ["alice"]),
        return_exceptions=True,
    )
    assert results[0] is None
    assert results[2] is None
    assert [(await relational.get_member("g:r", u)).read_seq for u in ("alice", "carol")] == [1, 3]
    assert await relational.unread_mentions("alice") == {"g:r": 1}


# ---------------------------------------------------------------- delete for me


async def test_hide_messages_per_user_and_since(relational: Any) -> None:
    await relational.add_members([Member(conv="g:h", uid=u, version=1) for u in ("alice", "bob")])
    await relational.add_members([Member(conv="g:other", uid="alice", version=1)])
    await relational.hide_messages("g:h", "alice", [7, 3], 5)
    await relational.hide_messages("g:h", "alice", [5], 8)

    assert await relational.hidden_messages("g:h", "alice") == [3, 5, 7]
    assert await relational.hidden_messages("g:h", "alice", since=5) == [5]
    assert await relational.hidden_messages("g:h", "alice", since=8) == []
    assert await relational.hidden_messages("g:h", "bob") == []
    assert await relational.hidden_messages("g:other", "alice") == []
    alice = await relational.get_member("g:h", "alice")
    assert alice.version == 8  # the conversation list changed
    assert (await relational.get_member("g:h", "bob")).version == 1
    assert (await relational.get_member("g:other", "alice")).version == 1
    assert await relational.max_version() == 8


async def test_hide_messages_is_idempotent_and_keeps_the_first_version(relational: Any) -> None:
    await relational.add_members([Member(conv="g:h", uid="alice", version=1)])
    await relational.hide_messages("g:h", "alice", [2, 4], 5)
    await relational.hide_messages("g:h", "alice", [4, 6, 6], 9)  # 4 is already hidden: stays at version 5

    assert await relational.hidden_messages("g:h", "alice") == [2, 4, 6]
    assert await relational.hidden_messages("g:h", "alice", since=5) == [6]
    assert (await relational.get_member("g:h", "alice")).version == 9
    await relational.hide_messages("g:h", "alice", [], 10)
    assert await relational.hidden_messages("g:h", "alice") == [2, 4, 6]


async def test_hidden_in_many_conversations_at_once(relational: Any) -> None:
    await relational.add_members(
        [Member(conv=c, uid=u, version=1) for c in ("g:a", "g:b", "g:c") for u in ("alice", "bob")]
    )
    await relational.hide_messages("g:a", "alice", [3, 1], 5)
    await relational.hide_messages("g:a", "alice", [4], 7)
    await relational.hide_messages("g:b", "alice", [9], 6)
    await relational.hide_messages("g:c", "bob", [2], 6)

    assert await relational.hidden_in("alice", ["g:a", "g:b", "g:c", "g:none"]) == {
        "g:a": {1: 5, 3: 5, 4: 7},
        "g:b": {9: 6},
    }
    assert await relational.hidden_in("alice", ["g:b"]) == {"g:b": {9: 6}}
    assert await relational.hidden_in("bob", ["g:a", "g:c"]) == {"g:c": {2: 6}}
    assert await relational.hidden_in("alice", []) == {}
    many = [f"g:x{i}" for i in range(1200)] + ["g:a"]  # more than one chunk of parameters
    assert await relational.hidden_in("alice", many) == {"g:a": {1: 5, 3: 5, 4: 7}}


async def test_hidden_messages_survive_reopen(relational_backend: Any) -> None:
    store = await relational_backend.open()
    await store.add_members([Member(conv="d:a:b", uid="a", version=1)])
    await store.hide_messages("d:a:b", "a", [1, 2], 3)
    await relational_backend.close(store)
    reopened = await relational_backend.open()
    assert await reopened.hidden_messages("d:a:b", "a") == [1, 2]
    assert (await reopened.get_member("d:a:b", "a")).version == 3


# ---------------------------------------------------------------- push targets


def target(uid: str, device: str, token: str, *, provider: str = "fcm", at: int = 1) -> PushTarget:
    return PushTarget(uid=uid, device=device, provider=provider, token=token, app_id="app", locale="en", updated_at=at)


async def test_push_target_put_replace_and_delete(relational: Any) -> None:
    phone = target("alice", "phone", "tok-1")
    web = PushTarget("alice", "web", "webpush", "https://push.example/ep/1", keys='{"p256dh":"k","auth":"a"}')
    await relational.put_push_target(phone)
    await relational.put_push_target(web)
    await relational.put_push_target(target("bob", "tablet", "tok-2", provider="apns"))
    assert await relational.push_targets(["alice"]) == [phone, web]

    # A new token for the same device replaces the old one.
    renewed = target("alice", "phone", "tok-1b", at=2)
    await relational.put_push_target(renewed)
    assert await relational.push_targets(["alice", "bob", "nobody"]) == [
        renewed,
        web,
        target("bob", "tablet", "tok-2", provider="apns"),
    ]

    assert await relational.delete_push_target("alice", "phone") is True
    assert await relational.delete_push_target("alice", "phone") is False
    assert await relational.push_targets(["alice"]) == [web]
    assert await relational.push_targets([]) == []


async def test_a_token_belongs_to_one_user_and_device(relational: Any) -> None:
    # The phone changed hands: bob logs in on it, and its token must no longer reach alice.
    await relational.put_push_target(target("alice", "phone", "tok-shared"))
    await relational.put_push_target(target("bob", "phone-b", "tok-shared", at=5))
    assert await relational.push_targets(["alice", "bob"]) == [target("bob", "phone-b", "tok-shared", at=5)]
    # The same token string of another provider is another installation.
    await relational.put_push_target(target("alice", "mac", "tok-shared", provider="apns"))
    assert len(await relational.push_targets(["alice", "bob"])) == 2


async def test_concurrent_registrations_of_one_token_leave_one(relational: Any) -> None:
    await asyncio.gather(*(relational.put_push_target(target(f"u{i}", "d", "tok-race", at=i)) for i in range(8)))
    left = await relational.push_targets([f"u{i}" for i in range(8)])
    assert len(left) == 1
    assert left[0].token == "tok-race"


# ---------------------------------------------------------------- content-filter rules


def rule(rule_id: str, pattern: str = "spam", **fields: Any) -> FilterRule:
    values: dict[str, Any] = {"match": "word", "action": "block", "created_at": 10, "updated_at": 10}
    return FilterRule(rule_id=rule_id, pattern=pattern, **(values | fields))


async def test_filter_rules_put_replace_delete_and_revision(relational: Any) -> None:
    start = await relational.filter_rules_revision()
    assert await relational.filter_rules() == []

    await relational.put_filter_rule(rule("r2", "b[a4]d", match="regex", action="mask", note="n"))
    await relational.put_filter_rule(rule("r1"))
    after_puts = await relational.filter_rules_revision()
    assert after_puts > start
    assert [r.rule_id for r in await relational.filter_rules()] == ["r1", "r2"]
    assert (await relational.filter_rules())[1] == rule("r2", "b[a4]d", match="regex", action="mask", note="n")

    changed = rule("r1", "scam", enabled=False, updated_at=20)
    await relational.put_filter_rule(changed)
    assert (await relational.filter_rules())[0] == changed
    assert await relational.filter_rules_revision() > after_puts

    before_delete = await relational.filter_rules_revision()
    assert await relational.delete_filter_rule("r1") is True
    assert await relational.filter_rules_revision() > before_delete
    unchanged = await relational.filter_rules_revision()
    assert await relational.delete_filter_rule("r1") is False
    assert await relational.filter_rules_revision() == unchanged  # nothing changed, nothing to reload
    assert [r.rule_id for r in await relational.filter_rules()] == ["r2"]


# ---------------------------------------------------------------- identity flags (migration of existing data)

# Ids and names stored before ids were normalised and names checked: "Alice"/"alice" collide, "Bob" is not in
# normal form, two names hold control characters (a bidi override, a newline); "Team"/"team" are two groups.
_LEGACY_USERS = [
    ("Alice", "Alice", "Alice", ""),
    ("alice", "alice", "alice", ""),
    ("Bob", None, "Bob", ""),
    ("carol", None, "\u202eevil", ""),
    ("dave", None, "Dave", "x\ny"),
    ("erin", None, "Erin \U0001f469\u200d\U0001f4bb", ""),  # ZWJ in an emoji sequence is allowed
]
_LEGACY_GROUPS = [("Team", "T"), ("team", "t\u2066x"), ("ok", "Fine")]
_EXPECTED_FLAGS = [
    ("group", "Team", "id_collision", "team"),
    ("group", "team", "control_chars", "name"),
    ("group", "team", "id_collision", "Team"),
    ("user", "Alice", "id_collision", "alice"),
    ("user", "Bob", "id_not_normal", "bob"),
    ("user", "alice", "id_collision", "Alice"),
    ("user", "carol", "control_chars", "display_name"),
    ("user", "dave", "control_chars", "avatar"),
]


async def _legacy_sqlite(tmp_path: Any) -> Any:
    import sqlite3

    from flare_im.backends.migrations import Schema, SqliteMigrator
    from flare_im.backends.relational.sqlite import MIGRATIONS, SqliteRelational
    from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase

    path = str(tmp_path / "legacy.db")
    conn = sqlite3.connect(path, isolation_level=None)
    SqliteMigrator(conn, Schema("relational", MIGRATIONS[:5])).apply()
    conn.executemany("INSERT INTO users VALUES (?,?,NULL,?,?,0)", _LEGACY_USERS)
    conn.executemany("INSERT INTO groups VALUES (?,?,'',?,0)", [(g, n, "alice") for g, n in _LEGACY_GROUPS])
    conn.execute("INSERT INTO refresh_tokens VALUES ('old-token', 'alice', 4000000000)")
    conn.close()
    db = SqliteDatabase(SqliteConfig(path=path))
    store = SqliteRelational(db)  # applies migration 6
    db.start()
    return store, db.close


async def _legacy_postgres(url: str) -> Any:
    import asyncpg

    from flare_im.backends.migrations import PostgresMigrator, Schema
    from flare_im.backends.relational.postgres import MIGRATIONS, SCHEMA, PostgresConfig, PostgresRelational

    conn = await asyncpg.connect(url)
    try:
        await PostgresMigrator(conn, Schema("relational", MIGRATIONS[:2])).apply()
        await conn.executemany("INSERT INTO users VALUES ($1, $2, NULL, $3, $4, 0)", _LEGACY_USERS)
        await conn.executemany(
            "INSERT INTO groups VALUES ($1, $2, '', $3, 0)", [(g, n, "alice") for g, n in _LEGACY_GROUPS]
        )
        await conn.execute("INSERT INTO refresh_tokens VALUES ('old-token', 'alice', 4000000000)")
        await PostgresMigrator(conn, SCHEMA).apply()
    finally:
        await conn.close()
    store = await PostgresRelational.open(PostgresConfig(url=url, min_connections=1))
    return store, store.close


@pytest.mark.parametrize("backend", RELATIONAL_BACKEND_NAMES)
async def test_migration_flags_colliding_ids_and_control_characters(
    backend: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if backend == "sqlite":
            store, close = await _legacy_sqlite(tmp_path)
        else:
            url = await stack.enter_async_context(request.getfixturevalue("postgres_schemas")())
            store, close = await _legacy_postgres(url)
        try:
            flags = await store.identity_flags()
            assert [(f.kind, f.subject, f.reason, f.detail) for f in flags] == _EXPECTED_FLAGS
            assert all(f.flagged_at > 1_700_000_000_000 for f in flags)
            # nothing was renamed or changed
            assert {u.uid for u in await store.get_users([u[0] for u in _LEGACY_USERS])} == {
                u[0] for u in _LEGACY_USERS
            }
            assert (await store.get_user("carol")).display_name == "\u202eevil"
            # a refresh token issued before families is a family of its own, still usable once
            grant = await store.take_refresh_token("old-token")
            assert grant == RefreshGrant("alice", 4_000_000_000, "old-token", reused=False)
        finally:
            await close()
