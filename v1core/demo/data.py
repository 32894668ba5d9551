"""The demo's training data: synthetic scenes as v1 examples, per-patch labels for the probes, input noise.

`demo_examples` is the stream `train_demo` trains on; `scene_example` / `asked_examples` build one scene's
examples; `with_input_noise` makes each example's *input* noisy afresh on every use (labels stay true).
"""

from __future__ import annotations

import random
from dataclasses import replace
from itertools import chain
from typing import Any, Iterator

import numpy as np
import torch

from ..processing_v1 import V1Processor
from ..training import Example, ask_same_image, build_example, cycle, length_bucketed, replayed
from .model import DEMO_VISION
from .scenes import COLOURS, SHAPES, SIZES, Scene, ask_again, make_scene, train_seeds
from .targets import target_text

# Per-patch facts the auxiliary probes predict: what object box covers the patch (0 = background), and where it is.
CELL_FACTS = (("shape", len(SHAPES) + 1), ("colour", len(COLOURS) + 1), ("size", len(SIZES) + 1), ("row", 16),
              ("col", 16),
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

