"""What the trace canvas (app/canvas.py, app/frontend/) receives: payloads built from a Trace, no Streamlit.

The canvas changes step, plays and scrubs in the browser, so it needs every step's pointer there. At v1-7B
scale (16,384 merged patches, 2,000 steps) float32 pointers are 131 MB; the browser only *draws* them, so
they travel quantised for display and in windows of steps:

- **Display quantisation** (:func:`quantise_pointers`): each step's pointer p, divided by the step's
  maximum, as one byte per patch on a log scale over ``LOG_DECADES`` decades: ``q = 0`` for
  ``p / max <= 10**-LOG_DECADES`` (drawn transparent), else ``q = round(1 + 254 * (1 + log10(p / max) / D))``
  in 1..255. Decoding (:func:`dequantise_pointers`, and the frontend) gives ``max * 10**(-D * (255 - q) / 254)``,
  within a factor ``10**(D / 508)`` (±1.8 % at 4 decades) of p for every patch above the floor. That is
  finer than a colour scale resolves, on the linear and the log display alike; the exact float32 pointers
  stay in the store for metrics.
- **Windows** (:func:`window_payload`): steps ``[k * size, (k + 1) * size)``, ``size`` chosen so a window is
  about ``WINDOW_BYTES`` of bytes (:func:`steps_per_window`): a small trace is one window; a 16,384-patch
  trace has 64-step windows (1 MiB, 1.4 MB of base64). The frontend asks for the windows around its step
  (a trigger value), the Python side sends just those.
- **The static part** (:func:`static_payload`): everything that does not change with the step or the
  style — image (a data URI, sent once per trace), grid, tokens, copy ids, p_copy / entropy / gate series,
  the top-5 alternatives, revisits with one box per connected group of patches (labelled ``R1·1``,
  ``R1·2``) in image fractions.
- **The view part** (:func:`view_payload`): colour lookup tables (one RGBA entry per byte value, built from
  the same alpha-faded Plotly scales as app/figures.py), opacity, which revisit boxes to draw, edit mode and
  its selection, a step to go to (with a nonce, so a stale value never moves the canvas back).

Coordinate spaces: grid cells (row, col) row-major as patch ids ``k = row * cols + col``; boxes as fractions
of the original image (x right, y down), so the frontend scales them to whatever size it draws.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from plotly.colors import sample_colorscale

from v1core.geometry import PatchGrid

from .figures import alpha_colorscale
from .safe_text import token_display

__all__ = [
    "LOG_DECADES",
    "WINDOW_BYTES",
    "CanvasFeed",
    "CanvasSelection",
    "colour_lut",
    "dequantise_pointers",
    "quantise_pointers",
    "region_boxes",
    "revisit_boxes",
    "selection_of",
    "static_payload",
    "steps_per_window",
    "view_payload",
    "window_of",
    "window_payload",
]

LOG_DECADES = 4.0
WINDOW_BYTES = 1 << 20
_LEVELS = 254  # q in 1..255 spans the decades; 0 is "below the floor"


# ----------------------------------------------------------------------------- quantisation
def quantise_pointers(pointers: np.ndarray, decades: float = LOG_DECADES) -> tuple[np.ndarray, np.ndarray]:
    """(q, pmax) for pointers of shape [n_steps, rows, cols] or [n_steps, n_patches].

    ``q`` is uint8 [n_steps, n_patches] (see the module docstring), ``pmax`` float32 [n_steps], each step's
    maximum (0 for an all-zero step, whose q is all 0). NaN counts as 0.
    """
    p = np.asarray(pointers, dtype=np.float32)
    if p.ndim not in (2, 3):
        raise ValueError(f"pointers must be [n_steps, rows, cols] or [n_steps, n_patches], got shape {p.shape}")
    if decades <= 0:
        raise ValueError(f"decades must be positive, got {decades}")
    p = np.nan_to_num(p.reshape(p.shape[0], -1), nan=0.0, posinf=0.0, neginf=0.0)
    pmax = p.max(axis=1) if p.shape[1] else np.zeros(p.shape[0], dtype=np.float32)
    pmax = np.maximum(pmax, 0.0).astype(np.float32)
    safe = np.where(pmax > 0, pmax, 1.0)[:, None]
    floor = 10.0 ** -decades
    rel = p / safe
    with np.errstate(divide="ignore"):
        lg = np.log10(np.maximum(rel, floor))
    q = np.rint(1.0 + _LEVELS * (1.0 + lg / decades))
    q = np.where(rel > floor, np.clip(q, 1, 255), 0).astype(np.uint8)
    return q, pmax


def dequantise_pointers(q: np.ndarray, pmax: np.ndarray, decades: float = LOG_DECADES) -> np.ndarray:
    """The display values the canvas draws: float32 [n_steps, n_patches] (not renormalised)."""
    q = np.asarray(q, dtype=np.float32)
    pmax = np.asarray(pmax, dtype=np.float32).reshape(-1, 1)
    vals = pmax * np.power(10.0, -decades * (255.0 - q) / _LEVELS, dtype=np.float32)
    return np.where(q > 0, vals, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- windows
def steps_per_window(n_patches: int, budget: int = WINDOW_BYTES) -> int:
    """Steps per window so that a window's bytes (one per patch per step) stay near `budget` (at least 8)."""
    if n_patches <= 0:
        raise ValueError(f"n_patches must be positive, got {n_patches}")
    return max(8, int(budget) // int(n_patches))


def window_of(step: int, size: int) -> int:
    """The window holding `step`."""
    return max(int(step), 0) // max(int(size), 1)


def window_payload(trace: Any, k: int, size: int, decades: float = LOG_DECADES) -> dict[str, Any] | None:
    """Window `k` of the trace's pointers: ``{"k", "start", "stop", "q" (base64 uint8, row-major per
    step), "pmax"}``; None when the window lies past the last step or the trace has no pointers."""
    n = len(trace.steps)
    start, stop = int(k) * size, min((int(k) + 1) * size, n)
    if k < 0 or start >= n or not trace.has_pointers:
        return None
    rows, cols = (int(v) for v in trace.grid)
    block = np.zeros((stop - start, rows * cols), dtype=np.float32)
    for i, step in enumerate(trace.steps[start:stop]):
        if step.pointer is not None:
            block[i] = np.asarray(step.pointer, dtype=np.float32).reshape(-1)
    q, pmax = quantise_pointers(block, decades)
    return {
        "k": int(k),
        "start": start,
        "stop": stop,
        "q": base64.b64encode(q.tobytes()).decode("ascii"),
        "pmax": [float(f"{v:.4g}") for v in pmax.tolist()],
    }


# ----------------------------------------------------------------------------- static part
def _grid(trace: Any) -> PatchGrid:
    return PatchGrid.from_resized(trace.image_size, trace.resized_size)


def region_boxes(trace: Any, patches: Iterable[int], label: str) -> list[dict[str, Any]]:
    """A patch set as one box per 4-connected group, in image fractions, labelled ``label`` (one group) or
    ``label·1``, ``label·2`` …"""
    grid = _grid(trace)
    w, h = (float(v) for v in trace.image_size)
    ids = sorted({int(p) for p in patches if 0 <= int(p) < grid.n_patches})
    boxes = grid.component_boxes(ids)
    return [{"box": [round(b[0] / w, 6), round(b[1] / h, 6), round(b[2] / w, 6), round(b[3] / h, 6)],
             "label": label if len(boxes) == 1 else f"{label}·{j + 1}"} for j, b in enumerate(boxes)]


def revisit_boxes(trace: Any, revisits: Sequence[Any]) -> list[dict[str, Any]]:
    """Each revisit as ``{"start", "end", "patches", "boxes": [{"box": [x0, y0, x1, y1], "label"}], "query"}``:
    one box per 4-connected group of its patches (PatchGrid.component_boxes) as image fractions, labelled
    ``R<i>`` for a single group and ``R<i>·1``, ``R<i>·2`` … for several."""
    n = int(trace.grid[0]) * int(trace.grid[1])
    return [{"start": int(rv.start_step), "end": int(rv.end_step),
             "patches": sorted({int(p) for p in rv.patches if 0 <= int(p) < n}),
             "boxes": region_boxes(trace, rv.patches, f"R{i + 1}"), "query": rv.query} for i, rv in enumerate(revisits)]


def _finite(v: Any, digits: int = 4) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if math.isfinite(f) else None


def static_payload(trace: Any, revisits: Sequence[Any], image_uri: str | None,
                   budget: int = WINDOW_BYTES) -> dict[str, Any]:
    """The part of the canvas data sent once per trace (see the module docstring). Token texts are plain
    strings; the frontend only ever sets them as text, never as HTML."""
    steps = trace.steps
    rows, cols = (int(v) for v in trace.grid)
    n_patches = rows * cols
    return {
        "trace_id": str(trace.trace_id),
        "grid": [rows, cols],
        "image_size": [int(trace.image_size[0]), int(trace.image_size[1])],
        "image": image_uri,
        "n_steps": len(steps),
        "window": steps_per_window(n_patches, budget),
        "has_pointers": bool(trace.has_pointers),
        "decades": LOG_DECADES,
        "max_entropy": round(math.log(max(n_patches, 2)), 6),
        "tokens": [token_display(s.text) for s in steps],
        "copy": [int(s.patch) if s.is_copy and s.patch is not None else -1 for s in steps],
        "p_copy": [_finite(s.p_copy) for s in steps],
        "entropy": [_finite(s.entropy) for s in steps],
        "gate": [_finite(s.gate) if s.gate is not None else None for s in steps],
        "topk": [[[token_display(t) for t in s.topk_texts] or [str(i) for i in s.topk_ids],
                  [round(float(p), 4) for p in s.topk_probs]] for s in steps],
        "revisits": revisit_boxes(trace, revisits),
    }


# ----------------------------------------------------------------------------- view part
def colour_lut(colorscale: str, *, log: bool, decades: float = LOG_DECADES) -> str:
    """256 RGBA entries (base64, 1 KiB) mapping a byte q to its colour: on the log display q's position
    in the decades, on the linear display the value q decodes to relative to the step's maximum, through
    figures.alpha_colorscale (transparent at 0, so the photo shows through where the pointer puts no mass)."""
    scale = alpha_colorscale(colorscale)
    stops = [float(t) for t, _ in scale]
    alphas = [float(c[c.rindex(",") + 1 : -1]) for _, c in scale]
    q = np.arange(256, dtype=np.float64)
    t = (q - 1.0) / _LEVELS if log else np.power(10.0, -decades * (255.0 - q) / _LEVELS)
    t = np.clip(np.where(q > 0, t, 0.0), 0.0, 1.0)
    rgb = sample_colorscale(colorscale, list(t), colortype="tuple")
    lut = np.zeros((256, 4), dtype=np.uint8)
    for i, (r, g, b) in enumerate(rgb):
        # sample_colorscale gives 0..1 floats with colortype="tuple" for named scales, 0..255 for some
        scale_255 = 255.0 if max(r, g, b) <= 1.0 else 1.0
        lut[i, :3] = [int(round(v * scale_255)) for v in (r, g, b)]
        lut[i, 3] = 0 if q[i] == 0 else int(round(255 * float(np.interp(t[i], stops, alphas))))
    return base64.b64encode(lut.tobytes()).decode("ascii")


def view_payload(*, colorscale: str = "Inferno", log: bool = False, opacity: float = 0.65, show_argmax: bool = True,
                 regions: str = "current", edit: bool = False, selected: Iterable[int] = (),
                 height: int = 520, sync_url: bool = False,
                 boxes: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The per-render part of the canvas data: style, region mode ("current" / "all" / "none"), edit mode with
    its selected patch ids, whether the canvas keeps ``?step=`` of the address bar current (the Viewer)
    and extra ``boxes`` to draw at every step (``{"box": [x0, y0, x1, y1] as image fractions, "label"}``, e.g. a
    region from :func:`region_boxes`) (CanvasFeed.data adds the step to show and its nonce)."""
    if regions not in ("current", "all", "none"):
        raise ValueError(f"regions must be 'current', 'all' or 'none', got {regions!r}")
    return {
        "lut": colour_lut(colorscale, log=log),
        "opacity": float(opacity),
        "show_argmax": bool(show_argmax),
        "regions": regions,
        "edit": bool(edit),
        "selected": sorted({int(k) for k in selected}),
        "height": int(height),
        "sync_url": bool(sync_url),
        "boxes": [{"box": [float(v) for v in b["box"]], "label": str(b.get("label", ""))} for b in boxes],
    }


# ----------------------------------------------------------------------------- what comes back
@dataclass(frozen=True)
class CanvasSelection:
    """Patches selected on the canvas in edit mode: copy ids (row-major), the union box in original pixels
    and its text as v1 writes regions (``"[0.12, 0.30, 0.25, 0.45]"``, PatchGrid.region_text)."""

    patches: tuple[int, ...]
    box: tuple[float, float, float, float] | None
    box_text: str


def selection_of(trace: Any, ids: Iterable[Any]) -> CanvasSelection:
    """Validate ids reported by the browser (untrusted: integers on the trace's grid only) and describe
    them with v1core.geometry; bad entries are dropped."""
    grid = _grid(trace)
    clean = set()
    for k in ids or ():
        if isinstance(k, bool):
            continue
        try:
            v = int(k)
        except (TypeError, ValueError):
            continue
        if 0 <= v < grid.n_patches and v == k:
            clean.add(v)
    patches = tuple(sorted(clean))
    box = grid.patches_to_box(patches)
    return CanvasSelection(patches, box, grid.region_text(box) if box is not None else "")


# ----------------------------------------------------------------------------- one canvas's feed
MAX_WINDOWS_PER_RUN = 4


class CanvasFeed:
    """What one canvas instance in one browser session has been sent, and what it asked for.

    Kept in session state by app/canvas.py. The static part goes out once per trace (again only when the
    browser says it lacks it); windows go out when requested (:meth:`request`, fed from the frontend's
    ``need`` trigger, untrusted) and, with the static part, the windows around the step shown first.
    ``goto`` / ``nonce``: a step the server wants shown; the nonce changes only when the server moves the
    step (a Jump button, a link), so a canvas that has moved on is not pulled back by a stale value.
    """

    def __init__(self) -> None:
        self.trace_id: str | None = None
        self.static_sent = False
        self.wanted: list[int] = []
        self.step = 0
        self.nonce = 0
        self.last_report: int | None = None

    def request(self, need: Any) -> None:
        """Record a ``{"trace_id", "windows": [k…], "base": bool}`` request from the browser."""
        if not isinstance(need, dict) or need.get("trace_id") != self.trace_id:
            return
        if need.get("base"):
            self.static_sent = False
        for k in need.get("windows") or ():
            if isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 1_000_000 and k not in self.wanted:
                self.wanted.append(k)

    def move_to(self, step: int) -> None:
        """The server moves the canvas to `step` (applied once in the browser)."""
        self.step = max(int(step), 0)
        self.nonce += 1

    def reported(self, step: Any) -> None:
        """The browser reports the step it shows (not a move: the nonce stays). Only a new report counts: the
        state value stays the same across runs, and must not undo a later server move."""
        if isinstance(step, int) and not isinstance(step, bool) and step >= 0 and step != self.last_report:
            self.last_report = step
            self.step = step

    def data(self, trace: Any, revisits: Sequence[Any], image_uri: str | None, view: dict[str, Any],
             budget: int = WINDOW_BYTES) -> dict[str, Any]:
        """The component's data for this run (see the module docstring); marks what it sends as sent."""
        tid = str(trace.trace_id)
        if tid != self.trace_id:
            self.trace_id, self.static_sent, self.wanted = tid, False, []
        n = len(trace.steps)
        self.step = min(self.step, max(n - 1, 0))
        size = steps_per_window(int(trace.grid[0]) * int(trace.grid[1]), budget)
        static = None
        wanted = self.wanted[:MAX_WINDOWS_PER_RUN]
        if not self.static_sent:
            static = static_payload(trace, revisits, image_uri, budget)
            here = window_of(self.step, size)
            wanted = [here, here + 1] + [k for k in wanted if k not in (here, here + 1)]
            self.static_sent = True
        self.wanted = [k for k in self.wanted if k not in wanted]
        windows = [w for w in (window_payload(trace, k, size) for k in wanted) if w is not None]
        return {"trace_id": tid, "static": static, "view": {**view, "goto": self.step, "nonce": self.nonce},
                "windows": windows}
