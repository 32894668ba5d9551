"""Parity with the official v1 training code on the published-layout rows of `fixtures/v1g-collate`.

`expected.json` records what the reference (`jun297/v1` dataset.py + v1/processor.py collate_fn) made of each row
of `rows.parquet`; this project's `v1core.v1g` + `TrainingGeometry` must give the same sizes, grids, boxes, box
texts, copy ids, assistant text and (tokenised with the fixture's processor folder) the same input ids.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from v1core import v1g
from v1core.geometry import TrainingGeometry
from v1core.trace import Trace

FIXTURE = Path(__file__).parent / "fixtures" / "v1g-collate"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
ROWS = pq.read_table(FIXTURE / "rows.parquet").to_pylist()
CASES = list(zip(ROWS, EXPECTED["rows"], strict=True))
IDS = [f"row{e['index']:02d}-{e['id']}" for e in EXPECTED["rows"]]


def test_fixture_is_complete_and_unchanged() -> None:
    assert len(ROWS) == len(EXPECTED["rows"]) == 12
    for name, info in EXPECTED["files"].items():
        data = (FIXTURE / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], name
    assert {c["check"] for c in EXPECTED["checks"]} == {
        "ten_keys", "key_in_user_text", "key_in_regions_missing_from_text", "key_in_text_not_in_regions"}


@pytest.mark.parametrize(("raw", "exp"), CASES, ids=IDS)
def test_row_reads_as_the_reference_reads_it(raw: dict, exp: dict) -> None:
    row = v1g.parse_row(raw)
    assert row.id == exp["id"] and row.human_value == exp["human_value"]
    assert row.user_text == exp["user_text"] and row.gpt_text == exp["gpt_value"]
    assert list(row.image_size) == exp["original_image_size"]
    assert list(row.regions) == list(exp["objects"])  # key order kept
    for key, obj in exp["objects"].items():
        assert row.regions[key] == obj["box_original"]
        assert [type(v) for v in row.regions[key]] == [type(v) for v in obj["box_original"]]  # ints stay ints
        assert row.gpt_text.count(key) == obj["occurrences_in_gpt_value"]


@pytest.mark.parametrize(("raw", "exp"), CASES, ids=IDS)
def test_training_geometry_matches_the_reference(raw: dict, exp: dict) -> None:
    g = v1g.parse_row(raw).training_geometry()
    assert list(g.dataset_size) == exp["dataset_image_size"]
    assert list(g.processor_size) == exp["processor_resized_size"]
    assert list(g.shape) == exp["merged_grid"]
    assert [list(g.image_grid_thw)] == exp["image_grid_thw"]
    assert g.n_patches == exp["n_image_pad_tokens"]
    for key, obj in exp["objects"].items():
        box = obj["box_original"]
        assert list(g.dataset_box(box)) == obj["box_after_dataset"], key
        assert [type(v) for v in g.dataset_box(box)] == [type(v) for v in obj["box_after_dataset"]], key
        assert g.box_text(box) == obj["box_text"], key
        assert g.copy_ids(box) == obj["copy_ids"], key
        region = g.region(box)
        assert (region.box_text, list(region.copy_ids)) == (obj["box_text"], obj["copy_ids"])


@pytest.mark.parametrize(("raw", "exp"), CASES, ids=IDS)
def test_assistant_text_matches_the_reference(raw: dict, exp: dict) -> None:
    row = v1g.parse_row(raw)
    user, assistant = row.expanded()
    assert assistant == exp["assistant_text"]
    assert user == exp["user_text"]  # no key in these rows' human turns
    for key, obj in exp["objects"].items():  # every occurrence, inside detect(...) or not, got the full region
        markup = f"<region>{obj['box_text']}" + "".join(f"<|copy_{k}|>" for k in obj["copy_ids"]) + "</region>"
        assert assistant.count(markup) == obj["occurrences_in_gpt_value"], key


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(FIXTURE / "processor", local_files_only=True)
    tok.add_tokens([f"<|copy_{i}|>" for i in range(30000)])  # as the reference's get_processor does
    assert tok.convert_tokens_to_ids("<|copy_0|>") == EXPECTED["settings"]["copy_token_start"]
    return tok


@pytest.fixture(scope="module")
def chat_template() -> str:
    return json.loads((FIXTURE / "processor" / "chat_template.json").read_text())["chat_template"]


@pytest.mark.parametrize(("raw", "exp"), CASES, ids=IDS)
def test_tokenised_sample_matches_the_reference(raw: dict, exp: dict, tokenizer, chat_template: str) -> None:
    row = v1g.parse_row(raw)
    g = row.training_geometry()
    templated = tokenizer.apply_chat_template(row.messages(expand=False), chat_template=chat_template, tokenize=False)
    assert templated == exp["templated_text"]
    text = tokenizer.apply_chat_template(row.messages(g), chat_template=chat_template, tokenize=False)
    text = text.replace("<|image_pad|>", "<|image_pad|>" * g.n_patches)
    assert len(text) == exp["tokenised_text"]["chars"]
    assert hashlib.sha256(text.encode()).hexdigest() == exp["tokenised_text"]["sha256"]
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == exp["input_ids"]["len"]
    assert hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest() == exp["input_ids"]["sha256"]
    assert ids.count(EXPECTED["settings"]["image_pad_token_id"]) == exp["n_image_pad_tokens"]


def _check_row(check: dict) -> dict:
    return {"id": "1", "image_size": check["image_size"], "regions": json.dumps(check["regions"]),
            "conversations": [{"from": "human", "value": check["human_value"]},
                              {"from": "gpt", "value": check["gpt_value"]}]}


@pytest.mark.parametrize("check", EXPECTED["checks"], ids=[c["check"] for c in EXPECTED["checks"]])
def test_checks(check: dict) -> None:
    row = v1g.parse_row(_check_row(check))
    if check["outcome"] == "AssertionError":  # a regions key missing from the text: the reference refuses the row
        with pytest.raises(v1g.RegionKeyError, match="<obj2> is not used in the text"):
            row.expanded()
        with pytest.raises(v1g.RegionKeyError):
            v1g.trace_from_row(row)  # so does the import, with the reason
        return
    user, assistant = row.expanded()
    assert assistant == check["assistant_text"]
    if "user_turn_after_processor" in check:
        assert user == check["user_turn_after_processor"]
    g = row.training_geometry()
    for key, ids in check.get("copy_ids", {}).items():
        assert g.copy_ids(check["regions"][key]) == ids
    if check["check"] == "ten_keys":  # <obj1> leaves <obj10> alone, and <obj10> recurs in full
        assert assistant.count(v1g.region_markup(check["regions"]["<obj10>"], g)) == 2
    if check["check"] == "key_in_text_not_in_regions":
        assert "<obj2>" in assistant


@pytest.mark.parametrize(("raw", "exp"), CASES, ids=IDS)
def test_published_row_round_trips_through_a_trace(raw: dict, exp: dict) -> None:
    row = v1g.parse_row(raw)
    trace = v1g.trace_from_row(row, image_sha256="0" * 64)
    assert trace.source == "imported" and trace.grid == tuple(exp["merged_grid"])
    assert trace.resized_size == tuple(exp["processor_resized_size"]) and trace.image_size == row.image_size
    assert trace.question == exp["user_text"]
    # the annotation grid is the training grid: every copy id of the imported text is a cell of it
    assert all(s.patch < trace.n_patches for s in trace.steps if s.is_copy)
    assert sum(len(o["copy_ids"]) * o["occurrences_in_gpt_value"] for o in exp["objects"].values()) == sum(
        s.is_copy for s in trace.steps)
    stored = Trace.from_dict(json.loads(json.dumps(trace.to_dict())))  # what a store gives back
    back = v1g.row_from_trace(stored).to_dict(image=raw["image"])
    assert back == raw  # id, conversations, regions string (ints, floats), image_size, num_tokens: all identical
    assert back["regions"] == raw["regions"] and back["id"] == exp["id"]


@pytest.mark.parametrize(("raw", "exp"), CASES, ids=IDS)
def test_a_corrected_region_changes_every_occurrence_of_its_key(raw: dict, exp: dict) -> None:
    trace = v1g.trace_from_row(v1g.parse_row(raw))
    g = TrainingGeometry.from_dict(trace.meta["training_geometry"])
    key = max(exp["objects"], key=lambda k: exp["objects"][k]["occurrences_in_gpt_value"])  # a recurring one
    revisit = next(i for i, rv in enumerate(trace.revisits) if rv.object_name == key.strip("<>"))
    cells = [0, 1, g.shape[1], g.shape[1] + 1]  # the annotator's cells on the trace's (training) grid
    row = v1g.row_from_trace(trace, corrections={revisit: v1g.RegionEdit(patches=cells)})
    assert row.gpt_text == exp["gpt_value"] and row.id == exp["id"]  # the text keeps its keys
    assert list(row.regions) == list(exp["objects"])
    assert g.copy_ids(row.regions[key]) == cells
    others = {k: v for k, v in row.regions.items() if k != key}
    assert others == {k: o["box_original"] for k, o in exp["objects"].items() if k != key}
    _, assistant = row.expanded(g)
    assert assistant.count(v1g.region_markup(row.regions[key], g)) == exp["objects"][key]["occurrences_in_gpt_value"]
    assert v1g.region_markup(exp["objects"][key]["box_original"], g) not in assistant  # the old region is gone


def test_arrow_schema_is_the_published_one() -> None:
    published = pq.read_schema(FIXTURE / "rows.parquet")
    assert v1g.arrow_schema().equals(published, check_metadata=True)


def test_rows_written_with_the_schema_load_back_identically(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa

    rows = [v1g.row_from_trace(v1g.trace_from_row(v1g.parse_row(r))).to_dict(image=r["image"]) for r in ROWS]
    pq.write_table(pa.Table.from_pylist(rows, schema=v1g.arrow_schema()), tmp_path / "train.parquet")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    assert [dict(r) for r in ds] == copy.deepcopy(ROWS)


def test_the_demo_trainer_reads_published_rows_on_the_training_geometry(tokenizer) -> None:
    """`train-demo --from-export` builds its examples with the official geometry: the same grid and the same copy
    ids, every occurrence, as the reference collate (here with the fixture's tokenizer and v1-7B's pixel limits)."""
    from v1core.demo.finetune import v1g_examples
    from v1core.processing_v1 import V1Processor

    ids = tokenizer.convert_tokens_to_ids
    processor = V1Processor(tokenizer, copy_token_start=ids("<|copy_0|>"), copy_token_num=30000,
                            image_token_id=ids("<|image_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                            vision_end_token_id=ids("<|vision_end|>"))
    examples = v1g_examples(processor, copy.deepcopy(ROWS))
    start = processor.copy_token_start
    for ex, (_raw, exp) in zip(examples, CASES, strict=True):
        assert ex.image_grid_thw.tolist() == exp["image_grid_thw"]
        copies = [t - start for t in ex.labels if t >= start]
        want = []
        for key in re.findall(r"<obj\d+>", exp["gpt_value"]):  # in text order, each occurrence in full
            want += exp["objects"][key]["copy_ids"]
        assert copies == want, exp["index"]
