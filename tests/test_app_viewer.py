"""Viewer page through streamlit.testing AppTest: step moves, revisits, token strip, play, URL, safety."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.app_helpers import app_test, no_exceptions
from tests.builders import build_synthetic_trace


def canvas(at) -> dict:
    """The data the viewer's trace canvas (a Custom Components v2 element) received in the last run."""
    els = [e for e in at.get("bidi_component") if e.proto.component_name == "v1studio.trace_canvas"]
    assert els, "no trace canvas rendered"
    return json.loads(els[0].proto.json)


def report_step(at, step: int) -> None:
    """What the browser does when its step settles: set the canvas's `step` state value."""
    at.session_state["viewer_canvas"] = {"step": step}


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


def test_opens_latest_trace_with_its_pointers_once(synthetic_trace):
    from app.canvas_data import dequantise_pointers

    at = open_viewer()
    assert at.title[0].value == "Trace viewer"
    data = canvas(at)
    t = synthetic_trace
    assert data["trace_id"] == t.trace_id and data["view"]["goto"] == 0
    st_ = data["static"]
    assert st_["n_steps"] == len(t.steps) and st_["grid"] == list(t.grid)
    assert st_["image"].startswith("data:image/jpeg;base64,")
    assert st_["copy"] == [s.patch if s.is_copy else -1 for s in t.steps]
    # a small trace is one window: every step's pointer arrived with the first render
    (win,) = data["windows"]
    assert (win["start"], win["stop"]) == (0, len(t.steps))
    q = np.frombuffer(base64.b64decode(win["q"]), dtype=np.uint8).reshape(len(t.steps), -1)
    shown = dequantise_pointers(q, np.asarray(win["pmax"]))
    exact = np.stack([s.pointer.reshape(-1) for s in t.steps])
    assert np.argmax(shown, axis=1).tolist() == np.argmax(exact, axis=1).tolist()
    # a rerun (the step reported back) sends neither the photo nor the pointers again
    report_step(at, 3)
    at.run()
    no_exceptions(at)
    again = canvas(at)
    assert again["static"] is None and again["windows"] == [] and again["view"]["nonce"] == data["view"]["nonce"]
    assert at.query_params["step"] in (["3"], "3")


def test_revisit_jump_and_list(synthetic_trace):
    revisits = synthetic_trace.revisits
    assert [(r.start_step, r.end_step) for r in revisits] == [(5, 8), (15, 16)]
    at = open_viewer()
    boxes = canvas(at)["static"]["revisits"]
    assert [b["label"] for b in boxes[0]["boxes"]] == ["R1·1", "R1·2"]  # two separate regions
    assert [b["label"] for b in boxes[1]["boxes"]] == ["R2"]
    nonce = canvas(at)["view"]["nonce"]
    at.button(key="revisit_1").click().run()  # the list's "Jump" of R2
    view = canvas(at)["view"]
    assert view["goto"] == 15 and view["nonce"] > nonce
    captions = [c.value for c in at.caption]
    assert any("detect" in c and "query" in c for c in captions)


def test_deep_link_opens_trace_and_step(app_env):
    first = build_synthetic_trace(app_env)
    build_synthetic_trace(app_env, key="scene-1", question="Another?")  # newer: would be the default
    at = open_viewer(first, step=7)
    assert at.selectbox(key="trace_select").value == first.trace_id
    data = canvas(at)
    assert data["trace_id"] == first.trace_id and data["view"]["goto"] == 7


def test_switching_trace_resets_step_and_sends_the_new_trace(app_env):
    a = build_synthetic_trace(app_env)
    b = build_synthetic_trace(app_env, key="scene-1", question="Second?")
    at = open_viewer(a, step=9)
    at.selectbox(key="trace_select").set_value(b.trace_id).run()
    no_exceptions(at)
    data = canvas(at)
    assert data["trace_id"] == b.trace_id and data["view"]["goto"] == 0 and data["static"] is not None
    assert at.selectbox(key="trace_select").value == b.trace_id


def test_untrusted_text_is_never_html_or_markdown(synthetic_trace):
    at = open_viewer()
    for el in list(at.markdown) + list(at.caption):
        assert not el.proto.allow_html
        assert "![x](" not in el.value and "<script>" not in el.value and ":red[alert]" not in el.value
        assert "<b>square</b>" not in el.value
    assert any("detect" in c.value and "\\!\\[x\\]" in c.value for c in at.caption)
    # token texts reach the canvas as plain strings (it sets them as text, never as HTML)
    assert " <script>alert(1)</script>" in canvas(at)["static"]["tokens"]


def test_missing_trace_id_is_reported(app_env):
    build_synthetic_trace(app_env)
    at = app_test()
    at.query_params["trace"] = "does-not-exist"
    at.run()
    no_exceptions(at)
    assert any("not found" in e.value for e in at.error)


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_display_settings(synthetic_trace, scale):
    from app.canvas_data import colour_lut

    at = open_viewer()
    at.radio(key="scale").set_value(scale)
    at.selectbox(key="colorscale").set_value("Viridis")
    at.slider(key="opacity").set_value(0.3).run()
    no_exceptions(at)
    view = canvas(at)["view"]
    assert view["opacity"] == pytest.approx(0.3)
    assert view["lut"] == colour_lut("Viridis", log=scale == "log")
    at.radio(key="revisit_regions").set_value("all").run()
    assert canvas(at)["view"]["regions"] == "all"


def test_trace_without_pointers_still_steps(app_env):
    t = build_synthetic_trace(app_env)
    for s in t.steps:
        s.pointer = None
        s.p_copy = s.entropy = float("nan")
    t.trace_id = "imported-no-pointers"
    app_env.save_trace(t)
    at = open_viewer(t, step=6)
    data = canvas(at)
    assert data["view"]["goto"] == 6 and data["static"]["has_pointers"] is False and data["windows"] == []
    assert data["static"]["p_copy"][0] is None  # NaN travels as null
    assert any("without pointer distributions" in c.value for c in at.caption)


def test_redecode_region_is_picked_on_the_canvas(synthetic_trace):
    at = open_viewer()
    assert not canvas(at)["view"]["edit"]
    assert not at.get("multiselect")  # no per-patch widget list
    at.button(key="redecode_pick_0").click().run()
    no_exceptions(at)
    view = canvas(at)["view"]
    assert view["edit"] and view["selected"] == sorted(set(synthetic_trace.revisits[0].patches))
    assert view["goto"] == synthetic_trace.revisits[0].start_step
    # the browser reports a new selection: the panel shows its copy ids and box text (v1core.geometry)
    at.session_state["viewer_canvas"] = {"step": 5, "selection": {"ids": [0, 1, "x", -4], "box": "ignored"}}
    at.run()
    no_exceptions(at)
    from v1core.geometry import PatchGrid

    grid = PatchGrid.from_resized(synthetic_trace.image_size, synthetic_trace.resized_size)
    assert any("<|copy_0|><|copy_1|>" == c.value for c in at.code)
    assert any(grid.region_text(grid.patches_to_box([0, 1])) in c.value for c in at.caption)
    at.button(key="redecode_cancel").click().run()
    assert not canvas(at)["view"]["edit"]


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


def test_trace_cache_follows_saves_by_other_processes(synthetic_trace):
    """A trace re-saved or deleted behind the app's back (another server, the batch tracer) is never served
    stale: the cache is keyed by the stored version's stamp."""
    from app import resources

    store, t = resources.get_store(), synthetic_trace
    first = resources.load_trace(t.trace_id)
    assert first is not None and len(first.steps) == len(t.steps)
    grown = store.get_trace(t.trace_id)
    grown.steps = grown.steps[:3]
    grown.status = "cancelled"
    store.save_trace(grown)
    again = resources.load_trace(t.trace_id)
    assert again.status == "cancelled" and len(again.steps) == 3
    store.add_annotator("rita", role="reviewer")
    store.delete_trace(t.trace_id, by="rita")
    assert resources.load_trace(t.trace_id) is None
