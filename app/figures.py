"""Plotly figure builders: pure functions (arrays / Trace in, `plotly.graph_objects.Figure` out).

No Streamlit here, so they are unit-tested and benchmarked directly (bench/figure.py).

Geometry: figures use the *original* image's pixel coordinates (x right, y down). The merged-patch grid
(rows, cols) tiles the image exactly (the resized size is a whole number of 28-px cells and the resize is
a plain scale), so cell (r, c) spans x in [c*w/cols, (c+1)*w/cols) and y in [r*h/rows, (r+1)*h/rows).
The photo is a layout image (encoded once per image: :func:`encode_image`, cached by sha256 by the caller),
the pointer a `Heatmap` trace whose colour scale fades to transparent at 0 so the photo shows through;
boxes are layout shapes. A step change therefore changes only the heatmap's z/customdata and a few shapes:
:class:`HeatmapCanvas` keeps the static parts (layout with the encoded photo, the grid's customdata) and
builds each step's figure from them without re-validating them.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale, sample_colorscale

from .safe_text import plotly_escape, token_display

__all__ = [
    "COLOURSCALES",
    "HeatmapCanvas",
    "HeatmapStyle",
    "alpha_colorscale",
    "difference_figure",
    "encode_image",
    "patch_picker_figure",
    "pointer_figure",
    "step_figure",
    "timeline_figure",
]

COLOURSCALES: tuple[str, ...] = ("Inferno", "Viridis", "Turbo", "Hot", "Reds", "Blues")
COPY_COLOUR = "#00e5ff"
ARGMAX_COLOUR = "#ffffff"
REGION_COLOURS = ("#7CFC00", "#FFD700", "#FF69B4", "#00BFFF", "#FFA500", "#BA55D3")
Box = tuple[float, float, float, float]


# ----------------------------------------------------------------------------- image encoding
def encode_image(image: Any, max_side: int = 1024, quality: int = 85) -> str:
    """A PIL image as a `data:image/jpeg;base64,…` URI, downscaled to `max_side` (the photo is only a
    backdrop; the figure's coordinates stay in original pixels). Do it once per image and cache it."""
    from PIL import Image

    im = image.convert("RGB")
    scale = max_side / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- style
@dataclass(frozen=True)
class HeatmapStyle:
    """How a pointer is drawn. `log` shows log10(p) over `log_decades` decades below the step's maximum."""

    opacity: float = 0.65
    colorscale: str = "Inferno"
    log: bool = False
    log_decades: float = 4.0
    show_argmax: bool = True
    show_colorbar: bool = True


def alpha_colorscale(name: str, n: int = 9, fade: float = 0.35) -> list[list[Any]]:
    """Plotly colour scale `name` with an alpha ramp: transparent at 0, opaque from `fade` on, so cells
    the pointer ignores leave the photo visible."""
    try:
        get_colorscale(name)
    except Exception:  # noqa: BLE001 - plotly raises PlotlyError for unknown names
        raise ValueError(f"unknown colour scale {name!r}; choose one of {', '.join(COLOURSCALES)}") from None
    ts = np.linspace(0.0, 1.0, n)
    colours = sample_colorscale(name, list(ts), colortype="rgb")
    out = []
    for t, c in zip(ts, colours):
        r, g, b = (int(round(float(v))) for v in c[c.index("(") + 1 : c.index(")")].split(","))
        a = min(1.0, float(t) / fade) if fade > 0 else 1.0
        out.append([float(t), f"rgba({r},{g},{b},{a:.3f})"])
    return out


_DIVERGING = [
    [0.0, "rgba(33,102,172,1)"],
    [0.25, "rgba(103,169,207,0.75)"],
    [0.5, "rgba(247,247,247,0)"],
    [0.75, "rgba(239,138,98,0.75)"],
    [1.0, "rgba(178,24,43,1)"],
]


# ----------------------------------------------------------------------------- static layout
def _cell(image_size: Sequence[int], grid: Sequence[int]) -> tuple[float, float]:
    w, h = image_size
    rows, cols = grid
    return w / cols, h / rows


def _default_height(image_size: Sequence[int], width: int = 560) -> int:
    w, h = image_size
    return int(min(720, max(280, width * h / max(w, 1)))) + 36


def _base_layout(image_size: Sequence[int], image_uri: str | None, height: int | None) -> dict[str, Any]:
    w, h = (float(v) for v in image_size)
    layout: dict[str, Any] = {
        "xaxis": {"range": [0, w], "visible": False, "constrain": "domain", "constraintoward": "left"},
        "yaxis": {"range": [h, 0], "visible": False, "scaleanchor": "x", "constrain": "domain",
                  "constraintoward": "top"},
        "margin": {"l": 0, "r": 0, "t": 28, "b": 0},
        "height": height or _default_height(image_size),
        "plot_bgcolor": "rgba(0,0,0,0)",
        "paper_bgcolor": "rgba(0,0,0,0)",
        "uirevision": "keep-zoom",  # zoom/pan survive step changes
        "dragmode": "pan",
        "showlegend": False,
    }
    if image_uri:
        layout["images"] = [
            {
                "source": image_uri, "xref": "x", "yref": "y", "x": 0, "y": 0, "sizex": w, "sizey": h,
                "sizing": "stretch", "layer": "below", "xanchor": "left", "yanchor": "top",
            }
        ]
    return layout


def _grid_customdata(grid: Sequence[int]) -> np.ndarray:
    rows, cols = grid
    return np.arange(rows * cols, dtype=np.int32).reshape(rows, cols)


def _box_shape(box: Box, colour: str, *, dash: str = "solid", width: float = 3, label: str | None = None) -> dict:
    x0, y0, x1, y1 = (float(v) for v in box)
    shape: dict[str, Any] = {
        "type": "rect", "xref": "x", "yref": "y", "x0": x0, "y0": y0, "x1": x1, "y1": y1,
        "line": {"color": colour, "width": width, "dash": dash}, "fillcolor": "rgba(0,0,0,0)",
    }
    if label:
        shape["label"] = {"text": label, "textposition": "top left", "font": {"color": colour, "size": 12}}
    return shape


def cell_box(k: int, image_size: Sequence[int], grid: Sequence[int]) -> Box:
    """Original-pixel box of merged patch `k` (same as PatchGrid.patch_box for a trace's geometry)."""
    rows, cols = grid
    if not 0 <= int(k) < rows * cols:
        raise ValueError(f"patch id {k} outside the {rows}×{cols} grid")
    cw, ch = _cell(image_size, grid)
    r, c = divmod(int(k), cols)
    return c * cw, r * ch, (c + 1) * cw, (r + 1) * ch


_COLORBAR = {"thickness": 12, "len": 0.8, "y": 1.0, "yanchor": "top"}


def _z_and_range(pointer: np.ndarray, style: HeatmapStyle) -> tuple[np.ndarray, float, float, dict[str, Any]]:
    p = np.asarray(pointer, dtype=np.float32)
    pmax = float(np.nanmax(p)) if p.size else 0.0
    if style.log:
        top = math.log10(pmax) if pmax > 0 else 0.0
        lo = top - style.log_decades
        with np.errstate(divide="ignore"):
            z = np.log10(np.maximum(p, 10.0**lo)).astype(np.float32)
        ticks = list(range(math.ceil(lo), math.floor(top) + 1)) or [round(top, 1)]
        colorbar = {"title": {"text": "p"}, "tickvals": ticks, "ticktext": [f"1e{t}" for t in ticks], **_COLORBAR}
        return z, lo, top, colorbar
    return p, 0.0, max(pmax, 1e-9), {"title": {"text": "p"}, "tickformat": ".2~g", **_COLORBAR}


# ----------------------------------------------------------------------------- the pointer figure
@dataclass
class HeatmapCanvas:
    """The static part of a pointer figure for one image + grid: build once, then `figure(pointer)` per step.

    Only the heatmap's z (and a handful of shapes) change between steps; the layout (with the encoded
    photo) and the grid's patch-id customdata are reused as they are.
    """

    image_size: tuple[int, int]
    grid: tuple[int, int]
    image_uri: str | None = None
    style: HeatmapStyle = field(default_factory=HeatmapStyle)
    height: int | None = None

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        self._layout = _base_layout(self.image_size, self.image_uri, self.height)
        self._customdata = _grid_customdata(self.grid)
        self._cw, self._ch = _cell(self.image_size, self.grid)
        self._colorscale = alpha_colorscale(self.style.colorscale)

    def cell_box(self, k: int) -> Box:
        return cell_box(k, self.image_size, self.grid)

    def figure(
        self,
        pointer: np.ndarray | None,
        *,
        copied_patch: int | None = None,
        region_boxes: Sequence[Box] = (),
        region_label: str = "R",
        extra_shapes: Sequence[dict] = (),
        title: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> go.Figure:
        """The figure of one step. `pointer` is (rows, cols) (or None: photo only); `copied_patch` is
        outlined; `region_boxes` (original px, e.g. one per connected component of a revisit) are drawn
        as separate numbered boxes; `title` is plain text (escaped here)."""
        data: list[Any] = []
        shapes: list[dict] = []
        style = self.style
        if pointer is not None:
            p = np.asarray(pointer)
            if p.shape != self.grid:
                p = p.reshape(self.grid)
            z, zmin, zmax, colorbar = _z_and_range(p, style)
            data.append(
                go.Heatmap(
                    z=z, x0=self._cw / 2, dx=self._cw, y0=self._ch / 2, dy=self._ch,
                    zmin=zmin, zmax=zmax, colorscale=self._colorscale, opacity=style.opacity,
                    customdata=self._customdata, showscale=style.show_colorbar, colorbar=colorbar,
                    hovertemplate=("patch %{customdata}<br>" + ("log10 p %{z:.2f}" if style.log else "p %{z:.4f}")
                                   + "<extra></extra>"),
                    hoverongaps=False, xgap=0, ygap=0, zsmooth=False,
                )
            )
            if style.show_argmax and p.size:
                k = int(np.argmax(p))
                shapes.append(_box_shape(self.cell_box(k), ARGMAX_COLOUR, dash="dot", width=1.5))
        for i, box in enumerate(region_boxes):
            shapes.append(_box_shape(box, REGION_COLOURS[i % len(REGION_COLOURS)], dash="dash", width=2.5,
                                     label=f"{region_label}{i + 1}" if len(region_boxes) > 1 else region_label))
        if copied_patch is not None:
            shapes.append(_box_shape(self.cell_box(copied_patch), COPY_COLOUR, width=3.5))
        shapes.extend(extra_shapes)
        layout = dict(self._layout)
        layout["shapes"] = shapes
        if title is not None:
            layout["title"] = {"text": plotly_escape(title), "font": {"size": 13}, "x": 0.01, "xanchor": "left"}
        if meta is not None:
            layout["meta"] = meta
        # `_validate=False`: the static parts were built here and are known-good; skipping plotly's
        # per-property validation is most of the per-step cost.
        return go.Figure(data=data, layout=layout, _validate=False)


def pointer_figure(
    pointer: np.ndarray | None,
    image_size: Sequence[int],
    grid: Sequence[int] | None = None,
    image_uri: str | None = None,
    *,
    style: HeatmapStyle | None = None,
    copied_patch: int | None = None,
    region_boxes: Sequence[Box] = (),
    title: str | None = None,
    meta: dict[str, Any] | None = None,
    height: int | None = None,
) -> go.Figure:
    """One-shot form of :class:`HeatmapCanvas` (grid defaults to the pointer's shape)."""
    if grid is None:
        if pointer is None:
            raise ValueError("grid is needed when there is no pointer")
        grid = np.asarray(pointer).shape
    canvas = HeatmapCanvas(tuple(image_size), tuple(grid), image_uri, style or HeatmapStyle(), height)  # type: ignore[arg-type]
    return canvas.figure(pointer, copied_patch=copied_patch, region_boxes=region_boxes, title=title, meta=meta)


def step_title(step: Any, *, short: bool = False) -> str:
    """Plain-text title for a Step (token text is untrusted; the figure escapes it)."""
    if step.is_copy:
        what = f"copy → patch {step.patch}"
    else:
        text = token_display(step.text)
        what = f"token “{text if len(text) <= 24 else text[:23] + '…'}”"
    if short:
        return f"step {step.index} · {what}"
    return f"step {step.index} · {what} · p_copy {step.p_copy:.2f} · H {step.entropy:.2f} nats"


def step_figure(
    trace: Any,
    index: int,
    image_uri: str | None = None,
    *,
    style: HeatmapStyle | None = None,
    canvas: HeatmapCanvas | None = None,
    region_boxes: Sequence[Box] = (),
    region_label: str = "R",
) -> go.Figure:
    """The pointer figure of `trace.steps[index]` (copied patch outlined at copy steps)."""
    if not 0 <= index < len(trace.steps):
        raise IndexError(f"step {index} outside 0..{len(trace.steps) - 1}")
    step = trace.steps[index]
    canvas = canvas or HeatmapCanvas(tuple(trace.image_size), tuple(trace.grid), image_uri, style or HeatmapStyle())
    return canvas.figure(
        step.pointer,
        copied_patch=step.patch if step.is_copy else None,
        region_boxes=region_boxes,
        region_label=region_label,
        title=step_title(step),
        meta={"step": int(index), "trace": str(trace.trace_id)},
    )


# ----------------------------------------------------------------------------- difference map
def difference_figure(
    diff: np.ndarray,
    image_size: Sequence[int],
    image_uri: str | None = None,
    *,
    opacity: float = 0.75,
    region_boxes: Sequence[Box] = (),
    title: str | None = None,
    height: int | None = None,
    meta: dict[str, Any] | None = None,
) -> go.Figure:
    """A − B over the photo: red where A puts more mass, blue where B does, transparent where they agree."""
    d = np.asarray(diff, dtype=np.float32)
    grid = d.shape
    cw, ch = _cell(image_size, grid)
    lim = float(np.nanmax(np.abs(d))) if d.size else 0.0
    lim = lim if lim > 0 else 1e-9
    layout = _base_layout(image_size, image_uri, height)
    layout["shapes"] = [_box_shape(b, REGION_COLOURS[0], dash="dash", width=2.5) for b in region_boxes]
    if title:
        layout["title"] = {"text": plotly_escape(title), "font": {"size": 13}, "x": 0.01, "xanchor": "left"}
    if meta is not None:
        layout["meta"] = meta
    heat = go.Heatmap(
        z=d, x0=cw / 2, dx=cw, y0=ch / 2, dy=ch, zmin=-lim, zmax=lim, zmid=0, colorscale=_DIVERGING,
        opacity=opacity, customdata=_grid_customdata(grid), colorbar={"title": {"text": "A−B"}, "thickness": 12},
        hovertemplate="patch %{customdata}<br>A−B %{z:+.4f}<extra></extra>",
    )
    return go.Figure(data=[heat], layout=layout, _validate=False)


# ----------------------------------------------------------------------------- patch picker
def patch_picker_figure(
    image_size: Sequence[int],
    grid: Sequence[int],
    image_uri: str | None = None,
    selected: Iterable[int] = (),
    *,
    height: int | None = None,
) -> go.Figure:
    """The photo with the patch grid drawn; selected patches filled; a (nearly invisible) marker at each
    cell centre so a click, box or lasso selection returns patch ids (`customdata`)."""
    rows, cols = (int(v) for v in grid)
    w, h = (float(v) for v in image_size)
    cw, ch = w / cols, h / rows
    sel = sorted({int(k) for k in selected})
    layout = _base_layout(image_size, image_uri, height)
    layout["dragmode"] = "select"
    path = "".join(f"M{c * cw:.2f},0L{c * cw:.2f},{h:.2f}" for c in range(1, cols))
    path += "".join(f"M0,{r * ch:.2f}L{w:.2f},{r * ch:.2f}" for r in range(1, rows))
    grid_line = {"color": "rgba(255,255,255,0.45)", "width": 1}
    layout["shapes"] = [{"type": "path", "path": path, "line": grid_line}] if path else []
    mask = np.full((rows, cols), np.nan, dtype=np.float32)
    if sel:
        flat = mask.ravel()
        flat[[k for k in sel if 0 <= k < rows * cols]] = 1.0
    ids = np.arange(rows * cols)
    data = [
        go.Heatmap(
            z=mask, x0=cw / 2, dx=cw, y0=ch / 2, dy=ch, zmin=0, zmax=1, showscale=False,
            colorscale=[[0, "rgba(124,252,0,0.45)"], [1, "rgba(124,252,0,0.45)"]], hoverinfo="skip",
        ),
        go.Scatter(
            x=(ids % cols + 0.5) * cw, y=(ids // cols + 0.5) * ch, mode="markers", customdata=ids,
            marker={"size": max(4, min(18, int(600 / max(rows, cols)))), "color": "rgba(255,255,255,0.02)"},
            hovertemplate="patch %{customdata}<extra></extra>", selected={"marker": {"color": "rgba(124,252,0,0.9)"}},
        ),
    ]
    return go.Figure(data=data, layout=layout, _validate=False)


# ----------------------------------------------------------------------------- timeline
def timeline_figure(
    p_copy: Sequence[float],
    entropy: Sequence[float],
    *,
    is_copy: Sequence[bool] | None = None,
    revisits: Sequence[tuple[int, int]] = (),
    current: int | None = None,
    max_entropy: float | None = None,
    height: int = 220,
    extra_series: dict[str, Sequence[float]] | None = None,
) -> go.Figure:
    """p_copy (left axis, 0–1) and pointer entropy (right axis, nats) over the steps; revisits shaded with
    a marker at each copy step; the current step as a vertical line. Click a point to jump to its step."""
    n = len(p_copy)
    x = np.arange(n)
    pc = np.asarray(p_copy, dtype=np.float32)
    ent = np.asarray(entropy, dtype=np.float32)
    data: list[Any] = [
        go.Scatter(x=x, y=pc, name="p_copy", mode="lines+markers", line={"color": "#1f77b4", "width": 2},
                   marker={"size": 4}, hovertemplate="step %{x}<br>p_copy %{y:.3f}<extra></extra>"),
        go.Scatter(x=x, y=ent, name="entropy (nats)", mode="lines", yaxis="y2",
                   line={"color": "#ff7f0e", "width": 1.5},
                   hovertemplate="step %{x}<br>H %{y:.2f} nats<extra></extra>"),
    ]
    for name, series in (extra_series or {}).items():
        data.append(go.Scatter(x=x[: len(series)], y=np.asarray(series, dtype=np.float32), name=plotly_escape(name),
                               mode="lines", line={"width": 1.5, "dash": "dot"}))
    if is_copy is not None:
        cx = np.flatnonzero(np.asarray(is_copy, dtype=bool))
        if cx.size:
            data.append(go.Scatter(x=cx, y=np.full(cx.size, 1.04), name="copy", mode="markers",
                                   marker={"symbol": "triangle-down", "size": 9, "color": "#00acc1"},
                                   hovertemplate="copy at step %{x}<extra></extra>"))
    shapes: list[dict] = []
    for i, (a, b) in enumerate(revisits):
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": a - 0.5, "x1": b - 0.5, "y0": 0, "y1": 1,
                       "fillcolor": "rgba(0,172,193,0.15)", "line": {"width": 0}, "layer": "below",
                       "label": {"text": f"R{i + 1}", "textposition": "top center", "font": {"size": 10}}})
    if current is not None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": current, "x1": current, "y0": 0, "y1": 1,
                       "line": {"color": "#d62728", "width": 2}})
    layout = {
        "height": height,
        "margin": {"l": 48, "r": 48, "t": 10, "b": 32},
        "xaxis": {"title": {"text": "step"}, "range": [-0.5, max(n - 0.5, 0.5)]},
        "yaxis": {"title": {"text": "p_copy"}, "range": [0, 1.08]},
        "yaxis2": {"title": {"text": "entropy"}, "overlaying": "y", "side": "right", "showgrid": False,
                   "range": [0, _entropy_top(ent, max_entropy)]},
        "legend": {"orientation": "h", "y": 1.15, "x": 0},
        "shapes": shapes,
        "hovermode": "x",
        "clickmode": "event+select",
        "dragmode": False,
        "uirevision": "timeline",
        "meta": {"step": current},
    }
    return go.Figure(data=data, layout=layout, _validate=False)


def _entropy_top(ent: np.ndarray, max_entropy: float | None) -> float:
    top = max_entropy if max_entropy else (float(np.nanmax(ent)) if ent.size and np.isfinite(ent).any() else 1.0)
    return max(top, 1e-3) * 1.05
