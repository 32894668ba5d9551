"""`DemoRecipe`: every knob of the demo's training run in one place, each with the reason for its default.

`train_demo(out_dir, DemoRecipe(...))` trains with it; the knobs that shape the losses and the data are recorded
in the checkpoint's training_info.json (`card_fields`), from which the model card states the recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DemoRecipe:
    # -- optimisation
    steps: int = 4000  # an upper bound: on 2 CPU cores the time budget ends training first (1,792 for the checkpoint)
    batch_size: int = 8  # scenes per step, grouped by length (`length_bucketed`) so padding stays ~4 % of the tokens
    time_budget_s: float | None = 13 * 60  # `v1studio train-demo` eval included stays under 15 minutes
    lr: float = 3e-3  # peak rate for a tiny model trained from scratch (fine-tuning uses 5e-4); warm-up + cosine
    seed: int = 0  # model init, data order and input noise all follow it: one seed reproduces a run
    eval_n: int = 200  # held-out scenes decoded for the model card (0 skips evaluation)
    # -- auxiliary objectives (training only, discarded; see v1core/demo/losses.py)
    probe_weight: float = 1.0  # the per-patch / per-object probes that taught the vision tower shape (0: off)
    pooled_probes: bool = True  # per-object probes on the mean of its patches: a shape shows in the mix, not one patch
    shape_weight: float = 2.0  # shape is the hard fact; ×2 lifted first copies on shape-named objects 0.69 → 0.92
    corner_weight: float = 2.0  # probe the box's top-left patch, where a region's first copy goes
    object_pointer_weight: float = 0.0  # off: at 1.0 it fixed the object choice but moved first copies off the corner
    first_copy_weight: float = 0.3  # extra cross-entropy on each region's first copy, the choice of object
    fact_weight: float = 1.0  # extra cross-entropy on the words that state what the copies showed
    # -- data
    noisy_boxes: bool = True  # random box decimals in the input: copies come from the pointer, not the box text
    copy_noise: float = 0.1  # share of input copies moved to a neighbour: the model learns to resume after a slip
    replay: int = 2  # each scene trained on twice (shuffled within 256): rendering costs ~20 % of a step
    asks: int = 1  # questions per image; 2 helped shape-named pointing but cost answer accuracy, so off

    def card_fields(self) -> dict[str, Any]:
        """The knobs training_info.json records and the model card states (the losses' and the data's)."""
        keys = ("probe_weight", "shape_weight", "object_pointer_weight", "corner_weight", "first_copy_weight",
                "fact_weight", "replay", "asks", "copy_noise")
        values = asdict(self)
        return {k: values[k] for k in keys}
