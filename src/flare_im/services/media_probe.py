"""The duration of an audio or video upload, where it is cheap to read: from a few headers, never by decoding.

- WAV: the ``fmt `` chunk's byte rate and the ``data`` chunk's size.
- MP4, M4A, MOV (ISO BMFF): the movie header (``moov/mvhd``) timescale and duration. The top-level boxes are
  walked by their sizes; a ``moov`` after the media data (a file not "fast-started") costs one more ranged read
  per box skipped, at most ``MAX_HOPS``.
- WebM, Matroska: the segment info's ``Duration`` and ``TimecodeScale`` elements within the first bytes
  (browsers' MediaRecorder writes no duration: none then).

Anything else (MP3, Ogg, a file these do not recognise): None; the client's ``duration_ms`` is used.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

HEAD_BYTES = 64 * 1024
MAX_HOPS = 8
MAX_DURATION_MS = 7 * 24 * 3600 * 1000  # anything longer is a header we misread

ReadRange = Callable[[int, int], Awaitable[bytes]]  # (start, end exclusive) -> bytes


async def probe_duration_ms(head: bytes, size: int, read: ReadRange) -> int | None:
    """The duration of a file of ``size`` bytes that starts with ``head`` (``read`` fetches other ranges)."""
    try:
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            found = _wav(head)
        elif head[4:8] == b"ftyp":
            found = await _mp4(head, size, read)
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            found = _matroska(head)
        else:
            return None
    except (struct.error, ValueError, IndexError):
        return None
    if found is None or not 0 < found <= MAX_DURATION_MS:
        return None
    return found


def _wav(head: bytes) -> int | None:
    pos, byte_rate, data_size = 12, 0, 0
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk == b"fmt ":
            byte_rate = struct.unpack("<I", head[pos + 16 : pos + 20])[0]
        elif chunk == b"data":
            data_size = length
            break
        pos += 8 + length + (length & 1)
    if not byte_rate or not data_size:
        return None
    return data_size * 1000 // byte_rate


async def _mp4(head: bytes, size: int, read: ReadRange) -> int | None:
    pos, hops = 0, 0
    while pos + 8 <= size:
        header = head[pos : pos + 16] if pos + 16 <= len(head) else await read(pos, min(size, pos + 16))
        if pos + 16 > len(head):
            hops += 1
            if hops > MAX_HOPS:
                return None
        box_size, kind = struct.unpack(">I4s", header[:8])
        header_len = 8
        if box_size == 1:
            box_size = struct.unpack(">Q", header[8:16])[0]
            header_len = 16
        elif box_size == 0:
            box_size = size - pos
        if box_size < header_len:
            return None
        if kind == b"moov":
            end = min(pos + box_size, size)
            moov = head[pos:end] if end <= len(head) else await read(pos, min(end, pos + 4 * 2**20))
            return _mvhd(moov[header_len:])
        pos += box_size
    return None


def _mvhd(moov: bytes) -> int | None:
    pos = 0
    while pos + 8 <= len(moov):
        box_size, kind = struct.unpack(">I4s", moov[pos : pos + 8])
        if kind == b"mvhd":
            body = moov[pos + 8 :]
            if body[0] == 1:  # version 1: 64-bit times
                timescale, duration = struct.unpack(">IQ", body[20:32])
            else:
                timescale, duration = struct.unpack(">II", body[12:20])
            return duration * 1000 // timescale if timescale else None
        if box_size < 8:
            return None
        pos += box_size
    return None


_DURATION = b"\x44\x89"
_TIMECODE_SCALE = b"\x2a\xd7\xb1"


def _matroska(head: bytes) -> int | None:
    at = head.find(_DURATION)
    if at < 0:
        return None
    length = head[at + 2] & 0x7F  # a one-byte EBML size: 0x84 or 0x88
    if head[at + 2] & 0x80 == 0 or length not in (4, 8):
        return None
    raw = head[at + 3 : at + 3 + length]
    ticks = struct.unpack(">f" if length == 4 else ">d", raw)[0]
    scale_ns = 1_000_000
    at = head.find(_TIMECODE_SCALE)
    if at >= 0 and head[at + 3] & 0x80:
        n = head[at + 3] & 0x7F
        scale_ns = int.from_bytes(head[at + 4 : at + 4 + n], "big") or scale_ns
    return int(ticks * scale_ns / 1_000_000)
