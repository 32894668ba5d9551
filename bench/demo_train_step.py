"""Benchmark: one training step of the demo model, Conv3d patch embedding vs the same weights as a matmul.

`v1core.training.linear_patch_embedding` is what `train()` uses; this measures what it buys on this machine,
side by side in one process (same batches, interleaved). Usage: python bench/demo_train_step.py [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from v1core.demo.scenes import make_scene
from v1core.demo.data import scene_example
from v1core.demo.model import new_demo_model
from v1core.training import collate, linear_patch_embedding


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    model, proc = new_demo_model(seed=0)
    model.train()
    seeds = [range(i * args.batch_size, (i + 1) * args.batch_size) for i in range(args.steps)]
    batches = [collate([scene_example(proc, make_scene(s)) for s in batch_seeds], proc.tokenizer.pad_token_id)
               for batch_seeds in seeds]
    times: dict[str, list[float]] = {"conv3d": [], "linear": []}
    for i, batch in enumerate(batches):
        for name in ("conv3d", "linear"):  # interleaved so drift hits both
            ctx = linear_patch_embedding(model) if name == "linear" else nullcontext()
            with ctx:
                t = time.perf_counter()
                out = model(**batch, use_cache=False)
                out.loss.backward()
                model.zero_grad(set_to_none=True)
                if i > 0:  # the first batch warms up both
                    times[name].append(time.perf_counter() - t)
    conv, lin = statistics.median(times["conv3d"]), statistics.median(times["linear"])
    res = {"machine": f"{platform.machine()} threads={torch.get_num_threads()} torch={torch.__version__}",
           "batch": args.batch_size, "tokens": int(batches[-1]["input_ids"].numel()),
           "conv3d_s": round(conv, 3), "linear_s": round(lin, 3), "speedup": round(conv / lin, 2)}
    print(f"demo training step (fwd+bwd, batch {args.batch_size}): Conv3d patch embedding {conv:.3f} s, "
          f"linear {lin:.3f} s → ×{conv / lin:.2f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
