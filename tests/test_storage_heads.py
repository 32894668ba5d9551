"""Independent labels: each annotator's own head per trace, blind views, conflicts on one's own head only,
reviewers' consensus heads, field-level diffs, the export rule, agreement on heads, validation that names
what is missing, queue filters, and the Alembic migration of a single-head database. SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from storage import (
    UNRESOLVED,
    Annotation,
    AnnotationConflict,
    IncompleteAnnotation,
    PermissionDenied,
    RevisitLabel,
    Store,
    annotation_diff,
)
from storage.agreement import cohen_kappa, compute_agreement, find_disagreements
from storage.export import export_v1g
from tests.builders import make_trace, png_bytes

TWO = (("triangle", (100, 120, 220, 230)), ("circle", (300, 300, 400, 420)))


def _trace(store, seed=0, **kw):
    sha = store.put_image(png_bytes(), 640, 480, "PNG")
    t = make_trace(boxes=TWO, image_sha256=sha, seed=seed, created_at=f"2026-01-01T00:00:{seed:02d}+00:00", **kw)
    store.save_trace(t)
    return t.trace_id


def _ann(who, verdict="correct", **kw):
    return Annotation(annotator=who, verdict=verdict, **kw)


def test_each_annotator_keeps_their_own_head_and_sees_only_it(store):
    tid = _trace(store)
    v1 = store.save_annotation(tid, _ann("ana", "correct", note="ana's note", tags=["cups"]), expected_version=0)
    # carol opens the trace: blind, nothing of ana's is visible, and her first save does not conflict
    view = store.annotation_view(tid, "carol")
    assert (view.own, view.own_version, view.others, view.consensus) == (None, 0, {}, None)
    assert view.n_annotators == 1 and not view.shows_others
    v2 = store.save_annotation(tid, _ann("carol", "incorrect"), expected_version=view.own_version)
    assert (v1, v2) == (1, 2)
    ana, carol = store.annotation_view(tid, "ana"), store.annotation_view(tid, "carol")
    assert (ana.own_version, ana.own.annotation.verdict, ana.own.annotation.note) == (1, "correct", "ana's note")
    assert (carol.own_version, carol.own.annotation.verdict, carol.own.annotation.note) == (2, "incorrect", "")
    assert ana.n_annotators == carol.n_annotators == 2
    # ana revises her own label on top of her own head: carol's save in between is no conflict
    assert store.save_annotation(tid, _ann("ana", "unsure"), expected_version=ana.own_version) == 3
    assert store.annotation_view(tid, "carol").own_version == 2
    assert [r.version for r in store.annotation_history(tid, annotator="ana")] == [1, 3]
    summ = store.list_traces()[0]
    assert (summ.n_annotators, summ.annotation_state, summ.annotation_version, summ.verdict) == \
        (2, "disagree", 0, None)
    assert summ.annotated and store.count_traces(annotated=True) == 1


def test_conflict_means_your_own_head_moved(store):
    tid = _trace(store)
    base = store.annotation_view(tid, "ana").own_version
    # two tabs: both loaded "no head yet"
    assert store.save_annotation(tid, _ann("ana", "correct"), expected_version=base) == 1
    with pytest.raises(AnnotationConflict) as info:
        store.save_annotation(tid, _ann("ana", "incorrect", note="second tab"), expected_version=base)
    err = info.value
    assert (err.stream, err.expected_version, err.current_version, err.saved_version, err.current_annotator) == \
        ("own", 0, 1, 2, "ana")
    assert "your own head" in str(err) and "version 2" in str(err)
    hist = store.annotation_history(tid)
    assert [(h.version, h.conflict, h.based_on) for h in hist] == [(1, False, 0), (2, True, 0)]
    assert store.annotation_view(tid, "ana").own_version == 1  # the conflict did not move the head
    # keep mine: save again on top of the head
    assert store.save_annotation(tid, _ann("ana", "incorrect", note="second tab"), expected_version=1) == 3
    assert store.annotation_view(tid, "ana").own.annotation.note == "second tab"


def test_reviewer_consensus_is_a_separate_head(store):
    tid = _trace(store)
    store.save_annotation(tid, _ann("ana", "correct"), expected_version=0)
    store.save_annotation(tid, _ann("bo", "incorrect"), expected_version=0)
    assert store.export_heads([tid])[tid].reason == UNRESOLVED
    with pytest.raises(PermissionDenied, match="only reviewers may adjudicate"):
        store.adopt_consensus(tid, "ana", by="bo")
    with pytest.raises(PermissionDenied, match="see other annotators"):
        store.annotation_view(tid, "ana", show_others=True)
    store.add_annotator("rita", role="reviewer")
    rv = store.annotation_view(tid, "rita", show_others=True)
    assert sorted(rv.others) == ["ana", "bo"] and rv.consensus is None and rv.consensus_version == 0
    v = store.adopt_consensus(tid, "bo", by="rita", expected_version=0)
    assert v == 3
    head = store.export_heads([tid])[tid]
    assert (head.rule, head.record.version, head.record.kind, head.record.adopted_from) == ("consensus", 3,
                                                                                          "consensus", 2)
    assert head.record.annotator == "rita" and head.record.annotation.verdict == "incorrect"
    # annotators' heads are untouched; the view stays blind for them
    assert store.annotation_view(tid, "ana").own_version == 1
    assert store.annotation_view(tid, "ana").consensus is None
    assert store.annotation_view(tid, "ana").consensus_version == 3
    summ = store.list_traces()[0]
    assert (summ.annotation_state, summ.annotation_version, summ.verdict, summ.consensus_version) == \
        ("consensus", 3, "incorrect", 3)
    # a second reviewer tab with the stale consensus version conflicts on the consensus stream
    with pytest.raises(AnnotationConflict) as info:
        store.save_consensus(tid, _ann("x", "unsure"), by="rita", expected_version=0)
    assert (info.value.stream, info.value.current_version, info.value.current_annotator) == ("consensus", 3, "rita")
    assert store.export_heads([tid])[tid].record.version == 3
    # ana revising her label after the ruling is told the consensus moved; her first label never is
    with pytest.raises(AnnotationConflict) as info:
        store.save_annotation(tid, _ann("ana", "unsure"), expected_version=1, expected_consensus=0)
    assert info.value.stream == "consensus" and "adjudicated by rita" in str(info.value)
    store.save_annotation(tid, _ann("cy", "unsure"), expected_version=0, expected_consensus=0)
    # agreement leaves the ruling out and counts every annotator's own head
    assert compute_agreement(store)["annotators"] == ["ana", "bo", "cy"]
    assert find_disagreements(store) == []
    assert [d["settled"] for d in find_disagreements(store, include_settled=True)] == [True]


def test_export_rule_single_agree_disagree_consensus(store, tmp_path):
    single, agree, disagree, ruled = (_trace(store, seed=i) for i in range(4))
    store.save_annotation(single, _ann("ana", "correct"))
    store.save_annotation(agree, _ann("ana", "correct", note="a", tags=["x"]))
    store.save_annotation(agree, _ann("bo", "correct", note="different notes still agree"))
    store.save_annotation(disagree, _ann("ana", "correct"))
    store.save_annotation(disagree, _ann("bo", "correct", revisit_labels=[RevisitLabel(0, "unnecessary")]))
    store.save_annotation(ruled, _ann("ana", "correct"))
    store.save_annotation(ruled, _ann("bo", "incorrect"))
    store.add_annotator("rita", role="reviewer")
    store.save_consensus(ruled, _ann("rita", "incorrect", note="bo is right"), by="rita")
    heads = store.export_heads([single, agree, disagree, ruled])
    assert heads[single].rule == "single annotator" and heads[single].record.annotator == "ana"
    assert heads[agree].rule == "annotators agree" and heads[agree].record.annotator == "bo"  # the newest
    assert heads[disagree].record is None and heads[disagree].reason == UNRESOLVED
    assert heads[ruled].rule == "consensus" and heads[ruled].record.annotation.note == "bo is right"
    assert {s.trace_id: s.annotation_state for s in store.list_traces()} == {
        single: "single", agree: "agree", disagree: "disagree", ruled: "consensus"}
    assert store.get_annotation(disagree) is None and store.get_annotation(ruled).annotator == "rita"
    rep = export_v1g(store, tmp_path / "x.jsonl", verdict=None)  # every judged trace, not only the correct ones
    rows = {json.loads(line)["trace_id"]: json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()}
    assert set(rows) == {single, agree, ruled}
    assert rows[ruled]["annotator"] == "rita" and rows[ruled]["verdict"] == "incorrect"
    assert any(s.startswith(disagree) and UNRESOLVED in s for s in rep.skipped)
    assert store.count_traces(annotation_state="disagree") == 1
    with pytest.raises(ValueError, match="unknown annotation state"):
        store.count_traces(annotation_state="maybe")


def test_agreement_uses_each_annotators_own_head(store):
    tids = [_trace(store, seed=i) for i in range(3)]
    for t in tids:
        store.save_annotation(t, _ann("ana", "correct"))
        store.save_annotation(t, _ann("bo", "correct"))
    # bo changes his mind on trace 0 (his own stream); a stale second tab of his is a conflict and not counted
    store.save_annotation(tids[0], _ann("bo", "incorrect"), expected_version=2)
    with pytest.raises(AnnotationConflict):
        store.save_annotation(tids[0], _ann("bo", "unsure"), expected_version=2)
    res = compute_agreement(store)
    (pair,) = res["pairs"]
    assert pair["traces"] == 3 and pair["verdict_pairs"] == 3
    assert pair["kappa"] == pytest.approx(cohen_kappa([("correct", "incorrect"), ("correct", "correct"),
                                                       ("correct", "correct")]))


def test_incomplete_annotations_name_what_is_missing_and_store_nothing(store):
    tid = _trace(store)
    cases = [
        (Annotation(annotator="ana"), ["a verdict"]),
        (_ann("ana", revisit_labels=[RevisitLabel(1, "wrong_region")]), ["a corrected region for R2"]),
        (Annotation(annotator="ana", revisit_labels=[RevisitLabel(0, "wrong_region")]),
         ["a verdict", "a corrected region for R1"]),
        ({"annotator": "ana", "verdict": "correct", "added_revisits": [{"step": 2, "query": "cup"}]},
         ["a region for the revisit added before step 2"]),
    ]
    for ann, parts in cases:
        with pytest.raises(IncompleteAnnotation) as info:
            store.save_annotation(tid, ann, expected_version=0)
        assert isinstance(info.value, ValueError)
        for p in parts:
            assert p in str(info.value)
        assert len(info.value.missing) == len(parts)
    assert store.annotation_history(tid) == []
    store.add_annotator("rita", role="reviewer")
    with pytest.raises(IncompleteAnnotation, match="a verdict"):
        store.save_consensus(tid, Annotation(annotator="rita"), by="rita")
    ok = _ann("ana", revisit_labels=[RevisitLabel(1, "wrong_region", corrected_box=(300, 300, 380, 400))])
    assert store.save_annotation(tid, ok, expected_version=0) == 1


def test_annotation_diff_is_field_level_and_readable():
    mine = Annotation(annotator="ana", verdict="incorrect", answer_correct=False, note="cup", tags=["a"],
                      revisit_labels=[RevisitLabel(0, "wrong_region", corrected_patches=[3, 4]),
                                      RevisitLabel(1, "correct")])
    theirs = Annotation(annotator="bo", verdict="incorrect", answer_correct=True, note="cup", tags=["a"],
                        revisit_labels=[RevisitLabel(0, "correct")],
                        added_revisits=[{"step": 4, "patches": [9], "query": "handle"}])
    rows = {r.field: r for r in annotation_diff(mine.validate(), Annotation.from_dict(theirs).validate())}
    assert list(rows) == ["verdict", "answer correct", "note", "tags", "R1 label", "R1 region", "R2 label",
                          "R2 region", "added revisit 1"]
    assert rows["verdict"].same and rows["verdict"].mine == "incorrect"
    assert (rows["answer correct"].mine, rows["answer correct"].theirs, rows["answer correct"].same) == \
        ("no", "yes", False)
    assert (rows["R1 label"].mine, rows["R1 label"].theirs) == ("wrong_region", "correct")
    assert (rows["R1 region"].mine, rows["R1 region"].theirs) == ("patches 3 4", "—")
    assert (rows["R2 label"].mine, rows["R2 label"].theirs) == ("correct", "—")
    assert rows["added revisit 1"].mine == "—"
    assert rows["added revisit 1"].theirs == "before step 4 · query 'handle' · patches 9"
    assert [r.field for r in annotation_diff(None, None)] == ["verdict", "answer correct", "note", "tags"]
    assert all(r.same for r in annotation_diff(mine, mine))


def test_queue_filters_labelled_by_and_needs_a_second_annotator(store):
    a, b, c = (_trace(store, seed=i) for i in range(3))
    store.save_annotation(a, _ann("ana"))
    store.save_annotation(b, _ann("ana"))
    store.save_annotation(b, _ann("bo"))

    def ids(**kw):
        return {s.trace_id for s in store.list_traces(**kw)}

    assert ids(labelled_by="ana") == {a, b} and ids(labelled_by="bo") == {b}
    assert ids(not_labelled_by="bo") == {a, c} and ids(not_labelled_by="nobody") == {a, b, c}
    assert ids(n_annotators=1) == {a} and ids(n_annotators=1, not_labelled_by="ana") == set()
    assert ids(n_annotators=1, not_labelled_by="bo") == {a}  # what bo's "needs a second annotator" shows
    assert ids(annotated=False) == {c}
    assert store.count_traces(labelled_by="ana", n_annotators=2) == 1


def test_history_round_trips_kind_through_a_trace_export(store, tmp_path):
    from storage.export import export_traces
    from storage.importer import import_path

    tid = _trace(store)
    store.save_annotation(tid, _ann("ana", "correct"))
    store.save_annotation(tid, _ann("bo", "incorrect"))
    store.add_annotator("rita", role="reviewer")
    store.adopt_consensus(tid, "ana", by="rita")
    export_traces(store, tmp_path / "t.jsonl")
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert import_path(other, tmp_path / "t.jsonl").imported == 1
        heads = other.heads_by_trace([tid])[tid]
        assert sorted(heads.annotators) == ["ana", "bo"]
        assert (heads.consensus.version, heads.consensus.kind, heads.consensus.adopted_from) == (3, "consensus", 1)
        assert other.export_heads([tid])[tid].rule == "consensus"
        assert [r.kind for r in other.annotation_history(tid)] == ["label", "label", "consensus"]
    finally:
        other.close()


# ----------------------------------------------------------------------------- migration
def _old_style(conn, tid, rows):
    """Write annotations as revision 0001 kept them: one sequence, one current version, conflict flags."""
    for name in {r[1] for r in rows}:
        conn.execute(sa.text("INSERT INTO annotators (name, role, created_at) VALUES (:n, 'annotator', 'x') "
                             "ON CONFLICT DO NOTHING"), {"n": name})
    ids = dict(conn.execute(sa.text("SELECT name, id FROM annotators")).all())
    current = 0
    for version, name, verdict, payload, conflict in rows:
        conn.execute(sa.text(
            "INSERT INTO annotations (trace_id, version, annotator_id, created_at, verdict, answer_correct, note, "
            "payload, based_on, conflict) VALUES (:t, :v, :a, :c, :vd, NULL, '', :p, NULL, :cf)"),
            {"t": tid, "v": version, "a": ids[name], "c": f"2026-01-01T00:00:{version:02d}", "vd": verdict,
             "p": json.dumps(payload), "cf": conflict})
        if not conflict:
            current = version
    conn.execute(sa.text("UPDATE traces SET ann_version = :v, ann_seq = :s WHERE id = :t"),
                 {"v": current, "s": len(rows), "t": tid})


def test_migration_backfills_heads_without_losing_a_version(db_url):
    from alembic import command

    from storage.db import alembic_config, current_revision, upgrade, write_engine

    store = Store(db_url)
    try:
        anchored, agreed, split = (_trace(store, seed=i) for i in range(3))
        empty = {"tags": [], "revisit_labels": [], "added_revisits": []}
        with write_engine(store.engine).begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        assert current_revision(store.engine) == "0001"
        with write_engine(store.engine).begin() as conn:
            # ana labels; carol's independent save was flagged as a conflict; a reviewer adopted carol's
            _old_style(conn, anchored, [(1, "ana", "correct", empty, False),
                                        (2, "carol", "incorrect", empty, True),
                                        (3, "rita", "incorrect", {**empty, "tags": ["adjudicated"]}, False)])
            _old_style(conn, agreed, [(1, "ana", "correct", empty, False), (2, "bo", "correct", empty, False)])
            _old_style(conn, split, [(1, "ana", "correct", empty, False), (2, "bo", "unsure", empty, False),
                                     (3, "bo", "incorrect", {**empty, "tags": ["hard"]}, False)])
        assert upgrade(store.engine) == "0002"
        hist = store.annotation_history(anchored)
        assert [(h.version, h.annotator, h.conflict, h.kind) for h in hist] == [
            (1, "ana", False, "label"), (2, "carol", True, "label"), (3, "rita", False, "consensus")]
        h = store.heads_by_trace([anchored, agreed, split])
        assert {n: r.version for n, r in h[anchored].annotators.items()} == {"ana": 1, "carol": 2}
        assert h[anchored].consensus.version == 3
        assert {n: r.version for n, r in h[split].annotators.items()} == {"ana": 1, "bo": 3}
        assert h[split].consensus is None and len(store.annotation_history(split)) == 3
        heads = store.export_heads([anchored, agreed, split])
        assert (heads[anchored].rule, heads[agreed].rule, heads[split].reason) == \
            ("consensus", "annotators agree", UNRESOLVED)
        summ = {s.trace_id: s for s in store.list_traces()}
        assert (summ[anchored].n_annotators, summ[anchored].consensus_version) == (2, 3)
        assert (summ[split].annotation_state, summ[split].annotation_version) == ("disagree", 0)
        assert store.list_traces(tag="hard")[0].trace_id == split
        # saving after the migration continues the same version sequence, on one's own head
        assert store.save_annotation(split, _ann("ana", "incorrect"), expected_version=1) == 4
        # down and up again: still every version, same heads
        with write_engine(store.engine).begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        assert upgrade(store.engine) == "0002"
        assert [h.version for h in store.annotation_history(split)] == [1, 2, 3, 4]
        assert {n: r.version for n, r in store.heads_by_trace([split])[split].annotators.items()} == \
            {"ana": 4, "bo": 3}
    finally:
        store.close()
