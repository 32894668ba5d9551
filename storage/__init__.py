"""storage: traces, images and versioned annotations in SQLite (default) or PostgreSQL, plus import/export of
training data. The public API is `Store` and the annotation dataclasses; no SQL lives outside this package.

    from storage import Store, Annotation, RevisitLabel
    store = Store()                      # $V1STUDIO_DB or ./data/v1studio.db; migrations applied
    tid = store.save_trace(trace)
    v = store.save_annotation(tid, Annotation(annotator="ana", verdict="correct"), expected_version=0)
    view = store.annotation_view(tid, "ana")  # blind: ana's own head only

Exports, imports and agreement are functions that take a `Store` (`storage.export.export_v1g(store, out)`,
`storage.importer.import_path(store, path)`, `storage.agreement.compute_agreement(store)`); they use only
its public API. See docs/STORAGE.md.
"""

from __future__ import annotations

from .annotations import (
    REVISIT_LABELS,
    ROLES,
    UNRESOLVED,
    VERDICTS,
    AddedRevisit,
    Annotation,
    AnnotationRecord,
    AnnotationView,
    DiffRow,
    ExportHead,
    RevisitLabel,
    TraceHeads,
    annotation_diff,
)
from .errors import (
    AnnotationConflict,
    ImageNotFound,
    IncompleteAnnotation,
    PermissionDenied,
    StorageError,
    StoreUnavailable,
    TraceNotFound,
)
from .records import Annotator, ImageInfo, StoredRevisit, TraceSummary
from .store import Store, Transaction

__all__ = [
    "AddedRevisit",
    "Annotation",
    "AnnotationConflict",
    "AnnotationRecord",
    "AnnotationView",
    "Annotator",
    "DiffRow",
    "ExportHead",
    "ImageInfo",
    "ImageNotFound",
    "IncompleteAnnotation",
    "PermissionDenied",
    "REVISIT_LABELS",
    "ROLES",
    "RevisitLabel",
    "StorageError",
    "StoreUnavailable",
    "Store",
    "StoredRevisit",
    "TraceHeads",
    "TraceNotFound",
    "TraceSummary",
    "Transaction",
    "UNRESOLVED",
    "VERDICTS",
    "annotation_diff",
]
