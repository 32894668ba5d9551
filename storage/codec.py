"""Trace ↔ rows: how a `v1core.Trace` is laid out in the tables, with no database access.

    encode_trace(trace)          → PreparedTrace (the `traces` row, its `trace_chunks`, `revisits`, tags)
    decode_trace(row, chunks)    → Trace           (inverse; pointers come back as float32)
    decode_step(...)             → Step            (one step from its chunk, without the rest of the trace)

Steps are stored `steps_per_chunk` to a `trace_chunks` row: the step fields as compact JSON (`Step.to_dict`) and
the pointer distributions as one `storage.pointer_codec` blob (`encode_pointers`): text steps within total
variation `POINTER_TV` of what the model computed, copy steps (and steps with p_copy ≥ 0.2) within
`POINTER_COPY_TV`; `$V1STUDIO_POINTERS=lossless` stores every step as exact float16. Chunks written before the
codec hold raw little-endian float16 `[n, rows, cols]` (`to_float16`) and still read, bit for bit. The chunk size
keeps a chunk near `CHUNK_BYTES` of float16, so reading one step decodes one small row at any grid size.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from v1core.trace import SCHEMA_VERSION, DecodingSettings, Step, Trace, find_revisits

from . import pointer_codec
from .annotations import AnnotationRecord, check_no_nul
from .pointer_codec import f16_all_finite, to_float16

STATUSES = ("running", "complete", "failed", "cancelled")
SOURCES = ("generated", "imported")
CHUNK_BYTES = 256 * 1024  # pointer bytes per chunk row (a 2,000-patch grid: 65 steps a row)
MAX_STEPS_PER_CHUNK = 256
# Stored pointer fidelity (total variation from the model's float32 distribution). Text steps: the codec's default,
# under the 1e-2 bound. Copy steps: 9.5e-4, under the 1e-3 bound — measured at 16,384 patches this brings the
# average to 7.8 KB/step against 9.6 KB with copy steps as exact float16 (bench/pointer_codec.py).
POINTER_TV = pointer_codec.DEFAULT_TV
POINTER_COPY_TV = 9.5e-4


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds (every `created_at` / `updated_at` the store writes)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


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
    spans = [(a, min(a + per, len(steps))) for a in range(0, len(steps), per)]
    blobs: list[bytes | None] = [None] * len(spans)
    if has_ptr:
        blobs = _encode_chunks([steps[a:b] for a, b in spans])
    chunks = [dict(trace_id=tid, chunk=c, first_step=a, n_steps=b - a, steps_json=dumps(dicts[a:b]),
                   pointers=blobs[c]) for c, (a, b) in enumerate(spans)]
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


def encode_pointers(steps: Sequence[Step], *, mode: str | None = None) -> bytes:
    """The pointer blob of consecutive steps (each with a `pointer` [rows, cols]): `pointer_codec.encode` at the
    store's fidelity (`POINTER_TV`, `POINTER_COPY_TV`; `mode` or $V1STUDIO_POINTERS). Raises ValueError for NaN,
    infinite or negative values."""
    P = np.stack([np.asarray(st.pointer, dtype=np.float32) for st in steps])
    return pointer_codec.encode(P, [float(st.p_copy) for st in steps], [st.patch is not None for st in steps],
                                mode=mode, tv=POINTER_TV, copy_tv=POINTER_COPY_TV)


ENCODE_THREADS = max(1, min(8, os.cpu_count() or 1))  # chunks encode in parallel: numpy and zlib release the GIL
_PARALLEL_CELLS = 1 << 21  # below ~2M cells (e.g. every demo trace) a thread pool costs more than it saves


def _encode_chunks(chunk_steps: Sequence[Sequence[Step]]) -> list[bytes]:
    """`encode_pointers` of each chunk, on `ENCODE_THREADS` threads for big traces (same bytes either way)."""
    cells = sum(len(c) * np.size(c[0].pointer) for c in chunk_steps if c)
    if ENCODE_THREADS == 1 or len(chunk_steps) < 2 or cells < _PARALLEL_CELLS:
        return [encode_pointers(c) for c in chunk_steps]
    with ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="pointer-encode") as pool:
        return list(pool.map(encode_pointers, chunk_steps))


def decode_pointers(blob: bytes | memoryview, n: int, grid: tuple[int, int], start: int = 0,
                    stop: int | None = None) -> np.ndarray:
    """float32 [stop - start, rows, cols]: steps `start:stop` of a chunk's pointer blob of `n` steps (codec or
    legacy float16; only the codec groups that hold those steps are decoded)."""
    stop = n if stop is None else stop
    if start == 0 and stop == n:
        return pointer_codec.decode(blob, n, grid)
    return pointer_codec.decode_steps(blob, n, grid, start, stop)


# ----------------------------------------------------------------------------- rows → trace
def decode_trace(row: Any, chunks: Sequence[Any], *, pointers: bool = True) -> Trace:
    """The Trace of a `traces` row and its chunk rows in chunk order (objects with `steps_json` and `pointers`;
    with `pointers=False` the steps only, and the chunks need no `pointers`)."""
    grid = (int(row.grid_rows), int(row.grid_cols))
    steps: list[Step] = []
    for c in chunks:
        chunk_steps = [Step(**d) for d in json.loads(c.steps_json)]
        if pointers and row.has_pointers and chunk_steps:
            for st, p in zip(chunk_steps, decode_pointers(c.pointers, len(chunk_steps), grid)):
                st.pointer = p
        steps.extend(chunk_steps)
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
    dicts = json.loads(steps_json)
    step = Step(**dicts[j])
    if pointers is not None:
        step.pointer = decode_pointers(pointers, len(dicts), grid, j, j + 1)[0]
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


def decode_steps(steps_json: str, pointers: bytes | None, start: int, stop: int, grid: tuple[int, int]
                 ) -> list[Step]:
    """Steps `start:stop` of one chunk row (indices within the chunk), decoding only their pointers."""
    dicts = json.loads(steps_json)
    start, stop = max(0, start), min(stop, len(dicts))
    steps = [Step(**d) for d in dicts[start:stop]]
    if pointers is not None and steps:
        for st, p in zip(steps, decode_pointers(pointers, len(dicts), grid, start, stop)):
            st.pointer = p
    return steps


# ----------------------------------------------------------------------------- full-trace JSON
POINTERS_FIELD = "pointers_v1p"  # base64 of one `pointer_codec` blob of every step (full-trace JSONL)


def trace_to_json(trace: Trace) -> dict[str, Any]:
    """`Trace.to_dict()` with the pointers as one codec blob (`POINTERS_FIELD`) instead of base64 float16: ~4×
    smaller, and what the store holds reproduces exactly — stored (decoded) pointers are recognised as such and
    re-encoded to the same integers, so export → import → export is byte-identical."""
    d = trace.to_dict(include_pointers=False)
    if trace.has_pointers and trace.steps:
        d[POINTERS_FIELD] = base64.b64encode(encode_pointers(trace.steps)).decode("ascii")
    return d


def trace_from_json(d: Any) -> Trace:
    """The Trace of a full-trace JSON object: pointers from `POINTERS_FIELD` (codec) or `pointers_f16` (the batch
    tracer's and older exports' float16). Raises ValueError with the reason."""
    if not isinstance(d, dict):
        raise ValueError("a trace must be a JSON object")
    blob = d.get(POINTERS_FIELD)
    trace = Trace.from_dict({k: v for k, v in d.items() if k != POINTERS_FIELD})
    if blob:
        if d.get("pointers_f16"):
            raise ValueError(f"a trace has both {POINTERS_FIELD} and pointers_f16; keep one")
        try:
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, TypeError):
            raise ValueError(f"{POINTERS_FIELD} is not base64") from None
        P = pointer_codec.decode(raw, len(trace.steps), tuple(trace.grid))
        for st, p in zip(trace.steps, P):
            st.pointer = p
    return trace


def step_texts(chunks_json: Sequence[str]) -> list[str]:
    """The text of every step, from the chunks' `steps_json` in chunk order (no pointers decoded)."""
    return [d["text"] for c in chunks_json for d in json.loads(c)]


__all__ = [
    "CHUNK_BYTES",
    "MAX_STEPS_PER_CHUNK",
    "POINTERS_FIELD",
    "POINTER_COPY_TV",
    "POINTER_TV",
    "PreparedTrace",
    "SOURCES",
    "STATUSES",
    "decode_pointers",
    "decode_step",
    "decode_steps",
    "decode_trace",
    "dumps",
    "encode_pointers",
    "encode_trace",
    "f16_all_finite",
    "json_safe",
    "now_iso",
    "step_columns",
    "step_texts",
    "to_float16",
    "trace_from_json",
    "trace_to_json",
]
