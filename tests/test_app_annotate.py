"""Annotate page through AppTest: queue, save with the annotator's name, region correction, conflicts, revert."""

from __future__ import annotations

import pytest

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


def test_blind_another_annotators_save_is_neither_shown_nor_a_conflict(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    app_env.save_annotation(tid, Annotation(annotator="rita", verdict="correct", note="theirs", tags=["x"]),
                            expected_version=0)
    at = open_annotate()
    at.run()
    no_exceptions(at)
    assert at.session_state["_annot_trace"] == tid  # rita's label does not take it off ana's queue
    # nothing of rita's is pre-filled, shown or in the history
    assert at.radio(key="verdict").value is None and at.text_area(key="note").value == ""
    assert at.text_input(key="tags").value == ""
    page = " ".join(m.value for m in [*at.markdown, *at.caption])
    assert "theirs" not in page and "rita" not in page
    assert at.toggle(key="ann_show_others").disabled  # annotators cannot switch blindness off
    at.radio(key="verdict").set_value("incorrect")
    at.text_area(key="note").set_value("mine")
    at.button(key="save_annotation").click().run()
    no_exceptions(at)
    assert not at.warning and any("Saved version 2" in s.value for s in at.success)
    heads = app_env.heads_by_trace([tid])[tid].annotators
    assert (heads["ana"].annotation.note, heads["rita"].annotation.note) == ("mine", "theirs")


def _second_tab_saves(store, tid, note="other tab"):
    return store.save_annotation(tid, Annotation(annotator="ana", verdict="correct", note=note), expected_version=0)


def test_conflict_is_your_own_head_with_a_diff_table_and_keep_mine(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    at = open_annotate()  # loads ana's head: none yet
    _second_tab_saves(app_env, tid)  # ana saves the same trace from another tab
    at.radio(key="verdict").set_value("incorrect")
    at.text_area(key="note").set_value("mine")
    at.button(key="save_annotation").click().run()
    no_exceptions(at)
    assert at.warning and "Your own label" in at.warning[0].value and "version 2" in at.warning[0].value
    assert not at.json  # a readable table, never raw JSON
    diff = at.table[0].value
    rows = {f: (m, t, d) for f, m, t, d in zip(diff["field"], diff["mine"], diff["theirs"], diff["differs"])}
    assert rows["verdict"] == ("incorrect", "correct", "≠") and rows["note"] == ("mine", "other tab", "≠")
    assert rows["tags"] == ("—", "—", "")
    assert app_env.annotation_view(tid, "ana").own.annotation.note == "other tab"  # the head did not move
    at.button(key="keep_mine").click().run()
    no_exceptions(at)
    cur = app_env.annotation_view(tid, "ana").own
    assert cur.annotation.note == "mine" and cur.version == 3
    notes = [(r.version, r.annotation.note, r.conflict) for r in app_env.annotation_history(tid)]
    assert notes == [(1, "other tab", False), (2, "mine", True), (3, "mine", False)]


def test_conflict_take_theirs_then_revert(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    at = open_annotate()
    _second_tab_saves(app_env, tid, note="theirs")
    at.radio(key="verdict").set_value("unsure")
    at.text_area(key="note").set_value("mine")
    at.button(key="save_annotation").click().run()
    at.button(key="take_theirs").click().run()
    no_exceptions(at)
    assert at.text_area(key="note").value == "theirs"
    assert at.radio(key="verdict").value == "correct"
    hist = app_env.annotation_history(tid)
    assert [(r.annotation.note, r.conflict) for r in hist] == [("theirs", False), ("mine", True)]
    # revert to the conflict version: its payload becomes ana's head
    at.button(key="revert_2").click().run()
    no_exceptions(at)
    cur = app_env.annotation_view(tid, "ana").own
    assert (cur.version, cur.annotation.note, cur.annotator) == (3, "mine", "ana")
    assert at.text_area(key="note").value == "mine"


def test_incomplete_save_says_what_is_missing_and_keeps_the_form(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    at = open_annotate()
    at.text_area(key="note").set_value("half done")
    at.text_input(key="tags").set_value("later")
    at.radio(key="rv_label_0").set_value("wrong_region").run()
    at.button(key="save_annotation").click().run()
    no_exceptions(at)
    err = " ".join(e.value for e in at.error)
    assert "a verdict" in err and "a corrected region for R1" in err and "kept" in err
    assert app_env.annotation_history(tid) == []
    assert at.text_area(key="note").value == "half done" and at.text_input(key="tags").value == "later"
    assert at.radio(key="rv_label_0").value == "wrong_region"
    at.radio(key="verdict").set_value("incorrect")
    at.multiselect(key="rv_patches_0").set_value([5]).run()
    at.button(key="save_annotation").click().run()
    assert any("Saved version 1" in s.value for s in at.success)
    assert app_env.annotation_view(tid, "ana").own.annotation.label_for(0).corrected_patches == [5]


def test_key_actions_change_the_form_state():
    """What each key does to the form (the browser component reports the action; Chromium presses the real
    keys in tests/test_browser_annotate_keys.py)."""
    from app.annotate_ui import apply_key
    from app.keys import KEYMAP, event_of, legend_rows

    assert {r["key"] for r in legend_rows()} >= {"1", "2", "3", "y", "n", "j", "k", "[", "]", "c", "w", "u",
                                                  "Ctrl+Enter"}
    assert len({b.action for b in KEYMAP}) == len(KEYMAP)
    assert event_of({"action": {"action": "verdict:correct", "n": 3}}) == "verdict:correct"
    assert event_of({"action": {"action": "rm -rf", "n": 1}}) is None and event_of(None) is None
    ss = {"ann_rv": 0}
    ctx, nav = ("t1", "ana", 2), ("t0", "t2")
    for action in ("verdict:incorrect", "answer:no", "revisit:next", "label:unnecessary", "revisit:next",
                   "label:correct", "revisit:prev", "revisit:prev"):
        assert apply_key(ss, action, ctx, nav) is None
    assert (ss["verdict"], ss["answer_correct"], ss["rv_label_1"], ss["rv_label_0"], ss["ann_rv"]) == \
        ("incorrect", "no", "unnecessary", "correct", 0)  # ] and [ wrap around the revisits
    assert apply_key(ss, "trace:next", ctx, nav) == ("goto", "t2")
    assert apply_key(ss, "trace:prev", ctx, (None, "t2")) == ("goto", None)
    assert apply_key(ss, "save", ctx, nav) == ("save", ("t1", "ana"))
    assert apply_key({}, "label:wrong_region", ("t1", "ana", 0), nav) is None  # no revisit: nothing to label


def test_keyboard_legend_on_the_page(synthetic_trace, app_env):
    at = open_annotate()
    no_exceptions(at)
    legend = [e for e in at.expander if e.label == "Keyboard shortcuts"]
    assert legend and any("Ctrl+Enter" in c.value and "next revisit" in c.value for c in at.caption)


def test_needs_a_second_annotator_and_why_first(app_env):
    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second?")
    build_synthetic_trace(app_env, key="scene-2", question="Third?")
    app_env.save_annotation(a.trace_id, Annotation(annotator="rita", verdict="correct"), expected_version=0)
    app_env.save_annotation(b.trace_id, Annotation(annotator="ana", verdict="correct"), expected_version=0)
    at = app_test()
    at.switch_page("pages/annotate.py")
    at.session_state["annotator"] = "ana"
    at.session_state["ann_mode"] = "second"
    at.run()
    no_exceptions(at)
    assert at.session_state["_annot_trace"] == a.trace_id  # only rita labelled it; b is ana's own
    assert "1 trace(s)" in " ".join(c.value for c in at.caption)
    why = [e.label for e in at.expander if e.label.startswith("Why this trace")]
    assert why and "pointer entropy" in why[0] and "1 annotator(s) labelled it" in why[0]
    parts = at.table[0].value
    assert list(parts["part"])[-1] == "score" and float(parts["value"].iloc[-1]) >= 0


def test_reviewer_sees_others_and_saves_a_consensus(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    app_env.save_annotation(tid, Annotation(annotator="ana", verdict="correct", note="ana says"))
    app_env.save_annotation(tid, Annotation(annotator="bo", verdict="incorrect"))
    app_env.add_annotator("rita", role="reviewer")
    at = open_annotate("rita")
    at.session_state["ann_mode"] = "all"
    at.run()
    assert at.radio(key="verdict").value is None  # blind by default, for reviewers too
    at.toggle(key="ann_show_others").set_value(True).run()
    no_exceptions(at)
    tables = [t.value for t in at.table]
    assert any("ana says" in list(t["theirs"]) for t in tables if "theirs" in t)
    at.radio(key="verdict").set_value("incorrect")
    at.button(key="save_consensus").click().run()
    no_exceptions(at)
    assert any("consensus" in s.value for s in at.success)
    head = app_env.export_heads([tid])[tid]
    assert head.rule == "consensus" and head.record.annotator == "rita"
    assert sorted(app_env.heads_by_trace([tid])[tid].annotators) == ["ana", "bo"]  # rita's ruling is no label


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
    assert at.session_state["_annot_trace"] == todo[0]  # the queue skips what ana already labelled
    at.button(key="next_trace").click().run()
    assert at.session_state["_annot_trace"] == todo[1] and at.button(key="next_trace").disabled  # the end
    # uncertainty order puts the trace with the highest pointer entropy / lowest p_copy first
    at.radio(key="ann_order").set_value("uncertainty").run()
    no_exceptions(at)
    # all traces, filtered by verdict: only a matches (annotated by ana, reachable to revise)
    at.radio(key="ann_mode").set_value("all")
    at.selectbox(key="ann_verdict").set_value("correct").run()
    no_exceptions(at)
    assert at.session_state["_annot_trace"] == a.trace_id
    assert at.radio(key="verdict").value == "correct"


def test_uncertainty_score_orders_queue(app_env):
    from app.queue import build_queue, uncertainty

    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second?")
    for s in b.steps:
        if s.is_copy:
            s.p_copy = 0.05  # unsure copies
    b.trace_id = "unsure-copies"
    app_env.save_trace(b)
    stats = app_env.step_stats(["unsure-copies", a.trace_id])
    hi, lo = uncertainty(stats["unsure-copies"]), uncertainty(stats[a.trace_id])
    assert hi.score > lo.score and hi.revisit_p_copy == pytest.approx(0.05)
    assert hi.score == pytest.approx(hi.pointer_entropy + 0.95)
    assert "1 − p_copy at revisits 0.050" in hi.explain()
    q = build_queue(app_env, "ana", mode="todo", order="uncertainty")
    assert q[0].trace_id == "unsure-copies" and len(q) == 3  # a, b and b's unsure copy
    at = open_annotate()
    assert at.radio(key="ann_order").value == "uncertainty"
    assert at.session_state["_annot_trace"] == "unsure-copies"
    app_env.save_annotation("unsure-copies", Annotation(annotator="ana", verdict="unsure"))
    assert "unsure-copies" not in [it.trace_id for it in build_queue(app_env, "ana")]  # skips what ana labelled
    assert [it.trace_id for it in build_queue(app_env, "bo", mode="second")] == ["unsure-copies"]

