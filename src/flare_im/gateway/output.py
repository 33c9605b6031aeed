"""Batched socket writes: frames for one connection queued during a loop iteration go out in one write.

A commit of many messages wakes many sends at once; without batching each ack and each push would be a
write system call of its own. Frames are built here (server frames are never masked, RFC 6455 §5.1),
so a fan-out frame is built once and the same bytes go to every connection.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

_TEXT = 0x81  # FIN + text
_BINARY = 0x82  # FIN + binary


def ws_frame(payload: bytes, binary: bool) -> bytes:
    """A complete unmasked WebSocket data frame carrying ``payload``."""
    first = _BINARY if binary else _TEXT
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


class OutputBatcher:
    """Collects frames per connection and writes each connection's frames once per loop iteration."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[asyncio.WriteTransport, list[bytes], Callable[[], None]]] = {}
        self._scheduled = False

    def queue(self, transport: asyncio.WriteTransport, frame: bytes, after_write: Callable[[], None]) -> None:
        key = id(transport)
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = (transport, [frame], after_write)
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
        else:
            entry[1].append(frame)

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for transport, frames, after_write in pending.values():
            if transport.is_closing():
                continue
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            after_write()

    def flush_one(self, transport: asyncio.WriteTransport) -> None:
        """Write what is queued for ``transport`` now (before a close frame)."""
        entry = self._pending.pop(id(transport), None)
        if entry is not None and not transport.is_closing():
            transport.write(b"".join(entry[1]))
