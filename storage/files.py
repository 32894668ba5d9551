"""Writing export files safely: a file appears complete under its name or not at all.

- `atomic_write(path)`: write to `path.tmp`, rename over `path` when the block succeeds (a failed or interrupted
  export leaves no half-written file, and the previous file stays until the new one is whole);
- `ImageFiles`: the images that exported rows refer to, written once each as `images/<sha256>.<ext>` beside the
  export (or handed back as bytes for embedding).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from .export import ExportReport
    from .store import Store

IMAGE_MODES = ("path", "embed", "none")
IMAGE_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "JPG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                    "TIFF": "tif"}


def check_image_mode(images: str) -> None:
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {', '.join(IMAGE_MODES)}, got {images!r}")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open `path.tmp` for writing (text as UTF-8 unless `mode` has "b") and rename it over `path` when the
    block ends without an error; on an error the temporary file is removed and `path` is untouched. The parent
    folder is created."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(tmp, mode, encoding=None if "b" in mode else "utf-8")
    try:
        yield f
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    f.close()
    os.replace(tmp, path)


class ImageFiles:
    """Writes / embeds the images export rows refer to, each sha256 once; counts written and missing images in
    the export's report."""

    def __init__(self, store: "Store", mode: str, base_dir: Path, report: "ExportReport"):
        check_image_mode(mode)
        self.store, self.mode, self.report = store, mode, report
        self.dir = Path(base_dir) / "images"
        self._written: dict[str, str | None] = {}

    def _fetch(self, sha: str) -> tuple[bytes, str] | None:
        if not sha:
            return None
        try:
            data = self.store.get_image_bytes(sha)
            fmt = self.store.get_image_info(sha).format
        except KeyError:
            return None
        return data, fmt

    def relpath(self, sha: str) -> str | None:
        """`images/<sha>.<ext>` (relative to the export), writing the file the first time."""
        if sha in self._written:
            return self._written[sha]
        got = self._fetch(sha)
        if got is None:
            self.report.images_missing += 1
            self._written[sha] = None
            return None
        data, fmt = got
        name = f"{sha}.{IMAGE_EXTENSIONS.get(fmt.upper(), 'bin')}"
        target = self.dir / name
        if not target.exists():
            with atomic_write(target, "wb") as f:
                f.write(data)
            self.report.images_written += 1
        self._written[sha] = f"images/{name}"
        return self._written[sha]

    def data(self, sha: str) -> tuple[bytes, str] | None:
        """(bytes, format) of the image to embed, or None (counted as missing) when the store lacks it."""
        got = self._fetch(sha)
        if got is None:
            self.report.images_missing += 1
        return got


__all__ = ["IMAGE_EXTENSIONS", "IMAGE_MODES", "ImageFiles", "atomic_write", "check_image_mode"]
