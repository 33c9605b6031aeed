"""The push HTTP/2 client's HPACK decoder (backends/push/hpack_codec.py): what a standard encoder writes, with its
dynamic table, evictions, size updates and Huffman strings, it reads as the reference decoder does."""

from __future__ import annotations

import random

import pytest
from hpack import Decoder, Encoder
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as reference_huffman

from flare_im.backends.push.hpack_codec import HpackDecoder, HpackError, decode_huffman


def test_blocks_of_a_standard_encoder_decode_as_the_reference_decoder_does() -> None:
    encoder, ours, reference = Encoder(), HpackDecoder(), Decoder()
    for i in range(300):  # ~60 bytes per new entry: the 4,096-byte table evicts many times over
        headers = [(":status", "200"), ("server", "fake"), ("apns-id", f"{i:08d}-0000-4000-8000-{i:012d}")]
        if i % 7 == 0:
            headers.append(("retry-after", str(i)))
        if i == 100:
            encoder.header_table_size = 256  # a size update at the start of the next block
        block = encoder.encode(headers, huffman=i % 3 != 0)
        expected = [(str(k).encode(), str(v).encode()) for k, v in reference.decode(block, raw=False)]
        assert ours.decode(block) == expected == [(k.encode(), v.encode()) for k, v in headers]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x80", "index 0"),  # indexed field 0
        (b"\xbf", "index 63"),  # beyond the static table, the dynamic one empty
        (b"\x3f\xe2\x1f", "table size update"),  # 4,097: more than we allow
        (b"\x40\x05ab", "ends inside a string"),
        (b"\x40\x81\xff", "Huffman"),  # a Huffman string of 8 bits of padding (at most 7 are allowed)
        (b"\xff\xff\xff\xff\xff\xff\x01", "too large"),
    ],
)
def test_malformed_blocks_are_errors(block: bytes, message: str) -> None:
    with pytest.raises(HpackError, match=message):
        HpackDecoder().decode(block)


def test_huffman_strings_decode_as_hpacks_decoder_does_and_fail_where_it_fails() -> None:
    encoder, rng = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH), random.Random(12)
    for _ in range(3000):
        text = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        assert decode_huffman(encoder.encode(text)) == text
    failures = 0
    for _ in range(3000):  # arbitrary bytes: most are not valid Huffman strings (EOS, padding)
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        try:
            expected: bytes | None = reference_huffman(data)
        except HPACKDecodingError:
            expected, failures = None, failures + 1
        try:
            ours: bytes | None = decode_huffman(data)
        except HpackError:
            ours = None
        assert ours == expected, data
    assert 0 < failures < 3000
