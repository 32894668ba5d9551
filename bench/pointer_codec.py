"""Pointer codec benchmark: bytes per step, total variation and speed of candidate pointer codecs, side by side.

    python bench/pointer_codec.py              # full run, ~10 min on the 2-core VM
    python bench/pointer_codec.py --quick      # 300-step traces, no store run (~2 min)
    python bench/pointer_codec.py --no-demo    # skip the demo-model traces (no model load)
    python bench/pointer_codec.py --sections whole,scale   # only some tables

Prints markdown tables (docs/BENCHMARKS.md, "Pointer storage"):

1. **Text steps** (not copies, p_copy < 0.2) of synthetic traces (`v1core.synthetic.big_trace`, σ 0.25) at
   37×37, 64×64 and 128×128 and of real demo-model traces: bytes per step, the same scaled to 16,384 patches,
   max / p99 TV, encode / decode MB/s (of the raw float16 size). Lossy candidates with a parameter take the
   coarsest setting whose max TV over the data set is ≤ 1e-2.
2. **Kept steps** (copies and p_copy ≥ 0.2), which the codec stores as exact float16.
3. **The codec on whole traces** (compact and lossless modes), TV at text and copy steps, library sizes.
4. **Noise sensitivity** of the generator (σ 0.1 / 0.25 / 0.5) and **calibration** against the demo model.
5. **Speed at full scale** (2,000 steps × 16,384 patches) and **today's Store** with raw float16 as the
   anchor for wiring the codec in (SQLite in a temp dir).

TV = ½·Σ|p − q| after renormalising q, against the float32 pointers the tracer produced.
"""

from __future__ import annotations

import argparse
import io
import lzma
import os
import statistics
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

try:  # for the zstd candidates only; the codec itself needs nothing beyond the standard library
    import zstandard
except ImportError:  # pragma: no cover - reported in the output
    zstandard = None

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage import pointer_codec as pc
from storage.codec import to_float16
from v1core.synthetic import big_trace

TV_TEXT = 1e-2
TV_COPY = 1e-3
# whole-trace variants: (mode, copy_tv); the middle one stores copy steps lossily within 1e-3 instead of exactly
SECTIONS = ("text", "kept", "whole", "noise", "temporal", "scale")
VARIANTS = (("compact", None), ("compact, copies ≤ 1e-3", 0.95 * TV_COPY), ("lossless", None))
N16K = 16384


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Data:
    name: str
    P: np.ndarray  # float32 [n, rows, cols]
    keep: np.ndarray  # bool [n]: copy step or p_copy ≥ threshold
    is_copy: np.ndarray
    p_copy: np.ndarray

    @property
    def n_cells(self) -> int:
        return self.P.shape[1] * self.P.shape[2]


def synthetic(rows: int, cols: int, n: int, *, seed: int = 0, noise: float = 0.25) -> Data:
    tr = big_trace(rows, cols, n, seed=seed, noise=noise)
    return _from_trace(f"synthetic {rows}×{cols} σ{noise:g}", tr)


def _from_trace(name: str, tr) -> Data:
    P = tr.pointer_matrix().astype(np.float32)
    cp = np.array([s.is_copy for s in tr.steps])
    pcp = np.array([s.p_copy for s in tr.steps], dtype=np.float64)
    return Data(name, P, cp | (pcp >= pc.COPY_THRESHOLD), cp, pcp)


def demo_traces() -> list[Data]:
    """Real traces of the embedded demo model: the six gallery scenes and three photos, greedy and sampled."""
    from app.gallery import gallery, load_gallery_image
    from v1core import load_model
    from v1core.generation import TraceRun
    from v1core.trace import DecodingSettings

    model, proc = load_model()
    out = []
    for g in gallery():
        img = load_gallery_image(g.key).image
        for sample in (False, True):
            run = TraceRun(model, proc, img, g.question,
                           DecodingSettings(max_new_tokens=192, do_sample=sample, temperature=1.0, seed=1))
            for _ in run:
                pass
            out.append(_from_trace(f"demo {g.key}{' sampled' if sample else ''}", run.trace))
    return out


# ------------------------------------------------------------------------------------------- candidates
def tv_of(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    return pc.total_variation(P, Q) if len(P) else np.zeros(0)


def shuffle16(h: np.ndarray) -> bytes:
    return np.ascontiguousarray(h.view(np.uint8).reshape(-1, 2).T).tobytes()


def unshuffle16(b: bytes, shape) -> np.ndarray:
    a = np.frombuffer(b, np.uint8).reshape(2, -1)
    return np.ascontiguousarray(a.T).view("<u2").reshape(shape)


def zstd_c(level: int) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    if zstandard is None:
        def missing(_b: bytes) -> bytes:
            raise RuntimeError("zstandard is not installed")
        return missing, missing
    c = zstandard.ZstdCompressor(level=level)
    d = zstandard.ZstdDecompressor()
    return c.compress, d.decompress


def zlib_c(level: int):
    return (lambda b: zlib.compress(b, level)), zlib.decompress


def lzma_c():
    return (lambda b: lzma.compress(b, preset=6)), lzma.decompress


def huff_c():
    def comp(b: bytes) -> bytes:
        co = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)
        return co.compress(b) + co.flush()
    return comp, (lambda b: zlib.decompress(b, -15))


FAST = "zstd-3" if zstandard is not None else "zlib-6"  # the general-purpose compressor of the summary rows
COMPRESSORS = {"zstd-3": zstd_c(3), "zstd-19": zstd_c(19), "zlib-6": zlib_c(6), "lzma-6": lzma_c(),
               "huffman": huff_c()}


class Candidate:
    """encode(P) -> bytes, decode(bytes, shape) -> float32; `param` tuned for the TV bound when `params`."""

    name: str
    lossless = False
    params: tuple = ()
    param = None
    max_cells: int | None = None  # slow candidates run on a prefix

    def encode(self, P: np.ndarray) -> bytes:
        raise NotImplementedError

    def decode(self, b: bytes, shape) -> np.ndarray:
        raise NotImplementedError

    def label(self) -> str:
        return self.name if self.param is None else f"{self.name} ({self.param_text()})"

    def param_text(self) -> str:
        return str(self.param)


class RawF16(Candidate):
    name = "raw float16 (today)"
    lossless = True

    def encode(self, P):
        return to_float16(P).tobytes()

    def decode(self, b, shape):
        return np.frombuffer(b, "<f2").reshape(shape).astype(np.float32)


class ShuffleF16(Candidate):
    lossless = True

    def __init__(self, comp: str, max_cells: int | None = None):
        self.comp = comp
        self.name = f"float16 + shuffle + {comp}"
        self.max_cells = max_cells

    def encode(self, P):
        return COMPRESSORS[self.comp][0](shuffle16(to_float16(P)))

    def decode(self, b, shape):
        return unshuffle16(COMPRESSORS[self.comp][1](b), shape).view("<f2").astype(np.float32)


class MantissaF16(Candidate):
    """float16 with only `param` of its 10 mantissa bits (rounded in bit-pattern space), shifted, shuffled."""

    params = (0, 1, 2, 3, 4, 5, 6, 7, 8)  # coarsest first

    def __init__(self, comp: str = "zstd-3"):
        self.comp = comp
        self.name = f"float16, fewer mantissa bits + shuffle + {comp}"

    def param_text(self):
        return f"{self.param} mantissa bits"

    def encode(self, P):
        u = to_float16(P).view(np.uint16).astype(np.uint32)
        drop = 10 - self.param
        if drop:
            u = (u + (1 << (drop - 1))) >> drop
        return COMPRESSORS[self.comp][0](shuffle16(u.astype(np.uint16)))

    def decode(self, b, shape):
        u = unshuffle16(COMPRESSORS[self.comp][1](b), shape).astype(np.uint16)
        return (u << np.uint16(10 - self.param)).view("<f2").astype(np.float32)


def log8_quantise(P: np.ndarray, delta: float) -> np.ndarray:
    """uint8 y = round((log p_max − log p)/Δ) per step; 255 = below the range (decoded as 0)."""
    with np.errstate(divide="ignore"):
        lp = np.log(P.astype(np.float64))
    top = lp.max(axis=(1, 2), keepdims=True)
    y = np.rint((top - lp) / delta)
    return np.where(np.isfinite(y), np.minimum(y, 255), 255).astype(np.uint8)


def log8_dequantise(y: np.ndarray, delta: float) -> np.ndarray:
    q = np.where(y < 255, np.exp(-delta * y.astype(np.float64)), 0.0)
    return (q / q.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


class Log8(Candidate):
    """8-bit log-probability relative to the step max, step Δ nats, then a compressor; 'temporal' codes
    y_t − y_{t−1} (mod 256); 'png' / 'webp' code each group of 8 steps as one lossless grey image."""

    params = tuple(np.round(np.arange(0.30, 0.0, -0.01), 3))  # coarsest first

    def __init__(self, how: str = "zstd-3"):
        self.how = how
        self.name = {"temporal": "log8, temporal delta + zstd-3", "png": "log8 + PNG (Pillow)",
                     "webp": "log8 + WebP lossless (Pillow)"}.get(how, f"log8 + {how}")
        if how == "webp":
            self.max_cells = 4_000_000

    def param_text(self):
        return f"Δ {self.param:g} nats"

    def encode(self, P):
        y = log8_quantise(P, self.param)
        if self.how == "temporal":
            d = y.copy()
            d[1:] = y[1:] - y[:-1]
            return COMPRESSORS["zstd-3"][0](d.tobytes())
        if self.how in ("png", "webp"):
            from PIL import Image

            out = []
            for a in range(0, len(y), 8):
                im = Image.fromarray(np.ascontiguousarray(y[a:a + 8].reshape(-1, y.shape[2])), "L")
                buf = io.BytesIO()
                if self.how == "png":
                    im.save(buf, "PNG", compress_level=9)
                else:
                    im.convert("RGB").save(buf, "WEBP", lossless=True, quality=100, method=4)
                out.append(len(buf.getvalue()).to_bytes(4, "little") + buf.getvalue())
            return b"".join(out)
        return COMPRESSORS[self.how][0](y.tobytes())

    def decode(self, b, shape):
        if self.how == "temporal":
            d = np.frombuffer(COMPRESSORS["zstd-3"][1](b), np.uint8).reshape(shape)
            y = np.cumsum(d, axis=0, dtype=np.uint8)
        elif self.how in ("png", "webp"):
            from PIL import Image

            parts, pos = [], 0
            while pos < len(b):
                n = int.from_bytes(b[pos:pos + 4], "little")
                im = Image.open(io.BytesIO(b[pos + 4:pos + 4 + n]))
                parts.append(np.asarray(im.convert("L")).reshape(-1, shape[1], shape[2]))
                pos += 4 + n
            y = np.concatenate(parts)
        else:
            y = np.frombuffer(COMPRESSORS[self.how][1](b), np.uint8).reshape(shape)
        return log8_dequantise(y, self.param)


class LinearOrder0(Candidate):
    """The codec's TV-calibrated uniform quantiser k = round(p/a) without prediction: bytes (escape ≥ 255)
    Huffman-coded (zlib) — what the quantiser alone buys."""

    name = "uniform-in-p (TV-calibrated), no prediction + Huffman"

    def encode(self, P):
        k, ok = pc.quantise(P, pc.DEFAULT_TV)
        assert ok.all()
        esc = k[k >= 255].astype("<u4")
        comp = COMPRESSORS["huffman"][0]
        a, b = comp(np.minimum(k, 255).astype(np.uint8).tobytes()), comp(esc.tobytes())
        return len(a).to_bytes(4, "little") + a + b

    def decode(self, b, shape):
        n = int.from_bytes(b[:4], "little")
        dec = COMPRESSORS["huffman"][1]
        k = np.frombuffer(dec(b[4:4 + n]), np.uint8).astype(np.int32).reshape(shape)
        esc = np.frombuffer(dec(b[4 + n:]), "<u4") if len(b) > 4 + n else np.zeros(0, "<u4")
        k[k == 255] = esc
        return pc.dequantise(k)


class Codec(Candidate):
    def __init__(self, mode: str = "compact", tv: float = pc.DEFAULT_TV, name: str | None = None):
        self.mode, self.tv = mode, tv
        self.lossless = mode == "lossless"
        self.name = name or ("pointer_codec, lossless" if self.lossless else
                             "pointer_codec: uniform-in-p + hierarchical prediction + contexts + Huffman")

    def encode(self, P):
        return pc.encode(P, mode=self.mode, tv=self.tv)

    def decode(self, b, shape):
        return pc.decode(b, shape[0], shape[1:])


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Result:
    label: str
    nbytes: int
    n_steps: int
    n_cells: int
    tv: np.ndarray
    enc_s: float
    dec_s: float
    raw: int  # float16 bytes of what was coded
    param: object = None

    @property
    def per_step(self) -> float:
        return self.nbytes / max(self.n_steps, 1)

    @property
    def per_16k(self) -> float:
        return self.per_step * N16K / self.n_cells

    def per_16k_text(self) -> str:
        """Scaled to 16,384 patches — only meaningful for grids big enough that fixed overheads vanish."""
        return fmt_b(self.per_16k) if self.n_cells >= 1000 else "—"


def run_candidate(c: Candidate, sets: list[np.ndarray], bound: float) -> Result:
    """Encode+decode each array of `sets`; tune c.param first: the coarsest setting (`params` lists them
    coarsest first) whose max TV over all sets is ≤ `bound`."""
    if c.max_cells:
        sets = [P[: max(1, c.max_cells // (P.shape[1] * P.shape[2]))] for P in sets]
    if c.params:
        probe = [P[: max(1, 400_000 // (P.shape[1] * P.shape[2]))] for P in sets]
        for prm in c.params:
            c.param = prm
            if max(float(tv_of(P, c.decode(c.encode(P), P.shape)).max(initial=0)) for P in probe) <= bound:
                if max(float(tv_of(P, c.decode(c.encode(P), P.shape)).max(initial=0)) for P in sets) <= bound:
                    break
    nbytes = enc = dec = 0.0
    tvs = []
    for P in sets:
        if not len(P):
            continue
        t = time.perf_counter()
        b = c.encode(P)
        enc += time.perf_counter() - t
        t = time.perf_counter()
        Q = c.decode(b, P.shape)
        dec += time.perf_counter() - t
        nbytes += len(b)
        tvs.append(tv_of(P, Q))
    n = sum(len(P) for P in sets)
    cells = sum(P.size for P in sets) / max(n, 1)
    return Result(c.label(), int(nbytes), n, int(round(cells)), np.concatenate(tvs) if tvs else np.zeros(0),
                  enc, dec, int(sum(P.size for P in sets)) * 2, c.param)


def fmt_b(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1024:,.1f} KiB"
    return f"{v:,.0f} B"


def mbs(raw: int, s: float) -> str:
    return f"{raw / 1e6 / s:,.0f}" if s > 0 else "—"


def print_table(title: str, results: list[Result], anchor: Result | None = None) -> None:
    print(f"\n### {title}\n")
    print("| candidate | bytes/step | per step at 16,384 patches | × vs raw | max TV | p99 TV | encode MB/s | "
          "decode MB/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        ratio = f"{anchor.per_16k / r.per_16k:.1f}" if anchor else "—"
        mx = f"{r.tv.max():.2e}" if r.tv.size else "—"
        p99 = f"{np.quantile(r.tv, 0.99):.2e}" if r.tv.size else "—"
        print(f"| {r.label} | {fmt_b(r.per_step)} | {r.per_16k_text()} | {ratio} | {mx} | {p99} | "
              f"{mbs(r.raw, r.enc_s)} | {mbs(r.raw, r.dec_s)} |")
    sys.stdout.flush()


def uses_zstd(c: Candidate) -> bool:
    return "zstd" in getattr(c, "comp", "") or getattr(c, "how", "") in ("zstd-3", "temporal")


def available(cands: list[Candidate]) -> list[Candidate]:
    return [c for c in cands if zstandard is not None or not uses_zstd(c)]


def text_candidates(quick: bool) -> list[Candidate]:
    return available([RawF16(), ShuffleF16("zstd-3"), ShuffleF16("zstd-19", max_cells=4_000_000),
                      ShuffleF16("zlib-6"), ShuffleF16("lzma-6", max_cells=4_000_000), MantissaF16("zstd-3"),
                      MantissaF16("huffman"), Log8("zstd-3"), Log8("huffman"), Log8("temporal"), Log8("png"),
                      Log8("webp"), LinearOrder0(), Codec()])


def kept_candidates() -> list[Candidate]:
    return available([RawF16(), ShuffleF16("zstd-3"), ShuffleF16("zlib-6"), Codec("lossless", name="pointer_codec "
                      "exact float16 (hierarchical prediction on the bit patterns)"),
                      Codec(tv=0.95 * TV_COPY, name="(not used) pointer_codec lossy at TV ≤ 1e-3")])


# ---------------------------------------------------------------------------------------- calibration
def field_stats(P: np.ndarray) -> dict[str, float]:
    """Statistics of text-step maps that drive compressibility: normalised entropy, p_max·N, and the
    variogram of log p over cells that matter (p ≥ 0.1/N): lag-1 and lag-2 semivariances and the nugget
    σ = √(2γ₁ − γ₂), the i.i.d. patch-level noise a smooth field + noise model implies."""
    n = P.shape[1] * P.shape[2]
    with np.errstate(divide="ignore"):
        lp = np.log(P.astype(np.float64))
    H = -(P * np.where(P > 0, lp, 0)).sum(axis=(1, 2)) / np.log(max(n, 2))
    ok = P >= 0.1 / n
    g = []
    for lag in (1, 2):
        parts = []
        if P.shape[2] > lag:
            m = ok[:, :, lag:] & ok[:, :, :-lag]
            parts.append(((lp[:, :, lag:] - lp[:, :, :-lag]) ** 2)[m])
        if P.shape[1] > lag:
            m = ok[:, lag:, :] & ok[:, :-lag, :]
            parts.append(((lp[:, lag:, :] - lp[:, :-lag, :]) ** 2)[m])
        d = np.concatenate(parts) if parts else np.zeros(1)
        g.append(0.5 * float(d.mean()))
    return dict(H=float(np.median(H)), pmaxN=float(np.median(P.max(axis=(1, 2)) * n)), g1=g[0], g2=g[1],
                nugget=float(np.sqrt(max(2 * g[0] - g[1], 0.0))), share=float(ok.mean()))


def temporal_gain(P: np.ndarray, keep: np.ndarray, weights=(0.0, 0.25, 0.5, 1.0)) -> list[float]:
    """Ideal bits/cell (context-conditional order-0 entropy) of the codec's quantised text steps predicted
    spatially (geometric mean of the 4 neighbours) and with the previous step's detail added:
    log(k̂+1) = spatial + w·(log(k_{t−1}+1) − spatial_{t−1}). w = 0 is spatial only; a gain at w > 0 would
    mean patch-level structure persists from step to step (fixed image keys) and temporal prediction pays."""
    k, _ = pc.quantise(P.astype(np.float32), pc.DEFAULT_TV)
    L = np.log(k + 1.0)
    pad = np.pad(L, ((0, 0), (1, 1), (1, 1)), mode="edge")
    s = (pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]) / 4
    idx = np.flatnonzero(~keep)
    t = idx[1:][np.diff(idx) == 1]
    if t.size == 0:
        return [float("nan")] * len(weights)
    ctx = np.minimum(15, np.floor(2 * s[t] / np.log(2) + 4)).astype(int).ravel()
    out = []
    for w in weights:
        r = (k[t] - np.rint(np.exp(s[t] + w * (L[t - 1] - s[t - 1])) - 1)).ravel()
        h = 0.0
        for c in np.unique(ctx):
            _, cnt = np.unique(r[ctx == c], return_counts=True)
            p = cnt / cnt.sum()
            h += (ctx == c).mean() * float(-(p * np.log2(p)).sum())
        out.append(h)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="300-step traces, no full-scale or store run")
    ap.add_argument("--no-demo", action="store_true", help="skip the demo-model traces")
    ap.add_argument("--steps", type=int, default=None, help="steps per synthetic trace (default 1,000)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all)")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        ap.error(f"unknown section(s) {', '.join(sorted(sections - set(SECTIONS)))}; choose from {', '.join(SECTIONS)}")
    n_steps = args.steps or (300 if args.quick else 1000)

    print(f"# Pointer codec benchmark ({n_steps}-step synthetic traces, TV bounds {TV_TEXT:g} text / {TV_COPY:g} "
          f"copy)")
    if zstandard is None:
        print("\n(zstandard is not installed: the zstd candidates are left out; `pip install zstandard` adds them)")
    t0 = time.perf_counter()
    data = [synthetic(37, 37, n_steps, seed=1), synthetic(64, 64, n_steps, seed=2),
            synthetic(128, 128, n_steps, seed=3)]
    demo = [] if args.no_demo else demo_traces()
    print(f"\ndata ready in {time.perf_counter() - t0:.0f} s: " + ", ".join(
        f"{d.name}: {len(d.P)} steps, {d.keep.mean():.0%} kept exactly" for d in data)
        + (f"; {len(demo)} demo-model traces, {sum(len(d.P) for d in demo)} steps, grids "
           f"{sorted({d.P.shape[1:] for d in demo})}" if demo else ""))

    if "text" in sections:
        # 1. text steps
        for d in data + ([None] if demo else []):
            if d is None:
                sets, title = [x.P[~x.keep] for x in demo], "Text steps: demo-model traces (real pointers)"
            else:
                sets, title = [d.P[~d.keep]], f"Text steps: {d.name}"
            if not sum(len(P) for P in sets):
                print(f"\n### {title}\n\n(no such steps)")
                continue
            res = [run_candidate(c, sets, TV_TEXT) for c in text_candidates(args.quick)]
            print_table(title, res, res[0])

    if "kept" in sections:
        # 2. kept steps
        for d in data + ([None] if demo else []):
            if d is None:
                sets, title = [x.P[x.keep] for x in demo if x.keep.any()], "Kept steps: demo-model traces"
            else:
                sets, title = [d.P[d.keep]], f"Kept steps (copies, p_copy ≥ 0.2): {d.name}"
            if not sum(len(P) for P in sets):
                print(f"\n### {title}\n\n(no such steps)")
                continue
            res = [run_candidate(c, sets, TV_COPY) for c in kept_candidates()]
            print_table(title, res, res[0])

    if "whole" in sections:
        # 3. the codec on whole traces
        print("\n### The codec on whole traces\n")
        print("| trace | mode | bytes/step | per step at 16,384 patches | × vs raw | max TV text | p99 TV text | "
              "max TV copy | min Σq−1 / max | encode MB/s | decode MB/s |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        per16: dict[str, float] = {}
        for d in data + demo:
            for mode, copy_tv in VARIANTS:
                t = time.perf_counter()
                b = pc.encode(d.P, d.p_copy, d.is_copy, mode="lossless" if mode == "lossless" else "compact",
                              copy_tv=copy_tv)
                te = time.perf_counter() - t
                t = time.perf_counter()
                Q = pc.decode(b, len(d.P), d.P.shape[1:])
                td = time.perf_counter() - t
                tv = tv_of(d.P, Q)
                lossy = np.zeros(len(d.P), bool) if mode == "lossless" else \
                    (~d.keep if copy_tv is None else np.ones(len(d.P), bool))
                s = Q.sum(axis=(1, 2)) - 1
                sl = s[lossy] if lossy.any() else np.zeros(1)
                raw = d.P.size * 2
                if not d.name.startswith("demo"):
                    per16[f"{d.name}|{mode}"] = len(b) / len(d.P) * N16K / d.n_cells
                txt = tv[~d.keep] if (~d.keep).any() else np.zeros(1)
                cpy = tv[d.is_copy] if d.is_copy.any() else np.zeros(1)
                scaled = fmt_b(len(b) / len(d.P) * N16K / d.n_cells) if d.n_cells >= 1000 else "—"
                print(f"| {d.name} | {mode} | {fmt_b(len(b) / len(d.P))} | {scaled} "
                      f"| {raw / len(b):.1f} | {txt.max():.2e} | {np.quantile(txt, 0.99):.2e} | {cpy.max():.2e} | "
                      f"{sl.min():+.1e} / {sl.max():+.1e} | {mbs(raw, te)} | {mbs(raw, td)} |")
            sys.stdout.flush()
        print("\nLibrary of 10,000 traces × 1,000 steps (pointers only):\n")
        print("| grid | raw float16 | " + " | ".join(f"codec {m}" for m, _ in VARIANTS) + " |")
        print("| --- | ---: |" + " ---: |" * len(VARIANTS))
        for d in data:
            if d.P.shape[1] not in (37, 128):
                continue
            n = d.n_cells
            row = [f"{n * 2 * 1e7 / 1e9:,.1f} GB"]
            for mode, _ in VARIANTS:
                row.append(f"{per16[f'{d.name}|{mode}'] * n / N16K * 1e7 / 1e9:,.1f} GB")
            print(f"| {d.P.shape[1]}×{d.P.shape[2]} ({n:,} patches) | " + " | ".join(row) + " |")

    if "noise" in sections:
        # 4. sensitivity to the generator's noise, and calibration against the demo model
        print("\n### Sensitivity to the generator's patch-level noise σ (128×128)\n")
        print(f"| σ | text B/step: codec | float16+shuffle+{FAST} | fewer mantissa bits | log8+{FAST} | kept B/step "
              "(exact) | kept share | codec average B/step | max TV text |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        sens_steps = min(n_steps, 400)
        calib = []
        for sigma in (0.1, 0.25, 0.5):
            d = synthetic(128, 128, sens_steps, seed=4, noise=sigma)
            text = [d.P[~d.keep]]
            r = [run_candidate(c, text, TV_TEXT) for c in (Codec(), ShuffleF16(FAST), MantissaF16(FAST), Log8(FAST))]
            b = pc.encode(d.P, d.p_copy, d.is_copy)
            kept = run_candidate(Codec("lossless"), [d.P[d.keep]], TV_COPY)
            print(f"| {sigma:g} | {fmt_b(r[0].per_step)} | {fmt_b(r[1].per_step)} | {fmt_b(r[2].per_step)} "
                  f"({r[2].param} bits) | {fmt_b(r[3].per_step)} (Δ {r[3].param:g}) | {fmt_b(kept.per_step)} | "
                  f"{d.keep.mean():.0%} | {fmt_b(len(b) / len(d.P))} | {r[0].tv.max():.2e} |")
            calib.append((f"synthetic 128×128 σ {sigma:g}", d.P[~d.keep], r[0].per_16k))
            sys.stdout.flush()
        for sigma in (0.1, 0.25, 0.5):
            d = synthetic(12, 12, 300, seed=5, noise=sigma)
            res = run_candidate(Codec(), [d.P[~d.keep]], TV_TEXT)
            calib.append((f"synthetic 12×12 σ {sigma:g}", d.P[~d.keep], res.per_step * 8 / d.n_cells))
        if demo:
            sets = [x.P[~x.keep] for x in demo]
            res = run_candidate(Codec(), sets, TV_TEXT)
            calib.append(("demo model (real), text steps", sets, res.nbytes * 8 / sum(P.size for P in sets)))
        print("\n### Calibration: text-step maps, synthetic vs the demo model\n")
        print("| source | normalised entropy (median) | p_max·N (median) | γ₁ = ½E[Δ₁ log p]² | γ₂ (lag 2) "
              "| "
              "nugget σ = √(2γ₁−γ₂) | cells with p ≥ 0.1/N | codec bits/cell |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, P, bits in calib:
            if isinstance(P, list):
                st = [field_stats(x) for x in P]
                w = [len(x) for x in P]
                s = {k: float(np.average([v[k] for v in st], weights=w)) for k in st[0]}
            else:
                s = field_stats(P)
            if name.startswith("synthetic 128"):
                bits = bits * 8 / N16K
            print(f"| {name} | {s['H']:.2f} | {s['pmaxN']:.1f} | {s['g1']:.3f} | {s['g2']:.3f} | {s['nugget']:.2f} | "
                  f"{s['share']:.0%} | {bits:.2f} |")

    if "temporal" in sections:
        print("\n### Temporal prediction: ideal bits/cell of text steps, spatial vs spatial + previous step's detail\n")
        ws = (0.0, 0.25, 0.5, 1.0)
        print("| source | " + " | ".join(f"w = {w:g}" + (" (spatial only)" if w == 0 else "") for w in ws) + " |")
        print("| --- |" + " ---: |" * len(ws))
        rows_t = [(f"synthetic 64×64 σ {sg:g}", [synthetic(64, 64, min(n_steps, 300), seed=6, noise=sg)])
                  for sg in (0.1, 0.25, 0.5)]
        if demo:
            rows_t.append(("demo model (real)", demo))
        for name, ds in rows_t:
            g = [(temporal_gain(x.P, x.keep, ws), int((~x.keep).sum())) for x in ds if (~x.keep).sum() >= 10]
            avg = [float(np.average([v[i] for v, _ in g], weights=[n for _, n in g])) for i in range(len(ws))]
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in avg) + " |")
        sys.stdout.flush()

    if "scale" in sections:
        # 5. full scale: one 2,000-step 16,384-patch trace
        if args.quick:
            return
        print("\n### One 2,000-step trace at 16,384 patches (128×128)\n")
        tr = big_trace(128, 128, 2000, seed=7)
        d = _from_trace("synthetic 128×128 2,000 steps", tr)
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; wall ms (CPU ms of this "
              "process in brackets)\n")
        print("| codec | bytes/step | encode ms | decode ms (all steps) | decode one step ms (median of 50) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        rng = np.random.default_rng(0)
        picks = rng.integers(0, len(d.P), 50)

        def one_step(b: bytes, i: int) -> np.ndarray:
            return pc.decode_step(b, len(d.P), d.P.shape[1:], int(i))

        for name, enc, dec, one in (
            ("raw float16 (today)", lambda: to_float16(d.P).tobytes(),
             lambda b: np.frombuffer(b, "<f2").reshape(d.P.shape).astype(np.float32), one_step),
            (f"float16 + shuffle + {FAST}", lambda: ShuffleF16(FAST).encode(d.P),
             lambda b: ShuffleF16(FAST).decode(b, d.P.shape), None),
            ("pointer_codec compact", lambda: pc.encode(d.P, d.p_copy, d.is_copy),
             lambda b: pc.decode(b, len(d.P), d.P.shape[1:]), one_step),
            ("pointer_codec lossless", lambda: pc.encode(d.P, mode="lossless"),
             lambda b: pc.decode(b, len(d.P), d.P.shape[1:]), one_step),
        ):
            t, c = time.perf_counter(), time.process_time()
            b = enc()
            te, ce = time.perf_counter() - t, time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            dec(b)
            td, cd = time.perf_counter() - t, time.process_time() - c
            if one is not None:
                ts = []
                for i in picks:
                    t = time.perf_counter()
                    one(b, i)
                    ts.append(time.perf_counter() - t)
                o = f"{statistics.median(ts) * 1e3:.1f}"
            else:
                o = "— (whole blob)"
            print(f"| {name} | {fmt_b(len(b) / len(d.P))} | {te * 1e3:,.0f} ({ce * 1e3:,.0f}) | "
                  f"{td * 1e3:,.0f} ({cd * 1e3:,.0f}) | {o} |")
            sys.stdout.flush()
        store_anchor(tr, d)


def store_anchor(tr, d: Data) -> None:
    """Today's Store with raw float16 pointers: save / load of the 2,000-step 16k trace (SQLite, temp dir)."""
    from storage import Store

    print("\n### Today's Store, raw float16 (SQLite in a temp dir), 2,000 steps × 16,384 patches\n")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(str(Path(tmp) / "bench.db"))
        saves, loads = [], []
        for rep in range(3):
            tr.trace_id = f"{rep:032x}"
            t = time.perf_counter()
            store.save_trace(tr)
            saves.append(time.perf_counter() - t)
        for rep in range(3):
            t = time.perf_counter()
            store.get_trace(f"{rep:032x}")
            loads.append(time.perf_counter() - t)
        steps = []
        rng = np.random.default_rng(1)
        for i in rng.integers(0, len(d.P), 50):
            t = time.perf_counter()
            store.get_step(f"{0:032x}", int(i))
            steps.append(time.perf_counter() - t)
        size = (Path(tmp) / "bench.db").stat().st_size + sum(
            p.stat().st_size for p in Path(tmp).glob("bench.db-*"))
        store.close()
    t, c = time.perf_counter(), time.process_time()
    b = pc.encode(d.P, d.p_copy, d.is_copy)
    te, ce = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    pc.decode(b, len(d.P), d.P.shape[1:])
    td, cd = time.perf_counter() - t, time.process_time() - c
    f16 = time.perf_counter()
    to_float16(d.P)
    f16 = time.perf_counter() - f16
    print("| measurement | value |")
    print("| --- | ---: |")
    print(f"| `save_trace` (median of 3) | {statistics.median(saves) * 1e3:,.0f} ms |")
    print(f"| `get_trace` (median of 3) | {statistics.median(loads) * 1e3:,.0f} ms |")
    print(f"| `get_step` (median of 50 random steps) | {statistics.median(steps) * 1e3:.1f} ms |")
    print(f"| database size per trace | {size / 3 / 1e6:,.1f} MB |")
    print(f"| float16 conversion inside `save_trace` (to_float16, whole trace) | {f16 * 1e3:,.0f} ms |")
    print(f"| codec encode (replaces the float16 conversion) | {te * 1e3:,.0f} ms ({ce * 1e3:,.0f} ms CPU) |")
    print(f"| codec decode (added to `get_trace`) | {td * 1e3:,.0f} ms ({cd * 1e3:,.0f} ms CPU) |")
    print(f"| codec blob per trace | {len(b) / 1e6:,.1f} MB |")


if __name__ == "__main__":
    main()
