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


def canvases(at) -> dict[str, dict]:
    """The data each trace canvas on the page received, by its key's panel (a, b, region)."""
    out = {}
    for e in at.get("bidi_component"):
        data = json.loads(e.proto.json)
        out[e.proto.id.rsplit("cmp_canvas_", 1)[-1]] = data
    return out


def report(at, key: str, step: int, **extra) -> None:
    """What a canvas does when its step settles in the browser: set its `step` state value."""
    at.session_state[key] = {"step": step, **extra}


def test_empty_state(app_env):
    at = open_compare()
    assert any("No traces yet" in i.value for i in at.info)


def test_two_steps_of_one_trace(synthetic_trace):
    at = open_compare(synthetic_trace)
    assert at.segmented_control(key="compare_mode").value == "Two steps"
    c = canvases(at)
    assert c["a"]["view"]["goto"] == 0 and c["b"]["view"]["goto"] == 5  # B starts at the first revisit
    m = metrics(at)
    assert {"JS divergence", "entropy A", "entropy B", "argmax distance"} <= set(m)
    assert m["JS divergence"] != "0.000 bits"
    report(at, "cmp_canvas_a", 2)
    report(at, "cmp_canvas_b", 2)
    at.run()
    no_exceptions(at)
    assert metrics(at)["JS divergence"] == "0.000 bits"
    assert any(md.value == "**Step A = 2 · step B = 2**" for md in at.markdown)


def test_two_traces_of_the_same_image(app_env):
    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, question="A re-decoded branch")
    build_synthetic_trace(app_env, key="scene-1", question="Another image")  # must not be offered as B
    at = open_compare(a)
    at.segmented_control(key="compare_mode").set_value("Two traces").run()
    no_exceptions(at)
    picker = at.selectbox(key="compare_trace_b")
    assert picker.options and len(picker.options) == 1 and picker.value == b.trace_id
    assert {k: d["trace_id"] for k, d in canvases(at).items()} == {"a": a.trace_id, "b": b.trace_id}
    report(at, "cmp_canvas_a", 6)  # step A in the browser: B follows ("Lock steps")
    at.run()
    no_exceptions(at)
    m = metrics(at)
    assert m["JS divergence"] == "0.000 bits" and m["argmax distance"] == "0.0 patches"  # same pointers
    c = canvases(at)
    assert c["a"]["view"]["goto"] == 6 and c["b"]["view"]["goto"] == 6
    assert any(md.value == "**Step 6**" for md in at.markdown)
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
    report(at, "cmp_canvas_region", 5)  # the copy of patch 0, the first patch of R1
    at.run()
    m = metrics(at)
    assert [b["label"] for b in canvases(at)["region"]["view"]["boxes"]] == ["R1·1", "R1·2"]
    assert float(m["mass in R1"].rstrip("%")) >= 80  # 0.8 of the mass was put on the copied patch
    assert m["argmax inside"] == "yes" and m["best revisit IoU"] == "1.00"
    at.radio(key="region_source").set_value("Patch ids").run()
    at.text_input(key="region_ids").set_value("0-1").run()
    no_exceptions(at)
    assert "mass in region" in metrics(at)
    at.text_input(key="region_ids").set_value("0, 99999").run()
    assert any("outside the grid" in e.value for e in at.error)


def test_pointer_vs_a_region_picked_on_the_canvas(synthetic_trace):
    at = open_compare(synthetic_trace)
    at.segmented_control(key="compare_mode").set_value("Pointer vs region").run()
    at.radio(key="region_source").set_value("Pick on the grid").run()
    no_exceptions(at)
    assert canvases(at)["region"]["view"]["edit"] and not at.get("multiselect")
    assert any("Choose a region" in i.value for i in at.info)
    report(at, "cmp_canvas_region", 5, selection={"ids": [0, 1], "box": ""})
    at.run()
    no_exceptions(at)
    m = metrics(at)
    assert float(m["mass in picked"].rstrip("%")) >= 80 and m["argmax inside"] == "yes"
    assert any(c.value.startswith("2 patches · box [") for c in at.caption)
    at.button(key="region_clear").click().run()
    assert canvases(at)["region"]["view"]["selected"] == []


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
    assert canvases(at)["a"]["view"]["goto"] == 3 and canvases(at)["b"]["view"]["goto"] == 3
