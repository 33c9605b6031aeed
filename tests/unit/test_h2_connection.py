"""The push HTTP/2 client's connection (backends/push/h2client.py) against the h2 library's server side, in
memory: requests and answers, flow control both ways, header blocks split over CONTINUATION and indexed in the
server's HPACK table, PING, RST_STREAM, GOAWAY, informational answers and protocol errors."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from h2.settings import SettingCodes

from flare_im.backends.push.h2client import H2Error, _Connection, _Stream, _Unprocessed, unindexed


class _Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class _Pair:
    """Our client connection and an h2 server, wired through memory."""

    def __init__(self, **server_settings: int) -> None:
        self.transport = _Transport()
        self.client = _Connection(asyncio.Event())
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.server.initiate_connection()
        if server_settings:  # a second SETTINGS: h2 applies it once the client acknowledged it
            self.server.update_settings({getattr(SettingCodes, k.upper()): v for k, v in server_settings.items()})
        self.events: list[h2.events.Event] = []

    async def start(self) -> None:
        self.client.connection_made(self.transport)  # type: ignore[arg-type]
        await self.exchange()
        assert self.client.ready.done()

    async def exchange(self, chunk: int = 0) -> list[h2.events.Event]:
        """Move bytes both ways until neither side has any to send; the server's events meanwhile."""
        seen: list[h2.events.Event] = []
        for _ in range(10_000):
            await asyncio.sleep(0)  # the client writes once per loop turn
            to_server, to_client = bytes(self.transport.written), self.server.data_to_send()
            self.transport.written.clear()
            if not to_server and not to_client:
                break
            if to_server:
                seen += self.server.receive_data(to_server)
            if to_client:
                step = chunk or len(to_client)
                for at in range(0, len(to_client), step):  # frames cut anywhere: the client reassembles them
                    self.client.data_received(to_client[at : at + step])
        self.events += seen
        return seen

    def request(self, body: bytes = b"", path: str = "/x", extra: list[tuple[str, str]] | None = None) -> _Stream:
        headers: list[Any] = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "fake"),
            unindexed(":path", path),
        ]
        _, stream = self.client.request([*headers, *(extra or [])], body)
        return stream


def _of(kind: type, events: list[h2.events.Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_a_request_and_its_answer() -> None:
    pair = _Pair()
    await pair.start()
    stream = pair.request(b'{"a": 1}', "/3/device/ab", [("apns-topic", "im.flare")])
    events = await pair.exchange()
    [received] = _of(h2.events.RequestReceived, events)
    assert dict(received.headers)[":path"] == "/3/device/ab"
    assert dict(received.headers)["apns-topic"] == "im.flare"
    assert b"".join(e.data for e in _of(h2.events.DataReceived, events)) == b'{"a": 1}'
    assert _of(h2.events.StreamEnded, events)
    sid = received.stream_id
    pair.server.send_headers(sid, [(":status", "200"), ("apns-id", "abc-1")])
    pair.server.send_data(sid, b"part one, ", pad_length=7)
    pair.server.send_data(sid, b"part two", end_stream=True)
    await pair.exchange(chunk=5)
    response = stream.done.result()
    assert (response.status_code, response.headers, response.content) == (
        200,
        {"apns-id": "abc-1"},
        b"part one, part two",
    )


async def test_repeated_headers_indexed_in_the_servers_table_and_a_block_over_continuation() -> None:
    pair = _Pair()
    await pair.start()
    big = "v" * 40_000  # more than a frame: HEADERS and CONTINUATION
    for i in range(5):  # the server's encoder indexes the repeated ones: the client follows its table
        stream = pair.request(b"x")
        [received] = _of(h2.events.RequestReceived, await pair.exchange())
        headers = [(":status", "429" if i % 2 else "200"), ("server", "fake"), ("retry-after", "7"), ("id", f"n{i}")]
        if i == 3:
            headers.append(("x-big", big))
        pair.server.send_headers(received.stream_id, headers, end_stream=True)
        await pair.exchange()
        response = stream.done.result()
        assert response.status_code == (429 if i % 2 else 200)
        expected = {"server": "fake", "retry-after": "7", "id": f"n{i}"} | ({"x-big": big} if i == 3 else {})
        assert response.headers == expected


async def test_a_body_larger_than_the_servers_window_waits_for_window_updates() -> None:
    pair = _Pair(initial_window_size=1000, max_frame_size=16384)
    await pair.start()
    body = bytes(range(256)) * 800  # 204,800 bytes: more than the connection's window of 65,535 too
    stream = pair.request(body)
    received = bytearray()
    for _ in range(1000):
        events = await pair.exchange()
        for event in _of(h2.events.DataReceived, events):
            received += event.data
            pair.server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if _of(h2.events.StreamEnded, events):
            break
    assert bytes(received) == body
    sid = _of(h2.events.RequestReceived, pair.events)[0].stream_id
    pair.server.send_headers(sid, [(":status", "200")], end_stream=True)
    await pair.exchange()
    assert stream.done.result().status_code == 200


async def test_a_large_answer_gives_the_server_window_back() -> None:
    pair = _Pair()
    await pair.start()
    stream = pair.request()
    [received] = _of(h2.events.RequestReceived, await pair.exchange())
    body = b"z" * (9 << 20)  # past half of the client's 16 MiB windows: it sends WINDOW_UPDATE
    pair.server.send_headers(received.stream_id, [(":status", "200")])
    for at in range(0, len(body), 16384):
        pair.server.send_data(received.stream_id, body[at : at + 16384], end_stream=at + 16384 >= len(body))
    events = await pair.exchange()
    assert any(e.stream_id == 0 for e in _of(h2.events.WindowUpdated, events))
    assert stream.done.result().content == body


async def test_ping_is_answered_and_an_informational_answer_is_skipped() -> None:
    pair = _Pair()
    await pair.start()
    pair.server.ping(b"12345678")
    assert [e.ping_data for e in _of(h2.events.PingAckReceived, await pair.exchange())] == [b"12345678"]
    stream = pair.request(b"x")
    [received] = _of(h2.events.RequestReceived, await pair.exchange())
    pair.server.send_headers(received.stream_id, [(":status", "100"), ("x-early", "1")])
    pair.server.send_headers(received.stream_id, [(":status", "410")])
    pair.server.send_data(received.stream_id, b'{"reason":"Unregistered"}', end_stream=True)
    await pair.exchange()
    response = stream.done.result()
    assert (response.status_code, response.headers, response.json()) == (410, {}, {"reason": "Unregistered"})


async def test_a_refused_stream_may_be_sent_again_and_a_reset_one_may_not() -> None:
    pair = _Pair()
    await pair.start()
    refused, reset = pair.request(b"x"), pair.request(b"y")
    first, second = (e.stream_id for e in _of(h2.events.RequestReceived, await pair.exchange()))
    pair.server.reset_stream(first, h2.errors.ErrorCodes.REFUSED_STREAM)
    pair.server.reset_stream(second, h2.errors.ErrorCodes.INTERNAL_ERROR)
    await pair.exchange()
    with pytest.raises(_Unprocessed):
        refused.done.result()
    with pytest.raises(H2Error) as caught:
        reset.done.result()
    assert not isinstance(caught.value, _Unprocessed)
    assert pair.client.capacity > 0
    assert not pair.client.closed


async def test_goaway_fails_the_streams_the_server_did_not_see_and_ends_new_requests() -> None:
    pair = _Pair()
    await pair.start()
    seen, unseen = pair.request(b"x"), pair.request(b"y")
    first, _ = (e.stream_id for e in _of(h2.events.RequestReceived, await pair.exchange()))
    # GOAWAY naming the first stream as the last it saw (written by hand: h2 sends nothing after its GOAWAY).
    pair.client.data_received(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + struct.pack(">II", first, 0))
    assert pair.client.closed
    assert pair.client.capacity == 0
    with pytest.raises(_Unprocessed):
        unseen.done.result()
    assert not seen.done.done()  # the server still answers the one it saw
    pair.server.send_headers(first, [(":status", "200")], end_stream=True)
    await pair.exchange()
    assert seen.done.result().status_code == 200


async def test_a_protocol_error_fails_every_stream_and_drops_the_connection() -> None:
    pair = _Pair()
    await pair.start()
    stream = pair.request(b"x")
    await pair.exchange()
    pair.client.data_received(b"\x01\x00\x00\x00\x00\x00\x00\x00\x01")  # a 64 KiB frame: larger than we allow
    with pytest.raises(H2Error, match="protocol error"):
        stream.done.result()
    assert pair.transport.aborted
    assert pair.client.closed
    assert bytes(pair.transport.written[-17:-8]) == b"\x00\x00\x08\x07\x00\x00\x00\x00\x00"  # GOAWAY on stream 0


async def test_a_bad_header_block_is_a_protocol_error() -> None:
    pair = _Pair()
    await pair.start()
    stream = pair.request(b"x")
    await pair.exchange()
    pair.client.data_received(b"\x00\x00\x01\x01\x05\x00\x00\x00\x01" + b"\xe4")  # index 100: in no table
    with pytest.raises(H2Error, match="header index"):
        stream.done.result()
    assert pair.transport.aborted
