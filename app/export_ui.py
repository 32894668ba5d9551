"""The export page: training data out of the store (v1g JSONL, HF parquet, TRL preferences, full traces,
Label Studio).

Widget keys (stable, used by tests): export_format, exp_verdict, exp_all, exp_annotator, exp_tag, exp_model,
exp_only_corrected, exp_images, export_v1g (the v1g download button), export_download (the others),
export_server_path, export_write.

Training formats (v1g, HF) take the traces judged correct or with a corrected region unless a verdict is picked
or "All labelled traces" is ticked; the page says which selection the export used.

The export is written to a temp file with the store's exporters (`storage.export`), read back for the preview
and the download, and kept in the session until the format, a filter or the store's annotations change.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from . import resources, state
from .safe_text import md_escape, shorten

FORMATS = {
    "v1g JSONL": ("v1g", "export_v1g", ".jsonl", "application/jsonl"),
    "HF parquet": ("hf", "export_hf", ".parquet", "application/octet-stream"),
    "Preferences (TRL DPO, parquet)": ("preferences", "export_preferences", ".parquet", "application/octet-stream"),
    "Full traces JSONL": ("traces", "export_traces", ".jsonl", "application/jsonl"),
    "Label Studio JSON": ("labelstudio", "export_labelstudio", ".json", "application/json"),
}
VERDICTS = ["correct", "incorrect", "unsure"]
_CACHE = "_export_cache"


def export_kwargs(store: Any, kind: str, f: dict[str, Any]) -> dict[str, Any]:
    """Filters as keyword arguments of the exporter `kind` (full traces have no annotator / corrected filter:
    those become an explicit trace-id list)."""
    kw: dict[str, Any] = {}
    if kind == "preferences":
        return kw  # pairs are chosen by their branch / parent judgements, not by these filters
    if f.get("verdict"):
        kw["verdict"] = list(f["verdict"])
    elif f.get("all") and kind in ("v1g", "hf"):
        kw["verdict"] = None
    if f.get("tag"):
        kw["tag"] = f["tag"]
    if f.get("model"):
        kw["model"] = f["model"]
    if kind == "traces":
        if f.get("annotator") or f.get("only_corrected"):
            rows = store.list_traces(limit=None, annotator=f.get("annotator") or None,
                                     has_corrections=True if f.get("only_corrected") else None)
            kw["trace_ids"] = [r.trace_id for r in rows]
    else:
        if f.get("annotator"):
            kw["annotator"] = f["annotator"]
        if f.get("only_corrected"):
            kw["only_corrected"] = True
    return kw


def run_export(store: Any, kind: str, out: Path, images: str, f: dict[str, Any]) -> Any:
    from storage import export, preferences

    method = FORMATS[next(k for k, v in FORMATS.items() if v[0] == kind)][1]
    module = preferences if kind == "preferences" else export
    return getattr(module, method)(store, out, images=images, **export_kwargs(store, kind, f))


def _fingerprint(store: Any) -> str:
    rows = store.list_traces(limit=None, order="oldest")
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r.trace_id}:{r.annotation_version}:{r.status};".encode())
    return h.hexdigest()


def _v1g_copy_ids(row: dict[str, Any]) -> str:
    """The `<|copy_k|>` ids each region key expands to at training time (the official training geometry)."""
    from v1core import v1g
    from v1core.copy_tokens import copy_token

    parsed = v1g.parse_row(row)
    geometry = parsed.training_geometry()
    return " | ".join(f"{key}: " + "".join(copy_token(k) for k in geometry.copy_ids(box))
                      for key, box in parsed.regions.items())


def preview_rows(kind: str, data: bytes, n: int = 5) -> list[dict[str, Any]]:
    if kind == "hf":
        import io

        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data), columns=["id", "image_size", "regions", "num_tokens"])
        return table.slice(0, n).to_pylist()
    if kind == "preferences":
        import io

        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data), columns=["id", "parent_id", "branch_id", "branch_step"])
        return table.slice(0, n).to_pylist()
    if kind == "labelstudio":
        items = json.loads(data.decode("utf-8") or "[]")[:n]
        return [{"id": t.get("id"), "image": shorten(str((t.get("data") or {}).get("image")), 60),
                 "predictions": len(t.get("predictions") or []), "annotations": len(t.get("annotations") or [])}
                for t in items]
    out = []
    for line in data.decode("utf-8").splitlines()[:n]:
        row = json.loads(line)
        if kind == "v1g":
            out.append({"id": row.get("id"), "verdict": row.get("verdict"), "annotator": row.get("annotator"),
                        "version": row.get("annotation_version"), "regions": row.get("regions"),
                        "copy ids": _v1g_copy_ids(row)})
        else:
            out.append({"trace": row.get("trace_id"), "status": row.get("status"), "model": row.get("model_id"),
                        "steps": len(row.get("steps") or []), "annotations": len(row.get("annotations") or [])})
    return out


def render() -> None:
    state.ensure_app_navigation()
    st.title("Export")
    store = resources.get_store()
    with st.sidebar:
        state.annotator_input(st.sidebar)
    c = st.columns([2, 2, 2])
    label = c[0].selectbox("Format", list(FORMATS), key="export_format")
    kind, _, ext, mime = FORMATS[label]
    images = c[1].radio("Images in the download", ["none", "embed"], key="exp_images", horizontal=True,
                        help="embed: image bytes inside the file; none: only the image sha256")
    f1 = st.columns(5, vertical_alignment="bottom")
    verdict = f1[0].multiselect("Verdict", VERDICTS, key="exp_verdict")
    annotator = f1[1].text_input("Annotator", key="exp_annotator")
    tag = f1[2].text_input("Tag", key="exp_tag")
    model = f1[3].selectbox("Model", [""] + list(store.list_models()), key="exp_model",
                            format_func=lambda v: v or "any")
    only_corr = f1[4].checkbox("Only corrected", key="exp_only_corrected")
    take_all = st.checkbox("All labelled traces", key="exp_all",
                           help="training formats otherwise take the traces judged correct or with a corrected "
                                "region (when no verdict is picked)")
    f = {"verdict": verdict, "annotator": annotator.strip(), "tag": tag.strip(), "model": model,
         "only_corrected": only_corr, "all": take_all}

    sig = json.dumps([kind, images, f, _fingerprint(store)], sort_keys=True)
    cache = st.session_state.get(_CACHE)
    if not cache or cache["sig"] != sig:
        with st.spinner("Exporting…"), tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"v1studio-{kind}{ext}"
            try:
                report = run_export(store, kind, out, images, f)
            except (ValueError, OSError) as exc:
                st.error(md_escape(f"Export failed: {exc}"))
                return
            data = out.read_bytes() if out.is_file() else b""
        cache = {"sig": sig, "kind": kind, "data": data, "rows": report.rows, "skipped": list(report.skipped),
                 "missing": report.images_missing, "name": out.name, "selection": report.selection}
        st.session_state[_CACHE] = cache

    st.markdown(f"**{cache['rows']}** row(s) · {len(cache['skipped'])} trace(s) skipped · "
                f"{len(cache['data']):,} bytes")
    if cache.get("selection"):
        st.caption(cache["selection"])  # our own words, no untrusted text
    if cache["missing"]:
        st.caption(f"{cache['missing']} row(s) have no image in the store.")
    if cache["skipped"]:
        with st.expander("Skipped traces"):
            st.code("\n".join(cache["skipped"][:200]), language=None)
    if cache["rows"]:
        st.markdown("**Preview** (first rows)")
        try:
            st.dataframe(preview_rows(kind, cache["data"]), hide_index=True, width="stretch")
        except Exception as exc:  # noqa: BLE001 - a preview problem must not hide the download
            st.caption(md_escape(f"No preview: {type(exc).__name__}: {exc}"))
    st.download_button(f"Download {label}", cache["data"], file_name=cache["name"], mime=mime,
                       key="export_v1g" if kind == "v1g" else "export_download", disabled=not cache["rows"],
                       icon=":material/download:")

    with st.expander("Write to a path on the server"):
        path = st.text_input("Output path (file; HF: a .parquet file or a folder)", key="export_server_path")
        srv_images = st.radio("Images", ["path", "embed", "none"], key="exp_server_images", horizontal=True,
                              help="path: image files in images/ next to the output")
        if st.button("Write", key="export_write") and path.strip():
            try:
                report = run_export(store, kind, Path(path.strip()).expanduser(), srv_images, f)
            except (ValueError, OSError) as exc:
                st.error(md_escape(f"Export failed: {exc}"))
            else:
                st.success(md_escape(report.summary()))
