"""The one Trace schema every layer uses: what v1 did at each decoding step.

A `Trace` is produced by `v1core.generate_trace` (or imported), stored by `storage`, drawn by `app`.
Pointer distributions are kept as one float array `[n_steps, rows, cols]` because that is what both the
database blob and the heatmap renderer want; `Step.pointer` is a view into it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .copy_tokens import COPY_RE

SCHEMA_VERSION = 1

# v1 writes revisits as
#   detect(query="triangle", objects=["<obj0><region>[0.12, 0.30, 0.25, 0.45]<|copy_34|>…</region>"])
# The reference demo expects `<objN>` before `<region>`; the published data also has bare `<region>`.
DETECT_RE = re.compile(
    r'detect\(\s*query\s*=\s*"(?P<query>(?:[^"\\]|\\.)*)"\s*,\s*objects\s*=\s*\[(?P<objects>.*?)\]\s*\)',
    re.DOTALL,
)
REGION_RE = re.compile(
    r"(?:<(?P<obj>obj\d+)>)?<region>\s*\[(?P<box>[^\]]*)\](?P<copies>.*?)</region>", re.DOTALL
)


@dataclass
class DecodingSettings:
    """The arguments of `model.generate` that a trace was decoded with."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    seed: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        """kwargs for `model.generate` (the seed is applied separately with `torch.manual_seed`)."""
        kw: dict[str, Any] = dict(
            do_sample=self.do_sample,
            repetition_penalty=self.repetition_penalty,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
        )
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        return kw

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DecodingSettings":
        d = d or {}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Step:
    """One decoded token and the model's distribution when it was chosen.

    Probabilities are from the raw model logits (temperature 1, before repetition penalty / top-p),
    the same tensor decoding started from, so they show what the model believed, not the sampler.
    """

    index: int
    token_id: int
    text: str
    is_copy: bool
    patch: int | None
    p_copy: float
    entropy: float  # of the pointer distribution, in nats
    gate: float | None = None
    topk_ids: list[int] = field(default_factory=list)
    topk_texts: list[str] = field(default_factory=list)
    topk_probs: list[float] = field(default_factory=list)
    pointer: np.ndarray | None = None  # float32 [rows, cols]; None when imported without pointers

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe fields (numpy scalars become Python numbers); pointers travel in the trace's compact
        float16 blob. Built by hand: `dataclasses.asdict` deep-copies and dominated full-trace exports (2,000
        steps take a few ms). The store writes exactly these dicts (`storage.codec`)."""
        return {
            "index": int(self.index),
            "token_id": int(self.token_id),
            "text": str(self.text),
            "is_copy": bool(self.is_copy),
            "patch": None if self.patch is None else int(self.patch),
            "p_copy": float(self.p_copy),
            "entropy": float(self.entropy),
            "gate": None if self.gate is None else float(self.gate),
            "topk_ids": [int(v) for v in self.topk_ids],
            "topk_texts": [str(v) for v in self.topk_texts],
            "topk_probs": [float(v) for v in self.topk_probs],
        }


@dataclass
class Revisit:
    """A run of consecutive copy tokens: the model looking back at a region."""

    start_step: int
    end_step: int  # exclusive
    patches: list[int]
    boxes: list[tuple[float, float, float, float]]  # original-image pixels, one per connected component
    query: str | None = None
    object_name: str | None = None
    normalized_box: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Trace:
    """Everything needed to replay, store, annotate and export one v1 decoding."""

    model_id: str
    image_sha256: str
    image_size: tuple[int, int]  # original (w, h)
    resized_size: tuple[int, int]  # (w, h) fed to the vision tower
    grid: tuple[int, int]  # merged-patch grid (rows, cols)
    question: str
    system_prompt: str = ""
    settings: DecodingSettings = field(default_factory=DecodingSettings)
    steps: list[Step] = field(default_factory=list)
    output_text: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    status: str = "complete"  # running / complete / failed / cancelled
    error: str | None = None
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    prompt_tokens: int = 0
    source: str = "generated"  # generated / imported
    parent_id: str | None = None
    branch_step: int | None = None
    branch_edit: dict[str, Any] | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- derived views
    @property
    def n_patches(self) -> int:
        return int(self.grid[0] * self.grid[1])

    @property
    def has_pointers(self) -> bool:
        return bool(self.steps) and all(s.pointer is not None for s in self.steps)

    def pointer_matrix(self, dtype: Any = np.float32) -> np.ndarray:
        """All pointers stacked: [n_steps, rows, cols]."""
        rows, cols = self.grid
        if not self.steps:
            return np.zeros((0, rows, cols), dtype=dtype)
        if not self.has_pointers:
            raise ValueError("this trace has no pointer distributions (imported from text?)")
        return np.stack([s.pointer for s in self.steps]).astype(dtype, copy=False)

    def patch_grid(self) -> "Any":
        from .geometry import PatchGrid

        return PatchGrid.from_resized(self.image_size, self.resized_size)

    @property
    def revisits(self) -> list[Revisit]:
        return find_revisits(self)

    @property
    def answer(self) -> str:
        """Text after the reasoning block (what graders compare)."""
        text = self.output_text
        if "</think>" in text:
            text = text.split("</think>", 1)[1]
        return text.strip()

    def finish(self, decode: Callable[[list[int]], str], eos_token_ids: Iterable[int], *, cancelled: bool = False,
               timings: dict[str, float] | None = None) -> "Trace":
        """End a decoding (interactive, batch or branch alike): `output_text` becomes `decode` of the steps' token
        ids without the trailing end-of-sequence ids (`eos_token_ids`: the ids `generate` stops on, so the text
        ends where the answer ends whichever of them it was), `timings` are set when given, and a `running`
        trace becomes `cancelled` (when `cancelled`) or `complete`; a `failed` one stays failed. Returns self."""
        eos = {int(e) for e in eos_token_ids}
        ids = [s.token_id for s in self.steps]
        while ids and ids[-1] in eos:
            ids.pop()
        self.output_text = decode(ids)
        if timings is not None:
            self.timings = dict(timings)
        if self.status == "running":
            self.status = "cancelled" if cancelled else "complete"
        return self

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self, include_pointers: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "trace_id": self.trace_id,
            "model_id": self.model_id,
            "image_sha256": self.image_sha256,
            "image_size": list(self.image_size),
            "resized_size": list(self.resized_size),
            "grid": list(self.grid),
            "system_prompt": self.system_prompt,
            "question": self.question,
            "settings": self.settings.to_dict(),
            "output_text": self.output_text,
            "timings": dict(self.timings),
            "status": self.status,
            "error": self.error,
            "created_at": self.created_at,
            "prompt_tokens": self.prompt_tokens,
            "source": self.source,
            "parent_id": self.parent_id,
            "branch_step": self.branch_step,
            "branch_edit": self.branch_edit,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "steps": [s.to_dict() for s in self.steps],
        }
        if include_pointers and self.has_pointers:
            d["pointers_f16"] = base64.b64encode(pointers_to_bytes(self.pointer_matrix())).decode("ascii")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trace":
        if not isinstance(d, dict):
            raise ValueError("a trace must be a JSON object")
        missing = [k for k in ("model_id", "image_sha256", "image_size", "grid", "question") if k not in d]
        if missing:
            raise ValueError(f"trace is missing field(s): {', '.join(missing)}")
        grid = tuple(int(v) for v in d["grid"])
        if len(grid) != 2 or min(grid) <= 0:
            raise ValueError(f"bad grid {d['grid']!r}")
        step_dicts = d.get("steps") or []
        pointers = None
        if d.get("pointers_f16"):
            pointers = pointers_from_bytes(base64.b64decode(d["pointers_f16"]), len(step_dicts), grid)
        step_fields = {f.name for f in dataclasses.fields(Step)} - {"pointer"}
        steps = []
        for i, sd in enumerate(step_dicts):
            s = Step(**{k: v for k, v in sd.items() if k in step_fields})
            if pointers is not None:
                s.pointer = pointers[i]
            steps.append(s)
        image_size = tuple(int(v) for v in d["image_size"])
        return cls(
            model_id=str(d["model_id"]),
            image_sha256=str(d["image_sha256"]),
            image_size=image_size,  # type: ignore[arg-type]
            resized_size=tuple(int(v) for v in d.get("resized_size") or image_size),  # type: ignore[arg-type]
            grid=grid,  # type: ignore[arg-type]
            question=str(d["question"]),
            system_prompt=d.get("system_prompt") or "",
            settings=DecodingSettings.from_dict(d.get("settings")),
            steps=steps,
            output_text=d.get("output_text") or "",
            timings=dict(d.get("timings") or {}),
            status=d.get("status") or "complete",
            error=d.get("error"),
            trace_id=d.get("trace_id") or uuid.uuid4().hex,
            created_at=d.get("created_at") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            prompt_tokens=int(d.get("prompt_tokens") or 0),
            source=d.get("source") or "generated",
            parent_id=d.get("parent_id"),
            branch_step=d.get("branch_step"),
            branch_edit=d.get("branch_edit"),
            tags=list(d.get("tags") or []),
            meta=dict(d.get("meta") or {}),
        )


# --------------------------------------------------------------------- compact pointer form
def pointers_to_bytes(pointers: np.ndarray) -> bytes:
    """float16, C order: 2 bytes per patch per step (a 2,000-patch step is 4 kB)."""
    return np.ascontiguousarray(pointers, dtype="<f2").tobytes()


def pointers_from_bytes(blob: bytes, n_steps: int, grid: Sequence[int]) -> np.ndarray:
    rows, cols = int(grid[0]), int(grid[1])
    expected = n_steps * rows * cols * 2
    if len(blob) != expected:
        raise ValueError(f"pointer blob has {len(blob)} bytes, expected {expected} ({n_steps}×{rows}×{cols} float16)")
    return np.frombuffer(blob, dtype="<f2").reshape(n_steps, rows, cols).astype(np.float32)


# --------------------------------------------------------------------- revisits
def copy_runs(steps: Iterable[Step]) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive copy steps."""
    runs: list[tuple[int, int]] = []
    start = None
    last = -1
    for s in steps:
        if s.is_copy:
            if start is None:
                start = s.index
        elif start is not None:
            runs.append((start, s.index))
            start = None
        last = s.index
    if start is not None:
        runs.append((start, last + 1))
    return runs


def parse_detect_spans(text: str) -> list[dict[str, Any]]:
    """Every region inside a `detect(...)` call: query, object name, box and its character span."""
    found: list[dict[str, Any]] = []
    for m in DETECT_RE.finditer(text):
        objects_start = m.start("objects")
        for r in REGION_RE.finditer(m.group("objects")):
            box = None
            try:
                vals = [float(v) for v in r.group("box").split(",")]
                if len(vals) == 4:
                    box = tuple(vals)
            except ValueError:
                box = None
            found.append(
                {
                    "query": m.group("query").replace('\\"', '"'),
                    "object_name": r.group("obj"),
                    "normalized_box": box,
                    "copies": [int(c) for c in COPY_RE.findall(r.group("copies"))],
                    "span": (objects_start + r.start(), objects_start + r.end()),
                }
            )
    return found


def find_revisits(trace: Trace) -> list[Revisit]:
    """Runs of copy steps, with the detect() query/object/box around them when the text carries one."""
    steps = trace.steps
    if not steps:
        return []
    # character offset of each step in output_text (steps' texts concatenate to it when generated)
    offsets = []
    pos = 0
    for s in steps:
        offsets.append(pos)
        pos += len(s.text)
    spans = parse_detect_spans(trace.output_text)
    grid = trace.patch_grid()
    out = []
    for start, end in copy_runs(steps):
        patches = [int(steps[i].patch) for i in range(start, end) if steps[i].patch is not None]
        rv = Revisit(start_step=start, end_step=end, patches=patches, boxes=grid.component_boxes(patches))
        at = offsets[start]
        for sp in spans:
            if sp["span"][0] <= at < sp["span"][1]:
                rv.query, rv.object_name, rv.normalized_box = sp["query"], sp["object_name"], sp["normalized_box"]
                break
        out.append(rv)
    return out
