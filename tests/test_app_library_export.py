"""Library and Export pages through AppTest: table filters and search, import with per-line errors, reviewer-only
delete, exports (preview, counts, download content with the corrected copy ids)."""

from __future__ import annotations

import json

import pytest

from storage import Annotation, RevisitLabel, Store
from storage.export import export_traces
from tests.app_helpers import no_exceptions, open_page
from tests.builders import build_synthetic_trace


def table(at):
    return at.dataframe[0].value


# ----------------------------------------------------------------------------- library
def test_library_table_filters_and_search(app_env):
    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second question?")
    app_env.save_annotation(a.trace_id, Annotation(annotator="ana", verdict="correct", tags=["batch-1"]),
                            expected_version=0)
    app_env.save_annotation(a.trace_id, Annotation(annotator="rita", verdict="incorrect"), expected_version=0)
    at = open_page("pages/library.py")
    df = table(at)
    assert set(df["trace"]) == {a.trace_id, b.trace_id}
    row = df[df["trace"] == a.trace_id].iloc[0]
    # two independent labels that disagree: no verdict to export until a reviewer rules
    assert row["verdict"] == "" and row["labels"] == "disagree" and row["annotators"] == "ana, rita"
    assert row["revisits"] == 2
    app_env.add_annotator("rev", role="reviewer")
    app_env.adopt_consensus(a.trace_id, "rita", by="rev")
    at.run()
    row = table(at)[table(at)["trace"] == a.trace_id].iloc[0]
    assert row["verdict"] == "incorrect" and row["labels"] == "consensus" and row["annotators"] == "ana, rita"
    assert row["status"] == "complete" and row["model"] == "synthetic"
    at.text_input(key="lib_search").set_value("second").run()
    no_exceptions(at)
    assert list(table(at)["trace"]) == [b.trace_id]
    at.text_input(key="lib_search").set_value("").run()
    at.selectbox(key="lib_verdict").set_value("incorrect").run()
    assert list(table(at)["trace"]) == [a.trace_id]
    at.selectbox(key="lib_verdict").set_value("").run()
    at.radio(key="lib_annotated").set_value("not annotated").run()
    assert list(table(at)["trace"]) == [b.trace_id]
    at.radio(key="lib_annotated").set_value("any")
    at.text_input(key="lib_tag").set_value("nope").run()
    no_exceptions(at)
    assert not at.dataframe and any("No traces match" in i.value for i in at.info)


def test_library_opens_the_picked_trace_in_annotate(app_env):
    build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second question?")
    at = open_page("pages/library.py")
    at.selectbox(key="lib_open").set_value(b.trace_id).run()
    at.button(key="open_annotate").click().run()
    no_exceptions(at)
    assert at.session_state["trace_id"] == b.trace_id
    assert at.radio(key="verdict") is not None and any("Second question" in m.value for m in at.markdown)


def test_library_import_reports_bad_lines(app_env, tmp_path):
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    t = build_synthetic_trace(other, key="scene-2", question="Imported?")
    path = tmp_path / "traces.jsonl"
    export_traces(other, path, images="embed")
    with path.open("a") as fh:
        fh.write("this is not json\n")
    at = open_page("pages/library.py")
    at.text_input(key="import_path").set_value(str(path))
    at.button(key="import_path_run").click().run()
    no_exceptions(at)
    assert any("imported 1 trace" in w.value for w in at.warning)
    assert any("traces.jsonl:2" in c.value for c in at.code)
    assert app_env.trace_exists(t.trace_id)
    at.run()
    assert t.trace_id in set(table(at)["trace"])


def test_library_delete_only_for_reviewers(app_env):
    t = build_synthetic_trace(app_env)
    app_env.add_annotator("ana")
    at = open_page("pages/library.py")
    assert not _has(at, "delete_trace")
    assert any("Only reviewers" in c.value for c in at.caption)
    app_env.add_annotator("rita", role="reviewer")
    at.text_input(key="annotator").set_value("rita").run()
    no_exceptions(at)
    assert at.button(key="delete_trace").disabled  # needs the confirmation first
    at.checkbox(key="delete_confirm").check().run()
    at.button(key="delete_trace").click().run()
    no_exceptions(at)
    assert not app_env.trace_exists(t.trace_id)
    assert any("Deleted" in s.value for s in at.success)
    assert not at.dataframe


def _has(at, key: str) -> bool:
    try:
        at.button(key=key)
        return True
    except KeyError:
        return False


# ----------------------------------------------------------------------------- export
@pytest.fixture()
def annotated(app_env):
    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second?")
    app_env.save_annotation(a.trace_id, Annotation(
        annotator="ana", verdict="incorrect", answer_correct=False, tags=["cups"],
        revisit_labels=[RevisitLabel(0, "wrong_region", corrected_patches=[3, 4])]), expected_version=0)
    app_env.save_annotation(b.trace_id, Annotation(annotator="rita", verdict="correct"), expected_version=0)
    return app_env, a, b


def export_cache(at) -> dict:
    return at.session_state["_export_cache"]


def test_export_v1g_download_has_corrected_copy_ids(annotated):
    store, a, b = annotated
    at = open_page("pages/export.py")
    assert at.selectbox(key="export_format").value == "v1g JSONL"
    cache = export_cache(at)
    assert cache["rows"] == 2
    assert any("**2** row(s)" in m.value for m in at.markdown)
    assert [e for e in at.get("download_button") if e.proto.id and "export_v1g" in e.proto.id]
    rows = [json.loads(line) for line in cache["data"].decode().splitlines()]
    row = next(r for r in rows if r["trace_id"] == a.trace_id)
    assert row["verdict"] == "incorrect" and row["annotator"] == "ana"
    assert any("judged correct or with a corrected/added region" in c.value for c in at.caption)
    # the corrected region expands to exactly the corrected cells at training time
    from v1core import v1g

    _, text = v1g.parse_row(row).expanded()
    assert "<|copy_3|><|copy_4|></region>" in text
    preview = at.dataframe[0].value
    assert "<|copy_3|><|copy_4|>" in preview[preview["id"] == row["id"]].iloc[0]["copy ids"]
    # filters
    at.checkbox(key="exp_only_corrected").check().run()
    no_exceptions(at)
    assert export_cache(at)["rows"] == 1
    at.checkbox(key="exp_only_corrected").uncheck()
    at.text_input(key="exp_annotator").set_value("rita").run()
    assert export_cache(at)["rows"] == 1
    assert json.loads(export_cache(at)["data"].decode().splitlines()[0])["trace_id"] == b.trace_id
    at.text_input(key="exp_annotator").set_value("")
    at.multiselect(key="exp_verdict").set_value(["incorrect"]).run()
    assert export_cache(at)["rows"] == 1
    # a new annotation invalidates the cached export
    store.save_annotation(b.trace_id, Annotation(annotator="rita", verdict="incorrect"), expected_version=1)
    at.run()
    assert export_cache(at)["rows"] == 2


@pytest.mark.parametrize("fmt", ["Full traces JSONL", "Label Studio JSON", "HF parquet"])
def test_other_formats(annotated, fmt):
    store, a, b = annotated
    at = open_page("pages/export.py")
    at.selectbox(key="export_format").set_value(fmt).run()
    no_exceptions(at)
    cache = export_cache(at)
    assert cache["rows"] == 2 and cache["data"]
    assert at.dataframe, "no preview"
    assert len(at.dataframe[0].value) == 2


def test_export_write_to_server_path(annotated, tmp_path):
    at = open_page("pages/export.py")
    out = tmp_path / "out" / "train.jsonl"
    out.parent.mkdir()
    at.text_input(key="export_server_path").set_value(str(out))
    at.button(key="export_write").click().run()
    no_exceptions(at)
    assert out.is_file() and len(out.read_text().splitlines()) == 2
    assert (out.parent / "images").is_dir()
