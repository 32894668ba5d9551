"""The annotate page: a queue of traces to label, a form per trace, optimistic-concurrency saves, history.

Widget keys (stable, used by tests): verdict, answer_correct, note, tags, rv_label_<i>, rv_patches_<i>,
rv_pick_<i>, add_patches, add_step, add_query, add_revisit, remove_added_<j>, save_annotation, keep_mine,
take_theirs, revert_<version>, next_trace, prev_trace, ann_model, ann_tag, ann_verdict, ann_order.

The form is loaded from the trace's current annotation (the version remembered as the *base*); Save passes
that base as `expected_version`. When someone else saved in between, the store keeps our save as a conflict
version and raises `AnnotationConflict`: both versions are shown with "keep mine" (save ours again on top of
theirs) and "take theirs" (load theirs into the form). Nothing is lost either way: every save is a version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from v1core.copy_tokens import copy_token

from . import resources, state
from .figures import patch_picker_figure
from .safe_text import md_code, md_escape, shorten
from .widgets import empty_state, sidebar_scope, trace_header

VERDICTS = ["correct", "incorrect", "unsure"]
RV_LABELS = ["—", "correct", "wrong_region", "unnecessary"]
ANSWER = ["yes", "no"]

_LOADED = "_annot_loaded"  # (trace_id, version) the form shows
_BASE = "_annot_base"  # {trace_id: version loaded} -> expected_version
_ADDED = "_annot_added"  # added revisits being edited (list of dicts)
_CONFLICT = "_annot_conflict"  # pending conflict info
_FLASH = "_annot_flash"
_CURRENT = "_annot_trace"


# ----------------------------------------------------------------------------- helpers
def ensure_annotator(store: Any, name: str) -> None:
    """Record the annotator in the store (keeps an existing role)."""
    if name and store.get_annotator(name) is None:
        store.add_annotator(name)


def copy_ids(patches: list[int] | None) -> str:
    return " ".join(copy_token(k) for k in (patches or []))


@st.cache_data(show_spinner=False, max_entries=2048)
def uncertainty(url: str, trace_id: str) -> float:
    """Higher = more worth a look: mean pointer entropy (normalised by log #patches) plus 1 − mean p_copy
    at the revisits' copy steps."""
    trace = resources.load_trace(trace_id)
    if trace is None or not trace.steps:
        return 0.0
    n = max(int(trace.n_patches), 2)
    ent = np.array([s.entropy for s in trace.steps], dtype=float)
    ent = ent[np.isfinite(ent)]
    score = float(ent.mean() / np.log(n)) if ent.size else 0.0
    pc = np.array([s.p_copy for s in trace.steps if s.is_copy], dtype=float)
    pc = pc[np.isfinite(pc)]
    if pc.size:
        score += 1.0 - float(pc.mean())
    return score


def queue(store: Any, me: str, *, model: str | None, tag: str | None, verdict: str | None,
          order: str) -> tuple[list[Any], list[str]]:
    """(ordered candidate summaries, ids not yet annotated by me in that order)."""
    rows = store.list_traces(status="complete", model=model or None, tag=tag or None, verdict=verdict or None,
                             limit=300)
    if order == "uncertainty":
        url = resources.store_url()
        rows = sorted(rows, key=lambda r: -uncertainty(url, r.trace_id))
    mine = set(st.session_state.get("_annot_mine", set()))
    todo = [r.trace_id for r in rows if (r.annotator or "") != me and r.trace_id not in mine]
    return rows, todo


def _load_form(trace: Any, rec: Any) -> None:
    """Fill the form's widget state from an annotation record (or blank when None)."""
    ss = st.session_state
    a = rec.annotation if rec is not None else None
    ss["verdict"] = a.verdict if a is not None else None
    ss["answer_correct"] = None if a is None or a.answer_correct is None else ("yes" if a.answer_correct else "no")
    ss["note"] = a.note if a is not None else ""
    ss["tags"] = ", ".join(a.tags) if a is not None else ""
    for i, _ in enumerate(trace.revisits):
        lab = a.label_for(i) if a is not None else None
        ss[f"rv_label_{i}"] = lab.label if lab is not None else "—"
        ss[f"rv_patches_{i}"] = list(lab.corrected_patches or []) if lab is not None else []
    ss[_ADDED] = [x.to_dict() for x in a.added_revisits] if a is not None else []
    for k in ("add_patches", "add_query"):
        ss.pop(k, None)


def _form_annotation(trace: Any, me: str) -> Any:
    from storage import AddedRevisit, Annotation, RevisitLabel

    ss = st.session_state
    labels = []
    for i, _ in enumerate(trace.revisits):
        lab = ss.get(f"rv_label_{i}", "—")
        if lab and lab != "—":
            patches = list(ss.get(f"rv_patches_{i}") or []) if lab == "wrong_region" else None
            labels.append(RevisitLabel(i, lab, corrected_patches=patches or None))
    ans = ss.get("answer_correct")
    tags = [t.strip() for t in str(ss.get("tags") or "").split(",") if t.strip()]
    return Annotation(annotator=me, verdict=ss.get("verdict"), answer_correct=None if ans is None else ans == "yes",
                      note=str(ss.get("note") or ""), tags=tags, revisit_labels=labels,
                      added_revisits=[AddedRevisit.from_dict(d) for d in ss.get(_ADDED, [])])


def _save(store: Any, trace_id: str, annotation: Any, expected: int) -> None:
    """Save; on success move the base; on conflict remember both sides for the resolution panel."""
    from storage import AnnotationConflict

    ss = st.session_state
    ensure_annotator(store, annotation.annotator)
    try:
        v = store.save_annotation(trace_id, annotation, expected_version=expected)
    except AnnotationConflict as exc:
        ss[_CONFLICT] = {"trace_id": trace_id, "mine": annotation.to_dict(), "saved_version": exc.saved_version,
                         "current_version": exc.current_version, "current_annotator": exc.current_annotator}
        return
    except (ValueError, KeyError) as exc:
        ss[_FLASH] = ("error", f"Not saved: {exc}")
        return
    ss.setdefault(_BASE, {})[trace_id] = v
    ss[_LOADED] = (trace_id, v)
    ss.setdefault("_annot_mine", set()).add(trace_id)
    ss.pop(_CONFLICT, None)
    ss[_FLASH] = ("success", f"Saved version {v}.")


def goto(trace_id: str | None) -> None:
    """Make `trace_id` the trace the Annotate page shows (and the selected trace everywhere)."""
    if trace_id:
        st.session_state[_CURRENT] = trace_id
        state.select_trace(trace_id)
        st.session_state.pop(_CONFLICT, None)


def open_in_annotate(trace_id: str) -> None:
    """Switch to the Annotate page on `trace_id` (does not return)."""
    goto(trace_id)
    st.switch_page(state.ANNOTATE_PAGE)


# ----------------------------------------------------------------------------- page
def render() -> None:
    state.ensure_app_navigation()
    st.title("Annotate")
    store = resources.get_store()
    ss = st.session_state
    me, model, tag = sidebar_scope(store, "Queue", "ann")
    with st.sidebar:
        verdict_f = st.selectbox("Current verdict", [""] + VERDICTS, key="ann_verdict",
                                 format_func=lambda v: v or "any")
        order = st.radio("Order", ["uncertainty", "newest"], key="ann_order",
                         help="uncertainty: high mean pointer entropy / low p_copy at revisits first")

    rows, todo = queue(store, me, model=model, tag=tag, verdict=verdict_f, order=order)
    if not rows:
        empty_state("No complete traces match these filters.")
        return
    ids = [r.trace_id for r in rows]
    current = ss.get(_CURRENT) or state.selected_trace_id()
    if current not in ids:
        current = todo[0] if todo else ids[0]
        ss[_CURRENT] = current
    pos = ids.index(current)
    nxt = next((t for t in ids[pos + 1:] if t in todo), None) or next((t for t in todo if t != current), None)
    prv = ids[pos - 1] if pos > 0 else None

    c = st.columns([1, 1, 4], vertical_alignment="center")
    c[0].button("Previous", key="prev_trace", icon=":material/chevron_left:", on_click=goto, args=(prv,),
                disabled=prv is None)
    c[1].button("Next", key="next_trace", icon=":material/chevron_right:", on_click=goto, args=(nxt,),
                disabled=nxt is None)
    c[2].caption(f"{len(todo)} trace(s) left for {md_escape(me or 'you')} · {pos + 1} of {len(ids)} in this order")

    trace = resources.load_trace(current)
    if trace is None:
        st.error("This trace is no longer in the store.")
        return
    trace_header(trace)
    with st.expander("Output text", expanded=False):
        st.text(trace.output_text)

    if not me:
        st.info("Log in (sidebar) to annotate." if state.auth_configured() else
                "Type your name in the sidebar (Annotator) to annotate.", icon=":material/person:")
        return

    base = ss.setdefault(_BASE, {})
    cur = store.get_annotation(current)
    if current not in base:
        base[current] = cur.version if cur else 0
    if ss.get(_LOADED) != (current, base[current]):
        rec = cur if (cur and cur.version == base[current]) else (
            store.get_annotation(current, base[current]) if base[current] else None)
        _load_form(trace, rec)
        ss[_LOADED] = (current, base[current])

    flash = ss.pop(_FLASH, None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(md_escape(flash[1]))

    conflict = ss.get(_CONFLICT)
    if conflict and conflict["trace_id"] == current:
        _conflict_panel(store, trace, conflict)

    _form(store, trace, me)
    _history(store, trace, me)


def _form(store: Any, trace: Any, me: str) -> None:
    ss = st.session_state
    st.subheader("Trace")
    c = st.columns(2)
    c[0].radio("Verdict", VERDICTS, key="verdict", index=None, horizontal=True)
    c[1].radio("Answer correct?", ANSWER, key="answer_correct", index=None, horizontal=True)
    st.text_area("Note", key="note", max_chars=20_000)
    st.text_input("Tags (comma-separated)", key="tags")

    uri = resources.image_uri(trace.image_sha256)
    st.subheader(f"Revisits ({len(trace.revisits)})")
    for i, rv in enumerate(trace.revisits):
        with st.container(border=True):
            q = f' · detect(query="{rv.query}")' if rv.query is not None else ""
            st.markdown(f"**R{i + 1}** · steps {rv.start_step}–{rv.end_step - 1}{md_escape(q)}")
            st.caption("model copied " + md_code(copy_ids(sorted(set(rv.patches)))))
            lab = st.radio("Label", RV_LABELS, key=f"rv_label_{i}", horizontal=True)
            if lab == "wrong_region":
                key = f"rv_patches_{i}"
                sel = list(ss.get(key) or [])
                fig = patch_picker_figure(tuple(trace.image_size), tuple(trace.grid), uri, sel or rv.patches,
                                          height=360)
                st.plotly_chart(fig, key=f"rv_pick_{i}", on_select=_picked(key, f"rv_pick_{i}"),
                                selection_mode=("box", "lasso", "points"), theme=None)
                st.multiselect("Corrected patches (box/lasso on the grid, or pick ids)",
                               list(range(int(trace.n_patches))), key=key)
                st.caption("corrected region " + md_code(copy_ids(ss.get(key)) or "(none yet)"))

    st.subheader("Missing revisits")
    added = ss.setdefault(_ADDED, [])
    for j, a in enumerate(list(added)):
        cc = st.columns([6, 1], vertical_alignment="center")
        cc[0].caption(f"before step {a['step']} · query {md_code(a.get('query'))} · " + md_code(copy_ids(a["patches"])))
        cc[1].button("Remove", key=f"remove_added_{j}", on_click=_remove_added, args=(j,))
    with st.expander("Add a missing revisit", expanded=False):
        fig = patch_picker_figure(tuple(trace.image_size), tuple(trace.grid), uri, ss.get("add_patches") or [],
                                  height=360)
        st.plotly_chart(fig, key="add_pick", on_select=_picked("add_patches", "add_pick"),
                        selection_mode=("box", "lasso", "points"), theme=None)
        st.multiselect("Patches", list(range(int(trace.n_patches))), key="add_patches")
        st.number_input("Before step", 0, max(len(trace.steps) - 1, 0), key="add_step")
        st.text_input("Query", key="add_query")
        st.button("Add revisit", key="add_revisit", on_click=_add_revisit)

    st.button("Save", key="save_annotation", type="primary", icon=":material/save:",
              on_click=_on_save, args=(trace.trace_id, me))


def _picked(target: str, chart_key: str):
    def cb() -> None:
        sel = st.session_state.get(chart_key)
        try:
            points = sel["selection"]["points"]
        except (KeyError, TypeError):
            return
        ids = sorted({int(p["customdata"]) for p in points if p.get("customdata") is not None})
        if ids:
            st.session_state[target] = ids
    return cb


def _add_revisit() -> None:
    ss = st.session_state
    patches = list(ss.get("add_patches") or [])
    if not patches:
        ss[_FLASH] = ("error", "Pick the patches of the missing revisit first.")
        return
    ss.setdefault(_ADDED, []).append({"step": int(ss.get("add_step") or 0), "patches": sorted(patches), "box": None,
                                      "query": str(ss.get("add_query") or "")})
    ss["add_patches"] = []
    ss["add_query"] = ""


def _remove_added(j: int) -> None:
    added = st.session_state.get(_ADDED, [])
    if 0 <= j < len(added):
        added.pop(j)


def _on_save(trace_id: str, me: str) -> None:
    store = resources.get_store()
    trace = resources.load_trace(trace_id)
    try:
        ann = _form_annotation(trace, me)
        ann.validate()
    except ValueError as exc:
        st.session_state[_FLASH] = ("error", f"Not saved: {exc}")
        return
    _save(store, trace_id, ann, st.session_state.setdefault(_BASE, {}).get(trace_id, 0))


# ----------------------------------------------------------------------------- conflict + history
def _conflict_panel(store: Any, trace: Any, conflict: dict) -> None:
    theirs = store.get_annotation(trace.trace_id, conflict["current_version"])
    with st.container(border=True):
        st.warning(md_escape(
            f"Someone else ({conflict.get('current_annotator') or '?'}) saved version {conflict['current_version']} "
            f"after you loaded this trace. Your changes are kept as version {conflict['saved_version']}."),
            icon=":material/warning:")
        c = st.columns(2)
        c[0].markdown(f"**Yours** (v{conflict['saved_version']})")
        c[0].json(conflict["mine"])
        c[1].markdown(f"**Theirs** (v{conflict['current_version']})")
        c[1].json(theirs.annotation.to_dict() if theirs else {})
        b = st.columns(2)
        b[0].button("Keep mine", key="keep_mine", on_click=_keep_mine, args=(trace.trace_id,))
        b[1].button("Take theirs", key="take_theirs", on_click=_take_theirs, args=(trace.trace_id,))


def _keep_mine(trace_id: str) -> None:
    from storage import Annotation

    ss = st.session_state
    conflict = ss.get(_CONFLICT)
    if not conflict:
        return
    mine = Annotation.from_dict(conflict["mine"])
    _save(resources.get_store(), trace_id, mine, int(conflict["current_version"]))


def _take_theirs(trace_id: str) -> None:
    ss = st.session_state
    conflict = ss.pop(_CONFLICT, None)
    if not conflict:
        return
    ss.setdefault(_BASE, {})[trace_id] = int(conflict["current_version"])
    ss[_LOADED] = None  # reload the form from theirs
    ss[_FLASH] = ("success", f"Loaded version {conflict['current_version']}; your version "
                             f"{conflict['saved_version']} stays in the history.")


def _revert(trace_id: str, version: int, me: str) -> None:
    store = resources.get_store()
    rec = store.get_annotation(trace_id, version)
    if rec is None:
        return
    from storage import Annotation

    a = Annotation.from_dict({**rec.annotation.to_dict(), "annotator": me})
    _save(store, trace_id, a, st.session_state.setdefault(_BASE, {}).get(trace_id, 0))
    st.session_state[_LOADED] = None


def _history(store: Any, trace: Any, me: str) -> None:
    hist = store.annotation_history(trace.trace_id)
    st.subheader(f"History ({len(hist)})")
    if not hist:
        st.caption("No annotation yet.")
        return
    for rec in reversed(hist):
        a = rec.annotation
        c = st.columns([6, 1], vertical_alignment="center")
        flag = " · conflict (not current)" if rec.conflict else ""
        corr = sum(1 for r in a.revisit_labels if r.has_correction)
        c[0].markdown(md_escape(f"v{rec.version} · {a.annotator} · {rec.created_at[:19].replace('T', ' ')} · "
                                f"verdict {a.verdict or '—'} · {corr} correction(s) · "
                                f"{len(a.added_revisits)} added{flag} · {shorten(a.note, 60)}"))
        c[1].button("Revert", key=f"revert_{rec.version}", on_click=_revert, args=(trace.trace_id, rec.version, me),
                    help="save this version's content again as the newest version")
