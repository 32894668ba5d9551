"""Trace ↔ rows: how a `v1core.Trace` is laid out in the tables, with no database access.

    encode_trace(trace)          → PreparedTrace (the `traces` row, its `trace_chunks`, `revisits`, tags)
    decode_trace(row, chunks)    → Trace           (inverse; pointers come back as float32)
    decode_step(...)             → Step            (one step from its chunk, without the rest of the trace)

Steps are stored `steps_per_chunk` to a `trace_chunks` row: the step fields as compact JSON (`Step.to_dict`) and
the pointer distributions as one little-endian float16 blob `[n, rows, cols]` (`to_float16`). The chunk size
keeps a chunk's blob near `CHUNK_BYTES`, so reading one step reads one small row at any grid size.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from v1core.trace import SCHEMA_VERSION, DecodingSettings, Step, Trace, find_revisits, pointers_from_bytes

from .annotations import AnnotationRecord, check_no_nul

STATUSES = ("running", "complete", "failed", "cancelled")
SOURCES = ("generated", "imported")
CHUNK_BYTES = 256 * 1024  # pointer bytes per chunk row (a 2,000-patch grid: 65 steps a row)
MAX_STEPS_PER_CHUNK = 256


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds (every `created_at` / `updated_at` the store writes)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# ----------------------------------------------------------------------------- float16 pointers
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


def f16_all_finite(h: np.ndarray) -> bool:
    """True when no float16 value is inf or NaN (exponent bits all set)."""
    return not ((h.view(np.uint16) & np.uint16(0x7C00)) == np.uint16(0x7C00)).any()


# ----------------------------------------------------------------------------- JSON columns
def dumps(obj: Any) -> str:
    """Compact JSON as stored in `steps_json`."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def json_safe(value: Any, what: str) -> Any:
    """`value` as plain JSON types; ValueError naming `what` when it cannot be serialised."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None


# ----------------------------------------------------------------------------- trace → rows
@dataclass
class PreparedTrace:
    """A trace checked and serialised, ready to be written in one transaction (`Transaction.write_trace`).

    `row` is the `traces` row, `chunks` the `trace_chunks` rows, `revisits` the `revisits` rows, `tags` the
    trace's own tags; `annotations` (history to insert with a new trace) is filled by the importer."""

    trace: Trace
    row: dict[str, Any]
    chunks: list[dict[str, Any]]
    revisits: list[dict[str, Any]]
    tags: list[str]
    annotations: list[AnnotationRecord] = field(default_factory=list)

    @property
    def n_patches(self) -> int:
        return int(self.row["grid_rows"]) * int(self.row["grid_cols"])

    def check_annotation(self, record: AnnotationRecord) -> None:
        """ValueError when the annotation refers to revisits, steps or patches this trace does not have."""
        record.annotation.check_fits(self.row["n_revisits"], self.row["n_steps"], self.n_patches)


def encode_trace(trace: Trace) -> PreparedTrace:
    """Check a trace and serialise it into rows. Raises ValueError with the reason."""
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
    for what, text in (("trace_id", tid), ("model_id", trace.model_id), ("the question", trace.question),
                       ("the system prompt", trace.system_prompt), ("the output text", trace.output_text),
                       ("the error message", trace.error), ("image_sha256", trace.image_sha256)):
        check_no_nul(str(text or ""), what)
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
    dicts = [st.to_dict() for st in steps]
    chunks = []
    for c, a in enumerate(range(0, len(steps), per)):
        b = min(a + per, len(steps))
        blob = None
        if has_ptr:  # chunk by chunk: float32 → float16 stays in cache
            h = to_float16(np.stack([st.pointer for st in steps[a:b]]))
            if not f16_all_finite(h):
                raise ValueError("a pointer distribution has NaN or infinite values (or values beyond "
                                 "float16's range)")
            blob = h.tobytes()
        chunks.append(dict(trace_id=tid, chunk=c, first_step=a, n_steps=b - a, steps_json=dumps(dicts[a:b]),
                           pointers=blob))
    rv_rows = [dict(
        trace_id=tid, idx=i, start_step=r.start_step, end_step=r.end_step, char_start=offsets[r.start_step],
        patches=[int(p) for p in r.patches], boxes=[[float(v) for v in b] for b in r.boxes], query=r.query,
        object_name=r.object_name, normalized_box=None if r.normalized_box is None else list(r.normalized_box),
    ) for i, r in enumerate(revisits)]
    tags: list[str] = []
    for t in trace.tags:
        t = check_no_nul(str(t), "a tag").strip()
        if not t or len(t) > 100:
            raise ValueError(f"tags must be 1–100 characters, got {t!r}")
        if t not in tags:
            tags.append(t)
    meta = json_safe(dict(trace.meta), "meta")
    item_key = meta.get("item_key") if isinstance(meta.get("item_key"), str) else None
    row = dict(
        id=tid, model_id=str(trace.model_id), image_sha256=str(trace.image_sha256 or ""),
        image_w=int(trace.image_size[0]), image_h=int(trace.image_size[1]),
        resized_w=int(trace.resized_size[0]), resized_h=int(trace.resized_size[1]),
        grid_rows=rows, grid_cols=cols, system_prompt=str(trace.system_prompt or ""),
        question=str(trace.question), settings=json_safe(trace.settings.to_dict(), "settings"),
        output_text=str(trace.output_text or ""), timings=json_safe(dict(trace.timings), "timings"),
        status=trace.status, error=trace.error, created_at=str(trace.created_at), updated_at=now_iso(),
        prompt_tokens=int(trace.prompt_tokens or 0), source=trace.source, parent_id=trace.parent_id,
        branch_step=None if trace.branch_step is None else int(trace.branch_step),
        branch_edit=json_safe(trace.branch_edit, "branch_edit"), tags=list(trace.tags), meta=meta,
        item_key=item_key[:64] if item_key else None, schema_version=SCHEMA_VERSION, n_steps=len(steps),
        n_revisits=len(revisits), has_pointers=has_ptr, steps_per_chunk=per,
    )
    return PreparedTrace(trace, row, chunks, rv_rows, tags)


# ----------------------------------------------------------------------------- rows → trace
def decode_trace(row: Any, chunks: Sequence[Any], *, pointers: bool = True) -> Trace:
    """The Trace of a `traces` row and its chunk rows in chunk order (objects with `steps_json` and `pointers`;
    with `pointers=False` the steps only, and the chunks need no `pointers`)."""
    step_dicts: list[dict[str, Any]] = []
    for c in chunks:
        step_dicts.extend(json.loads(c.steps_json))
    want = pointers
    pointers = None
    if want and row.has_pointers and step_dicts:
        pointers = pointers_from_bytes(b"".join(bytes(c.pointers) for c in chunks), len(step_dicts),
                                       (row.grid_rows, row.grid_cols))
    steps = [Step(**d) for d in step_dicts]
    if pointers is not None:
        for i, st in enumerate(steps):
            st.pointer = pointers[i]
    return Trace(
        model_id=row.model_id, image_sha256=row.image_sha256, image_size=(row.image_w, row.image_h),
        resized_size=(row.resized_w, row.resized_h), grid=(row.grid_rows, row.grid_cols), question=row.question,
        system_prompt=row.system_prompt, settings=DecodingSettings.from_dict(row.settings), steps=steps,
        output_text=row.output_text, timings=dict(row.timings or {}), status=row.status, error=row.error,
        trace_id=row.id, created_at=row.created_at, prompt_tokens=row.prompt_tokens, source=row.source,
        parent_id=row.parent_id, branch_step=row.branch_step, branch_edit=row.branch_edit,
        tags=list(row.tags or []), meta=dict(row.meta or {}),
    )


def decode_step(steps_json: str, pointers: bytes | None, j: int, grid: tuple[int, int]) -> Step:
    """Step `j` of one chunk row (its `steps_json` and pointer blob; `pointers=None` when the trace has none)."""
    step = Step(**json.loads(steps_json)[j])
    if pointers is not None:
        rows, cols = grid
        n = rows * cols * 2
        step.pointer = pointers_from_bytes(bytes(pointers[j * n:(j + 1) * n]), 1, (rows, cols))[0]
    return step


def step_columns(chunks_json: Sequence[str], fields: Sequence[str]) -> dict[str, list[Any]]:
    """{field: [value of every step]} for these step fields, from the chunks' `steps_json` in chunk order (no
    pointers decoded); a step without the field gives None."""
    out: dict[str, list[Any]] = {f: [] for f in fields}
    for c in chunks_json:
        for d in json.loads(c):
            for f in fields:
                out[f].append(d.get(f))
    return out


def step_texts(chunks_json: Sequence[str]) -> list[str]:
    """The text of every step, from the chunks' `steps_json` in chunk order (no pointers decoded)."""
    return [d["text"] for c in chunks_json for d in json.loads(c)]


__all__ = ["CHUNK_BYTES", "MAX_STEPS_PER_CHUNK", "PreparedTrace", "SOURCES", "STATUSES", "decode_step",
           "decode_trace", "dumps", "encode_trace", "f16_all_finite", "json_safe", "now_iso", "step_columns",
           "step_texts",
           "to_float16"]
