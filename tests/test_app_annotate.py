"""Annotate page through AppTest: queue, save with the annotator's name, region correction, conflicts, revert."""

from __future__ import annotations

from storage import Annotation
from tests.app_helpers import app_test, no_exceptions, open_page
from tests.builders import build_synthetic_trace


def open_annotate(name: str | None = "ana"):
    return open_page("pages/annotate.py", name)


def test_empty_state(app_env):
    at = open_annotate()
    assert any("No complete traces" in i.value for i in at.info)


def test_needs_a_name(synthetic_trace):
    at = open_annotate(name=None)
    assert any("Type your name" in i.value for i in at.info)
    at.text_input(key="annotator").set_value("bob").run()
    no_exceptions(at)
    assert at.radio(key="verdict") is not None


def test_annotate_correct_region_and_save(synthetic_trace, app_env):
    at = open_annotate()
    at.radio(key="verdict").set_value("incorrect")
    at.radio(key="answer_correct").set_value("no")
    at.text_area(key="note").set_value("looked at the wrong place")
    at.text_input(key="tags").set_value("hard, cups")
    at.radio(key="rv_label_0").set_value("wrong_region").run()
    no_exceptions(at)
    at.multiselect(key="rv_patches_0").set_value([3, 4]).run()
    assert any("<|copy_3|> <|copy_4|>" in c.value for c in at.caption)
    at.radio(key="rv_label_1").set_value("unnecessary")
    # add a missing revisit
    at.multiselect(key="add_patches").set_value([7])
    at.number_input(key="add_step").set_value(9)
    at.text_input(key="add_query").set_value("handle")
    at.button(key="add_revisit").click().run()
    no_exceptions(at)
    at.button(key="save_annotation").click().run()
    no_exceptions(at)
    assert any("Saved version 1" in s.value for s in at.success)
    rec = app_env.get_annotation(synthetic_trace.trace_id)
    a = rec.annotation
    assert (rec.version, a.annotator, a.verdict, a.answer_correct) == (1, "ana", "incorrect", False)
    assert a.tags == ["hard", "cups"] and a.note == "looked at the wrong place"
    assert a.label_for(0).label == "wrong_region" and a.label_for(0).corrected_patches == [3, 4]
    assert a.label_for(1).label == "unnecessary"
    assert [(x.step, x.patches, x.query) for x in a.added_revisits] == [(9, [7], "handle")]
    assert app_env.get_annotator("ana").role == "annotator"
    # saving again builds on the version just saved (no conflict)
    at.radio(key="verdict").set_value("unsure")
    at.button(key="save_annotation").click().run()
    assert any("Saved version 2" in s.value for s in at.success)
    assert app_env.get_annotation(synthetic_trace.trace_id).verdict == "unsure"


def test_conflict_shows_both_and_keep_mine(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    at = open_annotate()  # loads version 0
    app_env.save_annotation(tid, Annotation(annotator="rita", verdict="correct", note="theirs"), expected_version=0)
    at.radio(key="verdict").set_value("incorrect")
    at.text_area(key="note").set_value("mine")
    at.button(key="save_annotation").click().run()
    no_exceptions(at)
    assert at.warning and "rita" in at.warning[0].value
    shown = [j.value for j in at.json]
    assert any('"mine"' in s for s in shown) and any('"theirs"' in s for s in shown)
    assert app_env.get_annotation(tid).annotation.note == "theirs"  # theirs is still current
    at.button(key="keep_mine").click().run()
    no_exceptions(at)
    cur = app_env.get_annotation(tid)
    assert cur.annotation.note == "mine" and cur.version == 3
    notes = [(r.version, r.annotation.note, r.conflict) for r in app_env.annotation_history(tid)]
    assert notes == [(1, "theirs", False), (2, "mine", True), (3, "mine", False)]


def test_conflict_take_theirs_then_revert(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    at = open_annotate()
    app_env.save_annotation(tid, Annotation(annotator="rita", verdict="correct", note="theirs"), expected_version=0)
    at.text_area(key="note").set_value("mine")
    at.button(key="save_annotation").click().run()
    at.button(key="take_theirs").click().run()
    no_exceptions(at)
    assert at.text_area(key="note").value == "theirs"
    assert at.radio(key="verdict").value == "correct"
    hist = app_env.annotation_history(tid)
    assert [(r.annotation.note, r.conflict) for r in hist] == [("theirs", False), ("mine", True)]
    # revert to the conflict version: its payload becomes current, saved by ana
    at.button(key="revert_2").click().run()
    no_exceptions(at)
    cur = app_env.get_annotation(tid)
    assert (cur.version, cur.annotation.note, cur.annotator) == (3, "mine", "ana")
    assert at.text_area(key="note").value == "mine"


def test_queue_next_prev_and_filters(app_env):
    a = build_synthetic_trace(app_env)
    build_synthetic_trace(app_env, key="scene-1", question="Second?")
    build_synthetic_trace(app_env, key="scene-2", question="Third?")
    app_env.save_annotation(a.trace_id, Annotation(annotator="ana", verdict="correct"), expected_version=0)
    order = [r.trace_id for r in app_env.list_traces()]  # newest first (ties broken by id)
    todo = [t for t in order if t != a.trace_id]
    at = app_test()
    at.switch_page("pages/annotate.py")
    at.session_state["annotator"] = "ana"
    at.session_state["ann_order"] = "newest"
    at.run()
    no_exceptions(at)
    assert at.session_state["_annot_trace"] == todo[0]  # first trace not yet annotated by ana
    at.button(key="next_trace").click().run()
    no_exceptions(at)
    assert at.session_state["_annot_trace"] == todo[1]
    at.button(key="prev_trace").click().run()
    assert at.session_state["_annot_trace"] == order[order.index(todo[1]) - 1]
    at.button(key="next_trace").click().run()
    at.button(key="next_trace").click().run()  # a (done by ana) is skipped; the queue wraps around
    assert at.session_state["_annot_trace"] == todo[0]
    # uncertainty order puts the trace with the highest pointer entropy / lowest p_copy first
    at.radio(key="ann_order").set_value("uncertainty").run()
    no_exceptions(at)
    # filter by current verdict: only a matches (annotated by ana, reachable for review)
    at.selectbox(key="ann_verdict").set_value("correct").run()
    no_exceptions(at)
    assert at.session_state["_annot_trace"] == a.trace_id
    assert at.radio(key="verdict").value == "correct"


def test_uncertainty_score_orders_queue(app_env):
    from app.annotate_ui import uncertainty
    from app.resources import store_url

    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second?")
    for s in b.steps:
        if s.is_copy:
            s.p_copy = 0.05  # unsure copies
    b.trace_id = "unsure-copies"
    app_env.save_trace(b)
    assert uncertainty(store_url(), "unsure-copies") > uncertainty(store_url(), a.trace_id)
    at = open_annotate()
    assert at.radio(key="ann_order").value == "uncertainty"
    assert at.session_state["_annot_trace"] == "unsure-copies"
