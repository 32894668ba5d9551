"""Safe image loading: every way an upload can be bad gives a clear ImageError; good ones come out RGB."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v1core.images import MAX_PIXELS, MAX_UPLOAD_BYTES, ImageError, LoadedImage, image_sha256, load_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG whose IHDR declares width x height but carries (almost) no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def rgb_sample() -> Image.Image:
    arr = np.zeros((30, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    return Image.fromarray(arr, "RGB")


# ----------------------------------------------------------------------------- good inputs
def test_defaults() -> None:
    assert MAX_UPLOAD_BYTES == 20 * 1024 * 1024
    assert MAX_PIXELS == 40_000_000
    assert issubclass(ImageError, ValueError)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_allowed_formats_load(fmt: str) -> None:
    data = encode(rgb_sample(), fmt)
    out = load_image(data)
    assert isinstance(out, LoadedImage)
    assert out.format == fmt
    assert out.image.mode == "RGB" and out.image.size == (40, 30)
    assert out.data == data
    assert out.sha256 == hashlib.sha256(data).hexdigest() == image_sha256(data)


def test_load_from_path_and_pathlike(tmp_path: Path) -> None:
    data = encode(rgb_sample(), "PNG")
    p = tmp_path / "pic.png"
    p.write_bytes(data)
    for src in (p, str(p)):
        out = load_image(src)
        assert out.data == data and out.format == "PNG" and out.image.size == (40, 30)


def test_pil_image_input() -> None:
    img = rgb_sample().convert("RGBA")
    out = load_image(img)
    assert out.format == "PNG" and out.image.mode == "RGB"
    assert out.sha256 == image_sha256(img) == hashlib.sha256(out.data).hexdigest()
    assert Image.open(io.BytesIO(out.data)).size == (40, 30)


def test_image_sha256_of_pil_is_png_encoding() -> None:
    img = rgb_sample()
    assert image_sha256(img) == hashlib.sha256(encode(img, "PNG")).hexdigest()
    assert image_sha256(img) == image_sha256(img.copy())  # deterministic


# ----------------------------------------------------------------------------- colour modes
def test_palette_with_transparency_over_white() -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.putpixel((0, 0), 1)
    data = encode(img, "PNG", transparency=0)  # index 0 (black) is transparent
    out = load_image(data).image
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (255, 0, 0)


def test_rgba_alpha_over_white() -> None:
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red
    arr[0, 0, 3] = 255  # opaque
    arr[0, 1, 3] = 0  # transparent
    arr[0, 2, 3] = 128  # half
    out = load_image(encode(Image.fromarray(arr, "RGBA"), "PNG")).image
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 0)) == (255, 255, 255)
    r, g, b = out.getpixel((2, 0))
    assert r == 255 and 120 <= g <= 135 and g == b


def test_la_grayscale_alpha() -> None:
    img = Image.new("LA", (3, 3), (0, 0))
    out = load_image(encode(img, "PNG")).image
    assert out.getpixel((1, 1)) == (255, 255, 255)


def test_grayscale_and_1bit() -> None:
    assert load_image(encode(Image.new("L", (5, 5), 100), "PNG")).image.getpixel((0, 0)) == (100, 100, 100)
    assert load_image(encode(Image.new("1", (5, 5), 1), "PNG")).image.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg() -> None:
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in CMYK
    out = load_image(encode(img, "JPEG", quality=95)).image
    assert out.mode == "RGB"
    r, g, b = out.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_16bit_grayscale_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I")
    data = encode(img, "PNG")
    out = load_image(data).image
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_applied() -> None:
    img = rgb_sample()  # 40 wide, 30 high; left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = load_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95)).image
    assert out.size == (30, 40)
    # after a 90° clockwise rotation the red (left) half is on top
    r, g, b = out.getpixel((15, 5))
    assert r > 200 and b < 60
    r, g, b = out.getpixel((15, 35))
    assert b > 200 and r < 60


# ----------------------------------------------------------------------------- bad inputs
def test_empty_bytes() -> None:
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(p)


def test_too_large_bytes() -> None:
    data = encode(rgb_sample(), "PNG")
    with pytest.raises(ImageError, match="limit"):
        load_image(data, max_bytes=len(data) - 1)


def test_too_large_file_not_read(tmp_path: Path) -> None:
    p = tmp_path / "big.png"
    p.write_bytes(b"\x00" * 2048)
    with pytest.raises(ImageError, match="limit"):
        load_image(p, max_bytes=1024)


def test_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is not an image PIL can read"):
        load_image(b"hello, this is plain text and not a picture")
    p = tmp_path / "notes.txt"
    p.write_text("just text")
    with pytest.raises(ImageError, match=r"'notes.txt' is not an image PIL can read"):
        load_image(p)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    "url", ["http://example.com/a.png", "https://example.com/a.png", "HTTPS://x/y.jpg", "ftp://h/f"]
)
def test_url_is_refused(url: str) -> None:
    with pytest.raises(ImageError, match="nothing is fetched"):
        load_image(url)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt: str) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "RGB")
    data = encode(img, fmt)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_corrupt_png_data() -> None:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "RGB")
    data = bytearray(encode(img, "PNG"))
    idat = data.index(b"IDAT")
    for i in range(idat + 20, idat + 60):
        data[i] ^= 0xFF
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(bytes(data))


def test_unsupported_format() -> None:
    tiff = encode(rgb_sample(), "TIFF")
    with pytest.raises(ImageError, match="TIFF image; supported formats are PNG, JPEG"):
        load_image(tiff)
    jpeg = encode(rgb_sample(), "JPEG")
    with pytest.raises(ImageError, match="JPEG image; supported formats are PNG"):
        load_image(jpeg, allowed_formats=("png",))
    assert load_image(jpeg, allowed_formats=("jpg",)).format == "JPEG"
    assert load_image(tiff, allowed_formats=("TIFF",)).format == "TIFF"


def test_pixel_limit_real_image_checked_before_decoding() -> None:
    big = Image.new("1", (5000, 5000), 0)  # 25M pixels (under PIL's own limit), compresses to a few KB
    data = encode(big, "PNG")
    assert len(data) < 100_000
    with pytest.raises(ImageError, match="5000×5000 = 25,000,000 pixels; the limit is 1,000,000"):
        load_image(data, max_pixels=1_000_000)


def test_real_1bit_bomb_over_pil_limit() -> None:
    big = Image.new("1", (10000, 10000), 0)  # 10^8 pixels, above PIL's warning threshold, a few KB on disk
    data = encode(big, "PNG")
    assert len(data) < 1_000_000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(data)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(data, max_pixels=1_000_000)


def test_pixel_limit_crafted_header() -> None:
    # 7000 x 7000 = 49M: over our 40M default, under PIL's own bomb limit -> our header check fires
    with pytest.raises(ImageError, match="7000×7000"):
        load_image(png_header_only(7000, 7000))


def test_pil_decompression_bomb_error_is_caught() -> None:
    # 100000^2 is far above PIL's own limit: PIL raises DecompressionBombError while parsing the header
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(png_header_only(100_000, 100_000), max_pixels=10**12)


def test_pil_decompression_bomb_warning_is_caught() -> None:
    # between PIL's warning (~89M) and error (~179M) thresholds, with our own limit raised above it
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(png_header_only(side, side), max_pixels=10**12)


def test_pil_input_pixel_limit() -> None:
    with pytest.raises(ImageError, match="pixels"):
        load_image(Image.new("RGB", (100, 100)), max_pixels=5000)


def test_bad_type() -> None:
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


def test_phone_mpo_jpeg_counts_as_jpeg() -> None:
    buf = io.BytesIO()
    rgb_sample().save(buf, format="MPO", save_all=True, append_images=[rgb_sample()])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    out = load_image(buf.getvalue())
    assert out.format == "JPEG" and out.image.size == (40, 30)
