"""Benchmark: training throughput of the demo recipe with every scene fresh vs each scene seen twice.

`train_demo(replay=2)` renders and preprocesses half as many scenes for the same number of steps. This runs the
same training step (forward + backward + AdamW, auxiliaries included) fed by both streams, interleaved, and
prints the data time, the step time and the ratio of steps per minute. Usage: python bench/demo_data_replay.py
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

from v1core.demo.data import demo_examples
from v1core.demo.losses import Auxiliaries, CellProbes, FactWordLoss, FirstCopyLoss, fact_trigger_ids
from v1core.demo.model import new_demo_model
from v1core.training import collate, linear_patch_embedding


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    model, proc = new_demo_model(seed=0)
    model.train()
    start = model.config.copy_token_start
    aux = Auxiliaries([CellProbes(128, model.config.image_token_id, corner_weight=2.0), FirstCopyLoss(start, 0.3),
                       FactWordLoss(fact_trigger_ids(proc.tokenizer), 0.3)])
    opt = torch.optim.AdamW(list(model.parameters()) + list(aux.parameters()), lr=1e-4)
    # train_demo's replay window is 256 scenes; 16 averages out within a few steps
    streams = {name: demo_examples(proc, 8, replay=r, replay_pool=16) for name, r in (("fresh", 1), ("replay2", 2))}
    data: dict[str, list[float]] = {k: [] for k in streams}
    step: dict[str, list[float]] = {k: [] for k in streams}
    with linear_patch_embedding(model):
        for i in range(args.steps + 1):
            for name, examples in streams.items():  # interleaved so machine drift hits both
                t0 = time.perf_counter()
                chunk = [next(examples) for _ in range(8)]
                batch = collate(chunk, proc.tokenizer.pad_token_id)
                t1 = time.perf_counter()
                out = model(**batch, use_cache=False, output_hidden_states=True)
                (out.loss + aux(out, batch, chunk)).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if i > 0:  # the first round warms up both
                    data[name].append(t1 - t0)
                    step[name].append(time.perf_counter() - t0)
    res = {k: {"data_s": round(statistics.mean(data[k]), 3), "step_s": round(statistics.mean(step[k]), 3)}
           for k in streams}
    ratio = res["fresh"]["step_s"] / res["replay2"]["step_s"]
    fresh, twice = res["fresh"], res["replay2"]
    print(f"demo training step, batch 8: fresh scenes {fresh['step_s']:.3f} s (data {fresh['data_s']:.3f} s), "
          f"each scene twice {twice['step_s']:.3f} s (data {twice['data_s']:.3f} s) → ×{ratio:.2f} steps/min")
    print(json.dumps({"machine": f"{platform.machine()} threads={torch.get_num_threads()} torch={torch.__version__}",
                      "steps": args.steps, **res, "steps_per_min_ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
