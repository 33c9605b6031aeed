"""The gRPC API (G1) against a real `flare serve` with a gRPC port, driven by a real grpc.aio client: the admin
key, users, groups, sends (ack, seq, idempotency), history, recall, system messages, Subscribe, health,
reflection, mutual TLS and shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flare_im.devcluster import free_port
from flare_im.grpc_api.gen import flare_pb2 as pb
from flare_im.grpc_api.gen import flare_pb2_grpc as pb_grpc
from flare_im.sdk.client import FlareClient
from flare_im.sdk.rest import RestClient

from .conftest import ServerProcess

INTEGRATION_DOC = Path(__file__).resolve().parents[2] / "docs/integration.md"


@pytest.fixture
def grpc_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", env_overrides={"FLARE_GRPC_PORT": str(free_port())})
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def target(srv: ServerProcess) -> str:
    return f"127.0.0.1:{srv.env_overrides['FLARE_GRPC_PORT']}"


class Api:
    """The Flare stub with the admin key in every call's metadata."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.stub = pb_grpc.FlareStub(channel)
        self.md = (("x-admin-key", key),)

    async def call(self, name: str, request: Any) -> Any:
        return await getattr(self.stub, name)(request, metadata=self.md, timeout=10)

    async def refused(self, name: str, request: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.call(name, request)
        return info.value

    def subscribe(self, *convs: str) -> Any:
        return self.stub.Subscribe(pb.SubscribeRequest(convs=list(convs)), metadata=self.md)


@pytest.fixture
async def api(grpc_server: ServerProcess) -> AsyncIterator[Api]:
    async with grpc.aio.insecure_channel(target(grpc_server)) as channel:
        yield Api(channel, grpc_server.admin_key)


def flare_code(error: grpc.aio.AioRpcError) -> int:
    return int(dict(error.trailing_metadata() or ())["flare-error-code"])


def send(user: str, conv: str, cmid: str, text: str) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(as_user=user, conv=conv, cmid=cmid, body_json=json.dumps({"text": text}))


def users(*ids: str) -> pb.ImportUsersRequest:
    return pb.ImportUsersRequest(users=[pb.CreateUserRequest(user_id=u) for u in ids])


async def next_message(stream: Any) -> pb.Message:
    event = await asyncio.wait_for(stream.read(), 10)
    assert event.WhichOneof("event") == "message", event
    return event.message


async def test_the_admin_key_is_required_and_a_refusal_changes_nothing(api: Api) -> None:
    for metadata in ((), (("x-admin-key", "wrong"),), (("x-admin-key", ""),)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await api.stub.CreateUser(pb.CreateUserRequest(user_id="mallory"), metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert flare_code(info.value) == 401
        stream = api.stub.Subscribe(pb.SubscribeRequest(), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stream.read()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing was created: with the key, the id is still free.
    created = await api.call("CreateUser", pb.CreateUserRequest(user_id="mallory"))
    assert created.user_id == "mallory"


async def test_users_groups_send_history_and_recall(api: Api, grpc_server: ServerProcess) -> None:
    user = await api.call("CreateUser", pb.CreateUserRequest(user_id="Alice", display_name="Alice A."))
    assert (user.user_id, user.display_name) == ("alice", "Alice A.")
    assert user.created_at > 0
    error = await api.refused("CreateUser", pb.CreateUserRequest(user_id="alice"))
    assert (error.code(), flare_code(error)) == (grpc.StatusCode.ALREADY_EXISTS, 409)
    error = await api.refused("CreateUser", pb.CreateUserRequest(user_id="no spaces"))
    assert (error.code(), flare_code(error)) == (grpc.StatusCode.INVALID_ARGUMENT, 422)
    imported = await api.call(
        "ImportUsers", pb.ImportUsersRequest(users=[pb.CreateUserRequest(user_id=u) for u in ("bob", "carol", "alice")])
    )
    assert (list(imported.created), list(imported.existing)) == (["bob", "carol"], ["alice"])
    error = await api.refused("ImportUsers", pb.ImportUsersRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # 1..1000 users, as REST

    tokens = await api.call("IssueTokens", pb.IssueTokensRequest(user_ids=["alice", "bob"], ttl_s=600))
    assert set(tokens.tokens) == {"alice", "bob"}
    assert (tokens.token_type, tokens.expires_in) == ("Bearer", 600)
    error = await api.refused("IssueTokens", pb.IssueTokensRequest(user_ids=["alice"], ttl_s=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await api.refused("IssueTokens", pb.IssueTokensRequest(user_ids=["nobody"]))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    async with RestClient(grpc_server.api_url, token=tokens.tokens["bob"]) as bob_rest:
        assert (await bob_rest.me())["user_id"] == "bob"  # the tokens are real

    group = await api.call(
        "CreateGroup", pb.CreateGroupRequest(as_user="alice", name="Team", members=["bob"], group_id="team")
    )
    assert (group.group_id, group.conv, group.owner, group.member_count) == ("team", "g:team", "alice", 2)
    error = await api.refused("CreateGroup", pb.CreateGroupRequest(as_user="ghost", name="X"))
    assert error.code() == grpc.StatusCode.NOT_FOUND  # as_user must be a real user
    added = await api.call("AddMembers", pb.AddMembersRequest(as_user="alice", group_id="team", user_ids=["carol"]))
    assert list(added.added) == ["carol"]
    error = await api.refused("AddMembers", pb.AddMembersRequest(as_user="bob", group_id="team", user_ids=["x"]))
    assert (error.code(), flare_code(error)) == (grpc.StatusCode.PERMISSION_DENIED, 403)
    members = await api.call("ListMembers", pb.ListMembersRequest(as_user="bob", group_id="team"))
    assert {(m.user_id, m.role) for m in members.items} == {("alice", "owner"), ("bob", "member"), ("carol", "member")}
    assert (await api.call("GetGroup", pb.GetGroupRequest(as_user="carol", group_id="team"))).member_count == 3

    # Bob's phone is on the WebSocket: a send over gRPC takes the same path and reaches it.
    bob = FlareClient(grpc_server.ws_url, tokens.tokens["bob"], "phone")
    await bob.connect()
    try:
        head = (await api.call("GetHistory", pb.GetHistoryRequest(as_user="alice", conv="g:team"))).max_seq
        ack = await api.call("SendMessage", send("alice", "g:team", "m1", "hello team"))
        assert (ack.conv, ack.seq, ack.duplicate) == ("g:team", head + 1, False)
        pushed = await bob.next_message()
        while pushed.seq < ack.seq:  # the group's system notices come first
            pushed = await bob.next_message()
        assert (pushed.seq, pushed.msg_id, pushed.body) == (ack.seq, ack.msg_id, {"text": "hello team"})
        again = await api.call("SendMessage", send("alice", "g:team", "m1", "hello team"))
        assert (again.seq, again.msg_id, again.ts, again.duplicate) == (ack.seq, ack.msg_id, ack.ts, True)

        # Refusals store nothing.
        invalid = pb.SendMessageRequest
        for request, status in (
            (invalid(as_user="alice", conv="g:team", cmid="m2", body_json="{nope"), "INVALID_ARGUMENT"),
            (invalid(as_user="alice", conv="g:team", cmid="m2", body_json="[1]"), "INVALID_ARGUMENT"),
            (invalid(as_user="alice", conv="g:team", cmid="", body_json='{"text":"x"}'), "INVALID_ARGUMENT"),
            (invalid(as_user="alice", conv="g:team", cmid="m2", kind="system", body_json="{}"), "INVALID_ARGUMENT"),
            (invalid(as_user="alice", conv="G:Team", cmid="m2", body_json='{"text":"x"}'), "INVALID_ARGUMENT"),
            (send("mallory", "g:team", "m2", "x"), "NOT_FOUND"),
            (send("bob", "d:alice:carol", "m2", "x"), "PERMISSION_DENIED"),
        ):
            error = await api.refused("SendMessage", request)
            assert error.code().name == status, (request, error)
        page = await api.call("GetHistory", pb.GetHistoryRequest(as_user="bob", conv="g:team", after=head))
        assert [(m.seq, m.sender, m.cmid, json.loads(m.body_json)) for m in page.items] == [
            (ack.seq, "alice", "m1", {"text": "hello team"})
        ]
        assert (page.conv, page.max_seq, page.more) == ("g:team", ack.seq, False)
        error = await api.refused("GetHistory", pb.GetHistoryRequest(as_user="bob", conv="g:team", limit=501))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        error = await api.refused("GetHistory", pb.GetHistoryRequest(as_user="bob", conv="g:team", after=ack.seq + 5))
        assert (error.code(), flare_code(error)) == (grpc.StatusCode.OUT_OF_RANGE, 416)

        not_his = pb.RecallMessageRequest(as_user="bob", conv="g:team", seq=ack.seq, opid="r")
        error = await api.refused("RecallMessage", not_his)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED  # only the sender recalls
        recall = pb.RecallMessageRequest(as_user="alice", conv="g:team", seq=ack.seq, opid="r1")
        op = await api.call("RecallMessage", recall)
        assert (op.target, op.seq, op.version, op.duplicate) == (ack.seq, ack.seq + 1, 2, False)
        assert (await api.call("RecallMessage", recall)).duplicate
        event = await bob.next_message()
        assert (event.kind, event.seq) == ("recall", op.seq)
        page = await api.call("GetHistory", pb.GetHistoryRequest(as_user="bob", conv="g:team", after=head))
        assert (page.items[0].seq, page.items[0].state, page.items[0].body_json) == (ack.seq, "recalled", "{}")

        removed = pb.RemoveMemberRequest(as_user="alice", group_id="team", user_id="carol")
        await api.call("RemoveMember", removed)
        members = await api.call("ListMembers", pb.ListMembersRequest(as_user="alice", group_id="team"))
        assert {m.user_id for m in members.items} == {"alice", "bob"}
    finally:
        await bob.close()


async def test_system_messages_are_idempotent_and_reach_members(api: Api, grpc_server: ServerProcess) -> None:
    await api.call("ImportUsers", users("ann", "ben"))
    token = (await api.call("IssueTokens", pb.IssueTokensRequest(user_ids=["ben"]))).tokens["ben"]
    ben = FlareClient(grpc_server.ws_url, token, "phone")
    await ben.connect()
    try:
        notice = pb.SendSystemMessageRequest(conv="d:ann:ben", cmid="order-1", body_json='{"text": "order shipped"}')
        ack = await api.call("SendSystemMessage", notice)
        assert (ack.seq, ack.duplicate) == (1, False)
        pushed = await ben.next_message()
        assert (pushed.kind, pushed.sender, pushed.body) == ("system", "", {"event": "notice", "text": "order shipped"})
        retries = await asyncio.gather(*(api.call("SendSystemMessage", notice) for _ in range(3)))
        assert {(r.seq, r.msg_id, r.duplicate) for r in retries} == {(1, ack.msg_id, True)}
        other = pb.SendSystemMessageRequest(conv="d:ann:zed", cmid="order-2", body_json='{"text": "x"}')
        assert (await api.refused("SendSystemMessage", other)).code() == grpc.StatusCode.NOT_FOUND
        for bad in ('{"event": "hack"}', "[]", ""):
            request = pb.SendSystemMessageRequest(conv="d:ann:ben", cmid="order-3", body_json=bad)
            assert (await api.refused("SendSystemMessage", request)).code() == grpc.StatusCode.INVALID_ARGUMENT
        moved = pb.SendSystemMessageRequest(conv="d:ann:carl", cmid="order-1", body_json="{}")
        error = await api.refused("SendSystemMessage", moved)  # the cmid names a notice to another conversation
        assert (error.code(), flare_code(error)) == (grpc.StatusCode.ALREADY_EXISTS, 409)
        page = await api.call("GetHistory", pb.GetHistoryRequest(as_user="ann", conv="d:ann:ben"))
        assert [m.seq for m in page.items] == [1]  # retries and refusals stored nothing
    finally:
        await ben.close()


async def test_subscribe_streams_sends_of_every_api(api: Api, grpc_server: ServerProcess) -> None:
    await api.call("ImportUsers", users("amy", "dan"))
    tokens = (await api.call("IssueTokens", pb.IssueTokensRequest(user_ids=["amy", "dan"]))).tokens
    everything = api.subscribe()
    only_group = api.subscribe("g:club")
    for stream in (everything, only_group):
        first = await asyncio.wait_for(stream.read(), 10)
        assert first.WhichOneof("event") == "subscribed"
        assert first.subscribed.node == "node-0"
    amy = FlareClient(grpc_server.ws_url, tokens["amy"], "laptop")
    await amy.connect()
    try:
        ws_ack = await amy.send("d:amy:dan", "over the websocket", cmid="w1")
        async with RestClient(grpc_server.api_url, token=tokens["dan"]) as dan:
            rest_ack = await dan.send("d:amy:dan", "r1", {"text": "over REST"})
        grpc_ack = await api.call("SendMessage", send("amy", "d:amy:dan", "g1", "over gRPC"))
        club_group = pb.CreateGroupRequest(as_user="amy", name="Club", members=["dan"], group_id="club")
        await api.call("CreateGroup", club_group)
        club = await api.call("SendMessage", send("dan", "g:club", "c1", "hi club"))
        await amy.recall("d:amy:dan", ws_ack.seq)

        seen = [await next_message(everything) for _ in range(6)]
        assert [(m.conv, m.seq, m.sender, m.kind) for m in seen] == [
            ("d:amy:dan", ws_ack.seq, "amy", "text"),
            ("d:amy:dan", rest_ack["seq"], "dan", "text"),
            ("d:amy:dan", grpc_ack.seq, "amy", "text"),
            ("g:club", 1, "amy", "system"),
            ("g:club", club.seq, "dan", "text"),
            ("d:amy:dan", grpc_ack.seq + 1, "amy", "recall"),
        ]
        assert json.loads(seen[1].body_json) == {"text": "over REST"}
        assert seen[1].msg_id == rest_ack["msg_id"]
        filtered = [await next_message(only_group) for _ in range(2)]
        assert [(m.conv, m.seq) for m in filtered] == [("g:club", 1), ("g:club", club.seq)]
    finally:
        await amy.close()
        everything.cancel()
        only_group.cancel()


async def test_health_and_reflection_need_no_key(grpc_server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(target(grpc_server)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "flare.v1.Flare"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name async for reply in call for s in reply.list_services_response.service}
        assert {"flare.v1.Flare", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="flare.v1.Flare")])
        )
        files = [reply.file_descriptor_response.file_descriptor_proto async for reply in call]
        assert files, "reflection gives the service's descriptor"
        assert files[0]


async def test_shutdown_ends_subscribe_streams(grpc_server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(target(grpc_server)) as channel:
        api = Api(channel, grpc_server.admin_key)
        stream = api.subscribe()
        assert (await asyncio.wait_for(stream.read(), 10)).WhichOneof("event") == "subscribed"
        assert grpc_server.proc is not None
        grpc_server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(stream.read(), 20)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.to_thread(grpc_server.stop) == 0  # exits at once and cleanly (the log is checked)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("backend@example.com")
    stranger = trustme.CA().issue_cert("backend@example.com")
    files = {
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "ca": tmp_path / "ca.pem",
    }
    server_cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server_cert.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    port = free_port()
    srv = ServerProcess(
        tmp_path / "data",
        env_overrides={
            "FLARE_GRPC_PORT": str(port),
            "FLARE_GRPC_TLS_CERT": str(files["cert"]),
            "FLARE_GRPC_TLS_KEY": str(files["key"]),
            "FLARE_GRPC_CLIENT_CA": str(files["ca"]),
        },
    )
    srv.start()
    try:
        trust = ca.cert_pem.bytes()

        async def create(user: str, credentials: grpc.ChannelCredentials) -> pb.User:
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
                return await Api(channel, srv.admin_key).call("CreateUser", pb.CreateUserRequest(user_id=user))

        with_cert = grpc.ssl_channel_credentials(
            trust, client_cert.private_key_pem.bytes(), client_cert.cert_chain_pems[0].bytes()
        )
        assert (await create("ok1", with_cert)).user_id == "ok1"
        for credentials in (
            grpc.ssl_channel_credentials(trust),  # no client certificate
            grpc.ssl_channel_credentials(trust, stranger.private_key_pem.bytes(), stranger.cert_chain_pems[0].bytes()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await create("intruder", credentials)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:  # plain text: no handshake at all
            with pytest.raises(grpc.aio.AioRpcError):
                await Api(plain, srv.admin_key).call("CreateUser", pb.CreateUserRequest(user_id="intruder"))
        # The refused clients changed nothing: the id is still free.
        assert (await create("intruder", with_cert)).user_id == "intruder"
    finally:
        srv.expect_errors = False
        srv.stop()


async def test_the_bot_of_the_integration_doc_answers(api: Api, grpc_server: ServerProcess, tmp_path: Path) -> None:
    text = INTEGRATION_DOC.read_text()
    code = text[text.index("### A gRPC bot in 20 lines") :].split("```python\n", 1)[1].split("```", 1)[0]
    assert 15 <= len(code.strip().splitlines()) <= 25
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(code)
    await api.call("CreateUser", pb.CreateUserRequest(user_id="zoe"))
    token = (await api.call("IssueTokens", pb.IssueTokensRequest(user_ids=["zoe"]))).tokens["zoe"]
    env = {
        **os.environ,
        "FLARE_GRPC": target(grpc_server),
        "FLARE_ADMIN_KEY_FILE": str(grpc_server.data_dir / "admin.key"),
    }
    bot = await asyncio.create_subprocess_exec(sys.executable, str(bot_file), env=env, stderr=asyncio.subprocess.PIPE)
    try:
        async with RestClient(grpc_server.api_url, token=token) as zoe:
            answered = None
            for attempt in range(40):  # until the bot has subscribed: what it missed before stays unanswered
                if bot.returncode is not None:
                    assert bot.stderr is not None
                    pytest.fail(f"the bot exited: {(await bot.stderr.read()).decode()}")
                try:
                    await zoe.send("d:echo-bot:zoe", f"p{attempt}", {"text": f"ping {attempt}"})
                except Exception:  # the bot's user does not exist yet
                    await asyncio.sleep(0.25)
                    continue
                await asyncio.sleep(0.5)
                items = (await zoe.history("d:echo-bot:zoe", limit=500))["items"]
                answered = [m["body"]["text"] for m in items if m["sender"] == "echo-bot"]
                if answered:
                    break
            assert answered, "the bot never answered"
            await asyncio.sleep(0.5)
            items = (await zoe.history("d:echo-bot:zoe", limit=500))["items"]
            pings = [m["body"]["text"] for m in items if m["sender"] == "zoe"]
            echoes = [m["body"]["text"] for m in items if m["sender"] == "echo-bot"]
            assert echoes == [f"You said: {p}" for p in pings[len(pings) - len(echoes) :]]  # each ping once, in order
    finally:
        bot.kill()
        await asyncio.wait_for(bot.wait(), 10)


async def test_scoped_keys_bans_and_the_audit_log(api: Api, grpc_server: ServerProcess) -> None:
    """The REST API's admin keys, bans and audit log hold over gRPC too."""
    await api.call("ImportUsers", users("kim", "lee"))
    root_ack = await api.call("SendMessage", send("kim", "d:kim:lee", "k1", "before the ban"))
    async with RestClient(grpc_server.api_url, admin_key=grpc_server.admin_key) as admin:
        read_key = await admin.request("POST", "/v1/admin/keys", json={"scope": "read"}, admin=True)
        async with grpc.aio.insecure_channel(target(grpc_server)) as channel:
            reader = Api(channel, read_key["key"])
            page = await reader.call("GetHistory", pb.GetHistoryRequest(as_user="lee", conv="d:kim:lee"))
            assert [m.seq for m in page.items] == [root_ack.seq]  # a read key reads
            error = await reader.refused("CreateUser", pb.CreateUserRequest(user_id="sneaky"))
            assert (error.code(), flare_code(error)) == (grpc.StatusCode.PERMISSION_DENIED, 403)
        # The refusal created nothing: the full key can still create that id.
        assert (await api.call("CreateUser", pb.CreateUserRequest(user_id="sneaky"))).user_id == "sneaky"
        audit = (await admin.request("GET", "/v1/admin/audit", params={"limit": 50}, admin=True))["items"]
        grpc_entries = [(e["key_id"], e["action"], e["status"]) for e in audit if e["action"].startswith("gRPC ")]
        assert ("root", "gRPC flare.v1.Flare/CreateUser", 200) in grpc_entries
        assert (read_key["key_id"], "gRPC flare.v1.Flare/CreateUser", 403) in grpc_entries
        assert not [e for e in grpc_entries if e[1].endswith(("/GetHistory", "/Subscribe"))]  # reads are not audited
        fresh = next(e for e in audit if e["action"] == "gRPC flare.v1.Flare/CreateUser" and e["status"] == 200)
        assert json.loads(fresh["detail"]) == {"userId": "sneaky"}
        assert fresh["ip"] == "127.0.0.1"

        await admin.request("DELETE", f"/v1/admin/keys/{read_key['key_id']}", admin=True)
        async with grpc.aio.insecure_channel(target(grpc_server)) as channel:
            error = await Api(channel, read_key["key"]).refused("GetGroup", pb.GetGroupRequest(as_user="kim"))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # a revoked key opens nothing

        await admin.request("POST", "/v1/admin/users/kim/ban", json={"reason": "spam"}, admin=True)
        error = await api.refused("SendMessage", send("kim", "d:kim:lee", "k2", "after the ban"))
        assert (error.code(), flare_code(error)) == (grpc.StatusCode.PERMISSION_DENIED, 403)
        assert json.loads(dict(error.trailing_metadata())["flare-error-detail"])["banned"] is True
        page = await api.call("GetHistory", pb.GetHistoryRequest(as_user="lee", conv="d:kim:lee"))
        assert [m.seq for m in page.items] == [root_ack.seq]  # nothing stored in the banned user's name


async def test_concurrent_retries_of_a_send_store_it_once(api: Api) -> None:
    await api.call("ImportUsers", users("ivy", "jon"))
    acks = await asyncio.gather(*(api.call("SendMessage", send("ivy", "d:ivy:jon", "same", "once")) for _ in range(5)))
    assert len({(a.seq, a.msg_id, a.ts) for a in acks}) == 1
    assert sorted(a.duplicate for a in acks) == [False, True, True, True, True]
    page = await api.call("GetHistory", pb.GetHistoryRequest(as_user="jon", conv="d:ivy:jon"))
    assert [(m.seq, m.cmid) for m in page.items] == [(acks[0].seq, "same")]
    newest = await api.call("GetHistory", pb.GetHistoryRequest(as_user="jon", conv="d:ivy:jon", before=2, limit=1))
    assert [m.seq for m in newest.items] == [1]
