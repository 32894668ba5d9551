"""Storage at v1-7B scale: one 2,000-step trace on a 128×128 = 16,384-patch grid, saved and read three ways side
by side in one run:

    raw float16   the pointer chunks as they were stored before the codec (anchor)
    lossless      storage.pointer_codec, every step exact float16   ($V1STUDIO_POINTERS=lossless)
    compact       storage.pointer_codec at the store's fidelity     (the default)

    python bench/storage_scale.py                      # 128×128 × 2,000 steps, temp SQLite files
    python bench/storage_scale.py --grid 37 37 --steps 1000

Prints save / full load / one step / a 64-step window, bytes per step, the database file size, the worst total
variation at text and copy steps, and the size of a 10,000 × 1,000-step library. Targets (docs/BENCHMARKS.md):
≤ 8 KB per step within TV 1e-2 (text) / 1e-3 (copy), save ≤ 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage import Store, codec
from storage.pointer_codec import to_float16, total_variation
from v1core.synthetic import big_trace


def _raw_float16(steps, *, mode=None) -> bytes:  # the pre-codec chunk format, still readable
    return to_float16(np.stack([st.pointer for st in steps])).tobytes()


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run(kind: str, trace, tmp: Path) -> dict:
    saved_encode, saved_env = codec.encode_pointers, os.environ.get("V1STUDIO_POINTERS")
    if kind == "raw float16":
        codec.encode_pointers = _raw_float16
    os.environ["V1STUDIO_POINTERS"] = "lossless" if kind == "lossless" else "compact"
    path = tmp / f"{kind.replace(' ', '_')}.db"
    store = Store(f"sqlite:///{path}")
    try:
        save_s, _ = timed(lambda: store.save_trace(trace))
        load_s, back = timed(lambda: store.get_trace(trace.trace_id))
        n = len(trace.steps)
        step_s, _ = timed(lambda: store.get_step(trace.trace_id, n // 2), repeats=9)
        win_s, _ = timed(lambda: store.get_steps(trace.trace_id, n // 2, n // 2 + 64), repeats=5)
        with store.engine.connect() as conn:
            blob_bytes = conn.exec_driver_sql("SELECT SUM(LENGTH(pointers)) FROM trace_chunks").scalar()
        P, Q = trace.pointer_matrix(), back.pointer_matrix()
        tv = total_variation(P, Q)
        near = np.array([st.patch is not None or st.p_copy >= 0.2 for st in trace.steps])
    finally:
        store.close()
        codec.encode_pointers = saved_encode
        if saved_env is None:
            os.environ.pop("V1STUDIO_POINTERS", None)
        else:
            os.environ["V1STUDIO_POINTERS"] = saved_env
    return dict(save=save_s, load=load_s, step=step_s, window=win_s, per_step=blob_bytes / n,
                file=path.stat().st_size, tv_text=float(tv[~near].max(initial=0)),
                tv_copy=float(tv[near].max(initial=0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, nargs=2, default=(128, 128), metavar=("ROWS", "COLS"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows, cols = args.grid
    trace = big_trace(rows, cols, args.steps, seed=args.seed)
    print(f"# {rows}×{cols} = {rows * cols:,} patches, {args.steps:,} steps "
          f"({sum(st.patch is not None for st in trace.steps)} copy steps); encode threads {codec.ENCODE_THREADS}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as d:
        res = {k: run(k, trace, Path(d)) for k in ("raw float16", "lossless", "compact")}
    anchor = res["raw float16"]
    print("| | raw float16 (anchor) | lossless | compact | compact / anchor |")
    print("|---|---:|---:|---:|---:|")
    rowsfmt = [("save", "save", "{:.2f} s"), ("full load", "load", "{:.2f} s"), ("one step", "step", "{:.1f} ms"),
               ("64-step window", "window", "{:.0f} ms"), ("pointer bytes / step", "per_step", "{:,.0f} B"),
               ("database file", "file", "{:,.0f} B")]
    for label, key, fmt in rowsfmt:
        scale = 1e3 if key in ("step", "window") else 1
        vals = [fmt.format(res[k][key] * scale) for k in res]
        print(f"| {label} | {' | '.join(vals)} | {res['compact'][key] / anchor[key]:.2f} |")
    for label, key, bound in (("max TV, text steps", "tv_text", "1e-2"), ("max TV, copy steps", "tv_copy", "1e-3")):
        vals = " | ".join(f"{res[k][key]:.1e}" for k in res)
        print(f"| {label} | {vals} | bound {bound} |")
    lib = {k: res[k]["per_step"] * 1000 * 10_000 / 1e9 for k in res}
    vals = " | ".join(f"{lib[k]:,.0f} GB" for k in res)
    print(f"| library, 10,000 × 1,000 steps | {vals} | "
          f"{lib['compact'] / lib['raw float16']:.2f} |")


if __name__ == "__main__":
    main()
