"""Async Python client for Flare's WebSocket protocol (docs/protocol.md), on picows.

What it does for an application:
- connects, authenticates, and (by default) reconnects with backoff, then catches up by sync + pull;
- ``send`` retries on timeout, reconnect and retryable errors with the *same* client message id, so a
  message is stored once however often it is retried;
- ``messages()`` yields other users' (and this user's other devices') messages once each, in seq order
  per conversation: duplicates are dropped by seq, and a push whose seq is ahead of what this client has
  triggers a pull of the gap before anything after the gap is yielded. With ``echo_own`` it yields this
  device's own messages and operation events too, as stored, in the same order (one ordered stream to
  render from; ``sdk.state.ConversationView`` applies it);
- message operations (recall, delete, edit, react, delete for me, forward, reply) retry with the same op id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from flare_im.protocol.codec import ClientCodec, Encoding
from flare_im.protocol.errors import CloseCode, ErrorCode, FlareError
from flare_im.protocol.frames import (
    Ack,
    Auth,
    AuthOk,
    ClientFrame,
    Convs,
    ConvSettings,
    ConvSummary,
    Delivered,
    Error,
    Forward,
    Hidden,
    Kick,
    Message,
    Messages,
    Msg,
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
    Receipt,
    Send,
    ServerFrame,
    Sync,
    Typing,
    TypingNotice,
    UpdateSettings,
    message_from_msg,
)

log = logging.getLogger(__name__)


class Disconnected(ConnectionError):
    """The connection closed before the reply arrived."""


@dataclass(slots=True)
class _ConvState:
    contiguous: int = 0  # every seq <= this has been seen (yielded, or sent by this client)
    ahead: dict[int, Message | None] = field(default_factory=dict)  # seen seqs > contiguous (None: own)
    pulling: bool = False
    wanted: int = 0  # pull at least up to this seq (known to exist: own events, the sync's max seq)


class _Listener(WSListener):
    def __init__(self, client: FlareClient) -> None:
        self._client = client

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            self._client._on_data(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.CLOSE:
            self._client.last_close_code = frame.get_close_code().value
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._client._on_disconnected()


class FlareClient:
    def __init__(
        self,
        url: str,
        token: str,
        device: str,
        *,
        encoding: Encoding = Encoding.JSON,
        request_timeout: float = 10.0,
        reconnect: bool = True,
        max_backoff: float = 5.0,
        platform: str = "python",
        echo_own: bool = False,
    ) -> None:
        self.url = url
        self.token = token
        self.device = device
        self.encoding = encoding
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self._max_backoff = max_backoff
        self._platform = platform
        self.echo_own = echo_own
        self._codec = ClientCodec(encoding)
        self._msg_type = WSMsgType.BINARY if encoding.binary else WSMsgType.TEXT
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ServerFrame]] = {}
        self._transport: WSTransport | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._receipts: asyncio.Queue[Receipt] = asyncio.Queue()
        self._typing: asyncio.Queue[TypingNotice] = asyncio.Queue(maxsize=1000)
        self._presence: asyncio.Queue[Presence] = asyncio.Queue()
        self._settings: asyncio.Queue[ConvSettings] = asyncio.Queue()
        self._hidden: asyncio.Queue[Hidden] = asyncio.Queue()
        self._convs: dict[str, _ConvState] = {}
        self.user = ""
        self.session = ""
        self.version = 0  # conversation-list version of the last sync
        self.last_close_code: int | None = None
        self.last_kick: Kick | None = None
        self.reconnects = 0

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> AuthOk:
        ok = await self._open()
        return ok

    async def _open(self) -> AuthOk:
        headers = {"Sec-WebSocket-Protocol": f"flare.v1.{self.encoding.value}"}
        transport, _ = await ws_connect(
            lambda: _Listener(self),
            self.url,
            extra_headers=headers,
            enable_auto_ping=False,
            max_frame_size=64 * 1024 * 1024,
        )
        self._transport = transport
        self.last_close_code = None
        reply = await self._request(
            Auth(id=next(self._ids), token=self.token, device=self.device, platform=self._platform),
            require_connected=False,
        )
        if not isinstance(reply, AuthOk):  # pragma: no cover - the server sends auth_ok or error
            raise FlareError(ErrorCode.INTERNAL, f"unexpected reply to auth: {reply!r}")
        self.user, self.session = reply.user, reply.session
        self._connected.set()
        return reply

    async def close(self) -> None:
        """Close for good (no reconnect); pending requests fail with Disconnected."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        transport = self._transport
        if transport is not None and not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.wait_disconnected(), 5)
        for task in list(self._tasks):
            task.cancel()
        self._fail_pending()

    async def __aenter__(self) -> FlareClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def drop_connection(self) -> None:
        """Cut the socket without a close handshake (tests: simulate a network failure)."""
        if self._transport is not None:
            self._transport.disconnect(graceful=False)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    def _on_disconnected(self) -> None:
        self._connected.clear()
        self._transport = None
        self._fail_pending()
        kick = self.last_kick
        if self._closing or not self.reconnect or (kick is not None and not kick.reconnect):
            return
        if self.last_close_code in (CloseCode.AUTH_FAILED, CloseCode.REPLACED):
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = (self.last_kick.retry_after_ms / 1000) if self.last_kick else 0.05
        self.last_kick = None
        while not self._closing:
            await asyncio.sleep(delay + random.uniform(0, delay / 2))
            try:
                await self._open()
            except Exception as exc:
                log.debug("reconnect failed: %r", exc)
                delay = min(max(delay * 2, 0.1), self._max_backoff)
                continue
            self.reconnects += 1
            try:
                await self.catch_up()
            except Exception as exc:
                log.debug("catch-up after reconnect failed: %r", exc)
            if self.connected:
                return
            delay = 0.05  # dropped again during the catch-up (this task was still running): go again

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(Disconnected("connection closed"))

    # ------------------------------------------------------------------ requests

    async def _request(
        self, frame: ClientFrame, *, require_connected: bool = True, timeout: float | None = None
    ) -> ServerFrame:
        if require_connected:
            await asyncio.wait_for(self._connected.wait(), timeout or self.request_timeout)
        transport = self._transport
        if transport is None:
            raise Disconnected("not connected")
        fut: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        req_id: int = frame.id
        self._pending[req_id] = fut
        transport.send(self._msg_type, self._codec.encode(frame))
        try:
            reply = await asyncio.wait_for(fut, timeout or self.request_timeout)
        finally:
            self._pending.pop(req_id, None)
        if isinstance(reply, Error):
            raise FlareError(ErrorCode(reply.code), reply.message, retryable=reply.retryable, detail=reply.detail)
        return reply

    async def _retrying(self, make: Any, attempts: int) -> ServerFrame:
        """Send the frame ``make()`` builds (same idempotency key each time) until it is answered."""
        delay = 0.05
        for attempt in range(attempts):
            try:
                return await self._request(make())
            except (TimeoutError, Disconnected) as exc:
                if attempt == attempts - 1:
                    raise
                log.debug("retry after %r", exc)
            except FlareError as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
        raise AssertionError("unreachable")

    async def send(
        self,
        conv: str,
        text: str | None = None,
        *,
        body: dict[str, Any] | None = None,
        kind: str = "text",
        cmid: str | None = None,
        attempts: int = 8,
    ) -> Ack:
        """Send a message and return the server's ack (stored durably). Retries with the same client
        message id on timeouts, disconnects and retryable errors."""
        if body is None:
            body = {"text": text or ""}
        key = cmid or uuid.uuid4().hex
        reply = await self._retrying(
            lambda: Send(id=next(self._ids), conv=conv, cmid=key, body=body, kind=kind), attempts
        )
        assert isinstance(reply, Ack)
        self._own(conv, reply.seq)
        return reply

    async def reply(self, conv: str, seq: int, text: str, **kwargs: Any) -> Ack:
        """Send a text quoting message ``seq`` (the server attaches a snapshot of it)."""
        return await self.send(conv, body={"text": text, "reply_to": {"seq": seq}}, **kwargs)

    async def operate(
        self,
        conv: str,
        seq: int,
        op: str,
        *,
        body: dict[str, Any] | None = None,
        base_version: int | None = None,
        emoji: str | None = None,
        opid: str | None = None,
        attempts: int = 8,
    ) -> Ack:
        """Apply ``op`` (recall, delete, edit, react, unreact) to message ``seq``; a retry reuses the op
        id, so the op applies once. Errors: 403, 404, 409 (``detail`` has the current version), 410."""
        key = opid or uuid.uuid4().hex
        reply = await self._retrying(
            lambda: Op(
                id=next(self._ids),
                conv=conv,
                op=op,  # type: ignore[arg-type]
                target=seq,
                opid=key,
                body=body,
                base_version=base_version,
                emoji=emoji,
            ),
            attempts,
        )
        assert isinstance(reply, Ack)
        self._own(conv, reply.seq)
        return reply

    async def recall(self, conv: str, seq: int, **kwargs: Any) -> Ack:
        return await self.operate(conv, seq, "recall", **kwargs)

    async def delete(self, conv: str, seq: int, **kwargs: Any) -> Ack:
        """Delete for everyone (same rules as recall)."""
        return await self.operate(conv, seq, "delete", **kwargs)

    async def edit(self, conv: str, seq: int, text: str, base_version: int, **kwargs: Any) -> Ack:
        return await self.operate(conv, seq, "edit", body={"text": text}, base_version=base_version, **kwargs)

    async def react(self, conv: str, seq: int, emoji: str, *, remove: bool = False, **kwargs: Any) -> Ack:
        return await self.operate(conv, seq, "unreact" if remove else "react", emoji=emoji, **kwargs)

    async def delete_for_me(self, conv: str, seq: int) -> Hidden:
        """Hide message ``seq`` from this user on all of its devices."""
        opid = uuid.uuid4().hex
        reply = await self._retrying(
            lambda: Op(id=next(self._ids), conv=conv, op="delete_for_me", target=seq, opid=opid), 8
        )
        assert isinstance(reply, Hidden)
        return reply

    async def forward(self, conv: str, seqs: list[int], to: str, *, title: str = "", cmid: str | None = None) -> Ack:
        """Copy messages of ``conv`` into ``to``: one as it is, several merged into one message."""
        key = cmid or uuid.uuid4().hex
        reply = await self._retrying(
            lambda: Forward(id=next(self._ids), conv=conv, seqs=seqs, to=to, cmid=key, title=title), 8
        )
        assert isinstance(reply, Ack)
        self._own(reply.conv, reply.seq)
        return reply

    async def next_hidden(self, timeout: float = 10.0) -> Hidden:
        """Messages this user deleted for itself on another device (pushed, or found by a sync)."""
        return await asyncio.wait_for(self._hidden.get(), timeout)

    def _own(self, conv: str, seq: int) -> None:
        """This device stored event ``seq``: skip it in the stream, or (echo_own) pull it into the stream."""
        if not self.echo_own:
            self._seen(conv, seq, None)
            return
        state = self._convs.setdefault(conv, _ConvState())
        state.wanted = max(state.wanted, seq)
        if seq > state.contiguous and not state.pulling:
            state.pulling = True
            self._spawn(self._fill(conv))

    async def read(self, conv: str, seq: int) -> None:
        reply = await self._request(Read(id=next(self._ids), conv=conv, seq=seq))
        assert isinstance(reply, Ok)

    async def delivered(self, conv: str, seq: int) -> None:
        reply = await self._request(Delivered(id=next(self._ids), conv=conv, seq=seq))
        assert isinstance(reply, Ok)

    async def readers(self, conv: str, seq: int) -> ReadersList:
        """Who has read message ``seq`` of ``conv``."""
        reply = await self._request(Readers(id=next(self._ids), conv=conv, seq=seq))
        assert isinstance(reply, ReadersList)
        return reply

    async def watch_presence(self, users: list[str]) -> list[PresenceState]:
        """Watch these users' presence (replaces the previous list); returns their current states.
        Changes then arrive through ``next_presence``."""
        reply = await self._request(PresenceSub(id=next(self._ids), users=users))
        assert isinstance(reply, PresenceList)
        return reply.items

    async def next_presence(self, timeout: float = 10.0) -> Presence:
        return await asyncio.wait_for(self._presence.get(), timeout)

    async def update_settings(
        self,
        conv: str,
        *,
        pinned: bool | None = None,
        muted: bool | None = None,
        hidden: bool | None = None,
        draft: str | None = None,
        clear_to: int | None = None,
    ) -> ConvSettings:
        """Change this user's settings of ``conv``; the user's other devices get a ``conv_settings`` push."""
        frame = UpdateSettings(
            id=next(self._ids), conv=conv, pinned=pinned, muted=muted, hidden=hidden, draft=draft, clear_to=clear_to
        )
        reply = await self._request(frame)
        assert isinstance(reply, ConvSettings)
        return reply

    async def next_settings(self, timeout: float = 10.0) -> ConvSettings:
        return await asyncio.wait_for(self._settings.get(), timeout)

    async def typing(self, conv: str) -> None:
        """Tell the other members of ``conv`` that this user is typing (ephemeral; the server forwards at
        most one notice per user and conversation every couple of seconds)."""
        reply = await self._request(Typing(id=next(self._ids), conv=conv))
        assert isinstance(reply, Ok)

    async def next_typing(self, timeout: float = 10.0) -> TypingNotice:
        return await asyncio.wait_for(self._typing.get(), timeout)

    async def ping(self) -> int:
        reply = await self._request(Ping(id=next(self._ids)))
        assert isinstance(reply, Pong)
        return reply.ts

    async def sync(self, since: int | None = None, *, page: int = 100, recent: int = 0) -> list[ConvSummary]:
        """Every conversation changed since ``since`` (default: the last sync), following pages; with
        ``recent``, each with its newest messages."""
        version = self.version if since is None else since
        out: list[ConvSummary] = []
        while True:
            reply = await self._request(Sync(id=next(self._ids), since=version, limit=page, recent=recent))
            assert isinstance(reply, Convs)
            out += reply.items
            for item in reply.items:
                if item.hidden_seqs:
                    self._hidden.put_nowait(Hidden(conv=item.conv, seqs=item.hidden_seqs, version=item.version))
            version = max(version, reply.version)
            if not reply.more:
                break
        self.version = max(self.version, version)
        return out

    async def restore(self, *, first: int = 20, recent: int = 20) -> list[ConvSummary]:
        """A new device: the ``first`` most recently active conversations with their ``recent`` newest
        messages in one round trip ("fast" sync), then the rest of the list. Most recent first."""
        reply = await self._request(Sync(id=next(self._ids), limit=first, strategy="fast", recent=recent))
        assert isinstance(reply, Convs)
        head = reply.items
        seen = {c.conv for c in head}
        rest = [c for c in await self.sync(0) if c.conv not in seen] if reply.more else []
        return head + sorted(rest, key=lambda c: c.version, reverse=True)

    async def pull(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 50
    ) -> Messages:
        reply = await self._request(Pull(id=next(self._ids), conv=conv, after=after, before=before, limit=limit))
        assert isinstance(reply, Messages)
        return reply

    async def history(self, conv: str, *, after: int = 0, page: int = 200) -> list[Message]:
        """Every message of ``conv`` this user may read with seq > ``after``, ascending."""
        out: list[Message] = []
        while True:
            reply = await self.pull(conv, after=after, limit=page)
            out += reply.items
            if not reply.more or not reply.items:
                return out
            after = reply.items[-1].seq

    async def catch_up(self) -> list[ConvSummary]:
        """Sync the conversation list and pull every conversation this client is behind on; the
        pulled messages are yielded by ``messages()``."""
        changed = await self.sync()
        for summary in changed:
            state = self._convs.setdefault(summary.conv, _ConvState())
            if not summary.left:
                state.wanted = max(state.wanted, summary.max_seq)
        # Also conversations an earlier catch-up or gap pull did not finish (e.g. cut by a disconnect):
        # the sync above no longer lists them, but this client knows it is behind.
        for conv, state in list(self._convs.items()):
            if state.wanted > state.contiguous or state.ahead:
                await self._fill(conv)
        return changed

    def local_max_seq(self, conv: str) -> int:
        return self._convs[conv].contiguous if conv in self._convs else 0

    # ------------------------------------------------------------------ incoming

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            yield await self._inbox.get()

    async def next_message(self, timeout: float = 10.0) -> Message:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def next_receipt(self, timeout: float = 10.0) -> Receipt:
        return await asyncio.wait_for(self._receipts.get(), timeout)

    def pending_messages(self) -> int:
        return self._inbox.qsize()

    def _on_data(self, data: bytes) -> None:
        try:
            frame = self._codec.decode(data)
        except FlareError as exc:
            log.warning("undecodable frame from server: %s", exc)
            return
        if isinstance(frame, Msg):
            self._seen(frame.conv, frame.seq, message_from_msg(frame))
        elif isinstance(frame, Receipt):
            self._receipts.put_nowait(frame)
        elif isinstance(frame, ConvSettings) and frame.id is None:
            self._settings.put_nowait(frame)
        elif isinstance(frame, Hidden) and frame.id is None:
            self._hidden.put_nowait(frame)
        elif isinstance(frame, Presence):
            self._presence.put_nowait(frame)
        elif isinstance(frame, TypingNotice):
            if self._typing.full():  # nobody reads them: keep the newest
                self._typing.get_nowait()
            self._typing.put_nowait(frame)
        elif isinstance(frame, Kick):
            self.last_kick = frame
        else:
            req_id = getattr(frame, "id", None)
            fut = self._pending.get(req_id) if req_id is not None else None
            if fut is not None and not fut.done():
                fut.set_result(frame)
            elif isinstance(frame, Error):
                log.warning("server error without a pending request: %s %s", frame.code, frame.message)

    def _seen(self, conv: str, seq: int, message: Message | None) -> None:
        state = self._convs.setdefault(conv, _ConvState())
        if seq <= state.contiguous or seq in state.ahead:
            return  # duplicate
        state.ahead[seq] = message
        self._advance(state)
        if state.ahead and not state.pulling:
            state.pulling = True
            self._spawn(self._fill(conv))

    def _advance(self, state: _ConvState) -> None:
        while state.contiguous + 1 in state.ahead:
            state.contiguous += 1
            message = state.ahead.pop(state.contiguous)
            if message is not None:
                self._inbox.put_nowait(message)

    async def _fill(self, conv: str) -> None:
        """Pull from the first missing seq until the gap is closed (or the server has nothing newer)."""
        state = self._convs.setdefault(conv, _ConvState())
        state.pulling = True
        try:
            while True:
                try:
                    reply = await self.pull(conv, after=state.contiguous, limit=200)
                except FlareError as exc:
                    if exc.code != ErrorCode.GONE or not exc.detail:
                        raise
                    # History below min_seq is gone for this user (cleared elsewhere): resume from there.
                    state.contiguous = max(state.contiguous, int(exc.detail["min_seq"]) - 1)
                    continue
                if reply.items and reply.items[0].seq > state.contiguous + 1:
                    state.contiguous = reply.items[0].seq - 1  # below min_seq: not readable by this user
                for m in reply.items:
                    if m.seq > state.contiguous and m.seq not in state.ahead:
                        state.ahead[m.seq] = m
                self._advance(state)
                if not reply.items or (not reply.more and not state.ahead and state.contiguous >= state.wanted):
                    return
        finally:
            state.pulling = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background pull failed: %r", task.exception())
