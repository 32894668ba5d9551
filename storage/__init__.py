"""storage: traces, images and versioned annotations in SQLite (default) or PostgreSQL, plus import/export of
training data. The public API is `Store` and the annotation dataclasses; no SQL lives outside this package.

    from storage import Store, Annotation, RevisitLabel
    store = Store()                      # $V1STUDIO_DB or ./data/v1studio.db; migrations applied
    tid = store.save_trace(trace)
    v = store.save_annotation(tid, Annotation(annotator="ana", verdict="correct"), expected_version=0)

See docs/STORAGE.md.
"""

from __future__ import annotations

from .annotations import VERDICTS, REVISIT_LABELS, ROLES, AddedRevisit, Annotation, AnnotationRecord, RevisitLabel
from .store import (
    AnnotationConflict,
    ImageNotFound,
    PermissionDenied,
    StorageError,
    Store,
    TraceNotFound,
    TraceSummary,
)

__all__ = [
    "AddedRevisit",
    "Annotation",
    "AnnotationConflict",
    "AnnotationRecord",
    "ImageNotFound",
    "PermissionDenied",
    "REVISIT_LABELS",
    "ROLES",
    "RevisitLabel",
    "StorageError",
    "Store",
    "TraceNotFound",
    "TraceSummary",
    "VERDICTS",
]
