"""The embedded demo: synthetic scenes, v1-format target traces, and a locally built Qwen2-style tokenizer.

- `scenes`: `make_scene(seed)` — coloured shapes + one question that needs a look at one or two objects;
  train seeds in `TRAIN_SEED_RANGE`, eval seeds from `EVAL_SEED_START`; demo pixel limits `DEMO_MIN_PIXELS`
  / `DEMO_MAX_PIXELS` (grid at most 12x12).
- `targets`: `target_text(scene, grid)` in v1's exact output format; `target_v1g_row` / `expand_v1g_assistant`
  for the v1g row layout (the latter also serves real exported rows).
- `tokenizer`: `build_demo_tokenizer(corpus, vocab_size, n_copy_tokens) -> (tokenizer, DemoTokenIds)`.

Training the demo model, split the nanoGPT way (each module on its own, `train_demo` short):
- `recipe`: `DemoRecipe`, every knob with the reason for its default;
- `model`: the toy-scale `V1Config`, processor and `new_demo_model(seed)`;
- `data`: scenes → examples, per-patch probe labels, input noise, the training stream `demo_examples`;
- `losses`: the training-only objectives (probes, first-copy, fact-word, object-pointer) and `auxiliary_losses`;
- `evaluation`: `evaluate` on held-out seeds (`v1studio eval-demo`), `TARGETS`;
- `model_card`: the checkpoint's README from its training_info.json;
- `train_demo`: `train_demo(out_dir, recipe)` and `save_checkpoint`; `finetune`: fine-tuning on exported v1g rows.

Names are imported lazily so `import v1core.demo` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Scene": "scenes",
    "SceneObject": "scenes",
    "make_scene": "scenes",
    "make_scenes": "scenes",
    "question_candidates": "scenes",
    "split_of": "scenes",
    "train_seeds": "scenes",
    "eval_seeds": "scenes",
    "DEMO_MIN_PIXELS": "scenes",
    "DEMO_MAX_PIXELS": "scenes",
    "TRAIN_SEED_RANGE": "scenes",
    "EVAL_SEED_START": "scenes",
    "KINDS": "scenes",
    "SHAPES": "scenes",
    "COLOURS": "scenes",
    "target_text": "targets",
    "target_v1g_row": "targets",
    "expand_v1g_assistant": "targets",
    "expand_v1g_row": "targets",
    "region_markup": "targets",
    "v1g_question": "targets",
    "build_demo_tokenizer": "tokenizer",
    "corpus_for_tokenizer": "tokenizer",
    "DemoTokenIds": "tokenizer",
    "CHAT_TEMPLATE": "tokenizer",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'v1core.demo' has no attribute {name!r}")
