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
    """The head you loaded moved before you saved: `expected_version` was stale.

    Each annotator has their own head per trace, so this only happens when *your own* head moved (you saved
    from another tab or session) — `stream='own'` — or, for a consensus save or an annotator revising a label
    after a ruling, when the trace's consensus head moved (a reviewer adjudicated) — `stream='consensus'`.
    Another annotator's save never conflicts with yours.

    The rejected save is *kept* in the history as version `saved_version` (marked conflict) so nothing typed
    is lost; the head stays `current_version`. Compare the two (`storage.annotations.annotation_diff`) and save
    again with `expected_version=current_version` (keep mine) or load the head (take theirs).
    """

    def __init__(self, trace_id: str, expected_version: int, current_version: int, saved_version: int,
                 current_annotator: str | None, stream: str = "own"):
        self.trace_id = trace_id
        self.expected_version = expected_version
        self.current_version = current_version
        self.saved_version = saved_version
        self.current_annotator = current_annotator
        self.stream = stream
        if stream == "consensus":
            by = f" by {current_annotator}" if current_annotator else ""
            what = f"the consensus of trace {trace_id} was adjudicated{by} (version {current_version})"
        else:
            what = f"your own head on trace {trace_id} moved to version {current_version} (saved elsewhere)"
        super().__init__(
            f"{what} after you loaded version {expected_version}; your changes are kept in the history as "
            f"version {saved_version} — compare, then keep yours or take that version"
        )


class StoreUnavailable(StorageError):
    """The database cannot be used any more: its file was deleted or replaced, the server is gone, the database
    was dropped, or the file is not a database. Nothing was saved; the message says what happened."""


class IncompleteAnnotation(StorageError, ValueError):
    """An annotation that cannot be saved yet; `missing` lists what it lacks, each as a short phrase
    ("a verdict", "a corrected region for R2", …). Nothing was stored."""

    def __init__(self, missing: list[str]):
        self.missing = list(missing)
        super().__init__("not saved: it needs " + "; ".join(self.missing))


class PermissionDenied(StorageError, PermissionError):
    """The annotator's role does not allow this (only reviewers delete or restore traces)."""


__all__ = ["AnnotationConflict", "ImageNotFound", "IncompleteAnnotation", "PermissionDenied", "StorageError",
           "StoreUnavailable", "TraceNotFound"]
