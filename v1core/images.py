"""Safe image loading for uploads and datasets.

Uploaded files are untrusted: they can be empty, huge, not images at all, truncated, in formats whose PIL
plugins we do not want to run, or decompression bombs (a few KB declaring billions of pixels). Everything
here fails with an :class:`ImageError` whose message a user can act on, *before* expensive work where
possible: the byte size is checked before reading, the format and the pixel count from the header before
decoding, and the decode is forced (``.load()``) so corrupt data fails here rather than later inside the
model. Only local files and in-memory data are read; URL strings are refused, nothing is fetched.

The result is always an RGB image with EXIF orientation applied (phones store rotated pixels plus an
orientation tag; the model must see the picture the user sees), and transparency flattened over white.

Caveats: the DecompressionBombWarning-as-error filter uses ``warnings.catch_warnings``, which is process
global (not thread-safe before Python 3.14); our own header check runs first and is the real guard. If some
other code sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` globally, PIL pads truncated images instead of
failing, and the truncation check here cannot see it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["MAX_PIXELS", "MAX_UPLOAD_BYTES", "ImageError", "LoadedImage", "image_sha256", "load_image"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # decompression-bomb guard: ~ 8000 x 5000, far above what v1 resizes to anyway
DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")

# Phone cameras write multi-picture JPEGs that PIL reports as "MPO"; the first frame is a plain JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_FORMAT_NAMES = {"JPG": "JPEG", "TIF": "TIFF"}  # file-extension spellings accepted in allowed_formats
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


class ImageError(ValueError):
    """The input cannot be used as an image; the message says why in plain words."""


@dataclass
class LoadedImage:
    """A decoded image plus the original bytes, so the upload can be stored and identified by hash."""

    image: Image.Image  # RGB, EXIF orientation applied
    sha256: str  # of the original file bytes
    data: bytes  # original bytes
    format: str  # "PNG"/"JPEG"/"WEBP"/...


def image_sha256(img_or_bytes: bytes | bytearray | memoryview | Image.Image | LoadedImage) -> str:
    """Hex sha256 identifying an image: of the file bytes, or, for a PIL image without bytes, of its PNG
    encoding (lossless, so equal pixels give equal hashes for a given Pillow version)."""
    if isinstance(img_or_bytes, LoadedImage):
        return img_or_bytes.sha256
    if isinstance(img_or_bytes, Image.Image):
        return hashlib.sha256(_png_bytes(img_or_bytes)).hexdigest()
    if isinstance(img_or_bytes, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(img_or_bytes)).hexdigest()
    raise TypeError(f"image_sha256 needs bytes or a PIL image, got {type(img_or_bytes).__name__}")


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _read_path(path: Path, max_bytes: int) -> bytes:
    if not path.exists():
        raise ImageError(f"no such file: {str(path)!r}")
    if not path.is_file():
        raise ImageError(f"{str(path)!r} is not a file")
    size = path.stat().st_size
    if size > max_bytes:  # refuse before reading a byte
        raise ImageError(f"{path.name!r} is {_mb(size)}; the limit is {_mb(max_bytes)}")
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)  # the file may have grown since stat()
    if len(data) > max_bytes:
        raise ImageError(f"{path.name!r} is larger than the {_mb(max_bytes)} limit")
    return data


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"{name} is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,} "
            "(a guard against decompression bombs). Downscale it first."
        )


def _bomb_error(name: str, exc: Exception, max_pixels: int) -> ImageError:
    return ImageError(
        f"{name} declares too many pixels, a possible decompression bomb ({exc}); the limit here is "
        f"{max_pixels:,} pixels. Downscale it first."
    )


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency is composited over white (what a viewer shows)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # PIL's own I;16 -> L conversion clips at 255 instead of scaling, which turns most 16-bit images white.
        arr = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
        elif im.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _finish(im: Image.Image, name: str) -> Image.Image:
    """EXIF orientation, then RGB."""
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not make the image unusable
        pass
    try:
        return _to_rgb(im)
    except (ValueError, OSError) as exc:
        raise ImageError(f"{name} uses colour mode {im.mode!r}, which cannot be converted to RGB ({exc})") from exc


def load_image(
    source: bytes | bytearray | memoryview | str | os.PathLike[str] | Image.Image,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    allowed_formats: Sequence[str] = DEFAULT_FORMATS,
) -> LoadedImage:
    """Read an upload, a local file or a PIL image into an RGB :class:`LoadedImage`, or raise ImageError.

    For a PIL image there are no original bytes: ``data`` is its PNG encoding (as given, before
    conversion), ``format`` is "PNG", and ``max_bytes``/``allowed_formats`` do not apply.
    """
    if isinstance(source, Image.Image):
        return _load_pil(source, max_pixels)

    allowed = tuple(_FORMAT_NAMES.get(f.upper(), f.upper()) for f in allowed_formats)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "the uploaded data"
        if len(data) > max_bytes:
            raise ImageError(f"the uploaded file is {_mb(len(data))}; the limit is {_mb(max_bytes)}")
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if _URL_RE.match(text.strip()):
            raise ImageError(
                f"{text!r} looks like a URL; only local image files are read (nothing is fetched). "
                "Download it and upload the file instead."
            )
        path = Path(text)
        data, name = _read_path(path, max_bytes), repr(path.name)
    else:
        raise TypeError(f"load_image needs bytes, a path or a PIL image, got {type(source).__name__}")

    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")

    im, fmt = _open(data, name, allowed, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()  # force the full decode: truncated/corrupt data fails here, not in the model
            rgb = _finish(im, name)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(name, exc, max_pixels) from exc
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageError(f"{name} is truncated or corrupt; PIL could not decode it ({exc})") from exc
    return LoadedImage(image=rgb, sha256=image_sha256(data), data=data, format=fmt)


def _open(data: bytes, name: str, allowed: tuple[str, ...], max_pixels: int) -> tuple[Image.Image, str]:
    """Parse the header only (no pixel decoding) and check format and pixel count."""
    Image.init()  # register every plugin so that OPEN lists them all
    # MPO needs no entry of its own: the JPEG plugin opens it. Unknown names are simply never matched.
    plugins = [f for f in allowed if f in Image.OPEN]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                # Only the allowed plugins get to parse untrusted bytes.
                im = Image.open(io.BytesIO(data), formats=plugins) if plugins else None
            except UnidentifiedImageError:
                im = None
            if im is None:
                # Identify what it is for a clear message; header parsing only, nothing is decoded.
                try:
                    other = Image.open(io.BytesIO(data))
                except UnidentifiedImageError:
                    raise ImageError(f"{name} is not an image PIL can read") from None
                fmt = _FORMAT_ALIASES.get(other.format or "", other.format or "unknown")
                raise ImageError(
                    f"{name} is a {fmt} image; supported formats are {', '.join(allowed)}"
                )
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(name, exc, max_pixels) from exc
    except Exception as exc:  # a plugin choking on a malformed header
        raise ImageError(f"{name} is truncated or corrupt; PIL could not read its header ({exc})") from exc

    fmt = _FORMAT_ALIASES.get(im.format or "", im.format or "unknown")
    if fmt not in allowed:  # cannot normally happen with formats=..., kept as a second lock
        raise ImageError(f"{name} is a {fmt} image; supported formats are {', '.join(allowed)}")
    _check_pixels(im.width, im.height, max_pixels, name)
    return im, fmt


def _load_pil(img: Image.Image, max_pixels: int) -> LoadedImage:
    name = "the image"
    _check_pixels(img.width, img.height, max_pixels, name)
    try:
        img.load()
    except Exception as exc:  # a lazily opened image can still be truncated
        raise ImageError(f"{name} is truncated or corrupt; PIL could not decode it ({exc})") from exc
    data = _png_bytes(img)
    return LoadedImage(image=_finish(img, name), sha256=image_sha256(data), data=data, format="PNG")
