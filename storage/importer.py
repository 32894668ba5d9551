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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from v1core.copy_tokens import COPY_RE, COPY_TOKEN_START
from v1core.trace import Step, Trace

from .annotations import AnnotationRecord
from .files import ImageSource, check_embedded_size

if TYPE_CHECKING:
    from .codec import PreparedTrace
    from .store import Store, Transaction

V1G_MODEL_ID = "v1g-data"
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


def _turns(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role, text) turns from ShareGPT `conversations` or collate-time `conversation` messages."""
    out = []
    if "conversations" in row:
        src = row["conversations"]
        if isinstance(src, str):
            src = json.loads(src)
        for t in src or []:
            if not isinstance(t, Mapping):
                raise ValueError("conversations must be a list of {from, value} objects")
            out.append((str(t.get("from", "")), t.get("value")))
    else:
        for m in row.get("conversation") or []:
            if not isinstance(m, Mapping):
                raise ValueError("conversation must be a list of {role, content} messages")
            content = m.get("content") if "content" in m else m.get("value")
            if isinstance(content, list):  # multimodal content parts
                content = "".join(c.get("text", "") if c.get("type") == "text" else "<image>\n" for c in content)
            out.append((str(m.get("role") or m.get("from") or ""), content))
    for role, text in out:
        if not isinstance(text, str):
            raise ValueError(f"a {role or 'conversation'} turn has no text")
    return out


def steps_from_text(text: str, copy_token_start: int = COPY_TOKEN_START) -> list[Step]:
    """Steps for a text-only trace: one step per `<|copy_k|>` token and one per text chunk between them (no
    distributions: p_copy/entropy are NaN, token ids -1 for text chunks). The steps' texts concatenate to `text`."""
    steps: list[Step] = []
    pos = 0

    def add(txt: str, patch: int | None) -> None:
        steps.append(Step(index=len(steps), token_id=(copy_token_start + patch) if patch is not None else -1,
                          text=txt, is_copy=patch is not None, patch=patch, p_copy=float("nan"),
                          entropy=float("nan")))

    for m in COPY_RE.finditer(text):
        if m.start() > pos:
            add(text[pos:m.start()], None)
        add(m.group(0), int(m.group(1)))
        pos = m.end()
    if pos < len(text):
        add(text[pos:], None)
    return steps


def trace_from_v1g(row: Mapping[str, Any], base: Path | None = None, *, model_id: str = V1G_MODEL_ID,
                   copy_token_start: int = COPY_TOKEN_START, images: ImageSource | None = None,
                   ) -> tuple[Trace, tuple[bytes, int, int, str] | None]:
    """A text-only Trace (source 'imported') from a v1g row; object keys are expanded to region markup with
    copy ids of every cell the box touches, exactly as v1's training code does. An image path is read through
    `images` (default: confined to `base`). Returns (trace, image)."""
    from v1core.demo.targets import expand_v1g_assistant
    from v1core.geometry import PatchGrid

    if not isinstance(row, Mapping):
        raise ValueError("a v1g row must be a JSON object")
    turns = _turns(row)
    human = [t for r, t in turns if r in ("human", "user")]
    gpt = [t for r, t in turns if r in ("gpt", "assistant")]
    system = [t for r, t in turns if r == "system"]
    if not human or not gpt:
        raise ValueError("a v1g row needs a human/user turn and a gpt/assistant turn")
    question = human[0].replace("<image>\n", "", 1).replace("<image>", "", 1).strip()
    image = None
    data = _image_from_ref(row.get("image"), base, images)
    if data is not None:
        w, h, fmt = _image_meta(data)
        image = (data, w, h, fmt)
    size = row.get("image_size")
    if size is not None:
        if isinstance(size, str):
            size = json.loads(size)
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError(f"image_size must be [width, height], got {size!r}")
        w, h = int(size[0]), int(size[1])
        if image is not None and (w, h) != (image[1], image[2]):
            raise ValueError(f"image_size {[w, h]} does not match the image ({image[1]}×{image[2]})")
    elif image is not None:
        w, h = image[1], image[2]
    else:
        raise ValueError("the row has neither image_size nor a readable image")
    grid = PatchGrid.for_image(w, h)  # raises ImageGeometryError (a ValueError) with the reason
    regions = row.get("regions", row.get("region"))
    text = expand_v1g_assistant(gpt[-1], regions, grid, keep_key=True)
    if isinstance(regions, (bytes, bytearray)):
        regions = regions.decode()
    regions_dict = json.loads(regions) if isinstance(regions, str) and regions else (dict(regions) if regions else {})
    rid = row.get("id")
    if rid is not None and str(rid):
        trace_id = hashlib.sha256(f"v1g:{rid}".encode()).hexdigest()[:32]
    else:
        blob = json.dumps([question, gpt[-1], regions_dict, [w, h]], sort_keys=True)
        trace_id = hashlib.sha256(f"v1g-content:{blob}".encode()).hexdigest()[:32]
    meta: dict[str, Any] = {"v1g_id": None if rid is None else str(rid), "v1g_regions": regions_dict}
    if isinstance(row.get("num_tokens"), int):
        meta["num_tokens"] = int(row["num_tokens"])
    trace = Trace(
        model_id=model_id, image_sha256=hashlib.sha256(image[0]).hexdigest() if image else "",
        image_size=(w, h), resized_size=grid.resized, grid=grid.shape, question=question,
        system_prompt=system[0] if system else "", steps=steps_from_text(text, copy_token_start), output_text=text,
        status="complete", source="imported", trace_id=trace_id, meta=meta,
    )
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


__all__ = ["ImportReport", "import_path", "steps_from_text", "trace_from_v1g"]
