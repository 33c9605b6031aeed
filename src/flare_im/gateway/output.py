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
    """Collects frames per connection and writes each connection's frames once per loop iteration.

    ``write`` is the connection's writer: it gets the joined frames and may drop them (a connection whose
    close frame has been sent writes nothing after it)."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[list[bytes], Callable[[bytes], None]]] = {}
        self._scheduled = False

    def queue(self, transport: asyncio.WriteTransport, frame: bytes, write: Callable[[bytes], None]) -> None:
        key = id(transport)
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = ([frame], write)
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
        else:
            entry[0].append(frame)

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for frames, write in pending.values():
            write(frames[0] if len(frames) == 1 else b"".join(frames))

    def flush_one(self, transport: asyncio.WriteTransport) -> None:
        """Write what is queued for ``transport`` now (before a close frame)."""
        entry = self._pending.pop(id(transport), None)
        if entry is not None:
            entry[1](b"".join(entry[0]))
