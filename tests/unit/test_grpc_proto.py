"""The gRPC API's contract: the committed stubs are what scripts/gen_grpc.sh makes of the .proto, the handlers are
the service's rpcs, the shared operations take and give the same fields as their REST twins, and the Subscribe
feed's bounds and filters hold."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from pydantic import BaseModel

from flare_im.api import http
from flare_im.api import schemas as shapes
from flare_im.grpc_api.events import EventFeed, TappedFanout
from flare_im.grpc_api.gen import flare_pb2 as pb
from flare_im.grpc_api.server import METHODS, STATUS, check_methods
from flare_im.protocol.errors import ErrorCode
from flare_im.protocol.frames import Message

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "src/flare_im/grpc_api/gen"


def test_committed_stubs_are_generated_from_the_proto(tmp_path: Path) -> None:
    env = {**os.environ, "VENV": sys.prefix}  # the tools of the venv running the tests
    subprocess.run(["bash", str(ROOT / "scripts/gen_grpc.sh"), str(tmp_path)], check=True, cwd=ROOT, env=env)
    made = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in GEN.iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py")
    assert made == committed == ["flare_pb2.py", "flare_pb2.pyi", "flare_pb2_grpc.py"]
    for name in made:
        assert (tmp_path / name).read_text() == (GEN / name).read_text(), f"{name}: run scripts/gen_grpc.sh"


def test_the_handlers_are_the_services_rpcs() -> None:
    check_methods()  # raises if a handler's name or types differ from the .proto
    service = pb.DESCRIPTOR.services_by_name["Flare"]
    assert [m.name for m in service.methods] == list(METHODS)


def test_every_error_code_has_a_status() -> None:
    assert {c for c in ErrorCode if c not in (ErrorCode.METHOD_NOT_ALLOWED, ErrorCode.REQUEST_TIMEOUT)} <= set(STATUS)


def fields(message: Any) -> set[str]:
    return {f.name for f in message.DESCRIPTOR.fields}


def model_fields(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


# The operations both APIs have: rpc -> its REST twin. The REST side's fields are read from the route itself:
# path and query parameters, the body model's fields, and the response model. ``as_user`` is what REST takes
# from the bearer token; JSON bodies travel as ``body_json`` text; path parameters have proto names.
SHARED = {
    "CreateUser": "POST /v1/admin/users",
    "ImportUsers": "POST /v1/admin/users:batch",
    "IssueTokens": "POST /v1/admin/tokens",
    "CreateGroup": "POST /v1/groups",
    "GetGroup": "GET /v1/groups/{gid}",
    "ListMembers": "GET /v1/groups/{gid}/members",
    "AddMembers": "POST /v1/groups/{gid}/members",
    "RemoveMember": "DELETE /v1/groups/{gid}/members/{member}",
    "SendMessage": "POST /v1/conversations/{conv}/messages",
    "GetHistory": "GET /v1/conversations/{conv}/messages",
    "RecallMessage": "POST /v1/conversations/{conv}/messages/{seq}/ops",
}
ACTING = set(SHARED) - {"CreateUser", "ImportUsers", "IssueTokens"}
RENAMED = {"body": "body_json", "gid": "group_id", "member": "user_id"}
# The ops route does six operations; RecallMessage is its op "recall", which takes none of the others' fields
# and answers with OpResult (the route's other reply, Hidden, is delete_for_me's).
NOT_IN_RPC = {"RecallMessage": {"op", "body", "base_version", "emoji"}}
VARIANT = {"RecallMessage": shapes.OpResult}


def proto_name(rest_field: str) -> str:
    return RENAMED.get(rest_field, rest_field)


def _routes() -> dict[str, Any]:
    from fastapi.routing import APIRoute

    ctx: Any = MagicMock()  # the routes use it only when called
    routes = [r for r in http.build_api(ctx).routes if isinstance(r, APIRoute)]
    return {f"{method} {r.path}": r for r in routes for method in r.methods}


def rest_request_fields(route: Any) -> set[str]:
    dependant = route.dependant
    names = {p.name for p in dependant.path_params} | {p.name for p in dependant.query_params}
    for param in dependant.body_params:
        model = param.field_info.annotation
        model = next((a for a in getattr(model, "__args__", (model,)) if isinstance(a, type)), model)
        names |= model_fields(model)
    return names


@pytest.mark.parametrize("rpc", sorted(SHARED))
def test_a_shared_operation_has_the_same_fields_in_both_apis(rpc: str) -> None:
    route = _routes()[SHARED[rpc]]
    request, response, _ = METHODS[rpc]
    rest_fields = rest_request_fields(route) - NOT_IN_RPC.get(rpc, set())
    assert rest_fields, SHARED[rpc]
    expected = {proto_name(f) for f in rest_fields} | ({"as_user"} if rpc in ACTING else set())
    assert fields(request) == expected
    rest_response = route.response_model
    if rpc in VARIANT:
        assert VARIANT[rpc] in rest_response.__args__
        rest_response = VARIANT[rpc]
    if rest_response is None:  # 204
        assert fields(response) == set()
        return
    assert fields(response) == {proto_name(f) for f in model_fields(rest_response)}
    # Nested shapes too: the items of a page, the members of a list.
    for name, info in rest_response.model_fields.items():
        inner = getattr(info.annotation, "__args__", (None,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            nested = response.DESCRIPTOR.fields_by_name[proto_name(name)].message_type
            assert {f.name for f in nested.fields} == {proto_name(f) for f in model_fields(inner)}, name


def test_a_message_has_the_fields_of_the_rest_and_websocket_message() -> None:
    assert fields(pb.Message) == {proto_name(f) for f in model_fields(shapes.Message)}
    assert fields(pb.Message) == {proto_name(f) for f in Message.__struct_fields__}


def test_the_import_entry_is_the_create_request() -> None:
    assert fields(pb.CreateUserRequest) == model_fields(http.AdminUserBody)


def _message(conv: str, seq: int) -> Message:
    return Message(conv, seq, str(seq), "a", f"c{seq}", "text", {"text": "x"}, 1)


async def test_the_feed_filters_and_ends_a_subscriber_that_falls_behind() -> None:
    feed = EventFeed(max_queue=3)
    everything = await feed.subscribe([])
    one = await feed.subscribe(["g:one"])
    for seq in range(1, 5):
        feed.publish(_message("g:other", seq))
    feed.publish(_message("g:one", 1))
    assert everything.overflowed  # 5 events for a queue of 3: ended, and told so after what it holds
    assert [everything.queue.get_nowait() for _ in range(4)][-1] is None
    assert not one.overflowed
    assert one.queue.get_nowait() == _message("g:one", 1)
    assert one.queue.empty()
    await feed.unsubscribe(everything)
    await feed.unsubscribe(one)
    assert len(feed) == 0


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def deliver_message(self, uids: Any, message: Message, *, skip: Any) -> None:
        self.messages.append(message)


async def test_the_tap_delivers_first_and_feeds_only_with_subscribers() -> None:
    inner, feed = _Recorder(), EventFeed()
    tap = TappedFanout(inner, feed)  # type: ignore[arg-type]
    tap.deliver_message(["a"], _message("g:x", 1), skip=None)
    subscription = await feed.subscribe([])
    tap.deliver_message(["a"], _message("g:x", 2), skip=None)
    assert [m.seq for m in inner.messages] == [1, 2]
    assert subscription.queue.get_nowait().seq == 2  # type: ignore[union-attr]
    assert subscription.queue.empty()
    feed.end_all()
    assert await asyncio.wait_for(subscription.queue.get(), 1) is None


def test_grpc_port_flag_and_its_checks(tmp_path: Path) -> None:
    from flare_im.cli import _parser
    from flare_im.config import Settings

    args = _parser().parse_args(["serve", "--grpc-port", "5005"])
    assert args.grpc_port == 5005
    assert Settings().grpc_port == 0  # off unless asked for
    assert Settings.load({"grpc_port": 5005}).grpc_port == 5005
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    for bad in (
        {"grpc_port": 70000},
        {"grpc_tls_cert": str(cert)},
        {"grpc_client_ca": str(cert)},
        {"grpc_tls_cert": str(cert), "grpc_tls_key": str(tmp_path / "missing.key")},
    ):
        with pytest.raises(ValueError, match="grpc"):
            Settings.load(bad, environ={})


async def test_a_subscriber_is_refused_while_the_topic_cannot_be_read() -> None:
    from flare_im.devcluster import free_port
    from flare_im.grpc_api.events import KafkaEventSource
    from flare_im.protocol.errors import FlareError

    feed = EventFeed()
    feed.source = KafkaEventSource(feed, f"127.0.0.1:{free_port()}", "flare.messages")  # nobody listens there
    with pytest.raises(FlareError) as info:
        await feed.subscribe([])
    assert info.value.code == ErrorCode.UNAVAILABLE
    assert len(feed) == 0
    await feed.source.close()


@pytest.mark.parametrize(
    ("peer", "host"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"), ("unix:/tmp/s", "/tmp/s")],
)
def test_the_audited_address_of_a_peer(peer: str, host: str) -> None:
    from flare_im.grpc_api.guard import _host

    assert _host(peer) == host
