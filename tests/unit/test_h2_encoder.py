"""The push HTTP/2 client's HPACK encoder (backends/push/h2client.py): what it encodes, a standard decoder reads
back exactly, with no dynamic table on either side."""

from __future__ import annotations

from hpack import Decoder, NeverIndexedHeaderTuple

from flare_im.backends.push.h2client import _StatelessEncoder, literal_block, never_indexed, unindexed

HEADERS = [
    (":method", "POST"),
    (":scheme", "https"),
    (":authority", "api.push.apple.com"),
    unindexed(":path", "/3/device/" + "ab" * 32),
    ("authorization", "bearer " + "x" * 300),  # longer than 127: a multi-byte length
    ("apns-topic", "im.flare.app"),
    ("content-type", "application/json"),
    ("x-not-in-the-static-table", "值"),
]


def _pairs(headers: object) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in headers]  # type: ignore[attr-defined]


def test_blocks_decode_to_the_headers_and_leave_no_table() -> None:
    encoder, decoder = _StatelessEncoder(), Decoder()
    for _ in range(3):  # the cached encodings decode the same as the first ones
        decoded = decoder.decode(encoder.encode(HEADERS))
        assert _pairs(decoded) == [(k, v) for k, v in HEADERS]
        assert len(decoder.header_table.dynamic_entries) == 0
    assert decoder.header_table.maxsize == 0  # the first block set the table size to 0


def test_per_request_headers_are_never_indexed_and_not_cached() -> None:
    encoder, decoder = _StatelessEncoder(), Decoder()
    for i in range(3):
        [path] = decoder.decode(encoder.encode([unindexed(":path", f"/3/device/{i}")]))
        assert isinstance(path, NeverIndexedHeaderTuple)
        assert tuple(path) == (":path", f"/3/device/{i}")
    assert encoder._cache == {}


def test_a_table_size_change_is_acknowledged_in_the_next_block() -> None:
    encoder = _StatelessEncoder()
    assert encoder.encode([(":method", "POST")])[:1] == b"\x20"
    assert encoder.encode([(":method", "POST")])[:1] != b"\x20"
    encoder.header_table_size = 100  # the peer's SETTINGS_HEADER_TABLE_SIZE changed
    block = encoder.encode([(":method", "POST")])
    assert block[:1] == b"\x20"
    assert encoder.header_table_size == 0
    assert _pairs(Decoder().decode(block)) == [(":method", "POST")]


def test_encoded_fragments_decode_as_the_headers_they_stand_for() -> None:
    """literal_block (fixed headers, encoded once) and never_indexed (per request) mixed with plain headers."""
    fixed = literal_block([(":method", "POST"), (":scheme", "https"), ("apns-topic", "im.flare.app")])
    long_id = "i" * 200  # longer than 127: a multi-byte length
    encoder, decoder = _StatelessEncoder(), Decoder()
    for i in range(2):
        block = encoder.encode([fixed, never_indexed(":path", f"/3/device/{i}"), ("content-type", "application/json"),
                                never_indexed("apns-id", long_id), never_indexed("x-值", "值")])  # fmt: skip
        decoded = decoder.decode(block)
        assert _pairs(decoded) == [(":method", "POST"), (":scheme", "https"), ("apns-topic", "im.flare.app"),
                                   (":path", f"/3/device/{i}"), ("content-type", "application/json"),
                                   ("apns-id", long_id), ("x-值", "值")]  # fmt: skip
        assert [isinstance(h, NeverIndexedHeaderTuple) for h in decoded] == [False] * 3 + [True, False, True, True]
        assert len(decoder.header_table.dynamic_entries) == 0
