"""The demo's training-only objectives, added to v1's own loss (`train(auxiliary=...)`); none is saved.

Each says in its docstring why it exists and what it changed; `auxiliary_losses(recipe, …)` builds the set a
`DemoRecipe` asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..training import Example
from .data import CELL_FACTS, CORNER_FACTS, OBJECT_COLUMN, VISION_FACTS

if TYPE_CHECKING:
    from ..modeling_v1 import V1ForConditionalGeneration
    from ..processing_v1 import V1Processor
    from .recipe import DemoRecipe

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

    def __init__(self, hidden: int, image_token_id: int, weight: float = 1.0, pooled: bool = True,
                 shape_weight: float = 1.0,
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
    def object_means(states: torch.Tensor, labels: torch.Tensor, examples: list[Example]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
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
                means, object_facts = self.object_means(states, labels, examples)
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


def shifted_at(output: Any, labels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
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


def auxiliary_losses(recipe: DemoRecipe, model: V1ForConditionalGeneration, processor: V1Processor
                     ) -> Auxiliaries | None:
    """The objectives `recipe` turns on (a weight of 0 leaves one out), in a fixed order; None when all are off.
    The probes are created first: their initialisation draws from torch's generator right after the model's."""
    hidden, start = model.config.text_config.hidden_size, model.config.copy_token_start
    r = recipe
    probes = CellProbes(hidden, model.config.image_token_id, r.probe_weight, pooled=r.pooled_probes,
                        shape_weight=r.shape_weight, corner_weight=r.corner_weight) if r.probe_weight else None
    pointer = ObjectPointerLoss(start, r.object_pointer_weight) if r.object_pointer_weight else None
    first = FirstCopyLoss(start, r.first_copy_weight) if r.first_copy_weight else None
    facts = FactWordLoss(fact_trigger_ids(processor.tokenizer), r.fact_weight) if r.fact_weight else None
    return Auxiliaries(m for m in (probes, pointer, first, facts) if m is not None) or None
