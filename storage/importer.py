"""Import: full-trace JSONL (batch tracer shards, `export traces`) and v1g rows (JSONL or parquet).

Every line/row is checked on its own; a bad one is reported with its line (row) number and the reason, the good
ones are imported. Each trace is written in one transaction (with its image and annotation history), so
nothing is ever half-written; a trace already in the store is skipped (a `running` one is replaced).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from v1core import v1g
from v1core.copy_tokens import COPY_TOKEN_START
from v1core.geometry import PatchGrid
from v1core.trace import Trace
from v1core.v1g import V1G_MODEL_ID

from .annotations import AnnotationRecord
from .files import ImageSource, check_embedded_size

if TYPE_CHECKING:
    from .codec import PreparedTrace
    from .store import Store, Transaction

BATCH = 100


@dataclass
class LineError:
    file: str
    line: int  # 1-based line of a JSONL file, or 1-based row of a parquet file
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ImportReport:
    imported: int = 0
    replaced: int = 0
    skipped: int = 0  # already in the store
    errors: list[LineError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (f"imported {self.imported} trace(s)" + (f", replaced {self.replaced} running" if self.replaced else "")
                + f", skipped {self.skipped} already stored, {len(self.errors)} bad line(s) "
                + f"from {len(self.files)} file(s)")


@dataclass
class _Item:
    where: tuple[str, int]
    prepared: "PreparedTrace"
    image: tuple[bytes, int, int, str] | None = None


# ----------------------------------------------------------------------------- helpers
def _image_from_ref(ref: Any, base: Path | None, source: ImageSource | None = None) -> bytes | None:
    """Bytes of an image cell: {"bytes": b | base64, "path": p}, raw bytes, or a path (relative to `base`, read
    only through `source`: confined to its folders, see `storage.files.ImageSource`). Without a `source`, paths are
    confined to `base`."""
    if ref is None:
        return None
    if isinstance(ref, Mapping):
        b = ref.get("bytes")
        if b:
            check_embedded_size(len(b))
            if isinstance(b, str):
                return base64.b64decode(b, validate=True)
            return bytes(b)
        ref = ref.get("path")
        if not ref:
            return None
    if isinstance(ref, (bytes, bytearray, memoryview)):
        check_embedded_size(len(ref))
        return bytes(ref)
    if isinstance(ref, str):
        if "://" in ref or ref.startswith("data:"):
            raise ValueError(f"image {ref[:60]!r} is a URL; only local files are read")
        if source is None:
            source = ImageSource((base.resolve(),)) if base is not None else ImageSource()
        return source.read(ref, base)
    raise ValueError(f"cannot read an image from a {type(ref).__name__}")


def _image_meta(data: bytes) -> tuple[int, int, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width, im.height, (im.format or "").upper()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"the image cannot be decoded: {exc}") from None


def trace_from_v1g(row: Mapping[str, Any], base: Path | None = None, *, model_id: str = V1G_MODEL_ID,
                   copy_token_start: int = COPY_TOKEN_START, images: ImageSource | None = None,
                   ) -> tuple[Trace, tuple[bytes, int, int, str] | None]:
    """A text-only Trace (source 'imported') from a v1g row, read and expanded by `v1core.v1g` exactly as the
    official training code does (every key occurrence, on the 672-px training geometry, recorded in the trace's
    meta). An image path is read through `images` (default: confined to `base`). Returns (trace, image)."""
    if not isinstance(row, Mapping):
        raise ValueError("a v1g row must be a JSON object")
    parsed = v1g.parse_row(row)
    image = None
    data = _image_from_ref(row.get("image"), base, images)
    if data is not None:
        w, h, fmt = _image_meta(data)
        image = (data, w, h, fmt)
    if parsed.image_size is not None:
        w, h = parsed.image_size
        if image is not None and (w, h) != (image[1], image[2]):
            raise ValueError(f"image_size {[w, h]} does not match the image ({image[1]}×{image[2]})")
    elif image is not None:
        parsed = replace(parsed, image_size=(image[1], image[2]))
    else:
        raise ValueError("the row has neither image_size nor a readable image")
    PatchGrid.for_image(*parsed.image_size)  # ImageGeometryError (a ValueError) with the reason for tiny images
    trace = v1g.trace_from_row(parsed, image_sha256=hashlib.sha256(image[0]).hexdigest() if image else "",
                               model_id=model_id, copy_token_start=copy_token_start)
    return trace, image


def _is_v1g(d: Mapping[str, Any]) -> bool:
    return "conversations" in d or "conversation" in d


def _is_trace(d: Mapping[str, Any]) -> bool:
    return "grid" in d and "model_id" in d


# ----------------------------------------------------------------------------- reading sources
def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed object, error)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield n, json.loads(raw.decode("utf-8")), None
            except UnicodeDecodeError as exc:
                yield n, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            except json.JSONDecodeError as exc:
                yield n, None, f"not valid JSON ({exc.msg} at column {exc.colno})" + (
                    " — a truncated last line?" if not raw.endswith(b"\n") else "")


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    n = 0
    for batch in pf.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            n += 1
            yield n, row, None


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".jsonl", ".json", ".parquet")
                       and not p.name.endswith(".tmp"))
        if not files:
            raise FileNotFoundError(f"{path} has no .jsonl or .parquet files")
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return [path]


# ----------------------------------------------------------------------------- the import
def import_path(store: "Store", path: str | os.PathLike, *, kind: str = "auto", model_id: str = V1G_MODEL_ID,
                copy_token_start: int = COPY_TOKEN_START, progress: bool = False,
                images_root: str | os.PathLike | None = None, images: ImageSource | None = None) -> "ImportReport":
    """Import a file or every .jsonl/.parquet file under a folder. `kind`: 'auto' (each JSONL line is detected:
    a full trace has `grid` and `model_id`, a v1g row has `conversations`/`conversation`; parquet is v1g), 'traces'
    or 'v1g'. Image paths in rows are read only inside the imported folder (the file's folder when `path` is a
    file), or inside `images_root`, or as `images` allows (`ImageSource.for_upload()` for browser uploads).
    Returns an `ImportReport` (per-line errors with line numbers, counts)."""
    from tqdm import tqdm

    if kind not in ("auto", "traces", "v1g"):
        raise ValueError("kind must be 'auto', 'traces' or 'v1g'")
    files = _files(Path(path))
    if images is None:
        images = ImageSource.beside(path, images_root)
    report = ImportReport()
    for file in files:
        report.files.append(str(file))
        is_parquet = file.suffix.lower() == ".parquet"
        rows = _iter_parquet(file) if is_parquet else _iter_jsonl(file)
        pending: list[_Item] = []
        bar = tqdm(desc=f"import {file.name}", unit="row", disable=not progress, dynamic_ncols=True)
        try:
            for n, obj, err in rows:
                bar.update(1)
                where = (str(file), n)
                if err:
                    report.errors.append(LineError(str(file), n, err))
                    continue
                try:
                    item = _prepare(store, obj, file.parent, kind="v1g" if is_parquet and kind == "auto" else kind,
                                    model_id=model_id, copy_token_start=copy_token_start, images=images)
                except Exception as exc:  # noqa: BLE001 - any bad content is that line's error
                    report.errors.append(LineError(str(file), n, _reason(exc)))
                    continue
                item.where = where
                pending.append(item)
                if len(pending) >= BATCH:
                    _write(store, pending, report)
                    pending = []
        except Exception as exc:  # noqa: BLE001 - unreadable file (bad parquet, …): report, go on with others
            report.errors.append(LineError(str(file), 0, f"cannot read the file: {_reason(exc)}"))
        finally:
            bar.close()
        _write(store, pending, report)
    return report


def _reason(exc: BaseException) -> str:
    msg = str(exc) if not isinstance(exc, KeyError) else f"missing field {exc.args[0]!r}"
    if isinstance(exc, (TypeError, AttributeError, KeyError, IndexError)) and not isinstance(exc, KeyError):
        msg = f"malformed content ({type(exc).__name__}: {msg})"
    return msg or type(exc).__name__


def _prepare(store: "Store", obj: Any, base: Path, *, kind: str, model_id: str, copy_token_start: int,
             images: ImageSource) -> _Item:
    if not isinstance(obj, Mapping):
        raise ValueError(f"a line must be a JSON object, got {type(obj).__name__}")
    if kind == "auto":
        kind = "traces" if _is_trace(obj) else "v1g" if _is_v1g(obj) else ""
        if not kind:
            raise ValueError("neither a full trace (needs grid, model_id, …) nor a v1g row (needs conversations)")
    image = None
    if kind == "traces":
        trace = Trace.from_dict(dict(obj))
        if obj.get("image"):
            data = _image_from_ref(obj["image"], base, images)
            if data is not None:
                w, h, fmt = _image_meta(data)
                if hashlib.sha256(data).hexdigest() != trace.image_sha256:
                    raise ValueError("the embedded image does not match the trace's image_sha256")
                image = (data, w, h, fmt)
        history = obj.get("annotations") or []
        if not isinstance(history, list):
            raise ValueError("annotations must be a list")
        records = sorted((AnnotationRecord.from_dict(trace.trace_id, a) for a in history), key=lambda r: r.version)
        if len({r.version for r in records}) != len(records):
            raise ValueError("annotation history has a repeated version number")
    else:
        trace, image = trace_from_v1g(obj, base, model_id=model_id, copy_token_start=copy_token_start,
                                      images=images)
        records = []
    prepared = store.prepare_trace(trace)
    prepared.annotations = list(records)
    for r in records:
        prepared.check_annotation(r)
    return _Item(("", 0), prepared, image)


def _write(store: "Store", items: list[_Item], report: ImportReport) -> None:
    """Write a batch in one transaction; if that fails, write each item alone so one bad item is reported alone."""
    if not items:
        return

    def write_one(tx: "Transaction", it: _Item) -> str:
        if it.image is not None:
            data, w, h, fmt = it.image
            tx.put_image(data, w, h, fmt)
        return tx.write_trace(it.prepared, replace_finished=False)

    def tally(it: _Item, outcome: str) -> None:
        if outcome == "kept":
            report.skipped += 1
        else:
            report.imported += 1
            report.trace_ids.append(it.prepared.row["id"])
            if outcome == "replaced":
                report.replaced += 1

    try:
        with store.transaction() as tx:
            outcomes = [write_one(tx, it) for it in items]
        for it, o in zip(items, outcomes):
            tally(it, o)
        return
    except Exception:  # noqa: BLE001 - retry one by one to find the culprit(s)
        pass
    for it in items:
        try:
            with store.transaction() as tx:
                o = write_one(tx, it)
            tally(it, o)
        except Exception as exc:  # noqa: BLE001 - whatever fails is this item's error, reported with its line
            report.errors.append(LineError(it.where[0], it.where[1], _reason(exc)))


__all__ = ["ImportReport", "import_path", "trace_from_v1g"]
