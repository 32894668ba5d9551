"""Benchmark: server-side cost of one viewer step on a 2,000-patch grid (target ≤ 50 ms).

Measures, for a 40×50 merged-patch grid (2,000 patches) over a 1400×1120 photo:
  build      `HeatmapCanvas.figure(pointer, …)` — what the viewer does when the step moves (the photo is
             encoded once per image and cached, so it is not part of a step);
  serialise  what `st.plotly_chart` then does with that figure (plotly.tools figure check + plotly.io.to_json);
  total      build + serialise: the server-side cost of one step's figure;
  naive      a one-shot `pointer_figure` that re-validates everything, for comparison;
  encode     the one-time photo encoding (per image, cached by sha256), for reference.
Prints each median in ms and total's ratio to the 50 ms target; `--json` writes the numbers.

Usage: python bench/figure.py [--repeats 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.figures import HeatmapCanvas, HeatmapStyle, encode_image, pointer_figure

TARGET_MS = 50.0
GRID = (40, 50)
IMAGE_SIZE = (1400, 1120)


def _photo():
    from PIL import Image

    try:
        from skimage import data

        return Image.fromarray(data.astronaut()).resize(IMAGE_SIZE)
    except Exception:  # noqa: BLE001 - any photo-like image will do
        rng = np.random.default_rng(0)
        return Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8))


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import plotly.io as pio
    import plotly.tools

    rng = np.random.default_rng(0)
    photo = _photo()
    t = time.perf_counter()
    uri = encode_image(photo)
    encode_ms = (time.perf_counter() - t) * 1e3
    pointers = rng.dirichlet(np.full(GRID[0] * GRID[1], 0.05), size=args.repeats).astype(np.float32)
    pointers = pointers.reshape(args.repeats, *GRID)
    boxes = [(100.0, 100.0, 240.0, 212.0), (700.0, 560.0, 784.0, 644.0)]

    results: dict[str, dict[str, float]] = {}
    for log in (False, True):
        canvas = HeatmapCanvas(IMAGE_SIZE, GRID, uri, HeatmapStyle(log=log))
        canvas.figure(pointers[0])  # warm up
        build, ser, total = [], [], []
        for i, p in enumerate(pointers):
            t0 = time.perf_counter()
            fig = canvas.figure(p, copied_patch=int(i % 2000), region_boxes=boxes, title=f"step {i} · token",
                                meta={"step": i})
            t1 = time.perf_counter()
            checked = plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
            spec = pio.to_json(checked, validate=False)
            t2 = time.perf_counter()
            build.append(t1 - t0)
            ser.append(t2 - t1)
            total.append(t2 - t0)
        results["log" if log else "linear"] = {
            "build_ms": round(_median_ms(build), 2),
            "serialise_ms": round(_median_ms(ser), 2),
            "total_ms": round(_median_ms(total), 2),
            "total_p95_ms": round(float(np.percentile(total, 95)) * 1e3, 2),
            "spec_kB": round(len(spec) / 1024, 1),
        }
    naive = []
    for p in pointers[: min(50, args.repeats)]:
        t0 = time.perf_counter()
        fig = pointer_figure(p, IMAGE_SIZE, GRID, uri, copied_patch=3, region_boxes=boxes, title="x")
        naive.append(time.perf_counter() - t0)
    results["naive_build_ms"] = round(_median_ms(naive), 2)  # type: ignore[assignment]
    results["encode_once_ms"] = round(encode_ms, 2)  # type: ignore[assignment]

    lin = results["linear"]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}")
    print(f"grid {GRID[0]}×{GRID[1]} = {GRID[0] * GRID[1]} patches, image {IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}, "
          f"{args.repeats} steps")
    for mode in ("linear", "log"):
        r = results[mode]
        print(f"{mode:7s} build {r['build_ms']:.2f} ms + serialise {r['serialise_ms']:.2f} ms = "
              f"total {r['total_ms']:.2f} ms (p95 {r['total_p95_ms']:.2f} ms), spec {r['spec_kB']} kB")
    print(f"one-shot pointer_figure build {results['naive_build_ms']:.2f} ms; photo encoded once in "
          f"{results['encode_once_ms']:.1f} ms")
    ratio = lin["total_ms"] / TARGET_MS
    print(f"step figure total {lin['total_ms']:.2f} ms vs target {TARGET_MS:.0f} ms: ratio {ratio:.3f} "
          f"({'OK' if ratio <= 1 else 'OVER TARGET'})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"target_ms": TARGET_MS, "ratio": ratio, **results}, indent=2))
    return 0 if ratio <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
