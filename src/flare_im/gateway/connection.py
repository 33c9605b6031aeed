"""One client connection: the per-connection state machine on top of a picows transport.

States: awaiting ``auth`` -> ready -> closed. Frames are decoded by the sans-I/O codec; each request
runs as its own task (so a slow storage commit does not stall the connection), replies echo the
request id. Limits: frame size (transport), a token-bucket rate limit, an auth deadline, and a write
buffer bound past which the connection is closed as a slow consumer (DESIGN: the seq log, not the
socket buffer, is what makes delivery reliable).

A close the server starts (its own, or the transport's 1009) goes out after the replies already queued,
nothing is read or written after it, and the socket lingers until the client closes (gateway/linger.py),
so a client that is still writing sees the close code instead of a reset.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from flare_im.backends.relational.base import SettingsChange
from flare_im.gateway.hub import Hub, encode_for
from flare_im.gateway.linger import LingeringCloser
from flare_im.gateway.output import OutputBatcher, ws_frame
from flare_im.ids import now_ms
from flare_im.netlimits import PeerConnections, peer_address
from flare_im.observability import tracing
from flare_im.observability.logs import log_ids
from flare_im.observability.stats import GatewayStats
from flare_im.protocol.codec import Encoding, ServerCodec
from flare_im.protocol.errors import AccountRefused, CloseCode, ErrorCode, FlareError
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
    ReqId,
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
from flare_im.services.safety import SafetyCache
from flare_im.services.status import StatusService
from flare_im.services.sync import SyncService

log = logging.getLogger(__name__)

# After this many rate-limited frames in a row the client is disconnected rather than answered.
_MAX_RATE_VIOLATIONS = 50
_HELD_BOUND_FACTOR = 4  # bulk bytes held per connection, in send buffers; past it the oldest are dropped


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
    lingering: LingeringCloser = field(default_factory=LingeringCloser)  # sockets of closed connections
    peers: PeerConnections = field(default_factory=lambda: PeerConnections(per_ip=0))  # connections per IP
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)  # requests received, not yet answered
    accepting: bool = True
    stats: GatewayStats = field(default_factory=GatewayStats)  # read by /metrics (observability/metrics.py)
    safety: SafetyCache | None = None  # blocks: a blocked user's presence does not reach the blocker


class _IdOnly(msgspec.Struct):
    id: ReqId | None = None  # an id outside 0 .. 2**63-1 is not echoed: the error then has no id


_peek_json = msgspec.json.Decoder(_IdOnly)
_peek_msgpack = msgspec.msgpack.Decoder(_IdOnly)


def _peek_id(data: bytes, binary: bool) -> int | None:
    try:
        return (_peek_msgpack if binary else _peek_json).decode(data).id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


class ClientConnection(WSListener):
    # Slots: tens of thousands of these live at once, and an idle one should cost little memory.
    __slots__ = (
        "_address",
        "_auth_timer",
        "_authenticating",
        "_binary",
        "_close_timer",
        "_closed",
        "_held",
        "_held_bytes",
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
        self._close_timer: asyncio.TimerHandle | None = None  # bounds how long a close may wait for the client
        self._held: collections.deque[bytes] | None = None  # bulk frames held back while the client is not reading
        self._held_bytes = 0
        self._address: str | None = None  # the peer's IP address while counted in ctx.peers

    # ------------------------------------------------------------------ transport callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self._raw = transport.underlying_transport
        limits = self.ctx.limits
        self._raw.set_write_buffer_limits(high=limits.send_buffer_bytes)
        self.ctx.stats.connections_opened += 1
        address = peer_address(self._raw.get_extra_info("peername"))
        if not self.ctx.peers.acquire(address):
            self._close(CloseCode.TRY_AGAIN_LATER, "too many connections from this address")
            return
        self._address = address
        loop = asyncio.get_running_loop()
        self._auth_timer = loop.call_later(limits.auth_timeout_s, self._auth_deadline)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        if self._transport is not None:
            self.ctx.stats.connections_closed += 1
        if self._address is not None:
            self.ctx.peers.release(self._address)
            self._address = None
        for timer in (self._auth_timer, self._slow_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        handshake = transport.close_handshake
        if self._raw is not None and handshake is not None and handshake.sent is not None and handshake.recv is None:
            # The server closed and the client has not answered yet: it may still be writing. The transport
            # is letting go of the socket (still open during this callback); keep it open until the client
            # closes, so that it reads the close frame instead of a reset.
            sock = self._raw.get_extra_info("socket")
            if sock is not None:
                self.ctx.lingering.linger(sock.fileno())
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
        if self._held is not None:
            self._release_held()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if transport.is_close_frame_sent:  # closing (e.g. the transport's 1009): discard what follows
            return
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
        ctx = self.ctx
        codec = ctx.msgpack_codec if binary else ctx.json_codec
        received = time.perf_counter()
        try:
            frame = codec.decode(data)
        except FlareError as exc:
            self._reply_error(_peek_id(data, binary), exc)
            return
        ctx.stats.frames_in[type(frame)] += 1
        if not self.user:
            if isinstance(frame, Auth) and not self._authenticating:
                self._authenticating = True
                self._spawn(self._authenticate(frame))
            else:
                self._close(CloseCode.PROTOCOL_VIOLATION, "the first frame must be auth")
            return
        if isinstance(frame, Send):
            ctx.router.stages.decode.observe(time.perf_counter() - received)
            send = self._send(frame, received)  # _send handles its own errors
            if tracing.ENABLED and tracing.sampled():
                send = tracing.traced_send(send, self.user, self.device, frame.conv, frame.kind)
            task = asyncio.ensure_future(send)
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
            user = await ctx.auth.authenticate(frame.token)
        except FlareError as exc:
            ctx.stats.auth.add("failed")
            self._reply_error(frame.id, exc)
            self._close(exc.close_code if isinstance(exc, AccountRefused) else CloseCode.AUTH_FAILED, exc.message)
            return
        ctx.stats.auth.add("ok")
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

    async def _send(self, frame: Send, received: float) -> None:
        router = self.ctx.router
        try:
            message, duplicate = await router.send(
                self.user, frame.conv, frame.cmid, frame.kind, frame.body, device=self.device
            )
        except FlareError as exc:
            if tracing.ENABLED:
                tracing.refused(exc.code)
            self._reply_error(frame.id, exc)
            return
        except Exception:
            log.exception(
                "send of %s/%s failed", self.user, self.device, extra=log_ids(self.user, self.device, frame.conv)
            )
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
        router.stages.ack.observe(time.perf_counter() - received)

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
                items = await self.ctx.presence.subscribe_current(self, frame.users)
                if self.ctx.safety is not None:
                    items = [self._unless_blocked(s) for s in items]
                reply = PresenceList(id=frame.id, items=items)
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
            log.exception("request of %s/%s failed", self.user, self.device, extra=log_ids(self.user, self.device))
            self._reply_error(None, FlareError(ErrorCode.INTERNAL, "internal error"))

    # ------------------------------------------------------------------ output

    def push(self, data: bytes) -> None:
        """Send one encoded frame (batched with this iteration's other frames to this connection)."""
        self.push_framed(ws_frame(data, self._binary))

    def push_framed(self, frame: bytes, bulk: bool = False) -> None:
        """Send a complete WebSocket frame (a fan-out frame is built once for all connections). A ``bulk`` one
        waits in this connection's own queue while the client is not reading (services/priority.py)."""
        if self._raw is None or self._closed:
            return
        if bulk and (self._held is not None or self._slow_timer is not None):
            self._hold(frame)
            return
        self.ctx.output.queue(self._raw, frame, self._write)

    def _hold(self, frame: bytes) -> None:
        held = self._held
        if held is None:
            held = self._held = collections.deque()
        held.append(frame)
        self._held_bytes += len(frame)
        stats = self.ctx.stats
        stats.bulk_held += 1
        bound = _HELD_BOUND_FACTOR * self.ctx.limits.send_buffer_bytes
        while self._held_bytes > bound and len(held) > 1:  # the oldest go: the device pulls them by seq
            self._held_bytes -= len(held.popleft())
            stats.bulk_dropped += 1

    def _release_held(self) -> None:
        """The client reads again: write the held frames, a buffer's worth per loop turn while it keeps up."""
        held, raw = self._held, self._raw
        if held is None or raw is None or self._closed:
            self._held, self._held_bytes = None, 0
            return
        if self._slow_timer is not None:  # paused again meanwhile: the next resume goes on
            return
        budget = self.ctx.limits.send_buffer_bytes
        while held and budget > 0:
            frame = held.popleft()
            self._held_bytes -= len(frame)
            budget -= len(frame)
            self.ctx.output.queue(raw, frame, self._write)
        if held:  # after this turn's write, unless that write paused the connection again
            asyncio.get_running_loop().call_soon(self._release_held)
        else:
            self._held, self._held_bytes = None, 0

    def _write(self, data: bytes) -> None:
        """The output batcher's writer: nothing goes out after the close frame."""
        raw, transport = self._raw, self._transport
        if raw is None or transport is None or transport.is_close_frame_sent or raw.is_closing():
            return
        raw.write(data)
        # Already past the mark: past four times it, do not wait out the grace period.
        if self._slow_timer is not None and raw.get_write_buffer_size() > 4 * self.ctx.limits.send_buffer_bytes:
            self._close(CloseCode.SLOW_CONSUMER, "slow consumer")

    def _unless_blocked(self, state: PresenceState) -> PresenceState:
        """A user this one blocks, or who blocks this one, reads as never seen (offline, last seen 0)."""
        safety = self.ctx.safety
        if safety is not None and (safety.blocks(self.user, state.user) or safety.blocks(state.user, self.user)):
            return PresenceState(user=state.user, online=False)
        return state

    def push_presence(self, state: PresenceState) -> None:
        safety = self.ctx.safety
        if safety is not None and (safety.blocks(self.user, state.user) or safety.blocks(state.user, self.user)):
            return  # a block either way: that user's presence no longer reaches here
        self._reply(Presence(user=state.user, online=state.online, last_seen=state.last_seen))

    def _reply(self, frame: ServerFrame) -> None:
        self.ctx.stats.frames_out[type(frame)] += 1
        try:
            data = encode_for(self.encoding, frame)
        except (OverflowError, UnicodeEncodeError, RecursionError, TypeError, ValueError) as exc:
            # Stored bodies are made encodable when read (protocol/values.py): this is a bug, not an input.
            log.warning(
                "%s to %s/%s cannot be encoded: %s",
                type(frame).__name__,
                self.user,
                self.device,
                type(exc).__name__,  # not the exception's text: it may quote the message's body
                extra=log_ids(self.user, self.device),
            )
            req_id = getattr(frame, "id", None)
            error = Error(id=req_id, code=int(ErrorCode.INTERNAL), message="internal error", retryable=True)
            data = encode_for(self.encoding, error)
        self.push_framed(ws_frame(data, self._binary))

    def _reply_error(self, req_id: int | None, exc: FlareError) -> None:
        self.ctx.stats.errors.add(int(exc.code))
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
        self.ctx.stats.closes.add(code)
        self._leave_hub()
        transport = self._transport
        if transport is not None:
            if self._raw is not None:
                self.ctx.output.flush_one(self._raw)  # queued frames (e.g. a kick) go before the close
            transport.send_close(WSCloseCode(code), reason.encode()[:120])
            transport.disconnect()  # after what is queued; then the socket lingers (on_ws_disconnected)
            self._close_timer = asyncio.get_running_loop().call_later(self.ctx.lingering.linger_s, self._give_up)

    def _give_up(self) -> None:
        """The client has not taken the queued frames and the close in time (it is not reading): reset."""
        self._close_timer = None
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.abort()
