"""Durations read from headers (services/media_probe.py): WAV, MP4 (moov first or last, mvhd v0 and v1), WebM."""

from __future__ import annotations

import io
import struct
import wave

from flare_im.services.media_probe import probe_duration_ms


def reader(data: bytes, reads: list[tuple[int, int]] | None = None):  # type: ignore[no-untyped-def]
    async def read(start: int, end: int) -> bytes:
        if reads is not None:
            reads.append((start, end))
        return data[start:end]

    return read


async def probe(data: bytes, reads: list[tuple[int, int]] | None = None) -> int | None:
    return await probe_duration_ms(data[: 64 * 1024], len(data), reader(data, reads))


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mvhd(timescale: int, duration: int, version: int = 0) -> bytes:
    if version == 1:
        body = bytes([1, 0, 0, 0]) + struct.pack(">QQIQ", 0, 0, timescale, duration)
    else:
        body = bytes(4) + struct.pack(">IIII", 0, 0, timescale, duration)
    return box(b"mvhd", body + bytes(80))


async def test_wav() -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000 * 3 + b"\0\0" * 4000)  # 3.5 s
    assert await probe(out.getvalue()) == 3500


async def test_mp4_fast_start_and_moov_last() -> None:
    ftyp = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
    moov = box(b"moov", mvhd(1000, 61_250))
    mdat = box(b"mdat", b"\0" * 200_000)
    assert await probe(ftyp + moov + mdat) == 61_250
    reads: list[tuple[int, int]] = []
    assert await probe(ftyp + mdat + moov, reads) == 61_250  # past the head: a few ranged reads
    assert 1 <= len(reads) <= 3
    v1 = box(b"moov", mvhd(90_000, 90_000 * 7200, version=1))
    assert await probe(ftyp + v1 + mdat) == 7_200_000


async def test_webm_duration_and_scale() -> None:
    header = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + b"\x42\x82\x84webm"
    info = b"\x2a\xd7\xb1\x83\x0f\x42\x40" + b"\x44\x89\x88" + struct.pack(">d", 12_345.0)  # scale 1 ms
    assert await probe(header + b"\x15\x49\xa9\x66" + info + bytes(100)) == 12_345
    float32 = b"\x44\x89\x84" + struct.pack(">f", 2_000.0)
    assert await probe(header + float32 + bytes(100)) == 2_000


async def test_unknown_or_broken_is_none() -> None:
    assert await probe(b"ID3" + bytes(1000)) is None  # MP3: not read
    assert await probe(b"RIFF\0\0\0\0WAVEjunk") is None
    ftyp = box(b"ftyp", b"isom")
    assert await probe(ftyp + struct.pack(">I4s", 3, b"bad!")) is None
    assert await probe(b"\x1a\x45\xdf\xa3" + bytes(50)) is None  # WebM without a duration (MediaRecorder)
    assert await probe(ftyp + box(b"moov", mvhd(0, 5))) is None
