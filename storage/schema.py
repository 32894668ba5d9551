"""Tables (SQLAlchemy 2 typed ORM). The Alembic migrations in `storage/migrations/versions` create exactly these
(a test compares them); change both together and add a new revision.

Layout:
  images            content-addressed by sha256 (bytes stored inline, or a path)
  models            one row per model_id
  traces            one row per decoding: question, settings, output, grid, status, lineage, and the resolved
                    annotation heads denormalised for fast filtering (export head version/verdict, number of
                    annotators, consensus version, state)
  trace_chunks      the per-step arrays, `steps_per_chunk` steps a row: step fields as compact JSON and the
                    float16 pointer blob ([n, rows, cols] little-endian) — one step is loaded by reading one row
  trace_tags        tags of the trace and of its current annotation (for filtering)
  revisits          runs of copy steps (derived from the steps at save time; for listing and export)
  annotators        name, role (annotator / reviewer)
  annotations       versioned, never overwritten: (trace_id, version) unique; kind label / consensus
  annotation_heads  each annotator's own head per trace: (trace_id, annotator_id) → version
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

HEAD_REVISION = "0002"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ImageRow(Base):
    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16), default="")
    data: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)
    path: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    n_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[str] = mapped_column(String(40))


class ModelRow(Base):
    __tablename__ = "models"

    model_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(40))


class TraceRow(Base):
    __tablename__ = "traces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"), index=True)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)  # no FK: images may arrive later
    image_w: Mapped[int] = mapped_column(Integer)
    image_h: Mapped[int] = mapped_column(Integer)
    resized_w: Mapped[int] = mapped_column(Integer)
    resized_h: Mapped[int] = mapped_column(Integer)
    grid_rows: Mapped[int] = mapped_column(Integer)
    grid_cols: Mapped[int] = mapped_column(Integer)
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    question: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    output_text: Mapped[str] = mapped_column(Text, default="")
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40), index=True)
    updated_at: Mapped[str] = mapped_column(String(40))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16), default="generated")
    # no FK: a branch may be imported before (or without) its parent
    parent_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True, index=True)
    branch_step: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    branch_edit: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    item_key: Mapped[Optional[str]] = mapped_column(String(64), nullable=True, index=True)
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    n_steps: Mapped[int] = mapped_column(Integer, default=0)
    n_revisits: Mapped[int] = mapped_column(Integer, default=0)
    has_pointers: Mapped[bool] = mapped_column(Boolean, default=False)
    steps_per_chunk: Mapped[int] = mapped_column(Integer, default=1)
    # the heads, denormalised from `annotations` / `annotation_heads` in the same transaction as every save:
    # ann_version / verdict / annotator / has_corrections are those of the head an export uses
    # (`storage.annotations.resolve_export_head`; 0 / NULL while annotators disagree or nobody labelled)
    ann_version: Mapped[int] = mapped_column(Integer, default=0)
    ann_seq: Mapped[int] = mapped_column(Integer, default=0)  # last version number handed out
    verdict: Mapped[Optional[str]] = mapped_column(String(16), nullable=True, index=True)
    annotator: Mapped[Optional[str]] = mapped_column(String(100), nullable=True)
    has_corrections: Mapped[bool] = mapped_column(Boolean, default=False)
    n_annotators: Mapped[int] = mapped_column(Integer, default=0, index=True)  # annotators holding a head
    consensus_version: Mapped[int] = mapped_column(Integer, default=0)  # 0 = no reviewer ruling
    ann_state: Mapped[str] = mapped_column(String(16), default="none")  # none/single/agree/disagree/consensus
    deleted_at: Mapped[Optional[str]] = mapped_column(String(40), nullable=True)
    deleted_by: Mapped[Optional[str]] = mapped_column(String(100), nullable=True)


class TraceChunkRow(Base):
    __tablename__ = "trace_chunks"

    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_step: Mapped[int] = mapped_column(Integer)
    n_steps: Mapped[int] = mapped_column(Integer)
    steps_json: Mapped[str] = mapped_column(Text)
    pointers: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)


class TraceTagRow(Base):
    __tablename__ = "trace_tags"

    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
    from_annotation: Mapped[bool] = mapped_column(Boolean, primary_key=True, default=False)


class RevisitRow(Base):
    __tablename__ = "revisits"

    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_step: Mapped[int] = mapped_column(Integer)
    end_step: Mapped[int] = mapped_column(Integer)
    char_start: Mapped[int] = mapped_column(Integer)  # offset of its first step in output_text
    patches: Mapped[list[int]] = mapped_column(JSON)
    boxes: Mapped[list[Any]] = mapped_column(JSON)
    query: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    object_name: Mapped[Optional[str]] = mapped_column(String(100), nullable=True)
    normalized_box: Mapped[Optional[list[float]]] = mapped_column(JSON, nullable=True)


class AnnotatorRow(Base):
    __tablename__ = "annotators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    created_at: Mapped[str] = mapped_column(String(40))


class AnnotationRow(Base):
    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("trace_id", "version"),
        Index("ix_annotations_annotator_id_trace_id", "annotator_id", "trace_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    created_at: Mapped[str] = mapped_column(String(40))
    verdict: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)
    answer_correct: Mapped[Optional[bool]] = mapped_column(Boolean, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    based_on: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    kind: Mapped[str] = mapped_column(String(16), default="label")  # label / consensus
    adopted_from: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # version a consensus copied


class AnnotationHeadRow(Base):
    """Each annotator's own head on a trace: their latest label version that was not a conflict (migration
    0002 also takes older conflict saves, which one shared head used to flag whenever someone else had saved).
    Consensus heads are `traces.consensus_version`."""

    __tablename__ = "annotation_heads"

    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), primary_key=True, index=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[str] = mapped_column(String(40))


metadata = Base.metadata

__all__ = [
    "AnnotationHeadRow",
    "AnnotationRow",
    "AnnotatorRow",
    "Base",
    "HEAD_REVISION",
    "ImageRow",
    "ModelRow",
    "RevisitRow",
    "TraceChunkRow",
    "TraceRow",
    "TraceTagRow",
    "metadata",
]
