"""The hub: this node's registry of authenticated connections, user -> device -> connection.

It only registers and looks up; it owns no backend (the node does) and no per-connection state (the
connection does). A frame fanned out to many devices is encoded once per encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import msgspec

from flare_im.gateway.output import ws_frame
from flare_im.protocol.codec import Encoding
from flare_im.protocol.frames import Kick, Message, Msg, Receipt, ServerFrame, msg_from_message

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


class Peer(Protocol):
    """What the hub needs of a connection."""

    user: str
    device: str
    encoding: Encoding

    def push_framed(self, frame: bytes) -> None:
        """Write a complete WebSocket frame (never blocks; a slow peer is disconnected instead)."""
        ...

    def kick(self, code: int, reason: str, *, reconnect: bool, retry_after_ms: int = 0) -> None: ...


class Hub:
    def __init__(self) -> None:
        self._users: dict[str, dict[str, Peer]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def register(self, peer: Peer) -> Peer | None:
        """Add ``peer``; returns the connection it replaces (same user and device), if any."""
        devices = self._users.setdefault(peer.user, {})
        old = devices.get(peer.device)
        devices[peer.device] = peer
        if old is None:
            self._count += 1
        return old

    def unregister(self, peer: Peer) -> None:
        devices = self._users.get(peer.user)
        if devices is not None and devices.get(peer.device) is peer:
            del devices[peer.device]
            self._count -= 1
            if not devices:
                del self._users[peer.user]

    def devices(self, user: str) -> list[str]:
        return list(self._users.get(user, ()))

    def peers(self) -> Iterator[Peer]:
        for devices in list(self._users.values()):
            yield from list(devices.values())

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: tuple[str, str] | None) -> None:
        self._deliver(uids, msg_from_message(message), skip)

    def deliver_receipt(self, uids: Iterable[str], receipt: Receipt, *, skip: tuple[str, str] | None) -> None:
        self._deliver(uids, receipt, skip)

    def _deliver(self, uids: Iterable[str], frame: Msg | Receipt, skip: tuple[str, str] | None) -> None:
        encoded_json: bytes | None = None
        encoded_msgpack: bytes | None = None
        users = self._users
        for uid in uids:
            devices = users.get(uid)
            if not devices:
                continue
            for device, peer in list(devices.items()):
                if skip is not None and skip[0] == uid and skip[1] == device:
                    continue
                if peer.encoding is Encoding.JSON:
                    if encoded_json is None:
                        encoded_json = ws_frame(_json.encode(frame), False)
                    peer.push_framed(encoded_json)
                else:
                    if encoded_msgpack is None:
                        encoded_msgpack = ws_frame(_msgpack.encode(frame), True)
                    peer.push_framed(encoded_msgpack)

    def kick_all(self, code: int, reason: str, *, retry_after_ms: int) -> int:
        """Tell every connection to reconnect (shutdown); returns how many were told."""
        n = 0
        for peer in self.peers():
            peer.kick(code, reason, reconnect=True, retry_after_ms=retry_after_ms)
            n += 1
        return n


def encode_for(encoding: Encoding, frame: ServerFrame | Kick) -> bytes:
    return _json.encode(frame) if encoding is Encoding.JSON else _msgpack.encode(frame)
