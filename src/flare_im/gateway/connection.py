"""One client connection: the per-connection state machine on top of a picows transport.

States: awaiting ``auth`` -> ready -> closed. Frames are decoded by the sans-I/O codec; each request
runs as its own task (so a slow storage commit does not stall the connection), replies echo the
request id. Limits: frame size (transport), a token-bucket rate limit, an auth deadline, and a write
buffer bound past which the connection is closed as a slow consumer (DESIGN: the seq log, not the
socket buffer, is what makes delivery reliable).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from flare_im.backends.relational.base import SettingsChange
from flare_im.gateway.hub import Hub, encode_for
from flare_im.gateway.output import OutputBatcher, ws_frame
from flare_im.ids import now_ms
from flare_im.protocol.codec import Encoding, ServerCodec
from flare_im.protocol.errors import CloseCode, ErrorCode, FlareError
from flare_im.protocol.frames import (
    Ack,
    Auth,
    AuthOk,
    ClientFrame,
    Convs,
    Delivered,
    Error,
    Forward,
    Kick,
    Messages,
    Ok,
    Op,
    Ping,
    Pong,
    Presence,
    PresenceList,
    PresenceState,
    PresenceSub,
    Pull,
    Read,
    Readers,
    ReadersList,
    Send,
    ServerFrame,
    Sync,
    Typing,
    UpdateSettings,
)
from flare_im.services.auth import AuthService
from flare_im.services.content_filter import stored_if_filtered
from flare_im.services.operations import DELETE_FOR_ME, MessageOperations
from flare_im.services.presence import PresenceService
from flare_im.services.router import MessageRouter
from flare_im.services.status import StatusService
from flare_im.services.sync import SyncService

log = logging.getLogger(__name__)

# After this many rate-limited frames in a row the client is disconnected rather than answered.
_MAX_RATE_VIOLATIONS = 50


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    max_frame_bytes: int
    auth_timeout_s: float
    rate_per_s: float
    rate_burst: int
    send_buffer_bytes: int
    slow_consumer_grace_s: float
    heartbeat_s: float


@dataclass(slots=True)
class GatewayContext:
    """What every connection of this node shares."""

    auth: AuthService
    router: MessageRouter
    sync: SyncService
    operations: MessageOperations
    status: StatusService
    presence: PresenceService
    hub: Hub
    limits: GatewayLimits
    json_codec: ServerCodec
    msgpack_codec: ServerCodec
    output: OutputBatcher
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)  # requests received, not yet answered
    accepting: bool = True


class _IdOnly(msgspec.Struct):
    id: int | None = None


_peek_json = msgspec.json.Decoder(_IdOnly)
_peek_msgpack = msgspec.msgpack.Decoder(_IdOnly)


def _peek_id(data: bytes, binary: bool) -> int | None:
    try:
        return (_peek_msgpack if binary else _peek_json).decode(data).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class ClientConnection(WSListener):
    # Slots: tens of thousands of these live at once, and an idle one should cost little memory.
    __slots__ = (
        "_auth_timer",
        "_authenticating",
        "_binary",
        "_closed",
        "_rate_violations",
        "_raw",
        "_slow_timer",
        "_tokens",
        "_tokens_at",
        "_transport",
        "ctx",
        "device",
        "encoding",
        "session",
        "user",
    )

    def __init__(self, ctx: GatewayContext, encoding: Encoding) -> None:
        self.ctx = ctx
        self.encoding = encoding
        self._binary = encoding.binary
        self.user = ""
        self.device = ""
        self.session = ""
        self._transport: WSTransport | None = None
        self._raw: asyncio.WriteTransport | None = None  # the TCP transport under picows
        self._authenticating = False
        self._closed = False
        self._tokens = float(ctx.limits.rate_burst)
        self._tokens_at = time.monotonic()
        self._rate_violations = 0
        self._auth_timer: asyncio.TimerHandle | None = None
        self._slow_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ transport callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self._raw = transport.underlying_transport
        limits = self.ctx.limits
        self._raw.set_write_buffer_limits(high=limits.send_buffer_bytes)
        loop = asyncio.get_running_loop()
        self._auth_timer = loop.call_later(limits.auth_timeout_s, self._auth_deadline)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        for timer in (self._auth_timer, self._slow_timer):
            if timer is not None:
                timer.cancel()
        self._leave_hub()

    def _leave_hub(self) -> None:
        if self.user:
            self.ctx.hub.unregister(self)
            self.ctx.presence.unsubscribe(self)
            self.ctx.presence.disconnected(self.user)

    def pause_writing(self) -> None:
        # Above the write-buffer mark: the client is not reading. Give it a grace period.
        if self._slow_timer is None and not self._closed:
            self._slow_timer = asyncio.get_running_loop().call_later(
                self.ctx.limits.slow_consumer_grace_s, self._close, CloseCode.SLOW_CONSUMER, "slow consumer"
            )

    def resume_writing(self) -> None:
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT or msg_type is WSMsgType.BINARY:
            if not frame.fin:
                self._reply_error(None, FlareError(ErrorCode.BAD_REQUEST, "fragmented frames are not supported"))
                return
            self._on_data(frame.get_payload_as_bytes(), msg_type is WSMsgType.BINARY)
        elif msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    # ------------------------------------------------------------------ frames

    def _on_data(self, data: bytes, binary: bool) -> None:
        if self._closed:
            return
        if not self._take_token():
            self._rate_violations += 1
            if self._rate_violations > _MAX_RATE_VIOLATIONS:
                self._close(CloseCode.RATE_LIMITED, "rate limit exceeded")
            else:
                self._reply_error(_peek_id(data, binary), FlareError(ErrorCode.RATE_LIMITED, "rate limit exceeded"))
            return
        self._rate_violations = 0
        codec = self.ctx.msgpack_codec if binary else self.ctx.json_codec
        try:
            frame = codec.decode(data)
        except FlareError as exc:
            self._reply_error(_peek_id(data, binary), exc)
            return
        if not self.user:
            if isinstance(frame, Auth) and not self._authenticating:
                self._authenticating = True
                self._spawn(self._authenticate(frame))
            else:
                self._close(CloseCode.PROTOCOL_VIOLATION, "the first frame must be auth")
            return
        if isinstance(frame, Send):
            task = asyncio.ensure_future(self._send(frame))  # _send handles its own errors
            self.ctx.in_flight.add(task)
            task.add_done_callback(self.ctx.in_flight.discard)
        elif isinstance(frame, Ping):
            self._reply(Pong(id=frame.id, ts=now_ms()))
        elif isinstance(frame, Auth):
            self._reply_error(frame.id, FlareError(ErrorCode.BAD_REQUEST, "already authenticated"))
        else:
            self._spawn(self._request(frame))

    def _take_token(self) -> bool:
        limits = self.ctx.limits
        now = time.monotonic()
        self._tokens = min(float(limits.rate_burst), self._tokens + (now - self._tokens_at) * limits.rate_per_s)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def _authenticate(self, frame: Auth) -> None:
        ctx = self.ctx
        try:
            if not ctx.accepting:
                raise FlareError(ErrorCode.UNAVAILABLE, "server is shutting down")
            user = ctx.auth.verify_access_token(frame.token)
        except FlareError as exc:
            self._reply_error(frame.id, exc)
            self._close(CloseCode.AUTH_FAILED, exc.message)
            return
        if self._closed:
            return
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.user, self.device, self.session = user, frame.device, uuid.uuid4().hex
        replaced = ctx.hub.register(self)
        if replaced is not None and replaced is not self:
            replaced.kick(CloseCode.REPLACED, "the same device connected again", reconnect=False)
        ctx.presence.connected(user)
        self._reply(
            AuthOk(
                id=frame.id,
                user=user,
                device=frame.device,
                session=self.session,
                server_ts=now_ms(),
                heartbeat_s=ctx.limits.heartbeat_s,
            )
        )

    async def _send(self, frame: Send) -> None:
        try:
            message, duplicate = await self.ctx.router.send(
                self.user, frame.conv, frame.cmid, frame.kind, frame.body, device=self.device
            )
        except FlareError as exc:
            self._reply_error(frame.id, exc)
            return
        except Exception:
            log.exception("send of %s/%s failed", self.user, self.device)
            self._reply_error(frame.id, FlareError(ErrorCode.INTERNAL, "internal error"))
            return
        self._reply(
            Ack(
                id=frame.id,
                conv=message.conv,
                seq=message.seq,
                msg_id=message.msg_id,
                ts=message.ts,
                duplicate=duplicate,
                body=stored_if_filtered(frame.body, message.body),
            )
        )

    async def _request(self, frame: ClientFrame) -> None:
        sync = self.ctx.sync
        reply: ServerFrame
        try:
            if isinstance(frame, Read):
                await sync.mark_read(self.user, self.device, frame.conv, frame.seq)
                reply = Ok(id=frame.id)
            elif isinstance(frame, Delivered):
                await sync.mark_delivered(self.user, self.device, frame.conv, frame.seq)
                reply = Ok(id=frame.id)
            elif isinstance(frame, Sync):
                page = await sync.conversations(
                    self.user, since=frame.since, limit=frame.limit, strategy=frame.strategy, recent=frame.recent
                )
                reply = Convs(id=frame.id, items=page.items, version=page.version, more=page.more)
            elif isinstance(frame, Readers):
                state = await sync.readers(self.user, frame.conv, frame.seq)
                reply = ReadersList(id=frame.id, conv=state.conv, seq=state.seq, read=state.read, unread=state.unread)
            elif isinstance(frame, UpdateSettings):
                change = SettingsChange(frame.pinned, frame.muted, frame.hidden, frame.draft, frame.clear_to)
                settings = await sync.update_settings(self.user, self.device, frame.conv, change)
                reply = msgspec.structs.replace(settings, id=frame.id)
            elif isinstance(frame, PresenceSub):
                reply = PresenceList(id=frame.id, items=await self.ctx.presence.subscribe_current(self, frame.users))
            elif isinstance(frame, Typing):
                await self.ctx.status.typing(self.user, self.device, frame.conv)
                reply = Ok(id=frame.id)
            elif isinstance(frame, Op):
                reply = await self._operate(frame)
            elif isinstance(frame, Forward):
                message, duplicate = await self.ctx.operations.forward(
                    self.user, frame.conv, frame.seqs, frame.to, frame.cmid, title=frame.title, device=self.device
                )
                reply = Ack(
                    id=frame.id,
                    conv=message.conv,
                    seq=message.seq,
                    msg_id=message.msg_id,
                    ts=message.ts,
                    duplicate=duplicate,
                )
            elif isinstance(frame, Pull):
                mp = await sync.messages(
                    self.user, frame.conv, after=frame.after, before=frame.before, limit=frame.limit
                )
                reply = Messages(
                    id=frame.id, conv=mp.conv, items=mp.items, max_seq=mp.max_seq, min_seq=mp.min_seq, more=mp.more
                )
            else:  # pragma: no cover - the codec admits no other frame
                raise FlareError(ErrorCode.BAD_REQUEST, f"unexpected frame {type(frame).__name__}")
        except FlareError as exc:
            self._reply_error(frame.id, exc)
            return
        self._reply(reply)

    async def _operate(self, frame: Op) -> ServerFrame:
        ops = self.ctx.operations
        if frame.op == DELETE_FOR_ME:
            hidden = await ops.hide(self.user, self.device, frame.conv, [frame.target])
            return msgspec.structs.replace(hidden, id=frame.id)
        result = await ops.apply(
            self.user,
            frame.conv,
            frame.op,
            frame.target,
            frame.opid,
            device=self.device,
            body=frame.body,
            base_version=frame.base_version,
            emoji=frame.emoji,
        )
        event = result.event
        return Ack(
            id=frame.id,
            conv=event.conv,
            seq=event.seq,
            msg_id=event.msg_id,
            ts=event.ts,
            duplicate=result.duplicate,
            target=result.target,
            version=result.version,
            body=stored_if_filtered(frame.body, event.body.get("body")) if frame.body else None,
        )

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(self._guard(coro))
        self.ctx.in_flight.add(task)
        task.add_done_callback(self.ctx.in_flight.discard)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except Exception:
            log.exception("request of %s/%s failed", self.user, self.device)
            self._reply_error(None, FlareError(ErrorCode.INTERNAL, "internal error"))

    # ------------------------------------------------------------------ output

    def push(self, data: bytes) -> None:
        """Send one encoded frame (batched with this iteration's other frames to this connection)."""
        self.push_framed(ws_frame(data, self._binary))

    def push_framed(self, frame: bytes) -> None:
        """Send a complete WebSocket frame (a fan-out frame is built once for all connections)."""
        if self._raw is None or self._closed:
            return
        self.ctx.output.queue(self._raw, frame, self._after_write)

    def _after_write(self) -> None:
        # Already past the mark: past four times it, do not wait out the grace period.
        raw = self._raw
        if (
            self._slow_timer is not None
            and raw is not None
            and raw.get_write_buffer_size() > 4 * self.ctx.limits.send_buffer_bytes
        ):
            self._close(CloseCode.SLOW_CONSUMER, "slow consumer")

    def push_presence(self, state: PresenceState) -> None:
        self._reply(Presence(user=state.user, online=state.online, last_seen=state.last_seen))

    def _reply(self, frame: ServerFrame) -> None:
        self.push_framed(ws_frame(encode_for(self.encoding, frame), self._binary))

    def _reply_error(self, req_id: int | None, exc: FlareError) -> None:
        self._reply(
            Error(id=req_id, code=int(exc.code), message=exc.message, retryable=exc.retryable, detail=exc.detail)
        )

    def kick(self, code: int, reason: str, *, reconnect: bool, retry_after_ms: int = 0) -> None:
        if self._closed:
            return
        self.push(
            encode_for(
                self.encoding, Kick(code=code, reason=reason, reconnect=reconnect, retry_after_ms=retry_after_ms)
            )
        )
        self._close(code, reason)

    def _auth_deadline(self) -> None:
        self._auth_timer = None
        if not self.user:
            self._close(CloseCode.AUTH_TIMEOUT, "no auth frame in time")

    def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._leave_hub()
        transport = self._transport
        if transport is not None:
            if self._raw is not None:
                self.ctx.output.flush_one(self._raw)  # queued frames (e.g. a kick) go before the close
            transport.send_close(WSCloseCode(code), reason.encode()[:120])
            transport.disconnect()
