"""A lean HTTP/2 client for the push providers that speak it to one origin (APNs, FCM), over asyncio.

httpx over HTTP/2 cost the push worker about 3 ms of CPU per notification (bench/push_worker.py: ~320/s per
CPU-second); the h2 library's state machine, with its events and frame objects, still cost ~250 µs per request.
This client speaks the small part of HTTP/2 (RFC 9113) a request/response client needs itself: one
``asyncio.Protocol`` per connection parses frames straight from the received bytes and hands each response to its
request's future; a request is its HEADERS (a stateless HPACK block, hpack_codec.py, with the repeated headers'
encodings cached) and DATA frames, packed into one write per turn of the event loop with every other request made
meanwhile (one TLS record instead of one per request).

What it does: ``request`` sends one request with a body and returns status, headers and body; connections
(``max_connections``, TLS with ALPN ``h2`` or cleartext h2 with prior knowledge for ``http://``) are opened on
demand and reused, each carrying up to the server's ``MAX_CONCURRENT_STREAMS`` requests at once; flow control is
honoured both ways; PING is answered; a GOAWAY stops new requests on that connection, and requests the server says
it did not process fail with ``H2Error`` like any other lost one. What it does not do: redirects, proxies, cookies,
compression, trailers (read and ignored), server push (disabled in our SETTINGS), priorities, HTTP/1.1.

Every failure without a complete answer — refused, reset (connection or stream), TLS, protocol error, timeout —
raises ``H2Error``; the request may or may not have reached the server.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec

from flare_im.backends.push.hpack_codec import (
    Header,
    HpackDecoder,
    HpackError,
    _StatelessEncoder,
    literal_block,
    never_indexed,
    unindexed,
)

__all__ = [
    "H2Client",
    "H2Error",
    "H2Response",
    "Header",
    "_StatelessEncoder",
    "literal_block",
    "never_indexed",
    "unindexed",
]


class H2Error(Exception):
    """No complete answer (refused, reset, closed, TLS, protocol error, timeout)."""


class _Unprocessed(H2Error):
    """The server says it did not process the request (GOAWAY beyond its last stream, REFUSED_STREAM): safe to
    send again, and ``request`` does, on another connection."""


@dataclass(frozen=True, slots=True)
class H2Response:
    status_code: int
    headers: dict[str, str]  # names lower-case; a repeated header keeps its last value
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError (msgspec.DecodeError) if it is not."""
        return msgspec.json.decode(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


@dataclass(slots=True)
class _Stream:
    done: asyncio.Future[H2Response]
    window: int  # what we may still send on it (the server's stream window)
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    unsent: memoryview | None = None  # request body waiting for flow-control window
    received: int = 0  # DATA bytes not yet given back with a WINDOW_UPDATE


# Frame types and flags (RFC 9113 §6).
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    range(10)
)
_END_STREAM = _ACK = 0x1
_END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x4, 0x8, 0x20
# Settings.
_HEADER_TABLE_SIZE, _ENABLE_PUSH, _MAX_CONCURRENT_STREAMS, _INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE = 1, 2, 3, 4, 5
# Error codes.
_NO_ERROR, _PROTOCOL_ERROR, _FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR, _REFUSED_STREAM, _CANCEL = 0, 1, 3, 6, 7, 8
_COMPRESSION_ERROR = 9

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_MAX_FRAME = 16384  # the frames we accept (SETTINGS_MAX_FRAME_SIZE: the default)
_WINDOW = 1 << 24  # our receive window, per stream and for the connection: answers need no WINDOW_UPDATE
_MAX_WINDOW = (1 << 31) - 1
_MAX_HEADER_BLOCK = 1 << 20  # a header block split over CONTINUATION frames beyond this is an attack
_FRAME_HEADER = struct.Struct(">IBI")  # length << 8 | type, flags, stream id


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _FRAME_HEADER.pack(len(payload) << 8 | kind, flags, stream_id) + payload


class _ProtocolError(Exception):
    """The server broke HTTP/2: the connection ends with GOAWAY ``code``."""

    def __init__(self, message: str, code: int = _PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: frames parsed as they arrive, a future per open stream."""

    def __init__(self, on_free: asyncio.Event) -> None:
        self._encoder = _StatelessEncoder()
        self._decoder = HpackDecoder()
        self._flushing = False
        self._out: list[bytes] = []
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._max_streams = 2**32 + 1  # until the server's SETTINGS says otherwise (as h2 does)
        self._initial_window = 65535  # the server's SETTINGS_INITIAL_WINDOW_SIZE
        self._max_outbound_frame = 16384
        self._window = 65535  # what we may still send on the connection
        self._received = 0  # DATA bytes on the connection not yet given back
        self._continuing: tuple[int, int, list[bytes]] | None = None  # (stream, flags, fragments) of a header block
        self._on_free = on_free  # set whenever a stream ends: a waiting request may go
        self.closed = False  # no new request on this connection (lost, GOAWAY, error)
        # The server's first SETTINGS (its limit of concurrent streams): requests wait for it.
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport
        settings = struct.pack(">HIHIHI", _ENABLE_PUSH, 0, _INITIAL_WINDOW_SIZE, _WINDOW, _MAX_FRAME_SIZE, _MAX_FRAME)
        self._out += [
            _PREFACE,
            _frame(_SETTINGS, 0, 0, settings),
            _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _WINDOW - 65535)),
        ]
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._buffer:  # the rest of a frame that began in an earlier read
            self._buffer += data
            data, self._buffer = bytes(self._buffer), bytearray()
        pos, end = 0, len(data)
        try:
            while end - pos >= 9:
                head, flags, stream_id = _FRAME_HEADER.unpack_from(data, pos)
                length = head >> 8
                if length > _MAX_FRAME:
                    raise _ProtocolError(f"a frame of {length} bytes (at most {_MAX_FRAME})", _FRAME_SIZE_ERROR)
                if end - pos < 9 + length:
                    break
                payload = data[pos + 9 : pos + 9 + length]
                pos += 9 + length
                self._frame_received(head & 0xFF, flags, stream_id & 0x7FFFFFFF, payload)
        except _ProtocolError as exc:
            self._abort(H2Error(f"HTTP/2 protocol error: {exc}"), exc.code)
            return
        if pos < end:
            self._buffer += data[pos:]
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(H2Error(f"connection lost before the server's SETTINGS: {exc!r}"))
            self.ready.exception()  # retrieved: whoever awaits it gets it, nobody else needs to hear of it
        self._fail_all(H2Error(f"connection lost: {exc!r}" if exc else "connection closed"))

    # -- requests

    @property
    def capacity(self) -> int:
        """Requests this connection may still take now."""
        if self.closed:
            return 0
        return self._max_streams - len(self._streams)

    def request(self, headers: Sequence[Header], body: bytes) -> tuple[int, _Stream]:
        stream_id = self._next_stream_id
        if stream_id > 0x7FFFFFFF:
            raise H2Error("no stream ids left on this connection")
        self._next_stream_id += 2
        stream = _Stream(asyncio.get_running_loop().create_future(), self._initial_window)
        block = self._encoder.encode(headers)
        end_stream = 0 if body else _END_STREAM
        size = self._max_outbound_frame
        if len(block) <= size:
            self._out.append(_frame(_HEADERS, _END_HEADERS | end_stream, stream_id, block))
        else:
            self._out.append(_frame(_HEADERS, end_stream, stream_id, block[:size]))
            for at in range(size, len(block), size):
                last = _END_HEADERS if at + size >= len(block) else 0
                self._out.append(_frame(_CONTINUATION, last, stream_id, block[at : at + size]))
        self._streams[stream_id] = stream
        if body:
            stream.unsent = memoryview(body)
            self._send_body(stream_id, stream)
        self._flush()
        return stream_id, stream

    def cancel(self, stream_id: int) -> None:
        """The caller gave up on the stream (timeout, cancellation): reset it."""
        if self._streams.pop(stream_id, None) is None or self.closed:
            return
        self._out.append(_frame(_RST_STREAM, 0, stream_id, struct.pack(">I", _CANCEL)))
        self._flush()
        self._on_free.set()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._out.append(_frame(_GOAWAY, 0, 0, struct.pack(">II", 0, _NO_ERROR)))
            self._write()
            self._transport.close()

    # -- internals

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        data = stream.unsent
        while data:
            size = min(self._window, stream.window, self._max_outbound_frame, len(data))
            if size <= 0:
                break
            last = size == len(data)
            self._out.append(_frame(_DATA, _END_STREAM if last else 0, stream_id, data[:size].tobytes()))
            self._window -= size
            stream.window -= size
            data = data[size:]
        stream.unsent = data if data else None

    def _frame_received(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None:
            if kind != _CONTINUATION or stream_id != self._continuing[0]:
                raise _ProtocolError("a header block was interrupted by another frame")
            fragments = self._continuing[2]
            fragments.append(payload)
            if sum(map(len, fragments)) > _MAX_HEADER_BLOCK:
                raise _ProtocolError("a header block too large")
            if flags & _END_HEADERS:
                stream_id, first_flags, _ = self._continuing
                self._continuing = None
                self._headers_received(stream_id, first_flags, b"".join(fragments))
            return
        if kind == _DATA:
            self._data_received(flags, stream_id, payload)
        elif kind == _HEADERS:
            if not stream_id:
                raise _ProtocolError("HEADERS on stream 0")
            payload = _unpad(flags, payload)
            if flags & _PRIORITY_FLAG:
                payload = payload[5:]
            if flags & _END_HEADERS:
                self._headers_received(stream_id, flags, payload)
            else:
                self._continuing = (stream_id, flags, [payload])
        elif kind == _RST_STREAM:
            if len(payload) != 4 or not stream_id:
                raise _ProtocolError("a malformed RST_STREAM")
            (code,) = struct.unpack(">I", payload)
            stream = self._streams.pop(stream_id, None)
            if stream is not None and not stream.done.done():
                error = _Unprocessed if code == _REFUSED_STREAM else H2Error
                stream.done.set_exception(error(f"stream reset by the server (error code {code})"))
            self._on_free.set()
        elif kind == _SETTINGS:
            if stream_id or len(payload) % 6:
                raise _ProtocolError("a malformed SETTINGS")
            if not flags & _ACK:
                self._settings_received(payload)
        elif kind == _PING:
            if stream_id or len(payload) != 8:
                raise _ProtocolError("a malformed PING")
            if not flags & _ACK:
                self._out.append(_frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            if stream_id or len(payload) < 8:
                raise _ProtocolError("a malformed GOAWAY")
            last, code = struct.unpack_from(">II", payload)
            self._goaway(last & 0x7FFFFFFF, code)
        elif kind == _WINDOW_UPDATE:
            if len(payload) != 4:
                raise _ProtocolError("a malformed WINDOW_UPDATE", _FRAME_SIZE_ERROR)
            self._window_update(stream_id, struct.unpack(">I", payload)[0] & 0x7FFFFFFF)
        elif kind == _PUSH_PROMISE:
            raise _ProtocolError("PUSH_PROMISE although our SETTINGS disabled server push")
        elif kind == _CONTINUATION:
            raise _ProtocolError("CONTINUATION without a header block")
        # PRIORITY and unknown frame types are ignored (§5.5).

    def _headers_received(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            fields = self._decoder.decode(block)  # always: the decoder's table follows every block
        except HpackError as exc:
            raise _ProtocolError(str(exc), _COMPRESSION_ERROR) from None
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if not stream.status:  # the response's headers (not an informational answer, not trailers)
            status, headers = 0, stream.headers
            for name, value in fields:
                if name == b":status":
                    status = int(value) if value.isdigit() else -1
                else:
                    headers[name.decode(errors="replace")] = value.decode(errors="replace")
            if status < 100 or status > 999:
                raise _ProtocolError(f"a response without a valid :status ({status})")
            if status < 200:  # 1xx: a final answer follows
                headers.clear()
            else:
                stream.status = status
        if flags & _END_STREAM:
            self._stream_ended(stream_id)

    def _data_received(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise _ProtocolError("DATA on stream 0")
        length = len(payload)  # padding included: flow control counts it
        data = _unpad(flags, payload)
        self._received += length
        if self._received >= _WINDOW // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received)))
            self._received = 0
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.body += data
        if flags & _END_STREAM:
            self._stream_ended(stream_id)
            return
        stream.received += length
        if stream.received >= _WINDOW // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.received)))
            stream.received = 0

    def _stream_ended(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id)
        if not stream.done.done():
            if stream.status:
                stream.done.set_result(H2Response(stream.status, stream.headers, bytes(stream.body)))
            else:
                stream.done.set_exception(H2Error("the stream ended without a response"))
        if stream.unsent is not None:  # answered before the whole body was sent: the rest is not wanted
            self._out.append(_frame(_RST_STREAM, 0, stream_id, struct.pack(">I", _NO_ERROR)))
        self._on_free.set()

    def _settings_received(self, payload: bytes) -> None:
        for at in range(0, len(payload), 6):
            setting, value = struct.unpack_from(">HI", payload, at)
            if setting == _MAX_CONCURRENT_STREAMS:
                self._max_streams = value
            elif setting == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ProtocolError(f"SETTINGS_INITIAL_WINDOW_SIZE {value}", _FLOW_CONTROL_ERROR)
                delta, self._initial_window = value - self._initial_window, value
                for stream in self._streams.values():
                    stream.window += delta
            elif setting == _MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise _ProtocolError(f"SETTINGS_MAX_FRAME_SIZE {value}")
                self._max_outbound_frame = value
            elif setting == _HEADER_TABLE_SIZE:
                self._encoder.header_table_size = value
        self._out.append(_frame(_SETTINGS, _ACK, 0))
        if not self.ready.done():
            self.ready.set_result(None)
        self._resume_bodies()
        self._on_free.set()  # the limit of concurrent streams may have grown

    def _window_update(self, stream_id: int, increment: int) -> None:
        if not stream_id:
            self._window += increment
            if self._window > _MAX_WINDOW:
                raise _ProtocolError("the connection's flow-control window overflowed", _FLOW_CONTROL_ERROR)
            self._resume_bodies()
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.window += increment
            if stream.unsent is not None:
                self._send_body(stream_id, stream)

    def _resume_bodies(self) -> None:
        for stream_id, stream in self._streams.items():
            if stream.unsent is not None:
                self._send_body(stream_id, stream)

    def _goaway(self, last: int, code: int) -> None:
        """No new streams; those after ``last`` were not seen by the server."""
        self.closed = True
        for stream_id in [s for s in self._streams if s > last]:
            stream = self._streams.pop(stream_id)
            if not stream.done.done():
                stream.done.set_exception(_Unprocessed(f"GOAWAY (error code {code}): not processed"))
        if not self._streams and self._transport is not None:
            self._transport.close()
        self._on_free.set()

    def _flush(self) -> None:
        """Write what is waiting once this turn of the event loop is over: the frames of every request made
        meanwhile go out in one write (one TLS record instead of one per request)."""
        if not self._flushing and self._out:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._flushing = False
        out, self._out = self._out, []
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))

    def _abort(self, exc: H2Error, code: int) -> None:
        self.closed = True
        self._fail_all(exc)
        if self._transport is not None and not self._transport.is_closing():
            self._out.append(_frame(_GOAWAY, 0, 0, struct.pack(">II", 0, code)))  # we accept no streams
            self._write()
            self._transport.abort()

    def _fail_all(self, exc: H2Error) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            if not stream.done.done():
                stream.done.set_exception(exc)
        self._on_free.set()


def _unpad(flags: int, payload: bytes) -> bytes:
    if not flags & _PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ProtocolError("padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


_RESENDS = 3


def _time_out(done: asyncio.Future[H2Response]) -> None:
    if not done.done():
        done.set_exception(TimeoutError())


class H2Client:
    """Requests to one origin (``https://host[:port]`` or ``http://`` for cleartext h2) over up to
    ``max_connections`` HTTP/2 connections, reused: a new one is opened only when every open one is at the
    server's limit of concurrent streams. ``timeout_s`` bounds each request from start to complete answer
    (connecting included)."""

    def __init__(self, url: str, *, ca_file: str = "", timeout_s: float = 10.0, max_connections: int = 4) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"an HTTP/2 origin is https://host[:port]: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._scheme = parts.scheme
        default_port = self._port == (443 if parts.scheme == "https" else 80)
        self._authority = self._host if default_port else f"{self._host}:{self._port}"
        self._pseudo: dict[str, bytes] = {}  # method -> its :method, :scheme and :authority, encoded
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl.create_default_context()
            if ca_file:
                self._ssl.load_verify_locations(cafile=ca_file)
            self._ssl.set_alpn_protocols(["h2"])
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._connections: list[_Connection] = []
        self._connecting = 0
        self._free = asyncio.Event()
        self._closed = False

    async def request(self, method: str, path: str, headers: Sequence[Header] = (), body: bytes = b"") -> H2Response:
        """Send one request; its complete answer, or H2Error. A request the server did not process (GOAWAY,
        REFUSED_STREAM) is sent again, at most ``_RESENDS`` times, within the same timeout."""
        # One deadline for the whole request, resends included: a timer on the answer's future (asyncio.timeout
        # costs ~8 µs a request), and asyncio.timeout_at only while waiting for a connection.
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        try:
            for _ in range(_RESENDS):
                try:
                    return await self._request(method, path, headers, body, deadline)
                except _Unprocessed:
                    continue
            return await self._request(method, path, headers, body, deadline)
        except TimeoutError:
            raise H2Error(f"no answer within {self._timeout_s:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise H2Error(f"{type(exc).__name__}: {exc}") from exc

    async def _request(
        self, method: str, path: str, headers: Sequence[Header], body: bytes, deadline: float
    ) -> H2Response:
        connection = self._open_connection()
        if connection is None:
            async with asyncio.timeout_at(deadline):
                connection = await self._connection()
        fixed = self._pseudo.get(method)
        if fixed is None:
            fixed = self._pseudo[method] = literal_block(
                [(":method", method), (":scheme", self._scheme), (":authority", self._authority)]
            )
        block: list[Header] = [fixed, never_indexed(":path", path)]
        if body:
            block.append(never_indexed("content-length", str(len(body))))
        block += headers
        try:
            stream_id, stream = connection.request(block, body)
        except H2Error:
            connection.closed = True
            raise
        timer = asyncio.get_running_loop().call_at(deadline, _time_out, stream.done)
        try:
            return await stream.done
        finally:
            timer.cancel()
            done = stream.done
            if not done.done() or done.cancelled() or isinstance(done.exception(), TimeoutError):
                connection.cancel(stream_id)  # no answer is coming for us: reset the stream

    def _open_connection(self) -> _Connection | None:
        """The first open connection with room for a request, if there is one (the common case, without waiting)."""
        for connection in self._connections:
            if connection.capacity > 0:
                return connection
        return None

    async def _connection(self) -> _Connection:
        while True:
            if self._closed:
                raise H2Error("client closed")
            self._connections = [c for c in self._connections if not c.closed]
            best = max(self._connections, key=lambda c: c.capacity, default=None)
            if best is not None and best.capacity > 0:
                return best
            if not self._connecting and len(self._connections) < self._max_connections:
                return await self._connect()
            self._free.clear()  # a connection being opened, or every one full: wait for either to change
            await self._free.wait()

    async def _connect(self) -> _Connection:
        self._connecting += 1
        try:
            loop = asyncio.get_running_loop()
            server_hostname = self._host if self._ssl is not None else None
            transport, connection = await loop.create_connection(
                lambda: _Connection(self._free), self._host, self._port, ssl=self._ssl, server_hostname=server_hostname
            )
            if self._ssl is not None:
                ssl_object = transport.get_extra_info("ssl_object")
                if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                    transport.close()
                    raise H2Error(f"{self._authority} does not speak HTTP/2 over TLS (ALPN)")
            try:
                await connection.ready
            except BaseException:
                transport.close()
                raise
            self._connections.append(connection)
            return connection
        finally:
            self._connecting -= 1
            self._free.set()  # requests waiting for this connection go (or try to open one themselves)

    async def aclose(self) -> None:
        self._closed = True
        for connection in self._connections:
            connection.close()
        self._connections = []
        self._free.set()
