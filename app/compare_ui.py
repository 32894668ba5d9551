"""The Compare page: two pointer panels (trace canvases), their difference map and per-step metrics.

Modes
- "Two steps": steps A and B of one trace, each on its own canvas.
- "Two traces": two traces of the same image (other settings, another model, a re-decoded branch),
  aligned by step index: stepping either canvas moves the other to the same step ("Lock steps").
- "Pointer vs region": the model's pointer against a patch set — a revisit's region, typed patch ids, or
  patches picked on the canvas in edit mode (annotations from storage can be passed to
  `render_pointer_vs_region`).

The canvases step in the browser (app/canvas.py) and report the step they show; the metrics, difference map
and per-step chart follow that step. Metrics are `app.compare` pure functions. Widget keys: compare_mode,
compare_trace_a, compare_trace_b, compare_lock, cmp_canvas_a, cmp_canvas_b (canvases), region_source,
region_revisit, region_ids, cmp_canvas_region, region_clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from . import compare, resources, state
from .canvas import feed, sync_feed, trace_canvas
from .canvas_data import region_boxes
from .figures import HeatmapStyle, difference_figure
from .safe_text import md_escape
from .widgets import PLOTLY_CONFIG, empty_state, heatmap_style_controls, trace_picker

MODES = ["Two steps", "Two traces", "Pointer vs region"]


def render() -> None:
    state.ensure_app_navigation()
    st.title("Compare")
    rows = resources.trace_summaries(limit=200)
    if not rows:
        empty_state("No traces yet — run one on the Run page.")
        return
    style = heatmap_style_controls(prefix="cmp_")
    mode = st.segmented_control("Compare", MODES, key="compare_mode", default=MODES[0], required=True) or MODES[0]
    selected = state.selected_trace_id()
    a_id = trace_picker("Trace A", "compare_trace_a", selected=selected or rows[0]["trace_id"], rows=rows,
                        on_pick=lambda tid: state.select_trace(tid, 0))
    trace_a = resources.load_trace(a_id)
    if trace_a is None:
        st.error("Trace A was not found.")
        return
    if not trace_a.steps or not trace_a.has_pointers:
        st.warning("Trace A has no pointer distributions to compare (no steps, or imported from text).")
        return
    if mode == "Two steps":
        st.fragment(_two_steps)(trace_a.trace_id, style)
    elif mode == "Two traces":
        b_default = st.query_params.get(state.QP_TRACE_B)
        same_image = resources.trace_summaries(image_sha256=trace_a.image_sha256, limit=200)
        b_id = trace_picker("Trace B (same image)", "compare_trace_b", selected=b_default, rows=same_image,
                            image_sha256=trace_a.image_sha256, exclude=trace_a.trace_id,
                            on_pick=lambda tid: st.query_params.__setitem__(state.QP_TRACE_B, tid))
        if b_id is None:
            st.info("No other trace of this image yet. Run the same image again on the Run page "
                    "(other settings or model), or re-decode a branch, then compare here.")
            return
        st.query_params[state.QP_TRACE_B] = b_id
        st.fragment(_two_traces)(trace_a.trace_id, b_id, style)
    else:
        _region_mode(trace_a, style)


# ----------------------------------------------------------------------------- helpers
def _steps_label(rv: Any) -> str:
    return f"steps {rv.start_step}–{rv.end_step - 1}" if rv.end_step - rv.start_step > 1 else f"step {rv.start_step}"


def _panel(col: Any, trace: Any, style: HeatmapStyle, key: str, *, start: int = 0, boxes: Sequence = (),
           edit: bool = False, selected: Sequence[int] = ()) -> Any:
    """A trace canvas in `col` (first shown at `start`); returns its CanvasResult (the step it shows)."""
    f = feed(key)
    if f.trace_id != trace.trace_id:
        f.move_to(start)
    with col:
        return trace_canvas(trace, resources.trace_revisits(trace.trace_id), resources.image_uri(trace.image_sha256),
                            key=key, style=style, height=360, boxes=list(boxes), edit=edit, selected=list(selected))


def _diff_panel(col: Any, trace: Any, p: np.ndarray, q: np.ndarray, key: str, region_boxes: Sequence = (),
                title: str = "A − B (red: A puts more mass, blue: B does)") -> None:
    fig = difference_figure(compare.difference_map(p, q), trace.image_size, resources.image_uri(trace.image_sha256),
                            title=title, height=380,
                            region_boxes=region_boxes)
    col.plotly_chart(fig, key=key, theme=None, config=PLOTLY_CONFIG, width="stretch")


def _metrics_row(m: compare.PointerComparison) -> None:
    c = st.columns(4 if m.mass_a is None else 6)
    c[0].metric("JS divergence", f"{m.js_bits:.3f} bits",
                help="Jensen–Shannon divergence of the two pointers, 0–1 bits")
    c[1].metric("entropy A", f"{m.entropy_a:.2f} nats")
    c[2].metric("entropy B", f"{m.entropy_b:.2f} nats")
    c[3].metric("argmax distance", f"{m.argmax_distance:.1f} patches")
    if m.mass_a is not None:
        c[4].metric("mass A in region", f"{m.mass_a:.1%}")
        c[5].metric("mass B in region", f"{m.mass_b:.1%}")


def _series_chart(series: dict[str, np.ndarray], columns: dict[str, str], current: int, key: str,
                  y_title: str = "") -> None:
    """Line chart of per-step metrics; a second column gets its own (right) axis."""
    fig = go.Figure()
    colours = ["#1f77b4", "#ff7f0e"]
    for j, (col, name) in enumerate((c, nm) for c, nm in columns.items() if c in series):
        fig.add_trace(go.Scatter(x=series["step"], y=series[col], name=name, mode="lines",
                                 line={"color": colours[j % 2]}, yaxis="y2" if j == 1 else "y"))
    fig.add_vline(x=current, line_color="#d62728", line_width=2)
    fig.update_layout(height=220, margin={"l": 40, "r": 40, "t": 10, "b": 30}, legend={"orientation": "h", "y": 1.2},
                      xaxis_title="step", yaxis_title=y_title,
                      yaxis2={"overlaying": "y", "side": "right", "showgrid": False})
    st.plotly_chart(fig, key=key, theme=None, config={"displaylogo": False, "displayModeBar": False}, width="stretch")


def _series_table(series: dict[str, np.ndarray], rename: dict[str, str]) -> None:
    table = {rename.get(k, k): (v.astype(int) if k == "step" else np.round(v, 4)) for k, v in series.items()}
    st.dataframe(table, hide_index=True, height=240, width="stretch")


# ----------------------------------------------------------------------------- (a) two steps of one trace
def _two_steps(trace_id: str, style: HeatmapStyle) -> None:
    trace = resources.load_trace(trace_id)
    n = len(trace.steps)
    revisits = resources.trace_revisits(trace_id)
    later = [rv.start_step for rv in revisits if rv.start_step > 0]
    default_b = min(later[0] if later else n // 2, n - 1)
    st.caption("Step each canvas on its own (click it, then ← / →); the metrics and the difference follow.")
    c1, c2 = st.columns(2)
    ia = _panel(c1, trace, style, "cmp_canvas_a").step
    ib = _panel(c2, trace, style, "cmp_canvas_b", start=default_b).step
    pa, pb = trace.steps[ia].pointer, trace.steps[ib].pointer
    st.markdown(f"**Step A = {ia} · step B = {ib}**")
    _metrics_row(compare.compare_pointers(pa, pb))
    _diff_panel(st, trace, pa, pb, key="cmp_diff")
    # every step against step A: how far the pointer moves away from it
    stack = trace.pointer_matrix()
    ref = np.broadcast_to(stack[ia], stack.shape)
    series = compare.compare_pointer_series(stack, ref)
    st.markdown("**Every step against step A**")
    _series_chart(series, {"js_bits": "JS divergence to step A (bits)"}, ib, "cmp_series_steps")


# ----------------------------------------------------------------------------- (b) two traces
def _two_traces(a_id: str, b_id: str, style: HeatmapStyle) -> None:
    ta, tb = resources.load_trace(a_id), resources.load_trace(b_id)
    if tb is None or not tb.steps or not tb.has_pointers:
        st.warning("Trace B has no pointer distributions to compare.")
        return
    st.caption(f"A: {md_escape(ta.model_id)}, {len(ta.steps)} steps · B: {md_escape(tb.model_id)}, "
               f"{len(tb.steps)} steps · aligned by step index")
    n = min(len(ta.steps), len(tb.steps))
    same_grid = tuple(ta.grid) == tuple(tb.grid)
    parent, child = ((ta, tb) if tb.parent_id == ta.trace_id else
                     (tb, ta) if ta.parent_id == tb.trace_id else (None, None))
    default_step = 0
    if parent is not None:  # a re-decoded branch: where it diverges and whether the answer changed
        from app.runner import answer_diff

        d = answer_diff(parent, child)
        edit = child.branch_edit or {}
        st.info(f"Branch of A re-decoded from step {child.branch_step} ({md_escape(str(edit.get('kind', '')))}"
                f"{' → patches ' + md_escape(str(edit.get('patches'))) if edit.get('patches') else ''}). "
                f"Pointers diverge from step {d['first_divergent_step']}. Answer "
                f"{'changed' if d['answer_changed'] else 'unchanged'}: {md_escape(d['parent_answer'])!s} → "
                f"{md_escape(d['branch_answer'])!s}")
        default_step = d["first_divergent_step"] or 0
    lock = st.toggle("Lock steps", True, key="compare_lock",
                     help="stepping either canvas moves the other to the same step")
    if lock:
        _lock_steps(n)
    c1, c2 = st.columns(2)
    ra_, rb_ = _panel(c1, ta, style, "cmp_canvas_a", start=default_step), _panel(c2, tb, style, "cmp_canvas_b",
                                                                                 start=default_step)
    i = min(ra_.step, n - 1)
    st.markdown(f"**Step {i}** (A shows {ra_.step}, B shows {rb_.step})" if ra_.step != rb_.step else f"**Step {i}**")
    if same_grid:
        _metrics_row(compare.compare_pointers(ta.steps[i].pointer, tb.steps[i].pointer))
    else:
        st.warning(f"The traces use different patch grids ({ta.grid[0]}×{ta.grid[1]} vs {tb.grid[0]}×{tb.grid[1]}): "
                   "distribution metrics need the same grid, so only the panels are shown.")
    if same_grid:
        _diff_panel(st, ta, ta.steps[i].pointer, tb.steps[i].pointer, key="cmp_diff")
        series = compare.compare_pointer_series(ta.pointer_matrix(), tb.pointer_matrix())
        st.markdown("**Per step**")
        _series_chart(series, {"js_bits": "JS divergence (bits)", "argmax_distance": "argmax distance (patches)"}, i,
                      "cmp_series_traces")
        _series_table(series, {"js_bits": "JS (bits)", "entropy_a": "H A", "entropy_b": "H B",
                               "argmax_distance": "argmax dist"})
    ra = [rv.patches for rv in resources.trace_revisits(a_id)]
    rb = [rv.patches for rv in resources.trace_revisits(b_id)]
    st.markdown("**Revisit regions** (IoU of patch sets)")
    if ra or rb:
        st.dataframe(compare.revisit_iou_table(ra, rb), hide_index=True, width="stretch")
    else:
        st.caption("Neither trace has revisits.")


_LAST = "_cmp_lock_last"


def _lock_steps(n: int) -> None:
    """"Lock steps": the canvas whose browser reported a new step leads; the other is moved to it."""
    fa, fb = sync_feed("cmp_canvas_a"), sync_feed("cmp_canvas_b")
    if fa.trace_id is None or fb.trace_id is None:
        return
    a, b = min(fa.step, n - 1), min(fb.step, n - 1)
    last = st.session_state.get(_LAST, (a, b))
    if a != b:
        lead = b if (b != last[1] and a == last[0]) else a
        (fb if lead == a else fa).move_to(lead)
        a = b = lead
    st.session_state[_LAST] = (a, b)


# ----------------------------------------------------------------------------- (c) pointer vs a region
def _region_mode(trace: Any, style: HeatmapStyle) -> None:
    revisits = resources.trace_revisits(trace.trace_id)
    sources = (["A revisit's region"] if revisits else []) + ["Patch ids", "Pick on the grid"]
    source = st.radio("Region", sources, horizontal=True, key="region_source")
    region: list[int] = []
    label = "region"
    if source == "A revisit's region":
        k = st.selectbox("Revisit", list(range(len(revisits))), key="region_revisit",
                         format_func=lambda i: f"R{i + 1} · {_steps_label(revisits[i])} · "
                                               f"{len(set(revisits[i].patches))} patches")
        region, label = list(revisits[k].patches), f"R{k + 1}"
    elif source == "Patch ids":
        text = st.text_input("Patch ids", key="region_ids", placeholder="e.g. 12, 13, 28-30",
                             help=f"ids 0..{trace.n_patches - 1}, row-major over the "
                                  f"{trace.grid[0]}×{trace.grid[1]} grid")
        try:
            region = compare.parse_patch_ids(text, trace.n_patches)
        except ValueError as exc:
            st.error(md_escape(str(exc)))
    else:
        key = f"_picked_{trace.trace_id}"
        region = list(st.session_state.get(key, []))
        st.caption("On the canvas: click a patch to toggle it, drag a box to add cells, shift-drag to remove them.")
        if st.button("Clear", key="region_clear"):
            st.session_state[key] = region = []
        label = "picked"
    render_pointer_vs_region(trace, region, label, style=style, pick=source == "Pick on the grid")


def render_pointer_vs_region(trace: Any, region: Sequence[int], label: str = "region", *,
                             style: HeatmapStyle | None = None, pick: bool = False) -> None:
    """The pointer of each step against a patch set (reusable by the annotate/review pages: pass an
    annotated region's patch ids). `pick`: the canvas is in edit mode and its selection is the region."""
    style = style or HeatmapStyle()
    st.fragment(_region_view)(trace.trace_id, tuple(int(k) for k in region), label, style, pick)


def _region_view(trace_id: str, region: tuple[int, ...], label: str, style: HeatmapStyle, pick: bool) -> None:
    trace = resources.load_trace(trace_id)
    n = len(trace.steps)
    picked_key = f"_picked_{trace_id}"
    if pick:  # the canvas's selection is the region (read here: a fragment rerun keeps its first arguments)
        region = tuple(st.session_state.get(picked_key, ()))
    p1, p2 = st.columns(2)
    res = _panel(p1, trace, style, "cmp_canvas_region", boxes=() if pick else region_boxes(trace, region, label),
                 edit=pick, selected=region)
    if pick and res.selection is not None:
        region = res.selection.patches
        st.session_state[picked_key] = list(region)
        if region:
            p2.caption(f"{len(region)} patches · box {res.selection.box_text}")
    if not region:
        p2.info("Choose a region (a revisit, patch ids, or pick patches on the canvas) to measure the pointer "
                "against it.")
        return
    i = min(res.step, n - 1)
    stack = trace.pointer_matrix()
    uniform = np.full(trace.grid, 1.0 / trace.n_patches, dtype=np.float32)
    series = compare.compare_pointer_series(stack, np.broadcast_to(uniform, stack.shape), region)
    mass = float(series["mass_a"][i])
    chance = len(region) / trace.n_patches
    c = st.columns(4)
    c[0].metric(f"mass in {label}", f"{mass:.1%}", help=f"a uniform pointer would put {chance:.1%} there")
    c[1].metric("entropy", f"{series['entropy_a'][i]:.2f} nats")
    inside = int(np.argmax(trace.steps[i].pointer)) in set(region)
    c[2].metric("argmax inside", "yes" if inside else "no")
    ious = [compare.region_iou(rv.patches, region) for rv in resources.trace_revisits(trace_id)]
    c[3].metric("best revisit IoU", f"{max(ious):.2f}" if ious else "–",
                help="IoU of the region with the closest revisit's patch set")
    boxes = trace.patch_grid().component_boxes(region)
    region_ptr = compare.region_mask(region, trace.grid).astype(np.float32)
    _diff_panel(p2, trace, trace.steps[i].pointer, region_ptr / region_ptr.sum(), key="cmp_region_diff",
                region_boxes=boxes, title=f"pointer − uniform on {label} (blue: region the pointer misses)")
    st.markdown(f"**Pointer mass inside {md_escape(label)} per step**")
    _series_chart(series, {"mass_a": f"mass in {label}"}, i, "cmp_series_region", "mass")
    if ious:
        st.dataframe({"revisit": [f"R{j + 1}" for j in range(len(ious))], "IoU with region": np.round(ious, 3)},
                     hide_index=True, width="stretch")
