"""The annotate page: a queue of traces to label (with why each is there), a blind form per trace, keyboard
shortcuts, optimistic-concurrency saves on the annotator's own head, history.

Widget keys (stable, used by tests): verdict, answer_correct, note, tags, rv_label_<i>, rv_patches_<i>,
rv_pick_<i>, add_patches, add_step, add_query, add_revisit, remove_added_<j>, save_annotation, save_consensus,
keep_mine, take_theirs, revert_<version>, next_trace, prev_trace, ann_model, ann_tag, ann_verdict, ann_order,
ann_mode, ann_show_others, ann_rv, ann_keys (the keyboard component).

Blind: the form is loaded from *your own* head only (`Store.annotation_view`), never from anybody else's, and
that version is the *base* passed as `expected_version` on Save. A conflict therefore means your own head moved
(you saved in another tab), or — when you revise a label — that a reviewer adjudicated since you loaded: the
store keeps your save as a conflict version, and the panel shows a field-level diff table
(`storage.annotations.annotation_diff`) with "keep mine" (save ours again on top) and "take theirs" (load that
version into the form). Reviewers can switch "show others" to see every annotator's head beside the form and
save their form as the trace's consensus. Saving an incomplete form (no verdict, wrong_region without a
corrected region) shows what is missing and keeps everything typed.
"""

from __future__ import annotations

from typing import Any, MutableMapping

import streamlit as st

from v1core.copy_tokens import copy_token

from . import keys, resources, state
from .figures import patch_picker_figure
from .queue import MODE_LABELS, MODES, QueueItem, build_queue
from .safe_text import md_code, md_escape, shorten
from .widgets import empty_state, sidebar_scope, trace_header

VERDICTS = ["correct", "incorrect", "unsure"]
RV_LABELS = ["—", "correct", "wrong_region", "unnecessary"]
ANSWER = ["yes", "no"]

_LOADED = "_annot_loaded"  # (trace_id, annotator, version) the form shows
_BASE = "_annot_base"  # {(trace_id, annotator): own head version loaded} -> expected_version
_CBASE = "_annot_cbase"  # {(trace_id, annotator): consensus version loaded} -> expected_consensus
_NAV = "_annot_nav"  # (previous id, next id) of the queue, for the keyboard
_CTX = "_annot_ctx"  # (trace_id, annotator, number of revisits) the keys act on
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


@st.cache_data(show_spinner=False, max_entries=4096)
def _step_stats(url: str, trace_id: str) -> dict:
    """`Store.step_stats` of one trace, cached per store and trace (the queue lists complete traces only, and
    a finished trace's steps never change)."""
    return resources.get_store().step_stats([trace_id]).get(trace_id, {})


def queue(store: Any, me: str, *, mode: str, model: str | None, tag: str | None, verdict: str | None,
          order: str) -> list[QueueItem]:
    """The ordered queue for `me` (see `app.queue`): uncertainty parts cached per trace."""
    url = resources.store_url()
    return build_queue(store, me, mode=mode, order=order, model=model, tag=tag, verdict=verdict,
                       stats=lambda tid: _step_stats(url, tid))


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
    ss["ann_rv"] = 0
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


def _save(store: Any, trace_id: str, annotation: Any, expected: int, *, consensus: bool = False) -> None:
    """Save on the annotator's own head (or, `consensus`, as the trace's consensus); on success move the base;
    on conflict remember both sides for the resolution panel; an incomplete or invalid form keeps its state
    and says what is missing."""
    from storage import AnnotationConflict, IncompleteAnnotation, PermissionDenied

    ss = st.session_state
    me = annotation.annotator
    ensure_annotator(store, me)
    key = (trace_id, me)
    try:
        if consensus:
            v = store.save_consensus(trace_id, annotation, by=me, expected_version=ss.setdefault(_CBASE, {}).get(
                key, 0))
        else:
            v = store.save_annotation(trace_id, annotation, expected_version=expected,
                                      expected_consensus=ss.setdefault(_CBASE, {}).get(key))
    except AnnotationConflict as exc:
        ss[_CONFLICT] = {"trace_id": trace_id, "mine": annotation.to_dict(), "saved_version": exc.saved_version,
                         "current_version": exc.current_version, "current_annotator": exc.current_annotator,
                         "stream": exc.stream, "consensus": consensus}
        return
    except IncompleteAnnotation as exc:
        ss[_FLASH] = ("error", "Not saved — it needs " + "; ".join(exc.missing) + ". Everything you typed is kept.")
        return
    except (ValueError, KeyError, PermissionDenied) as exc:
        ss[_FLASH] = ("error", f"Not saved: {exc}")
        return
    if consensus:
        ss.setdefault(_CBASE, {})[key] = v
        ss[_FLASH] = ("success", f"Saved version {v} as the consensus of this trace.")
    else:
        ss.setdefault(_BASE, {})[key] = v
        ss[_LOADED] = (trace_id, me, v)
        ss[_FLASH] = ("success", f"Saved version {v}.")
    ss.pop(_CONFLICT, None)


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
    reviewer = state.is_reviewer(me) if me else False
    with st.sidebar:
        mode = st.radio("Show", MODES, key="ann_mode", format_func=lambda m: MODE_LABELS[m],
                        help="not labelled by me: skips every trace you already labelled · needs a second "
                             "annotator: traces exactly one other person labelled")
        verdict_f = st.selectbox("Verdict (export head)", [""] + VERDICTS, key="ann_verdict",
                                 format_func=lambda v: v or "any")
        order = st.radio("Order", ["uncertainty", "newest"], key="ann_order",
                         help="uncertainty: high mean pointer entropy / low p_copy at revisits first")
        show_others = st.toggle("Show others' labels", key="ann_show_others", disabled=not reviewer,
                                help="reviewers only: every annotator's own head beside your form (the form stays "
                                     "yours)") and reviewer

    items = queue(store, me, mode=mode, model=model, tag=tag, verdict=verdict_f, order=order)
    ids = [it.trace_id for it in items]
    # stay on a trace you just labelled (here or in another tab) though it left the queue; else follow it
    current = ss.get(_CURRENT) or state.selected_trace_id()
    if current and current not in ids and (not me or resources.load_trace(current) is None
                                           or store.annotation_view(current, me).own_version == 0):
        current = None
    if not current:
        if not ids:
            total = store.count_traces(status="complete")
            empty_state("No complete traces match these filters." if not total or mode == "all" else
                        f"Nothing left for {me or 'you'} in “{MODE_LABELS[mode]}”. Pick “all traces” to revisit "
                        "your labels.")
            return
        current = ids[0]
    ss[_CURRENT] = current
    pos = ids.index(current) if current in ids else -1
    if pos >= 0:
        nxt = ids[pos + 1] if pos + 1 < len(ids) else None
        prv = ids[pos - 1] if pos > 0 else None
    else:
        nxt, prv = (ids[0] if ids else None), None
    ss[_NAV] = (prv, nxt)

    c = st.columns([1, 1, 4], vertical_alignment="center")
    c[0].button("Previous", key="prev_trace", icon=":material/chevron_left:", on_click=goto, args=(prv,),
                disabled=prv is None, help="k")
    c[1].button("Next", key="next_trace", icon=":material/chevron_right:", on_click=goto, args=(nxt,),
                disabled=nxt is None, help="j")
    where = f"{pos + 1} of {len(ids)}" if pos >= 0 else "labelled — not in this queue any more"
    c[2].caption(f"{len(ids)} trace(s) in “{md_escape(MODE_LABELS[mode])}” for {md_escape(me or 'you')} · {where}")
    item = items[pos] if pos >= 0 else None
    if item is not None:
        with st.expander("Why this trace: " + item.why(), expanded=False):
            st.table({"part": [p for p, _ in item.uncertainty.parts()],
                      "value": [v for _, v in item.uncertainty.parts()]}, hide_index=True)

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

    view = store.annotation_view(current, me, show_others=show_others)
    key = (current, me)
    base = ss.setdefault(_BASE, {})
    if key not in base:
        base[key] = view.own_version
        ss.setdefault(_CBASE, {})[key] = view.consensus_version
    if ss.get(_LOADED) != (current, me, base[key]):
        rec = view.own if (view.own and view.own.version == base[key]) else (
            store.get_annotation(current, base[key]) if base[key] else None)
        _load_form(trace, rec)
        ss[_LOADED] = (current, me, base[key])
    ss[_CTX] = (current, me, len(trace.revisits))
    keys.keyboard("ann_keys", _on_key)

    flash = ss.pop(_FLASH, None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(md_escape(flash[1]))

    conflict = ss.get(_CONFLICT)
    if conflict and conflict["trace_id"] == current:
        _conflict_panel(store, trace, conflict)

    if show_others:
        _others_panel(trace, view)
    _form(store, trace, me, reviewer)
    _legend()
    _history(store, trace, me, reviewer)


def apply_key(ss: MutableMapping[str, Any], action: str, ctx: tuple[str, str, int],
              nav: tuple[str | None, str | None]) -> tuple[str, Any] | None:
    """Apply a key's action (`app.keys.KEYMAP`) to the form state `ss` (session state, or any mapping).
    `ctx` is (trace id, annotator, number of revisits), `nav` the queue's (previous id, next id). Returns
    what the page must do besides: ("goto", trace id or None) or ("save", (trace id, annotator)); else None."""
    trace_id, me, n_rv = ctx
    kind, _, value = action.partition(":")
    if kind == "verdict":
        ss["verdict"] = value
    elif kind == "answer":
        ss["answer_correct"] = value
    elif kind == "trace":
        return ("goto", nav[1] if value == "next" else nav[0])
    elif kind == "revisit" and n_rv:
        ss["ann_rv"] = (int(ss.get("ann_rv") or 0) + (1 if value == "next" else -1)) % n_rv
    elif kind == "label" and n_rv:
        ss[f"rv_label_{int(ss.get('ann_rv') or 0)}"] = value
    elif kind == "save":
        return ("save", (trace_id, me))
    return None


def _on_key(action: str) -> None:
    """The keyboard component's callback (runs before the rerun)."""
    ss = st.session_state
    ctx = ss.get(_CTX)
    if not ctx:
        return
    todo = apply_key(ss, action, ctx, ss.get(_NAV) or (None, None))
    if todo is None:
        return
    if todo[0] == "goto":
        goto(todo[1])
    else:
        _on_save(*todo[1])


def _legend() -> None:
    with st.expander("Keyboard shortcuts", expanded=True, icon=":material/keyboard:"):
        st.caption(" · ".join(f"{md_code(r['key'])} {md_escape(r['does'])}" for r in keys.legend_rows()))


def _form(store: Any, trace: Any, me: str, reviewer: bool = False) -> None:
    ss = st.session_state
    st.subheader("Trace")
    c = st.columns(2)
    c[0].radio("Verdict  (1 / 2 / 3)", VERDICTS, key="verdict", index=None, horizontal=True)
    c[1].radio("Answer correct?  (y / n)", ANSWER, key="answer_correct", index=None, horizontal=True)
    st.text_area("Note", key="note", max_chars=20_000)
    st.text_input("Tags (comma-separated)", key="tags")

    uri = resources.image_uri(trace.image_sha256)
    n_rv = len(trace.revisits)
    st.subheader(f"Revisits ({n_rv})")
    if n_rv:
        ss["ann_rv"] = min(max(int(ss.get("ann_rv") or 0), 0), n_rv - 1)
        st.radio("Selected revisit  ([ / ], then c / w / u)", list(range(n_rv)), key="ann_rv", horizontal=True,
                 format_func=lambda i: f"R{i + 1}")
    for i, rv in enumerate(trace.revisits):
        selected = i == ss.get("ann_rv")
        with st.container(border=True, key=f"rv_box_{i}"):
            q = f' · detect(query="{rv.query}")' if rv.query is not None else ""
            mark = "▶ " if selected else ""
            st.markdown(f"{mark}**R{i + 1}** · steps {rv.start_step}–{rv.end_step - 1}{md_escape(q)}")
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

    b = st.columns([1, 1, 3])
    b[0].button("Save  (Ctrl+Enter)", key="save_annotation", type="primary", icon=":material/save:",
                on_click=_on_save, args=(trace.trace_id, me))
    if reviewer:
        b[1].button("Save as consensus", key="save_consensus", icon=":material/gavel:",
                    on_click=_on_save, args=(trace.trace_id, me, True),
                    help="your form becomes the trace's consensus (what exports use); annotators' own labels stay")


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


def _on_save(trace_id: str, me: str, consensus: bool = False) -> None:
    from storage import IncompleteAnnotation

    store = resources.get_store()
    trace = resources.load_trace(trace_id)
    try:
        ann = _form_annotation(trace, me)
        missing = ann.missing()
        if missing:
            raise IncompleteAnnotation(missing)
        ann.validate()
    except IncompleteAnnotation as exc:
        st.session_state[_FLASH] = ("error", "Not saved — it needs " + "; ".join(exc.missing)
                                    + ". Everything you typed is kept.")
        return
    except ValueError as exc:
        st.session_state[_FLASH] = ("error", f"Not saved: {exc}")
        return
    _save(store, trace_id, ann, st.session_state.setdefault(_BASE, {}).get((trace_id, me), 0), consensus=consensus)


# ----------------------------------------------------------------------------- others, conflict, history
def diff_table(mine: Any, theirs: Any) -> dict[str, list[str]]:
    """`annotation_diff` rows as table columns (field, mine, theirs, differs) — plain text cells."""
    from storage import annotation_diff

    rows = annotation_diff(mine, theirs)
    return {"field": [r.field for r in rows], "mine": [shorten(r.mine, 200) for r in rows],
            "theirs": [shorten(r.theirs, 200) for r in rows], "differs": ["" if r.same else "≠" for r in rows]}


def _others_panel(trace: Any, view: Any) -> None:
    with st.container(border=True, key="ann_others"):
        st.markdown("**Other annotators' labels** (reviewer view)")
        if not view.others and view.consensus is None:
            st.caption("Nobody else has labelled this trace.")
        mine = _form_annotation(trace, view.annotator)
        for name, rec in view.others.items():
            st.caption(md_escape(f"{name} · v{rec.version} · {rec.created_at[:19].replace('T', ' ')}"))
            st.table(diff_table(mine, rec.annotation), hide_index=True)
        if view.consensus is not None:
            st.caption(md_escape(f"consensus · v{view.consensus.version} by {view.consensus.annotator}"))
            st.table(diff_table(mine, view.consensus.annotation), hide_index=True)


def _conflict_panel(store: Any, trace: Any, conflict: dict) -> None:
    from storage import Annotation

    theirs = store.get_annotation(trace.trace_id, conflict["current_version"])
    with st.container(border=True, key="ann_conflict"):
        if conflict.get("stream") == "consensus":
            msg = (f"A reviewer ({conflict.get('current_annotator') or '?'}) adjudicated this trace (consensus "
                   f"version {conflict['current_version']}) after you loaded it.")
        else:
            msg = (f"Your own label on this trace moved to version {conflict['current_version']} (saved from another "
                   "tab or session) after you loaded it.")
        st.warning(md_escape(msg + f" Your changes are kept as version {conflict['saved_version']}."),
                   icon=":material/warning:")
        st.table(diff_table(Annotation.from_dict(conflict["mine"]), theirs.annotation if theirs else None),
                 hide_index=True)
        b = st.columns(2)
        b[0].button("Keep mine", key="keep_mine", on_click=_keep_mine, args=(trace.trace_id,),
                    help="save your version again on top")
        b[1].button("Take theirs", key="take_theirs", on_click=_take_theirs, args=(trace.trace_id,),
                    help=f"load version {conflict['current_version']} into the form")


def _keep_mine(trace_id: str) -> None:
    from storage import Annotation

    ss = st.session_state
    conflict = ss.get(_CONFLICT)
    if not conflict:
        return
    mine = Annotation.from_dict(conflict["mine"])
    key = (trace_id, mine.annotator)
    if conflict.get("stream") == "consensus":  # a ruling came in between: accept having seen it, save again
        ss.setdefault(_CBASE, {})[key] = int(conflict["current_version"])
        _save(resources.get_store(), trace_id, mine, ss.setdefault(_BASE, {}).get(key, 0),
              consensus=bool(conflict.get("consensus")))
    else:
        _save(resources.get_store(), trace_id, mine, int(conflict["current_version"]))


def _take_theirs(trace_id: str) -> None:
    ss = st.session_state
    conflict = ss.pop(_CONFLICT, None)
    if not conflict:
        return
    me = conflict["mine"].get("annotator", "")
    key = (trace_id, me)
    if conflict.get("stream") == "consensus":
        ss.setdefault(_CBASE, {})[key] = int(conflict["current_version"])
    else:
        ss.setdefault(_BASE, {})[key] = int(conflict["current_version"])
    rec = resources.get_store().get_annotation(trace_id, int(conflict["current_version"]))
    trace = resources.load_trace(trace_id)
    if rec is not None and trace is not None:
        _load_form(trace, rec)
        ss[_LOADED] = (trace_id, me, ss.setdefault(_BASE, {}).get(key, 0))
    ss[_FLASH] = ("success", f"Loaded version {conflict['current_version']}; your version "
                             f"{conflict['saved_version']} stays in the history.")


def _revert(trace_id: str, version: int, me: str) -> None:
    store = resources.get_store()
    rec = store.get_annotation(trace_id, version)
    if rec is None:
        return
    from storage import Annotation

    a = Annotation.from_dict({**rec.annotation.to_dict(), "annotator": me})
    _save(store, trace_id, a, st.session_state.setdefault(_BASE, {}).get((trace_id, me), 0))
    st.session_state[_LOADED] = None


def _history(store: Any, trace: Any, me: str, reviewer: bool = False) -> None:
    """Your own versions of this trace (every version for reviewers: they adjudicate)."""
    hist = store.annotation_history(trace.trace_id, annotator=None if reviewer else me)
    st.subheader(f"{'History' if reviewer else 'Your history'} ({len(hist)})")
    if not hist:
        st.caption("No annotation yet.")
        return
    for rec in reversed(hist):
        a = rec.annotation
        c = st.columns([6, 1], vertical_alignment="center")
        flag = " · conflict (not your head)" if rec.conflict else ""
        kind = " · consensus" if rec.is_consensus else ""
        corr = sum(1 for r in a.revisit_labels if r.has_correction)
        c[0].markdown(md_escape(f"v{rec.version} · {a.annotator} · {rec.created_at[:19].replace('T', ' ')} · "
                                f"verdict {a.verdict or '—'} · {corr} correction(s) · "
                                f"{len(a.added_revisits)} added{kind}{flag} · {shorten(a.note, 60)}"))
        c[1].button("Revert", key=f"revert_{rec.version}", on_click=_revert, args=(trace.trace_id, rec.version, me),
                    help="save this version's content again as your newest version")
