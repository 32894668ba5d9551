"""Benchmark: what tracing costs, measured side by side in one run.

(a) time — `generate_trace` vs plain `model.generate` on the same randomly initialised mid-size v1
    (hidden 512, 8 layers, ~1,000 patches), 256 new tokens, greedy. Target ratio ≤ 1.05.
(b) memory kept per step — our Step records vs `generate(output_logits=True, return_dict_in_generate=True)`
    on a model with the real output width (151,665 text ids + patches). Target ≥ 50× less.

Usage: python bench/tracing_overhead.py [--device cuda --shape 7b] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import fixture_tokenizer
from v1core.configuration_v1 import V1Config
from v1core.copy_tokens import COPY_TOKEN_START
from v1core.generation import generate_trace, generate_traces
from v1core.modeling_v1 import V1ForConditionalGeneration
from v1core.processing_v1 import V1Processor

SHAPES = {
    # hidden, layers, heads, kv, intermediate, vision (hidden, depth, heads)
    "mid": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                intermediate_size=1408, vision=(128, 2, 4)),
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944, vision=(1280, 32, 16)),
}


def make_model(shape: str, text_vocab: int, copy_start: int, device: str, dtype: torch.dtype):
    s = dict(SHAPES[shape])
    vh, vd, vheads = s.pop("vision")
    head_dim = s["hidden_size"] // s["num_attention_heads"]
    half = head_dim // 2
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    cfg = V1Config(
        vocab_size=text_vocab, copy_token_start=copy_start, copy_token_num=30000, region_token_id=910,
        image_token_id=902, video_token_id=903, vision_start_token_id=900, vision_end_token_id=901,
        rope_scaling={"type": "mrope", "mrope_section": section}, bos_token_id=906, eos_token_id=905,
        vision_config=dict(depth=vd, hidden_size=vh, num_heads=vheads, intermediate_size=vh * 2,
                           out_hidden_size=s["hidden_size"], fullatt_block_indexes=[vd - 1], window_size=112,
                           tokens_per_second=2),
        **s,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = V1ForConditionalGeneration(cfg)
    return model.to(dtype).eval()


def make_processor(model: V1ForConditionalGeneration, text_vocab: int) -> V1Processor:
    cfg = model.config
    return V1Processor(
        fixture_tokenizer(cfg.copy_token_start), copy_token_start=cfg.copy_token_start, copy_token_num=2048,
        image_token_id=902, vision_start_token_id=900, vision_end_token_id=901, max_pixels=28 * 28 * 1024,
    )


def bench_time(shape: str, device: str, dtype: torch.dtype, repeats: int, new_tokens: int) -> dict:
    model = make_model(shape, 8192, 8192, device, dtype)
    processor = make_processor(model, 8192)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (896, 896, 3), dtype=np.uint8))
    inputs = processor(image, "w10 w11 w12 w13")
    inputs = {k: v.to(device) for k, v in inputs.items()}
    n_patches = int(inputs["image_grid_thw"][0].prod()) // 4
    kw = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def plain() -> float:
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, **kw)
        sync()
        return time.perf_counter() - t

    def traced(threaded: bool = False) -> float:
        sync()
        t = time.perf_counter()
        steps = [s for _, s in generate_traces(model, inputs, processor, threaded=threaded, **kw)]
        sync()
        assert len(steps) == new_tokens
        return time.perf_counter() - t

    plain()  # warm-up
    traced()
    traced(True)
    plain_t, traced_t, thread_t = [], [], []
    for _ in range(repeats):  # interleaved so drift hits all three
        plain_t.append(plain())
        traced_t.append(traced())
        thread_t.append(traced(True))
    p, t, w = float(np.median(plain_t)), float(np.median(traced_t)), float(np.median(thread_t))
    return {"shape": shape, "device": device, "dtype": str(dtype).replace("torch.", ""), "patches": n_patches,
            "new_tokens": new_tokens, "plain_s": round(p, 3), "traced_s": round(t, 3), "ratio": round(t / p, 3),
            "traced_thread_s": round(w, 3), "thread_ratio": round(w / p, 3), "target_ratio": 1.05}


def bench_memory(new_tokens: int) -> dict:
    """Bytes kept for the whole decode: our steps vs output_logits, at the real output width."""
    text_vocab, copy_start = 152064, COPY_TOKEN_START
    model = make_model("mid", text_vocab, copy_start, "cpu", torch.float32)
    processor = make_processor(model, text_vocab)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (896, 896, 3), dtype=np.uint8))
    inputs = processor(image, "w10 w11")
    kw = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    with torch.inference_mode():
        out = model.generate(**inputs, **kw, output_logits=True, return_dict_in_generate=True)
    logits_bytes = sum(x.element_size() * x.nelement() for x in out.logits)
    width = out.logits[0].shape[-1]
    steps = list(generate_trace(model, inputs, processor, **kw))
    step_bytes = 0
    for s in steps:
        step_bytes += (s.pointer.nbytes + 8 * 3 + 8 * len(s.topk_ids) * 2 + sum(len(t) for t in s.topk_texts)
                       + len(s.text))
    return {"output_width": width, "new_tokens": new_tokens, "output_logits_bytes": logits_bytes,
            "trace_bytes": step_bytes, "ratio": round(logits_bytes / step_bytes, 1), "target_ratio": 50}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape", default="mid", choices=sorted(SHAPES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"machine: {platform.machine()} {platform.processor() or ''} cores={torch.get_num_threads()} "
          f"torch={torch.__version__} device={args.device}")
    res = {"time": bench_time(args.shape, args.device, dtype, args.repeats, args.new_tokens)}
    t = res["time"]
    print(f"(a) tracing overhead [{t['shape']}, {t['patches']} patches, {t['new_tokens']} tokens, {t['dtype']}]: "
          f"generate {t['plain_s']}s, generate_trace {t['traced_s']}s → ratio {t['ratio']} "
          f"(target ≤ {t['target_ratio']}); "
          f"with the worker-thread driver {t['traced_thread_s']}s → {t['thread_ratio']}")
    if not args.skip_memory:
        res["memory"] = m = bench_memory(min(args.new_tokens, 128))
        print(f"(b) memory per decode [{m['output_width']} logits wide, {m['new_tokens']} tokens]: "
              f"output_logits {m['output_logits_bytes'] / 1e6:.1f} MB vs trace {m['trace_bytes'] / 1e6:.2f} MB "
              f"→ {m['ratio']}× less (target ≥ {m['target_ratio']}×)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
