"""Branch traces are stored under their parent and become DPO preference pairs once judged."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from storage import Store
from storage.annotations import Annotation
from storage.preferences import export_preferences
from tests.helpers import fixture_model, fixture_processor
from v1core.generation import TraceRun
from v1core.images import load_image
from v1core.intervene import BranchEdit, BranchRun
from v1core.trace import DecodingSettings


def test_branch_is_listed_under_its_parent_and_exported_as_a_preference_pair(tmp_path):
    import io

    model, proc = fixture_model(), fixture_processor()
    model.generation_config.eos_token_id = 2
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, "PNG")
    img = load_image(buf.getvalue())
    parent = TraceRun(model, proc, img.image, "w5", DecodingSettings(max_new_tokens=20, min_new_tokens=20),
                      image_sha256=img.sha256).run()
    child = BranchRun(model, proc, img.image, parent, BranchEdit("insert", step=1, patches=[0, 1])).run()
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.put_image(img.data, img.image.width, img.image.height, "PNG")
    store.save_trace(parent)
    store.save_trace(child)
    kids = store.list_traces(parent_id=parent.trace_id)
    assert [k.id for k in kids] == [child.trace_id] and kids[0].branch_step == 1
    assert store.get_trace(child.trace_id).branch_edit["kind"] == "insert"
    store.save_annotation(parent.trace_id, Annotation(annotator="ann", verdict="incorrect", answer_correct=False))
    store.save_annotation(child.trace_id, Annotation(annotator="ann", verdict="correct", answer_correct=True))
    report = export_preferences(store, tmp_path / "prefs.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    assert report.rows == len(rows) == 1
    row = rows[0]
    assert row["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": child.output_text}]}]
    assert row["rejected"] == [{"role": "assistant", "content": [{"type": "text", "text": parent.output_text}]}]
    (img_path,) = row["images"]
    assert img_path.startswith("images/") and (tmp_path / img_path).exists()
    assert json.loads(row["edit"])["patches"] == [0, 1]
