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

Only ``send``, ``reply``, ``forward`` and the operations retry by themselves; every other request is sent
once and raises ``Disconnected`` or ``TimeoutError`` if the connection fails under it. The reference, with
an example per call, is docs/sdk-python.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
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
from flare_im.services import conversations

log = logging.getLogger(__name__)


def direct_conv(a: str, b: str) -> str:
    """The id of the direct conversation of users ``a`` and ``b``, in either order: ``d:`` and the two
    ids in ASCII order (``direct_conv("bob", "alice") == "d:alice:bob"``). There is no create step: the
    first ``send`` to it creates the conversation (both users must exist)."""
    return conversations.direct_conv(a, b)


class Disconnected(ConnectionError):
    """The connection closed before the reply arrived (or there was none). The request may or may not
    have been processed; ``send`` and the operations retry it themselves, with the same idempotency key."""


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
    """One device's WebSocket connection to Flare, for one user.

    ``url`` is a WebSocket URL (``RestClient.gateways()``), ``token`` an access token, ``device`` a stable
    id of this app installation: connecting again with the same user and device replaces the older
    connection (close 4004). Keyword settings: ``encoding`` (JSON text or MessagePack binary frames),
    ``request_timeout`` (seconds to wait for a reply, and for a reconnect before a request gives up),
    ``reconnect`` (reconnect with jittered exponential backoff up to ``max_backoff`` seconds, then
    ``catch_up``), ``platform`` (informational), ``echo_own`` (``messages()`` also yields this device's
    own messages and operation events), ``on_frame`` (called with every frame the server sends, decoded,
    before the client handles it: replies and pushes, including the repeated pushes ``messages()`` drops;
    for counting what arrived on the wire), ``ssl_context`` (for ``wss://`` to a server whose certificate the
    system does not trust, e.g. a private CA). Use ``async with FlareClient(...) as client`` or ``connect()``
    and ``close()``.

    Requests raise ``FlareError`` for an error reply (``code``, ``message``, ``retryable``, ``detail``),
    ``Disconnected`` if the connection drops before the reply, and ``TimeoutError`` after
    ``request_timeout``.
    """

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
        on_frame: Callable[[ServerFrame], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
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
        self.on_frame = on_frame
        self._ssl_context = ssl_context
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
        """Open the WebSocket and authenticate. Returns ``auth_ok`` (``user``, ``session``, ``server_ts``,
        ``heartbeat_s``). Raises ``FlareError`` 401 for a bad or expired token (503 while the server shuts
        down) and ``OSError`` if the server cannot be reached; the first connect is not retried. It does not
        sync: call ``catch_up()`` (or ``sync``/``restore``) for what happened while offline."""
        ok = await self._open()
        return ok

    async def _open(self) -> AuthOk:
        headers = {"Sec-WebSocket-Protocol": f"flare.v1.{self.encoding.value}"}
        transport, _ = await ws_connect(
            lambda: _Listener(self),
            self.url,
            extra_headers=headers,
            ssl_context=self._ssl_context,
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
        """Authenticated and usable now (False while reconnecting and after ``close``)."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (e.g. after a drop, for the reconnect); raises ``TimeoutError``."""
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
        """Send a message to ``conv`` and return the server's ``Ack`` (``seq``, ``msg_id``, ``ts``,
        ``duplicate``; ``body`` when the content filter masked it) once it is stored durably.

        ``text`` makes a text body; otherwise pass ``body`` and ``kind`` (``text``, ``image``, ``file``,
        ``voice``, ``video``, ``location``, ``custom``; docs/protocol.md "send"). ``cmid`` is the idempotency
        key (a new UUID by default). Retried up to ``attempts`` times, with the same ``cmid``, on
        timeouts, disconnects and retryable errors (429, 500, 503), so it is stored once; then the last
        error is raised. Not retried: ``FlareError`` 403, 404, 413, 422, 451."""
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
        """Send ``text`` quoting message ``seq`` of ``conv`` (the server puts a snapshot of it in
        ``body.reply_to``). ``kwargs`` go to ``send`` (``cmid``, ``attempts``); retried like ``send``.
        Raises ``FlareError`` 404 if ``seq`` is not a content message this user can read."""
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
        id, so the op applies once. Returns the ``Ack`` of the operation's event (its own ``seq``) with
        ``target`` and the target's ``version`` afterwards. Retried like ``send``. Errors (``FlareError``,
        not retried): 403, 404, 409 (``detail`` has the current version), 410, 422."""
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
        """Recall message ``seq`` for everyone: its sender within ``recall_window_s`` (default 120 s), a
        group's owner or admins at any time. Returns the event's ``Ack``; see ``operate`` for errors."""
        return await self.operate(conv, seq, "recall", **kwargs)

    async def delete(self, conv: str, seq: int, **kwargs: Any) -> Ack:
        """Delete for everyone (same rules as recall)."""
        return await self.operate(conv, seq, "delete", **kwargs)

    async def edit(self, conv: str, seq: int, text: str, base_version: int, **kwargs: Any) -> Ack:
        """Replace the text of this user's text message ``seq``, made from version ``base_version``.
        Returns the event's ``Ack`` (``version`` is the message's new version). Raises ``FlareError`` 409
        when the message is no longer at ``base_version`` (``detail``: the current ``version``, ``body``,
        ``edited_at``), 410 if it was recalled or deleted, 403 for someone else's message."""
        return await self.operate(conv, seq, "edit", body={"text": text}, base_version=base_version, **kwargs)

    async def react(self, conv: str, seq: int, emoji: str, *, remove: bool = False, **kwargs: Any) -> Ack:
        """Add this user's ``emoji`` reaction to message ``seq`` (``remove=True``: take it back). Returns the
        event's ``Ack``. Raises ``FlareError`` 409 when the reaction is already there (or, removing, is not)."""
        return await self.operate(conv, seq, "unreact" if remove else "react", emoji=emoji, **kwargs)

    async def delete_for_me(self, conv: str, seq: int, *, attempts: int = 8) -> Hidden:
        """Hide message ``seq`` from this user on all of its devices (nobody else is affected; no seq is
        taken). Returns the ``Hidden`` change; the user's other devices get it through ``next_hidden``.
        Retried like ``send`` (up to ``attempts`` times). Raises ``FlareError`` 404 for a seq this user
        cannot read or an event."""
        opid = uuid.uuid4().hex
        reply = await self._retrying(
            lambda: Op(id=next(self._ids), conv=conv, op="delete_for_me", target=seq, opid=opid), attempts
        )
        assert isinstance(reply, Hidden)
        return reply

    async def forward(
        self, conv: str, seqs: list[int], to: str, *, title: str = "", cmid: str | None = None, attempts: int = 8
    ) -> Ack:
        """Copy messages ``seqs`` of ``conv`` into ``to``: one as it is, several merged into one ``merged``
        message titled ``title``. Returns the ``Ack`` of the new message in ``to``; retried like ``send``
        with ``cmid`` (up to ``attempts`` times). Raises ``FlareError`` 403/404 (not a member, not a readable
        content message), 410 (a source was recalled or deleted), 413."""
        key = cmid or uuid.uuid4().hex
        reply = await self._retrying(
            lambda: Forward(id=next(self._ids), conv=conv, seqs=seqs, to=to, cmid=key, title=title), attempts
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
        """Mark everything up to ``seq`` in ``conv`` as read (positions never move back). The user's other
        devices, and in a direct conversation the peer, get a ``Receipt``. Sent once, not retried. Raises
        ``FlareError`` 416 if ``seq`` is beyond the conversation, 403 for a non-member."""
        reply = await self._request(Read(id=next(self._ids), conv=conv, seq=seq))
        assert isinstance(reply, Ok)

    async def delivered(self, conv: str, seq: int) -> None:
        """Report that this device has everything up to ``seq``; in a direct conversation the peer gets a
        ``delivered`` receipt (nothing is pushed in groups). Sent once; errors as for ``read``."""
        reply = await self._request(Delivered(id=next(self._ids), conv=conv, seq=seq))
        assert isinstance(reply, Ok)

    async def readers(self, conv: str, seq: int) -> ReadersList:
        """Who has read message ``seq`` of ``conv``: ``ReadersList.read`` and ``.unread`` (current members,
        without the sender and later joiners). Any member may ask, in groups too. Sent once. Raises
        ``FlareError`` 416 for a seq this user cannot read, 403 for a non-member."""
        reply = await self._request(Readers(id=next(self._ids), conv=conv, seq=seq))
        assert isinstance(reply, ReadersList)
        return reply

    async def watch_presence(self, users: list[str]) -> list[PresenceState]:
        """Watch these users' presence (at most 1000; replaces the previous list, ``[]`` stops); returns
        their current ``PresenceState``s (``user``, ``online``, ``last_seen``). Changes then arrive through
        ``next_presence``. The list belongs to the connection: call it again after a reconnect."""
        reply = await self._request(PresenceSub(id=next(self._ids), users=users))
        assert isinstance(reply, PresenceList)
        return reply.items

    async def next_presence(self, timeout: float = 10.0) -> Presence:
        """The next presence change of a watched user. Raises ``TimeoutError`` after ``timeout`` seconds."""
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
        """Change this user's settings of ``conv``: only the arguments given change. ``draft=""`` clears the
        draft; ``clear_to`` clears the history for this user up to that seq (never moves back). Returns the
        resulting ``ConvSettings``; the user's other devices get it through ``next_settings``. Sent once.
        Raises ``FlareError`` 403, 416 (``clear_to`` beyond the log), 422 (draft over 4096 characters)."""
        frame = UpdateSettings(
            id=next(self._ids), conv=conv, pinned=pinned, muted=muted, hidden=hidden, draft=draft, clear_to=clear_to
        )
        reply = await self._request(frame)
        assert isinstance(reply, ConvSettings)
        return reply

    async def next_settings(self, timeout: float = 10.0) -> ConvSettings:
        """The next settings change made on another of this user's devices; raises ``TimeoutError``."""
        return await asyncio.wait_for(self._settings.get(), timeout)

    async def typing(self, conv: str) -> None:
        """Tell the other members of ``conv`` that this user is typing (ephemeral; the server forwards at
        most one notice per user and conversation every ``typing_interval_s``, 2 s by default; the ones
        in between are answered but not forwarded). Sent once. Raises ``FlareError`` 403 for a non-member."""
        reply = await self._request(Typing(id=next(self._ids), conv=conv))
        assert isinstance(reply, Ok)

    async def next_typing(self, timeout: float = 10.0) -> TypingNotice:
        """The next typing notice (``conv``, ``user``, ``device``) from another member; only the newest
        1000 unread notices are kept. Raises ``TimeoutError`` after ``timeout`` seconds."""
        return await asyncio.wait_for(self._typing.get(), timeout)

    async def ping(self) -> int:
        """Round trip to the server; returns its time in epoch ms."""
        reply = await self._request(Ping(id=next(self._ids)))
        assert isinstance(reply, Pong)
        return reply.ts

    async def sync(self, since: int | None = None, *, page: int = 100, recent: int = 0) -> list[ConvSummary]:
        """Every conversation changed since list version ``since`` (default: the last sync's, 0 at first:
        all of them), following pages of ``page`` entries; with ``recent`` (0-50), each with its newest
        messages. Returns the ``ConvSummary``s in ascending version order (``unread``, ``read_seq``,
        ``max_seq``, ``last``, settings ...) and remembers the new version; ``hidden_seqs`` also go to
        ``next_hidden``. Does not pull messages (``catch_up`` does). Not retried."""
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
        messages in one round trip ("fast" sync), then the rest of the list. Most recent first. The
        ``recent`` messages are only returned, not yielded by ``messages()``. Not retried."""
        reply = await self._request(Sync(id=next(self._ids), limit=first, strategy="fast", recent=recent))
        assert isinstance(reply, Convs)
        head = reply.items
        seen = {c.conv for c in head}
        rest = [c for c in await self.sync(0) if c.conv not in seen] if reply.more else []
        return head + sorted(rest, key=lambda c: c.version, reverse=True)

    async def pull(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 50
    ) -> Messages:
        """One page of ``conv`` (at most ``limit``, 1-500), ascending by seq, messages in their current
        state: with ``after``, the oldest above it; without, the newest (below ``before`` if given).
        ``Messages.more`` says whether more remain in that direction. Sent once. Raises ``FlareError`` 416
        (``after`` beyond ``max_seq``), 410 (below this user's floor; ``detail``: ``min_seq``), 403."""
        reply = await self._request(Pull(id=next(self._ids), conv=conv, after=after, before=before, limit=limit))
        assert isinstance(reply, Messages)
        return reply

    async def history(self, conv: str, *, after: int = 0, page: int = 200) -> list[Message]:
        """Every message of ``conv`` this user may read with seq > ``after``, ascending, pulled in pages of
        ``page``. Errors as for ``pull``."""
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
        """The highest seq of ``conv`` up to which this client has seen every message (0 if none)."""
        return self._convs[conv].contiguous if conv in self._convs else 0

    # ------------------------------------------------------------------ incoming

    async def messages(self) -> AsyncIterator[Message]:
        """Incoming messages and operation events, forever: once each, in seq order per conversation
        (gaps are pulled first). Other users' and this user's other devices' only, unless ``echo_own``."""
        while True:
            yield await self._inbox.get()

    async def next_message(self, timeout: float = 10.0) -> Message:
        """The next item of ``messages()``; raises ``TimeoutError`` after ``timeout`` seconds."""
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def next_receipt(self, timeout: float = 10.0) -> Receipt:
        """The next read or delivered receipt (``conv``, ``user``, ``kind``, ``seq``, ``device``): the peer's,
        or this user's on another device. Receipts are not replayed after a reconnect. Raises
        ``TimeoutError`` after ``timeout`` seconds."""
        return await asyncio.wait_for(self._receipts.get(), timeout)

    def pending_messages(self) -> int:
        """How many messages are queued for ``messages()``/``next_message()``."""
        return self._inbox.qsize()

    def _on_data(self, data: bytes) -> None:
        try:
            frame = self._codec.decode(data)
        except FlareError as exc:
            log.warning("undecodable frame from server: %s", exc)
            return
        if self.on_frame is not None:
            self.on_frame(frame)
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
