"""Benchmark: traces per minute with the demo model on CPU, batch 1 vs batch 8 (same 16 scenes, one run).

Usage: python bench/batch_throughput.py [--n 16] [--max-new-tokens 160]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from v1core.batch import JsonlShardSink, TraceItem, trace_batch
from v1core.demo.scenes import eval_seeds, make_scene
from v1core.images import image_sha256
from v1core.loading import load_model
from v1core.trace import DecodingSettings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    args = ap.parse_args()
    model, proc = load_model()
    scenes = [make_scene(s) for s in eval_seeds(args.n, start=300_000)]
    items = [TraceItem(source=str(s.seed), question=s.question, image=s.image, image_sha256=image_sha256(s.image))
             for s in scenes]
    settings = DecodingSettings(max_new_tokens=args.max_new_tokens)
    res = {}
    for bs in (1, 8, 1, 8):  # interleaved, second pass counted (first warms up)
        with tempfile.TemporaryDirectory() as d:
            sink = JsonlShardSink(d)
            t = time.perf_counter()
            summary = trace_batch(model, proc, items, settings, sink, batch_size=bs, progress=False, log=lambda m: None)
            sink.close()
            res[bs] = {"seconds": round(time.perf_counter() - t, 2), "done": summary.done, "tokens": summary.tokens}
    for r in res.values():
        r["traces_per_min"] = round(60 * r["done"] / r["seconds"], 1)
    ratio = round(res[8]["traces_per_min"] / res[1]["traces_per_min"], 2)
    print(f"demo model, CPU, {args.n} scenes: batch 1 {res[1]['traces_per_min']} traces/min, "
          f"batch 8 {res[8]['traces_per_min']} traces/min → ×{ratio}")
    print(json.dumps({"batch1": res[1], "batch8": res[8], "ratio_b8_over_b1": ratio}))


if __name__ == "__main__":
    main()
