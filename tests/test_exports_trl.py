"""`export preferences` read by TRL as it is: conversational vision preference rows under any hash seed, and a
real `trl.DPOTrainer` (TRL 1.16) over the demo model building its first batch from the exported parquet.

What the DPOTrainer test does, exactly: the demo checkpoint's own tokenizer and image processor
(`v1core/demo/checkpoint`) become a transformers `Qwen2_5_VLProcessor` — minus its video processor, which needs
torchvision (not installed; v1 has no video input) — because TRL takes a `ProcessorMixin` as processing class.
`DPOTrainer(model=demo model, ref_model=a copy of it, train_dataset=the export, processing_class=processor)`
is constructed and the first batch is drawn from `trainer.get_train_dataloader()` (TRL's own tokenisation and
`DataCollatorForVisionPreference`). No optimiser step is taken.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import Annotation, Store
from storage.preferences import export_preferences
from tests.builders import make_trace, png_bytes
from v1core import v1g

ROOT = Path(__file__).resolve().parents[1]
SIZE = (160, 120)


@pytest.fixture
def pairs_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    sha = store.put_image(png_bytes(SIZE), *SIZE, "PNG")
    kw = dict(image_size=SIZE, boxes=(("square", (20, 20, 80, 70)),), image_sha256=sha, pointers=False)
    pairs = []
    for i in range(3):
        parent = make_trace(seed=i, answer="blue", **kw)
        child = make_trace(seed=10 + i, answer="red", parent_id=parent.trace_id, branch_step=4,
                           branch_edit={"kind": "insert", "step": 4, "patches": [0, 1]},
                           **kw)
        store.save_trace(parent)
        store.save_trace(child)
        store.save_annotation(parent.trace_id, Annotation(annotator="ana", verdict="incorrect", answer_correct=False))
        store.save_annotation(child.trace_id, Annotation(annotator="ana", verdict="correct", answer_correct=True))
        pairs.append((parent, child))
    # both right: no pair; a branch not judged right: no pair
    p2 = make_trace(seed=50, **kw)
    c2 = make_trace(seed=51, parent_id=p2.trace_id, branch_step=2, **kw)
    c3 = make_trace(seed=52, parent_id=p2.trace_id, branch_step=3, **kw)
    for t in (p2, c2, c3):
        store.save_trace(t)
    store.save_annotation(p2.trace_id, Annotation(annotator="ana", verdict="correct"))
    store.save_annotation(c2.trace_id, Annotation(annotator="ana", verdict="correct"))
    store.save_annotation(c3.trace_id, Annotation(annotator="ana", verdict="incorrect"))
    yield store, pairs
    store.close()


def test_preference_rows_are_trl_conversational_vision_rows(pairs_store, tmp_path):
    import datasets

    store, pairs = pairs_store
    out = tmp_path / "prefs.parquet"
    rep = export_preferences(store, out)
    assert rep.rows == 3 and not rep.skipped
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "c"))
    assert isinstance(ds.features["images"], datasets.List) and isinstance(ds.features["images"].feature,
                                                                             datasets.Image)
    by_id = {r["id"]: r for r in ds}
    for parent, child in pairs:
        row = by_id[f"{parent.trace_id}>{child.trace_id}"]
        (img,) = row["images"]
        assert img.size == SIZE
        system, user = row["prompt"]
        assert system["role"] == "system" and system["content"][0]["text"] == child.system_prompt
        assert user["role"] == "user" and user["content"][0]["type"] == "image"
        assert user["content"][1]["text"] == child.question + v1g.PAPER_PROMPT_SUFFIX  # the exact prompt
        assert "<image>" not in user["content"][1]["text"]
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
        assert row["chosen"][0]["content"][0]["text"] == child.output_text
        assert row["rejected"][0]["content"][0]["text"] == parent.output_text
        assert json.loads(row["edit"])["patches"] == [0, 1] and row["branch_step"] == 4
    # the JSONL form: images as paths beside the file, the same message lists
    jl = tmp_path / "j" / "prefs.jsonl"
    assert export_preferences(store, jl).rows == 3
    rows = [json.loads(line) for line in jl.read_text().splitlines()]
    assert all((jl.parent / r["images"][0]).read_bytes() == png_bytes(SIZE) for r in rows)
    assert {r["id"] for r in rows} == set(by_id)
    with pytest.raises(ValueError, match="parquet"):
        export_preferences(store, tmp_path / "e.jsonl", images="embed")


CHECK = """
import json, sys
import datasets
from trl.data_utils import is_conversational
rows = [json.loads(line) for line in open(sys.argv[1])]
ds = datasets.load_dataset("parquet", data_files=sys.argv[2], split="train", cache_dir=sys.argv[3])
flags = [is_conversational(r) for r in rows] + [is_conversational(r) for r in ds]
keys = [{k for k in ("prompt", "chosen", "rejected") if k in r} for r in rows]
print(json.dumps({"flags": flags, "keys": [sorted(k) for k in keys]}))
"""


def test_is_conversational_under_any_hash_seed(pairs_store, tmp_path):
    """`is_conversational` pops one key from a set (order depends on PYTHONHASHSEED): every seed must say yes."""
    store, _ = pairs_store
    export_preferences(store, tmp_path / "p.jsonl")
    export_preferences(store, tmp_path / "p.parquet")
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
        res = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "p.jsonl"), str(tmp_path / "p.parquet"),
                              str(tmp_path / f"c{seed}")], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        got = json.loads(res.stdout.strip().splitlines()[-1])
        assert got["flags"] == [True] * 6, (seed, got)
        assert got["keys"] == [["chosen", "prompt", "rejected"]] * 3


def _demo_vl_processor():
    """The demo checkpoint's tokenizer + image processor as a transformers `Qwen2_5_VLProcessor` without its video
    processor (which needs torchvision, not installed): the `ProcessorMixin` TRL requires."""
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from v1core.loading import DEMO_CHECKPOINT

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        @classmethod
        def get_attributes(cls):
            return ["image_processor", "tokenizer"]

    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(DEMO_CHECKPOINT),
        tokenizer=AutoTokenizer.from_pretrained(DEMO_CHECKPOINT),
        chat_template=(DEMO_CHECKPOINT / "chat_template.jinja").read_text())


def test_dpo_trainer_builds_its_first_batch_from_the_export(pairs_store, tmp_path):
    import datasets
    from trl import DPOConfig, DPOTrainer

    from v1core.loading import load_model

    store, pairs = pairs_store
    out = tmp_path / "prefs.parquet"
    export_preferences(store, out)
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "c"))
    model, v1proc = load_model(device="cpu")
    processor = _demo_vl_processor()
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, report_to=[], max_steps=1,
                     use_cpu=True, dataloader_num_workers=0, seed=0)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds,
                         processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, mask, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    assert ids.shape[0] == 4  # 2 examples × (chosen, rejected)
    assert ids.shape == mask.shape == completion.shape
    grid_cells = int(batch["image_grid_thw"].prod(dim=1).sum()) // 4  # merged patches (2×2 patches each)
    assert int((ids == model.config.image_token_id).sum()) == grid_cells
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())
    tok = processor.tokenizer
    by_text = {p.output_text: p for p, _ in pairs} | {c.output_text: c for _, c in pairs}
    for row in range(4):
        text = tok.decode(ids[row][mask[row].bool()])
        assert pairs[0][1].question + v1g.PAPER_PROMPT_SUFFIX in text  # the prompt the model saw
        done = tok.decode(ids[row][completion[row].bool()])
        assert any(done.startswith(t) for t in by_text), done  # the completion is a chosen / rejected output
    # the copy tokens of the outputs reach the model as v1's copy ids (≥ copy_token_start), not as text
    assert int((ids >= model.config.copy_token_start).sum()) > 0
