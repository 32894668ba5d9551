"""Evaluation of a demo model on held-out scenes: pointer precision / recall, answer accuracy with and without
copying, and where each region's first copy lands (`v1studio eval-demo`)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..modeling_v1 import V1ForConditionalGeneration
from ..processing_v1 import V1Processor
from .scenes import Scene, eval_seeds, make_scene

# The demo's targets on unseen seeds (the model card's status table).
TARGETS = {"pointer_precision": 0.90, "answer_accuracy": 0.90}


def patches_of(scene: Scene, grid: Any) -> set[int]:
    out: set[int] = set()
    for obj in scene.target_objects:
        out.update(grid.bbox_to_patches(obj.box))
    return out


def answer_of(text: str) -> str:
    """Text after the reasoning, up to the end-of-turn token (batched decoding pads finished rows after it)."""
    text = text.split("<|im_end|>", 1)[0]
    text = text.split("</think>", 1)[1] if "</think>" in text else text
    return text.replace("<|endoftext|>", "").strip().lower()


@torch.inference_mode()
def evaluate(
    model: V1ForConditionalGeneration,
    processor: V1Processor,
    n: int = 200,
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 160,
    progress: bool = True,
    scenes: Sequence[Scene] | None = None,
) -> dict[str, Any]:
    """Greedy decoding on held-out scenes; pointer precision/recall, answer accuracy with and without copying.

    - pointer_precision: share of emitted copy tokens that fall inside the asked-about object(s)' patches
    - pointer_recall: share of those patches that were copied at least once (pooled over scenes)
    - revisit_rate: share of scenes with at least one copy token
    - answer_accuracy_no_copy: same scenes, copy ids suppressed at decoding (transformers' suppress_tokens)
    """
    model.eval()
    scenes = list(scenes) if scenes is not None else [make_scene(s) for s in eval_seeds(n, start=seed)]
    copy_start = processor.copy_token_start
    no_copy = list(range(copy_start, copy_start + processor.copy_token_num))
    totals = dict(copies=0, inside=0, target=0, hit=0, revisits=0, correct=0, correct_no_copy=0)
    per_kind: dict[str, list[int]] = {}
    first_on_object: dict[str, list[int]] = {"colour": [], "shape": []}  # by how the question names the object
    bar = tqdm(total=len(scenes), desc="eval", disable=not progress, dynamic_ncols=True)
    for i in range(0, len(scenes), batch_size):
        chunk = scenes[i : i + batch_size]
        batch = processor([s.image for s in chunk], [s.question for s in chunk])
        width = batch["input_ids"].shape[1]
        kw = dict(do_sample=False, max_new_tokens=max_new_tokens)
        with_copy = model.generate(**batch, **kw)[:, width:].tolist()
        without = model.generate(**batch, suppress_tokens=no_copy, **kw)[:, width:].tolist()
        for scene, ids, ids_nc in zip(chunk, with_copy, without):
            grid = processor.grid_for(scene.image)
            target = patches_of(scene, grid)
            eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
            ids = ids[: ids.index(eos)] if eos in ids else ids
            copies = [t - copy_start for t in ids if t >= copy_start]
            totals["copies"] += len(copies)
            totals["inside"] += sum(p in target for p in copies)
            totals["target"] += len(target)
            totals["hit"] += len(target & set(copies))
            totals["revisits"] += bool(copies)
            ok = answer_of(processor.decode(ids)) == scene.answer.lower()
            totals["correct"] += ok
            totals["correct_no_copy"] += answer_of(processor.decode(ids_nc)) == scene.answer.lower()
            per_kind.setdefault(scene.kind, []).append(int(ok))
            for named, hit in first_copies_on_objects(scene, grid, ids, copy_start):
                first_on_object[named].append(int(hit))
        bar.update(len(chunk))
    bar.close()
    n_done = len(scenes)
    return {
        "n": n_done,
        "seed": seed,
        "pointer_precision": round(totals["inside"] / max(1, totals["copies"]), 4),
        "pointer_recall": round(totals["hit"] / max(1, totals["target"]), 4),
        "answer_accuracy": round(totals["correct"] / max(1, n_done), 4),
        "answer_accuracy_no_copy": round(totals["correct_no_copy"] / max(1, n_done), 4),
        "revisit_rate": round(totals["revisits"] / max(1, n_done), 4),
        "copies_per_scene": round(totals["copies"] / max(1, n_done), 2),
        "answer_accuracy_by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(per_kind.items())},
        "first_copy_on_object": round(sum(map(sum, first_on_object.values()))
                                      / max(1, sum(map(len, first_on_object.values()))), 4),
        "first_copy_on_object_by_name": {k: round(sum(v) / len(v), 4) for k, v in first_on_object.items() if v},
    }


def first_copies_on_objects(scene: Scene, grid: Any, ids: Sequence[int], copy_start: int) -> list[tuple[str, bool]]:
    """For each object the question names: ("shape" | "colour", whether the first copy of its region — the k-th
    run of copy tokens — lands inside that object's patches). The first copy is the pointer's choice of object."""
    runs, run = [], []
    for t in list(ids) + [-1]:
        if t >= copy_start:
            run.append(t - copy_start)
        elif run:
            runs.append(run)
            run = []
    out = []
    for k, (obj, query) in enumerate(zip(scene.target_objects, scene.queries)):
        named = "colour" if query.endswith(" object") else "shape"
        out.append((named, k < len(runs) and runs[k][0] in set(grid.bbox_to_patches(obj.box))))
    return out
