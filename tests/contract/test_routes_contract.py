"""Contract of the RouteTable port (src/flare_im/backends/routes/base.py), for every backend.

``routes_backend.open(ttl_s=...)`` opens a route table over the backend's shared state (one per node);
``flush()`` loses that state, as a Redis restarted empty.
"""

from __future__ import annotations

from typing import Any

from flare_im.backends.routes.base import RouteTable
from flare_im.ids import now_ms

# Node liveness in the tests that let a node die. ``routes_backend.advance`` moves the memory table's clock,
# and sleeps for Redis (which keeps its own time): at least that much passes, more on a busy machine. The
# steps below leave a node that keeps heartbeating alive with 0.4 s or more to spare; a node that stopped
# only gets deader with extra time.
TTL_S = 1.0


async def test_routes_of_live_nodes_are_found(routes_backend: Any) -> None:
    table: RouteTable = routes_backend.open()
    await table.heartbeat("n1", [])
    await table.register("u1", "phone", "n1")
    await table.register("u1", "laptop", "n1")
    await table.register("u2", "phone", "n1")
    assert await table.lookup(["u1", "u2", "nobody"]) == {
        "u1": {"phone": "n1", "laptop": "n1"},
        "u2": {"phone": "n1"},
    }
    assert await table.lookup([]) == {}
    assert await table.live_nodes() == {"n1"}


async def test_a_node_that_never_heartbeated_routes_nothing(routes_backend: Any) -> None:
    table: RouteTable = routes_backend.open()
    await table.register("u1", "phone", "n-silent")
    assert await table.lookup(["u1"]) == {}
    assert await table.live_nodes() == set()


async def test_nodes_share_one_table(routes_backend: Any) -> None:
    a: RouteTable = routes_backend.open()
    b: RouteTable = routes_backend.open()
    await a.heartbeat("n1", [])
    await b.heartbeat("n2", [])
    await a.register("u1", "phone", "n1")
    await b.register("u1", "laptop", "n2")
    expected = {"u1": {"phone": "n1", "laptop": "n2"}}
    assert await a.lookup(["u1"]) == expected
    assert await b.lookup(["u1"]) == expected
    assert await a.live_nodes() == await b.live_nodes() == {"n1", "n2"}


async def test_a_device_that_moved_keeps_its_new_route(routes_backend: Any) -> None:
    table: RouteTable = routes_backend.open()
    await table.heartbeat("n1", [])
    await table.heartbeat("n2", [])
    await table.register("u1", "phone", "n1")
    await table.register("u1", "phone", "n2")  # reconnected to n2 before n1 noticed the old socket close
    await table.unregister("u1", "phone", "n1")  # n1's late clean-up removes nothing
    assert await table.lookup(["u1"]) == {"u1": {"phone": "n2"}}
    assert await table.last_seen(["u1"]) == {}  # never went offline
    # n1 heartbeats with a list taken before the close: the device stays with n2, which is alive
    await table.heartbeat("n1", [("u1", "phone")])
    assert await table.lookup(["u1"]) == {"u1": {"phone": "n2"}}


async def test_last_seen_is_set_when_the_last_device_leaves(routes_backend: Any) -> None:
    table: RouteTable = routes_backend.open()
    await table.heartbeat("n1", [])
    await table.heartbeat("n2", [])
    await table.register("u1", "phone", "n1")
    await table.register("u1", "laptop", "n2")
    before = now_ms()
    await table.unregister("u1", "phone", "n1")
    assert await table.last_seen(["u1"]) == {}  # the laptop is still online
    await table.unregister("u1", "laptop", "n2")
    after = now_ms()
    seen = await table.last_seen(["u1", "u2"])
    assert list(seen) == ["u1"]
    assert before - 5 <= seen["u1"] <= after + 5  # Redis stamps with its own clock: allow a few ms
    assert await table.lookup(["u1"]) == {}


async def test_a_node_that_stops_heartbeating_dies_after_ttl(routes_backend: Any) -> None:
    table: RouteTable = routes_backend.open(ttl_s=TTL_S)
    await table.heartbeat("n1", [])
    await table.heartbeat("n2", [])
    await table.register("u1", "phone", "n1")
    await table.register("u1", "laptop", "n2")
    await table.register("u2", "phone", "n1")
    assert await table.live_nodes() == {"n1", "n2"}
    n1_stopped = now_ms()

    for _ in range(3):  # n2 keeps heartbeating; n1 has stopped
        await routes_backend.advance(TTL_S / 2)
        await table.heartbeat("n2", [("u1", "laptop")])
    assert await table.live_nodes() == {"n2"}
    assert await table.lookup(["u1", "u2"]) == {"u1": {"laptop": "n2"}}
    seen = await table.last_seen(["u1", "u2"])
    assert list(seen) == ["u2"]  # u2 had no device left: it went offline when its node died
    assert n1_stopped - 5 <= seen["u2"] <= now_ms() + 5

    # n1 comes back (a restart) and heartbeats the devices it has: they are routed again
    await table.heartbeat("n1", [("u2", "phone")])
    assert await table.lookup(["u1", "u2"]) == {"u1": {"laptop": "n2"}, "u2": {"phone": "n1"}}


async def test_a_heartbeat_takes_over_a_device_whose_node_died(routes_backend: Any) -> None:
    table: RouteTable = routes_backend.open(ttl_s=TTL_S)
    await table.heartbeat("n1", [])
    await table.heartbeat("n2", [])
    await table.register("u1", "phone", "n1")
    await routes_backend.advance(TTL_S * 0.6)
    await table.heartbeat("n2", [])
    await routes_backend.advance(TTL_S * 0.6)  # n1 is dead now, n2 is not
    await table.heartbeat("n2", [("u1", "phone")])
    assert await table.lookup(["u1"]) == {"u1": {"phone": "n2"}}


async def test_flush_then_one_heartbeat_per_node_rebuilds_the_routes(routes_backend: Any) -> None:
    a: RouteTable = routes_backend.open()
    b: RouteTable = routes_backend.open()
    on_n1 = [(f"u{i}", "phone") for i in range(50)]
    on_n2 = [(f"u{i}", "laptop") for i in range(25, 75)]
    await a.heartbeat("n1", [])
    await b.heartbeat("n2", [])
    for uid, device in on_n1:
        await a.register(uid, device, "n1")
    for uid, device in on_n2:
        await b.register(uid, device, "n2")
    uids = [f"u{i}" for i in range(80)]
    before = await a.lookup(uids)
    assert len(before) == 75

    await routes_backend.flush()  # Redis restarted empty
    assert await a.lookup(uids) == {}
    assert await a.live_nodes() == set()
    await a.heartbeat("n1", on_n1)
    await b.heartbeat("n2", iter(on_n2))  # any iterable, read once
    assert await b.lookup(uids) == before
    assert await a.live_nodes() == {"n1", "n2"}


async def test_many_users_in_one_lookup(routes_backend: Any) -> None:
    table: RouteTable = routes_backend.open()
    nodes = ["n1", "n2", "n3"]
    routes = {f"user-{i}": {"d": nodes[i % 3]} for i in range(2500)}
    for node in nodes:  # big heartbeats carry the registrations
        await table.heartbeat(node, [(uid, "d") for uid, devices in routes.items() if devices["d"] == node])
    uids = [*routes, "absent-1", "absent-2"]
    assert await table.lookup(uids) == routes
    assert await table.lookup(["user-7", "user-7"]) == {"user-7": routes["user-7"]}  # repeats are fine


async def test_user_and_device_ids_are_taken_literally(routes_backend: Any) -> None:
    table: RouteTable = routes_backend.open()
    await table.heartbeat("node:a", [])
    await table.register("user:1", "dev ice:é", "node:a")
    await table.register("user", "1:dev", "node:a")
    assert await table.lookup(["user:1", "user"]) == {"user:1": {"dev ice:é": "node:a"}, "user": {"1:dev": "node:a"}}
