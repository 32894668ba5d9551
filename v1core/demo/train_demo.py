"""Train, evaluate and package the embedded demo v1: same class, config fields and loader as v1-7B.

`v1studio train-demo` builds the tokenizer, a tiny `V1Config`, trains on synthetic scenes whose answers need a
look back at one object, evaluates on seeds never used in training, and writes a complete checkpoint
(safetensors, tokenizer, processor config, model card). `--from-export` fine-tunes it on exported v1g rows.
"""

from __future__ import annotations

import json
import platform
import random
import time
from dataclasses import asdict, replace
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..configuration_v1 import V1Config
from ..geometry import TrainingGeometry
from ..modeling_v1 import V1ForConditionalGeneration
from ..processing_v1 import V1Processor
from ..training import Example, TrainConfig, ask_same_image, build_example, cycle, length_bucketed, replayed, train
from .scenes import (COLOURS, DEMO_MAX_PIXELS, DEMO_MIN_PIXELS, SHAPES, SIZES, Scene, ask_again, eval_seeds, make_scene,
                     train_seeds)
from .targets import target_text
from .tokenizer import DemoTokenIds, build_demo_tokenizer

# Small enough to train in minutes on 2 CPU cores; big enough that pointing works.
DEMO_TEXT = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]})
# Four vision blocks, not three (+10 % step time), and shape facts ×2 in the probes: a region's first copy goes to
# the top-left patch of the object's box, which in the causal text model sees nothing of the object below it, so
# "the corner of the cross" must come from the vision tower. A linear probe on those patches read their object's
# shape 0.82 of the time before and 0.95 after; first copies on objects named by shape rose from 0.69 to 0.92
# (validation seeds 5,000+).
DEMO_VISION = dict(depth=4, hidden_size=96, intermediate_size=192, num_heads=4, patch_size=14, spatial_merge_size=2,
                   temporal_patch_size=2, window_size=224, fullatt_block_indexes=[1, 3], tokens_per_second=2)


def demo_config(ids: DemoTokenIds) -> V1Config:
    """v1-7B's config fields at toy scale (no gate, untied heads, keys from last-layer states: as trained)."""
    return V1Config(
        vocab_size=ids.text_vocab_size,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        vision_config=dict(out_hidden_size=DEMO_TEXT["hidden_size"], **DEMO_VISION),
        use_gate=False,
        tie_copy_heads=False,
        normalize_copy_states=False,
        use_embeddings_as_keys=False,
        **DEMO_TEXT,
        **ids.config_kwargs(),
    )


def demo_processor(tokenizer: Any, ids: DemoTokenIds) -> V1Processor:
    return V1Processor(
        tokenizer,
        copy_token_start=ids.copy_token_start,
        copy_token_num=ids.copy_token_num,
        image_token_id=ids.image_token_id,
        vision_start_token_id=ids.vision_start_token_id,
        vision_end_token_id=ids.vision_end_token_id,
        min_pixels=DEMO_MIN_PIXELS,
        max_pixels=DEMO_MAX_PIXELS,
    )


# Per-patch facts the auxiliary probes predict: what object box covers the patch (0 = background), and where it is.
CELL_FACTS = (("shape", len(SHAPES) + 1), ("colour", len(COLOURS) + 1), ("size", len(SIZES) + 1), ("row", 16), ("col", 16),
              ("corner_shape", len(SHAPES) + 1), ("corner_colour", len(COLOURS) + 1))
VISION_FACTS = (0, 1, 2, 5, 6)  # what a patch shows (and which box corner it is); row / col only on the keys
CORNER_FACTS = (5, 6)
OBJECT_COLUMN = len(CELL_FACTS)  # last column of `cell_labels`: 1-based index of the covering object, 0 = none


def cell_labels(scene: Scene, grid: Any) -> torch.Tensor:
    """[n_cells, len(CELL_FACTS) + 1] labels for every merged patch of the scene, in copy-id order: the shape /
    colour / size of the object whose box covers the patch (0: background), the patch's row and column, and
    which object covers it (1-based; boxes' patch sets are disjoint by construction of the scenes)."""
    rows, cols = grid.shape
    out = torch.zeros(rows * cols, len(CELL_FACTS) + 1, dtype=torch.long)
    k = torch.arange(rows * cols)
    out[:, 3], out[:, 4] = k // cols, k % cols
    for n, obj in enumerate(scene.objects, start=1):
        ids = torch.tensor(grid.bbox_to_patches(obj.box), dtype=torch.long)
        out[ids, 0] = SHAPES.index(obj.shape) + 1
        out[ids, 1] = list(COLOURS).index(obj.colour) + 1
        out[ids, 2] = SIZES.index(obj.size) + 1
        # the box's top-left patch, where a region's first copy goes, also names the object's shape and colour
        out[ids[0], list(CORNER_FACTS)] = out[ids[0], :2].clone()
        out[ids, OBJECT_COLUMN] = n
    return out


def scene_example(processor: V1Processor, scene: Scene) -> Example:
    grid = processor.grid_for(scene.image)
    example = build_example(processor, scene.image, scene.question, target_text(scene, grid))
    example.cell_labels = cell_labels(scene, grid)
    return example


def with_input_noise(examples: Iterator[Example], tokenizer: Any, seed: int = 0, boxes: bool = True,
                     copy_noise: float = 0.0, copy_token_start: int | None = None) -> Iterator[Example]:
    """Each example's *input* made noisy on a copy, afresh on every use (a replayed example too): box decimals
    randomised (`randomise_box_decimals`) and, with `copy_noise` > 0, copies moved (`jitter_copies`)."""
    if copy_noise and copy_token_start is None:
        raise ValueError("copy_noise needs copy_token_start")
    rng = random.Random(seed)
    for e in examples:
        e = replace(e, input_ids=list(e.input_ids))
        if boxes:
            randomise_box_decimals(e, tokenizer, rng)
        if copy_noise:
            jitter_copies(e, copy_token_start, rng, copy_noise)
        yield e


def jitter_copies(example: Example, copy_token_start: int, rng: random.Random, p: float) -> None:
    """Swap each copy of the *input* but a region's first, with probability `p`, for a neighbouring patch (left /
    right / up / down); labels keep the true patch. Why: in training a region's copies are always the perfect
    row-major walk, so at inference one wrong step puts the model where it has never been and it loops (the
    same patch twenty times) or runs past the box, and the answer reads the wrong patches. Here it learns to
    resume the walk after a slip."""
    rows, cols = (int(n) // DEMO_VISION["spatial_merge_size"] for n in example.image_grid_thw[0][1:])  # merged grid
    ids, labels = example.input_ids, example.labels
    for i in range(1, len(ids)):
        if labels[i] >= copy_token_start and ids[i - 1] >= copy_token_start and rng.random() < p:
            k = ids[i] - copy_token_start
            r, c = divmod(k, cols)
            dr, dc = rng.choice(((0, -1), (0, 1), (-1, 0), (1, 0)))
            r, c = min(max(r + dr, 0), rows - 1), min(max(c + dc, 0), cols - 1)
            ids[i] = copy_token_start + r * cols + c


def randomise_box_decimals(example: Example, tokenizer: Any, rng: random.Random) -> None:
    """Replace the decimals of every `[x0, y0, x1, y1]` box in the *input* by random digits; labels keep the true
    ones. Why: the model still learns to write the box, but cannot learn to place its copies by reading the
    box it was fed — at inference it reads its own, often imprecise, box, and copies placed from that drift
    (exposure bias). Copies then have to come from what the pointer sees: the named object."""
    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    open_id, close_id, dot_id, region_id = (tokenizer.convert_tokens_to_ids(t) for t in ("[", "]", ".", "<region>"))
    ids, labels = example.input_ids, example.labels
    inside = False
    for i in range(1, len(ids)):
        if labels[i] == -100:
            continue
        if ids[i] == open_id and ids[i - 1] == region_id:
            inside = True
        elif ids[i] == close_id:
            inside = False
        elif inside and ids[i] in digits and i + 1 < len(ids) and ids[i + 1] != dot_id:
            ids[i] = rng.choice(digits)


def demo_examples(processor: V1Processor, batch_size: int, seed: int = 0, replay: int = 2, asks: int = 1,
                  noisy_boxes: bool = True, replay_pool: int = 256, copy_noise: float = 0.1) -> Iterator[Example]:
    """The training stream of `train_demo`: scenes from the training seeds, each image asked `asks` questions
    (its own and `ask_again`'s), every example `replay` times, shuffled within `replay_pool`, box decimals
    randomised on every use, grouped into length-bucketed batches of `batch_size`."""
    per_image = cycle(lambda s: asked_examples(processor, make_scene(s), asks, seed), train_seeds(200_000))
    examples = replayed(chain.from_iterable(per_image), max(1, replay), pool=replay_pool, seed=seed)
    if noisy_boxes or copy_noise:
        examples = with_input_noise(examples, processor.tokenizer, seed=seed, boxes=noisy_boxes, copy_noise=copy_noise,
                                    copy_token_start=processor.copy_token_start)
    return length_bucketed(examples, batch_size, seed=seed)


def asked_examples(processor: V1Processor, scene: Scene, asks: int, seed: int = 0) -> list[Example]:
    """The scene's example plus up to `asks - 1` more with other questions about the same (preprocessed) image."""
    first = scene_example(processor, scene)
    out, rng = [first], np.random.default_rng([seed, scene.seed])
    for _ in range(asks - 1):
        other = ask_again(scene, rng)
        if other is None:
            break
        example = ask_same_image(processor, first, other.question, target_text(other, processor.grid_for(scene.image)))
        example.cell_labels = first.cell_labels
        out.append(example)
    return out


class CellProbes(torch.nn.Module):
    """Linear probes that ask the image patches what they show and where (training only, then discarded).

    Why: a from-scratch 1.5 M-parameter model has ~15 CPU-minutes to learn to find "the triangle". v1's loss
    only says so through a handful of copy tokens per scene; these probes label every patch and every object
    each step, on the vision embeddings (what a copy brings back) and on the last-layer states (the pointer's keys):
    - per patch: the shape / colour / size of the object covering it, (keys only) its row and column, and, with
      `corner_weight`, whether it is the top-left patch of an object's box and of which shape / colour.
      That patch is where v1's target puts a region's first copy, and for a diamond or a star it shows mostly
      background: the key has to learn "the corner of the diamond" from its neighbours;
    - per object: the same facts from the *mean* of its patches, i.e. from what copying all of them brings back.
      A shape is rarely visible in one 28-px patch (the middle of a large square is plain colour) but is in the
      mix of edges over its patches, so this is the signal that teaches shape.
    """

    def __init__(self, hidden: int, image_token_id: int, weight: float = 1.0, pooled: bool = True, shape_weight: float = 1.0,
                 corner_weight: float = 0.0):
        super().__init__()
        self.image_token_id, self.weight = image_token_id, weight
        self.fact_weights = [shape_weight] + [1.0] * (len(CELL_FACTS) - 1)  # shape is the hard fact to learn
        for j in CORNER_FACTS:
            self.fact_weights[j] = corner_weight
        self.fact_weights[CORNER_FACTS[0]] *= shape_weight  # "the corner of the cross": shape-named pointing
        self.vision_facts = [j for j in VISION_FACTS if self.fact_weights[j]]
        self.key_facts = [j for j in range(len(CELL_FACTS)) if self.fact_weights[j]]
        self.vision = torch.nn.ModuleList(torch.nn.Linear(hidden, CELL_FACTS[j][1]) for j in self.vision_facts)
        self.keys = torch.nn.ModuleList(torch.nn.Linear(hidden, CELL_FACTS[j][1]) for j in self.key_facts)
        facts = CELL_FACTS[:3] if pooled else ()
        self.pooled_vision = torch.nn.ModuleList(torch.nn.Linear(hidden, n - 1) for _, n in facts)
        self.pooled_keys = torch.nn.ModuleList(torch.nn.Linear(hidden, n - 1) for _, n in facts)

    @staticmethod
    def _object_means(states: torch.Tensor, labels: torch.Tensor, examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean state over each object's patches, and that object's (shape, colour, size) labels (0-based)."""
        local = labels[:, OBJECT_COLUMN]
        offsets, start, base = torch.zeros_like(local), 0, 0
        for e in examples:
            n = len(e.cell_labels)
            offsets[start : start + n] = base
            base += int(e.cell_labels[:, OBJECT_COLUMN].max())
            start += n
        inside = local > 0
        ids = (local + offsets - 1)[inside]
        sums = states.new_zeros(base, states.shape[-1]).index_add(0, ids, states[inside])
        counts = torch.bincount(ids, minlength=base).clamp(min=1).unsqueeze(-1)
        facts = labels.new_zeros(base, 3)
        facts[ids] = labels[inside][:, :3] - 1
        return sums / counts, facts

    def forward(self, output: Any, batch: dict[str, torch.Tensor], examples: list[Example]) -> torch.Tensor:
        labels = torch.cat([e.cell_labels for e in examples])
        image = batch["input_ids"] == self.image_token_id
        ce = torch.nn.functional.cross_entropy
        loss = torch.zeros(())
        vision_states, key_states = output.hidden_states[0][image], output.hidden_states[-1][image]
        for cell_facts, heads, pooled, states in ((self.vision_facts, self.vision, self.pooled_vision, vision_states),
                                                  (self.key_facts, self.keys, self.pooled_keys, key_states)):
            for j, head in zip(cell_facts, heads):
                loss = loss + self.fact_weights[j] * ce(head(states), labels[:, j].clamp(max=head.out_features - 1))
            if len(pooled):
                means, object_facts = self._object_means(states, labels, examples)
                for j, head in enumerate(pooled):
                    loss = loss + self.fact_weights[j] * ce(head(means), object_facts[:, j])
        return self.weight * loss


def first_copies(labels: torch.Tensor, copy_token_start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) of every region's first copy label, positions in the shifted (predicting) frame."""
    nxt, prev = labels[:, 1:], labels[:, :-1]
    return ((nxt >= copy_token_start) & (prev < copy_token_start)).nonzero(as_tuple=True)


def first_copy_logits(
    output: Any, labels: torch.Tensor, copy_token_start: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(batch rows, float logits [n, vocab ∥ patches], target ids) at every region's first copy; None if none."""
    rows, cols = first_copies(labels, copy_token_start)
    if not len(rows):
        return None
    return rows, *shifted_at(output, labels, rows, cols)


def shifted_at(output: Any, labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float logits, target ids) of the predicting positions (rows, cols): position p predicts labels[p + 1]."""
    return output.logits[:, :-1][rows, cols].float(), labels[:, 1:][rows, cols]


class ObjectPointerLoss(torch.nn.Module):
    """At the first copy of each region: -log(pointer mass on the whole object that copy belongs to).

    Why: v1's cross-entropy asks the first copy for one exact patch (the box's top-left), so mass on the wrong
    object and mass on the right object's other patches cost the same. Choosing the object is the decision that
    decides the answer (the copies after it follow row by row); this term trains that choice on its own.
    Training only; no parameters. Off by default (`object_pointer_weight=0`): at weight 1 it fixed the object
    choice (0.67 → 0.96) but the first copy stopped starting at the box's top-left patch and answers got worse
    (see the model card's history).
    """

    def __init__(self, copy_token_start: int, weight: float = 1.0):
        super().__init__()
        self.copy_token_start, self.weight = copy_token_start, weight

    def forward(self, output: Any, batch: dict[str, torch.Tensor], examples: list[Example]) -> torch.Tensor:
        start = self.copy_token_start
        found = first_copy_logits(output, batch["labels"], start)
        if found is None:
            return output.logits.new_zeros(())
        rows, logits, targets = found
        width = logits.shape[-1] - start
        owner = torch.zeros(len(examples), width, dtype=torch.long)
        for i, e in enumerate(examples):
            owner[i, : len(e.cell_labels)] = e.cell_labels[:, OBJECT_COLUMN]
        patch = targets - start
        target_owner = owner[rows, patch]
        on_object = (owner[rows] == target_owner[:, None]) & (target_owner[:, None] > 0)
        on_object[torch.arange(len(rows)), patch] = True
        object_mass = logits[:, start:].masked_fill(~on_object, torch.finfo(logits.dtype).min).logsumexp(-1)
        return self.weight * (logits.logsumexp(-1) - object_mass).mean()


class FirstCopyLoss(torch.nn.Module):
    """Extra cross-entropy on each region's first copy: the one pointer choice that decides the object.

    Why: v1's loss averages over ~85 answer tokens a scene, most of them template text or the next patch of a
    row; the first copy (the box's top-left patch of the named object) is one of them. This adds `weight` ×
    the mean cross-entropy of those positions alone: same target as v1's loss, just more of it. Training only.
    """

    def __init__(self, copy_token_start: int, weight: float = 1.0):
        super().__init__()
        self.copy_token_start, self.weight = copy_token_start, weight

    def forward(self, output: Any, batch: dict[str, torch.Tensor], examples: list[Example]) -> torch.Tensor:
        found = first_copy_logits(output, batch["labels"], self.copy_token_start)
        if found is None:
            return output.logits.new_zeros(())
        _, logits, targets = found
        return self.weight * torch.nn.functional.cross_entropy(logits, targets)


class FactWordLoss(torch.nn.Module):
    """Extra cross-entropy on the words that say what the copies showed: the word after " is" / " a" / " an"
    ("The green object is a star.", "The red object is large.", "… is not bigger") and the answer after
    `</think>`.

    Why: with the pointer on the right object (first copy on it ~0.9 of the time) the demo's answers still fail
    at *reading* the copies (shape questions ~0.5). Those few words are where that reading is trained, and in
    v1's loss they are ~4 of ~85 answer tokens a scene. Same targets as v1's loss, more weight. Training only.
    """

    def __init__(self, trigger_ids: Sequence[int], weight: float = 1.0):
        super().__init__()
        self.register_buffer("trigger_ids", torch.tensor(sorted(set(trigger_ids)), dtype=torch.long), persistent=False)
        self.weight = weight

    def forward(self, output: Any, batch: dict[str, torch.Tensor], examples: list[Example]) -> torch.Tensor:
        labels = batch["labels"]
        # position p predicts labels[p + 1]; it is a fact word when the token it follows, labels[p], is a trigger
        after_trigger = torch.isin(labels[:, :-1], self.trigger_ids) & (labels[:, 1:] != -100)
        rows, cols = after_trigger.nonzero(as_tuple=True)
        if not len(rows):
            return output.logits.new_zeros(())
        logits, targets = shifted_at(output, labels, rows, cols)
        return self.weight * torch.nn.functional.cross_entropy(logits, targets)


def fact_trigger_ids(tokenizer: Any) -> list[int]:
    """Token ids after which the demo's target text states a fact read from the copies (see `FactWordLoss`)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("Ġis", "Ġa", "Ġan", "</think>")]
    unknown = tokenizer.convert_tokens_to_ids(tokenizer.unk_token) if tokenizer.unk_token else None
    if any(i is None or i == unknown for i in ids):
        raise ValueError("the demo tokenizer lacks one of the fact-trigger tokens ' is', ' a', ' an', '</think>'")
    return ids


class Auxiliaries(torch.nn.ModuleList):
    """Several training-only objectives summed, for `train(auxiliary=...)`."""

    def forward(self, output: Any, batch: dict[str, torch.Tensor], examples: list[Example]) -> torch.Tensor:
        return sum(m(output, batch, examples) for m in self)


def new_demo_model(seed: int = 0) -> tuple[V1ForConditionalGeneration, V1Processor]:
    tokenizer, ids = build_demo_tokenizer(n_copy_tokens=(DEMO_MAX_PIXELS // (28 * 28)))
    torch.manual_seed(seed)
    model = V1ForConditionalGeneration(demo_config(ids))
    model.init_copy_heads()
    model.generation_config.eos_token_id = ids.eos_token_id
    model.generation_config.pad_token_id = ids.pad_token_id
    model.generation_config.bos_token_id = ids.bos_token_id
    return model.eval(), demo_processor(tokenizer, ids)


# --------------------------------------------------------------------------- evaluation
def _patches_of(scene: Scene, grid: Any) -> set[int]:
    out: set[int] = set()
    for obj in scene.target_objects:
        out.update(grid.bbox_to_patches(obj.box))
    return out


def _answer_of(text: str) -> str:
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
            target = _patches_of(scene, grid)
            eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
            ids = ids[: ids.index(eos)] if eos in ids else ids
            copies = [t - copy_start for t in ids if t >= copy_start]
            totals["copies"] += len(copies)
            totals["inside"] += sum(p in target for p in copies)
            totals["target"] += len(target)
            totals["hit"] += len(target & set(copies))
            totals["revisits"] += bool(copies)
            ok = _answer_of(processor.decode(ids)) == scene.answer.lower()
            totals["correct"] += ok
            totals["correct_no_copy"] += _answer_of(processor.decode(ids_nc)) == scene.answer.lower()
            per_kind.setdefault(scene.kind, []).append(int(ok))
            for named, hit in _first_copies_on_objects(scene, grid, ids, copy_start):
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
        "first_copy_on_object": round(sum(map(sum, first_on_object.values())) / max(1, sum(map(len, first_on_object.values()))), 4),
        "first_copy_on_object_by_name": {k: round(sum(v) / len(v), 4) for k, v in first_on_object.items() if v},
    }


def _first_copies_on_objects(scene: Scene, grid: Any, ids: Sequence[int], copy_start: int) -> list[tuple[str, bool]]:
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


# --------------------------------------------------------------------------- training entry points
def train_demo(
    out_dir: Path,
    steps: int = 4000,
    batch_size: int = 8,
    time_budget_s: float | None = 13 * 60,
    seed: int = 0,
    eval_n: int = 200,
    lr: float = 3e-3,
    progress: bool = True,
    probe_weight: float = 1.0,
    noisy_boxes: bool = True,
    pooled_probes: bool = True,
    shape_weight: float = 2.0,
    object_pointer_weight: float = 0.0,
    corner_weight: float = 2.0,
    first_copy_weight: float = 0.3,
    fact_weight: float = 1.0,
    replay: int = 2,
    asks: int = 1,
    copy_noise: float = 0.1,
) -> dict[str, Any]:
    """Train from scratch on synthetic scenes and write a complete checkpoint with its model card."""
    started = time.perf_counter()
    model, processor = new_demo_model(seed)
    log_rows: list[dict[str, Any]] = []
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, time_budget_s=time_budget_s)
    examples = demo_examples(processor, batch_size, seed=seed, replay=replay, asks=asks, noisy_boxes=noisy_boxes,
                             copy_noise=copy_noise)
    hidden = model.config.text_config.hidden_size
    probes = CellProbes(hidden, model.config.image_token_id, probe_weight, pooled=pooled_probes,
                        shape_weight=shape_weight, corner_weight=corner_weight) if probe_weight else None
    pointer = ObjectPointerLoss(model.config.copy_token_start, object_pointer_weight) if object_pointer_weight else None
    first = FirstCopyLoss(model.config.copy_token_start, first_copy_weight) if first_copy_weight else None
    facts = FactWordLoss(fact_trigger_ids(processor.tokenizer), fact_weight) if fact_weight else None
    auxiliary = Auxiliaries(m for m in (probes, pointer, first, facts) if m is not None) or None
    losses = train(model, processor, examples, cfg, log=log_rows.append, progress=progress, auxiliary=auxiliary)
    train_s = time.perf_counter() - started
    metrics = evaluate(model, processor, n=eval_n, seed=seed, progress=progress) if eval_n else {}
    recipe = dict(probe_weight=probe_weight, shape_weight=shape_weight, object_pointer_weight=object_pointer_weight,
                  corner_weight=corner_weight, first_copy_weight=first_copy_weight, fact_weight=fact_weight, replay=replay,
                  asks=asks, copy_noise=copy_noise)
    save_checkpoint(model, processor, out_dir, cfg, losses, metrics, train_s, log_rows, recipe=recipe)
    return {"steps": len(losses), "final_loss": losses[-1], "train_s": round(train_s, 1), "eval": metrics}


def v1g_examples(processor: V1Processor, rows: Iterable[dict[str, Any]], image_root: Path | None = None) -> list[Example]:
    """Examples from v1g rows (exported or published), on the official training geometry: an image over 672 px a
    side is resized to its dataset size first, and every key expands to the region the training code writes
    (`v1core.v1g`), in the demo model's keyed form (`<obj0><region>…`). The question is asked as the processor
    asks it (its prompt suffix added once)."""
    from ..images import load_image
    from ..v1g import parse_row

    out = []
    for raw in rows:
        row = parse_row(raw)
        img = row.image
        if isinstance(img, dict):
            img = img.get("bytes") or img.get("path")
        if isinstance(img, str) and image_root is not None and not Path(img).is_absolute():
            img = str(image_root / img)
        image = load_image(img).image
        geometry = TrainingGeometry.for_image(*(row.image_size or image.size), min_pixels=processor.min_pixels,
                                              max_pixels=processor.max_pixels, patch_size=processor.patch_size,
                                              merge_size=processor.merge_size)
        if geometry.rescaled or image.size != geometry.image_size:
            image = image.resize(geometry.dataset_size)  # as the official collate does
        if processor.grid_for(image).resized != geometry.processor_size:  # never expected: same smart_resize
            raise RuntimeError(f"row {row.id}: processor grid disagrees with the training geometry {geometry}")
        _, target = row.expanded(geometry, keep_key=True)
        out.append(build_example(processor, image, row.question, target))
    return out


def read_v1g_rows(path: Path) -> list[dict[str, Any]]:
    """v1g rows from JSONL or parquet (a file or a folder of shards), each in the published layout (`conversations`,
    `regions` string; v1 Studio's older `conversation` / `region` JSONL is read too) plus any extra columns."""
    from ..v1g import parse_row

    path = Path(path)
    if path.suffix == ".parquet" or path.is_dir():
        import datasets

        ds = datasets.load_dataset("parquet", data_files=str(path / "*.parquet") if path.is_dir() else str(path), split="train")
        ds = ds.cast_column("image", datasets.Image(decode=False)) if "image" in ds.column_names else ds
        return [dict(r) for r in ds]
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                raw = json.loads(line)
                row = parse_row(raw)
            except ValueError as exc:  # JSONDecodeError and V1GFormatError: say where
                raise ValueError(f"{path}:{n}: {exc}") from None
            extra = {k: v for k, v in raw.items() if k not in ("conversation", "region")}
            rows.append({**extra, "id": row.id, "conversations": row.conversations(), "regions": row.regions_string()}
                        | ({"image_size": list(row.image_size)} if row.image_size else {}))
    return rows


def finetune_from_export(
    checkpoint: Path, export_file: Path, out_dir: Path, steps: int = 200, lr: float = 5e-4,
    batch_size: int = 4, progress: bool = True, seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a v1 checkpoint on exported v1g rows (corrected regions included) and save it."""
    from ..loading import load_model

    model, processor = load_model(checkpoint, device="cpu")
    rows = read_v1g_rows(export_file)
    if not rows:
        raise ValueError(f"{export_file} has no rows")
    examples = v1g_examples(processor, rows, image_root=Path(export_file).parent)
    cfg = TrainConfig(steps=steps, batch_size=min(batch_size, len(examples)), lr=lr, warmup=10, seed=seed)
    losses = train(model, processor, cycle(lambda i: examples[i], range(len(examples))), cfg, progress=progress)
    save_checkpoint(model, processor, out_dir, cfg, losses, {}, 0.0, [], base=str(checkpoint), data=str(export_file))
    return {"steps": len(losses), "first_loss": losses[0], "final_loss": losses[-1], "rows": len(rows)}


def save_checkpoint(
    model: V1ForConditionalGeneration,
    processor: V1Processor,
    out_dir: Path,
    cfg: TrainConfig,
    losses: list[float],
    metrics: dict[str, Any],
    train_s: float,
    log_rows: list[dict[str, Any]],
    base: str | None = None,
    data: str | None = None,
    recipe: dict[str, Any] | None = None,
) -> None:
    """Weights, tokenizer, processor config, training_info.json (with `recipe`: train_demo's knobs) and the card."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    info = {
        "train_config": asdict(cfg),
        "steps_run": len(losses),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_seconds": round(train_s, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "eval": metrics,
        **(recipe or {}),
        "loss_curve": [[r["step"], round(r["loss"], 4), round(r["elapsed_s"], 1)] for r in log_rows[::50]],
        "base": base,
        "data": data,
    }
    (out_dir / "training_info.json").write_text(json.dumps(info, indent=2))
    (out_dir / "README.md").write_text(model_card(model, info))


def model_card(model: V1ForConditionalGeneration, info: dict[str, Any]) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    ev = info.get("eval") or {}
    rows = "\n".join(
        f"| {k} | {v} |" for k, v in ev.items() if isinstance(v, (int, float)) and k not in ("n", "seed")
    )
    kinds = ", ".join(f"{k}: {v}" for k, v in (ev.get("answer_accuracy_by_kind") or {}).items())
    named = ", ".join(f"named by {k} {v}" for k, v in (ev.get("first_copy_on_object_by_name") or {}).items())
    tc = info["train_config"]
    seed_flag = f" --seed {tc['seed']}" if tc.get("seed") else ""
    return f"""# v1 Studio demo model (tiny v1)

A `V1ForConditionalGeneration` with v1-7B's architecture and config fields at toy scale
({n_params / 1e6:.2f} M parameters: text hidden {model.config.text_config.hidden_size},
{model.config.text_config.num_hidden_layers} layers; vision hidden {model.config.vision_config.hidden_size},
{model.config.vision_config.depth} blocks), loaded by `v1core.load_model()` through the same path as the real checkpoint.
It exists so v1 Studio runs on a laptop without a GPU or a download, and as the project's end-to-end test subject.

## How it was made
- Data: synthetic scenes (`v1core.demo.scenes`, seeds 0–199,999), 2–6 coloured shapes on noisy backgrounds,
  196–336 px sides; questions that need a look back at one object (colour of a shape, shape of a colour, size,
  and comparisons of two objects).
- Targets in v1's output format: `<think>… detect(query="…", objects=["<obj0><region>[x0, y0, x1, y1]<|copy_i|>…</region>"]) …</think>answer`,
  copy ids = `PatchGrid.bbox_to_patches(object box)`.
- Tokenizer: byte-level BPE trained locally with `tokenizers` + Qwen2.5-VL's special tokens + copy tokens.
- Loss: cross-entropy over [vocabulary ∥ patches] + top-{model.config.z_loss_top_k} z-loss (weight {model.config.z_loss_weight}), as in the paper;
  plus, during training only, linear probes (weight {info.get('probe_weight', '—')}, shape facts ×{info.get('shape_weight', 1.0)}) on the vision embeddings (what a copy
  brings back) and on the last-layer states (the pointer's keys): per patch, which shape / colour / size covers it
  and (keys) where it is; per object, its shape / colour / size from the *mean* of its patches, the signal that
  taught the model shape (a shape is rarely visible in one 28-px patch). Discarded afterwards, so the checkpoint is
  the plain v1 architecture.{_recipe_lines(info)}
- Inputs: the decimals of each `[x0, y0, x1, y1]` box are randomised in the *input* (labels keep the true box), so
  copies are placed by what the pointer sees rather than by the box text the model would otherwise lean on. The
  price: the model has not learned to write accurate box text (its boxes are near-constant); the regions the
  app draws come from the copied patches, which are what the pointer chose.
- Batches are grouped by length (`training.length_bucketed`): padding falls from 19.6 % to 3.6 % of the tokens.
- Optimiser: AdamW β={tuple(tc['betas'])}, lr {tc['lr']} (warm-up {tc['warmup']}, cosine), batch {tc['batch_size']},
  {info['steps_run']} steps in {info['train_seconds']} s on {info['machine']}. Loss {info['first_loss']:.3f} → {info['final_loss']:.3f}.
- Command: `v1studio train-demo{seed_flag}` (seeded; deterministic up to floating-point thread scheduling).

## Evaluation (held-out seeds ≥ 10,000,000, greedy, n = {ev.get('n', '—')})
| metric | value |
|---|---|
{rows}

Answer accuracy by question kind: {kinds or '—'}.
`first_copy_on_object` is the share of asked-about objects whose region starts on them (the pointer's choice of
object){f": {named}" if named else ""}.
`answer_accuracy_no_copy` decodes the same scenes with every copy token suppressed: the drop is what the
revisits are worth to this model.

## Limits
It knows only this synthetic world. Its pointer is meaningful there, its text is templated; it says nothing
about v1-7B's quality.
""" + _intervention_section(info.get("intervention")) + _status_section(ev, info.get("eval_other_seeds")) + _history_section(info.get("history"))


def _recipe_lines(info: dict[str, Any]) -> str:
    """Card lines for the optional parts of the recipe (none when they were off)."""
    lines = []
    if info.get("corner_weight"):
        shape = info.get("shape_weight") or 1.0
        lines.append(f"- Corner facts (×{info['corner_weight']}" + (f"; the corner's shape ×{info['corner_weight'] * shape}" if shape != 1 else "")
                     + "): the probes also ask each patch whether it is the top-left patch of an object's box, and of which "
                     "shape / colour: where a region's first copy goes.")
    if info.get("first_copy_weight"):
        lines.append(f"- First-copy loss (×{info['first_copy_weight']}): v1's cross-entropy again, on each region's first copy "
                     "alone, the one pointer choice that decides which object the answer reads.")
    if info.get("fact_weight"):
        lines.append(f"- Fact-word loss (×{info['fact_weight']}): v1's cross-entropy again on the words that state what the "
                     "copies showed (after \" is\" / \" a\" / \" an\") and on the answer: where reading the copies is trained.")
    if (info.get("replay") or 1) > 1:
        lines.append(f"- Each scene is trained on {info['replay']} times, the repeats shuffled within 256 scenes "
                     "(`training.replayed`): rendering a scene costs ~20 % of a step on 2 cores, so this buys ×1.13 steps per minute.")
    if info.get("copy_noise"):
        lines.append(f"- Copy noise ({info['copy_noise']}): that share of a region's input copies (never the first) is swapped for a "
                     "neighbouring patch, labels unchanged (`jitter_copies`), so the model learns to resume the row-major "
                     "walk after a slip instead of looping on one patch or running past the box.")
    if (info.get("asks") or 1) > 1:
        lines.append(f"- Each image is asked {info['asks']} questions: its own and {info['asks'] - 1} more drawn by "
                     "`scenes.ask_again` (objects named by shape twice as often), "
                     "sharing one rendering and preprocessing.")
    return "".join("\n" + line for line in lines)


TARGETS = {"pointer_precision": 0.90, "answer_accuracy": 0.90}  # the targets on unseen seeds


def _intervention_section(iv: dict[str, Any] | None) -> str:
    if not iv:
        return ""
    return f"""
## Intervention evidence (re-decoding with a corrected or removed revisit)
Measured with `python bench/intervention_evidence.py {iv['scenes']}` (held-out seeds 10,200,000+, greedy):

| measure | value |
|---|---|
| answer accuracy (as decoded) | {iv['answer_accuracy']} |
| answer accuracy with the first revisit removed (ablation) | {iv['answer_accuracy_first_revisit_removed']} |
| scenes whose first revisit mostly missed the asked-about object | {iv['scenes_with_wrong_first_pointer']} / {iv['scenes']} |
| right answers after forcing that object's patches in place of the revisit | {iv['right_answer_after_forcing_right_patches']} |
| wrong answers that forcing the right patches turned right | {iv['wrong_answers_turned_right_by_forcing']} |
""" + (f"""| colour / shape answers that followed a revisit redirected to another object | {iv['answer_followed_the_redirected_revisit']} (of {iv['redirected_revisits']}) |
""" if "redirected_revisits" in iv else "")


def _history_section(history: list[str] | None) -> str:
    """Notes kept in training_info.json["history"]: earlier checkpoints and runs, so the card says what was tried."""
    if not history:
        return ""
    return "\n## How it got here\n" + "\n".join(f"- {line}" for line in history) + "\n"


def _status_section(ev: dict[str, Any], others: list[dict[str, Any]] | None = None) -> str:
    """The issue's targets against the card's eval and any other held-out seed sets (`eval_other_seeds`)."""
    if not ev:
        return ""

    def cell(res: dict[str, Any], key: str) -> str:
        value = res.get(key)
        return f"{value} {'met' if (value or 0) >= TARGETS[key] else '**not met**'}"

    rows = "\n".join(f"| {r.get('seed')} | {r.get('n')} | " + " | ".join(cell(r, k) for k in TARGETS) + " |"
                     for r in [ev, *(others or [])])
    return f"""
## Status against the targets
Each row is `v1studio eval-demo --n N --seed S` on seeds never used in training.

| seed S | n | {" | ".join(f"{k} (target ≥ {v})" for k, v in TARGETS.items())} |
|---|---|---|---|
{rows}
"""
