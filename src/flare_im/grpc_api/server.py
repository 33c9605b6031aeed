"""The gRPC server of the API role (``grpc_port``): ``flare.v1.Flare``, the standard health service and server
reflection, on grpc.aio in the node's event loop; TLS, and mutual TLS when a client CA is configured.

Every ``flare.v1.Flare`` call first checks the admin key in the ``x-admin-key`` metadata (UNAUTHENTICATED
otherwise, PERMISSION_DENIED for a key whose scope is too narrow, before anything is read or changed; guard.py),
and the calls that change something are audited. Health and reflection answer without it: load balancers and
tools such as grpcurl use them, and they reveal nothing a client could not learn from the .proto file.

Errors: the gRPC status of ``STATUS`` plus trailing metadata ``flare-error-code`` (the protocol's numeric
code), ``flare-error-name``, ``flare-retryable`` and, for an edit conflict, ``flare-error-detail`` (JSON).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc  # type: ignore[import-untyped]
import msgspec
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]
from pydantic import ValidationError

from flare_im.grpc_api.gen import flare_pb2 as pb
from flare_im.grpc_api.guard import AdminGuard
from flare_im.grpc_api.service import FlareService, validation_message
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.admin import Principal

log = logging.getLogger(__name__)

SERVICE = "flare.v1.Flare"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a request or reply (REST's admin calls take 4 MiB bodies too)

STATUS: dict[ErrorCode, Any] = {
    ErrorCode.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.GONE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
    ErrorCode.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.REJECTED: grpc.StatusCode.PERMISSION_DENIED,  # an integration's before_send webhook refused it
    ErrorCode.BLOCKED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}

# rpc name -> (request class, response class, server streaming?)
METHODS: dict[str, tuple[Any, Any, bool]] = {
    "CreateUser": (pb.CreateUserRequest, pb.User, False),
    "ImportUsers": (pb.ImportUsersRequest, pb.ImportUsersResponse, False),
    "IssueTokens": (pb.IssueTokensRequest, pb.IssueTokensResponse, False),
    "CreateGroup": (pb.CreateGroupRequest, pb.Group, False),
    "GetGroup": (pb.GetGroupRequest, pb.Group, False),
    "ListMembers": (pb.ListMembersRequest, pb.ListMembersResponse, False),
    "AddMembers": (pb.AddMembersRequest, pb.AddMembersResponse, False),
    "RemoveMember": (pb.RemoveMemberRequest, pb.RemoveMemberResponse, False),
    "SendMessage": (pb.SendMessageRequest, pb.SendResult, False),
    "SendSystemMessage": (pb.SendSystemMessageRequest, pb.SendResult, False),
    "GetHistory": (pb.GetHistoryRequest, pb.MessagesPage, False),
    "RecallMessage": (pb.RecallMessageRequest, pb.OpResult, False),
    "Subscribe": (pb.SubscribeRequest, pb.Event, True),
}


@dataclass(frozen=True, slots=True)
class GrpcTls:
    cert_file: str  # PEM chain, leaf first
    key_file: str
    client_ca_file: str = ""  # set: clients must present a certificate this CA signed (mutual TLS)


class GrpcServer:
    def __init__(self, server: Any, service: FlareService, health_servicer: Any, port: int) -> None:
        self._server = server
        self._service = service
        self._health = health_servicer
        self.port = port

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, end the Subscribe streams, let unary calls under way finish within ``grace_s``."""
        self._service.closing = True
        await self._health.enter_graceful_shutdown()
        self._service.end_streams()
        await self._server.stop(grace_s)


async def start_grpc_server(
    service: FlareService, guard: AdminGuard, host: str, port: int, *, tls: GrpcTls | None = None
) -> GrpcServer:
    """Bind ``host:port`` (OSError if it cannot) and serve."""
    check_methods()
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),  # a port already taken is an error, not a silently shared one
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),  # finds subscribers whose peer vanished
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
    )
    handlers = {name: _handler(service, guard, name, *types) for name, types in METHODS.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address) if tls is None else server.add_secure_port(address, _credentials(tls))
    except RuntimeError as exc:  # grpc says "Failed to bind"
        raise OSError(f"gRPC cannot listen on {address}: {exc}") from None
    if not bound:
        raise OSError(f"gRPC cannot listen on {address}")
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, service, health_servicer, bound)


def check_methods() -> None:
    """The handlers are exactly the service's rpcs, with its request and response types."""
    described = pb.DESCRIPTOR.services_by_name["Flare"].methods_by_name
    if set(described) != set(METHODS):
        raise RuntimeError(f"flare.v1.Flare rpcs {sorted(described)} != handlers {sorted(METHODS)}")
    for name, (request, response, streaming) in METHODS.items():
        method = described[name]
        if (method.input_type, method.output_type, method.server_streaming) != (
            request.DESCRIPTOR,
            response.DESCRIPTOR,
            streaming,
        ):
            raise RuntimeError(f"handler of {name} does not match the .proto")


def _credentials(tls: GrpcTls) -> Any:
    key, cert = Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes()
    ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _handler(service: FlareService, guard: AdminGuard, name: str, request: Any, response: Any, streaming: bool) -> Any:
    method = getattr(service, name)
    options = {"request_deserializer": request.FromString, "response_serializer": response.SerializeToString}
    if streaming:
        return grpc.unary_stream_rpc_method_handler(_stream(method, guard, name), **options)
    return grpc.unary_unary_rpc_method_handler(_unary(method, guard, name), **options)


def _unary(method: Callable[[Any], Awaitable[Any]], guard: AdminGuard, name: str) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        principal = await _principal(guard, name, context)
        try:
            reply = await method(request)
        except Exception as exc:
            error = _flare_error(name, exc)
            await guard.audit(principal, name, request, int(error.code), context.peer())
            await _abort(context, error)
        await guard.audit(principal, name, request, 200, context.peer())
        return reply

    return handle


def _stream(method: Callable[[Any], AsyncIterator[Any]], guard: AdminGuard, name: str) -> Callable[..., Any]:
    async def handle(request: Any, context: Any) -> AsyncIterator[Any]:
        await _principal(guard, name, context)
        try:
            async for item in method(request):
                yield item
        except Exception as exc:
            await _abort(context, _flare_error(name, exc))

    return handle


async def _principal(guard: AdminGuard, name: str, context: Any) -> Principal:
    try:
        return await guard.principal(name, context.invocation_metadata(), context.peer())
    except Exception as exc:
        await _abort(context, _flare_error(name, exc))


def _flare_error(name: str, exc: Exception) -> FlareError:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, ValidationError):
        return FlareError(ErrorCode.INVALID, validation_message(exc))
    if isinstance(exc, FlareError):
        return exc
    log.exception("gRPC %s failed", name)
    return FlareError(ErrorCode.INTERNAL, "internal error")


async def _abort(context: Any, exc: FlareError) -> NoReturn:
    metadata = [
        ("flare-error-code", str(int(exc.code))),
        ("flare-error-name", exc.code.name.lower()),
        ("flare-retryable", "true" if exc.retryable else "false"),
    ]
    if exc.detail is not None:
        metadata.append(("flare-error-detail", msgspec.json.encode(exc.detail).decode()))
    await context.abort(STATUS.get(exc.code, grpc.StatusCode.UNKNOWN), exc.message, tuple(metadata))
    raise AssertionError("context.abort returned")  # it raises AbortError, which ends the call
