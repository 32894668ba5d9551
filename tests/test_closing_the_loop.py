"""Closing the loop: fine-tuning the demo model on exported rows with corrected regions moves its pointer there."""

from __future__ import annotations

import json

import pytest
import torch

from v1core.loading import DEMO_CHECKPOINT, load_model

pytestmark = pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").exists(), reason="demo checkpoint not built")


def _first_copy_mass(model, processor, example, patches) -> float:
    """Teacher-forced pointer mass on `patches` where the answer's first copy token is predicted."""
    from v1core.training import collate

    batch = collate([example], processor.tokenizer.pad_token_id)
    with torch.inference_mode():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]
    labels = batch["labels"][0]
    pos = next(i for i in range(1, len(labels)) if labels[i] >= processor.copy_token_start)
    n = int(batch["image_grid_thw"][0].prod()) // 4
    pointer = logits[pos - 1, processor.copy_token_start : processor.copy_token_start + n].softmax(-1)
    return float(pointer[list(patches)].sum())


def test_finetuning_on_corrected_regions_moves_the_pointer_toward_them(tmp_path):
    from v1core.demo.scenes import eval_seeds, make_scene
    from v1core.demo.targets import target_v1g_row
    from v1core.demo.finetune import finetune_from_export, read_v1g_rows, v1g_examples

    rows, corrected = [], []
    for seed in eval_seeds(40, start=400_000):
        scene = make_scene(seed)
        if scene.kind == "compare" or len(scene.objects) < 2:
            continue
        other = next(o for i, o in enumerate(scene.objects) if i not in scene.targets)
        row = target_v1g_row(scene)
        regions = json.loads(row["regions"])
        regions["<obj0>"] = [int(v) for v in other.box]  # the annotator's "correction": another object
        row["regions"] = json.dumps(regions)
        scene.image.save(tmp_path / f"{seed}.png")
        row["image"] = f"{seed}.png"
        rows.append(row)
        corrected.append(scene.grid().bbox_to_patches(other.box))
        if len(rows) == 4:
            break
    export = tmp_path / "export.jsonl"
    export.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    model, processor = load_model()
    examples = v1g_examples(processor, read_v1g_rows(export), image_root=tmp_path)
    before = [_first_copy_mass(model, processor, e, p) for e, p in zip(examples, corrected)]
    res = finetune_from_export(DEMO_CHECKPOINT, export, tmp_path / "tuned", steps=25, lr=5e-4, progress=False)
    assert res["final_loss"] < res["first_loss"]
    tuned, tuned_proc = load_model(tmp_path / "tuned")
    after = [_first_copy_mass(tuned, tuned_proc, e, p) for e, p in zip(examples, corrected)]
    print(f"pointer mass on corrected patches: before {sum(before) / 4:.3f} → after {sum(after) / 4:.3f}")
    assert sum(after) / len(after) > sum(before) / len(before) + 0.2, (before, after)
