"""Compare page through AppTest: two steps, two traces of one image, pointer vs a region."""

from __future__ import annotations

import json

import pytest

from tests.app_helpers import app_test, no_exceptions
from tests.builders import build_synthetic_trace


def open_compare(trace=None):
    at = app_test()
    if trace is not None:
        at.query_params["trace"] = trace.trace_id
    at.switch_page("pages/compare.py")
    at.run()
    no_exceptions(at)
    return at


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def chart_metas(at) -> list:
    return [json.loads(c.proto.spec)["layout"].get("meta") for c in at.get("plotly_chart")]


def test_empty_state(app_env):
    at = open_compare()
    assert any("No traces yet" in i.value for i in at.info)


def test_two_steps_of_one_trace(synthetic_trace):
    at = open_compare(synthetic_trace)
    assert at.segmented_control(key="compare_mode").value == "Two steps"
    assert at.slider(key="compare_step_b").value == 5  # defaults to the first revisit
    m = metrics(at)
    assert {"JS divergence", "entropy A", "entropy B", "argmax distance"} <= set(m)
    at.slider(key="compare_step_a").set_value(2)
    at.slider(key="compare_step_b").set_value(2).run()
    no_exceptions(at)
    assert metrics(at)["JS divergence"] == "0.000 bits"
    metas = chart_metas(at)
    assert {"step": 2, "panel": "A"} in metas and {"step": 2, "panel": "B"} in metas


def test_two_traces_of_the_same_image(app_env):
    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, question="A re-decoded branch")
    build_synthetic_trace(app_env, key="scene-1", question="Another image")  # must not be offered as B
    at = open_compare(a)
    at.segmented_control(key="compare_mode").set_value("Two traces").run()
    no_exceptions(at)
    picker = at.selectbox(key="compare_trace_b")
    assert picker.options and len(picker.options) == 1 and picker.value == b.trace_id
    at.slider(key="compare_step").set_value(6).run()
    no_exceptions(at)
    m = metrics(at)
    assert m["JS divergence"] == "0.000 bits" and m["argmax distance"] == "0.0 patches"  # same pointers
    assert {"step": 6, "panel": "A"} in chart_metas(at) and {"step": 6, "panel": "B"} in chart_metas(at)
    tables = at.dataframe
    assert len(tables) >= 2  # per-step metrics + revisit IoU
    assert at.query_params["trace_b"] in (b.trace_id, [b.trace_id])


def test_two_traces_without_a_partner(synthetic_trace):
    at = open_compare(synthetic_trace)
    at.segmented_control(key="compare_mode").set_value("Two traces").run()
    no_exceptions(at)
    assert any("No other trace of this image" in i.value for i in at.info)


def test_pointer_vs_revisit_region_and_patch_ids(synthetic_trace):
    at = open_compare(synthetic_trace)
    at.segmented_control(key="compare_mode").set_value("Pointer vs region").run()
    no_exceptions(at)
    at.slider(key="compare_step").set_value(5).run()  # the copy of patch 0, the first patch of R1
    m = metrics(at)
    assert float(m["mass in R1"].rstrip("%")) >= 80  # 0.8 of the mass was put on the copied patch
    assert m["argmax inside"] == "yes" and m["best revisit IoU"] == "1.00"
    at.radio(key="region_source").set_value("Patch ids").run()
    at.text_input(key="region_ids").set_value("0-1").run()
    no_exceptions(at)
    assert "mass in region" in metrics(at)
    at.text_input(key="region_ids").set_value("0, 99999").run()
    assert any("outside the grid" in e.value for e in at.error)


@pytest.mark.parametrize("mode", ["Two steps", "Pointer vs region"])
def test_modes_on_trace_without_pointers(app_env, mode):
    t = build_synthetic_trace(app_env)
    for s in t.steps:
        s.pointer = None
    t.trace_id = "nopointers"
    app_env.save_trace(t)
    at = open_compare(t)
    at.segmented_control(key="compare_mode").set_value(mode).run()
    no_exceptions(at)
    assert any("no pointer distributions" in w.value for w in at.warning)


def test_parent_and_branch_side_by_side_show_divergence_and_answer(app_env):
    """Re-decoding: a re-decoded branch opened with its parent says where pointers diverge and if the answer changed."""
    import copy

    parent = build_synthetic_trace(app_env)
    child = copy.deepcopy(parent)
    child.trace_id = "branch0001"
    child.parent_id, child.branch_step = parent.trace_id, 3
    child.branch_edit = {"kind": "replace", "revisit": 0, "patches": [1, 2]}
    child.steps[3].token_id += 1  # diverges at step 3
    child.output_text = parent.output_text + " changed"
    app_env.save_trace(child)
    at = app_test()
    at.query_params["trace"] = parent.trace_id
    at.query_params["trace_b"] = child.trace_id
    at.session_state["compare_mode"] = "Two traces"
    at.switch_page("pages/compare.py")
    at.run()
    no_exceptions(at)
    info = " ".join(i.value for i in at.info)
    assert "Branch of A re-decoded from step 3" in info and "diverge from step 3" in info and "Answer changed" in info
    assert at.slider(key="compare_step").value == 3
