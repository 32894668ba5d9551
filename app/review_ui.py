"""The review page: agreement figures for the project and the traces whose annotators disagree, side by side.

Widget keys (stable, used by tests): rev_tag, rev_model, rev_min_iou, rev_pick, rev_open_<name>, rev_adopt_<name>.

Agreement (Cohen's kappa on verdicts, mean patch IoU on corrected regions) and the disagreement list come
from `storage.agreement` (`compute_agreement`, `find_disagreements`, on each annotator's own head); this page
only lays them out. A reviewer settles a disagreement by adopting one annotator's head as the trace's consensus
(`Store.adopt_consensus`: a consensus version by the reviewer, what exports use, left out of agreement) or by
opening the trace in Annotate and saving their own form as the consensus ("Save as consensus").
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from storage.agreement import compute_agreement, find_disagreements
from v1core.copy_tokens import copy_token

from . import resources, state
from .annotate_ui import open_in_annotate
from .figures import patch_picker_figure
from .safe_text import md_code, md_escape, shorten
from .widgets import sidebar_scope

_FLASH = "_review_flash"


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def pair_rows(agreement: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per pair of annotators."""
    return [
        {
            "annotators": " · ".join(p["annotators"]),
            "traces": p["traces"],
            "verdict pairs": p["verdict_pairs"],
            "observed agreement": p["observed_agreement"],
            "Cohen's kappa": p["kappa"],
            "corrected regions": p["corrected_regions"],
            "mean IoU": p["mean_iou"],
        }
        for p in agreement["pairs"]
    ]


def disagreement_label(item: dict[str, Any], question: str = "") -> str:
    verdicts = ", ".join(f"{n}: {v or '—'}" for n, v in item["verdicts"].items())
    iou = "" if item["lowest_iou"] is None else f" · IoU {item['lowest_iou']:.2f}"
    return f"{item['trace_id'][:8]} · {shorten(question, 40)} · {verdicts}{iou}"


def _adopt(trace_id: str, name: str, reviewer: str) -> None:
    """Make `name`'s own head the trace's consensus, saved by the reviewer (a new consensus version)."""
    from storage import AnnotationConflict, PermissionDenied

    store = resources.get_store()
    try:
        v = store.adopt_consensus(trace_id, name, by=reviewer)
    except (KeyError, PermissionDenied, AnnotationConflict, ValueError) as exc:
        st.session_state[_FLASH] = ("error", f"Not adopted: {exc}")
        return
    st.session_state[_FLASH] = ("success", f"Saved version {v}: {name}'s label adopted as the consensus.")


def render() -> None:
    state.ensure_app_navigation()
    st.title("Review")
    store = resources.get_store()
    me, model, tag = sidebar_scope(store, "Scope", "rev")
    with st.sidebar:
        min_iou = st.slider("Region disagreement below IoU", 0.0, 1.0, 1.0, 0.05, key="rev_min_iou",
                            help="1.0 lists any difference in a corrected region")
    filters = {k: v for k, v in (("model", model), ("tag", tag)) if v}

    agreement = compute_agreement(store, **filters)
    c = st.columns(4)
    c[0].metric("Annotators", len(agreement["annotators"]))
    c[1].metric("Traces with ≥ 2 annotators", agreement["traces"])
    c[2].metric("Cohen's kappa (verdicts)", fmt(agreement["kappa"]))
    c[3].metric("Mean IoU (corrected regions)", fmt(agreement["mean_iou"]),
                help=f"over {agreement['corrected_regions']} revisit(s) someone corrected")
    if agreement["pairs"]:
        st.dataframe(pair_rows(agreement), hide_index=True, use_container_width=True)
    else:
        st.info("Agreement needs traces labelled by two or more annotators.", icon=":material/group:")

    flash = st.session_state.pop(_FLASH, None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(md_escape(flash[1]))

    items = find_disagreements(store, min_iou=min_iou, **filters)
    st.subheader(f"Disagreements ({len(items)})")
    if not items:
        st.success("No trace has disagreeing annotators in this scope.", icon=":material/done_all:")
        return
    reviewer = state.is_reviewer(me)
    if not reviewer:
        st.caption("Reviewers can adopt one annotator's version here "
                   "(`v1studio annotators set-role NAME reviewer`).")
    questions = {i["trace_id"]: _question(i["trace_id"]) for i in items}
    ids = [i["trace_id"] for i in items]
    picked = st.selectbox("Trace", ids, key="rev_pick",
                          format_func=lambda t: disagreement_label(next(i for i in items if i["trace_id"] == t),
                                                                   questions.get(t, "")))
    _side_by_side(next(i for i in items if i["trace_id"] == picked), me if reviewer else "")


def _question(trace_id: str) -> str:
    trace = resources.load_trace(trace_id)
    return trace.question if trace is not None else ""


def _side_by_side(item: dict[str, Any], reviewer: str) -> None:
    trace = resources.load_trace(item["trace_id"])
    if trace is None:
        st.error("This trace is no longer in the store.")
        return
    st.markdown(f"**Question** {md_escape(trace.question)}")
    with st.expander("Model output", expanded=False):
        st.text(trace.output_text)
    uri = resources.image_uri(trace.image_sha256)
    names = item["annotators"]
    cols = st.columns(len(names))
    for col, name in zip(cols, names):
        with col.container(border=True):
            st.markdown(f"**{md_escape(name)}**")
            ans = item["answer_correct"].get(name)
            st.markdown(f"verdict **{item['verdicts'].get(name) or '—'}** · answer correct: "
                        f"{'—' if ans is None else ('yes' if ans else 'no')}")
            if item["notes"].get(name):
                st.text(shorten(item["notes"][name], 400))
            for rv in item["revisits"]:
                region = rv["regions"].get(name)
                label = rv["labels"].get(name) or "—"
                st.caption(f"R{rv['index'] + 1}: {label}" + (" · " + md_code(" ".join(copy_token(k) for k in region))
                                                            if region else ""))
                if region is not None and (rv["disagree"] or label == "wrong_region"):
                    fig = patch_picker_figure(tuple(trace.image_size), tuple(trace.grid), uri, region, height=260)
                    fig.update_layout(dragmode=False)
                    st.plotly_chart(fig, key=f"rev_fig_{name}_{rv['index']}", theme=None,
                                    config={"displayModeBar": False, "staticPlot": True})
            b = st.columns(2)
            if b[0].button("Open in Annotate", key=f"rev_open_{name}", disabled=not reviewer,
                           help="write your own annotation for this trace"):
                open_in_annotate(item["trace_id"])
            b[1].button("Adopt this version", key=f"rev_adopt_{name}", on_click=_adopt,
                        args=(item["trace_id"], name, reviewer), disabled=not reviewer)
    ious = [f"R{rv['index'] + 1} IoU {fmt(rv['iou'], 2)}" for rv in item["revisits"] if rv["iou"] is not None]
    if ious:
        st.caption(" · ".join(ious))
