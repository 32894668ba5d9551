"""The Trace schema: JSON round trip, compact pointers, revisits with detect() context."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.builders import trace_from_texts
from v1core.trace import Trace, copy_runs, parse_detect_spans, pointers_from_bytes, pointers_to_bytes


DETECT = [('<think>look detect(query="red \\"ball\\"", objects=["<obj0><region>[0.0, 0.0, 0.4, 0.5]', 1),
          ("<|copy_0|>", 1000), ("<|copy_1|>", 1001), ("<|copy_3|>", 1003), ('</region>"]) ok', 2),
          ("<|copy_19|>", 1019), ("</think>red", 3)]


def test_round_trip_json_with_float16_pointers():
    tr = trace_from_texts(DETECT)
    d = json.loads(json.dumps(tr.to_dict()))
    back = Trace.from_dict(d)
    assert back.to_dict() == d  # stable after one quantisation
    assert np.abs(back.pointer_matrix() - tr.pointer_matrix()).max() < 1e-3
    assert back.settings == tr.settings and back.steps[1].patch == 0
    no_ptr = Trace.from_dict(tr.to_dict(include_pointers=False))
    assert not no_ptr.has_pointers


def test_revisits_are_runs_with_separate_boxes_and_detect_context():
    tr = trace_from_texts(DETECT)
    assert copy_runs(tr.steps) == [(1, 4), (5, 6)]
    first, second = tr.revisits
    assert first.patches == [0, 1, 3]
    assert len(first.boxes) == 2  # cells 0-1 touch, cell 3 stands apart
    assert first.query == 'red "ball"' and first.object_name == "obj0" and first.normalized_box == (0.0, 0.0, 0.4, 0.5)
    assert second.query is None and second.patches == [19]
    assert tr.answer == "red"


def test_bare_region_form_is_accepted():
    spans = parse_detect_spans('detect(query="x", objects=["<region>[0.1, 0.2, 0.3, 0.4]<|copy_5|></region>"])')
    assert spans[0]["object_name"] is None and spans[0]["copies"] == [5]


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="missing"):
        Trace.from_dict({"model_id": "m"})
    with pytest.raises(ValueError, match="expected"):
        pointers_from_bytes(b"\x00" * 10, 2, (2, 2))
    assert len(pointers_to_bytes(np.zeros((3, 2, 2)))) == 24


def test_finish_strips_trailing_end_of_sequence_ids_and_settles_the_status():
    tr = trace_from_texts([("a", 1), ("b", 2), ("<eos>", 7), ("<end>", 8)])
    tr.status = "running"
    decoded: list[list[int]] = []

    def decode(ids):
        decoded.append(list(ids))
        return "|".join(map(str, ids))

    assert tr.finish(decode, [8, 7], timings={"total_s": 1.5}) is tr
    assert decoded == [[1, 2]] and tr.output_text == "1|2"  # every trailing eos id, whichever it is
    assert tr.status == "complete" and tr.timings == {"total_s": 1.5}
    mid = trace_from_texts([("a", 7), ("b", 2)])
    mid.status = "running"
    mid.finish(decode, [7], cancelled=True)
    assert mid.output_text == "7|2" and mid.status == "cancelled"  # only trailing ids are dropped
    assert mid.timings == {}  # untouched without timings
    failed = trace_from_texts([("a", 1)])
    failed.status = "failed"
    failed.finish(decode, [])
    assert failed.status == "failed" and failed.output_text == "1"
