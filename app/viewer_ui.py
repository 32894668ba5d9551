"""The trace viewer: step through a decoding with the pointer heatmap over the image.

Layout: trace picker + header (full reruns) and, inside one `st.fragment`, everything that depends on the
step: step controls, heatmap, step details, revisit list, token strip, timeline. Moving the step reruns
only that fragment; while playing, the fragment reruns itself every 1/speed seconds (`run_every`).

Widget keys (stable, used by tests): step, prev_step, next_step, play, speed, prev_revisit, next_revisit,
token_strip, timeline, revisit_<i>, trace_select.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import streamlit as st

from v1core.intervene import BranchEdit

from . import resources, state
from .figures import HeatmapCanvas, HeatmapStyle, step_title, timeline_figure
from .safe_text import md_escape, token_markdown
from .widgets import (PLOTLY_CONFIG, empty_state, heatmap_style_controls, output_markdown, step_details,
                      trace_header, trace_picker)

PLAY_KEY, SPEED_KEY = "play", "speed"
TOKEN_STRIP_KEY = "token_strip"
TIMELINE_KEY = "timeline"
REGIONS_KEY = "revisit_regions"
_TICK_KEY = "_play_tick"
_STOP_PLAY_KEY = "_stop_play"
SPEEDS = [0.5, 1.0, 2.0, 4.0, 8.0]


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

    # play / speed live outside the fragment: toggling them reruns the page so `run_every` can change
    if st.session_state.pop(_STOP_PLAY_KEY, False):
        st.session_state[PLAY_KEY] = False
    c_play, c_speed, _ = st.columns([1, 2, 3], vertical_alignment="center")
    playing = c_play.toggle("▶ Play", key=PLAY_KEY, help="animate the steps")
    speed = c_speed.select_slider("Speed (steps/s)", SPEEDS, value=st.session_state.get(SPEED_KEY, 2.0), key=SPEED_KEY)
    if playing:
        st.session_state.setdefault(_TICK_KEY, 0.0)

    # The layout is built here; the step fragment fills the parts that change with the step (controls,
    # heatmap, step details, token strip, timeline). The revisit list does not change with the step, so it
    # stays outside the fragment and a step move does not resend it.
    controls = st.container()
    left, right = st.columns([3, 2], gap="medium")
    with right:
        details = st.container()
        revisit_box = st.container()
    below = st.container()
    fragment = st.fragment(_step_view, run_every=(1.0 / float(speed)) if playing else None)
    fragment(trace.trace_id, style, playing, float(speed), (controls, left, details, below))
    with revisit_box:
        _revisit_list(resources.trace_revisits(trace.trace_id))


# ----------------------------------------------------------------------------- the step fragment
def _go(index: int) -> None:
    state.request_step(index)


def _strip_changed() -> None:
    value = st.session_state.get(TOKEN_STRIP_KEY)
    if value is not None:
        state.request_step(int(value))


def _timeline_clicked() -> None:
    sel = st.session_state.get(TIMELINE_KEY)
    try:
        points = sel["selection"]["points"]
    except (KeyError, TypeError):
        return
    if points:
        x = points[0].get("x")
        if x is not None:
            state.request_step(int(round(float(x))))


def _revisit_at(revisits: list, index: int) -> int | None:
    for i, rv in enumerate(revisits):
        if rv.start_step <= index < rv.end_step:
            return i
    return None


def _step_view(trace_id: str, style: HeatmapStyle, playing: bool, speed: float, slots: tuple) -> None:
    controls, left, details, below = slots
    trace = resources.load_trace(trace_id)
    if trace is None:
        st.error("The trace disappeared from the store.")
        return
    n = len(trace.steps)
    last = n - 1
    ss = st.session_state

    # --- where are we: a requested jump, an animation tick, or the slider's own value
    pending = state.take_pending_step()
    if pending is not None:
        ss[state.STEP_KEY] = pending
    elif playing:
        now = time.monotonic()
        if now - float(ss.get(_TICK_KEY, 0.0)) >= 0.5 / max(speed, 0.1):
            ss[_TICK_KEY] = now
            cur = int(ss.get(state.STEP_KEY, 0) or 0)
            if cur >= last:  # at the end: stop (the full rerun turns the Play toggle off before drawing it)
                ss[_STOP_PLAY_KEY] = True
                st.rerun(scope="app")
            ss[state.STEP_KEY] = cur + 1
    index = int(min(max(int(ss.get(state.STEP_KEY, 0) or 0), 0), last))
    ss[state.STEP_KEY] = index
    ss[TOKEN_STRIP_KEY] = index
    step = trace.steps[index]
    revisits = resources.trace_revisits(trace_id)
    current_rv = _revisit_at(revisits, index)
    prev_rv = next((i for i in range(len(revisits) - 1, -1, -1) if revisits[i].start_step < index
                    and i != current_rv), None)
    next_rv = next((i for i, rv in enumerate(revisits) if rv.start_step > index), None)

    # --- controls
    c = controls.columns([1, 8, 1, 2, 2], vertical_alignment="bottom")
    c[0].button("", key="prev_step", icon=":material/chevron_left:", help="previous step", on_click=_go,
                args=(max(index - 1, 0),), disabled=index == 0, width="stretch")
    if last > 0:
        c[1].slider("Step", 0, last, key=state.STEP_KEY)
    else:
        c[1].caption("Step 0 (the only step)")
    c[2].button("", key="next_step", icon=":material/chevron_right:", help="next step", on_click=_go,
                args=(min(index + 1, last),), disabled=index >= last, width="stretch")
    c[3].button("Revisit", key="prev_revisit", icon=":material/skip_previous:", width="stretch",
                on_click=_go, args=(revisits[prev_rv].start_step if prev_rv is not None else index,),
                disabled=prev_rv is None)
    c[4].button("Revisit", key="next_revisit", icon=":material/skip_next:", width="stretch",
                on_click=_go, args=(revisits[next_rv].start_step if next_rv is not None else index,),
                disabled=next_rv is None)

    # --- heatmap + details
    mode = ss.get(REGIONS_KEY, "current")
    boxes: list = []
    label = "R"
    if mode == "current" and current_rv is not None:
        boxes, label = list(revisits[current_rv].boxes), f"R{current_rv + 1}·"
    elif mode == "all":
        boxes = [b for rv in revisits for b in rv.boxes]
    with left:
        uri = resources.image_uri(trace.image_sha256)
        if uri is None:
            st.warning("The image of this trace is not in the store; showing the pointer on a blank grid.")
        canvas = HeatmapCanvas(tuple(trace.image_size), tuple(trace.grid), uri, style)
        fig = canvas.figure(step.pointer, copied_patch=step.patch if step.is_copy else None,
                            region_boxes=boxes, region_label=label, title=step_title(step),
                            meta={"step": index, "trace": trace_id})
        st.plotly_chart(fig, key="heatmap", theme=None, config=PLOTLY_CONFIG, width="stretch")
        if step.pointer is None:
            st.caption("This trace was imported without pointer distributions: only tokens and copies are shown.")
    with details:
        step_details(step, trace.n_patches)
        if current_rv is not None:
            rv = revisits[current_rv]
            query = f' · detect(query="{rv.query}")' if rv.query is not None else ""
            st.caption(f"Inside revisit **R{current_rv + 1}** ({_steps_label(rv)}){md_escape(query)}")

    # --- token strip
    below.markdown("**Tokens** · click one to jump to its step; blue :material/my_location: chips are copies "
                   "(the patch id)")
    with below.container(height=180, border=True):
        st.pills("Tokens", list(range(n)), key=TOKEN_STRIP_KEY, label_visibility="collapsed",
                 format_func=lambda i: token_markdown(trace.steps[i].text, is_copy=trace.steps[i].is_copy,
                                                      patch=trace.steps[i].patch),
                 on_change=_strip_changed)

    # --- timeline
    tl = timeline_figure(
        [s.p_copy for s in trace.steps], [s.entropy for s in trace.steps],
        is_copy=[s.is_copy for s in trace.steps], revisits=[(rv.start_step, rv.end_step) for rv in revisits],
        current=index, max_entropy=float(np.log(max(trace.n_patches, 2))),
    )
    below.plotly_chart(tl, key=TIMELINE_KEY, theme=None, on_select=_timeline_clicked, selection_mode="points",
                       config={"displaylogo": False, "displayModeBar": False}, width="stretch")
    state.sync_url(trace_id, index)


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
    """"Had it looked elsewhere…": re-decode from this revisit without it, or with another region."""
    trace = resources.load_trace(state.selected_trace_id())
    if trace is None or not trace.has_pointers:
        return
    cols = st.columns(2)
    if cols[0].button("Re-decode without", key=f"redecode_remove_{i}", width="stretch",
                      help="skip this revisit (ablation) and let the model continue"):
        _run_branch(trace, BranchEdit("remove", revisit=i))
    with cols[1].popover("Re-decode with region…", width="stretch"):
        picked = st.multiselect("patches (merged-patch ids, row-major)", list(range(trace.n_patches)),
                                default=sorted(set(rv.patches)), key=f"redecode_patches_{i}")
        if st.button("Re-decode", key=f"redecode_replace_{i}", disabled=not picked):
            _run_branch(trace, BranchEdit("replace", revisit=i, patches=[int(p) for p in picked]))


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
