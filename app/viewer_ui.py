"""The trace viewer: step through a decoding with the pointer heatmap over the image.

The step lives in the browser: the trace canvas (app/canvas.py) changes step, plays, scrubs and draws the
heatmap, revisit boxes, token strip and timeline with no server round trip. The server renders the trace
picker, header, revisit list and branches; the canvas runs inside an `st.fragment`, so the step it reports
(debounced, for the URL `?step=`) and its window requests rerun only that fragment. Re-decoding a revisit
with another region picks the region on the canvas in edit mode (click / drag / shift-drag).

Widget keys (stable, used by tests): viewer_canvas (the canvas), revisit_<i> (Jump), redecode_remove_<i>,
redecode_pick_<i>, redecode_replace, redecode_cancel, trace_select.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from v1core.copy_tokens import copy_token
from v1core.intervene import BranchEdit

from . import resources, state
from .canvas import move_canvas, trace_canvas
from .figures import HeatmapStyle
from .safe_text import md_escape
from .widgets import empty_state, heatmap_style_controls, output_markdown, trace_header, trace_picker

CANVAS_KEY = "viewer_canvas"
REGIONS_KEY = "revisit_regions"
EDIT_KEY = "_viewer_pick_region"  # the revisit whose replacement region is being picked on the canvas


def render() -> None:
    state.ensure_app_navigation()
    st.title("Trace viewer")
    rows = resources.trace_summaries(limit=200)
    selected = state.selected_trace_id()
    if not rows and not selected:
        empty_state("No traces yet — run one on the Run page.")
        return

    trace_id = trace_picker("Trace", "trace_select", selected=selected or rows[0]["trace_id"], rows=rows,
                            on_pick=lambda tid: state.select_trace(tid, 0))
    if trace_id and trace_id != selected:  # nothing selected yet: the newest trace
        state.select_trace(trace_id, state.current_step())
    trace = resources.load_trace(trace_id)
    if trace is None:
        st.error(f"Trace {md_escape(trace_id or '')} was not found in the store {md_escape(resources.store_label())}.")
        return
    trace_header(trace)
    with st.expander("Output text", expanded=False):
        st.markdown(output_markdown(trace.steps))
        if trace.answer and trace.answer != trace.output_text.strip():
            st.markdown("**Answer**")
            st.text(trace.answer)
    if not trace.steps:
        st.info("This trace has no steps (it was cancelled or failed before the first token).")
        return

    style = heatmap_style_controls()
    with st.sidebar:
        st.radio("Revisit boxes", ["current", "all", "none"], horizontal=True, key=REGIONS_KEY,
                 help="draw the regions (one box per connected group of patches) of the revisit at this step, "
                      "of all revisits, or none")
        state.annotator_input(st.sidebar)
    if st.session_state.get(EDIT_KEY, (None,))[0] != trace.trace_id:
        st.session_state.pop(EDIT_KEY, None)
    pending = state.take_pending_step()
    if pending is not None:
        move_canvas(CANVAS_KEY, pending)
    st.caption("Keys on the canvas: ← / → step · [ / ] previous / next revisit · space play. Click a token or "
               "the timeline to jump.")
    st.fragment(_canvas_view)(trace.trace_id, style)
    if not trace.has_pointers:
        st.caption("This trace was imported without pointer distributions: only tokens and copies are shown.")
    _revisit_list(resources.trace_revisits(trace.trace_id))


# ----------------------------------------------------------------------------- the canvas fragment
def _go(index: int) -> None:
    move_canvas(CANVAS_KEY, index)


def _canvas_view(trace_id: str, style: HeatmapStyle) -> None:
    trace = resources.load_trace(trace_id)
    if trace is None:
        st.error("The trace disappeared from the store.")
        return
    revisits = resources.trace_revisits(trace_id)
    editing = st.session_state.get(EDIT_KEY)
    pick = editing[1] if editing and editing[1] < len(revisits) else None
    panel = st.container()
    result = trace_canvas(trace, revisits, resources.image_uri(trace.image_sha256), key=CANVAS_KEY, style=style,
                          regions=st.session_state.get(REGIONS_KEY, "current"), edit=pick is not None,
                          selected=sorted(set(revisits[pick].patches)) if pick is not None else (), sync_url=True)
    st.session_state[state.STEP_KEY] = result.step
    state.sync_url(trace_id, result.step)
    if pick is not None:
        with panel.container(border=True):
            _pick_panel(trace, pick, result.selection)


def _pick_panel(trace: Any, i: int, selection: Any) -> None:
    """Edit mode: the replacement region for revisit `i`, picked on the canvas; Re-decode runs the branch."""
    st.markdown(f"**Re-decode R{i + 1} with another region** · on the image: click a patch to toggle it, drag "
                "a box to add cells, shift-drag to remove them")
    patches = list(selection.patches) if selection is not None else sorted(set(resources.trace_revisits(
        trace.trace_id)[i].patches))
    if patches:
        text = selection.box_text if selection is not None else ""
        st.caption(f"{len(patches)} patch{'es' if len(patches) != 1 else ''}" + (f" · box {text}" if text else ""))
        st.code("".join(copy_token(k) for k in patches[:400]) + (" …" if len(patches) > 400 else ""), language=None)
    else:
        st.caption("No patch selected yet.")
    c = st.columns(2)
    if c[0].button("Re-decode with this region", key="redecode_replace", disabled=not patches, type="primary"):
        st.session_state.pop(EDIT_KEY, None)
        _run_branch(trace, BranchEdit("replace", revisit=i, patches=[int(p) for p in patches]))
        st.rerun(scope="app")
    if c[1].button("Cancel", key="redecode_cancel"):
        st.session_state.pop(EDIT_KEY, None)
        st.rerun(scope="app")


def _steps_label(rv: Any) -> str:
    return f"steps {rv.start_step}–{rv.end_step - 1}" if rv.end_step - rv.start_step > 1 else f"step {rv.start_step}"


def _revisit_list(revisits: list) -> None:
    """Every revisit: its steps, patches, regions (connected components) and detect() text; Jump moves the
    viewer to its first copy step. Drawn outside the step fragment (it does not depend on the step)."""
    st.markdown(f"**Revisits** ({len(revisits)})")
    if not revisits:
        st.caption("No revisits: the model copied no patch in this trace.")
        return
    with st.container(height=min(90 + 78 * len(revisits), 330), border=False):
        for i, rv in enumerate(revisits):
            with st.container(border=True):
                top = st.columns([5, 2], vertical_alignment="center")
                regions = f"{len(rv.boxes)} region{'s' if len(rv.boxes) != 1 else ''}"
                n_p = len(set(rv.patches))
                patches = f"{n_p} patch{'es' if n_p != 1 else ''}"
                top[0].markdown(f"**R{i + 1}** · {_steps_label(rv)} · {patches} · {regions}")
                top[1].button("Jump", key=f"revisit_{i}", on_click=_go, args=(rv.start_step,), width="stretch")
                if rv.query is not None or rv.object_name:
                    q = f'detect(query="{rv.query}")' if rv.query is not None else ""
                    obj = f" · {rv.object_name}" if rv.object_name else ""
                    st.caption(md_escape(q + obj))
                _redecode_controls(i, rv)
    _branches()


def _redecode_controls(i: int, rv: Any) -> None:
    """"Had it looked elsewhere…": re-decode from this revisit without it, or with a region picked on the canvas."""
    trace = resources.load_trace(state.selected_trace_id())
    if trace is None or not trace.has_pointers:
        return
    cols = st.columns(2)
    if cols[0].button("Re-decode without", key=f"redecode_remove_{i}", width="stretch",
                      help="skip this revisit (ablation) and let the model continue"):
        _run_branch(trace, BranchEdit("remove", revisit=i))
    if cols[1].button("Re-decode with region…", key=f"redecode_pick_{i}", width="stretch",
                      help="pick the replacement region on the image (edit mode), then re-decode"):
        st.session_state[EDIT_KEY] = (trace.trace_id, i)
        move_canvas(CANVAS_KEY, rv.start_step)
        st.rerun()


def _run_branch(trace: Any, edit: Any) -> None:
    from app.runner import answer_diff, redecode_and_save

    image = resources.trace_image(trace.image_sha256)
    if image is None:
        st.error("The trace's image is not in the store; it cannot be re-decoded.")
        return
    with st.spinner("Re-decoding from the revisit…"):
        try:
            child_id, child = redecode_and_save(resources.get_model(), resources.get_store(), trace, image, edit,
                                                resources.generation_gate())
        except ValueError as exc:
            st.error(str(exc))
            return
    diff = answer_diff(trace, child)
    st.session_state["last_branch"] = {"id": child_id, **diff}


def _branches() -> None:
    """The re-decoded children of this trace, and what the last re-decode changed."""
    trace_id = state.selected_trace_id()
    last = st.session_state.get("last_branch")
    if last:
        verdict = "changed" if last["answer_changed"] else "did not change"
        st.info(f"The answer {verdict}: {last['parent_answer']!r} → {last['branch_answer']!r}"
                f" (first different step: {last['first_divergent_step']})")
    if not trace_id:
        return
    kids = resources.get_store().list_traces(parent_id=trace_id, limit=50)
    if kids:
        st.markdown(f"**Branches** ({len(kids)})")
        for k in kids:
            c = st.columns([4, 2, 2], vertical_alignment="center")
            c[0].caption(f"from step {k.branch_step} · {md_escape(str(k.id)[:8])}")
            if c[1].button("Open", key=f"open_branch_{k.id}", width="stretch"):
                st.session_state.pop("last_branch", None)
                state.open_in_viewer(k.id)
            if c[2].button("Compare", key=f"compare_branch_{k.id}", width="stretch",
                           help="parent and branch side by side on the Compare page"):
                st.session_state.pop("last_branch", None)
                st.session_state["compare_mode"] = "Two traces"
                state.select_trace(trace_id, 0)
                st.switch_page(state.COMPARE_PAGE, query_params={state.QP_TRACE: trace_id, state.QP_TRACE_B: k.id})
