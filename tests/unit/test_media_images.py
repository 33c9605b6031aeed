"""Image processing of uploads (services/media_images.py): dimensions, thumbnail, blurhash, GPS removal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from flare_im.protocol.errors import FlareError
from flare_im.services.media_images import GPS_IFD, ORIENTATION, process_image

DATE_TIME_ORIGINAL = 0x9003
EXIF_IFD = 0x8769


def photo(path: Path, *, size: tuple[int, int] = (800, 600), orientation: int = 1, gps: bool = True) -> bytes:
    """A JPEG like a phone's: EXIF with orientation, a capture time (Exif IFD) and a GPS position."""
    img = Image.new("RGB", size, (200, 30, 30))
    for x in range(0, size[0], 40):  # some structure, so the image is not one flat colour
        img.paste((20, 20, 200), (x, 0, x + 20, size[1]))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = "2026:12:06 10:00:00"
    if gps:
        exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    img.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path.read_bytes()


def scan_data(jpeg: bytes) -> bytes:
    """The entropy-coded image data (from the start-of-scan marker on)."""
    return jpeg[jpeg.index(b"\xff\xda") :]


def test_jpeg_gps_removed_losslessly(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    original = photo(path)
    facts = process_image(path, "image/jpeg")
    assert facts.gps_removed
    stripped = path.read_bytes()
    assert scan_data(stripped) == scan_data(original)  # the pixels were not re-encoded
    with Image.open(io.BytesIO(stripped)) as img:
        exif = img.getexif()
        assert GPS_IFD not in exif
        assert exif[ORIENTATION] == 1
        assert exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] == "2026:12:06 10:00:00"  # other metadata kept
    assert (facts.width, facts.height) == (800, 600)


def test_thumbnail_and_blurhash(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    photo(path, size=(1600, 900), gps=False)
    before = path.read_bytes()
    facts = process_image(path, "image/jpeg", thumb_px=320)
    assert path.read_bytes() == before  # nothing to remove: the file is untouched
    assert not facts.gps_removed
    assert (facts.thumb_width, facts.thumb_height) == (320, 180)
    assert facts.thumb_mime == "image/webp"
    with Image.open(io.BytesIO(facts.thumb)) as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (320, 180))
    assert len(facts.blurhash) == 4 + 2 * (4 * 3 - 1) + 2  # header, DC and 11 AC components for 4x3
    jpeg = process_image(path, "image/jpeg", thumb_format="JPEG")
    assert jpeg.thumb_mime == "image/jpeg"
    assert jpeg.thumb.startswith(b"\xff\xd8")


def test_orientation_swaps_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    photo(path, size=(800, 600), orientation=6)  # stored landscape, shown portrait
    facts = process_image(path, "image/jpeg", strip_gps=False)
    assert (facts.width, facts.height) == (600, 800)
    assert facts.thumb_height > facts.thumb_width
    with Image.open(path) as img:
        assert GPS_IFD in img.getexif()  # strip_gps=False keeps it


def test_png_with_alpha_and_gps(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    exif = Image.Exif()
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (1.0, 2.0, 3.0)})
    Image.new("RGBA", (50, 40), (0, 255, 0, 128)).save(path, "PNG", exif=exif.tobytes())
    facts = process_image(path, "image/png")
    assert facts.gps_removed
    with Image.open(path) as img:
        assert GPS_IFD not in img.getexif()
        assert img.getpixel((0, 0)) == (0, 255, 0, 128)  # PNG saved again losslessly
    assert (facts.width, facts.height, facts.thumb_width) == (50, 40, 50)


def test_refusals(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    with pytest.raises(FlareError, match="not a readable"):
        process_image(junk, "image/jpeg")
    big = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(big, "PNG")
    with pytest.raises(FlareError, match="over 1000000 pixels"):
        process_image(big, "image/png", max_pixels=1_000_000)
