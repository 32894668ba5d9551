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
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from v1core import v1g
from v1core.copy_tokens import COPY_TOKEN_START
from v1core.geometry import PatchGrid
from v1core.trace import Trace
from v1core.v1g import V1G_MODEL_ID

from .annotations import AnnotationRecord
from .codec import trace_from_json
from .files import ImageSource, check_embedded_size

if TYPE_CHECKING:
    from .codec import PreparedTrace
    from .store import Store, Transaction

BATCH = 100
BATCH_BYTES = 64 * 2**20
"""Traces are written in batches of at most BATCH traces and about this many bytes (a 2,000-step trace at 16,384
patches is ~200 MB prepared, so it is written alone): memory stays bounded by bytes, not by trace counts."""


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

    @property
    def n_bytes(self) -> int:
        """What this item holds in memory, roughly: float32 pointers + their float16 blobs, text, image."""
        t = self.prepared.trace
        ptr = len(t.steps) * t.n_patches * 6 if t.has_pointers else 0
        return ptr + 200 * len(t.steps) + len(t.output_text) + (len(self.image[0]) if self.image else 0)


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
                       and not p.name.endswith(".tmp") and not _is_run_summary(p))
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
        if file.suffix.lower() == ".json" and _starts_with_array(file):
            import_labelstudio(store, file, report=report)
            continue
        is_parquet = file.suffix.lower() == ".parquet"
        rows = _iter_parquet(file) if is_parquet else _iter_jsonl(file)
        pending: list[_Item] = []
        pending_bytes = 0
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
                pending_bytes += item.n_bytes
                if len(pending) >= BATCH or pending_bytes >= BATCH_BYTES:
                    _write(store, pending, report)
                    pending, pending_bytes = [], 0
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
        trace = trace_from_json(dict(obj))
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


def _is_run_summary(path: Path) -> bool:
    """A batch run's own `summary.json` / `summary-rank*.json` (counts and timings, no traces): never imported."""
    return path.suffix.lower() == ".json" and (path.name == "summary.json" or path.name.startswith("summary-"))


def _starts_with_array(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(256).lstrip()
    return head.startswith(b"[")


# ----------------------------------------------------------------------------- Label Studio, back in
_LS_REVISIT = re.compile(r"^r(\d+)_\d+$")
_LS_ADDED = re.compile(r"^add\d+_s(\d+)_\d+$")


def _ls_box(res: Mapping[str, Any], w: int, h: int) -> tuple[float, float, float, float]:
    v = res["value"]
    ow, oh = float(res.get("original_width") or w), float(res.get("original_height") or h)
    x0, y0 = float(v["x"]) * ow / 100.0, float(v["y"]) * oh / 100.0
    x1, y1 = x0 + float(v["width"]) * ow / 100.0, y0 + float(v["height"]) * oh / 100.0
    return tuple(round(c, 2) for c in (x0, y0, x1, y1))  # type: ignore[return-value]


def _same_box(a: Any, b: Any, tol: float = 0.01) -> bool:
    return all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b, strict=True))


def _ls_annotator(task: Mapping[str, Any], ann: Mapping[str, Any]) -> str:
    who = ann.get("completed_by")
    if isinstance(who, Mapping) and who.get("email"):
        return str(who["email"])
    meta = ann.get("meta") if isinstance(ann.get("meta"), Mapping) else task.get("meta") or {}
    return str(meta.get("annotator") or "labelstudio")


def annotation_from_labelstudio(task: Mapping[str, Any], trace: Trace, revisits: list[Any]) -> Any:
    """The v1 Studio `Annotation` of a Label Studio task's last annotation (made by `export labelstudio`, then
    maybe edited in Label Studio): verdict from the `verdict` choice, note from the `note` text, each revisit's
    label from its `r<i>_<j>` boxes (the model's boxes: correct, or unnecessary when the region's meta says
    so; other boxes: wrong_region with that box, or with the cells they cover when the meta says "cells"), a
    revisit without boxes stays unlabelled, and every other box is an added revisit (before the step in its
    `add<k>_s<step>` id; a box drawn in Label Studio goes before the answer, after `</think>`'s step)."""
    from .annotations import AddedRevisit, Annotation, RevisitLabel

    anns = [a for a in task.get("annotations") or [] if isinstance(a, Mapping) and not a.get("was_cancelled")]
    if not anns:
        raise ValueError("the task has no annotation")
    ann = anns[-1]
    w, h = trace.image_size
    grid = trace.patch_grid()
    meta = task.get("meta") if isinstance(task.get("meta"), Mapping) else {}
    verdict, note = None, meta.get("note") or ""
    by_rev: dict[int, list[tuple[tuple[float, ...], str | None]]] = {}
    added: list[AddedRevisit] = []
    end_step = next((s.index for s in trace.steps if "</think>" in s.text), len(trace.steps))
    for res in ann.get("result") or []:
        kind = res.get("type")
        if kind == "choices" and res.get("from_name") == "verdict":
            choices = (res.get("value") or {}).get("choices") or []
            verdict = choices[0] if choices else None
        elif kind == "textarea" and res.get("from_name") == "note":
            note = "\n".join((res.get("value") or {}).get("text") or [])
        elif kind == "rectanglelabels":
            box = _ls_box(res, w, h)
            marker = ((res.get("meta") or {}).get("text") or [None])[0]
            rid = str(res.get("id") or "")
            m = _LS_REVISIT.match(rid)
            if m and int(m.group(1)) < len(revisits):
                by_rev.setdefault(int(m.group(1)), []).append((box, marker))
                continue
            m = _LS_ADDED.match(rid)
            label = ((res.get("value") or {}).get("rectanglelabels") or [""])[0]
            step = int(m.group(1)) if m else end_step
            if marker == "cells":
                added.append(AddedRevisit(step=step, patches=grid.bbox_to_patches(_inset(box, grid)), query=label))
            else:
                added.append(AddedRevisit(step=step, box=box, query=label))
    labels = []
    for idx in sorted(by_rev):
        got = by_rev[idx]
        model_boxes = list(revisits[idx].boxes)
        if len(got) == len(model_boxes) and all(_same_box(b, mb) for (b, _), mb in zip(got, model_boxes)):
            labels.append(RevisitLabel(idx, "unnecessary" if got[0][1] == "unnecessary" else "correct"))
        elif got[0][1] == "cells":
            cells = sorted({c for b, _ in got for c in grid.bbox_to_patches(_inset(b, grid))})
            labels.append(RevisitLabel(idx, "wrong_region", corrected_patches=cells))
        else:
            labels.append(RevisitLabel(idx, "wrong_region", corrected_box=got[0][0]))
    answer = meta.get("answer_correct")
    return Annotation(annotator=_ls_annotator(task, ann), verdict=verdict,
                      answer_correct=answer if isinstance(answer, bool) else None, note=note,
                      revisit_labels=labels, added_revisits=added)


def _inset(box: Any, grid: Any) -> list[float]:
    """A cell-edge box shrunk by a quarter of a resized pixel, so that it covers exactly the cells it outlines."""
    sx = 0.25 * grid.image_size[0] / grid.resized[0]
    sy = 0.25 * grid.image_size[1] / grid.resized[1]
    return [box[0] + sx, box[1] + sy, box[2] - sx, box[3] - sy]


def import_labelstudio(store: "Store", path: str | os.PathLike, *, report: ImportReport | None = None
                       ) -> ImportReport:
    """Read a Label Studio export (JSON array of tasks, as `export labelstudio` writes and Label Studio exports
    it) back: each task's trace (by `data.trace_id` or `meta.trace_id`) must be in the store; its last
    annotation becomes a new annotation version (skipped when it says exactly what the current one says). A bad
    task is reported with its position."""
    report = report if report is not None else ImportReport()
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        report.errors.append(LineError(str(path), 0, f"not a Label Studio export: {exc}"))
        return report
    if not isinstance(tasks, list):
        report.errors.append(LineError(str(path), 0, "a Label Studio export is a JSON array of tasks"))
        return report
    for n, task in enumerate(tasks, start=1):
        try:
            if not isinstance(task, Mapping):
                raise ValueError("a task must be a JSON object")
            data = task.get("data") if isinstance(task.get("data"), Mapping) else {}
            meta = task.get("meta") if isinstance(task.get("meta"), Mapping) else {}
            tid = data.get("trace_id") or meta.get("trace_id")
            if not tid:
                raise ValueError("the task names no trace (data.trace_id); only tasks exported by v1 Studio are read")
            if not store.trace_exists(str(tid)):
                raise ValueError(f"trace {tid} is not in this store; import its traces first")
            trace = store.get_trace(str(tid))
            ann = annotation_from_labelstudio(task, trace, trace.revisits)
            cur = store.get_annotation(str(tid))
            if cur is not None and cur.annotation.to_dict() == ann.validate().to_dict():
                report.skipped += 1
                continue
            store.save_annotation(str(tid), ann, expected_version=None)
            report.imported += 1
            report.trace_ids.append(str(tid))
        except Exception as exc:  # noqa: BLE001 - a bad task is that task's error
            report.errors.append(LineError(str(path), n, _reason(exc)))
    return report


__all__ = ["BATCH_BYTES", "ImportReport", "annotation_from_labelstudio", "import_labelstudio", "import_path",
           "trace_from_v1g"]
