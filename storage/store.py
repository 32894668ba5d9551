"""`Store`: the one public entry to traces, images and annotations. No SQL outside `storage/`.

The public API has two layers (docs/STORAGE.md lists both):
- what the app, the CLI and scripts use: save/get/list traces and steps, images, annotators, versioned
  annotations, reviewers' delete/restore;
- what storage's own modules build on (export, import, agreement, preferences): bulk readers that page
  through many traces at once (`iter_trace_rows`, `revisits_by_trace`, `history_by_trace`, `traces_for_rows`,
  `step_texts`) and `transaction()`, one write transaction that commits several traces and images together.
Serialisation (trace ↔ rows, float16 pointers) lives in `storage.codec`, the errors in `storage.errors`, the
returned dataclasses in `storage.records` and `storage.annotations`. This module imports none of the
modules built on it.
"""

from __future__ import annotations

import copy
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from sqlalchemy import Engine, and_, delete, exists, false, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import DatabaseError as SQLDatabaseError
from sqlalchemy.orm import Session

from v1core.trace import Step, Trace

from .annotations import (
    ROLES,
    STATE_RULES,
    UNRESOLVED,
    VERDICTS,
    Annotation,
    AnnotationRecord,
    AnnotationView,
    ExportHead,
    TraceHeads,
    check_no_nul,
    resolve_export_head,
)
from .codec import (
    STATUSES,
    PreparedTrace,
    decode_step,
    decode_steps,
    decode_trace,
    encode_trace,
    now_iso,
    step_columns,
    step_texts,
)
from .db import make_engine, resolve_url, upgrade, write_engine
from .errors import AnnotationConflict, ImageNotFound, PermissionDenied, StorageError, StoreUnavailable, TraceNotFound
from .files import protect_paths, store_files
from .records import Annotator, ImageInfo, StoredRevisit, TraceSummary
from .schema import (
    AnnotationHeadRow,
    AnnotationRow,
    AnnotatorRow,
    ImageRow,
    ModelRow,
    RevisitRow,
    TraceChunkRow,
    TraceRow,
    TraceTagRow,
)


# ----------------------------------------------------------------------------- helpers
ANN_STATES = ("none", "single", "agree", "disagree", "consensus")


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_SUMMARY_COLS = (
    TraceRow.id, TraceRow.question, TraceRow.model_id, TraceRow.status, TraceRow.created_at, TraceRow.image_sha256,
    TraceRow.image_w, TraceRow.image_h, TraceRow.n_steps, TraceRow.n_revisits, TraceRow.source, TraceRow.parent_id,
    TraceRow.branch_step, TraceRow.tags, TraceRow.ann_version, TraceRow.verdict, TraceRow.annotator,
    TraceRow.has_corrections, TraceRow.n_annotators, TraceRow.consensus_version, TraceRow.ann_state,
)


def _insert_ignore(s: Session, model: Any, values: dict[str, Any], keys: Sequence[str]) -> None:
    """INSERT … ON CONFLICT DO NOTHING (safe when several writers create the same row at once)."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as ins
    else:
        from sqlalchemy.dialects.sqlite import insert as ins
    s.execute(ins(model).values(**values).on_conflict_do_nothing(index_elements=list(keys)))


def _image_row(data: bytes | None, width: int, height: int, format: str, path: str | os.PathLike | None
               ) -> dict[str, Any]:
    """The `images` row of `put_image` (sha256 of the bytes, or of the file at `path` when `data` is None)."""
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
    return dict(sha256=sha, width=int(width), height=int(height), format=str(format or "")[:16].upper(),
                data=stored, path=None if path is None else str(path), n_bytes=n, created_at=now_iso())


def _annotator_id(s: Session, name: str) -> int:
    _insert_ignore(s, AnnotatorRow, dict(name=name, role="annotator", created_at=now_iso()), ["name"])
    return int(s.scalar(select(AnnotatorRow.id).where(AnnotatorRow.name == name)))


def _insert_annotation(s: Session, trace_id: str, a: Annotation, *, version: int, created_at: str,
                       based_on: int | None, conflict: bool, make_head: bool, n_revisits: int, n_steps: int,
                       n_patches: int, seq: int, kind: str = "label", adopted_from: int | None = None) -> None:
    """Insert one version; when `make_head`, it becomes its annotator's head (kind label) or the trace's
    consensus head (kind consensus). The caller refreshes the denormalised heads (`_refresh_heads`)."""
    a.check_fits(n_revisits, n_steps, n_patches)
    annotator_id = _annotator_id(s, a.annotator)
    s.execute(AnnotationRow.__table__.insert().values(
        trace_id=trace_id, version=version, annotator_id=annotator_id, created_at=created_at,
        verdict=a.verdict, answer_correct=a.answer_correct, note=a.note, payload=a.payload(), based_on=based_on,
        conflict=conflict, kind=kind, adopted_from=adopted_from,
    ))
    values: dict[str, Any] = {"ann_seq": seq}
    if make_head and kind == "consensus":
        values["consensus_version"] = version
    elif make_head:
        n = s.execute(update(AnnotationHeadRow).where(AnnotationHeadRow.trace_id == trace_id,
                                                      AnnotationHeadRow.annotator_id == annotator_id)
                      .values(version=version, updated_at=created_at)).rowcount
        if not n:
            s.execute(AnnotationHeadRow.__table__.insert().values(trace_id=trace_id, annotator_id=annotator_id,
                                                                  version=version, updated_at=created_at))
    s.execute(update(TraceRow).where(TraceRow.id == trace_id).values(**values))


def _head_records(s: Session, trace_ids: Sequence[str]) -> dict[str, TraceHeads]:
    """{trace id: its heads} (annotators' own heads and the consensus head) in two queries."""
    out = {t: TraceHeads(trace_id=t) for t in trace_ids}
    if not out:
        return out
    ids = list(out)
    own = _records(s, and_(AnnotationRow.trace_id.in_(ids), exists().where(
        AnnotationHeadRow.trace_id == AnnotationRow.trace_id,
        AnnotationHeadRow.annotator_id == AnnotationRow.annotator_id,
        AnnotationHeadRow.version == AnnotationRow.version)))
    for rec in own:
        out[rec.trace_id].annotators[rec.annotator] = rec
    cons = _records(s, and_(AnnotationRow.trace_id.in_(ids), exists().where(
        TraceRow.id == AnnotationRow.trace_id, TraceRow.consensus_version == AnnotationRow.version,
        TraceRow.consensus_version > 0)))
    for rec in cons:
        out[rec.trace_id].consensus = rec
    return out


def _refresh_heads(s: Session, trace_id: str) -> None:
    """Recompute a trace's denormalised head columns and annotation tags from its heads (same transaction)."""
    heads = _head_records(s, [trace_id])[trace_id]
    state, chosen = resolve_export_head(heads.annotators, heads.consensus)
    a = chosen.annotation if chosen is not None else None
    s.execute(update(TraceRow).where(TraceRow.id == trace_id).values(
        ann_version=chosen.version if chosen else 0, verdict=a.verdict if a else None,
        annotator=a.annotator if a else None, has_corrections=bool(a and a.has_corrections),
        n_annotators=len(heads.annotators), ann_state=state))
    s.execute(delete(TraceTagRow).where(TraceTagRow.trace_id == trace_id, TraceTagRow.from_annotation.is_(True)))
    recs = [*heads.annotators.values(), *([heads.consensus] if heads.consensus else [])]
    tags = sorted({t for rec in recs for t in rec.annotation.tags})
    if tags:
        s.execute(TraceTagRow.__table__.insert(), [dict(trace_id=trace_id, tag=t, from_annotation=True) for t in tags])


def _records(s: Session, where: Any) -> list[AnnotationRecord]:
    q = select(AnnotationRow, AnnotatorRow.name).join(AnnotatorRow, AnnotatorRow.id == AnnotationRow.annotator_id)
    q = q.where(where).order_by(AnnotationRow.trace_id, AnnotationRow.version)
    out = []
    for r, name in s.execute(q):
        p = r.payload or {}
        a = Annotation.from_dict({"annotator": name, "verdict": r.verdict, "answer_correct": r.answer_correct,
                                  "note": r.note, **p})
        out.append(AnnotationRecord(trace_id=r.trace_id, version=r.version, created_at=r.created_at, annotation=a,
                                    based_on=r.based_on, conflict=bool(r.conflict), kind=r.kind or "label",
                                    adopted_from=r.adopted_from))
    return out


def _summary(r: Any) -> TraceSummary:
    return TraceSummary(
        trace_id=r.id, question=r.question, model_id=r.model_id, status=r.status, created_at=r.created_at,
        image_sha256=r.image_sha256, image_size=(r.image_w, r.image_h), n_steps=r.n_steps, n_revisits=r.n_revisits,
        source=r.source, parent_id=r.parent_id, branch_step=r.branch_step, tags=list(r.tags or []),
        annotation_version=r.ann_version, verdict=r.verdict, annotator=r.annotator,
        has_corrections=bool(r.has_corrections), n_annotators=int(r.n_annotators or 0),
        consensus_version=int(r.consensus_version or 0), annotation_state=r.ann_state or "none",
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
        u = make_url(self.url)
        self.db_file: Path | None = None  # the SQLite file (None: PostgreSQL or in-memory)
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
            self.db_file = Path(u.database).expanduser().resolve()
            protect_paths(store_files(self.db_file))  # no export may write over the database
        with self._translate_errors():
            if migrate:
                upgrade(self.engine)
            elif self.db_file is not None:
                with self.engine.connect():
                    pass  # creates the file, so its identity can be recorded
        self._identity = self._file_identity()

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

    @property
    def label(self) -> str:
        """The store's URL for messages, password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def _file_identity(self) -> tuple[int, int] | None:
        if self.db_file is None:
            return None
        try:
            st = os.stat(self.db_file)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check_file(self) -> None:
        """Raise `StoreUnavailable` when the SQLite file this store opened was deleted or replaced since (a save
        would go to an unlinked file and be lost on restart). One `stat` call; a no-op on PostgreSQL."""
        if self.db_file is None:
            return
        now = self._file_identity()
        if now is None:
            raise StoreUnavailable(f"the database file {self.db_file} was deleted while the studio was using it; "
                                   f"nothing more is saved — restore the file or restart the studio")
        if self._identity is not None and now != self._identity:
            raise StoreUnavailable(f"the database file {self.db_file} was replaced by another file while the studio "
                                   f"was using it; nothing more is saved — restart the studio to use the new file")

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Driver errors that mean "the database is not usable" (server down, database dropped, not a database
        file) become one `StoreUnavailable` sentence; other errors pass unchanged."""
        try:
            yield
        except (OperationalError, SQLDatabaseError) as exc:
            if not isinstance(exc, OperationalError) and "not a database" not in str(exc.orig):
                raise
            first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            raise StoreUnavailable(f"the database {self.label} cannot be used: {first}") from None

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction (BEGIN IMMEDIATE on SQLite): commits on success, rolls back on any error. The
        SQLite file's identity is checked before and, inside the transaction, just before the commit, so a save
        is acknowledged only when it went to the file the store opened."""
        self.check_file()
        with self._translate_errors(), Session(self._wengine, expire_on_commit=False) as s, s.begin():
            yield s
            self.check_file()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._translate_errors(), Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def transaction(self) -> Iterator["Transaction"]:
        """One write transaction: everything written through the yielded `Transaction` commits together when
        the block ends, or not at all if it raises (BEGIN IMMEDIATE on SQLite, so a writer waits for the lock
        up front). For writing many traces at once (the importer); single writes have their own methods."""
        with self._write() as s:
            yield Transaction(self, s)

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
        row = _image_row(data, width, height, format, path)  # checked (and a path file read) before locking
        with self._write() as s:
            _insert_ignore(s, ImageRow, row, ["sha256"])
        return row["sha256"]

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
            raise ImageNotFound(f"image {sha256} is stored as the path {row.path!r}, which cannot be read: {exc}") \
                from None

    def get_image_info(self, sha256: str) -> ImageInfo:
        """Size, format and byte count of a stored image. Raises `ImageNotFound` (a KeyError)."""
        with self._read() as s:
            r = s.execute(select(ImageRow.width, ImageRow.height, ImageRow.format, ImageRow.n_bytes, ImageRow.path)
                          .where(ImageRow.sha256 == sha256)).first()
        if r is None:
            raise ImageNotFound(f"no image {sha256} in the store")
        return ImageInfo(sha256=sha256, width=r.width, height=r.height, format=r.format, n_bytes=r.n_bytes,
                         path=r.path)

    def list_models(self) -> list[str]:
        with self._read() as s:
            return list(s.scalars(select(ModelRow.model_id).order_by(ModelRow.model_id)))

    # ------------------------------------------------------------------ traces: write
    @staticmethod
    def prepare_trace(trace: Trace) -> PreparedTrace:
        """Check a trace and serialise it (no database access; see `storage.codec.encode_trace`). Raises
        ValueError with the reason."""
        return encode_trace(trace)

    def save_trace(self, trace: Trace) -> str:
        """Save (insert or replace) a trace atomically; returns its id.

        A live trace can be saved with status 'running' and saved again when it is complete/failed/cancelled:
        each save replaces the steps in one transaction, so readers see either the old or the new version, and
        a trace is 'complete' only once it was saved complete. A finished trace cannot be overwritten by a
        'running' one. Its annotations are kept.
        """
        p = self.prepare_trace(trace)
        with self.transaction() as tx:
            tx.write_trace(p)
        return p.row["id"]

    def set_trace_tags(self, trace_id: str, tags: Sequence[str]) -> None:
        tags = [check_no_nul(t, "a tag").strip() for t in tags if t and t.strip()]
        with self._write() as s:
            self._visible_trace(s, trace_id, lock=True)
            s.execute(update(TraceRow).where(TraceRow.id == trace_id).values(tags=list(dict.fromkeys(tags)),
                                                                            updated_at=now_iso()))
            s.execute(delete(TraceTagRow).where(TraceTagRow.trace_id == trace_id,
                                                TraceTagRow.from_annotation.is_(False)))
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
        if "\x00" in str(trace_id):  # never stored (NUL is refused on save); PostgreSQL could not even compare it
            raise TraceNotFound(f"no trace {trace_id!r} in the store")
        q = select(TraceRow).where(TraceRow.id == str(trace_id))
        if lock:
            q = q.with_for_update()
        row = s.scalars(q).first()
        if row is None or row.deleted_at is not None:
            raise TraceNotFound(f"no trace {trace_id} in the store")
        return row

    # ------------------------------------------------------------------ traces: read
    def get_trace(self, trace_id: str) -> Trace:
        """The stored Trace (steps, float32 pointers decoded by `storage.codec`). Raises `TraceNotFound`."""
        with self._read() as s:
            row = self._visible_trace(s, trace_id)
            chunks = s.execute(select(TraceChunkRow.steps_json, TraceChunkRow.pointers)
                               .where(TraceChunkRow.trace_id == row.id).order_by(TraceChunkRow.chunk)).all()
        return decode_trace(row, chunks)

    def get_step(self, trace_id: str, index: int) -> Step:
        """One step with its pointer, reading only the chunk row that holds it (not the whole trace)."""
        with self._read() as s:
            if "\x00" in str(trace_id):
                raise TraceNotFound(f"no trace {trace_id!r} in the store")
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
        pointers = c.pointers if t.has_pointers else None
        return decode_step(c.steps_json, pointers, int(index) - c.first_step, (t.grid_rows, t.grid_cols))

    def get_steps(self, trace_id: str, start: int = 0, stop: int | None = None) -> list[Step]:
        """Steps `start:stop` with their pointers, reading and decoding only the chunk rows that hold them (a
        window of a 2,000-step trace without the rest). `stop` defaults to the end; the range is clipped to the
        trace's steps. Raises `TraceNotFound`."""
        with self._read() as s:
            t = s.execute(select(TraceRow.steps_per_chunk, TraceRow.n_steps, TraceRow.grid_rows, TraceRow.grid_cols,
                                 TraceRow.has_pointers, TraceRow.deleted_at).where(TraceRow.id == trace_id)).first()
            if t is None or t.deleted_at is not None:
                raise TraceNotFound(f"no trace {trace_id} in the store")
            a = max(0, int(start))
            b = t.n_steps if stop is None else min(int(stop), t.n_steps)
            if b <= a:
                return []
            per = max(1, int(t.steps_per_chunk))
            chunks = s.execute(select(TraceChunkRow.first_step, TraceChunkRow.steps_json, TraceChunkRow.pointers)
                               .where(TraceChunkRow.trace_id == trace_id, TraceChunkRow.chunk >= a // per,
                                      TraceChunkRow.chunk <= (b - 1) // per)
                               .order_by(TraceChunkRow.chunk)).all()
        grid = (t.grid_rows, t.grid_cols)
        out: list[Step] = []
        for c in chunks:
            lo = max(a - c.first_step, 0)
            hi = b - c.first_step
            out.extend(decode_steps(c.steps_json, c.pointers if t.has_pointers else None, lo, hi, grid))
        return out

    def get_revisits(self, trace_id: str) -> list[StoredRevisit]:
        """The stored revisits (as computed by `find_revisits` at save time), in order."""
        with self._read() as s:
            self._visible_trace(s, trace_id)
            rows = s.scalars(select(RevisitRow).where(RevisitRow.trace_id == trace_id).order_by(RevisitRow.idx)).all()
            return [StoredRevisit.from_row(r) for r in rows]

    def trace_stamp(self, trace_id: str) -> str | None:
        """A cheap fingerprint of the trace's stored version (one primary-key read, no steps): it changes whenever
        the trace is saved again (a live trace growing, finishing, being replaced by an import); None when there is
        no visible trace of that id. Caches of decoded traces compare it on every use (`app.resources`)."""
        if "\x00" in str(trace_id):
            return None
        with self._read() as s:
            r = s.execute(select(TraceRow.updated_at, TraceRow.status, TraceRow.n_steps, TraceRow.deleted_at)
                          .where(TraceRow.id == str(trace_id))).first()
        if r is None or r.deleted_at is not None:
            return None
        return f"{r.updated_at}|{r.status}|{r.n_steps}"

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
                trace_ids: Sequence[str] | None = None, include_deleted: bool = False,
                labelled_by: str | None = None, not_labelled_by: str | None = None,
                n_annotators: int | None = None, annotation_state: str | Sequence[str] | None = None) -> Any:
        conds = []
        texts = [v for v in (model, tag, search, source, parent_id, image_sha256, annotator) if isinstance(v, str)]
        if any("\x00" in v for v in texts) or any("\x00" in str(v) for v in (trace_ids or ())):
            conds.append(false())  # NUL is never stored, so nothing matches (the same on every backend)
        if not include_deleted:
            conds.append(TraceRow.deleted_at.is_(None))
        st = _as_list(status)
        if st is not None:
            bad = [v for v in st if v not in STATUSES]
            if bad:
                raise ValueError(f"unknown status {bad[0]!r}; one of {', '.join(STATUSES)}")
            conds.append(TraceRow.status.in_(st))
        if annotated is not None:
            labelled = or_(TraceRow.n_annotators > 0, TraceRow.consensus_version > 0)
            conds.append(labelled if annotated else ~labelled)
        vd = _as_list(verdict)
        if vd is not None:
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
        for name, want in ((labelled_by, True), (not_labelled_by, False)):
            if name:
                has = exists().where(AnnotationHeadRow.trace_id == TraceRow.id,
                                     AnnotationHeadRow.annotator_id == AnnotatorRow.id,
                                     AnnotatorRow.name == str(name).strip())
                conds.append(has if want else ~has)
        if n_annotators is not None:
            conds.append(TraceRow.n_annotators == int(n_annotators))
        states = _as_list(annotation_state)
        if states is not None:
            bad = [v for v in states if v not in ANN_STATES]
            if bad:
                raise ValueError(f"unknown annotation state {bad[0]!r}; one of {', '.join(ANN_STATES)}")
            conds.append(TraceRow.ann_state.in_(states))
        return q.where(and_(*conds)) if conds else q

    def list_traces(self, *, limit: int | None = 100, offset: int = 0, order: str = "newest",
                    **filters: Any) -> list[TraceSummary]:
        """Trace summaries, newest first. Filters (all optional, combined with AND): `status` (one or a list),
        `annotated` (bool: someone holds a head, or a reviewer ruled), `verdict` (of the head an export uses,
        one or a list), `model`, `tag` (trace or annotation tag), `search` (case-insensitive substring of
        question or output; wildcards are literal), `source`, `parent_id`, `image_sha256`, `annotator` (of the
        head an export uses), `has_corrections`, `trace_ids`, `include_deleted`, `labelled_by` /
        `not_labelled_by` (a name: that annotator holds / does not hold a head on the trace), `n_annotators`
        (exactly this many annotators hold a head; 1 = "needs a second annotator"), `annotation_state` (none,
        single, agree, disagree, consensus). Paging with `limit`/`offset`; `order` is 'newest' or 'oldest'."""
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
        name = check_no_nul((name or "").strip(), "an annotator name")
        if not name or len(name) > 100:
            raise ValueError("an annotator name must be 1–100 characters")
        with self._write() as s:
            _insert_ignore(s, AnnotatorRow, dict(name=name, role=role, created_at=now_iso()), ["name"])
            s.execute(update(AnnotatorRow).where(AnnotatorRow.name == name).values(role=role))

    def get_annotator(self, name: str) -> Annotator | None:
        """The annotator of this name, or None when nobody of that name is registered."""
        with self._read() as s:
            r = s.scalars(select(AnnotatorRow).where(AnnotatorRow.name == name)).first()
            return None if r is None else Annotator(name=r.name, role=r.role, created_at=r.created_at)

    def list_annotators(self) -> list[Annotator]:
        """Every registered annotator, by name."""
        with self._read() as s:
            return [Annotator(name=r.name, role=r.role, created_at=r.created_at)
                    for r in s.scalars(select(AnnotatorRow).order_by(AnnotatorRow.name))]

    def _require_reviewer(self, s: Session, name: str, action: str = "delete or restore traces") -> None:
        role = s.scalar(select(AnnotatorRow.role).where(AnnotatorRow.name == (name or "").strip()))
        if role != "reviewer":
            who = f"{name!r} is an annotator" if role else f"{name!r} is not a known annotator"
            raise PermissionDenied(f"only reviewers may {action}; {who}")

    # ------------------------------------------------------------------ annotations
    def save_annotation(self, trace_id: str, annotation: Annotation | Mapping[str, Any],
                        expected_version: int | None = None, *, expected_consensus: int | None = None) -> int:
        """Save a new version of the annotator's own label on the trace; returns its version number (versions
        are numbered per trace: 1, 2, … across everybody).

        Each annotator has their own head per trace: this save moves `annotation.annotator`'s head and nobody
        else's. `expected_version` is the version of *your own* head you loaded (0 = you had none; see
        `annotation_view`): if your head moved since (you saved from another tab), the save is still stored —
        as a *conflict* version in the history — and `AnnotationConflict` (stream 'own') is raised; the head
        does not change. `expected_consensus`, the consensus version you loaded, makes a *revision* of your
        label (expected_version > 0) conflict the same way (stream 'consensus') when a reviewer adjudicated
        since. `None` skips a check. An incomplete annotation (no verdict, `wrong_region` without a corrected
        region, an added revisit without a region) raises `IncompleteAnnotation` and stores nothing.
        """
        a = self._checked(annotation, expected_version, "expected_version")
        if expected_consensus is not None:
            self._checked_version(expected_consensus, "expected_consensus")
        with self._write() as s:
            row = self._visible_trace(s, trace_id, lock=True)
            a.check_fits(row.n_revisits, row.n_steps, row.grid_rows * row.grid_cols)
            a.check_complete()
            version = row.ann_seq + 1
            own = s.scalar(select(AnnotationHeadRow.version).join(
                AnnotatorRow, AnnotatorRow.id == AnnotationHeadRow.annotator_id).where(
                AnnotationHeadRow.trace_id == row.id, AnnotatorRow.name == a.annotator)) or 0
            error: AnnotationConflict | None = None
            if expected_version is not None and expected_version != own:
                error = AnnotationConflict(str(trace_id), int(expected_version), own, version, a.annotator, "own")
            elif (expected_consensus is not None and expected_version and row.consensus_version != expected_consensus):
                error = AnnotationConflict(str(trace_id), int(expected_consensus), row.consensus_version, version,
                                           self._name_of_version(s, row.id, row.consensus_version), "consensus")
            _insert_annotation(s, row.id, a, version=version, created_at=now_iso(), based_on=expected_version,
                               conflict=error is not None, make_head=error is None, n_revisits=row.n_revisits,
                               n_steps=row.n_steps, n_patches=row.grid_rows * row.grid_cols, seq=version)
            _refresh_heads(s, row.id)
        if error is not None:
            raise error
        return version

    def save_consensus(self, trace_id: str, annotation: Annotation | Mapping[str, Any], *, by: str,
                       expected_version: int | None = None, adopted_from: int | None = None) -> int:
        """A reviewer's ruling: a new version that becomes the trace's *consensus* head (what exports use),
        saved under the reviewer's name `by` (`PermissionDenied` for anyone else). Annotators' own heads do not
        change and agreement figures leave it out. `expected_version` is the consensus version the reviewer
        loaded (0 = none): a stale one is kept as a conflict version and raises `AnnotationConflict`
        (stream 'consensus'). Incomplete annotations raise `IncompleteAnnotation`."""
        d = Annotation.from_dict(annotation).to_dict()
        d["annotator"] = by
        a = self._checked(d, expected_version, "expected_version")
        with self._write() as s:
            self._require_reviewer(s, by, "adjudicate")
            row = self._visible_trace(s, trace_id, lock=True)
            a.check_fits(row.n_revisits, row.n_steps, row.grid_rows * row.grid_cols)
            a.check_complete()
            version = row.ann_seq + 1
            current = row.consensus_version
            error = None
            if expected_version is not None and expected_version != current:
                error = AnnotationConflict(str(trace_id), int(expected_version), current, version,
                                           self._name_of_version(s, row.id, current), "consensus")
            _insert_annotation(s, row.id, a, version=version, created_at=now_iso(), based_on=expected_version,
                               conflict=error is not None, make_head=error is None, n_revisits=row.n_revisits,
                               n_steps=row.n_steps, n_patches=row.grid_rows * row.grid_cols, seq=version,
                               kind="consensus", adopted_from=adopted_from)
            _refresh_heads(s, row.id)
        if error is not None:
            raise error
        return version

    def adopt_consensus(self, trace_id: str, annotator: str, *, by: str, expected_version: int | None = None) -> int:
        """Make `annotator`'s own head the trace's consensus: a consensus version by reviewer `by` with the
        same content, `adopted_from` = the adopted version. KeyError when that annotator has no head here."""
        with self._read() as s:
            heads = _head_records(s, [str(trace_id)])[str(trace_id)]
        rec = heads.annotators.get((annotator or "").strip())
        if rec is None:
            raise KeyError(f"{annotator!r} has no label on trace {trace_id} to adopt")
        return self.save_consensus(trace_id, rec.annotation, by=by, expected_version=expected_version,
                                   adopted_from=rec.version)

    def annotation_view(self, trace_id: str, annotator: str, *, show_others: bool = False) -> AnnotationView:
        """What `annotator` may see of the trace's labels. Blind by default: only their own head (and its
        version, to pass as `expected_version`), the consensus *version* number and the number of annotators.
        `show_others=True` (reviewers only, else `PermissionDenied`) adds every other annotator's head and the
        consensus head."""
        name = (annotator or "").strip()
        with self._read() as s:
            row = self._visible_trace(s, trace_id)
            if show_others:
                self._require_reviewer(s, name, "see other annotators' labels")
            heads = _head_records(s, [row.id])[row.id]
        own = heads.annotators.get(name)
        view = AnnotationView(trace_id=row.id, annotator=name, own=own, own_version=own.version if own else 0,
                              consensus_version=int(row.consensus_version or 0),
                              n_annotators=len(heads.annotators), shows_others=show_others)
        if show_others:
            view.others = {n: r for n, r in sorted(heads.annotators.items()) if n != name}
            view.consensus = heads.consensus
        return view

    @staticmethod
    def _checked_version(v: Any, what: str) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{what} must be a version number ≥ 0 or None, got {v!r}")

    def _checked(self, annotation: Annotation | Mapping[str, Any], expected: int | None, what: str) -> Annotation:
        a = copy.deepcopy(Annotation.from_dict(annotation)).validate()
        if expected is not None:
            self._checked_version(expected, what)
        return a

    @staticmethod
    def _name_of_version(s: Session, trace_id: str, version: int) -> str | None:
        if not version:
            return None
        return s.scalar(select(AnnotatorRow.name).join(AnnotationRow, AnnotationRow.annotator_id == AnnotatorRow.id)
                        .where(AnnotationRow.trace_id == trace_id, AnnotationRow.version == version))

    def annotation_history(self, trace_id: str, annotator: str | None = None) -> list[AnnotationRecord]:
        """Every saved version, oldest first (conflict and consensus versions included and marked); only
        `annotator`'s own stream when given."""
        with self._read() as s:
            self._visible_trace(s, trace_id)
            where = AnnotationRow.trace_id == trace_id
            if annotator is not None:
                where = and_(where, AnnotationRow.annotator_id == AnnotatorRow.id,
                             AnnotatorRow.name == annotator.strip(), AnnotationRow.kind == "label")
            return _records(s, where)

    def get_annotation(self, trace_id: str, version: int | None = None) -> AnnotationRecord | None:
        """The head an export uses (`export_heads`' rule; None when nobody labelled it or the annotators
        disagree and no reviewer ruled), or a given version."""
        with self._read() as s:
            row = self._visible_trace(s, trace_id)
            v = row.ann_version if version is None else int(version)
            if v <= 0:
                return None
            recs = _records(s, and_(AnnotationRow.trace_id == trace_id, AnnotationRow.version == v))
        return recs[0] if recs else None

    def current_annotations(self, trace_ids: Sequence[str]) -> dict[str, AnnotationRecord]:
        """The head an export uses, for each of these traces that has one (see `export_heads`)."""
        ids = list(trace_ids)
        if not ids:
            return {}
        with self._read() as s:
            recs = _records(s, and_(AnnotationRow.trace_id.in_(ids), exists().where(
                TraceRow.id == AnnotationRow.trace_id, TraceRow.ann_version == AnnotationRow.version)))
        return {r.trace_id: r for r in recs}

    # ------------------------------------------------------------------ bulk reads (export, agreement, …)
    def iter_trace_rows(self, *, batch: int = 500, **filters: Any) -> Iterator[list[TraceRow]]:
        """Every trace matching `filters` (those of `list_traces`), as pages of at most `batch` `traces` rows
        (no steps), oldest first in a stable order (created_at, id). The rows are detached: read their
        columns, do not modify them. Each page is its own read, so a long export does not hold a transaction."""
        last: tuple[str, str] | None = None
        while True:
            q = self._filter(select(TraceRow), **filters)
            if last is not None:
                q = q.where(or_(TraceRow.created_at > last[0],
                                and_(TraceRow.created_at == last[0], TraceRow.id > last[1])))
            q = q.order_by(TraceRow.created_at, TraceRow.id).limit(batch)
            with self._read() as s:
                rows = list(s.scalars(q))
                s.expunge_all()
            if not rows:
                return
            yield rows
            last = (rows[-1].created_at, rows[-1].id)

    def revisits_by_trace(self, trace_ids: Sequence[str]) -> dict[str, list[StoredRevisit]]:
        """{trace id: its stored revisits in order} for these traces, in one query."""
        out: dict[str, list[StoredRevisit]] = {t: [] for t in trace_ids}
        if not trace_ids:
            return out
        with self._read() as s:
            for r in s.scalars(select(RevisitRow).where(RevisitRow.trace_id.in_(list(trace_ids)))
                               .order_by(RevisitRow.trace_id, RevisitRow.idx)):
                out[r.trace_id].append(StoredRevisit.from_row(r))
        return out

    def history_by_trace(self, trace_ids: Sequence[str]) -> dict[str, list[AnnotationRecord]]:
        """{trace id: every saved annotation version, oldest first} for these traces, in one query."""
        out: dict[str, list[AnnotationRecord]] = {t: [] for t in trace_ids}
        if not trace_ids:
            return out
        with self._read() as s:
            for rec in _records(s, AnnotationRow.trace_id.in_(list(trace_ids))):
                out[rec.trace_id].append(rec)
        return out

    def heads_by_trace(self, trace_ids: Sequence[str]) -> dict[str, TraceHeads]:
        """{trace id: `TraceHeads`} — each annotator's own head and the consensus head — in two queries
        (agreement compares the annotators' heads; no version other than a head is read)."""
        with self._read() as s:
            return _head_records(s, list(dict.fromkeys(trace_ids)))

    def export_heads(self, trace_ids: Sequence[str]) -> dict[str, ExportHead]:
        """{trace id: `ExportHead`}: which annotation an export uses for each trace. The rule (docs/STORAGE.md):
        the consensus head where a reviewer adjudicated; else the only annotator's head; else the newest head
        when every annotator's head has the same training content (verdict, answer, revisit labels and
        regions, added revisits); else none, with the reason "annotators disagree — adjudicate in Review".
        A trace nobody labelled gets `reason` "not annotated"."""
        out = {}
        for tid, heads in self.heads_by_trace(trace_ids).items():
            state, rec = resolve_export_head(heads.annotators, heads.consensus)
            if rec is not None:
                out[tid] = ExportHead(tid, rec, STATE_RULES[state])
            else:
                out[tid] = ExportHead(tid, None, None, UNRESOLVED if state == "disagree" else "not annotated")
        return out

    def traces_for_rows(self, rows: Sequence[TraceRow], *, pointers: bool = True) -> list[Trace]:
        """The full Traces (steps and pointers) of rows from `iter_trace_rows`, in the same order.
        `pointers=False` reads only the steps (text exports: no pointer blob is read or decoded)."""
        ids = [r.id for r in rows]
        chunks: dict[str, list[Any]] = {i: [] for i in ids}
        cols = [TraceChunkRow.trace_id, TraceChunkRow.steps_json] + ([TraceChunkRow.pointers] if pointers else [])
        with self._read() as s:
            for c in s.execute(select(*cols).where(TraceChunkRow.trace_id.in_(ids))
                               .order_by(TraceChunkRow.trace_id, TraceChunkRow.chunk)):
                chunks[c.trace_id].append(c)
        return [decode_trace(r, chunks[r.id], pointers=pointers) for r in rows]

    def step_stats(self, trace_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{trace id: {"entropy": [...], "p_copy": [...], "is_copy": [...], "n_patches": int}} for these traces:
        each step's pointer entropy (nats), p_copy and whether it copied, read from the step JSON without
        decoding pointers (what the annotation queue's uncertainty score is made of)."""
        ids = list(dict.fromkeys(trace_ids))
        if not ids:
            return {}
        with self._read() as s:
            grids = {r.id: r.grid_rows * r.grid_cols for r in s.execute(
                select(TraceRow.id, TraceRow.grid_rows, TraceRow.grid_cols).where(TraceRow.id.in_(ids)))}
            chunks: dict[str, list[str]] = {t: [] for t in grids}
            for c in s.execute(select(TraceChunkRow.trace_id, TraceChunkRow.steps_json)
                               .where(TraceChunkRow.trace_id.in_(ids))
                               .order_by(TraceChunkRow.trace_id, TraceChunkRow.chunk)):
                chunks[c.trace_id].append(c.steps_json)
        return {t: {**step_columns(chunks[t], ("entropy", "p_copy", "is_copy")), "n_patches": n}
                for t, n in grids.items()}

    def step_texts(self, trace_id: str) -> list[str]:
        """The text of each step of a trace (no pointers decoded): where each step starts in `output_text`."""
        with self._read() as s:
            chunks = s.scalars(select(TraceChunkRow.steps_json).where(TraceChunkRow.trace_id == trace_id)
                               .order_by(TraceChunkRow.chunk)).all()
        return step_texts(chunks)


class Transaction:
    """The writes of one `Store.transaction()`: they commit together when its block ends, or not at all."""

    def __init__(self, store: Store, session: Session):
        self.store = store
        self.session = session

    def put_image(self, data: bytes | None, width: int, height: int, format: str = "PNG", *,
                  path: str | os.PathLike | None = None) -> str:
        """`Store.put_image` inside this transaction; returns the sha256."""
        row = _image_row(data, width, height, format, path)
        _insert_ignore(self.session, ImageRow, row, ["sha256"])
        return row["sha256"]

    def write_trace(self, p: PreparedTrace, *, replace_finished: bool = True) -> str:
        """Write one prepared trace (`Store.prepare_trace`) with its annotation history (`p.annotations`, only
        for a trace new to the store). A running trace of the same id is replaced; a finished one is replaced
        when `replace_finished`, else kept. A deleted id is refused (ValueError). Returns 'inserted',
        'replaced' or 'kept'."""
        s, tid = self.session, p.row["id"]
        _insert_ignore(s, ModelRow, dict(model_id=p.row["model_id"], created_at=now_iso()), ["model_id"])
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
            s.execute(TraceTagRow.__table__.insert(),
                      [dict(trace_id=tid, tag=t, from_annotation=False) for t in p.tags])
        if p.annotations and outcome == "inserted":
            for rec in sorted(p.annotations, key=lambda r: r.version):
                _insert_annotation(s, tid, rec.annotation, version=rec.version, created_at=rec.created_at,
                                   based_on=rec.based_on, conflict=rec.conflict, make_head=not rec.conflict,
                                   n_revisits=p.row["n_revisits"], n_steps=p.row["n_steps"],
                                   n_patches=p.row["grid_rows"] * p.row["grid_cols"], seq=rec.version,
                                   kind=rec.kind, adopted_from=rec.adopted_from)
            _refresh_heads(s, tid)
        return outcome


__all__ = [
    "ANN_STATES",
    "AnnotationConflict",
    "ImageNotFound",
    "PermissionDenied",
    "PreparedTrace",
    "STATUSES",
    "StorageError",
    "Store",
    "TraceNotFound",
    "TraceSummary",
    "Transaction",
    "now_iso",
]
