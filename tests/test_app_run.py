"""Run page and first start through AppTest: decode with the model, save, open in the viewer; uploads."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import pytest
from PIL import Image

from tests.app_helpers import app_test, no_exceptions


def open_run_page():
    at = app_test()
    at.switch_page("pages/run.py")
    at.run()
    no_exceptions(at)
    return at


def run_question(at, question: str = "What colour is the square?", max_new: int = 8, sampling: bool = False):
    at.text_area(key="question").set_value(question)
    at.number_input(key="max_new_tokens").set_value(max_new)
    if sampling:
        at.radio(key="decoding").set_value("sampling")
        at.number_input(key="seed").set_value(3)
    at.button(key="run").click().run()
    no_exceptions(at)
    return at


def test_run_decodes_saves_and_opens_in_viewer(app_env):
    store = app_env
    at = open_run_page()
    assert at.title[0].value == "Run v1"
    assert at.button(key="stop").disabled  # only live while decoding
    run_question(at, "Is the <b>star</b> small? ![x](http://example.invalid/x.png)", max_new=8)
    rows = list(store.list_traces(limit=10))
    assert len(rows) == 1
    trace = store.get_trace(rows[0]["trace_id"] if isinstance(rows[0], dict) else rows[0].trace_id)
    assert trace.status == "complete" and 1 <= len(trace.steps) <= 8
    assert trace.question.startswith("Is the <b>star</b>")
    # the app switched to the viewer showing the new trace
    assert at.title[0].value == "Trace viewer"
    assert at.selectbox(key="trace_select").value == trace.trace_id
    assert int(at.session_state["step"]) == 0  # the canvas opens the new trace at its first step
    for el in list(at.markdown) + list(at.caption):  # the question is shown escaped, never as HTML
        assert not el.proto.allow_html and "<b>star</b>" not in el.value


def test_sampling_settings_are_recorded(app_env):
    store = app_env
    at = open_run_page()
    assert at.slider(key="temperature").disabled  # greedy: sampling knobs are off
    at.radio(key="decoding").set_value("sampling").run()
    at.slider(key="temperature").set_value(1.5)
    at.slider(key="top_p").set_value(0.8)
    at.number_input(key="repetition_penalty").set_value(1.1)
    run_question(at, "What shape is the green object?", max_new=6, sampling=True)
    (row,) = list(store.list_traces(limit=10))
    trace = store.get_trace(row["trace_id"] if isinstance(row, dict) else row.trace_id)
    s = trace.settings
    assert s.do_sample and s.temperature == pytest.approx(1.5) and s.top_p == pytest.approx(0.8)
    assert s.seed == 3 and s.repetition_penalty == pytest.approx(1.1) and s.max_new_tokens == 6


def test_bundled_photo_and_question_prefill(app_env):
    at = open_run_page()
    at.selectbox(key="gallery_key").set_value("chelsea").run()
    no_exceptions(at)
    assert at.text_area(key="question").value == "What colour are the cat's eyes?"
    assert at.get("imgs") or at.get("image")


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png() -> bytes:
    """A tiny PNG whose header declares 60000×60000 pixels (a decompression bomb)."""
    data = bytearray(_png(1, 1))
    ihdr = struct.pack(">II", 60000, 60000) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "cannot be used"),
        ("notes.png", b"hello, I am text", "not an image"),
        ("bomb.png", _bomb_png(), "decompression bomb"),
        ("tiny.png", _png(10, 10), "at least"),
    ],
)
def test_bad_uploads_get_a_clear_message(app_env, name, content, message):
    at = open_run_page()
    at.radio(key="image_source").set_value("Upload").run()
    at.get("file_uploader")[0].upload(name, content, "image/png").run()
    no_exceptions(at)
    if message == "at least":  # readable but too small for the model: refused when running
        at.button(key="run").click().run()
        no_exceptions(at)
    errors = " ".join(e.value for e in at.error)
    assert message in errors, errors
    assert at.title[0].value == "Run v1"


def test_upload_with_exif_rotation_runs(app_env):
    store = app_env
    img = Image.new("RGB", (120, 60), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW when displayed
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    at = open_run_page()
    at.radio(key="image_source").set_value("Upload").run()
    at.get("file_uploader")[0].upload("phone.jpg", buf.getvalue(), "image/jpeg").run()
    no_exceptions(at)
    run_question(at, "What colour is it?", max_new=3)
    (row,) = list(store.list_traces(limit=10))
    trace = store.get_trace(row["trace_id"] if isinstance(row, dict) else row.trace_id)
    assert tuple(trace.image_size) == (60, 120)  # the model saw the upright picture


def test_second_run_waits_in_the_queue(app_env):
    from app import resources

    gate = resources.generation_gate()
    held = threading.Event()
    released: list[float] = []

    def other_user():
        with gate.hold("another user"):
            held.set()
            time.sleep(1.5)
            released.append(time.perf_counter())

    t = threading.Thread(target=other_user)
    t.start()
    held.wait(5)
    at = open_run_page()
    run_question(at, max_new=3)
    finished = time.perf_counter()
    t.join()
    assert released and finished >= released[0]  # our run could only finish after the other one let go
    assert at.title[0].value == "Trace viewer"


def test_missing_model_is_explained(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("V1STUDIO_MODEL", str(tmp_path / "no-such-model"))
    at = open_run_page()
    assert any("could not be loaded" in e.value for e in at.error)
    assert any("no v1 checkpoint" in c.value for c in at.code)


def test_first_start_seeds_demo_traces(app_env, monkeypatch):
    store = app_env
    monkeypatch.setenv("V1STUDIO_SEED_TRACES", "1")
    at = app_test()
    at.run()
    no_exceptions(at)
    rows = list(store.list_traces(limit=10))
    assert len(rows) == 1
    assert at.title[0].value == "Trace viewer"
    assert not any("No traces yet" in i.value for i in at.info)
