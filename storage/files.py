"""The one home for files the store reads or writes on the server's disk (never SQL, never the network).

Writing (exports):
- `atomic_write(path)`: write to `path.tmp`, rename over `path` when the block succeeds (a failed or interrupted
  export leaves no half-written file, and the previous file stays until the new one is whole). It refuses to
  replace a file of an open store (the SQLite database, its `-wal`, `-shm` and `-journal`): `protect_paths`
  registers them, `Store` does so when it opens;
- `check_export_target(path, force=)`: what the CLI checks before an export: never a store file, never a
  directory or device, and an existing file that does not look like an export only with `force`;
- `export_dir()` / `export_path_in(name)`: the one folder ($V1STUDIO_EXPORT_DIR) the browser may write into;
- `ImageFiles`: the images that exported rows refer to, written once each as `images/<sha256>.<ext>` beside the
  export (or handed back as bytes for embedding).

Reading (imports): an imported row's `image` may name a file. Such rows come from files users hand over, so the
reference is untrusted. Threat model: a row may name `../../etc/passwd`, an absolute path, a symlink that leads
out of the import folder, a device (`/dev/zero`, which never ends), a FIFO (which blocks), or a huge file.
`ImageSource` confines every read to its roots (the imported file's folder or an explicit `--images-root`;
for browser uploads only $V1STUDIO_IMPORT_DIR, or nothing at all): the path is resolved with symlinks *before*
anything is opened, a path outside every root is refused with the same message whether or not it exists (no
existence probe), the file is opened without following a final symlink and without blocking, and the open file
must be the regular file that was checked, no larger than `max_bytes` (checked with `fstat` before a byte is
read, and the read stops at the cap anyway).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    from .export import ExportReport
    from .store import Store

IMAGE_MODES = ("path", "embed", "none")
IMPORT_DIR_ENV = "V1STUDIO_IMPORT_DIR"
EXPORT_DIR_ENV = "V1STUDIO_EXPORT_DIR"
MAX_IMAGE_BYTES = 50 * 1024 * 1024  # an image file named by an imported row (v1's largest inputs are a few MB)
EXPORT_SUFFIXES = (".jsonl", ".json", ".parquet")
STORE_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")
IMAGE_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "JPG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                    "TIFF": "tif"}


def check_image_mode(images: str) -> None:
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {', '.join(IMAGE_MODES)}, got {images!r}")


class UnsafePathError(ValueError):
    """A file the studio refuses to read or write; the message says which and why, in one sentence."""


# ----------------------------------------------------------------------------- the store's own files
_protected: set[Path] = set()
_protected_lock = threading.Lock()


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def store_files(db_path: str | os.PathLike) -> list[Path]:
    """The files of a SQLite database: the file itself, its `-wal`, `-shm` and `-journal`."""
    real = _real(db_path)
    return [real.with_name(real.name + suffix) for suffix in STORE_FILE_SUFFIXES]


def protect_paths(paths: Iterable[str | os.PathLike]) -> None:
    """Register files that no export may replace (an open store's database files)."""
    with _protected_lock:
        _protected.update(_real(p) for p in paths)


def protected_paths() -> frozenset[Path]:
    with _protected_lock:
        return frozenset(_protected)


def _refuse_store_file(path: Path, extra: Iterable[Path] = ()) -> None:
    real = _real(path)
    tmp = real.with_name(real.name + ".tmp")
    for p in (*protected_paths(), *(_real(e) for e in extra)):
        if real == p or tmp == p:
            raise UnsafePathError(f"{path} is a file of the studio's database; an export never writes over it "
                                  f"— choose another output path")


def _looks_like_export(path: Path) -> bool:
    """An existing file an export may replace without --force: empty, or a .jsonl/.json/.parquet file whose first
    bytes are JSON or parquet."""
    st_ = path.stat()
    if st_.st_size == 0:
        return True
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        return False
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head[:4] == b"PAR1" if path.suffix.lower() == ".parquet" else head[:1] in (b"{", b"[")


def check_export_target(path: str | os.PathLike, *, force: bool = False, folder_ok: bool = False,
                        protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Check an export's output path before anything is written; returns it. Refused (`UnsafePathError`): a file
    of an open store or of `protect` (always, even with `force`), a device / FIFO / socket, a folder (unless
    `folder_ok`: HF exports write shards into one), and — without `force` — an existing file that does not look
    like an export (not empty, not .jsonl/.json/.parquet starting with JSON or parquet)."""
    p = Path(os.path.expanduser(os.fspath(path)))
    _refuse_store_file(p, [Path(x) for x in protect])
    try:
        st_ = p.stat()
    except FileNotFoundError:
        return p
    if stat.S_ISDIR(st_.st_mode):
        if folder_ok:
            return p
        raise UnsafePathError(f"{p} is a folder; give a file name for the export")
    if not stat.S_ISREG(st_.st_mode):
        raise UnsafePathError(f"{p} is not a regular file (a device, pipe or socket); exports write regular files")
    if not force and not _looks_like_export(p):
        raise UnsafePathError(f"{p} exists and does not look like an export (.jsonl, .json or .parquet); "
                              f"pass --force to overwrite it")
    return p


def export_dir() -> Path | None:
    """The folder the browser may write exports into ($V1STUDIO_EXPORT_DIR), or None when the operator set none."""
    raw = os.environ.get(EXPORT_DIR_ENV, "").strip()
    return _real(raw) if raw else None


def export_path_in(name: str, folder: Path | None = None) -> Path:
    """`name` (a plain file name, no folders) inside the export folder; `UnsafePathError` when there is no
    export folder, the name has a separator or a leading dot, or the result is a store file."""
    folder = folder if folder is not None else export_dir()
    if folder is None:
        raise UnsafePathError(f"writing exports on the server is off; the operator can set {EXPORT_DIR_ENV} "
                              f"to a folder for them (downloads always work)")
    name = (name or "").strip()
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise UnsafePathError(f"{name!r} is not a plain file name; give a name such as train.jsonl, it is written "
                              f"into {folder}")
    target = _real(folder) / name
    if target.parent != _real(folder):
        raise UnsafePathError(f"{name!r} leads out of the export folder {folder}")
    return check_export_target(target, folder_ok=True)


# ----------------------------------------------------------------------------- confined reads
def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def import_dir() -> Path | None:
    """The server folder the browser may import from ($V1STUDIO_IMPORT_DIR), or None when the operator set none."""
    raw = os.environ.get(IMPORT_DIR_ENV, "").strip()
    return _real(raw) if raw else None


def import_path_in(ref: str, folder: Path | None = None) -> Path:
    """A file or folder the browser asked to import, resolved (symlinks too) inside the import folder; relative
    paths are taken from it. `UnsafePathError` when there is no import folder or `ref` leads outside it."""
    folder = folder if folder is not None else import_dir()
    if folder is None:
        raise UnsafePathError(f"importing from server paths is off; the operator can set {IMPORT_DIR_ENV} to a "
                              f"folder the browser may import from (uploads always work)")
    ref = (ref or "").strip()
    if "\x00" in ref:
        raise UnsafePathError("the path contains a NUL character")
    p = Path(ref)
    real = Path(os.path.realpath(p if p.is_absolute() else _real(folder) / p))
    if not _within(real, _real(folder)):
        raise UnsafePathError(f"{ref!r} is outside the import folder {folder}; only files inside it can be imported "
                              f"from the browser")
    return real


@dataclass(frozen=True)
class ImageSource:
    """Where an import may read image files from: only inside `roots` (resolved folders; none = image files are
    never read, only embedded bytes), at most `max_bytes` per file. See the module docstring's threat model.

        ImageSource.beside(import_path)             # the import's folder (the CLI default)
        ImageSource.beside(import_path, images_root) # an explicit --images-root instead
        ImageSource.for_upload()                     # the browser: $V1STUDIO_IMPORT_DIR, else no files at all
        src.read("images/a.png", base=row_file.parent) -> bytes
    """

    roots: tuple[Path, ...] = ()
    max_bytes: int = MAX_IMAGE_BYTES
    why_none: str = "this import reads no image files"

    @classmethod
    def beside(cls, import_path: str | os.PathLike, images_root: str | os.PathLike | None = None,
               max_bytes: int = MAX_IMAGE_BYTES) -> "ImageSource":
        if images_root is not None:
            root = _real(images_root)
            if not root.is_dir():
                raise UnsafePathError(f"the images root {images_root} is not a folder")
        else:
            p = _real(import_path)
            root = p if p.is_dir() else p.parent
        return cls((root,), max_bytes)

    @classmethod
    def for_upload(cls, max_bytes: int = MAX_IMAGE_BYTES) -> "ImageSource":
        raw = os.environ.get(IMPORT_DIR_ENV, "").strip()
        if raw and _real(raw).is_dir():
            return cls((_real(raw),), max_bytes)
        return cls((), max_bytes, why_none=f"an uploaded file's rows must embed their images (image bytes); image "
                                           f"paths are not read from the server unless the operator sets "
                                           f"{IMPORT_DIR_ENV}")

    def resolve(self, ref: str | os.PathLike, base: Path | None = None) -> Path:
        """The real path `ref` names (relative to `base`, symlinks resolved), inside one of the roots; refused
        with the same sentence whether or not an outside file exists."""
        shown = os.fspath(ref)
        if not self.roots:
            raise UnsafePathError(f"image {shown!r} was not read: {self.why_none}")
        if "\x00" in shown:
            raise UnsafePathError(f"image path {shown!r} contains a NUL character")
        p = Path(os.path.expanduser(shown))
        if not p.is_absolute():
            p = (base if base is not None else self.roots[0]) / p
        real = Path(os.path.realpath(p))
        if not any(_within(real, root) for root in self.roots):
            where = " or ".join(str(r) for r in self.roots)
            raise UnsafePathError(f"image {shown!r} is outside the import folder {where}; only images inside it are "
                                  f"read (use --images-root to name another folder)")
        return real

    def read(self, ref: str | os.PathLike, base: Path | None = None) -> bytes:
        """The bytes of the image file `ref` (see `resolve`): a regular file no larger than `max_bytes`."""
        shown = os.fspath(ref)
        real = self.resolve(ref, base)
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(f"image {shown!r} changed into a symlink while it was read; not read") from None
            raise UnsafePathError(f"cannot read image {shown!r}: {exc.strerror or exc}") from None
        try:
            st_ = os.fstat(fd)
            if not stat.S_ISREG(st_.st_mode):
                raise UnsafePathError(f"image {shown!r} is not a regular file (a device, pipe or folder); not read")
            if st_.st_size > self.max_bytes:
                raise UnsafePathError(f"image {shown!r} is {st_.st_size / 1048576:.1f} MB; the limit is "
                                      f"{self.max_bytes / 1048576:.0f} MB")
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise UnsafePathError(f"image {shown!r} grew past the {self.max_bytes / 1048576:.0f} MB limit while it "
                                  f"was read")
        return data


def check_embedded_size(n_bytes: int, what: str = "the embedded image", max_bytes: int = MAX_IMAGE_BYTES) -> None:
    """Refuse embedded image data over the cap before it is decoded (`n_bytes`: its length, base64 or raw)."""
    if n_bytes > max_bytes * 4 // 3 + 4:
        raise UnsafePathError(f"{what} is {n_bytes / 1048576:.1f} MB; the limit is {max_bytes / 1048576:.0f} MB")


# ----------------------------------------------------------------------------- writing
@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open `path.tmp` for writing (text as UTF-8 unless `mode` has "b") and rename it over `path` when the
    block ends without an error; on an error the temporary file is removed and `path` is untouched. The parent
    folder is created. A file of an open store is refused (`UnsafePathError`) before anything is written."""
    path = Path(path)
    _refuse_store_file(path)
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


__all__ = ["EXPORT_DIR_ENV", "IMAGE_EXTENSIONS", "IMAGE_MODES", "IMPORT_DIR_ENV", "MAX_IMAGE_BYTES", "ImageFiles",
           "ImageSource", "UnsafePathError", "atomic_write", "check_embedded_size", "check_export_target",
           "check_image_mode", "export_dir", "export_path_in", "import_dir", "import_path_in", "protect_paths",
           "protected_paths", "store_files"]
