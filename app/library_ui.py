"""The library page: every stored trace in a table with filters and search, import, delete (reviewers).

Widget keys (stable, used by tests): lib_search, lib_status, lib_verdict, lib_model, lib_tag, lib_annotated,
lib_open, open_viewer, open_annotate, import_file, import_upload, import_path, import_path_run,
delete_select, delete_confirm, delete_trace.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from . import resources, state
from .annotate_ui import open_in_annotate
from .safe_text import md_escape, shorten

STATUSES = ["", "complete", "running", "failed", "cancelled"]
VERDICTS = ["", "correct", "incorrect", "unsure"]
ANNOTATED = ["any", "annotated", "not annotated"]
LIMIT = 500


def filters() -> dict[str, Any]:
    """The sidebar filters as `list_traces` keyword arguments."""
    store = resources.get_store()
    with st.sidebar:
        state.annotator_input(st.sidebar)
        st.markdown("**Filters**")
        search = st.text_input("Search question / output", key="lib_search")
        status = st.selectbox("Status", STATUSES, key="lib_status", format_func=lambda v: v or "any")
        verdict = st.selectbox("Verdict", VERDICTS, key="lib_verdict", format_func=lambda v: v or "any")
        model = st.selectbox("Model", [""] + list(store.list_models()), key="lib_model",
                             format_func=lambda v: v or "any")
        tag = st.text_input("Tag", key="lib_tag")
        annotated = st.radio("Annotated", ANNOTATED, key="lib_annotated", horizontal=True)
    out: dict[str, Any] = {}
    if search.strip():
        out["search"] = search.strip()
    if status:
        out["status"] = status
    if verdict:
        out["verdict"] = verdict
    if model:
        out["model"] = model
    if tag.strip():
        out["tag"] = tag.strip()
    if annotated != "any":
        out["annotated"] = annotated == "annotated"
    return out


def table_rows(store: Any, rows: list) -> list[dict[str, Any]]:
    heads = store.heads_by_trace([r.trace_id for r in rows if r.annotated])
    annotators = {t: sorted(h.annotators) for t, h in heads.items()}
    return [{
        "trace": r.trace_id,
        "question": shorten(r.question, 80),
        "status": r.status,
        "verdict": r.verdict or "",
        "annotators": ", ".join(annotators.get(r.trace_id, [])),
        "version": r.annotation_version,
        "labels": r.annotation_state,
        "model": r.model_id,
        "created": (r.created_at or "")[:19].replace("T", " "),
        "revisits": r.n_revisits,
        "steps": r.n_steps,
        "tags": ", ".join(r.tags),
        "corrected": r.has_corrections,
    } for r in rows]


def render() -> None:
    state.ensure_app_navigation()
    st.title("Library")
    store = resources.get_store()
    f = filters()
    flash = st.session_state.pop("_lib_flash", None)
    if flash:
        st.success(md_escape(flash))
    total = store.count_traces(**f)
    rows = store.list_traces(limit=LIMIT, **f)
    st.caption(f"{total} trace(s) match" + (f"; showing the newest {LIMIT}" if total > LIMIT else ""))
    data = table_rows(store, rows)
    st.session_state["_lib_ids"] = [r["trace"] for r in data]
    if data:
        st.dataframe(data, hide_index=True, width="stretch", key="lib_table")
        ids = [r["trace"] for r in data]
        labels = {r["trace"]: f"{r['trace'][:8]} · {r['question']}" for r in data}
        c = st.columns([4, 1, 1], vertical_alignment="bottom")
        pick = c[0].selectbox("Trace", ids, key="lib_open", format_func=lambda t: labels.get(t, t))
        if c[1].button("Viewer", key="open_viewer", icon=":material/visibility:"):
            state.open_in_viewer(pick)
        if c[2].button("Annotate", key="open_annotate", icon=":material/edit_note:"):
            open_in_annotate(pick)
    else:
        st.info("No traces match these filters.", icon=":material/info:")

    _import_section(store)
    if data:
        _delete_section(store, [r["trace"] for r in data])


def _show_report(report: Any) -> None:
    (st.success if report.ok else st.warning)(md_escape(report.summary()))
    if report.errors:
        st.code("\n".join(str(e) for e in report.errors[:200]), language=None)


def _import_section(store: Any) -> None:
    from storage.importer import import_path

    st.subheader("Import")
    st.caption("Full traces JSONL (batch tracer shards, `export traces`) or v1g rows (JSONL / parquet).")
    up = st.file_uploader("File", type=["jsonl", "json", "parquet"], key="import_file")
    if up is not None and st.button("Import the file", key="import_upload"):
        suffix = Path(up.name).suffix.lower() if Path(up.name).suffix.lower() in (".jsonl", ".json", ".parquet") \
            else ".jsonl"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(up.getvalue())
            report = import_path(store, path)
        _show_report(report)
    with st.expander("Import from a server path"):
        p = st.text_input("File or folder on the server", key="import_path")
        if st.button("Import", key="import_path_run") and p.strip():
            try:
                report = import_path(store, p.strip())
            except (OSError, ValueError) as exc:
                st.error(md_escape(f"Import failed: {exc}"))
            else:
                _show_report(report)


def _delete_section(store: Any, ids: list[str]) -> None:
    from storage import PermissionDenied

    st.subheader("Delete")
    me = state.annotator()
    who = store.get_annotator(me) if me else None
    if not who or who.role != "reviewer":
        st.caption("Only reviewers can delete traces (deleted traces are hidden, not erased).")
        return
    pick = st.selectbox("Trace to delete", ids, key="delete_select")
    sure = st.checkbox("Yes, hide this trace from every page", key="delete_confirm")
    if st.button("Delete", key="delete_trace", type="primary", disabled=not sure):
        try:
            store.delete_trace(pick, by=me)
        except (PermissionDenied, KeyError) as exc:
            st.error(md_escape(f"Not deleted: {exc}"))
            return
        resources.forget_trace(pick)
        st.session_state.pop("delete_confirm", None)
        st.session_state["_lib_flash"] = f"Deleted {pick}."
        st.rerun()
