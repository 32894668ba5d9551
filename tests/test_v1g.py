"""The v1g format module: reading rows, key expansion, re-keying traces back into rows, the prompt the model saw.

Parity with the official training code on published rows is in test_v1g_collate.py; this file covers the
behaviour those rows do not exercise (live traces, corrections, added revisits, bad input, the older layout).
"""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from v1core import v1g
from v1core.copy_tokens import copy_token
from v1core.geometry import PatchGrid, TrainingGeometry
from v1core.trace import Trace

GEO = TrainingGeometry.for_image(1024, 768)  # trains on 18x24, infers on 27x37


def _row(gpt: str, regions: dict, human: str = "<image>\nWhat is it?", size=(1024, 768), **extra) -> dict:
    return {"id": "42", "image_size": list(size), "regions": json.dumps(regions), "num_tokens": 9,
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}], **extra}


def _markup(key: str | None, box_text: str, copies) -> str:
    return f"{key or ''}<region>{box_text}" + "".join(copy_token(k) for k in copies) + "</region>"


# ----------------------------------------------------------------------------- reading
def test_parse_row_reads_the_published_layout_and_keeps_numbers_as_written() -> None:
    raw = _row('detect(query="a", objects=["<obj1>"])', {"<obj1>": [1, 2.5, 30, 40.0]})
    row = v1g.parse_row(raw)
    assert (row.id, row.user_text, row.image_size, row.num_tokens) == ("42", "What is it?", (1024, 768), 9)
    assert row.regions == {"<obj1>": [1, 2.5, 30, 40.0]}
    assert [type(v) for v in row.regions["<obj1>"]] == [int, float, int, float]
    assert row.to_dict(image=None) == {**raw, "image": None}


def test_parse_row_reads_the_older_jsonl_export_too() -> None:
    raw = {"id": "abc", "region": {"<obj0>": [0, 0, 10, 10]}, "image_size": [64, 64],
           "conversation": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
                            {"role": "assistant", "content": 'detect(query="x", objects=["<obj0>"])'}]}
    row = v1g.parse_row(raw)
    assert (row.system_prompt, row.user_text, row.regions) == ("Be brief.", "Q?", {"<obj0>": [0, 0, 10, 10]})
    assert row.conversations()[0] == {"from": "human", "value": "<image>\nQ?"}  # written in the published layout


@pytest.mark.parametrize(("change", "message"), [
    ({"conversations": [{"from": "gpt", "value": "x"}]}, "exactly a human turn then a gpt turn"),
    ({"conversations": [{"from": "human", "value": "no image"}, {"from": "gpt", "value": "x"}]}, "must start with"),
    ({"regions": "{not json"}, "regions is not valid JSON"),
    ({"regions": json.dumps({"obj1": [0, 0, 1, 1]})}, "not an object key like '<obj1>'"),
    ({"regions": json.dumps({"<obj1>": [0, 0, 1]})}, r"must be \[x1, y1, x2, y2\] numbers"),
    ({"regions": json.dumps({"<obj1>": [0, 0, True, 1]})}, r"must be \[x1, y1, x2, y2\] numbers"),
    ({"image_size": [0, 5]}, "image_size must be positive"),
    ({"image_size": "wide"}, r"image_size must be \[width, height\]"),
    ({"num_tokens": "many"}, "num_tokens must be an integer"),
])
def test_bad_rows_get_a_clear_error(change: dict, message: str) -> None:
    raw = {**_row('detect(query="a", objects=["<obj1>"])', {"<obj1>": [0, 0, 1, 1]}), **change}
    with pytest.raises(v1g.V1GFormatError, match=message):
        v1g.parse_row(raw)
    with pytest.raises(v1g.V1GFormatError, match="needs `conversations`"):
        v1g.parse_row({"id": 1})


def test_regions_string_is_kept_byte_for_byte_when_unchanged() -> None:
    odd = '{"<obj1>":[1,2,3,4]}'  # not json.dumps spacing
    assert v1g.dumps_regions({"<obj1>": [1, 2, 3, 4]}, odd) == odd
    assert v1g.dumps_regions({"<obj1>": [1, 2, 3, 5]}, odd) == '{"<obj1>": [1, 2, 3, 5]}'
    assert v1g.dumps_regions({"<obj1>": [1.0, 2, 3, 4]}, odd) == '{"<obj1>": [1.0, 2, 3, 4]}'  # a type change shows


# ----------------------------------------------------------------------------- the question
def test_user_text_is_the_one_place_the_prompt_suffix_is_added() -> None:
    assert v1g.user_text("Q?") == "Q?" + v1g.PAPER_PROMPT_SUFFIX
    assert v1g.split_user_text("Q?" + v1g.PAPER_PROMPT_SUFFIX) == ("Q?", v1g.PAPER_PROMPT_SUFFIX)
    assert v1g.split_user_text("Q?") == ("Q?", "")
    for text in ("Q?", "Q?" + v1g.PAPER_PROMPT_SUFFIX, v1g.PAPER_PROMPT_SUFFIX, ""):
        assert v1g.user_text(*v1g.split_user_text(text)) == text


def test_the_processor_builds_its_user_turn_with_it() -> None:
    from v1core.demo.tokenizer import build_demo_tokenizer
    from v1core.demo.model import demo_processor

    processor = demo_processor(*build_demo_tokenizer(n_copy_tokens=16))
    processor.prompt_suffix = " (think first)"
    text = processor.decode(processor.prompt_ids("Q?", 6))
    turn = v1g.user_text("Q?", " (think first)")
    assert text.endswith("<|vision_end|>" + turn + "<|im_end|>\n<|im_start|>assistant\n")


def test_live_traces_record_the_suffix_they_were_asked_with() -> None:
    from tests.helpers import fixture_model, fixture_processor
    from v1core.generation import TraceRun
    from v1core.trace import DecodingSettings

    processor = fixture_processor()
    processor.prompt_suffix = " (think first)"
    run = TraceRun(fixture_model(), processor, Image.new("RGB", (56, 84), "white"), "Q?",
                   DecodingSettings(max_new_tokens=3))
    trace = run.trace
    assert trace.meta["prompt_suffix"] == " (think first)"
    assert v1g.user_text_of(trace) == "Q? (think first)"
    assert v1g.row_from_trace(trace).user_text == "Q? (think first)"  # the export's human turn: what it saw
    legacy = Trace.from_dict({**trace.to_dict(), "meta": {}})  # a trace recorded before the suffix was kept
    assert v1g.user_text_of(legacy) == "Q?" + v1g.PAPER_PROMPT_SUFFIX


def test_an_imported_row_keeps_its_user_text_and_asks_its_question() -> None:
    raw = _row('detect(query="a", objects=["<obj1>"])', {"<obj1>": [0, 0, 50, 50]},
               human="<image>\nWhich?" + v1g.PAPER_PROMPT_SUFFIX)
    row = v1g.parse_row(raw)
    assert row.question == "Which?"  # what the batch tracer re-asks (the processor adds the suffix once)
    trace = v1g.trace_from_row(row)
    assert trace.question == "Which?" and v1g.user_text_of(trace) == "Which?" + v1g.PAPER_PROMPT_SUFFIX
    assert v1g.row_from_trace(trace).to_dict(image=None) == {**raw, "image": None}


# ----------------------------------------------------------------------------- expansion
def test_keep_key_expansion_and_literal_keys() -> None:
    row = v1g.parse_row(_row('detect(query="a", objects=["<obj1>"]) <obj1> <obj7>', {"<obj1>": [0, 0, 50, 50]},
                             human="<image>\nIs <obj1> red?"))
    user, gpt = row.expanded(GEO, keep_key=True)
    mk = v1g.region_markup([0, 0, 50, 50], GEO, "<obj1>")
    # 50 px of 1024 -> ceil(32.8) = 33 dataset px -> 1.18 cells: the box touches columns 0-1 and rows 0-1
    assert mk == "<obj1><region>[0.00, 0.00, 0.05, 0.07]<|copy_0|><|copy_1|><|copy_24|><|copy_25|></region>"
    assert user == f"Is {mk} red?" and gpt == f'detect(query="a", objects=["{mk}"]) {mk} <obj7>'
    assert row.expanded(GEO)[1].count("<obj1>") == 0 and "<obj7>" in row.expanded(GEO)[1]


def test_a_key_only_in_the_human_turn_is_used() -> None:
    row = v1g.parse_row(_row("It is red.", {"<obj1>": [0, 0, 50, 50]}, human="<image>\nIs <obj1> red?"))
    user, gpt = row.expanded(GEO)
    assert "<region>" in user and gpt == "It is red."
    trace = v1g.trace_from_row(row)
    back = v1g.row_from_trace(trace)
    assert back.regions == {"<obj1>": [0, 0, 50, 50]} and back.user_text == "Is <obj1> red?"


# ----------------------------------------------------------------------------- re-keying
def test_find_regions_sees_every_markup_with_its_context() -> None:
    text = ('detect(query="the \\"red\\" cup", objects=["<obj3><region>[0.10, 0.20, 0.30, 0.40]<|copy_5|></region>"]) '
            'then <region>[bad]<|copy_6|><|copy_7|></region>.')
    a, b = v1g.find_regions(text)
    assert (a.key, a.box_text, a.normalized_box, a.copies, a.in_detect, a.query) == (
        "<obj3>", "0.10, 0.20, 0.30, 0.40", (0.1, 0.2, 0.3, 0.4), (5,), True, 'the "red" cup')
    assert (b.key, b.normalized_box, b.copies, b.in_detect, b.query) == (None, None, (6, 7), False, None)
    assert text[a.start:a.end].startswith("<obj3><region>") and text[b.start:b.end].endswith("</region>")


def test_rekey_groups_recurrences_and_separates_reused_keys() -> None:
    r1, r2 = _markup("<obj1>", "[0.1, 0.1, 0.2, 0.2]", [1, 2]), _markup("<obj1>", "[0.5, 0.5, 0.6, 0.6]", [9])
    bare = _markup(None, "[0.7, 0.7, 0.8, 0.8]", [30])
    text = f"a {r1} b {r1} c {r2} d {bare} e {bare} f <obj4>"
    boxes = {(1, 2): [1, 1, 2, 2], (9,): [5, 5, 6, 6], (30,): [7, 7, 8, 8]}
    rk = v1g.rekey(text, fallback=lambda sp: boxes[sp.copies])
    # <obj1> recurs (same markup): one key; a second <obj1> with other markup is another object; bare markup too.
    # Fresh keys come after every <objN> of the text (<obj4> is literal text and stays).
    assert rk.text == "a <obj1> b <obj1> c <obj5> d <obj6> e <obj6> f <obj4>"
    assert rk.regions == {"<obj1>": [1, 1, 2, 2], "<obj5>": [5, 5, 6, 6], "<obj6>": [7, 7, 8, 8]}
    assert rk.keys == ("<obj1>", "<obj1>", "<obj5>", "<obj6>", "<obj6>") and rk.unplaced == []


def test_rekey_corrections_and_their_conflicts() -> None:
    r1 = _markup("<obj2>", "[0.1, 0.1, 0.2, 0.2]", [1])
    text = f"{r1} and {r1}"
    rk = v1g.rekey(text, known={"<obj2>": [1, 1, 2, 2]}, corrections={1: [3, 3, 4, 4]})
    assert rk.text == "<obj2> and <obj2>" and rk.regions == {"<obj2>": [3, 3, 4, 4]}  # every occurrence
    assert v1g.rekey(text, known={"<obj2>": [1, 1, 2, 2]}, corrections={0: [3, 3, 4, 4], 1: [3, 3, 4, 4]}).regions \
        == {"<obj2>": [3, 3, 4, 4]}
    with pytest.raises(v1g.V1GFormatError, match="<obj2> occurs 2 times .* different boxes"):
        v1g.rekey(text, corrections={0: [3, 3, 4, 4], 1: [5, 5, 6, 6]})
    with pytest.raises(v1g.V1GFormatError, match="correction for region 2, but the text has 2"):
        v1g.rekey(text, corrections={2: [3, 3, 4, 4]})


def test_rekey_leaves_regions_without_a_box_as_written() -> None:
    text = "x " + _markup(None, "[?]", [3]) + " y"
    rk = v1g.rekey(text)
    assert rk.text == text and rk.regions == {} and rk.unplaced == [0]


def test_added_regions_get_fresh_keys_spaces_and_never_land_inside_a_call() -> None:
    r = _markup("<obj1>", "[0.1, 0.1, 0.2, 0.2]", [1])
    text = f'I look about detect(query="cup", objects=["{r}"]) it.'
    rk = v1g.rekey(text, known={"<obj1>": [1, 1, 2, 2]},
                   added=[(12, "plate", [5, 5, 9, 9]), (20, 'the "mug"', [6, 6, 7, 7])])
    assert rk.text == ('I look about detect(query="plate", objects=["<obj2>"]) detect(query="cup", objects=["<obj1>"]) '
                       'detect(query="the \\"mug\\"", objects=["<obj3>"]) it.')
    assert rk.regions == {"<obj1>": [1, 1, 2, 2], "<obj2>": [5, 5, 9, 9], "<obj3>": [6, 6, 7, 7]}
    assert rk.added_keys == ("<obj2>", "<obj3>")
    glued = v1g.rekey("aboutit", added=[(5, "q", [0, 0, 1, 1])]).text
    assert glued == 'about detect(query="q", objects=["<obj1>"]) it'


# ----------------------------------------------------------------------------- live traces
def _live_trace(regions_cells: list[list[int]], *, keyed: bool = False) -> Trace:
    """A generated trace of a 1024x768 image (inference grid 27x37) whose text holds one region per cell list."""
    grid = PatchGrid.for_image(1024, 768)
    parts = ["<think>I look."]
    for n, cells in enumerate(regions_cells):
        key = f"<obj{n}>" if keyed else None
        markup = _markup(key, grid.region_text(grid.patches_to_box(cells)), cells)
        parts.append(f' detect(query="thing {n}", objects=["{markup}"])')
    parts.append(" Done.</think>yes")
    text = "".join(parts)
    return Trace(model_id="m", image_sha256="", image_size=(1024, 768), resized_size=grid.resized, grid=grid.shape,
                 question="Which?", steps=v1g.steps_from_text(text, 1000), output_text=text, source="generated",
                 prompt_tokens=100, meta={"prompt_suffix": v1g.PAPER_PROMPT_SUFFIX}, trace_id="ab" * 16)


def test_a_live_trace_exports_on_the_training_grid() -> None:
    inf = PatchGrid.for_image(1024, 768)
    cells = [r * 37 + c for r in range(10, 13) for c in range(20, 24)]
    trace = _live_trace([cells, [0]])
    row = v1g.row_from_trace(trace)
    assert row.id == v1g.numeric_id(trace.trace_id) and int(row.id) >= 0
    assert row.user_text == "Which?" + v1g.PAPER_PROMPT_SUFFIX
    assert row.gpt_text == ('<think>I look. detect(query="thing 0", objects=["<obj1>"]) '
                            'detect(query="thing 1", objects=["<obj2>"]) Done.</think>yes')
    assert row.regions["<obj1>"] == list(GEO.region_for_cells(cells, grid=inf).box) == [554, 285, 664, 369]
    _, gpt = row.expanded(GEO)
    ids = [int(k) for k in re.findall(r"<\|copy_(\d+)\|>", gpt)]
    assert max(ids) < GEO.n_patches  # no inference-grid id survives into the training text
    assert row.num_tokens == 100 + len(trace.steps)


def test_a_live_correction_drawn_on_the_inference_grid() -> None:
    inf = PatchGrid.for_image(1024, 768)
    trace = _live_trace([[0], [5]], keyed=True)  # the demo model's form: <obj0><region>…
    fix = [r * 37 + c for r in range(10, 13) for c in range(20, 24)]
    row = v1g.row_from_trace(trace, corrections={1: v1g.RegionEdit(patches=fix)},
                             added=[v1g.AddedRegion(step=0, query="cup", box=[10.123, 20, 30, 40])])
    assert row.regions["<obj1>"] == list(GEO.region_for_cells(fix, grid=inf).box)
    assert row.regions["<obj0>"] == list(GEO.region_for_cells([0], grid=inf).box)
    assert row.regions["<obj2>"] == [10.12, 20, 30, 40]
    assert row.gpt_text.startswith('detect(query="cup", objects=["<obj2>"]) <think>I look.')
    with pytest.raises(v1g.V1GFormatError, match="revisit 5 does not exist"):
        v1g.row_from_trace(trace, corrections={5: [0, 0, 1, 1]})


def test_an_imported_correction_given_as_cells_maps_back_exactly() -> None:
    raw = _row('detect(query="a", objects=["<obj1>"]) so <obj1>.', {"<obj1>": [454, 480, 719, 612]})
    trace = v1g.trace_from_row(v1g.parse_row(raw))
    assert trace.grid == GEO.shape and trace.patch_grid() == GEO.grid
    row = v1g.row_from_trace(trace, corrections={0: v1g.RegionEdit(patches=[25, 26, 49, 50])})
    assert GEO.copy_ids(row.regions["<obj1>"]) == [25, 26, 49, 50]
    assert row.gpt_text == raw["conversations"][1]["value"] and row.num_tokens != 9  # recounted once changed


def test_a_correction_outside_any_region_is_refused() -> None:
    text = "I copy " + copy_token(3) + " loose."
    grid = PatchGrid.for_image(1024, 768)
    trace = Trace(model_id="m", image_sha256="", image_size=(1024, 768), resized_size=grid.resized, grid=grid.shape,
                  question="Q", steps=v1g.steps_from_text(text, 1000), output_text=text)
    with pytest.raises(v1g.V1GFormatError, match="revisit 0 is not inside a <region>"):
        v1g.row_from_trace(trace, corrections={0: [0, 0, 5, 5]})


def test_steps_from_text_concatenate_to_the_text() -> None:
    text = "a<|copy_3|><|copy_4|>b c<|copy_0|>"
    steps = v1g.steps_from_text(text, 100)
    assert "".join(s.text for s in steps) == text
    assert [(s.is_copy, s.patch, s.token_id) for s in steps] == [
        (False, None, -1), (True, 3, 103), (True, 4, 104), (False, None, -1), (True, 0, 100)]


def test_the_batch_tracer_re_asks_v1g_questions(tmp_path) -> None:
    from pathlib import Path

    from v1core.batch import iter_items

    fixture = Path(__file__).parent / "fixtures" / "v1g-collate" / "rows.parquet"
    items = list(iter_items(fixture))
    assert len(items) == 12 and not [it.error for it in items if it.error]
    assert items[0].question == "Which is larger, the cyan block or the red patch?"
    assert items[0].meta["row_id"] == "6205" and items[0].image.size == (640, 480)
    (tmp_path / "a.png").write_bytes(b"")
    lines = [json.dumps(_row("x", {}, human="<image>\nQ?" + v1g.PAPER_PROMPT_SUFFIX, image="a.png")),
             json.dumps(_row("x", {}, human="no placeholder", image="a.png"))]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    good, bad = list(iter_items(tmp_path / "rows.jsonl"))
    assert good.question == "Q?"  # the processor adds the suffix again, once
    assert bad.error and "must start with '<image>\\n'" in bad.error


def test_a_store_that_reorders_json_keys_still_round_trips() -> None:
    # PostgreSQL JSONB, for one, sorts object keys; the regions' source string kept in meta keeps their order
    raw = _row('detect(query="b", objects=["<obj2>"]) detect(query="a", objects=["<obj1>"])',
               {"<obj2>": [5, 5, 60.5, 60], "<obj1>": [0, 0, 50, 50]})
    trace = v1g.trace_from_row(v1g.parse_row(raw))
    trace.meta["v1g_regions"] = dict(sorted(trace.meta["v1g_regions"].items()))
    assert v1g.row_from_trace(trace).to_dict(image=None) == {**raw, "image": None}
    del trace.meta["v1g_regions_json"]  # a trace imported before the string was kept: the dict, as stored
    assert list(v1g.row_from_trace(trace).regions) == ["<obj1>", "<obj2>"]
