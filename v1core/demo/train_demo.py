"""Train the embedded demo v1 from scratch and write its checkpoint: same class, config fields and loader as v1-7B.

`v1studio train-demo` builds the tokenizer and a tiny `V1Config` (`model`), trains on synthetic scenes whose answers
need a look back at one object (`data`), with v1's loss plus training-only objectives (`losses`), evaluates on
seeds never used in training (`evaluation`), and writes a complete checkpoint: safetensors, tokenizer, processor
config, training_info.json and the model card (`model_card`). Every knob is a field of `DemoRecipe` (`recipe`).
`--from-export` fine-tunes on exported v1g rows instead (`finetune`).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..modeling_v1 import V1ForConditionalGeneration
from ..processing_v1 import V1Processor
from ..training import TrainConfig, train
from .data import demo_examples
from .evaluation import evaluate
from .losses import auxiliary_losses
from .model import new_demo_model
from .model_card import model_card
from .recipe import DemoRecipe


def train_demo(out_dir: Path, recipe: DemoRecipe | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Train from scratch on synthetic scenes (`recipe`, default `DemoRecipe()`) and write a complete checkpoint
    with its model card."""
    r, started, log_rows = recipe or DemoRecipe(), time.perf_counter(), []
    model, processor = new_demo_model(r.seed)
    cfg = TrainConfig(steps=r.steps, batch_size=r.batch_size, lr=r.lr, seed=r.seed, time_budget_s=r.time_budget_s)
    examples = demo_examples(processor, r.batch_size, seed=r.seed, replay=r.replay, asks=r.asks,
                             noisy_boxes=r.noisy_boxes, copy_noise=r.copy_noise)
    auxiliary = auxiliary_losses(r, model, processor)
    losses = train(model, processor, examples, cfg, log=log_rows.append, progress=progress, auxiliary=auxiliary)
    train_s = time.perf_counter() - started
    metrics = evaluate(model, processor, n=r.eval_n, seed=r.seed, progress=progress) if r.eval_n else {}
    save_checkpoint(model, processor, out_dir, cfg, losses, metrics, train_s, log_rows, recipe=r.card_fields())
    return {"steps": len(losses), "final_loss": losses[-1], "train_s": round(train_s, 1), "eval": metrics}


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

