"""HPACK (RFC 7541) for the push HTTP/2 client (h2client.py): a stateless encoder for requests and a decoder of
responses that keeps the dynamic table the server's encoder uses.

The encoder keeps no dynamic table: every header a literal without indexing (§6.2.2), its name an index of the
static table where it has one, strings not Huffman-coded; a table size update to 0 opens the first block (and the
next one after the peer changes SETTINGS_HEADER_TABLE_SIZE), so the peer keeps no state for us. A block costs a
few bytes more than with the table, but encoding is a lookup: the encodings of repeated headers (authorization,
topic, content-type) are cached.

The decoder reads what any encoder may send (indexed fields, literals with or without indexing, size updates,
Huffman strings). Decoded Huffman strings are cached by their coded bytes: most response headers repeat (server,
date within a second, content-type), so only the ones that change per response (apns-id) are decoded each time.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable
from typing import Any

from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.hpack import encode_integer
from hpack.huffman_table import HUFFMAN_COMPLETE, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL, HUFFMAN_TABLE
from hpack.table import HeaderTable

_STATIC: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _) in enumerate(_STATIC, start=1):
    _STATIC_NAMES.setdefault(_name, _index)


# A request header: (name, value), an hpack HeaderTuple (NeverIndexedHeaderTuple: not cached), or bytes already
# encoded by literal_block or never_indexed (a fragment of the block, copied as it is).
Header = tuple[str, str] | HeaderTuple | bytes


class HpackError(Exception):
    """A header block that is not valid HPACK (a connection error: COMPRESSION_ERROR)."""


def unindexed(name: str, value: str) -> HeaderTuple:
    """A header sent literally, not added to the HPACK table: for values that change with every request."""
    return NeverIndexedHeaderTuple(name, value)


class _StatelessEncoder:
    """Request header blocks without a dynamic table (see the module docstring)."""

    def __init__(self, max_cached: int = 1024) -> None:
        self._size_update = True
        self._cache: dict[tuple[Any, Any, bool], bytes] = {}
        self._names: dict[tuple[Any, bool], bytes] = {}  # the encoded name part of a literal (bounded by our code)
        self._max_cached = max_cached

    @property
    def header_table_size(self) -> int:
        return 0

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:  # the peer's SETTINGS_HEADER_TABLE_SIZE changed
        self._size_update = True

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        out = [b"\x20"] if self._size_update else []  # dynamic table size update: 0
        self._size_update = False
        cache = self._cache
        for header in headers:
            if header.__class__ is bytes:
                out.append(header)
                continue
            never = isinstance(header, HeaderTuple) and not header.indexable
            key = (header[0], header[1], never)
            encoded = cache.get(key)
            if encoded is None:
                name, value = header[0], header[1]
                prefix = self._names.get((name, never))
                if prefix is None:
                    if len(self._names) >= self._max_cached:
                        self._names.clear()
                    prefix = _name_part(name if isinstance(name, bytes) else name.encode(), never)
                    self._names[name, never] = prefix
                encoded = prefix + _string(value if isinstance(value, bytes) else value.encode())
                if not never:  # never-indexed headers are the ones that change per request: not worth keeping
                    if len(cache) >= self._max_cached:
                        cache.clear()
                    cache[key] = encoded
            out.append(encoded)
        return b"".join(out)


def literal_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """``headers`` encoded once as literals without indexing: a fixed part of many requests' blocks (the encoder
    keeps no table, so a fragment means the same in every block)."""
    return b"".join(_name_part(name.encode(), False) + _string(value.encode()) for name, value in headers)


_NEVER_NAMES: dict[str, bytes] = {}  # names come from our code: a handful


def never_indexed(name: str, value: str) -> bytes:
    """One header encoded as a literal never indexed: for a value that changes with every request."""
    prefix = _NEVER_NAMES.get(name)
    if prefix is None:
        prefix = _NEVER_NAMES[name] = _name_part(name.encode(), True)
    return prefix + _string(value.encode())


def _name_part(name: bytes, never: bool) -> bytes:
    """A literal's first byte(s) and its name: a static table index where it has one, else the name itself."""
    index = _STATIC_NAMES.get(name, 0)
    first = encode_integer(index, 4)
    first[0] |= 0x10 if never else 0x00
    return bytes(first) if index else bytes(first) + _string(name)


def _string(data: bytes) -> bytes:
    """A string literal, not Huffman-coded: its length (a 7-bit prefix integer, §5.1), then its bytes."""
    length = len(data)
    if length < 0x7F:
        return bytes((length,)) + data
    return bytes(encode_integer(length, 7)) + data


class HpackDecoder:
    """Header blocks of one connection's responses, in order (the dynamic table is the connection's state)."""

    def __init__(self, max_table_size: int = 4096, max_cached: int = 4096) -> None:
        self._max_allowed = max_table_size  # what we told the peer (SETTINGS_HEADER_TABLE_SIZE: the default)
        self._max_size = max_table_size
        self._size = 0
        self._table: deque[tuple[bytes, bytes]] = deque()  # newest first: index 62 is _table[0]
        self._huffman: dict[bytes, bytes] = {}
        self._max_cached = max_cached

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The block's (name, value) pairs as bytes; HpackError if it is malformed."""
        out: list[tuple[bytes, bytes]] = []
        pos, end = 0, len(block)
        try:
            while pos < end:
                first = block[pos]
                if first & 0x80:  # indexed field
                    index, pos = _integer(block, pos, 7)
                    out.append(self._entry(index))
                elif first & 0x40:  # literal with incremental indexing
                    index, pos = _integer(block, pos, 6)
                    if index:
                        name = self._entry(index)[0]
                    else:
                        name, pos = self._string(block, pos)
                    value, pos = self._string(block, pos)
                    self._add(name, value)
                    out.append((name, value))
                elif first & 0x20:  # dynamic table size update
                    size, pos = _integer(block, pos, 5)
                    if size > self._max_allowed:
                        raise HpackError(f"table size update to {size} beyond the {self._max_allowed} allowed")
                    self._max_size = size
                    self._evict()
                else:  # literal without indexing (0x00) or never indexed (0x10)
                    index, pos = _integer(block, pos, 4)
                    if index:
                        name = self._entry(index)[0]
                    else:
                        name, pos = self._string(block, pos)
                    value, pos = self._string(block, pos)
                    out.append((name, value))
        except IndexError:
            raise HpackError("header block ends inside a field") from None
        return out

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= len(_STATIC):
            return _STATIC[index - 1]
        dynamic = index - len(_STATIC) - 1
        if index == 0 or dynamic >= len(self._table):
            raise HpackError(f"header index {index} is not in the table")
        return self._table[dynamic]

    def _string(self, block: bytes, pos: int) -> tuple[bytes, int]:
        huffman = block[pos] & 0x80
        length, pos = _integer(block, pos, 7)
        if pos + length > len(block):
            raise HpackError("header block ends inside a string")
        raw = block[pos : pos + length]
        pos += length
        if not huffman:
            return raw, pos
        decoded = self._huffman.get(raw)
        if decoded is None:
            decoded = decode_huffman(raw)
            if len(self._huffman) >= self._max_cached:
                self._huffman.clear()
            self._huffman[raw] = decoded
        return decoded, pos

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        if size > self._max_size:  # §4.4: an entry larger than the table empties it and is not added
            self._table.clear()
            self._size = 0
            return
        self._table.appendleft((name, value))
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max_size and self._table:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + 32


def _integer(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (§5.1) at ``pos``; (value, position after it)."""
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackError("header integer too large")


class _ByteTable:
    """hpack's Huffman decoding state machine (RFC 7541 Appendix B), which reads a nibble per step, composed into
    one step per byte: half the steps, a third of the time. Built on first use (~0.1 s, ~0.7 MB)."""

    def __init__(self) -> None:
        self.next = array("H")  # state << 8 | byte -> the state after it (_FAILED: not a code)
        self.emit: list[bytes] = []  # -> what it decodes to (0, 1 or 2 bytes)
        self.accept = bytearray()  # -> 1 if a string may end there (the padding is a prefix of EOS)
        symbols: dict[bytes, bytes] = {}
        for state in range(256):
            for byte in range(256):
                out = b""
                next_state, flags = state, 0
                for nibble in (byte >> 4, byte & 0x0F):
                    next_state, flags, symbol = HUFFMAN_TABLE[next_state * 16 + nibble]
                    if flags & HUFFMAN_FAIL:
                        next_state = _FAILED
                        break
                    if flags & HUFFMAN_EMIT_SYMBOL:
                        out += bytes((symbol,))
                self.next.append(next_state)
                self.emit.append(symbols.setdefault(out, out))
                self.accept.append(1 if flags & HUFFMAN_COMPLETE else 0)


_FAILED = 0xFFFF
_byte_table: _ByteTable | None = None


def decode_huffman(data: bytes) -> bytes:
    """A Huffman-coded string (RFC 7541 §5.2) decoded; HpackError if it is not a valid one."""
    global _byte_table
    table = _byte_table or _ByteTable()
    _byte_table = table
    following, emit = table.next, table.emit
    out = bytearray()
    state, index = 0, -1
    for byte in data:
        index = state << 8 | byte
        state = following[index]
        if state == _FAILED:
            raise HpackError("bad Huffman string: not a code (or EOS inside it)")
        out += emit[index]
    if index >= 0 and not table.accept[index]:
        raise HpackError("bad Huffman string: its padding is not a prefix of EOS (or longer than 7 bits)")
    return bytes(out)
