"""The annotation payload: what a person said about one trace. Plain dataclasses, validated, JSON-able.

An annotation is saved as a new *version* every time (never overwritten); see `Store.save_annotation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

VERDICTS = ("correct", "incorrect", "unsure")
REVISIT_LABELS = ("correct", "wrong_region", "unnecessary")
ROLES = ("annotator", "reviewer")

MAX_NOTE = 20_000
MAX_NAME = 100
MAX_TAG = 100

Box = tuple[float, float, float, float]


def _check_box(box: Any, what: str) -> Box | None:
    if box is None:
        return None
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence) or len(box) != 4:
        raise ValueError(f"{what} must be (x0, y0, x1, y1) in original-image pixels, got {box!r}")
    try:
        vals = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must hold 4 numbers, got {box!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{what} has a non-finite coordinate: {box!r}")
    x0, y0, x1, y1 = vals
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"{what} must have x1 > x0 and y1 > y0 (a box with an area), got {box!r}")
    if min(vals) < 0:
        raise ValueError(f"{what} has a negative coordinate: {box!r}")
    return vals  # type: ignore[return-value]


def _check_patches(patches: Any, what: str) -> list[int] | None:
    if patches is None:
        return None
    if isinstance(patches, (str, bytes)) or not isinstance(patches, (Sequence, set, frozenset)):
        raise ValueError(f"{what} must be a list of patch ids, got {patches!r}")
    out = []
    for p in patches:
        if isinstance(p, bool) or not hasattr(p, "__index__"):
            raise ValueError(f"{what} must hold integer patch ids, got {p!r}")
        p = int(p.__index__())
        if p < 0:
            raise ValueError(f"{what} has a negative patch id {p}")
        out.append(p)
    return sorted(set(out))


def check_no_nul(value: str, what: str) -> str:
    """`value` unchanged, or ValueError when it holds a NUL character. NUL is the one character PostgreSQL's text
    cannot hold, so the store refuses it on every backend alike (SQLite would keep it); every other character,
    other control characters included, is stored exactly as given."""
    i = value.find("\x00")
    if i >= 0:
        raise ValueError(f"{what} contains a NUL character (\\x00) at position {i}; remove it and save again "
                         f"(every other character is kept as typed)")
    return value


def _check_str(value: Any, what: str, limit: int, allow_empty: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {type(value).__name__}")
    check_no_nul(value, what)
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters; the limit is {limit}")
    return value


@dataclass
class RevisitLabel:
    """The annotator's judgement of one revisit (by its index in `trace.revisits`)."""

    revisit_index: int
    label: str  # correct / wrong_region / unnecessary
    corrected_patches: list[int] | None = None
    corrected_box: Box | None = None  # original-image pixels (x0, y0, x1, y1)

    def validate(self) -> "RevisitLabel":
        if isinstance(self.revisit_index, bool) or not isinstance(self.revisit_index, int) or self.revisit_index < 0:
            raise ValueError(f"revisit_index must be a non-negative integer, got {self.revisit_index!r}")
        if self.label not in REVISIT_LABELS:
            raise ValueError(
                f"revisit label must be one of {', '.join(repr(v) for v in REVISIT_LABELS)}, got {self.label!r}"
            )
        self.corrected_patches = _check_patches(self.corrected_patches, "corrected_patches")
        self.corrected_box = _check_box(self.corrected_box, "corrected_box")
        if self.label != "wrong_region" and (self.corrected_patches or self.corrected_box):
            raise ValueError(
                f"revisit {self.revisit_index}: a corrected region only goes with the label 'wrong_region', "
                f"not {self.label!r}"
            )
        return self

    @property
    def has_correction(self) -> bool:
        return bool(self.corrected_patches) or self.corrected_box is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "revisit_index": self.revisit_index,
            "label": self.label,
            "corrected_patches": None if self.corrected_patches is None else list(self.corrected_patches),
            "corrected_box": None if self.corrected_box is None else list(self.corrected_box),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "RevisitLabel") -> "RevisitLabel":
        if isinstance(d, RevisitLabel):
            return d
        if not isinstance(d, Mapping):
            raise ValueError(f"a revisit label must be an object, got {d!r}")
        box = d.get("corrected_box")
        return cls(
            revisit_index=d.get("revisit_index"),  # type: ignore[arg-type]
            label=d.get("label"),  # type: ignore[arg-type]
            corrected_patches=d.get("corrected_patches"),
            corrected_box=tuple(box) if isinstance(box, (list, tuple)) else box,  # type: ignore[arg-type]
        )


@dataclass
class AddedRevisit:
    """A revisit the model should have made: before decoding step `step`, look at this region for `query`."""

    step: int
    patches: list[int] = field(default_factory=list)
    box: Box | None = None
    query: str = ""

    def validate(self) -> "AddedRevisit":
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise ValueError(f"added revisit step must be a non-negative integer, got {self.step!r}")
        self.patches = _check_patches(self.patches, "added revisit patches") or []
        self.box = _check_box(self.box, "added revisit box")
        self.query = _check_str(self.query, "added revisit query", 1000)
        if not self.patches and self.box is None:
            raise ValueError(f"the revisit added at step {self.step} needs patches or a box")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "patches": list(self.patches),
            "box": None if self.box is None else list(self.box),
            "query": self.query,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "AddedRevisit") -> "AddedRevisit":
        if isinstance(d, AddedRevisit):
            return d
        if not isinstance(d, Mapping):
            raise ValueError(f"an added revisit must be an object, got {d!r}")
        box = d.get("box")
        return cls(
            step=d.get("step"),  # type: ignore[arg-type]
            patches=list(d.get("patches") or []),
            box=tuple(box) if isinstance(box, (list, tuple)) else box,  # type: ignore[arg-type]
            query=d.get("query") or "",
        )


@dataclass
class Annotation:
    """One annotator's judgement of a trace. `Store.save_annotation` stores it as a new version."""

    annotator: str
    verdict: str | None = None  # correct / incorrect / unsure
    answer_correct: bool | None = None
    note: str = ""
    tags: list[str] = field(default_factory=list)
    revisit_labels: list[RevisitLabel] = field(default_factory=list)
    added_revisits: list[AddedRevisit] = field(default_factory=list)

    def validate(self) -> "Annotation":
        """Check and normalise every field in place; raises ValueError with a readable message."""
        self.annotator = _check_str(self.annotator, "annotator", MAX_NAME, allow_empty=False).strip()
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ValueError(
                f"verdict must be one of {', '.join(repr(v) for v in VERDICTS)} or None, got {self.verdict!r}"
            )
        if self.answer_correct is not None and not isinstance(self.answer_correct, bool):
            raise ValueError(f"answer_correct must be True, False or None, got {self.answer_correct!r}")
        self.note = _check_str(self.note, "note", MAX_NOTE)
        if isinstance(self.tags, str) or not isinstance(self.tags, (list, tuple, set)):
            raise ValueError(f"tags must be a list of strings, got {self.tags!r}")
        tags: list[str] = []
        for t in self.tags:
            t = _check_str(t, "tag", MAX_TAG, allow_empty=False).strip()
            if t not in tags:
                tags.append(t)
        self.tags = tags
        self.revisit_labels = [RevisitLabel.from_dict(r).validate() for r in (self.revisit_labels or [])]
        seen: set[int] = set()
        for r in self.revisit_labels:
            if r.revisit_index in seen:
                raise ValueError(f"revisit {r.revisit_index} is labelled twice")
            seen.add(r.revisit_index)
        self.revisit_labels.sort(key=lambda r: r.revisit_index)
        self.added_revisits = [AddedRevisit.from_dict(a).validate() for a in (self.added_revisits or [])]
        return self

    @property
    def has_corrections(self) -> bool:
        """True when a region was corrected or a missing revisit added (what `--only-corrected` keeps)."""
        return any(r.has_correction for r in self.revisit_labels) or bool(self.added_revisits)

    def check_fits(self, n_revisits: int, n_steps: int, n_patches: int) -> None:
        """ValueError when a label names a revisit the trace does not have, or a patch or step outside it."""
        for r in self.revisit_labels:
            if r.revisit_index >= n_revisits:
                raise ValueError(f"revisit {r.revisit_index} does not exist; this trace has {n_revisits} revisit(s)")
            bad = [p for p in (r.corrected_patches or []) if p >= n_patches]
            if bad:
                raise ValueError(f"revisit {r.revisit_index}: patch {bad[0]} is outside the grid ({n_patches} patches)")
        for ad in self.added_revisits:
            if ad.step > n_steps:
                raise ValueError(f"added revisit at step {ad.step}, but the trace has {n_steps} steps")
            bad = [p for p in ad.patches if p >= n_patches]
            if bad:
                raise ValueError(f"added revisit: patch {bad[0]} is outside the grid ({n_patches} patches)")

    def label_for(self, revisit_index: int) -> RevisitLabel | None:
        for r in self.revisit_labels:
            if r.revisit_index == revisit_index:
                return r
        return None

    def payload(self) -> dict[str, Any]:
        """The parts stored as JSON (the rest are columns)."""
        return {
            "tags": list(self.tags),
            "revisit_labels": [r.to_dict() for r in self.revisit_labels],
            "added_revisits": [a.to_dict() for a in self.added_revisits],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "annotator": self.annotator,
            "verdict": self.verdict,
            "answer_correct": self.answer_correct,
            "note": self.note,
            **self.payload(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "Annotation") -> "Annotation":
        if isinstance(d, Annotation):
            return d
        if not isinstance(d, Mapping):
            raise ValueError(f"an annotation must be an object, got {type(d).__name__}")
        labels = d.get("revisit_labels") or []
        added = d.get("added_revisits") or []
        if not isinstance(labels, list) or not isinstance(added, list):
            raise ValueError("revisit_labels and added_revisits must be lists")
        return cls(
            annotator=d.get("annotator"),  # type: ignore[arg-type]
            verdict=d.get("verdict"),
            answer_correct=d.get("answer_correct"),
            note=d.get("note") or "",
            tags=d.get("tags") if isinstance(d.get("tags"), str) else list(d.get("tags") or []),
            revisit_labels=[RevisitLabel.from_dict(r) for r in labels],
            added_revisits=[AddedRevisit.from_dict(a) for a in added],
        )


@dataclass
class AnnotationRecord:
    """One stored version of a trace's annotation.

    `conflict` marks a save whose `expected_version` was stale: it is kept in the history (nothing typed is
    lost) but did not become the trace's current annotation. `based_on` is the version the annotator had
    loaded (None when they saved without a check).
    """

    trace_id: str
    version: int
    created_at: str
    annotation: Annotation
    based_on: int | None = None
    conflict: bool = False

    @property
    def annotator(self) -> str:
        return self.annotation.annotator

    @property
    def verdict(self) -> str | None:
        return self.annotation.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created_at": self.created_at,
            "based_on": self.based_on,
            "conflict": self.conflict,
            **self.annotation.to_dict(),
        }

    @classmethod
    def from_dict(cls, trace_id: str, d: Mapping[str, Any]) -> "AnnotationRecord":
        if not isinstance(d, Mapping):
            raise ValueError("an annotation record must be an object")
        version = d.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"annotation version must be a positive integer, got {version!r}")
        created = d.get("created_at")
        if not isinstance(created, str) or not created:
            raise ValueError("annotation created_at must be an ISO time string")
        based_on = d.get("based_on")
        if based_on is not None and (isinstance(based_on, bool) or not isinstance(based_on, int)):
            raise ValueError(f"annotation based_on must be an integer or null, got {based_on!r}")
        return cls(
            trace_id=trace_id,
            version=version,
            created_at=created,
            annotation=Annotation.from_dict(d).validate(),
            based_on=based_on,
            conflict=bool(d.get("conflict", False)),
        )


__all__ = [
    "AddedRevisit",
    "Annotation",
    "AnnotationRecord",
    "REVISIT_LABELS",
    "ROLES",
    "RevisitLabel",
    "VERDICTS",
]
