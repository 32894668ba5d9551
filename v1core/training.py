"""Supervised training of a V1ForConditionalGeneration on (image, question, v1-format answer) examples.

Short on purpose (nanoGPT-style): one example builder shared by the demo scenes and by exported v1g rows,
one collate, one loop. Loss is v1's own: cross-entropy over [vocabulary ∥ image patches] + top-k z-loss,
computed inside the model's forward.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from PIL import Image

from .processing_v1 import V1Processor


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor  # [1, 3]
    cell_labels: torch.Tensor | None = None  # [n_cells, k] per merged patch, for an optional auxiliary loss


def build_example(processor: V1Processor, image: Image.Image, question: str, answer_text: str) -> Example:
    """Prompt exactly as at inference; labels only on the answer (+ `<|im_end|>`).

    `answer_text` is trusted training text in v1's output format, so its `<|copy_k|>` markers become
    copy ids (unlike user questions, which are tokenised with special tokens disabled).
    """
    batch = processor(image, question)
    return _with_answer(processor, batch["input_ids"][0].tolist(), answer_text, batch["pixel_values"],
                        batch["image_grid_thw"])


def ask_same_image(processor: V1Processor, example: Example, question: str, answer_text: str) -> Example:
    """Another (question, answer) about `example`'s image, reusing its preprocessed pixels: only text is tokenised."""
    prompt = processor.prompt_ids(question, _merged_patches(processor, example.image_grid_thw))
    return _with_answer(processor, prompt, answer_text, example.pixel_values, example.image_grid_thw)


def _with_answer(processor: V1Processor, prompt: list[int], answer_text: str, pixel_values: torch.Tensor,
                 image_grid_thw: torch.Tensor) -> Example:
    answer = processor.tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    answer.append(processor.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    n_patches = _merged_patches(processor, image_grid_thw)
    bad = [t for t in answer if t >= processor.copy_token_start + n_patches]
    if bad:
        raise ValueError(f"answer copies patch {bad[0] - processor.copy_token_start} but the image has {n_patches}")
    return Example(input_ids=prompt + answer, labels=[-100] * len(prompt) + answer, pixel_values=pixel_values,
                   image_grid_thw=image_grid_thw)


def _merged_patches(processor: V1Processor, image_grid_thw: torch.Tensor) -> int:
    """How many merged patches (copy targets, image tokens) an image of this `image_grid_thw` has."""
    return int(image_grid_thw[0].prod()) // processor.merge_size**2


@contextmanager
def linear_patch_embedding(model: torch.nn.Module) -> Iterator[None]:
    """Run the vision tower's patch embedding as the matmul it is while training.

    Qwen2.5-VL embeds patches with a Conv3d whose kernel equals its stride, i.e. one linear map of each
    flattened (channel, time, 14, 14) patch. On CPU, mkldnn's Conv3d backward is slow (the demo's training
    step is ×1.18 faster without it: bench/demo_train_step.py); the same weights through `F.linear` give the
    same result.
    """
    visual = getattr(getattr(model, "model", None), "visual", None)
    embed = getattr(visual, "patch_embed", None)
    proj = getattr(embed, "proj", None)
    if proj is None or tuple(proj.kernel_size) != tuple(proj.stride):
        yield
        return

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        weight = proj.weight.reshape(proj.out_channels, -1)
        return F.linear(hidden_states.reshape(-1, weight.shape[1]).to(weight.dtype), weight, proj.bias)

    embed.forward = forward
    try:
        yield
    finally:
        del embed.forward


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; the model derives M-RoPE positions from input_ids and the attention mask."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": mask,
        "pixel_values": torch.cat([e.pixel_values for e in examples]),
        "image_grid_thw": torch.cat([e.image_grid_thw for e in examples]),
    }


@dataclass
class TrainConfig:
    steps: int = 600
    batch_size: int = 8
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 40
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)  # the paper's AdamW betas
    grad_clip: float = 1.0
    seed: int = 0
    time_budget_s: float | None = None  # stop early (and say so) when the wall-clock budget is spent


def lr_at(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine to `min_lr_ratio`; with a time budget the decay follows whichever of
    steps or wall-clock runs out first, so a slow machine still ends on a decayed learning rate."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.time_budget_s:
        progress = max(progress, elapsed_s / cfg.time_budget_s)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train(
    model: torch.nn.Module,
    processor: V1Processor,
    examples: Iterator[Example],
    cfg: TrainConfig,
    log: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    auxiliary: torch.nn.Module | None = None,
) -> list[float]:
    """Plain AdamW loop with warmup + cosine decay; returns v1's loss of every step.

    `auxiliary` adds a training-only objective to the loss being minimised (e.g. the demo's per-patch probes): a
    module called as `auxiliary(output, batch, examples)` → scalar, with the model output (hidden states
    included), the collated batch and its examples; its parameters are optimised too, never saved with the model.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    params = list(model.parameters()) + (list(auxiliary.parameters()) if auxiliary is not None else [])
    decay = [p for p in params if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in params if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas,
    )
    model.train()
    losses: list[float] = []
    pad = processor.tokenizer.pad_token_id
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train", disable=not progress, dynamic_ncols=True)
    with linear_patch_embedding(model):
        for step in bar:
            chunk = [next(examples) for _ in range(cfg.batch_size)]
            batch = collate(chunk, pad)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg, time.perf_counter() - start)
            out = model(**batch, use_cache=False, output_hidden_states=auxiliary is not None)
            opt.zero_grad(set_to_none=True)
            total = out.loss + auxiliary(out, batch, chunk) if auxiliary is not None else out.loss
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            loss = out.loss.detach().item()
            losses.append(loss)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{group['lr']:.1e}")
            if log:
                log({"step": step, "loss": loss, "lr": group["lr"], "elapsed_s": time.perf_counter() - start})
            if cfg.time_budget_s and time.perf_counter() - start > cfg.time_budget_s:
                bar.write(f"time budget of {cfg.time_budget_s:.0f}s reached after {step + 1} steps")
                break
    model.eval()
    return losses


def cycle(make: Callable[[int], Example], seeds: Iterable[int]) -> Iterator[Example]:
    """Endless stream of examples over a seed sequence (reshuffled each pass)."""
    seeds = list(seeds)
    rng = random.Random(0)
    while True:
        rng.shuffle(seeds)
        for s in seeds:
            yield make(s)


def length_bucketed(examples: Iterator[Example], batch_size: int, pool_batches: int = 8, seed: int = 0
                    ) -> Iterator[Example]:
    """Regroup a stream so that every `batch_size` consecutive examples have similar lengths.

    Why: `collate` pads to the longest example of a batch; demo sequences range ~190–370 tokens, so random
    batches of 8 are a fifth padding (19.6 %, against 3.6 % bucketed: 1.20× fewer tokens per example).
    Examples are drawn `pool_batches` batches at a time, sorted by length, cut into batches, and the batches
    are yielded in random order (so training does not see lengths in order).
    """
    rng = random.Random(seed)
    while True:
        pool = sorted((next(examples) for _ in range(batch_size * pool_batches)), key=lambda e: len(e.input_ids))
        batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        for b in batches:
            yield from b


def replayed(examples: Iterator[Example], times: int, pool: int = 256, seed: int = 0) -> Iterator[Example]:
    """Yield every example `times` times: `pool` fresh ones at a time, their repeats shuffled together.

    Why: on the demo's 2-core budget, rendering and preprocessing scenes cost ~20 % of a training step;
    seeing each scene twice, a few dozen steps apart, buys ×1.13 optimiser steps per minute
    (bench/demo_data_replay.py).
    """
    rng = random.Random(seed)
    while True:
        window = [next(examples) for _ in range(pool)] * times
        rng.shuffle(window)
        yield from window
