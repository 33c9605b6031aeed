"""What the server does to an uploaded image (Pillow, in a worker thread): read its dimensions, make a thumbnail
and a blurhash, and remove the EXIF GPS position (on by default: a photo's location is rarely meant to be
shared with a chat).

GPS removal is lossless for JPEG: the EXIF segment (APP1) is rewritten without its GPS directory and spliced
back in place, the image data untouched. Other formats that carry EXIF with GPS (PNG, WebP) are saved again
without it (PNG losslessly; WebP at quality 95). An image is never decoded beyond ``max_pixels`` (a small file
can declare gigapixels: a decompression bomb).
"""

from __future__ import annotations

import io
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import blurhash  # type: ignore[import-untyped]
from PIL import Image, ImageOps, UnidentifiedImageError

from flare_im.protocol.errors import ErrorCode, FlareError

GPS_IFD = 0x8825
ORIENTATION = 0x0112
BLURHASH_SIDE = 32  # the blurhash is computed on an image this small: its 4x3 components need no more


@dataclass(frozen=True, slots=True)
class ImageFacts:
    width: int  # as displayed (EXIF orientation applied)
    height: int
    thumb: bytes
    thumb_mime: str
    thumb_width: int
    thumb_height: int
    blurhash: str
    gps_removed: bool


def process_image(
    path: Path,
    mime: str,
    *,
    thumb_px: int = 320,
    thumb_format: str = "WEBP",
    strip_gps: bool = True,
    max_pixels: int = 50_000_000,
) -> ImageFacts:
    """Inspect the image file at ``path`` (rewritten in place when GPS is removed). FlareError 422 when it is
    not an image Pillow reads, or larger than ``max_pixels``."""
    try:
        with Image.open(path) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise FlareError(ErrorCode.INVALID, f"image of {width}x{height} pixels: over {max_pixels} pixels")
            exif = probe.getexif()
            has_gps = GPS_IFD in exif
            fmt = probe.format or ""
        gps_removed = False
        if strip_gps and has_gps:
            _remove_gps(path, fmt)
            gps_removed = True
        with Image.open(path) as img:
            img.draft("RGB", (thumb_px * 2, thumb_px * 2))  # JPEG: decode at a reduced scale, much faster
            upright = ImageOps.exif_transpose(img)
            shown_w, shown_h = (height, width) if _swaps_axes(exif.get(ORIENTATION)) else (width, height)
            rgb = _flatten(upright)
            thumb = rgb.copy()
            thumb.thumbnail((thumb_px, thumb_px), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            if thumb_format.upper() == "JPEG":
                thumb.save(out, "JPEG", quality=80, optimize=True)
                thumb_mime = "image/jpeg"
            else:
                thumb.save(out, "WEBP", quality=75, method=4)
                thumb_mime = "image/webp"
            small = rgb.copy()
            small.thumbnail((BLURHASH_SIDE, BLURHASH_SIDE), Image.Resampling.BILINEAR)
            raw, w = small.tobytes(), small.width  # RGB, row by row
            rows = [[list(raw[3 * (y * w + x) : 3 * (y * w + x) + 3]) for x in range(w)] for y in range(small.height)]
            x_components, y_components = (4, 3) if small.width >= small.height else (3, 4)
            hash_ = blurhash.encode(rows, x_components, y_components)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise FlareError(ErrorCode.INVALID, f"not a readable {mime} image: {exc}") from None
    return ImageFacts(shown_w, shown_h, out.getvalue(), thumb_mime, thumb.width, thumb.height, hash_, gps_removed)


def _swaps_axes(orientation: object) -> bool:
    return orientation in (5, 6, 7, 8)


def _flatten(img: Image.Image) -> Image.Image:
    """RGB, transparent areas on white (a thumbnail and a blurhash have no alpha)."""
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _remove_gps(path: Path, fmt: str) -> None:
    if fmt == "JPEG" and _splice_jpeg_exif(path):
        return
    with Image.open(path) as img:
        exif = img.getexif()
        del exif[GPS_IFD]
        buffer = io.BytesIO()
        if fmt == "WEBP":
            img.save(buffer, "WEBP", exif=exif.tobytes(), quality=95)
        elif fmt in ("PNG", "JPEG", "TIFF"):
            img.save(buffer, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
        else:
            raise FlareError(ErrorCode.INVALID, f"cannot remove the GPS position from a {fmt} image")
    path.write_bytes(buffer.getvalue())


def _splice_jpeg_exif(path: Path) -> bool:
    """Rewrite the JPEG's EXIF APP1 segment without the GPS directory, the rest of the file byte for byte.
    False when the segment is not found where JPEG puts it (the caller then saves the image again)."""
    data = path.read_bytes()
    if data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no more metadata segments
            return False
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            exif = Image.Exif()
            exif.load(segment[6:])
            if GPS_IFD in exif:
                del exif[GPS_IFD]
            payload = b"Exif\x00\x00" + exif.tobytes()
            if len(payload) + 2 > 0xFFFF:
                return False
            new = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
            tmp = path.with_name(path.name + ".gps")
            with open(tmp, "wb") as out:
                out.write(data[:pos])
                out.write(new)
                out.write(data[pos + 2 + length :])
            shutil.move(tmp, path)
            return True
        pos += 2 + length
    return False
