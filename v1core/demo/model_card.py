"""The demo checkpoint's model card (README.md), written from its training_info.json."""

from __future__ import annotations

from typing import Any

from ..modeling_v1 import V1ForConditionalGeneration
from .evaluation import TARGETS


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
    """The demo's targets (`TARGETS`) against the card's eval and any other held-out seed sets (`eval_other_seeds`)."""
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
