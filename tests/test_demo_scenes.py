"""Synthetic demo scenes and their v1-format targets."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from v1core.demo import scenes as S
from v1core.demo.scenes import (
    DEMO_MAX_PIXELS,
    DEMO_MIN_PIXELS,
    EVAL_SEED_START,
    TRAIN_SEED_RANGE,
    make_scene,
    make_scenes,
)
from v1core.demo.targets import expand_v1g_assistant, expand_v1g_row, target_text, target_v1g_row, v1g_question
from v1core.geometry import PatchGrid
from v1core.trace import COPY_RE, DETECT_RE, parse_detect_spans

SEEDS = list(range(0, 120)) + list(range(EVAL_SEED_START, EVAL_SEED_START + 40))


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(s) for s in SEEDS]


# ----------------------------------------------------------------------------- scenes
def test_constants():
    assert DEMO_MIN_PIXELS == 28 * 28 * 16 and DEMO_MAX_PIXELS == 336 * 336
    assert TRAIN_SEED_RANGE == range(0, 1_000_000) and EVAL_SEED_START == 10_000_000
    assert EVAL_SEED_START not in TRAIN_SEED_RANGE
    assert S.split_of(5) == "train" and S.split_of(EVAL_SEED_START + 3) == "eval" and S.split_of(2_000_000) == "unused"
    assert len(S.SHAPES) >= 4 and len(S.COLOURS) >= 5 and len(S.KINDS) >= 3


def test_deterministic_by_seed():
    a, b = make_scene(1234), make_scene(1234)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.to_dict() == b.to_dict()
    c = make_scene(1235)
    assert a.to_dict() != c.to_dict()
    # skipping the drawing changes nothing else
    assert make_scene(1234, with_image=False).to_dict() == a.to_dict()
    assert [s.to_dict() for s in make_scenes(40, 3)] == [make_scene(s).to_dict() for s in (40, 41, 42)]


def test_sizes_and_objects(scenes):
    widths, heights = set(), set()
    for sc in scenes:
        assert sc.image.mode == "RGB" and sc.image.size == (sc.width, sc.height)
        assert 196 <= sc.width <= 336 and 196 <= sc.height <= 336
        widths.add(sc.width)
        heights.add(sc.height)
        assert 2 <= len(sc.objects) <= 6
        for o in sc.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= sc.width and 0 <= y0 < y1 <= sc.height
            assert min(x1 - x0, y1 - y0) >= 40
            assert o.shape in S.SHAPES and o.colour in S.COLOURS and o.size in ("small", "large")
        rows, cols = sc.grid().shape
        assert rows * cols <= 256 and rows <= 16 and cols <= 16
    assert len(widths) > 30 and len(heights) > 30
    assert len({round(sc.width / sc.height, 1) for sc in scenes}) > 10  # aspect varies
    assert {len(sc.objects) for sc in scenes} >= {2, 3, 4, 5}
    assert {sc.kind for sc in scenes} == set(S.KINDS)


def test_custom_side_range():
    for s in range(10):
        sc = make_scene(s, min_side=200, max_side=240)
        assert 200 <= sc.width <= 240 and 200 <= sc.height <= 240
    with pytest.raises(ValueError):
        make_scene(-1)


def _solve(question: str, objects) -> tuple[str, list[int]]:
    """Answer the question from the object list alone, independently of the generator."""
    m = re.fullmatch(r"What colour is the (\w+)\?", question)
    if m:
        (i,) = [k for k, o in enumerate(objects) if o.shape == m.group(1)]  # exactly one
        return objects[i].colour, [i]
    m = re.fullmatch(r"What shape is the (\w+) object\?", question)
    if m:
        (i,) = [k for k, o in enumerate(objects) if o.colour == m.group(1)]
        return objects[i].shape, [i]
    m = re.fullmatch(r"Is the (\w+) small or large\?", question)
    if m:
        (i,) = [k for k, o in enumerate(objects) if o.shape == m.group(1)]
        return objects[i].size, [i]
    m = re.fullmatch(r"Is the (\w+) object bigger than the (\w+) one\?", question)
    if m:
        (i,) = [k for k, o in enumerate(objects) if o.colour == m.group(1)]
        (j,) = [k for k, o in enumerate(objects) if o.colour == m.group(2)]
        a, b = objects[i].box, objects[j].box
        assert objects[i].size != objects[j].size
        bigger = (a[2] - a[0]) * (a[3] - a[1]) > (b[2] - b[0]) * (b[3] - b[1])
        return ("yes" if bigger else "no"), [i, j]
    raise AssertionError(f"unexpected question {question!r}")


def test_questions_are_unique_and_answerable(scenes):
    for sc in scenes:
        answer, targets = _solve(sc.question, sc.objects)
        assert answer == sc.answer, (sc.seed, sc.question)
        assert targets == sc.targets and sc.target == targets[0]
    answers = {sc.answer for sc in scenes if sc.kind == "compare"}
    assert answers == {"yes", "no"}


def test_ask_again_asks_another_answerable_question_about_the_same_pixels(scenes):
    from collections import Counter

    kinds = Counter()
    for sc in scenes:
        other = S.ask_again(sc, np.random.default_rng(sc.seed))
        if other is None:
            continue
        assert other.question != sc.question and other.image is sc.image and other.objects == sc.objects
        answer, targets = _solve(other.question, other.objects)
        assert (other.answer, other.targets) == (answer, targets), (sc.seed, other.question)
        kinds[other.kind] += 1
    assert sum(kinds.values()) >= 0.9 * len(scenes)
    # objects named by their shape (colour / size questions) are asked about more often: the model's weak spot
    assert kinds["colour"] + kinds["size"] > 1.5 * (kinds["shape"] + kinds["compare"]), kinds
    again = [S.ask_again(sc, np.random.default_rng(sc.seed)) for sc in scenes[:10]]
    repeated = [S.ask_again(sc, np.random.default_rng(sc.seed)) for sc in scenes[:10]]
    assert [a and a.question for a in again] == [b and b.question for b in repeated]


def test_ask_again_is_none_when_the_objects_answer_nothing_else():
    objects = [S.SceneObject("circle", "red", "small", (0, 0, 50, 50)),
               S.SceneObject("circle", "red", "large", (100, 0, 200, 100))]
    scene = S.Scene(None, 300, 300, objects, "q", "a", [0], ["x"], "colour", 0)
    assert S.ask_again(scene, np.random.default_rng(0)) is None


def test_object_patch_sets_disjoint_and_at_least_2x2(scenes):
    for sc in scenes:
        grid = sc.grid()
        cols = grid.shape[1]
        sets = [set(grid.bbox_to_patches(o.box)) for o in sc.objects]
        for i in range(len(sets)):
            r = {k // cols for k in sets[i]}
            c = {k % cols for k in sets[i]}
            assert len(r) >= 2 and len(c) >= 2
            for j in range(i):
                assert not sets[i] & sets[j], (sc.seed, i, j)


# ----------------------------------------------------------------------------- targets
def test_target_text_format_and_copy_ids(scenes):
    for sc in scenes:
        grid = sc.grid()
        text = target_text(sc, grid)
        assert text == target_text(sc)  # the default grid is the demo grid
        assert text.startswith("<think>") and text.endswith("</think>" + sc.answer)
        spans = parse_detect_spans(text)
        assert len(spans) == len(sc.targets) == len(DETECT_RE.findall(text))
        for k, (sp, idx) in enumerate(zip(spans, sc.targets)):
            box = sc.objects[idx].box
            assert sp["object_name"] == f"obj{k}"
            assert sp["query"] == sc.queries[k]
            assert sp["copies"] == grid.bbox_to_patches(box)
            assert sp["normalized_box"] == grid.normalized_box(box)
            assert f"<obj{k}><region>{grid.region_text(box)}<|copy_" in text
        assert all(int(c) < grid.n_patches for c in COPY_RE.findall(text))


def test_target_text_example():
    sc = make_scene(3)
    grid = sc.grid()
    box = sc.objects[sc.target].box
    copies = "".join(f"<|copy_{p}|>" for p in grid.bbox_to_patches(box))
    assert sc.kind == "colour"
    assert target_text(sc) == (
        f"<think>The question asks about the {sc.queries[0]}. detect(query=\"{sc.queries[0]}\", "
        f"objects=[\"<obj0><region>{grid.region_text(box)}{copies}</region>\"]) "
        f"The {sc.queries[0]} is {sc.answer}.</think>{sc.answer}"
    )


def test_v1g_row_round_trip(scenes):
    for sc in scenes:
        row = target_v1g_row(sc)
        assert set(row) == {"id", "conversations", "regions", "image_size"}
        assert row["image_size"] == [sc.width, sc.height]
        human, gpt = row["conversations"]
        assert human == {"from": "human", "value": f"<image>\n{sc.question}"}
        assert gpt["from"] == "gpt" and "<region>" not in gpt["value"] and "<|copy_" not in gpt["value"]
        assert v1g_question(row) == sc.question
        regions = json.loads(row["regions"])
        assert isinstance(row["regions"], str)
        assert regions == {f"<obj{k}>": list(sc.objects[i].box) for k, i in enumerate(sc.targets)}
        for k in range(len(sc.targets)):
            assert f'objects=["<obj{k}>"]' in gpt["value"]
        grid = PatchGrid.for_image(*row["image_size"], min_pixels=DEMO_MIN_PIXELS, max_pixels=DEMO_MAX_PIXELS)
        expected = target_text(sc, grid)
        assert expand_v1g_assistant(gpt["value"], row["regions"], grid) == expected
        assert expand_v1g_assistant(gpt["value"], regions, grid) == expected  # dict form
        assert expand_v1g_row(row, grid) == expected
    row = target_v1g_row(scenes[0], include_image=True)
    assert row["image"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"


def test_expand_general_rows():
    """Real v1g rows: keys recur in later text, come without brackets, may be absent from `regions`."""
    grid = PatchGrid.for_image(560, 280)  # 10x20 cells of 28 px, no resize
    value = (
        'Look. detect(query="tangent line AB", objects=["<obj1>", "<obj2>"]) So <obj1> meets <obj2>; '
        "<obj3> has no box. <obj12> is another key."
    )
    regions = {"obj1": [0, 0, 56, 28], "<obj2>": [28.5, 30, 60, 50], "<obj12>": [532, 252, 560, 280]}
    out = expand_v1g_assistant(value, json.dumps(regions), grid)
    r1 = "<obj1><region>[0.00, 0.00, 0.10, 0.10]<|copy_0|><|copy_1|></region>"
    r2 = "<obj2><region>[0.05, 0.11, 0.11, 0.18]<|copy_21|><|copy_22|></region>"
    r12 = "<obj12><region>[0.95, 0.90, 1.00, 1.00]<|copy_199|></region>"
    assert out == (
        f'Look. detect(query="tangent line AB", objects=["{r1}", "{r2}"]) So {r1} meets {r2}; '
        f"<obj3> has no box. {r12} is another key."
    )
    assert expand_v1g_assistant(out, regions, grid) == out  # already expanded keys stay as they are
    bare = expand_v1g_assistant('detect(query="x", objects=["<obj1>"])', regions, grid, keep_key=False)
    assert bare == 'detect(query="x", objects=["<region>[0.00, 0.00, 0.10, 0.10]<|copy_0|><|copy_1|></region>"])'
    spans = parse_detect_spans(bare)
    assert spans[0]["object_name"] is None and spans[0]["copies"] == [0, 1]
    assert expand_v1g_assistant("no keys", "", grid) == "no keys"
    assert expand_v1g_assistant("<obj1>", None, grid) == "<obj1>"
    for bad in ('{"<obj1>": [1, 2, 3]}', '{"box": [1, 2, 3, 4]}', "[1, 2, 3, 4]"):
        with pytest.raises(ValueError):
            expand_v1g_assistant("<obj1>", bad, grid)
