"""Sans-I/O codec: bytes in -> typed frames out, frames in -> bytes out. No sockets, no awaits.

Two encodings share one frame model: JSON (WebSocket text frames, the default) and MessagePack
(binary frames, negotiated at connect time). A codec instance is bound to one encoding and one
direction: ``ServerCodec`` decodes client frames and encodes server frames; ``ClientCodec`` the reverse.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

import msgspec

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import ClientFrame, Op, Send, ServerFrame
from flare_im.protocol.values import check_body, obeys_rule

DEFAULT_MAX_FRAME_BYTES = 64 * 1024


class Encoding(StrEnum):
    JSON = "json"
    MSGPACK = "msgpack"

    @property
    def binary(self) -> bool:
        return self is Encoding.MSGPACK

    @classmethod
    def from_name(cls, name: str) -> Encoding:
        try:
            return cls(name.lower())
        except ValueError:
            raise FlareError(ErrorCode.BAD_REQUEST, f"unknown encoding {name!r}") from None


D = TypeVar("D")
E = TypeVar("E")


class _Codec(Generic[D, E]):
    def __init__(self, encoding: Encoding, decode_type: Any, *, max_frame_bytes: int, check_bodies: bool) -> None:
        self.encoding = encoding
        self.max_frame_bytes = max_frame_bytes
        self._check_bodies = check_bodies  # message bodies of client frames obey protocol/values.py
        if encoding is Encoding.MSGPACK:
            self._decoder: Any = msgspec.msgpack.Decoder(decode_type)
            self._encoder: Any = msgspec.msgpack.Encoder()
        else:
            self._decoder = msgspec.json.Decoder(decode_type)
            self._encoder = msgspec.json.Encoder()

    def decode(self, data: bytes | memoryview) -> D:
        """Decode one frame or raise FlareError (400 malformed/unknown type or nested too deeply to read, 413 too
        big, 422 invalid, also a message body that breaks protocol/values.py, naming the bad value)."""
        if len(data) > self.max_frame_bytes:
            raise FlareError(ErrorCode.TOO_LARGE, f"frame of {len(data)} bytes exceeds {self.max_frame_bytes}")
        try:
            frame: Any = self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            text = str(exc)
            if text.endswith("`$.type`") or "missing required field `type`" in text:
                raise FlareError(ErrorCode.BAD_REQUEST, f"unknown or missing frame type: {text}") from None
            raise FlareError(ErrorCode.INVALID, text) from None
        except msgspec.DecodeError as exc:
            raise FlareError(ErrorCode.BAD_REQUEST, f"malformed {self.encoding.value}: {exc}") from None
        except RecursionError:  # msgspec recurses per level, also to skip an unknown field
            raise FlareError(ErrorCode.BAD_REQUEST, f"unreadable {self.encoding.value}: nested too deeply") from None
        # One walk of the body, inline: this is the hot path of every send.
        if self._check_bodies and (type(frame) is Send or type(frame) is Op) and not obeys_rule(frame.body):
            check_body(frame.body)  # raises, naming the bad value
        decoded: D = frame
        return decoded

    def encode(self, frame: E) -> bytes:
        data: bytes = self._encoder.encode(frame)
        return data


class ServerCodec(_Codec[ClientFrame, ServerFrame]):
    def __init__(self, encoding: Encoding = Encoding.JSON, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        super().__init__(encoding, ClientFrame, max_frame_bytes=max_frame_bytes, check_bodies=True)


class ClientCodec(_Codec[ServerFrame, ClientFrame]):
    def __init__(self, encoding: Encoding = Encoding.JSON, *, max_frame_bytes: int = 16 * 1024 * 1024):
        super().__init__(encoding, ServerFrame, max_frame_bytes=max_frame_bytes, check_bodies=False)
