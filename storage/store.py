"""`Store`: the one public entry to traces, images and annotations. No SQL outside `storage/`."""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from sqlalchemy import Engine, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from v1core.trace import SCHEMA_VERSION, Step, Trace, find_revisits, pointers_from_bytes

from .annotations import ROLES, Annotation, AnnotationRecord
from .db import make_engine, resolve_url, upgrade, write_engine
from .schema import (
    AnnotationRow,
    AnnotatorRow,
    ImageRow,
    ModelRow,
    RevisitRow,
    TraceChunkRow,
    TraceRow,
    TraceTagRow,
)

STATUSES = ("running", "complete", "failed", "cancelled")
SOURCES = ("generated", "imported")
CHUNK_BYTES = 256 * 1024  # pointer bytes per chunk row (a 2,000-patch grid: 65 steps a row)
MAX_STEPS_PER_CHUNK = 256


# ----------------------------------------------------------------------------- errors
class StorageError(Exception):
    """Something the store refuses to do; the message says why."""


class TraceNotFound(KeyError):
    """No (visible) trace with this id."""

    def __str__(self) -> str:  # KeyError would show the repr
        return str(self.args[0]) if self.args else "trace not found"


class ImageNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "image not found"


class AnnotationConflict(StorageError):
    """`expected_version` was stale: someone saved a newer version since it was loaded.

    The rejected save is *kept* in the history as version `saved_version` (marked conflict) so nothing typed
    is lost; the trace's current annotation stays `current_version`. Reload, merge and save again with
    `expected_version=current_version`.
    """

    def __init__(self, trace_id: str, expected_version: int, current_version: int, saved_version: int,
                 current_annotator: str | None):
        self.trace_id = trace_id
        self.expected_version = expected_version
        self.current_version = current_version
        self.saved_version = saved_version
        self.current_annotator = current_annotator
        by = f" by {current_annotator}" if current_annotator else ""
        super().__init__(
            f"trace {trace_id} was annotated{by} (version {current_version}) after you loaded version "
            f"{expected_version}; your changes are kept in the history as version {saved_version} — reload and "
            f"save again to make them current"
        )


class PermissionDenied(StorageError, PermissionError):
    pass


# ----------------------------------------------------------------------------- helpers
def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _f(v: Any) -> Any:
    """A JSON-safe float (numpy scalars → float), None kept."""
    return None if v is None else float(v)


def step_dict(s: Step) -> dict[str, Any]:
    """`Step.to_dict()` without dataclasses.asdict's deep copies (2,000 steps in a few ms)."""
    return {
        "index": int(s.index),
        "token_id": int(s.token_id),
        "text": str(s.text),
        "is_copy": bool(s.is_copy),
        "patch": None if s.patch is None else int(s.patch),
        "p_copy": float(s.p_copy),
        "entropy": float(s.entropy),
        "gate": _f(s.gate),
        "topk_ids": [int(v) for v in s.topk_ids],
        "topk_texts": [str(v) for v in s.topk_texts],
        "topk_probs": [float(v) for v in s.topk_probs],
    }


_F16_MIN_NORMAL = np.float32(2.0**-14)
_F16_SUBNORMAL_SCALE = np.float32(2.0**24)


def to_float16(mat: np.ndarray) -> np.ndarray:
    """float32 → little-endian float16, round to nearest even, bit-identical to `mat.astype('<f2')` but fast.

    Pointer distributions over thousands of patches are mostly tiny values that are *subnormal* in float16, where
    numpy's cast takes a slow path (~6× slower). Here the subnormal range is converted arithmetically instead: a
    float16 subnormal is m·2⁻²⁴, so its bits are rint(|x|·2²⁴) (exact in float32; m = 1024 correctly becomes the
    smallest normal) plus the sign. When torch is already loaded (the app and the tracer) its vectorised
    conversion is used. A test checks all paths against numpy's cast bit for bit."""
    x = np.ascontiguousarray(mat, dtype=np.float32)
    torch = sys.modules.get("torch")
    if torch is not None and sys.byteorder == "little":
        try:
            return torch.from_numpy(x).to(torch.float16).numpy()
        except Exception:  # noqa: BLE001 - any torch oddity: fall back to numpy
            pass
    with np.errstate(over="ignore", invalid="ignore"):  # overflow → inf exactly as numpy's cast
        a = np.abs(x)
        small = a < _F16_MIN_NORMAL
        if not small.any():
            return x.astype("<f2")
        out = np.where(small, np.float32(0), x).astype("<f2")
        sub = np.rint(a * _F16_SUBNORMAL_SCALE).astype(np.uint16)  # only the `small` entries are used
        sub |= (x.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
    np.copyto(out.view(np.uint16), sub, where=small)
    return out


def _f16_all_finite(h: np.ndarray) -> bool:
    return not ((h.view(np.uint16) & np.uint16(0x7C00)) == np.uint16(0x7C00)).any()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _json_safe(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None


@dataclass
class TraceSummary:
    """One row of `list_traces`: what pickers and tables show, without steps."""

    trace_id: str
    question: str
    model_id: str
    status: str
    created_at: str
    image_sha256: str
    image_size: tuple[int, int]
    n_steps: int
    n_revisits: int
    source: str
    parent_id: str | None
    branch_step: int | None
    tags: list[str]
    annotation_version: int
    verdict: str | None
    annotator: str | None
    has_corrections: bool

    @property
    def id(self) -> str:
        return self.trace_id

    @property
    def annotated(self) -> bool:
        return self.annotation_version > 0


@dataclass
class PreparedTrace:
    """A trace checked and serialised, ready to be written in one transaction (see `Store.save_trace`)."""

    trace: Trace
    row: dict[str, Any]
    chunks: list[dict[str, Any]]
    revisits: list[dict[str, Any]]
    tags: list[str]
    annotations: list[AnnotationRecord] = field(default_factory=list)


_SUMMARY_COLS = (
    TraceRow.id, TraceRow.question, TraceRow.model_id, TraceRow.status, TraceRow.created_at, TraceRow.image_sha256,
    TraceRow.image_w, TraceRow.image_h, TraceRow.n_steps, TraceRow.n_revisits, TraceRow.source, TraceRow.parent_id,
    TraceRow.branch_step, TraceRow.tags, TraceRow.ann_version, TraceRow.verdict, TraceRow.annotator,
    TraceRow.has_corrections,
)


def _summary(r: Any) -> TraceSummary:
    return TraceSummary(
        trace_id=r.id, question=r.question, model_id=r.model_id, status=r.status, created_at=r.created_at,
        image_sha256=r.image_sha256, image_size=(r.image_w, r.image_h), n_steps=r.n_steps, n_revisits=r.n_revisits,
        source=r.source, parent_id=r.parent_id, branch_step=r.branch_step, tags=list(r.tags or []),
        annotation_version=r.ann_version, verdict=r.verdict, annotator=r.annotator,
        has_corrections=bool(r.has_corrections),
    )


def _as_list(v: str | Sequence[str] | None) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    return list(v)


# ----------------------------------------------------------------------------- the store
class Store:
    """Traces, images and versioned annotations in SQLite (default) or PostgreSQL.

    `Store(url=None)`: `url` is a SQLAlchemy URL or a file path; default `$V1STUDIO_DB`, else
    `./data/v1studio.db`. Migrations are applied on construction. Thread-safe (one session per call); each
    process opens its own `Store`.
    """

    def __init__(self, url: str | None = None, *, migrate: bool = True, **engine_kwargs: Any):
        self.url = resolve_url(url)
        self.engine: Engine = make_engine(self.url, **engine_kwargs)
        self._wengine = write_engine(self.engine)
        if migrate:
            upgrade(self.engine)

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction (BEGIN IMMEDIATE on SQLite): commits on success, rolls back on any error."""
        with Session(self._wengine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    def _insert_ignore(self, s: Session, model: Any, values: dict[str, Any], keys: Sequence[str]) -> None:
        """INSERT … ON CONFLICT DO NOTHING (safe when several writers create the same row at once)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as ins
        else:
            from sqlalchemy.dialects.sqlite import insert as ins
        s.execute(ins(model).values(**values).on_conflict_do_nothing(index_elements=list(keys)))

    def integrity_check(self) -> str:
        """SQLite `PRAGMA integrity_check` ('ok' when healthy); 'ok' on other backends (they check themselves)."""
        if self.dialect != "sqlite":
            return "ok"
        with self.engine.connect() as conn:
            return "\n".join(r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").fetchall())

    # ------------------------------------------------------------------ images and models
    def put_image(self, data: bytes | None, width: int, height: int, format: str = "PNG", *,
                  path: str | os.PathLike | None = None) -> str:
        """Store an image by content (sha256 of its bytes) and return the sha256. Storing the same bytes twice
        is a no-op. With `data=None` and a `path`, only the path is kept (the file is hashed, not copied)."""
        if data is None:
            if path is None:
                raise ValueError("put_image needs the image bytes or a path")
            data_for_hash = Path(path).read_bytes()
            sha, stored, n = hashlib.sha256(data_for_hash).hexdigest(), None, len(data_for_hash)
        else:
            data = bytes(data)
            if not data:
                raise ValueError("the image is empty (0 bytes)")
            sha, stored, n = hashlib.sha256(data).hexdigest(), data, len(data)
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"image size must be positive, got {width}×{height}")
        with self._write() as s:
            self._insert_ignore(s, ImageRow, dict(
                sha256=sha, width=int(width), height=int(height), format=str(format or "")[:16].upper(),
                data=stored, path=None if path is None else str(path), n_bytes=n, created_at=now_iso(),
            ), ["sha256"])
        return sha

    def has_image(self, sha256: str) -> bool:
        with self._read() as s:
            return s.scalar(select(exists().where(ImageRow.sha256 == sha256))) or False

    def get_image_bytes(self, sha256: str) -> bytes:
        """The image's bytes (from the row or its path). Raises `ImageNotFound` (a KeyError)."""
        with self._read() as s:
            row = s.execute(select(ImageRow.data, ImageRow.path).where(ImageRow.sha256 == sha256)).first()
        if row is None:
            raise ImageNotFound(f"no image {sha256} in the store")
        if row.data is not None:
            return bytes(row.data)
        try:
            return Path(row.path).read_bytes()
        except OSError as exc:
            raise ImageNotFound(f"image {sha256} is stored as the path {row.path!r}, which cannot be read: {exc}")

    def get_image_info(self, sha256: str) -> dict[str, Any]:
        with self._read() as s:
            r = s.execute(select(ImageRow.width, ImageRow.height, ImageRow.format, ImageRow.n_bytes, ImageRow.path)
                          .where(ImageRow.sha256 == sha256)).first()
        if r is None:
            raise ImageNotFound(f"no image {sha256} in the store")
        return {"sha256": sha256, "width": r.width, "height": r.height, "format": r.format, "n_bytes": r.n_bytes,
                "path": r.path}

    def list_models(self) -> list[str]:
        with self._read() as s:
            return list(s.scalars(select(ModelRow.model_id).order_by(ModelRow.model_id)))

    # ------------------------------------------------------------------ traces: write
    def prepare_trace(self, trace: Trace) -> PreparedTrace:
        """Check a trace and serialise it (no database access). Raises ValueError with the reason."""
        if not isinstance(trace, Trace):
            raise ValueError(f"save_trace needs a v1core Trace, got {type(trace).__name__}")
        tid = str(trace.trace_id or "")
        if not tid or len(tid) > 64:
            raise ValueError(f"trace_id must be 1–64 characters, got {tid!r}")
        if trace.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {trace.status!r}")
        if trace.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {trace.source!r}")
        if not str(trace.model_id or "").strip():
            raise ValueError("model_id must not be empty")
        rows, cols = (int(v) for v in trace.grid)
        if rows <= 0 or cols <= 0:
            raise ValueError(f"grid must be positive (rows, cols), got {trace.grid!r}")
        steps = trace.steps
        for i, st in enumerate(steps):
            if st.index != i:
                raise ValueError(f"step {i} has index {st.index}; steps must be numbered 0, 1, 2, … in order")
            if st.patch is not None and not 0 <= int(st.patch) < rows * cols:
                raise ValueError(f"step {i} copies patch {st.patch}, outside the {rows}×{cols} grid")
        has_ptr = trace.has_pointers
        if steps and not has_ptr and any(st.pointer is not None for st in steps):
            raise ValueError("some steps have a pointer distribution and others not; all or none")
        if has_ptr:
            for st in steps:
                if tuple(np.shape(st.pointer)) != (rows, cols):
                    raise ValueError(f"step {st.index} pointer has shape {np.shape(st.pointer)}, grid is {rows}×{cols}")
        try:
            revisits = find_revisits(trace) if steps else []
        except Exception as exc:  # noqa: BLE001 - bad geometry
            raise ValueError(f"cannot locate the trace's revisits (image/grid geometry?): {exc}") from None
        offsets: list[int] = []
        pos = 0
        for st in steps:
            offsets.append(pos)
            pos += len(st.text)

        n_patch = rows * cols
        per = max(1, min(MAX_STEPS_PER_CHUNK, CHUNK_BYTES // (2 * n_patch)))
        dicts = [step_dict(st) for st in steps]
        chunks = []
        for c, a in enumerate(range(0, len(steps), per)):
            b = min(a + per, len(steps))
            blob = None
            if has_ptr:  # chunk by chunk: float32 → float16 stays in cache
                h = to_float16(np.stack([st.pointer for st in steps[a:b]]))
                if not _f16_all_finite(h):
                    raise ValueError("a pointer distribution has NaN or infinite values (or values beyond "
                                     "float16's range)")
                blob = h.tobytes()
            chunks.append(dict(trace_id=tid, chunk=c, first_step=a, n_steps=b - a, steps_json=_dumps(dicts[a:b]),
                               pointers=blob))
        rv_rows = [dict(
            trace_id=tid, idx=i, start_step=r.start_step, end_step=r.end_step, char_start=offsets[r.start_step],
            patches=[int(p) for p in r.patches], boxes=[[float(v) for v in b] for b in r.boxes], query=r.query,
            object_name=r.object_name, normalized_box=None if r.normalized_box is None else list(r.normalized_box),
        ) for i, r in enumerate(revisits)]
        tags: list[str] = []
        for t in trace.tags:
            t = str(t).strip()
            if not t or len(t) > 100:
                raise ValueError(f"tags must be 1–100 characters, got {t!r}")
            if t not in tags:
                tags.append(t)
        meta = _json_safe(dict(trace.meta), "meta")
        item_key = meta.get("item_key") if isinstance(meta.get("item_key"), str) else None
        row = dict(
            id=tid, model_id=str(trace.model_id), image_sha256=str(trace.image_sha256 or ""),
            image_w=int(trace.image_size[0]), image_h=int(trace.image_size[1]),
            resized_w=int(trace.resized_size[0]), resized_h=int(trace.resized_size[1]),
            grid_rows=rows, grid_cols=cols, system_prompt=str(trace.system_prompt or ""),
            question=str(trace.question), settings=_json_safe(trace.settings.to_dict(), "settings"),
            output_text=str(trace.output_text or ""), timings=_json_safe(dict(trace.timings), "timings"),
            status=trace.status, error=trace.error, created_at=str(trace.created_at), updated_at=now_iso(),
            prompt_tokens=int(trace.prompt_tokens or 0), source=trace.source, parent_id=trace.parent_id,
            branch_step=None if trace.branch_step is None else int(trace.branch_step),
            branch_edit=_json_safe(trace.branch_edit, "branch_edit"), tags=list(trace.tags), meta=meta,
            item_key=item_key[:64] if item_key else None, schema_version=SCHEMA_VERSION, n_steps=len(steps),
            n_revisits=len(revisits), has_pointers=has_ptr, steps_per_chunk=per,
        )
        return PreparedTrace(trace, row, chunks, rv_rows, tags)

    def _write_prepared(self, s: Session, p: PreparedTrace, *, replace_finished: bool = True) -> str:
        """Write one prepared trace inside the session's transaction. Returns 'inserted', 'replaced' or 'kept'."""
        tid = p.row["id"]
        self._insert_ignore(s, ModelRow, dict(model_id=p.row["model_id"], created_at=now_iso()), ["model_id"])
        existing = s.execute(select(TraceRow.status, TraceRow.deleted_at).where(TraceRow.id == tid)
                             .with_for_update()).first()
        outcome = "inserted"
        if existing is not None:
            if existing.deleted_at is not None:
                raise ValueError(f"trace {tid} was deleted; it cannot be saved again under the same id")
            if existing.status != "running" and not replace_finished:
                return "kept"
            if existing.status != "running" and p.row["status"] == "running":
                raise ValueError(f"trace {tid} is already {existing.status}; a running trace cannot replace it")
            s.execute(update(TraceRow).where(TraceRow.id == tid).values(**p.row))
            s.execute(delete(TraceChunkRow).where(TraceChunkRow.trace_id == tid))
            s.execute(delete(RevisitRow).where(RevisitRow.trace_id == tid))
            s.execute(delete(TraceTagRow).where(TraceTagRow.trace_id == tid, TraceTagRow.from_annotation.is_(False)))
            outcome = "replaced"
        else:
            s.execute(TraceRow.__table__.insert().values(**p.row))
        if p.chunks:
            s.execute(TraceChunkRow.__table__.insert(), p.chunks)
        if p.revisits:
            s.execute(RevisitRow.__table__.insert(), p.revisits)
        if p.tags:
            s.execute(TraceTagRow.__table__.insert(), [dict(trace_id=tid, tag=t, from_annotation=False) for t in p.tags])
        if p.annotations and outcome == "inserted":
            for rec in p.annotations:
                self._insert_annotation(s, tid, rec.annotation, version=rec.version, created_at=rec.created_at,
                                        based_on=rec.based_on, conflict=rec.conflict, make_head=not rec.conflict,
                                        n_revisits=p.row["n_revisits"], n_steps=p.row["n_steps"],
                                        n_patches=p.row["grid_rows"] * p.row["grid_cols"], seq=rec.version)
        return outcome

    def save_trace(self, trace: Trace) -> str:
        """Save (insert or replace) a trace atomically; returns its id.

        A live trace can be saved with status 'running' and saved again when it is complete/failed/cancelled:
        each save replaces the steps in one transaction, so readers see either the old or the new version, and
        a trace is 'complete' only once it was saved complete. A finished trace cannot be overwritten by a
        'running' one. Its annotations are kept.
        """
        p = self.prepare_trace(trace)
        with self._write() as s:
            self._write_prepared(s, p)
        return p.row["id"]

    def set_trace_tags(self, trace_id: str, tags: Sequence[str]) -> None:
        tags = [t.strip() for t in tags if t and t.strip()]
        with self._write() as s:
            self._visible_trace(s, trace_id, lock=True)
            s.execute(update(TraceRow).where(TraceRow.id == trace_id).values(tags=list(dict.fromkeys(tags)),
                                                                            updated_at=now_iso()))
            s.execute(delete(TraceTagRow).where(TraceTagRow.trace_id == trace_id, TraceTagRow.from_annotation.is_(False)))
            if tags:
                s.execute(TraceTagRow.__table__.insert(),
                          [dict(trace_id=trace_id, tag=t, from_annotation=False) for t in dict.fromkeys(tags)])

    def delete_trace(self, trace_id: str, by: str) -> None:
        """Hide a trace (reviewers only). Nothing is erased: its annotations stay, `restore_trace` undoes it."""
        with self._write() as s:
            self._require_reviewer(s, by)
            self._visible_trace(s, trace_id, lock=True)
            s.execute(update(TraceRow).where(TraceRow.id == trace_id).values(deleted_at=now_iso(), deleted_by=by))

    def restore_trace(self, trace_id: str, by: str) -> None:
        with self._write() as s:
            self._require_reviewer(s, by)
            n = s.execute(update(TraceRow).where(TraceRow.id == trace_id, TraceRow.deleted_at.is_not(None))
                          .values(deleted_at=None, deleted_by=None)).rowcount
            if not n:
                raise TraceNotFound(f"no deleted trace {trace_id}")

    def _visible_trace(self, s: Session, trace_id: str, lock: bool = False) -> TraceRow:
        q = select(TraceRow).where(TraceRow.id == str(trace_id))
        if lock:
            q = q.with_for_update()
        row = s.scalars(q).first()
        if row is None or row.deleted_at is not None:
            raise TraceNotFound(f"no trace {trace_id} in the store")
        return row

    # ------------------------------------------------------------------ traces: read
    def get_trace(self, trace_id: str) -> Trace:
        """The stored Trace (steps, float32 pointers decoded from float16). Raises `TraceNotFound` (a KeyError)."""
        with self._read() as s:
            row = self._visible_trace(s, trace_id)
            chunks = s.execute(select(TraceChunkRow.steps_json, TraceChunkRow.pointers)
                               .where(TraceChunkRow.trace_id == row.id).order_by(TraceChunkRow.chunk)).all()
        return self._build_trace(row, chunks)

    @staticmethod
    def _build_trace(row: TraceRow, chunks: Sequence[Any]) -> Trace:
        step_dicts: list[dict[str, Any]] = []
        for c in chunks:
            step_dicts.extend(json.loads(c.steps_json))
        pointers = None
        if row.has_pointers and step_dicts:
            pointers = pointers_from_bytes(b"".join(bytes(c.pointers) for c in chunks), len(step_dicts),
                                           (row.grid_rows, row.grid_cols))
        steps = [Step(**d) for d in step_dicts]
        if pointers is not None:
            for i, st in enumerate(steps):
                st.pointer = pointers[i]
        from v1core.trace import DecodingSettings

        return Trace(
            model_id=row.model_id, image_sha256=row.image_sha256, image_size=(row.image_w, row.image_h),
            resized_size=(row.resized_w, row.resized_h), grid=(row.grid_rows, row.grid_cols), question=row.question,
            system_prompt=row.system_prompt, settings=DecodingSettings.from_dict(row.settings), steps=steps,
            output_text=row.output_text, timings=dict(row.timings or {}), status=row.status, error=row.error,
            trace_id=row.id, created_at=row.created_at, prompt_tokens=row.prompt_tokens, source=row.source,
            parent_id=row.parent_id, branch_step=row.branch_step, branch_edit=row.branch_edit,
            tags=list(row.tags or []), meta=dict(row.meta or {}),
        )

    def get_step(self, trace_id: str, index: int) -> Step:
        """One step with its pointer, reading only the chunk row that holds it (not the whole trace)."""
        with self._read() as s:
            t = s.execute(select(TraceRow.steps_per_chunk, TraceRow.n_steps, TraceRow.grid_rows, TraceRow.grid_cols,
                                 TraceRow.has_pointers, TraceRow.deleted_at).where(TraceRow.id == trace_id)).first()
            if t is None or t.deleted_at is not None:
                raise TraceNotFound(f"no trace {trace_id} in the store")
            if not 0 <= int(index) < t.n_steps:
                raise IndexError(f"trace {trace_id} has {t.n_steps} steps; there is no step {index}")
            c = s.execute(select(TraceChunkRow.first_step, TraceChunkRow.n_steps, TraceChunkRow.steps_json,
                                 TraceChunkRow.pointers)
                          .where(TraceChunkRow.trace_id == trace_id,
                                 TraceChunkRow.chunk == int(index) // t.steps_per_chunk)).first()
        j = int(index) - c.first_step
        step = Step(**json.loads(c.steps_json)[j])
        if t.has_pointers and c.pointers is not None:
            n = t.grid_rows * t.grid_cols * 2
            step.pointer = pointers_from_bytes(bytes(c.pointers[j * n:(j + 1) * n]), 1, (t.grid_rows, t.grid_cols))[0]
        return step

    def get_revisits(self, trace_id: str) -> list[dict[str, Any]]:
        """The stored revisits (as computed by `find_revisits` at save time), as dicts."""
        with self._read() as s:
            self._visible_trace(s, trace_id)
            rows = s.scalars(select(RevisitRow).where(RevisitRow.trace_id == trace_id).order_by(RevisitRow.idx)).all()
        return [dict(index=r.idx, start_step=r.start_step, end_step=r.end_step, char_start=r.char_start,
                     patches=list(r.patches), boxes=[tuple(b) for b in r.boxes], query=r.query,
                     object_name=r.object_name,
                     normalized_box=None if r.normalized_box is None else tuple(r.normalized_box)) for r in rows]

    def trace_exists(self, trace_id: str) -> bool:
        with self._read() as s:
            return bool(s.scalar(select(exists().where(TraceRow.id == trace_id, TraceRow.deleted_at.is_(None)))))

    def item_keys(self) -> Iterator[str]:
        """`meta.item_key` of every complete trace (batch tracing resumes by skipping these)."""
        with self._read() as s:
            keys = list(s.scalars(select(TraceRow.item_key).where(
                TraceRow.item_key.is_not(None), TraceRow.status == "complete", TraceRow.deleted_at.is_(None))))
        return iter(keys)

    def _filter(self, q: Any, *, status: str | Sequence[str] | None = None, annotated: bool | None = None,
                verdict: str | Sequence[str] | None = None, model: str | None = None, tag: str | None = None,
                search: str | None = None, source: str | None = None, parent_id: str | None = None,
                image_sha256: str | None = None, annotator: str | None = None, has_corrections: bool | None = None,
                trace_ids: Sequence[str] | None = None, include_deleted: bool = False) -> Any:
        conds = []
        if not include_deleted:
            conds.append(TraceRow.deleted_at.is_(None))
        st = _as_list(status)
        if st is not None:
            bad = [v for v in st if v not in STATUSES]
            if bad:
                raise ValueError(f"unknown status {bad[0]!r}; one of {', '.join(STATUSES)}")
            conds.append(TraceRow.status.in_(st))
        if annotated is not None:
            conds.append(TraceRow.ann_version > 0 if annotated else TraceRow.ann_version == 0)
        vd = _as_list(verdict)
        if vd is not None:
            from .annotations import VERDICTS

            bad = [v for v in vd if v not in VERDICTS]
            if bad:
                raise ValueError(f"unknown verdict {bad[0]!r}; one of {', '.join(VERDICTS)}")
            conds.append(TraceRow.verdict.in_(vd))
        if model:
            conds.append(TraceRow.model_id == model)
        if tag:
            conds.append(exists().where(TraceTagRow.trace_id == TraceRow.id, TraceTagRow.tag == tag))
        if search:
            pat = f"%{_escape_like(search)}%"
            conds.append(or_(TraceRow.question.ilike(pat, escape="\\"), TraceRow.output_text.ilike(pat, escape="\\")))
        if source:
            conds.append(TraceRow.source == source)
        if parent_id:
            conds.append(TraceRow.parent_id == parent_id)
        if image_sha256:
            conds.append(TraceRow.image_sha256 == image_sha256)
        if annotator:
            conds.append(TraceRow.annotator == annotator)
        if has_corrections is not None:
            conds.append(TraceRow.has_corrections.is_(bool(has_corrections)))
        if trace_ids is not None:
            conds.append(TraceRow.id.in_(list(trace_ids)))
        return q.where(and_(*conds)) if conds else q

    def list_traces(self, *, limit: int | None = 100, offset: int = 0, order: str = "newest",
                    **filters: Any) -> list[TraceSummary]:
        """Trace summaries, newest first. Filters (all optional, combined with AND): `status` (one or a list),
        `annotated` (bool), `verdict` (current annotation's, one or a list), `model`, `tag` (trace or
        annotation tag), `search` (case-insensitive substring of question or output; wildcards are literal),
        `source`, `parent_id`, `image_sha256`, `annotator` (of the current annotation), `has_corrections`,
        `trace_ids`, `include_deleted`. Paging with `limit`/`offset`; `order` is 'newest' or 'oldest'."""
        if order not in ("newest", "oldest"):
            raise ValueError("order must be 'newest' or 'oldest'")
        if "text" in filters:  # alias
            filters["search"] = filters.pop("text")
        q = self._filter(select(*_SUMMARY_COLS), **filters)
        q = q.order_by(TraceRow.created_at.desc(), TraceRow.id.desc()) if order == "newest" else \
            q.order_by(TraceRow.created_at.asc(), TraceRow.id.asc())
        if limit is not None:
            q = q.limit(int(limit))
        if offset:
            q = q.offset(int(offset))
        with self._read() as s:
            return [_summary(r) for r in s.execute(q)]

    def count_traces(self, **filters: Any) -> int:
        with self._read() as s:
            return int(s.scalar(self._filter(select(func.count()).select_from(TraceRow), **filters)) or 0)

    # ------------------------------------------------------------------ annotators
    def add_annotator(self, name: str, role: str = "annotator") -> None:
        """Create an annotator or change their role ('annotator' or 'reviewer')."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        name = (name or "").strip()
        if not name or len(name) > 100:
            raise ValueError("an annotator name must be 1–100 characters")
        with self._write() as s:
            self._insert_ignore(s, AnnotatorRow, dict(name=name, role=role, created_at=now_iso()), ["name"])
            s.execute(update(AnnotatorRow).where(AnnotatorRow.name == name).values(role=role))

    def get_annotator(self, name: str) -> dict[str, Any] | None:
        with self._read() as s:
            r = s.scalars(select(AnnotatorRow).where(AnnotatorRow.name == name)).first()
            return None if r is None else {"name": r.name, "role": r.role, "created_at": r.created_at}

    def list_annotators(self) -> list[dict[str, Any]]:
        with self._read() as s:
            return [{"name": r.name, "role": r.role, "created_at": r.created_at}
                    for r in s.scalars(select(AnnotatorRow).order_by(AnnotatorRow.name))]

    def _annotator_id(self, s: Session, name: str) -> int:
        self._insert_ignore(s, AnnotatorRow, dict(name=name, role="annotator", created_at=now_iso()), ["name"])
        return int(s.scalar(select(AnnotatorRow.id).where(AnnotatorRow.name == name)))

    def _require_reviewer(self, s: Session, name: str) -> None:
        role = s.scalar(select(AnnotatorRow.role).where(AnnotatorRow.name == (name or "").strip()))
        if role != "reviewer":
            who = f"{name!r} is an annotator" if role else f"{name!r} is not a known annotator"
            raise PermissionDenied(f"only reviewers may delete or restore traces; {who}")

    # ------------------------------------------------------------------ annotations
    @staticmethod
    def _check_against_trace(a: Annotation, n_revisits: int, n_steps: int, n_patches: int) -> None:
        for r in a.revisit_labels:
            if r.revisit_index >= n_revisits:
                raise ValueError(f"revisit {r.revisit_index} does not exist; this trace has {n_revisits} revisit(s)")
            bad = [p for p in (r.corrected_patches or []) if p >= n_patches]
            if bad:
                raise ValueError(f"revisit {r.revisit_index}: patch {bad[0]} is outside the grid ({n_patches} patches)")
        for ad in a.added_revisits:
            if ad.step > n_steps:
                raise ValueError(f"added revisit at step {ad.step}, but the trace has {n_steps} steps")
            bad = [p for p in ad.patches if p >= n_patches]
            if bad:
                raise ValueError(f"added revisit: patch {bad[0]} is outside the grid ({n_patches} patches)")

    def _insert_annotation(self, s: Session, trace_id: str, a: Annotation, *, version: int, created_at: str,
                           based_on: int | None, conflict: bool, make_head: bool, n_revisits: int, n_steps: int,
                           n_patches: int, seq: int) -> None:
        self._check_against_trace(a, n_revisits, n_steps, n_patches)
        s.execute(AnnotationRow.__table__.insert().values(
            trace_id=trace_id, version=version, annotator_id=self._annotator_id(s, a.annotator), created_at=created_at,
            verdict=a.verdict, answer_correct=a.answer_correct, note=a.note, payload=a.payload(), based_on=based_on,
            conflict=conflict,
        ))
        values: dict[str, Any] = {"ann_seq": seq}
        if make_head:
            values.update(ann_version=version, verdict=a.verdict, annotator=a.annotator,
                          has_corrections=a.has_corrections)
            s.execute(delete(TraceTagRow).where(TraceTagRow.trace_id == trace_id, TraceTagRow.from_annotation.is_(True)))
            if a.tags:
                s.execute(TraceTagRow.__table__.insert(),
                          [dict(trace_id=trace_id, tag=t, from_annotation=True) for t in a.tags])
        s.execute(update(TraceRow).where(TraceRow.id == trace_id).values(**values))

    def save_annotation(self, trace_id: str, annotation: Annotation | Mapping[str, Any],
                        expected_version: int | None = None) -> int:
        """Save a new version of the trace's annotation; returns its version number (1, 2, …).

        Nothing is overwritten. `expected_version` is the version the annotator loaded (0 = none yet): if
        someone saved since, the save is still stored — as a *conflict* version in the history — and
        `AnnotationConflict` is raised; the current annotation does not change. `None` skips the check.
        """
        a = copy.deepcopy(Annotation.from_dict(annotation)).validate()
        if expected_version is not None and (isinstance(expected_version, bool) or not isinstance(expected_version, int)
                                             or expected_version < 0):
            raise ValueError(f"expected_version must be a version number ≥ 0 or None, got {expected_version!r}")
        with self._write() as s:
            row = self._visible_trace(s, trace_id, lock=True)
            version = row.ann_seq + 1
            current, current_by = row.ann_version, row.annotator
            conflict = expected_version is not None and expected_version != current
            self._insert_annotation(s, row.id, a, version=version, created_at=now_iso(), based_on=expected_version,
                                    conflict=conflict, make_head=not conflict, n_revisits=row.n_revisits,
                                    n_steps=row.n_steps, n_patches=row.grid_rows * row.grid_cols, seq=version)
        if conflict:
            raise AnnotationConflict(str(trace_id), int(expected_version), current, version, current_by)
        return version

    def _records(self, s: Session, where: Any, head_only: bool = False) -> list[AnnotationRecord]:
        q = select(AnnotationRow, AnnotatorRow.name).join(AnnotatorRow, AnnotatorRow.id == AnnotationRow.annotator_id)
        if head_only:
            q = q.join(TraceRow, and_(TraceRow.id == AnnotationRow.trace_id, TraceRow.ann_version == AnnotationRow.version))
        q = q.where(where).order_by(AnnotationRow.trace_id, AnnotationRow.version)
        out = []
        for r, name in s.execute(q):
            p = r.payload or {}
            a = Annotation.from_dict({"annotator": name, "verdict": r.verdict, "answer_correct": r.answer_correct,
                                      "note": r.note, **p})
            out.append(AnnotationRecord(trace_id=r.trace_id, version=r.version, created_at=r.created_at, annotation=a,
                                        based_on=r.based_on, conflict=bool(r.conflict)))
        return out

    def annotation_history(self, trace_id: str) -> list[AnnotationRecord]:
        """Every saved version, oldest first (conflict versions included and marked)."""
        with self._read() as s:
            self._visible_trace(s, trace_id)
            return self._records(s, AnnotationRow.trace_id == trace_id)

    def get_annotation(self, trace_id: str, version: int | None = None) -> AnnotationRecord | None:
        """The current annotation (or a given version); None when the trace has none."""
        with self._read() as s:
            row = self._visible_trace(s, trace_id)
            v = row.ann_version if version is None else int(version)
            if v <= 0:
                return None
            recs = self._records(s, and_(AnnotationRow.trace_id == trace_id, AnnotationRow.version == v))
        return recs[0] if recs else None

    def current_annotations(self, trace_ids: Sequence[str]) -> dict[str, AnnotationRecord]:
        """The current annotation of each of these traces that has one."""
        ids = list(trace_ids)
        if not ids:
            return {}
        with self._read() as s:
            recs = self._records(s, AnnotationRow.trace_id.in_(ids), head_only=True)
        return {r.trace_id: r for r in recs}

    def agreement(self, annotators: Sequence[str] | None = None, **filters: Any) -> dict[str, Any]:
        """Inter-annotator agreement over traces labelled by two or more people (each person's latest version):
        Cohen's kappa on verdicts and patch IoU on corrected regions, per pair of annotators and overall.
        `filters` are those of `list_traces` (e.g. `tag`, `model`)."""
        from .agreement import compute_agreement

        return compute_agreement(self, annotators=annotators, **filters)

    def disagreements(self, annotators: Sequence[str] | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Traces whose annotators disagree (verdict, revisit label or region), worst first: what a reviewer
        adjudicates. See `storage.agreement.find_disagreements` for the fields."""
        from .agreement import find_disagreements

        return find_disagreements(self, annotators=annotators, **filters)

    # ------------------------------------------------------------------ bulk reads for export/import
    def _iter_rows(self, *, batch: int = 500, order_oldest: bool = True, **filters: Any) -> Iterator[list[TraceRow]]:
        """Trace rows (no steps) in pages, stable order (created_at, id)."""
        last: tuple[str, str] | None = None
        while True:
            q = self._filter(select(TraceRow), **filters)
            if last is not None:
                q = q.where(or_(TraceRow.created_at > last[0], and_(TraceRow.created_at == last[0], TraceRow.id > last[1])))
            q = q.order_by(TraceRow.created_at, TraceRow.id).limit(batch)
            with self._read() as s:
                rows = list(s.scalars(q))
                s.expunge_all()
            if not rows:
                return
            yield rows
            last = (rows[-1].created_at, rows[-1].id)

    def _revisit_rows(self, trace_ids: Sequence[str]) -> dict[str, list[RevisitRow]]:
        out: dict[str, list[RevisitRow]] = {t: [] for t in trace_ids}
        if not trace_ids:
            return out
        with self._read() as s:
            for r in s.scalars(select(RevisitRow).where(RevisitRow.trace_id.in_(list(trace_ids)))
                               .order_by(RevisitRow.trace_id, RevisitRow.idx)):
                out[r.trace_id].append(r)
            s.expunge_all()
        return out

    def _step_texts(self, trace_id: str) -> list[str]:
        with self._read() as s:
            chunks = s.scalars(select(TraceChunkRow.steps_json).where(TraceChunkRow.trace_id == trace_id)
                               .order_by(TraceChunkRow.chunk)).all()
        return [d["text"] for c in chunks for d in json.loads(c)]

    def _traces_by_rows(self, rows: Sequence[TraceRow]) -> list[Trace]:
        ids = [r.id for r in rows]
        chunks: dict[str, list[Any]] = {i: [] for i in ids}
        with self._read() as s:
            for c in s.execute(select(TraceChunkRow.trace_id, TraceChunkRow.steps_json, TraceChunkRow.pointers)
                               .where(TraceChunkRow.trace_id.in_(ids))
                               .order_by(TraceChunkRow.trace_id, TraceChunkRow.chunk)):
                chunks[c.trace_id].append(c)
        return [self._build_trace(r, chunks[r.id]) for r in rows]

    def _history_by_trace(self, trace_ids: Sequence[str]) -> dict[str, list[AnnotationRecord]]:
        out: dict[str, list[AnnotationRecord]] = {t: [] for t in trace_ids}
        if not trace_ids:
            return out
        with self._read() as s:
            for rec in self._records(s, AnnotationRow.trace_id.in_(list(trace_ids))):
                out[rec.trace_id].append(rec)
        return out

    # ------------------------------------------------------------------ import / export (see export.py, importer.py)
    def export_v1g(self, out: str | os.PathLike, **kw: Any) -> Any:
        """v1g JSONL (collate-time layout) of labelled traces; see `storage.export.export_v1g`."""
        from .export import export_v1g

        return export_v1g(self, out, **kw)

    def export_hf(self, out: str | os.PathLike, **kw: Any) -> Any:
        """Hugging Face parquet dataset (v1g columns); see `storage.export.export_hf`."""
        from .export import export_hf

        return export_hf(self, out, **kw)

    def export_traces(self, out: str | os.PathLike, **kw: Any) -> Any:
        """Full traces JSONL with float16 pointers and annotation history; see `storage.export.export_traces`."""
        from .export import export_traces

        return export_traces(self, out, **kw)

    def export_labelstudio(self, out: str | os.PathLike, **kw: Any) -> Any:
        """Label Studio tasks JSON (boxes in percent); see `storage.export.export_labelstudio`."""
        from .export import export_labelstudio

        return export_labelstudio(self, out, **kw)

    def import_file(self, path: str | os.PathLike, **kw: Any) -> Any:
        """Import full-trace JSONL or v1g rows (JSONL/parquet, or a folder of them); see `storage.importer`."""
        from .importer import import_path

        return import_path(self, path, **kw)


__all__ = [
    "AnnotationConflict",
    "ImageNotFound",
    "PermissionDenied",
    "PreparedTrace",
    "STATUSES",
    "StorageError",
    "Store",
    "TraceNotFound",
    "TraceSummary",
    "now_iso",
    "step_dict",
]
