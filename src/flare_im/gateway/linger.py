"""Lingering close: a connection the server closes is not reset while its client is still writing.

Closing a TCP socket whose receive buffer holds unread data makes the kernel send a reset (RST) instead of
a FIN, and a reset makes the client's kernel drop what it has not read yet: the replies sent just before
the close and the WebSocket close frame itself (the client sees 1006, "abnormal closure"). That is exactly
the situation of a server-initiated close: a client over the rate limit (4029) or sending a frame over the
hard limit (1009) is still writing when the server gives up on it.

So the server closes in two steps, as HTTP servers do (Apache's ``lingering_close``): the transport sends
what it has queued, the close frame last, and lets go of its file descriptor; a duplicate of the
descriptor keeps the socket open here, where the write side is shut down (FIN after the queued bytes) and
whatever the client still sends is read and discarded until it closes its side or ``linger_s`` passes.
Only then is the socket closed. The connection (gateway/connection.py) bounds the first step by
``linger_s`` too. What this does not guarantee: a client that does not read what was queued for it, or
does not close, within those times is reset as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

DEFAULT_LINGER_S = 5.0  # how long a closing connection may take to send what is queued, then to close
_READ_BYTES = 65536  # one read of discarded input


class LingeringCloser:
    """Holds the sockets of closed connections until their clients close too (or ``linger_s`` passes)."""

    def __init__(self, *, linger_s: float = DEFAULT_LINGER_S) -> None:
        self.linger_s = linger_s
        self._open: dict[int, tuple[socket.socket, asyncio.TimerHandle]] = {}  # fd -> (socket, deadline)
        self._idle: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._open)

    def linger(self, fd: int) -> None:
        """Take over the socket ``fd`` (call it while ``fd`` is still open; its owner may close it next):
        shut down its write side and drain its input, then close it."""
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:  # already gone
            return
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)  # FIN once the bytes already queued in the kernel are sent
        except OSError:  # the peer is already gone: nothing to wait for
            sock.close()
            return
        loop = asyncio.get_running_loop()
        key = sock.fileno()
        self._open[key] = (sock, loop.call_later(self.linger_s, self._release, key))
        loop.add_reader(key, self._drain, key)

    def _drain(self, key: int) -> None:
        entry = self._open.get(key)
        if entry is None:
            return
        try:
            data = entry[0].recv(_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer: done
            data = b""
        if not data:  # the client closed its side: the socket closes without a reset
            self._release(key)

    def _release(self, key: int) -> None:
        entry = self._open.pop(key, None)
        if entry is None:
            return
        sock, deadline = entry
        deadline.cancel()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(key)
        sock.close()
        if not self._open and self._idle is not None:
            self._idle.set()

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the lingering clients to close, then close the sockets left."""
        if self._open:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        for key in list(self._open):
            self._release(key)
