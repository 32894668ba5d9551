"""The storage errors. Each message says what was refused and why; the lookup errors are `KeyError`s so that
`except KeyError` keeps working for callers that treat "not there" as a normal case."""

from __future__ import annotations


class StorageError(Exception):
    """Something the store refuses to do; the message says why."""


class TraceNotFound(KeyError):
    """No (visible) trace with this id."""

    def __str__(self) -> str:  # KeyError would show the repr
        return str(self.args[0]) if self.args else "trace not found"


class ImageNotFound(KeyError):
    """No image with this sha256, or its stored path cannot be read."""

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


class StoreUnavailable(StorageError):
    """The database cannot be used any more: its file was deleted or replaced, the server is gone, the database
    was dropped, or the file is not a database. Nothing was saved; the message says what happened."""


class PermissionDenied(StorageError, PermissionError):
    """The annotator's role does not allow this (only reviewers delete or restore traces)."""


__all__ = ["AnnotationConflict", "ImageNotFound", "PermissionDenied", "StorageError", "StoreUnavailable",
           "TraceNotFound"]
