"""Viewer page through streamlit.testing AppTest: step moves, revisits, token strip, play, URL, safety."""

from __future__ import annotations

import json
import time

import pytest

from tests.app_helpers import app_test, no_exceptions
from tests.builders import build_synthetic_trace


def heatmap_meta(at) -> dict:
    """layout.meta of the viewer's heatmap (the first plotly chart on the page)."""
    charts = at.get("plotly_chart")
    assert charts, "no plotly chart rendered"
    return json.loads(charts[0].proto.spec)["layout"]["meta"]


def step_of(at) -> int:
    return int(at.slider(key="step").value)


def open_viewer(trace=None, step=None):
    at = app_test()
    if trace is not None:
        at.query_params["trace"] = trace.trace_id
    if step is not None:
        at.query_params["step"] = str(step)
    at.run()
    no_exceptions(at)
    return at


def test_empty_state(app_env):
    at = open_viewer()
    assert any("No traces yet" in i.value for i in at.info)


def test_opens_latest_trace_and_moves_step(synthetic_trace):
    at = open_viewer()
    assert at.title[0].value == "Trace viewer"
    assert step_of(at) == 0 and heatmap_meta(at)["step"] == 0
    at.slider(key="step").set_value(3).run()
    no_exceptions(at)
    assert heatmap_meta(at) == {"step": 3, "trace": synthetic_trace.trace_id}
    assert any(m.value.startswith("**Step 3**") for m in at.markdown)
    at.button(key="next_step").click().run()
    assert step_of(at) == 4 and heatmap_meta(at)["step"] == 4
    at.button(key="prev_step").click().run()
    assert step_of(at) == 3
    assert at.query_params["trace"] in ([synthetic_trace.trace_id], synthetic_trace.trace_id)


def test_revisit_navigation_and_list(synthetic_trace):
    revisits = synthetic_trace.revisits
    assert [(r.start_step, r.end_step) for r in revisits] == [(5, 8), (15, 16)]
    assert len(revisits[0].boxes) == 2  # two separate regions
    at = open_viewer()
    assert at.button(key="prev_revisit").disabled
    at.button(key="next_revisit").click().run()
    assert step_of(at) == 5
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    labels = [s.get("label", {}).get("text") for s in spec["layout"]["shapes"]]
    assert "R1·1" in labels and "R1·2" in labels  # the revisit's regions as separate boxes
    at.button(key="next_revisit").click().run()
    assert step_of(at) == 15
    assert at.button(key="next_revisit").disabled
    at.button(key="prev_revisit").click().run()
    assert step_of(at) == 5
    at.button(key="revisit_1").click().run()  # the list's "Jump" of R2
    assert step_of(at) == 15
    captions = [c.value for c in at.caption]
    assert any("detect" in c and "query" in c for c in captions)


def test_token_strip_and_timeline_jump(synthetic_trace):
    at = open_viewer()
    strip = at.pills(key="token_strip")
    assert len(strip.options) == len(synthetic_trace.steps)
    strip.set_value(12).run()
    no_exceptions(at)
    assert step_of(at) == 12 and heatmap_meta(at)["step"] == 12
    assert at.pills(key="token_strip").value == 12


def test_deep_link_opens_trace_and_step(app_env):
    first = build_synthetic_trace(app_env)
    build_synthetic_trace(app_env, key="scene-1", question="Another?")  # newer: would be the default
    at = open_viewer(first, step=7)
    assert at.selectbox(key="trace_select").value == first.trace_id
    assert step_of(at) == 7 and heatmap_meta(at) == {"step": 7, "trace": first.trace_id}


def test_play_advances_and_stops_at_the_end(synthetic_trace):
    at = open_viewer()
    at.select_slider(key="speed").set_value(8.0)
    at.toggle(key="play").set_value(True).run()
    no_exceptions(at)
    assert step_of(at) == 1
    time.sleep(0.1)
    at.run()
    assert step_of(at) == 2
    last = len(synthetic_trace.steps) - 1
    at.slider(key="step").set_value(last).run()
    time.sleep(0.1)
    at.run()  # tick at the last step: playback stops
    no_exceptions(at)
    assert at.toggle(key="play").value is False
    assert step_of(at) == last


def test_switching_trace_resets_step(app_env):
    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second?")
    at = open_viewer(a, step=9)
    at.selectbox(key="trace_select").set_value(b.trace_id).run()
    no_exceptions(at)
    assert heatmap_meta(at) == {"step": 0, "trace": b.trace_id}


def test_untrusted_text_is_never_html_or_markdown(synthetic_trace):
    at = open_viewer()
    at.button(key="next_revisit").click().run()
    for el in list(at.markdown) + list(at.caption):
        assert not el.proto.allow_html
        assert "![x](" not in el.value and "<script>" not in el.value and ":red[alert]" not in el.value
        assert "<b>square</b>" not in el.value
    assert any("detect" in c.value and "\\!\\[x\\]" in c.value for c in at.caption)
    # token texts shown in code blocks / tables stay verbatim (they are not interpreted there)
    at.slider(key="step").set_value(12).run()
    assert any("<script>alert(1)</script>" in c.value for c in at.code)


def test_missing_trace_id_is_reported(app_env):
    build_synthetic_trace(app_env)
    at = app_test()
    at.query_params["trace"] = "does-not-exist"
    at.run()
    no_exceptions(at)
    assert any("not found" in e.value for e in at.error)


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_display_settings(synthetic_trace, scale):
    at = open_viewer()
    at.radio(key="scale").set_value(scale)
    at.selectbox(key="colorscale").set_value("Viridis")
    at.slider(key="opacity").set_value(0.3).run()
    no_exceptions(at)
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert heat["opacity"] == pytest.approx(0.3)
    assert (heat["zmax"] <= 0) == (scale == "log")


def test_trace_without_pointers_still_steps(app_env):
    t = build_synthetic_trace(app_env)
    for s in t.steps:
        s.pointer = None
        s.p_copy = s.entropy = float("nan")
    t.trace_id = "imported-no-pointers"
    app_env.save_trace(t)
    at = open_viewer(t, step=6)
    assert step_of(at) == 6 and heatmap_meta(at)["step"] == 6
    assert any("without pointer distributions" in c.value for c in at.caption)
    at.button(key="next_revisit").click().run()
    no_exceptions(at)
    assert step_of(at) == 15


def test_picking_another_trace_in_the_selectbox_sticks(app_env):
    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second?")
    at = open_viewer(a)
    at.selectbox(key="trace_select").set_value(b.trace_id).run()
    at.slider(key="step").set_value(4).run()
    no_exceptions(at)
    assert at.selectbox(key="trace_select").value == b.trace_id
    assert heatmap_meta(at) == {"step": 4, "trace": b.trace_id}


def test_redecode_with_another_region_stores_a_branch_and_reports_the_answer_diff(tmp_path, monkeypatch):
    """Re-decoding in the app: re-decoding with another region creates a child trace listed under its parent."""
    from app.runner import answer_diff, redecode_and_save
    from v1core.intervene import BranchEdit

    import numpy as np
    from PIL import Image

    from tests.helpers import fixture_model, fixture_processor
    from v1core.generation import TraceRun
    from v1core.trace import DecodingSettings
    from app.runner import ModelHandle
    from storage import Store

    model, proc = fixture_model(), fixture_processor()
    model.generation_config.eos_token_id = 2
    image = Image.fromarray(np.random.default_rng(5).integers(0, 255, (100, 140, 3), dtype=np.uint8))
    parent = TraceRun(model, proc, image, "w7", DecodingSettings(max_new_tokens=16, min_new_tokens=16)).run()
    assert parent.revisits
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.save_trace(parent)
    handle = ModelHandle(model=model, processor=proc, model_id="fixture", path="", device="cpu")
    other = next(p for p in range(parent.n_patches) if p not in parent.revisits[0].patches)
    child_id, child = redecode_and_save(handle, store, parent, image, BranchEdit("replace", revisit=0, patches=[other]))
    assert [k.id for k in store.list_traces(parent_id=parent.trace_id)] == [child_id]
    diff = answer_diff(parent, child)
    assert diff["first_divergent_step"] == parent.revisits[0].start_step
    assert set(diff) == {"parent_answer", "branch_answer", "answer_changed", "first_divergent_step"}
