"""The annotation payload: what a person said about one trace. Plain dataclasses, validated, JSON-able.

An annotation is saved as a new *version* every time (never overwritten); see `Store.save_annotation`.
Each annotator has their own stream of versions per trace and their own *head* (their latest save); a
reviewer's ruling is a separate *consensus* head (`kind="consensus"`). This module also owns the rules that
work on those heads without a database: what a save must contain (`Annotation.check_complete`), the
field-level comparison of two annotations (`annotation_diff`) and which head an export uses
(`resolve_export_head`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import IncompleteAnnotation

VERDICTS = ("correct", "incorrect", "unsure")
KINDS = ("label", "consensus")  # an annotator's own label / a reviewer's ruling
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
            raise IncompleteAnnotation([f"a region for the revisit added before step {self.step} "
                                        f"(the revisit added at step {self.step} needs patches or a box)"])
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

    def missing(self) -> list[str]:
        """What this annotation lacks to be saved, as short phrases (empty when complete): a verdict, a corrected
        region for every revisit labelled `wrong_region` (R1 = revisit 0), a region for every added revisit."""
        out = []
        if self.verdict is None:
            out.append("a verdict (correct / incorrect / unsure)")
        for r in self.revisit_labels:
            if r.label == "wrong_region" and not r.has_correction:
                out.append(f"a corrected region for R{r.revisit_index + 1} (it is labelled wrong_region)")
        for j, ad in enumerate(self.added_revisits):
            if not ad.patches and ad.box is None:
                out.append(f"a region for the revisit added before step {ad.step} (added revisit {j + 1})")
        return out

    def check_complete(self) -> None:
        """`IncompleteAnnotation` naming everything `missing()` finds; the store calls it on every new save."""
        missing = self.missing()
        if missing:
            raise IncompleteAnnotation(missing)

    def training_content(self) -> tuple[Any, ...]:
        """What an export turns into training data (verdict, answer, revisit labels and regions, added revisits);
        notes and tags are left out. Two annotators *agree* on a trace when these are equal."""
        return (
            self.verdict,
            self.answer_correct,
            tuple((r.revisit_index, r.label, tuple(r.corrected_patches or ()), r.corrected_box)
                  for r in sorted(self.revisit_labels, key=lambda r: r.revisit_index)),
            tuple(sorted((a.step, tuple(a.patches), a.box or (), a.query) for a in self.added_revisits)),
        )

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

    Versions are numbered per trace (1, 2, … across everybody, gapless); the versions of one annotator are
    their own stream. `kind` is "label" (an annotator's own judgement) or "consensus" (a reviewer's ruling,
    `annotation.annotator` being the reviewer; `adopted_from` is the version it copied, when it adopted an
    annotator's head). `conflict` marks a save whose `expected_version` was stale: it is kept in the history
    (nothing typed is lost) but did not move the head. `based_on` is the head version the person had loaded
    (None when they saved without a check).
    """

    trace_id: str
    version: int
    created_at: str
    annotation: Annotation
    based_on: int | None = None
    conflict: bool = False
    kind: str = "label"
    adopted_from: int | None = None

    @property
    def is_consensus(self) -> bool:
        return self.kind == "consensus"

    @property
    def annotator(self) -> str:
        return self.annotation.annotator

    @property
    def verdict(self) -> str | None:
        return self.annotation.verdict

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "version": self.version,
            "created_at": self.created_at,
            "based_on": self.based_on,
            "conflict": self.conflict,
        }
        if self.kind != "label":  # only when set, so label histories read as before
            d["kind"] = self.kind
        if self.adopted_from is not None:
            d["adopted_from"] = self.adopted_from
        return {**d, **self.annotation.to_dict()}

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
        kind = d.get("kind", "label")
        if kind not in KINDS:
            raise ValueError(f"annotation kind must be one of {', '.join(KINDS)}, got {kind!r}")
        adopted = d.get("adopted_from")
        if adopted is not None and (isinstance(adopted, bool) or not isinstance(adopted, int)):
            raise ValueError(f"annotation adopted_from must be an integer or null, got {adopted!r}")
        return cls(
            trace_id=trace_id,
            version=version,
            created_at=created,
            annotation=Annotation.from_dict(d).validate(),
            based_on=based_on,
            conflict=bool(d.get("conflict", False)),
            kind=kind,
            adopted_from=adopted,
        )


# ----------------------------------------------------------------------------- heads
@dataclass
class TraceHeads:
    """The heads of one trace: each annotator's own latest label (`annotators`, by name) and the reviewers'
    consensus head (None until a reviewer adjudicates)."""

    trace_id: str
    annotators: dict[str, AnnotationRecord] = field(default_factory=dict)
    consensus: AnnotationRecord | None = None


@dataclass
class AnnotationView:
    """What one person may see of a trace's labels (`Store.annotation_view`).

    `own` is their own head (None before their first save) and `own_version` its version (0 = none): pass it
    as `expected_version`. Blind by default: `others` is empty and `consensus` None unless a reviewer asked to
    see them. `consensus_version` (a number only, nothing of its content) lets a save detect a ruling made
    since loading; `n_annotators` is how many people hold a head on the trace.
    """

    trace_id: str
    annotator: str
    own: AnnotationRecord | None
    own_version: int
    consensus_version: int
    n_annotators: int
    others: dict[str, AnnotationRecord] = field(default_factory=dict)
    consensus: AnnotationRecord | None = None
    shows_others: bool = False


UNRESOLVED = "annotators disagree — adjudicate in Review"
EXPORT_RULES = ("consensus", "single annotator", "annotators agree")


@dataclass
class ExportHead:
    """Which annotation an export uses for one trace (`Store.export_heads`). `record` is None when the trace is
    skipped, with `reason` saying why; otherwise `rule` says which rule picked it (one of `EXPORT_RULES`)."""

    trace_id: str
    record: AnnotationRecord | None
    rule: str | None
    reason: str | None = None


def resolve_export_head(heads: Mapping[str, AnnotationRecord], consensus: AnnotationRecord | None
                        ) -> tuple[str, AnnotationRecord | None]:
    """(state, record) of one trace under the export rule: the consensus head where a reviewer adjudicated
    (state "consensus"); else the only annotator's head ("single"); else, when every annotator's head has the
    same `training_content`, the newest of them ("agree"); else nothing ("disagree"). No heads: ("none", None)."""
    if consensus is not None:
        return "consensus", consensus
    recs = sorted(heads.values(), key=lambda r: r.version)
    if not recs:
        return "none", None
    if len(recs) == 1:
        return "single", recs[0]
    if len({r.annotation.training_content() for r in recs}) == 1:
        return "agree", recs[-1]
    return "disagree", None


STATE_RULES = {"consensus": "consensus", "single": "single annotator", "agree": "annotators agree"}


# ----------------------------------------------------------------------------- diff
@dataclass(frozen=True)
class DiffRow:
    """One field of two annotations side by side, as readable text ("—" when unset). `same` says whether
    they are equal."""

    field: str
    mine: str
    theirs: str
    same: bool


def _yes_no(v: bool | None) -> str:
    return "—" if v is None else ("yes" if v else "no")


def _region_text(lab: RevisitLabel | None) -> str:
    if lab is None or not lab.has_correction:
        return "—"
    parts = []
    if lab.corrected_patches:
        parts.append("patches " + " ".join(str(p) for p in lab.corrected_patches))
    if lab.corrected_box is not None:
        parts.append("box (" + ", ".join(f"{v:g}" for v in lab.corrected_box) + ")")
    return " · ".join(parts)


def _added_text(a: AddedRevisit | None) -> str:
    if a is None:
        return "—"
    where = ("patches " + " ".join(str(p) for p in a.patches)) if a.patches else ""
    if a.box is not None:
        where = (where + " · " if where else "") + "box (" + ", ".join(f"{v:g}" for v in a.box) + ")"
    return f"before step {a.step} · query {a.query!r} · {where or 'no region'}"


def annotation_diff(mine: Annotation | None, theirs: Annotation | None) -> list[DiffRow]:
    """Field-level rows comparing two annotations (either may be None = nothing saved): verdict, answer
    correct, note, tags, each revisit's label and corrected region (R1 = revisit 0), each added revisit. Every
    field that either side sets is listed, with `same` telling whether it differs; render it as a table."""
    def rows_for(a: Annotation | None) -> dict[str, str]:
        if a is None:
            return {}
        d = {"verdict": a.verdict or "—", "answer correct": _yes_no(a.answer_correct), "note": a.note or "—",
             "tags": ", ".join(a.tags) or "—"}
        for r in a.revisit_labels:
            d[f"R{r.revisit_index + 1} label"] = r.label
            d[f"R{r.revisit_index + 1} region"] = _region_text(r)
        for j, ad in enumerate(sorted(a.added_revisits, key=lambda x: (x.step, x.query))):
            d[f"added revisit {j + 1}"] = _added_text(ad)
        return d

    m, t = rows_for(mine), rows_for(theirs)
    base = ["verdict", "answer correct", "note", "tags"]
    extra = sorted((set(m) | set(t)) - set(base), key=_diff_order)
    out = []
    for f in base + extra:
        a, b = m.get(f, "—"), t.get(f, "—")
        out.append(DiffRow(f, a, b, a == b))
    return out


def _diff_order(name: str) -> tuple[int, int, str]:
    if name.startswith("R") and " " in name:
        head, _, rest = name.partition(" ")
        if head[1:].isdigit():
            return (0, int(head[1:]), rest)
    if name.startswith("added revisit "):
        n = name.rsplit(" ", 1)[-1]
        return (1, int(n) if n.isdigit() else 0, "")
    return (2, 0, name)


__all__ = [
    "AddedRevisit",
    "Annotation",
    "AnnotationRecord",
    "AnnotationView",
    "DiffRow",
    "EXPORT_RULES",
    "ExportHead",
    "IncompleteAnnotation",
    "KINDS",
    "REVISIT_LABELS",
    "ROLES",
    "RevisitLabel",
    "STATE_RULES",
    "TraceHeads",
    "UNRESOLVED",
    "VERDICTS",
    "annotation_diff",
    "resolve_export_head",
]
