"""The hub: this node's registry of authenticated connections, user -> device -> connection.

It only registers and looks up; it owns no backend (the node does) and no per-connection state (the
connection does). A frame fanned out to many devices is encoded once per encoding. A frame that cannot be
encoded in one encoding (bodies are checked on the way in, so this is a bug, not an input) is skipped, with a
warning, for the devices on that encoding only: the others still get it, and the skipped ones find the gap by
seq and pull it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import msgspec

from flare_im.gateway.output import ws_frame
from flare_im.observability.stats import Counts
from flare_im.protocol.codec import Encoding
from flare_im.protocol.frames import (
    ConvSettings,
    Hidden,
    Kick,
    Message,
    Msg,
    Receipt,
    ServerFrame,
    TypingNotice,
    msg_from_message,
)
from flare_im.services.priority import is_bulk

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
_UNENCODABLE = b""  # the encoding of a frame that failed to encode: skip the devices on that encoding


class Peer(Protocol):
    """What the hub needs of a connection."""

    user: str
    device: str
    encoding: Encoding

    def push_framed(self, frame: bytes, bulk: bool = False) -> None:
        """Write a complete WebSocket frame (never blocks; a slow peer is disconnected instead). A ``bulk``
        frame may wait behind the others while the peer is not reading (services/priority.py)."""
        ...

    def kick(self, code: int, reason: str, *, reconnect: bool, retry_after_ms: int = 0) -> None: ...


RouteHook = Callable[[str, str, bool], None]  # (user, device, connected?)


class Hub:
    def __init__(self, on_route: RouteHook | None = None) -> None:
        self._on_route = on_route  # the cluster's route table follows connects and disconnects
        # user -> that user's connections. A tuple, not a dict: most users have one or two devices, and
        # an idle connection should cost little memory.
        self._users: dict[str, tuple[Peer, ...]] = {}
        self._count = 0
        self.delivered = Counts()  # frames pushed to local connections, by frame class (read by /metrics)

    def __len__(self) -> int:
        return self._count

    def online_users(self) -> int:
        """How many users have a connected device here."""
        return len(self._users)

    def online(self, user: str) -> bool:
        """Does ``user`` have a connected device here."""
        return user in self._users

    def devices(self, user: str) -> set[str]:
        """The devices of ``user`` connected here."""
        return {p.device for p in self._users.get(user, ())}

    def register(self, peer: Peer) -> Peer | None:
        """Add ``peer``; returns the connection it replaces (same user and device), if any."""
        devices = self._users.get(peer.user, ())
        old = next((p for p in devices if p.device == peer.device), None)
        self._users[peer.user] = (*(p for p in devices if p is not old), peer)
        if old is None:
            self._count += 1
        if self._on_route is not None:
            self._on_route(peer.user, peer.device, True)
        return old

    def unregister(self, peer: Peer) -> None:
        devices = self._users.get(peer.user, ())
        if peer in devices:
            rest = tuple(p for p in devices if p is not peer)
            if rest:
                self._users[peer.user] = rest
            else:
                del self._users[peer.user]
            self._count -= 1
            if self._on_route is not None and not any(p.device == peer.device for p in rest):
                self._on_route(peer.user, peer.device, False)

    def peers(self) -> Iterator[Peer]:
        for devices in list(self._users.values()):
            yield from devices

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: tuple[str, str] | None) -> None:
        self._deliver(uids, msg_from_message(message), skip)

    def deliver_receipt(self, uids: Iterable[str], receipt: Receipt, *, skip: tuple[str, str] | None) -> None:
        self._deliver(uids, receipt, skip)

    def deliver_typing(self, uids: Iterable[str], notice: TypingNotice) -> None:
        self._deliver(uids, notice, None)

    def deliver_settings(self, uid: str, settings: ConvSettings, *, skip: tuple[str, str] | None) -> None:
        self._deliver((uid,), settings, skip)

    def deliver_hidden(self, uid: str, hidden: Hidden, *, skip: tuple[str, str] | None) -> None:
        self._deliver((uid,), hidden, skip)

    def deliver_frame(self, uids: Iterable[str], frame: ServerFrame, skip: tuple[str, str] | None) -> None:
        """Push an already-built frame (one that came from another node over the bus)."""
        self._deliver(uids, frame, skip)

    def _deliver(
        self,
        uids: Iterable[str],
        frame: ServerFrame,
        skip: tuple[str, str] | None,
    ) -> None:
        encoded_json: bytes | None = None
        encoded_msgpack: bytes | None = None
        users = self._users
        pushed = 0
        bulk = is_bulk(frame)
        for uid in uids:
            devices = users.get(uid)
            if not devices:
                continue
            for peer in devices:
                if skip is not None and skip[0] == uid and skip[1] == peer.device:
                    continue
                if peer.encoding is Encoding.JSON:
                    if encoded_json is None:
                        encoded_json = _framed(frame, Encoding.JSON)
                    if encoded_json:
                        peer.push_framed(encoded_json, bulk)
                        pushed += 1
                else:
                    if encoded_msgpack is None:
                        encoded_msgpack = _framed(frame, Encoding.MSGPACK)
                    if encoded_msgpack:
                        peer.push_framed(encoded_msgpack, bulk)
                        pushed += 1
        if pushed:
            self.delivered[type(frame)] += pushed

    def kick_user(self, uid: str, device: str | None, code: int, reason: str, *, reconnect: bool = False) -> int:
        """Send a kick frame to, and close, the connections of ``uid`` here (only ``device`` when given)."""
        n = 0
        for peer in self._users.get(uid, ()):
            if device is None or peer.device == device:
                peer.kick(code, reason, reconnect=reconnect)
                n += 1
        return n

    def kick_all(self, code: int, reason: str, *, retry_after_ms: int) -> int:
        """Tell every connection to reconnect (shutdown); returns how many were told."""
        n = 0
        for peer in self.peers():
            peer.kick(code, reason, reconnect=True, retry_after_ms=retry_after_ms)
            n += 1
        return n


def _framed(frame: ServerFrame, encoding: Encoding) -> bytes:
    """The WebSocket frame of ``frame`` in ``encoding``, or ``_UNENCODABLE`` (logged) when it cannot be encoded."""
    try:
        return ws_frame(encode_for(encoding, frame), encoding.binary)
    except (OverflowError, UnicodeEncodeError, RecursionError, TypeError, ValueError) as exc:
        where = f" {frame.conv}#{frame.seq}" if isinstance(frame, Msg) else ""
        name = type(frame).__name__
        log.warning("%s%s cannot be encoded in %s, not pushed to those devices: %r", name, where, encoding.value, exc)
        return _UNENCODABLE


def encode_for(encoding: Encoding, frame: ServerFrame | Kick) -> bytes:
    return _json.encode(frame) if encoding is Encoding.JSON else _msgpack.encode(frame)
