"""Benchmark: what the demo model's fourth vision block costs per training step.

The demo's vision tower has four blocks (`DEMO_VISION`) because three could not tell a region's first-copy patch
what shape its object has (see the comment there). This times the same forward + backward on the same batches
for the three-block tower it replaced and the current one, interleaved so machine drift hits both, and prints the
ratio. Usage: python bench/demo_vision_depth.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from v1core.demo import data, model as demo_model
from v1core.training import collate, linear_patch_embedding

THREE_BLOCKS = dict(depth=3, fullatt_block_indexes=[2])  # the tower before 2026-11-29


def build(vision_overrides: dict) -> torch.nn.Module:
    saved = dict(demo_model.DEMO_VISION)
    demo_model.DEMO_VISION.update(vision_overrides)
    try:
        model, _ = demo_model.new_demo_model(seed=0)
    finally:
        demo_model.DEMO_VISION.clear()
        demo_model.DEMO_VISION.update(saved)
    return model.train()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    models = {"three_blocks": build(THREE_BLOCKS), "four_blocks": build({})}
    _, proc = demo_model.new_demo_model(seed=0)
    stream = data.demo_examples(proc, 8, replay=1, replay_pool=8)
    batches = [collate([next(stream) for _ in range(8)], proc.tokenizer.pad_token_id) for _ in range(args.steps + 1)]
    times: dict[str, list[float]] = {k: [] for k in models}
    for i, batch in enumerate(batches):
        for name, model in models.items():
            with linear_patch_embedding(model):
                t0 = time.perf_counter()
                model(**batch, use_cache=False).loss.backward()
                if i > 0:  # the first batch warms up both
                    times[name].append(time.perf_counter() - t0)
    res = {k: round(statistics.mean(v), 3) for k, v in times.items()}
    ratio = res["four_blocks"] / res["three_blocks"]
    print(f"demo forward + backward, batch 8: three vision blocks {res['three_blocks']:.3f} s, "
          f"four {res['four_blocks']:.3f} s → ×{ratio:.2f} time per step")
    print(json.dumps({"machine": f"{platform.machine()} threads={torch.get_num_threads()} torch={torch.__version__}",
                      "steps": args.steps, **res, "time_ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
