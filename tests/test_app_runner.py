"""app/runner.py (generation gate, run/save), app/seeding.py and app/gallery.py."""

from __future__ import annotations

import threading
import time

import pytest

from app.gallery import SEED_KEYS, gallery, load_gallery_image
from app.runner import GateBusy, GenerationGate, ModelHandle, prepare_run, save_run
from v1core.trace import DecodingSettings


@pytest.fixture(scope="module")
def handle(checkpoint_dir):
    from v1core.loading import load_model

    model, processor = load_model(checkpoint_dir)
    return ModelHandle(model, processor, model.v1_model_id, str(checkpoint_dir), "cpu")


# ----------------------------------------------------------------------------- gate
def test_gate_serialises_and_reports_queue_positions():
    gate = GenerationGate()
    order: list[str] = []
    positions: list[int] = []
    release = threading.Event()

    def first():
        with gate.hold("first"):
            order.append("first in")
            release.wait(5)
            order.append("first out")

    def second():
        with gate.hold("second", on_wait=lambda pos, holder: positions.append(pos), poll=0.02):
            order.append("second in")

    t1 = threading.Thread(target=first)
    t1.start()
    while not gate.busy:
        time.sleep(0.005)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.15)
    assert order == ["first in"] and gate.queued() == 1
    release.set()
    t1.join(5)
    t2.join(5)
    assert order == ["first in", "first out", "second in"]
    assert positions and positions[0] == 1
    assert not gate.busy and gate.queued() == 0


def test_gate_withdraws_a_ticket_when_the_waiter_is_interrupted():
    gate = GenerationGate()

    class Interrupted(BaseException):  # what Streamlit's StopException/RerunException look like
        pass

    def bail(pos, holder):
        raise Interrupted

    with gate.hold("holder"):
        with pytest.raises(Interrupted):
            with gate.hold("impatient", on_wait=bail):
                pass
        assert gate.queued() == 0
        with pytest.raises(GateBusy, match="holder"):
            with gate.hold("timed", timeout=0.05, poll=0.01):
                pass
    with gate.hold("next"):  # the gate is free again
        assert gate.holder == "next"


# ----------------------------------------------------------------------------- gallery, run, save, seed
def test_gallery_has_scenes_and_photos():
    items = gallery()
    assert {i.kind for i in items} == {"scene", "photo"}
    assert {"astronaut", "coffee", "chelsea"} <= {i.key for i in items}
    a, b = load_gallery_image("scene-0"), load_gallery_image("scene-0")
    assert a.sha256 == b.sha256 and a.image.mode == "RGB"
    assert all(k in {i.key for i in items} for k in SEED_KEYS)


def test_prepare_and_save_run(app_env, handle):
    store = app_env
    run = prepare_run(handle, store, load_gallery_image("scene-1"), "What shape is it?",
                      DecodingSettings(max_new_tokens=6), tags=["t"])
    steps = list(run)
    assert 1 <= len(steps) <= 6 and run.trace.status == "complete"
    tid = save_run(store, run.trace)
    back = store.get_trace(tid)
    assert back.question == "What shape is it?" and len(back.steps) == len(steps)
    assert back.has_pointers and back.pointer_matrix().shape[1:] == tuple(back.grid)
    assert store.get_image_bytes(back.image_sha256) == load_gallery_image("scene-1").data
    with pytest.raises(ValueError, match="question"):
        prepare_run(handle, store, load_gallery_image("scene-1"), "   ", DecodingSettings())


def test_cancelled_run_is_saved_as_cancelled(app_env, handle):
    store = app_env
    run = prepare_run(handle, store, load_gallery_image("scene-2"), "Where?", DecodingSettings(max_new_tokens=50))
    it = iter(run)
    next(it)
    next(it)
    run.cancel.set()
    it.close()
    tid = save_run(store, run.trace)
    back = store.get_trace(tid)
    assert back.status == "cancelled" and 2 <= len(back.steps) < 50


def test_seed_demo_traces(app_env, handle, monkeypatch):
    from app import seeding

    store = app_env
    assert seeding.store_is_empty(store)
    calls = []
    ids = seeding.seed_demo_traces(store, handle, n=2, settings=DecodingSettings(max_new_tokens=5),
                                   progress=lambda d, n, label: calls.append((d, n)))
    assert len(ids) == 2 and not seeding.store_is_empty(store)
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)
    assert all("seed" in store.get_trace(i).tags for i in ids)
    monkeypatch.setenv(seeding.SEED_ENV, "0")
    assert seeding.seed_count() == 0
    monkeypatch.setenv(seeding.SEED_ENV, "99")
    assert seeding.seed_count() == len([i for i in gallery() if i.kind == "scene"])
    monkeypatch.setenv(seeding.SEED_ENV, "x")
    with pytest.raises(ValueError):
        seeding.seed_count()
