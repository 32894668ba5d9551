"""Storage benchmark: save/load speed, export throughput, bytes per step, float16 round-trip error.

    python bench/storage.py                 # temp SQLite file (the default backend)
    python bench/storage.py --db postgresql+psycopg://user@host/db   # an empty PostgreSQL database
    python bench/storage.py --export-traces 2000                      # smaller export run

Targets: save a 2,000-step trace with a 2,000-patch grid ≤ 150 ms; load one step ≤ 10 ms; export
10,000 labelled traces without images ≤ 60 s; float16 total-variation error ≤ 1e-3. Each line prints the measured
value and its ratio to the target (≤ 1.00 meets it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage import Annotation, AnnotationRecord, RevisitLabel, Store
from storage.codec import now_iso
from storage.export import export_hf, export_traces, export_v1g
from v1core.copy_tokens import COPY_TOKEN_START
from v1core.geometry import PatchGrid
from v1core.trace import Step, Trace

COPY0 = COPY_TOKEN_START


def long_trace(n_steps: int = 2000, grid: tuple[int, int] = (40, 50), seed: int = 0) -> Trace:
    """A 2,000-step trace on a 40×50 = 2,000-patch grid with softmax-like pointers and a copy every 50 steps."""
    rng = np.random.default_rng(seed)
    rows, cols = grid
    logits = rng.normal(size=(n_steps, rows, cols)).astype(np.float32) * 3
    ptr = np.exp(logits - logits.max(axis=(1, 2), keepdims=True))
    ptr /= ptr.sum(axis=(1, 2), keepdims=True)
    steps = []
    for i in range(n_steps):
        copy = i % 50 == 49
        patch = int(rng.integers(rows * cols)) if copy else None
        steps.append(Step(index=i, token_id=COPY0 + patch if copy else 1000 + i % 500,
                          text=f"<|copy_{patch}|>" if copy else f" w{i}", is_copy=copy, patch=patch,
                          p_copy=float(rng.random()), entropy=float(rng.random() * 5), gate=None,
                          topk_ids=[int(v) for v in rng.integers(0, 150000, 5)],
                          topk_texts=[" the", " a", " of", " to", " in"],
                          topk_probs=[0.41, 0.2, 0.1, 0.05, 0.01], pointer=ptr[i]))
    return Trace(model_id="bench", image_sha256="cd" * 32, image_size=(cols * 28, rows * 28),
                 resized_size=(cols * 28, rows * 28), grid=(rows, cols), question="How long?", steps=steps,
                 output_text="".join(s.text for s in steps), prompt_tokens=2100)


def typical_trace(i: int) -> Trace:
    """A typical labelled trace for the export run: ~120 steps, two detect() regions, text-only (the training
    exports read trace rows, revisits and annotations, never the pointer blobs)."""
    grid = PatchGrid.for_image(640, 480)
    rows, cols = grid.shape
    pieces: list[tuple[str, int | None]] = [("<think>", None)] + [(f" word{j}", None) for j in range(40)]
    for k, box in enumerate([(100 + i % 50, 120, 220, 230), (300, 300, 400 + i % 30, 420)]):
        pieces.append((f' detect(query="object {k}", objects=["<obj{k}><region>{grid.region_text(box)}', None))
        pieces += [(f"<|copy_{p}|>", p) for p in grid.bbox_to_patches(box)]
        pieces.append(('</region>"])', None))
        pieces += [(f" more{j}", None) for j in range(15)]
    pieces += [("</think>", None), ("answer", None)]
    steps = [Step(index=j, token_id=COPY0 + p if p is not None else 1000 + j, text=t, is_copy=p is not None, patch=p,
                  p_copy=0.5, entropy=1.0) for j, (t, p) in enumerate(pieces)]
    return Trace(model_id="bench", image_sha256="ab" * 32, image_size=(640, 480), resized_size=grid.resized,
                 grid=(rows, cols), question=f"Question {i}?", system_prompt="You are v1.", steps=steps,
                 output_text="".join(t for t, _ in pieces), prompt_tokens=400, trace_id=f"{i:032x}",
                 created_at=f"2026-01-01T00:00:00.{i:06d}+00:00")


def db_size(store: Store, path: Path | None) -> int | None:
    if path is None:
        return None
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def report(name: str, value: float, unit: str, target: float | None, fmt: str = "{:.1f}") -> None:
    ratio = f"{value / target:5.2f}× target ({fmt.format(target)} {unit})" if target else ""
    print(f"  {name:<52} {fmt.format(value):>10} {unit:<6} {ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="store URL (default: a temp SQLite file)")
    ap.add_argument("--export-traces", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="v1studio-bench-"))
    db_path = None if args.db else tmp / "bench.db"
    url = args.db or f"sqlite:///{db_path}"
    store = Store(url)
    print(f"storage benchmark on {store!r}  (python {sys.version.split()[0]}, {os.cpu_count()} CPU)")

    # ------------------------------------------------------------------ save / load one long trace
    base = long_trace()
    before = db_size(store, db_path)
    t_save = []
    ids = []
    for r in range(args.repeats):
        tr = long_trace(seed=0)
        tr.trace_id = f"long{r:028d}"
        t0 = time.perf_counter()
        store.save_trace(tr)
        t_save.append(time.perf_counter() - t0)
        ids.append(tr.trace_id)
    after = db_size(store, db_path)
    torch_note = "torch" in sys.modules
    print(f"\n2,000-step trace, 40×50 = 2,000-patch grid (median of {args.repeats}; float16 via "
          f"{'torch' if torch_note else 'numpy'}):")
    report("save_trace", statistics.median(t_save) * 1e3, "ms", 150.0)
    t_step = []
    rng = np.random.default_rng(0)
    for _ in range(200):
        i = int(rng.integers(2000))
        t0 = time.perf_counter()
        st = store.get_step(ids[0], i)
        t_step.append(time.perf_counter() - t0)
        assert st.index == i
    report("get_step (one step + its pointer)", statistics.median(t_step) * 1e3, "ms", 10.0, "{:.2f}")
    report("get_step p95", float(np.percentile(t_step, 95)) * 1e3, "ms", 10.0, "{:.2f}")
    t0 = time.perf_counter()
    back = store.get_trace(ids[0])
    report("get_trace (all 2,000 steps, decoded)", (time.perf_counter() - t0) * 1e3, "ms", None)

    payload = None
    with store.engine.connect() as conn:
        payload = conn.exec_driver_sql(
            "SELECT SUM(LENGTH(pointers)) + SUM(LENGTH(steps_json)) FROM trace_chunks WHERE trace_id = ?"
            if store.dialect == "sqlite" else
            "SELECT SUM(LENGTH(pointers)) + SUM(OCTET_LENGTH(steps_json)) FROM trace_chunks WHERE trace_id = %s",
            (ids[0],)).scalar()
    report("stored bytes per step (pointer + step fields)", payload / 2000, "B", None, "{:.0f}")
    if before is not None and after is not None:
        report("on-disk bytes per step (SQLite file growth)", (after - before) / (2000 * args.repeats), "B", None,
               "{:.0f}")
    orig = base.pointer_matrix()
    got = back.pointer_matrix()
    tv = 0.5 * np.abs(orig - got).sum(axis=(1, 2))
    report("float16 round trip: max total variation", float(tv.max()), "", 1e-3, "{:.2e}")
    report("float16 round trip: max |Δp|", float(np.abs(orig - got).max()), "", None, "{:.2e}")

    if not torch_note:
        try:
            import torch  # noqa: F401 - the app and tracer always have it loaded

            t_save2 = []
            for r in range(args.repeats):
                tr = long_trace(seed=0)
                tr.trace_id = f"torch{r:027d}"
                t0 = time.perf_counter()
                store.save_trace(tr)
                t_save2.append(time.perf_counter() - t0)
            report("save_trace with torch loaded (as in the app)", statistics.median(t_save2) * 1e3, "ms", 150.0)
        except ImportError:
            pass

    # ------------------------------------------------------------------ export throughput
    n = args.export_traces
    print(f"\nExport of {n:,} labelled traces (~120 steps, 2 regions each; no images):")
    t0 = time.perf_counter()
    proto = store.prepare_trace(typical_trace(0))
    with store.transaction() as tx:
        for i in range(n):
            tr = typical_trace(i)
            p = store.prepare_trace(tr)
            ann = Annotation(annotator=f"a{i % 5}", verdict=("correct", "incorrect", "unsure")[i % 3],
                             revisit_labels=[RevisitLabel(0, "wrong_region", corrected_patches=[0, 1, 23, 24])]
                             if i % 4 == 0 else [RevisitLabel(0, "correct")])
            p.annotations = [AnnotationRecord(tr.trace_id, version=1, created_at=now_iso(), annotation=ann.validate(),
                                              based_on=0)]
            tx.write_trace(p)
    del proto
    print(f"  (populated in {time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    rep = export_v1g(store, tmp / "v1g.jsonl", images="none", model="bench")
    dt = time.perf_counter() - t0
    assert rep.rows == n, rep.summary()
    report(f"export v1g JSONL ({rep.rows:,} rows)", dt, "s", 60.0, "{:.2f}")
    t0 = time.perf_counter()
    rep = export_hf(store, tmp / "hf", images="none", model="bench")
    dt = time.perf_counter() - t0
    assert rep.rows == n, rep.summary()
    report(f"export HF parquet ({rep.rows:,} rows)", dt, "s", 60.0, "{:.2f}")
    t0 = time.perf_counter()
    rep = export_traces(store, tmp / "traces.jsonl", model="bench")
    report(f"export full traces JSONL ({rep.rows:,} rows)", time.perf_counter() - t0, "s", None, "{:.2f}")
    store.close()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
