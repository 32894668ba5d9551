"""Benchmark: re-decoding a branch from step t costs no more than decoding the remaining tokens (+10%).

Same randomly initialised mid-size v1 as bench/tracing_overhead.py (hidden 512, 8 layers, 1,024 patches).
A 256-token parent trace; a branch inserts a 4-patch revisit at step t and decodes to the same length.
  branch  = BranchRun with the prompt's KV cache reused (deep copy + one forward over kept tokens + decoding)
  decode  = traced decoding of the same number of tokens from a cache that already holds prompt + prefix
Target: branch / decode ≤ 1.10.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tracing_overhead import make_model, make_processor
from v1core.generation import TraceRun, generate_trace
from v1core.intervene import BranchEdit, BranchRun, PromptState
from v1core.trace import DecodingSettings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--branch-step", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = make_model("mid", 8192, 8192, "cpu", torch.float32)
    processor = make_processor(model, 8192)
    model.generation_config.eos_token_id = 905
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (896, 896, 3), dtype=np.uint8))
    settings = DecodingSettings(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    parent = TraceRun(model, processor, image, "w10 w11 w12", settings).run()
    state = PromptState(model, processor, image, parent)
    edit = BranchEdit("insert", step=args.branch_step, patches=[1, 2, 33, 34])
    remaining = args.tokens - args.branch_step - len(edit.patches)

    def branch() -> float:
        t = time.perf_counter()
        child = BranchRun(model, processor, image, parent, edit, state=state).run()
        assert len(child.steps) == args.tokens, len(child.steps)
        return time.perf_counter() - t

    # reference: a cache that already holds prompt + the branch's forced prefix, then decode `remaining` tokens
    prefix = [s.token_id for s in parent.steps[: args.branch_step]]
    prefix += [processor.copy_token_start + p for p in edit.patches]
    full = torch.tensor([state.inputs["input_ids"][0].tolist() + prefix])
    warm = copy.deepcopy(state.cache)
    model.model.rope_deltas = state.rope_deltas
    with torch.inference_mode():
        warm = model(input_ids=full[:, state.prompt_len : -1], cache=warm, use_cache=True).cache

    def decode_only() -> float:
        cache = copy.deepcopy(warm)
        model.model.rope_deltas = state.rope_deltas
        t = time.perf_counter()
        steps = list(generate_trace(model, {"input_ids": full, "attention_mask": torch.ones_like(full),
                                            "image_grid_thw": state.inputs["image_grid_thw"]}, processor,
                                    cache=cache, max_new_tokens=remaining, min_new_tokens=remaining))
        assert len(steps) == remaining
        return time.perf_counter() - t

    branch(), decode_only()
    b, d = [], []
    for _ in range(args.repeats):
        b.append(branch())
        d.append(decode_only())
    res = {"tokens": args.tokens, "branch_step": args.branch_step, "remaining_decoded": remaining,
           "branch_s": round(float(np.median(b)), 3), "decode_only_s": round(float(np.median(d)), 3)}
    res["ratio"] = round(res["branch_s"] / res["decode_only_s"], 3)
    print(f"branch at step {args.branch_step} of {args.tokens}: {res['branch_s']}s vs decoding the remaining "
          f"{remaining} tokens {res['decode_only_s']}s → ratio {res['ratio']} (target ≤ 1.10)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
