"""storage.Store API: traces, steps, listing, images, versioned annotations, reviewers, agreement.

Every test that takes `store` runs on SQLite and on a real PostgreSQL server (the `db_url` fixture in
tests/conftest.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from storage import (
    Annotation,
    AnnotationConflict,
    ImageNotFound,
    PermissionDenied,
    RevisitLabel,
    Store,
    TraceNotFound,
)
from storage.agreement import compute_agreement, find_disagreements
from tests.builders import make_trace, png_bytes
from v1core.synthetic import big_trace

TWO = (("triangle", (100, 120, 220, 230)), ("circle", (300, 300, 400, 420)))


# ----------------------------------------------------------------------------- traces
def test_lossless_pointer_mode_round_trips_float16_exactly(store, monkeypatch):
    monkeypatch.setenv("V1STUDIO_POINTERS", "lossless")
    tr = make_trace(boxes=TWO)
    back = store.get_trace(store.save_trace(tr))
    assert json.dumps(back.to_dict()) == json.dumps(tr.to_dict())  # float16 pointers bit for bit


def test_step_ranges_decode_only_their_chunks(store):
    tr = big_trace(37, 37, 300, seed=4)  # 1,369 patches: 95 steps a chunk, so 0:300 spans 4 chunks
    tid = store.save_trace(tr)
    whole = store.get_trace(tid)
    for a, b in ((0, 1), (90, 100), (94, 96), (250, 300), (299, 400), (0, 300)):
        got = store.get_steps(tid, a, b)
        want = whole.steps[a:b]
        assert [s.index for s in got] == [s.index for s in want]
        assert all(np.array_equal(g.pointer, w.pointer) for g, w in zip(got, want))
    assert store.get_steps(tid, 300, 310) == [] and len(store.get_steps(tid)) == 300
    with pytest.raises(TraceNotFound):
        store.get_steps("nope", 0, 1)


def test_save_and_get_round_trip(store):
    tr = make_trace(boxes=TWO, tags=["demo", "shapes"], parent_id="p" * 32, branch_step=3,
                    branch_edit={"kind": "replace", "patches": [1, 2]})
    tid = store.save_trace(tr)
    assert tid == tr.trace_id
    back = store.get_trace(tid)
    # every field and the key order; pointers are compared within the codec's bounds below
    assert json.dumps(back.to_dict(include_pointers=False)) == json.dumps(tr.to_dict(include_pointers=False))
    assert back.has_pointers and back.pointer_matrix().dtype == np.float32
    tv = 0.5 * np.abs(back.pointer_matrix() - tr.pointer_matrix()).sum(axis=(1, 2))
    near_copy = np.array([st.patch is not None or st.p_copy >= 0.2 for st in tr.steps])
    assert tv[~near_copy].max(initial=0) <= 1e-2 and tv[near_copy].max(initial=0) <= 1e-3 and near_copy.any()
    assert [r.patches for r in back.revisits] == [r.patches for r in tr.revisits]
    stored = store.get_revisits(tid)
    assert [(r.query, r.object_name) for r in stored] == [("triangle", "obj0"), ("circle", "obj1")]
    assert stored[0].char_start == tr.output_text.index("<|copy_")


def test_get_step_reads_one_step(store):
    tr = big_trace(20, 30, 300)
    store.save_trace(tr)
    for i in (0, 1, 77, 150, 299):
        st = store.get_step(tr.trace_id, i)
        assert st.index == i and st.text == tr.steps[i].text and st.patch == tr.steps[i].patch
        np.testing.assert_allclose(st.pointer, tr.steps[i].pointer, atol=1e-3)
        assert np.array_equal(st.pointer, store.get_trace(tr.trace_id).steps[i].pointer) if i == 77 else True
    with pytest.raises(IndexError):
        store.get_step(tr.trace_id, 300)
    with pytest.raises(TraceNotFound):
        store.get_step("nope", 0)


def test_missing_trace_is_a_key_error(store):
    with pytest.raises(KeyError, match="no trace"):
        store.get_trace("does-not-exist")


def test_trace_without_pointers(store):
    tr = make_trace(pointers=False)
    store.save_trace(tr)
    back = store.get_trace(tr.trace_id)
    assert not back.has_pointers and back.steps[5].pointer is None
    assert store.get_step(tr.trace_id, 5).pointer is None


def test_live_trace_running_then_complete(store):
    full = make_trace()
    half = make_trace()
    half.trace_id = full.trace_id
    half.steps = half.steps[:10]
    half.output_text = "".join(s.text for s in half.steps)
    half.status = "running"
    store.save_trace(half)
    assert store.list_traces(status="complete") == []
    assert [t.status for t in store.list_traces()] == ["running"]
    assert store.get_trace(full.trace_id).status == "running"
    assert len(store.get_trace(full.trace_id).steps) == 10
    store.save_trace(full)  # complete: replaces the steps atomically
    got = store.get_trace(full.trace_id)
    assert got.status == "complete" and len(got.steps) == len(full.steps)
    assert [t.trace_id for t in store.list_traces(status="complete")] == [full.trace_id]
    half.status = "running"
    with pytest.raises(ValueError, match="already complete"):
        store.save_trace(half)  # a stale running save never replaces a finished trace
    assert store.get_trace(full.trace_id).status == "complete"


def test_failed_trace_without_geometry_saves(store):
    from v1core.trace import Trace

    tr = Trace(model_id="m", image_sha256="", image_size=(0, 0), resized_size=(0, 0), grid=(1, 1), question="q",
               status="failed", error="RuntimeError: out of memory", meta={"item_key": "k1"})
    store.save_trace(tr)
    assert store.get_trace(tr.trace_id).error.startswith("RuntimeError")
    assert list(store.item_keys()) == []  # only complete traces count as done
    ok = make_trace()
    ok.meta["item_key"] = "k2"
    store.save_trace(ok)
    assert list(store.item_keys()) == ["k2"]


@pytest.mark.parametrize("mutate, message", [
    (lambda t: setattr(t, "status", "done"), "status must be one of"),
    (lambda t: setattr(t, "source", "web"), "source must be one of"),
    (lambda t: setattr(t.steps[3], "index", 7), "numbered 0, 1, 2"),
    (lambda t: setattr(t.steps[3], "pointer", np.zeros((2, 2), np.float32)), "pointer has shape"),
    (lambda t: setattr(t.steps[3], "pointer", None), "all or none"),
    (lambda t: setattr(t, "meta", {"x": object()}), "not JSON-serialisable"),
    (lambda t: setattr(t, "model_id", " "), "model_id"),
])
def test_bad_traces_are_refused(sqlite_store, mutate, message):
    tr = make_trace()
    mutate(tr)
    with pytest.raises(ValueError, match=message):
        sqlite_store.save_trace(tr)
    assert sqlite_store.count_traces() == 0


def test_list_filters_search_and_paging(store):
    a = make_trace(question="How many 100% cotton shirts?", model_id="m1", tags=["shirts"],
                   created_at="2026-01-01T00:00:01+00:00")
    b = make_trace(question="Which 100x zoom lens?", model_id="m2", created_at="2026-01-01T00:00:02+00:00")
    c = make_trace(question="snake_case or camel?", model_id="m1", status="failed",
                   created_at="2026-01-01T00:00:03+00:00")
    for t in (a, b, c):
        store.save_trace(t)
    ids = lambda rows: [r.trace_id for r in rows]  # noqa: E731 - a local one-liner
    assert ids(store.list_traces()) == [c.trace_id, b.trace_id, a.trace_id]
    assert ids(store.list_traces(order="oldest")) == [a.trace_id, b.trace_id, c.trace_id]
    assert ids(store.list_traces(search="100%")) == [a.trace_id]  # % is literal
    assert ids(store.list_traces(search="e_c")) == [c.trace_id]  # _ is literal
    assert ids(store.list_traces(search="COTTON")) == [a.trace_id]  # case-insensitive
    assert ids(store.list_traces(search="red.")) == [c.trace_id, b.trace_id, a.trace_id]  # output text too
    assert ids(store.list_traces(model="m1")) == [c.trace_id, a.trace_id]
    assert ids(store.list_traces(status=["complete"], model="m1")) == [a.trace_id]
    assert ids(store.list_traces(tag="shirts")) == [a.trace_id]
    assert ids(store.list_traces(limit=1, offset=1)) == [b.trace_id]
    assert store.count_traces(model="m1") == 2
    store.save_annotation(b.trace_id, Annotation(annotator="ana", verdict="incorrect", tags=["lens"]))
    assert ids(store.list_traces(annotated=True)) == [b.trace_id]
    assert ids(store.list_traces(annotated=False)) == [c.trace_id, a.trace_id]
    assert ids(store.list_traces(verdict="incorrect")) == [b.trace_id]
    assert ids(store.list_traces(tag="lens")) == [b.trace_id]  # annotation tags are searchable
    row = store.list_traces(annotated=True)[0]
    assert (row.verdict, row.annotator, row.annotation_version, row.n_revisits) == ("incorrect", "ana", 1, 1)
    with pytest.raises(ValueError, match="unknown status"):
        store.list_traces(status="done")
    with pytest.raises(TypeError):
        store.list_traces(colour="red")


def test_trace_tags_can_be_changed(store):
    t = make_trace(tags=["a"])
    store.save_trace(t)
    store.set_trace_tags(t.trace_id, ["b", "c", "b"])
    assert store.get_trace(t.trace_id).tags == ["b", "c"]
    assert [r.trace_id for r in store.list_traces(tag="c")] == [t.trace_id]
    assert store.list_traces(tag="a") == []


# ----------------------------------------------------------------------------- images
def test_images_are_content_addressed(store, tmp_path):
    data = png_bytes((64, 48))
    sha = store.put_image(data, 64, 48, "png")
    assert store.put_image(data, 64, 48, "PNG") == sha  # idempotent
    assert store.get_image_bytes(sha) == data
    assert store.get_image_info(sha).format == "PNG"
    assert store.has_image(sha)
    p = tmp_path / "x.png"
    other = png_bytes((64, 48), (1, 2, 3))
    p.write_bytes(other)
    sha2 = store.put_image(None, 64, 48, "PNG", path=p)
    assert store.get_image_bytes(sha2) == other and store.get_image_info(sha2).path == str(p)
    with pytest.raises(ImageNotFound):
        store.get_image_bytes("0" * 64)
    with pytest.raises(KeyError):
        store.get_image_bytes("0" * 64)


# ----------------------------------------------------------------------------- annotations
def test_annotations_are_versioned_never_overwritten(store):
    t = make_trace(boxes=TWO)
    store.save_trace(t)
    assert store.get_annotation(t.trace_id) is None
    v1 = store.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="unsure"), expected_version=0)
    v2 = store.save_annotation(t.trace_id, {
        "annotator": "ana", "verdict": "incorrect", "answer_correct": False, "note": "wrong box", "tags": ["hard"],
        "revisit_labels": [{"revisit_index": 1, "label": "wrong_region", "corrected_patches": [5, 6]},
                           {"revisit_index": 0, "label": "correct"}],
        "added_revisits": [{"step": 3, "box": [1, 2, 30, 40], "query": "sun"}],
    }, expected_version=v1)
    assert (v1, v2) == (1, 2)
    hist = store.annotation_history(t.trace_id)
    assert [(h.version, h.verdict, h.conflict) for h in hist] == [(1, "unsure", False), (2, "incorrect", False)]
    cur = store.get_annotation(t.trace_id)
    assert cur.version == 2 and cur.annotation.answer_correct is False and cur.annotation.note == "wrong box"
    assert [r.revisit_index for r in cur.annotation.revisit_labels] == [0, 1]  # sorted
    assert cur.annotation.revisit_labels[1].corrected_patches == [5, 6]
    assert cur.annotation.added_revisits[0].box == (1.0, 2.0, 30.0, 40.0)
    assert store.get_annotation(t.trace_id, version=1).verdict == "unsure"
    assert store.list_traces(has_corrections=True)[0].trace_id == t.trace_id


def test_stale_expected_version_conflicts_and_keeps_both(store):
    """A conflict is your own head moving (another tab); other annotators' saves never conflict with yours."""
    t = make_trace()
    store.save_trace(t)
    base = store.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="correct"), expected_version=0)
    store.save_annotation(t.trace_id, Annotation(annotator="bo", verdict="incorrect"), expected_version=0)
    store.save_annotation(t.trace_id, Annotation(annotator="cy", verdict="unsure"), expected_version=0)
    v = store.save_annotation(t.trace_id, Annotation(annotator="cy", verdict="correct"), expected_version=3)
    assert v == 4
    with pytest.raises(AnnotationConflict) as info:  # cy's second tab still had version 3
        store.save_annotation(t.trace_id, Annotation(annotator="cy", verdict="unsure", note="mine"),
                              expected_version=3)
    err = info.value
    assert (err.expected_version, err.current_version, err.saved_version, err.current_annotator) == (3, 4, 5, "cy")
    assert "version 5" in str(err)
    hist = store.annotation_history(t.trace_id)
    assert [(h.version, h.annotator, h.conflict, h.based_on) for h in hist] == [
        (1, "ana", False, 0), (2, "bo", False, 0), (3, "cy", False, 0), (4, "cy", False, 3), (5, "cy", True, 3)]
    assert store.annotation_view(t.trace_id, "cy").own_version == 4  # the conflict did not become the head
    assert store.annotation_view(t.trace_id, "ana").own_version == base
    v = store.save_annotation(t.trace_id, Annotation(annotator="cy", verdict="unsure"), expected_version=4)
    assert v == 6 and store.annotation_view(t.trace_id, "cy").own.annotation.verdict == "unsure"
    assert store.save_annotation(t.trace_id, Annotation(annotator="dd", verdict="correct")) == 7  # no check


@pytest.mark.parametrize("ann, message", [
    (dict(annotator="ana", verdict="wrong"), "verdict must be one of 'correct', 'incorrect', 'unsure' or None"),
    (dict(annotator="", verdict="correct"), "annotator must not be empty"),
    (dict(annotator="ana", answer_correct="yes"), "answer_correct"),
    (dict(annotator="ana", revisit_labels=[{"revisit_index": 0, "label": "meh"}]), "revisit label must be one of"),
    (dict(annotator="ana", revisit_labels=[{"revisit_index": 5, "label": "correct"}]), "revisit 5 does not exist"),
    (dict(annotator="ana", revisit_labels=[{"revisit_index": 0, "label": "wrong_region",
                                            "corrected_patches": [99999]}]), "outside the grid"),
    (dict(annotator="ana", revisit_labels=[{"revisit_index": 0, "label": "correct", "corrected_patches": [1]}]),
     "only goes with the label 'wrong_region'"),
    (dict(annotator="ana", revisit_labels=[{"revisit_index": 0, "label": "wrong_region",
                                            "corrected_box": [10, 10, 5, 20]}]), "x1 > x0"),
    (dict(annotator="ana", revisit_labels=[{"revisit_index": 0, "label": "correct"},
                                           {"revisit_index": 0, "label": "unnecessary"}]), "labelled twice"),
    (dict(annotator="ana", added_revisits=[{"step": 2, "query": "x"}]), "needs patches or a box"),
    (dict(annotator="ana", added_revisits=[{"step": 999, "patches": [1]}]), "added revisit at step 999"),
    (dict(annotator="ana", tags="hard"), "tags must be a list"),
])
def test_annotation_validation(sqlite_store, ann, message):
    t = make_trace()
    sqlite_store.save_trace(t)
    with pytest.raises(ValueError, match=message):
        sqlite_store.save_annotation(t.trace_id, ann)
    assert sqlite_store.annotation_history(t.trace_id) == []


def test_annotation_object_is_not_mutated(sqlite_store):
    t = make_trace()
    sqlite_store.save_trace(t)
    a = Annotation(annotator=" ana ", verdict="correct", tags=["x", "x"],
                   revisit_labels=[RevisitLabel(0, "wrong_region", corrected_patches=[3, 1, 3])])
    sqlite_store.save_annotation(t.trace_id, a)
    assert a.annotator == " ana " and a.tags == ["x", "x"]
    got = sqlite_store.get_annotation(t.trace_id).annotation
    assert got.annotator == "ana" and got.tags == ["x"] and got.revisit_labels[0].corrected_patches == [1, 3]
    with pytest.raises(TraceNotFound):
        sqlite_store.save_annotation("missing", a)
    with pytest.raises(ValueError, match="expected_version"):
        sqlite_store.save_annotation(t.trace_id, a, expected_version=-1)


def test_only_reviewers_delete_and_nothing_is_lost(store):
    t = make_trace()
    store.save_trace(t)
    store.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="correct"))
    with pytest.raises(PermissionDenied, match="annotator"):
        store.delete_trace(t.trace_id, by="ana")
    with pytest.raises(PermissionError, match="not a known annotator"):
        store.delete_trace(t.trace_id, by="mallory")
    store.add_annotator("rev", role="reviewer")
    assert store.get_annotator("rev").role == "reviewer"
    assert {a.name for a in store.list_annotators()} == {"ana", "rev"}
    store.delete_trace(t.trace_id, by="rev")
    assert store.list_traces() == [] and store.count_traces() == 0
    assert [r.trace_id for r in store.list_traces(include_deleted=True)] == [t.trace_id]
    with pytest.raises(TraceNotFound):
        store.get_trace(t.trace_id)
    with pytest.raises(ValueError, match="deleted"):
        store.save_trace(t)
    store.restore_trace(t.trace_id, by="rev")
    assert [h.verdict for h in store.annotation_history(t.trace_id)] == ["correct"]
    with pytest.raises(ValueError, match="role must be"):
        store.add_annotator("x", role="admin")


def test_agreement_kappa_and_iou(store):
    from storage.agreement import cohen_kappa, patch_iou

    assert cohen_kappa([("correct", "correct"), ("incorrect", "incorrect")]) == 1.0
    # hand-computed: po = 0.5, pe = 0.5·0.5 + 0.5·0.5 = 0.5 → 0
    assert cohen_kappa([("correct", "correct"), ("correct", "incorrect"), ("incorrect", "correct"),
                        ("incorrect", "incorrect")]) == pytest.approx(0.0)
    assert cohen_kappa([]) is None
    assert patch_iou([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)

    traces = [make_trace(seed=i) for i in range(4)]
    for t in traces:
        store.save_trace(t)
    verdicts = {"ana": ["correct", "correct", "incorrect", "unsure"],
                "bo": ["correct", "incorrect", "incorrect", "unsure"]}
    for who, vs in verdicts.items():
        for t, v in zip(traces, vs):
            store.save_annotation(t.trace_id, Annotation(annotator=who, verdict=v))
    # on trace 0 both correct the one revisit: ana [1,2,3,4], bo [3,4,5,6] → IoU 2/6
    store.save_annotation(traces[0].trace_id, Annotation(annotator="ana", verdict="correct", revisit_labels=[
        RevisitLabel(0, "wrong_region", corrected_patches=[1, 2, 3, 4])]))
    store.save_annotation(traces[0].trace_id, Annotation(annotator="bo", verdict="correct", revisit_labels=[
        RevisitLabel(0, "wrong_region", corrected_patches=[3, 4, 5, 6])]))
    # a third annotator on one trace only
    store.save_annotation(traces[1].trace_id, Annotation(annotator="cy", verdict="correct"))
    res = compute_agreement(store)
    pair = next(p for p in res["pairs"] if p["annotators"] == ("ana", "bo"))
    expected = cohen_kappa(list(zip(verdicts["ana"], verdicts["bo"])))
    assert pair["traces"] == 4 and pair["kappa"] == pytest.approx(expected)
    assert pair["corrected_regions"] == 1 and pair["mean_iou"] == pytest.approx(2 / 6)
    only = compute_agreement(store, annotators=["ana", "bo"])
    assert only["annotators"] == ["ana", "bo"] and len(only["pairs"]) == 1


def test_disagreements_list_what_a_reviewer_adjudicates(store):
    traces = [make_trace(seed=10 + i) for i in range(3)]
    for t in traces:
        store.save_trace(t)
    a, b, c = (t.trace_id for t in traces)
    # a: same verdict, regions differ (IoU 2/6); b: verdicts differ; c: full agreement
    store.save_annotation(a, Annotation(annotator="ana", verdict="correct", revisit_labels=[
        RevisitLabel(0, "wrong_region", corrected_patches=[1, 2, 3, 4])]))
    store.save_annotation(a, Annotation(annotator="bo", verdict="correct", revisit_labels=[
        RevisitLabel(0, "wrong_region", corrected_patches=[3, 4, 5, 6])]))
    store.save_annotation(b, Annotation(annotator="ana", verdict="correct", note="fine"))
    store.save_annotation(b, Annotation(annotator="bo", verdict="incorrect", note="<b>wrong</b>"))
    for who in ("ana", "bo"):
        store.save_annotation(c, Annotation(annotator=who, verdict="unsure"))
    found = find_disagreements(store)
    assert [d["trace_id"] for d in found] == [b, a]  # verdict disagreements first
    first, second = found
    assert first["verdict_disagree"] and first["verdicts"] == {"ana": "correct", "bo": "incorrect"}
    assert first["notes"]["bo"] == "<b>wrong</b>" and first["revisits"] == []
    (rv,) = second["revisits"]
    assert not second["verdict_disagree"] and rv["disagree"]
    assert rv["regions"] == {"ana": [1, 2, 3, 4], "bo": [3, 4, 5, 6]}
    assert rv["iou"] == pytest.approx(2 / 6) and second["lowest_iou"] == pytest.approx(2 / 6)
    assert [d["trace_id"] for d in find_disagreements(store, min_iou=0.3)] == [b]
    assert find_disagreements(store, annotators=["ana"]) == []
    # a reviewer's adjudication settles b and is not counted as a third judgement
    store.add_annotator("rev", role="reviewer")
    store.save_consensus(b, Annotation(annotator="rev", verdict="incorrect"), by="rev")
    assert [d["trace_id"] for d in find_disagreements(store)] == [a]
    assert [d["settled"] for d in find_disagreements(store, include_settled=True)] == [True, False]
    assert compute_agreement(store)["annotators"] == ["ana", "bo"]


def test_store_default_url_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("V1STUDIO_DB", str(tmp_path / "sub" / "env.db"))
    s = Store()
    try:
        assert s.url == f"sqlite:///{tmp_path / 'sub' / 'env.db'}"
        assert (tmp_path / "sub" / "env.db").exists()
    finally:
        s.close()
    monkeypatch.delenv("V1STUDIO_DB")
    monkeypatch.chdir(tmp_path)
    s = Store()
    try:
        assert (tmp_path / "data" / "v1studio.db").exists()
    finally:
        s.close()
    from storage.db import resolve_url

    assert resolve_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert resolve_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"


def test_sqlite_pragmas(sqlite_store):
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
    assert sqlite_store.integrity_check() == "ok"


def test_float16_conversion_paths_agree(monkeypatch):
    """Both float16 paths (numpy with the subnormal shortcut, torch) equal numpy's cast bit for bit."""
    import sys

    from storage.codec import to_float16

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 17, 23)).astype(np.float32) * 3
    m = np.exp(logits)
    m /= m.sum(axis=(1, 2), keepdims=True)  # realistic: most values are float16 subnormals
    m[0, 0, :12] = [1e-8, 6.1e-5, 5.9e-8, 0.0, 65519.0, 65520.0, 2.0**-14, 1.5 * 2.0**-24, 2.5 * 2.0**-24,
                    0.5 * 2.0**-24, -3e-6, -0.0]
    wide = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-12, 6, 200_000)).astype(np.float32)
    for x in (m, wide, np.ones((3, 2, 2), np.float32)):
        with np.errstate(over="ignore", invalid="ignore"):
            ref = np.ascontiguousarray(x, dtype="<f2").view(np.uint16)
        monkeypatch.setitem(sys.modules, "torch", None)  # numpy path
        got = to_float16(x)
        assert got.dtype == np.dtype("<f2") and np.array_equal(got.view(np.uint16), ref)
        monkeypatch.undo()
        try:
            import torch  # noqa: F401 - only whether it imports matters
        except ImportError:
            continue
        assert np.array_equal(to_float16(x).view(np.uint16), ref)
