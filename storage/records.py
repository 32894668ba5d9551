"""What the store's getters return: small dataclasses, never ORM rows or dicts (annotations are in
`storage.annotations`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    annotation_version: int  # the head an export uses (0: nobody labelled it, or the annotators disagree)
    verdict: str | None
    annotator: str | None
    has_corrections: bool
    n_annotators: int = 0  # annotators holding their own head on the trace
    consensus_version: int = 0  # 0 until a reviewer rules
    annotation_state: str = "none"  # none / single / agree / disagree / consensus

    @property
    def id(self) -> str:
        return self.trace_id

    @property
    def annotated(self) -> bool:
        """Someone labelled it (the annotators may still disagree)."""
        return self.n_annotators > 0 or self.consensus_version > 0 or self.annotation_version > 0


@dataclass(frozen=True)
class ImageInfo:
    """An image's stored facts (`get_image_info`); `path` is set when only the path was stored."""

    sha256: str
    width: int
    height: int
    format: str  # "PNG", "JPEG", … (upper case, as stored)
    n_bytes: int
    path: str | None


@dataclass(frozen=True)
class Annotator:
    """A person who annotates (`get_annotator`, `list_annotators`); `role` is 'annotator' or 'reviewer'."""

    name: str
    role: str
    created_at: str


@dataclass(frozen=True)
class StoredRevisit:
    """A revisit as stored at save time (`find_revisits` of the trace): steps [start_step, end_step), the
    patches copied, their component boxes (original-image pixels), the `detect(...)` call around it, and
    `char_start`, the offset of its first step in `output_text`."""

    index: int
    start_step: int
    end_step: int
    char_start: int
    patches: list[int]
    boxes: list[tuple[float, ...]]
    query: str | None
    object_name: str | None
    normalized_box: tuple[float, ...] | None

    @classmethod
    def from_row(cls, r: Any) -> "StoredRevisit":
        return cls(index=r.idx, start_step=r.start_step, end_step=r.end_step, char_start=r.char_start,
                   patches=list(r.patches), boxes=[tuple(b) for b in r.boxes], query=r.query,
                   object_name=r.object_name,
                   normalized_box=None if r.normalized_box is None else tuple(r.normalized_box))


__all__ = ["Annotator", "ImageInfo", "StoredRevisit", "TraceSummary"]
