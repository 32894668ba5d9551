"""Compact pointer storage: the per-step pointer distributions of a trace chunk ↔ bytes.

At v1-7B scale a pointer has up to 16,384 cells; as float16 that is 32 KiB per step, 328 GB for a library of
10,000 × 1,000-step traces, and lossless compression of float16 saves only ×1.4–1.7 (diffuse text-step maps are
high-entropy). This codec stores text-step pointers lossily within a guaranteed total-variation bound and copy
steps exactly. Pure numpy + the standard library's zlib; chosen by measurement against zstd, lzma, fewer mantissa
bits, 8-bit log-probabilities, PNG/WebP and temporal deltas (``bench/pointer_codec.py``, docs/BENCHMARKS.md).

**Fidelity is total variation.** For a stored step p and its decoded q, TV(p, q) = ½·Σ|p − q|. A relative error
δ_i on cell i costs ½·p_i·|δ_i|, so cells of small probability can take coarse steps: for a TV (L1) budget the
rate-optimal quantiser is *uniform in probability*, not in log-probability (it saves KL(uniform ‖ p) bits per
cell over a log quantiser of the same TV). Text steps are stored as integers ``k_i = round(p_i / a)`` and decoded
as ``q = k / Σk`` (so a itself is not stored). Uniform rounding errs ±a/2, i.e. TV ≈ N·a/8 for N cells above the
step, so ``a ≈ 8·tv/N`` (about 12.5 units for an average cell); the encoder computes the exact TV of what the
decoder will return and searches, per step, for the largest a with ``TV ≤ tv`` (default 0.0095, under the 1e-2
bound). Cells below a/2 decode as exactly 0 (a log-scale view shows them at its floor).

**Kept exactly:** copy steps and steps whose ``p_copy`` ≥ ``copy_threshold`` (default 0.2: the model nearly
copied) are stored as float16, bit for bit what the raw format stores (TV ≈ 1e-4 from float32); ``copy_tv=``
stores them lossily instead, within TV ≤ copy_tv ≤ 1e-3. With ``mode="lossless"`` (or
``$V1STUDIO_POINTERS=lossless``) every step is exact. Exact steps decode to the float16 values, as the raw format
did (their sum is 1 within float16 rounding, not renormalised); lossy steps sum to 1 within float32 rounding.

**Saving again loses nothing more.** Pointers that already are decoded output (a loaded trace saved again, or a
float16 export imported) are recognised — q = k/Σk for integers k — and those integers are stored again
instead of being quantised a second time, so errors do not pile up across round trips.

**Coding.** Each step's integer field (k, or the float16 bit patterns, which are monotone in the value) is coded
by hierarchical interpolation, the way lossless image coders exploit smooth fields: first cell (0, 0), then for
strides s = 2ᴸ … 2 the centres of the known s-lattice (predicted from their 4 diagonal neighbours), then its edge
midpoints (from their 4 axis neighbours), each pass vectorised over all steps of a group. The prediction is the
mean of the known neighbours — geometric for k (an integer mean of float32 bit patterns), arithmetic for float16
patterns — computed in exact integer arithmetic, so encoder and decoder agree on any machine. Residuals are
zig-zagged, split into 16 contexts by the predicted magnitude (a residual's spread grows with it), and each
context's stream is Huffman-coded by raw deflate (measured within 0.02 bits/symbol of the entropy, where zstd's
matches cost 0.3); values at the escape code (255 for k, 65535 for float16) continue in an escape stream.

**Format (version 1, little-endian).** Header: ``b"\\x89V1P"``, version (u8), flags (u8, bit 0: lossless), 0 (u16),
n_steps, rows, cols, steps per group (u32 each); the step kinds, one bit each (0 lossy, 1 exact), packed; per
group its offset in the payload, length and CRC-32 (u32 each); the CRC-32 of all that. A group (≈ 2¹⁷ cells:
8 steps at 16,384 patches, 95 at 1,369 — the Store's chunk size today) is the unit of random access: decoding one
step or a range decodes only the groups it touches. A group body is 0x00 then the lossy field and the exact field
(each a list of streams: varint raw length, varint compressed length, deflate bytes), or 0x01 then raw float16 for
all its steps where that is not larger (tiny grids).

**Legacy blobs** (the raw float16 ``[n, rows, cols]`` arrays stored before this codec) have no header. A blob is
read as v1 when it starts with the magic and its header passes its CRC; otherwise, when its length is exactly
n·rows·cols·2, as legacy float16 (decoded bit for bit as before). A legacy blob passes for v1 only if its first
value is the float16 0x5689 = 104.6 (never a probability) *and* its header CRC matches. Anything else raises
ValueError. Speed: ≈ 40 ns per cell each way on a quiet 2-core VM (≈ 1.3 s per direction for a 2,000-step
16,384-patch trace, ≈ 5 ms for one step, i.e. its group of 8), 2–4× that while the VM is shared.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COPY_THRESHOLD",
    "DEFAULT_TV",
    "FORMAT_VERSION",
    "MODE_ENV",
    "MODES",
    "PointerBlobInfo",
    "TV_BOUND",
    "blob_info",
    "decode",
    "decode_step",
    "decode_steps",
    "encode",
    "f16_all_finite",
    "resolve_mode",
    "to_float16",
    "total_variation",
]

MAGIC = b"\x89V1P"
FORMAT_VERSION = 1
MODE_ENV = "V1STUDIO_POINTERS"
MODES = ("compact", "lossless")
DEFAULT_TV = 0.0095  # target TV of a lossy step (encoder-enforced); the promised bound is TV_BOUND
TV_BOUND = 0.01
COPY_TV_BOUND = 1e-3
COPY_THRESHOLD = 0.2
GROUP_CELLS = 1 << 17  # cells per group, the unit of random access
KIND_LOSSY, KIND_EXACT = 0, 1
FLAG_LOSSLESS = 1

_HEAD = struct.Struct("<4sBBHIIII")  # magic, version, flags, reserved, n, rows, cols, steps per group
_GROUP = struct.Struct("<III")  # offset (from payload start), length, crc32
_U32 = struct.Struct("<I")
_GROUP_CODED, _GROUP_RAW = b"\x00", b"\x01"
_N_CTX = 16
_CTX_EDGES = np.arange(_N_CTX + 1, dtype=np.uint8)
_ESC = 255


def resolve_mode(mode: str | None = None) -> str:
    """`mode`, else $V1STUDIO_POINTERS, else "compact". Raises ValueError naming the valid modes."""
    raw = mode if mode is not None else (os.environ.get(MODE_ENV, "").strip() or "compact")
    raw = str(raw).strip().lower()
    if raw not in MODES:
        src = "mode" if mode is not None else f"${MODE_ENV}"
        raise ValueError(f"{src} must be one of {', '.join(MODES)}, got {raw!r}")
    return raw


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-step TV = ½·Σ|p − q/Σq| over the last two axes (q renormalised), in float64."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    s = q.sum(axis=(-2, -1), keepdims=True)
    q = np.divide(q, s, out=np.zeros_like(q), where=s > 0)
    return 0.5 * np.abs(p - q).sum(axis=(-2, -1))


# ------------------------------------------------------------------------------------------ float16 (exact)
_F16_MIN_NORMAL = np.float32(2.0**-14)
_F16_SUBNORMAL_SCALE = np.float32(2.0**24)


def to_float16(mat: np.ndarray) -> np.ndarray:
    """float32 → little-endian float16, round to nearest even, bit-identical to `mat.astype('<f2')` but fast.

    Pointer distributions over thousands of patches are mostly tiny values that are *subnormal* in float16, where
    numpy's cast takes a slow path (~6× slower). Here the subnormal range is converted arithmetically instead: a
    float16 subnormal is m·2⁻²⁴, so its bits are rint(|x|·2²⁴) (exact in float32; m = 1024 correctly becomes the
    smallest normal) plus the sign. When torch is already loaded (the app and the tracer) its vectorised
    conversion is used. A test checks all paths against numpy's cast bit for bit."""
    x = np.ascontiguousarray(mat, dtype=np.float32)
    torch = sys.modules.get("torch")
    if torch is not None and sys.byteorder == "little":
        try:
            return torch.from_numpy(x).to(torch.float16).numpy()
        except Exception:  # noqa: BLE001 - any torch oddity: fall back to numpy
            pass
    with np.errstate(over="ignore", invalid="ignore"):  # overflow → inf exactly as numpy's cast
        a = np.abs(x)
        small = a < _F16_MIN_NORMAL
        if not small.any():
            return x.astype("<f2")
        out = np.where(small, np.float32(0), x).astype("<f2")
        sub = np.rint(a * _F16_SUBNORMAL_SCALE).astype(np.uint16)  # only the `small` entries are used
        sub |= (x.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
    np.copyto(out.view(np.uint16), sub, where=small)
    return out


def f16_all_finite(h: np.ndarray) -> bool:
    """True when no float16 value is inf or NaN (exponent bits all set)."""
    return not ((h.view(np.uint16) & np.uint16(0x7C00)) == np.uint16(0x7C00)).any()


# ----------------------------------------------------------------------------------------------- prediction
_F32_ONE = np.int32(0x3F800000)  # bit pattern of 1.0f
_K_MAX = 1 << 24  # lossy integers stay below 2^24: exact in float32, so the feature is invertible
_TV_SLACK = 2e-6  # covers float32 rounding in the encoder's TV check vs a float64 TV after renormalising


def _ctx_lut(thresholds: Sequence[float], shift: int, size: int, feature) -> np.ndarray:
    """uint8 table: context id of (mean feature >> shift), from value thresholds mapped through `feature`."""
    t = np.array([feature(v) for v in thresholds], dtype=np.int64)
    keys = np.arange(size, dtype=np.int64) << shift
    return np.searchsorted(t, keys, side="right").astype(np.uint8)


# Contexts by predicted magnitude (a residual's spread grows with it). Lossy fields: on the float32 bit pattern
# of k̂ + 1 (the geometric-mean prediction), so fractional predictions — most cells of a peaked map — get
# contexts of their own. Exact fields: on the float16 pattern (≈ 1024·log2 p for normal values, linear for
# the subnormals that dominate at 16,384 patches).
_LOSSY_SHIFT = 19
_LOSSY_LUT = _ctx_lut([0.05, 0.1, 0.2, 0.35, 0.6, 1, 1.6, 2.5, 4, 6.5, 10, 16, 25, 40, 64], _LOSSY_SHIFT,
                      (32 << 23) >> _LOSSY_SHIFT,
                      lambda v: int(np.float32(v + 1).view(np.int32)) - int(_F32_ONE))
_EXACT_SHIFT = 3
_EXACT_LUT = _ctx_lut([8, 32, 64, 128, 256, 512, 1024, 0x0C00, 0x1000, 0x1800, 0x2000, 0x2800, 0x3000, 0x3400,
                       0x3800], _EXACT_SHIFT, (1 << 16) >> _EXACT_SHIFT, int)


@dataclass(frozen=True)
class _Block:
    """A rectangle of a pass's target grid with its neighbours as (target slice, source slice) pairs; `div`
    is the neighbour count per target (int32), None when all four exist everywhere in the block."""

    target: tuple[slice, slice]
    shape: tuple[int, int]
    neighbours: tuple[tuple[tuple[slice, slice], tuple[slice, slice]], ...]
    div: np.ndarray | None


@dataclass(frozen=True)
class _Pass:
    """One target set of the coding order: cells (r0 + i·s, c0 + j·s), shape (nr, nc), in blocks: the
    interior, where all four neighbours exist, and the border strips around it."""

    target: tuple[slice, slice]
    shape: tuple[int, int]
    blocks: tuple[_Block, ...]


_PASS_CACHE: dict[tuple[int, int], list[_Pass]] = {}


def _block(nbs: list[tuple[int, int, int, int, int, int]], s: int, i0: int, i1: int, j0: int, j1: int) -> _Block | None:
    """The block [i0, i1) × [j0, j1) of a target grid; `nbs` lists each neighbour as (first valid i, count,
    first valid j, count, source row of that first i, source col of that first j)."""
    if i1 <= i0 or j1 <= j0:
        return None
    cnt = np.zeros((i1 - i0, j1 - j0), dtype=np.int32)
    pairs = []
    for a0, na, b0, nb, rs, cs in nbs:
        lo_i, hi_i = max(i0, a0), min(i1, a0 + na)
        lo_j, hi_j = max(j0, b0), min(j1, b0 + nb)
        if hi_i <= lo_i or hi_j <= lo_j:
            continue
        r, c = rs + (lo_i - a0) * s, cs + (lo_j - b0) * s
        tgt = (slice(lo_i - i0, hi_i - i0), slice(lo_j - j0, hi_j - j0))
        pairs.append((tgt, (slice(r, r + (hi_i - lo_i - 1) * s + 1, s), slice(c, c + (hi_j - lo_j - 1) * s + 1, s))))
        cnt[tgt] += 1
    full = len(pairs) == 4 and bool((cnt == 4).all())
    return _Block((slice(i0, i1), slice(j0, j1)), (i1 - i0, j1 - j0), tuple(pairs),
                  None if full else np.maximum(cnt, 1))


def _passes(rows: int, cols: int) -> list[_Pass]:
    """Hierarchical coding order for a rows × cols grid: cell (0, 0); then for strides s = 2ᴸ … 2 (2ᴸ ≥ the
    grid side), the centres of the s-lattice (from their 4 diagonal neighbours at ±s/2), then the midpoints of
    its edges (from their 4 axis neighbours). Neighbours outside the grid are skipped."""
    key = (rows, cols)
    if key in _PASS_CACHE:
        return _PASS_CACHE[key]
    top = 1
    while top < max(rows, cols):
        top *= 2
    sets: list[tuple[int, int, int, tuple[tuple[int, int], ...]]] = [(0, 0, top, ())]
    s = top
    while s >= 2:
        h = s // 2
        diag = ((-h, -h), (-h, h), (h, -h), (h, h))
        axes = ((-h, 0), (h, 0), (0, -h), (0, h))
        sets += [(h, h, s, diag), (h, 0, s, axes), (0, h, s, axes)]
        s = h
    out = []
    for r0, c0, s, offs in sets:
        if r0 >= rows or c0 >= cols:
            continue
        nr, nc = len(range(r0, rows, s)), len(range(c0, cols, s))
        nbs = []
        for dr, dc in offs:
            rr, cc = r0 + dr, c0 + dc
            i0, j0 = int(rr < 0), int(cc < 0)
            rs, cs = rr + i0 * s, cc + j0 * s
            ni, nj = min(nr - i0, len(range(rs, rows, s))), min(nc - j0, len(range(cs, cols, s)))
            if ni > 0 and nj > 0:
                nbs.append((i0, ni, j0, nj, rs, cs))
        if len(nbs) == 4:  # interior: where every neighbour is valid
            a0, a1 = max(n[0] for n in nbs), min(n[0] + n[1] for n in nbs)
            b0, b1 = max(n[2] for n in nbs), min(n[2] + n[3] for n in nbs)
        else:
            a0 = a1 = b0 = b1 = 0
        if a1 <= a0 or b1 <= b0:
            a0 = a1 = b0 = b1 = 0
        rects = [(a0, a1, b0, b1), (0, a0, 0, nc), (a1, nr, 0, nc), (a0, a1, 0, b0), (a0, a1, b1, nc)] \
            if a1 > a0 else [(0, nr, 0, nc)]
        blocks = tuple(b for b in (_block(nbs, s, *r) for r in rects) if b is not None)
        out.append(_Pass((slice(r0, None, s), slice(c0, None, s)), (nr, nc), blocks))
    _PASS_CACHE[key] = out
    return out


def _predict(F: np.ndarray, pas: _Pass) -> np.ndarray:
    """Mean (floored) of the known neighbours' features in exact int32 arithmetic, [m, nr, nc]; 0 without any.
    (The floor's bias, under one unit of a 2^-23-relative feature or of a float16 ulp, costs nothing.)"""
    out = np.empty((F.shape[0], *pas.shape), dtype=np.int32)
    for blk in pas.blocks:
        if blk.div is None:
            (_, a), (_, b), (_, c), (_, d) = blk.neighbours
            acc = F[:, a[0], a[1]] + F[:, b[0], b[1]]
            acc += F[:, c[0], c[1]]
            acc += F[:, d[0], d[1]]
            acc >>= 2
        else:
            acc = np.zeros((F.shape[0], *blk.shape), dtype=np.int32)
            for tgt, srcs in blk.neighbours:
                acc[:, tgt[0], tgt[1]] += F[:, srcs[0], srcs[1]]
            acc //= blk.div
        out[:, blk.target[0], blk.target[1]] = acc
    return out


def _lossy_feature(k: np.ndarray) -> np.ndarray:
    """float32 bit pattern of k + 1 minus that of 1.0: a piecewise-linear log2 in exact integers (k < 2^24)."""
    return (k + 1).astype(np.float32).view(np.int32) - _F32_ONE


def _lossy_from_feature(f: np.ndarray) -> np.ndarray:
    """Inverse of `_lossy_feature` on a (mean) feature: the geometric-mean value, rounded to an integer."""
    v = (f + _F32_ONE).view(np.float32) - np.float32(1.0)
    return np.floor(v + np.float32(0.5)).astype(np.int32)


def _pass_prediction(F: np.ndarray, pas: _Pass, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """(integer prediction int32, context id uint8) of one pass's target cells, both [m, nr, nc]."""
    mean = _predict(F, pas)
    if kind == KIND_LOSSY:
        return _lossy_from_feature(mean), np.take(_LOSSY_LUT, mean >> _LOSSY_SHIFT)
    return mean, np.take(_EXACT_LUT, mean >> _EXACT_SHIFT)


def _zigzag(r: np.ndarray) -> np.ndarray:
    return ((r << 1) ^ (r >> 31)).view(np.uint32)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return (z >> np.uint32(1)).view(np.int32) ^ -(z & np.uint32(1)).view(np.int32)


# ------------------------------------------------------------------------------------------- entropy coding
def _deflate(b: bytes) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)
    return co.compress(b) + co.flush()


def _inflate(b: bytes | memoryview, raw_len: int) -> bytes:
    try:
        d = zlib.decompressobj(-15)
        out = d.decompress(b, raw_len)
    except zlib.error as exc:
        raise ValueError(f"corrupt pointer blob: {exc}") from None
    if len(out) != raw_len:
        raise ValueError(f"corrupt pointer blob: a stream decoded to {len(out)} bytes, expected {raw_len}")
    return out


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pack_streams(streams: Sequence[bytes]) -> bytes:
    """Each stream as varint(raw length), varint(compressed length), deflated bytes (nothing when empty)."""
    parts = []
    for s in streams:
        if not s:
            parts.append(b"\x00")
            continue
        c = _deflate(s)
        parts += [_varint(len(s)), _varint(len(c)), c]
    return b"".join(parts)


class _Reader:
    def __init__(self, buf: bytes | memoryview, what: str):
        self.buf = memoryview(buf)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"truncated pointer blob: {self.what} needs {n} more bytes at {self.pos}, "
                             f"{len(self.buf) - self.pos} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        v = shift = 0
        while True:
            b = self.take(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
            if shift > 63:
                raise ValueError(f"corrupt pointer blob: bad length in {self.what}")

    def streams(self, count: int, max_raw: int) -> list[bytes]:
        out = []
        for _ in range(count):
            raw_len = self.varint()
            if raw_len == 0:
                out.append(b"")
                continue
            if raw_len > max_raw:
                raise ValueError(f"corrupt pointer blob: a stream in {self.what} claims {raw_len} bytes "
                                 f"(at most {max_raw})")
            out.append(_inflate(self.take(self.varint()), raw_len))
        return out


# ---------------------------------------------------------------------------------------- field coding
def _symbols(kind: int) -> tuple[type, int]:
    """Symbol type and escape value of a field kind: lossy residuals are bytes, float16-pattern residuals
    16-bit (stored as a low-byte and a high-byte plane per context)."""
    return (np.uint8, 0xFF) if kind == KIND_LOSSY else (np.uint16, 0xFFFF)


def _encode_field(X: np.ndarray, kind: int) -> bytes:
    """X int32 [m, rows, cols] (lossy k in [0, 2^24), or float16 bit patterns) → streams: per context the
    zig-zagged residuals in coding order (lossy: one byte each; exact: a low-byte and a high-byte plane), then
    one escape stream (uint32, in coding order) for symbols at the escape value."""
    m, rows, cols = X.shape
    sym_t, esc_v = _symbols(kind)
    F = _lossy_feature(X) if kind == KIND_LOSSY else X
    ctxs, syms, escs = [], [], []
    for pas in _passes(rows, cols):
        pred, ctx = _pass_prediction(F, pas, kind)
        z = _zigzag(X[:, pas.target[0], pas.target[1]] - pred).ravel()
        esc = z >= esc_v
        if esc.any():
            escs.append(z[esc] - np.uint32(esc_v))
        syms.append(np.minimum(z, esc_v).astype(sym_t))
        ctxs.append(ctx.ravel())
    ctx_all = np.concatenate(ctxs)
    order = np.argsort(ctx_all, kind="stable")
    bounds = np.searchsorted(ctx_all[order], _CTX_EDGES)
    srt = np.concatenate(syms)[order]
    streams = []
    for c in range(_N_CTX):
        part = srt[bounds[c]:bounds[c + 1]]
        if kind == KIND_LOSSY:
            streams.append(part.tobytes())
        else:
            streams += [part.astype(np.uint8).tobytes(), (part >> 8).astype(np.uint8).tobytes()]
    streams.append(np.concatenate(escs).astype("<u4").tobytes() if escs else b"")
    return _pack_streams(streams)


def _decode_field(rd: _Reader, m: int, rows: int, cols: int, kind: int) -> np.ndarray:
    sym_t, esc_v = _symbols(kind)
    per_ctx = 1 if kind == KIND_LOSSY else 2
    cells = m * rows * cols
    streams = rd.streams(per_ctx * _N_CTX + 1, 4 * cells)
    ctx_syms = []
    for c in range(_N_CTX):
        if kind == KIND_LOSSY:
            ctx_syms.append(np.frombuffer(streams[c], dtype=np.uint8))
            continue
        lo, hi = (np.frombuffer(streams[2 * c + j], dtype=np.uint8) for j in (0, 1))
        if lo.size != hi.size:
            raise ValueError("corrupt pointer blob: byte planes of different lengths")
        ctx_syms.append(lo.astype(np.uint16) | (hi.astype(np.uint16) << 8))
    escape = np.frombuffer(streams[-1], dtype="<u4")
    used = np.zeros(_N_CTX, dtype=np.int64)
    esc_used = 0
    F = np.zeros((m, rows, cols), dtype=np.int32)  # lossy: features (k is recovered at the end); exact: patterns
    for pas in _passes(rows, cols):
        pred, ctx = _pass_prediction(F, pas, kind)
        flat_ctx = ctx.ravel()
        order = np.argsort(flat_ctx, kind="stable")
        counts = np.diff(np.searchsorted(flat_ctx[order], _CTX_EDGES))
        parts = []
        for c in np.flatnonzero(counts):
            a, b = used[c], used[c] + counts[c]
            if b > ctx_syms[c].size:
                raise ValueError("corrupt pointer blob: a context stream ended early")
            parts.append(ctx_syms[c][a:b])
            used[c] = b
        v = np.empty(flat_ctx.size, dtype=sym_t)
        v[order] = np.concatenate(parts)
        z = v.astype(np.uint32)
        esc = np.flatnonzero(v == esc_v)
        if esc.size:
            if esc_used + esc.size > escape.size:
                raise ValueError("corrupt pointer blob: the escape stream ended early")
            z[esc] += escape[esc_used:esc_used + esc.size]
            esc_used += esc.size
        val = pred + _unzigzag(z).reshape(pred.shape)
        F[:, pas.target[0], pas.target[1]] = _lossy_feature(val) if kind == KIND_LOSSY else val
    if any(int(used[c]) != ctx_syms[c].size for c in range(_N_CTX)) or esc_used != escape.size:
        raise ValueError("corrupt pointer blob: streams hold more symbols than the grid has cells")
    lim = int(_lossy_feature(np.array(_K_MAX - 1))) if kind == KIND_LOSSY else 0xFFFF
    if F.size and (int(F.min()) < 0 or int(F.max()) > lim):
        raise ValueError("corrupt pointer blob: decoded value out of range")
    if kind == KIND_LOSSY:
        return ((F + _F32_ONE).view(np.float32) - np.float32(1.0)).astype(np.int32)
    return F


# ------------------------------------------------------------------------------------------- quantisation
def recover_integers(P: np.ndarray, max_tv: float | np.ndarray = 5e-4,
                      max_j: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Steps that are already decoded output — q = k/Σk for integers k, possibly rounded to float16 by an
    export — and those k, so that saving a loaded trace again (or export → import) changes nothing.

    For j = 1 … `max_j` the step size a = q_min/j is tried (q_min: the smallest non-zero value, whose k is j),
    refined by least squares on a sample of 24 small non-zero cells, and kept when the sample's q/a are all
    within 0.15 of integers; then every cell is checked (within 0.49, after refining a on the whole step) and the
    integers are accepted when they decode to within `max_tv` of the input. Continuous model output passes the
    sample test by chance with probability ~0.3²⁴ per try. Returns (k int32, found bool [m])."""
    m = P.shape[0]
    max_tv = np.broadcast_to(np.asarray(max_tv, dtype=np.float64), (m,))
    flat = P.reshape(m, -1)
    k_out = np.zeros(flat.shape, dtype=np.int32)
    found = np.zeros(m, dtype=bool)
    qmin = np.min(flat, axis=1, where=flat > 0, initial=np.inf).astype(np.float64)
    stride = max(1, flat.shape[1] // 512)
    sub = flat[:, ::stride].astype(np.float64)
    samp = np.sort(np.where(sub > 0, sub, np.inf), axis=1)[:, :24]
    for i in np.flatnonzero(np.isfinite(samp).sum(axis=1) < 8) if m else ():
        v = np.sort(flat[i][flat[i] > 0])[:24]  # sparse step: the sample holds too few non-zero cells
        samp[i] = np.inf
        samp[i, :v.size] = v
    valid = np.isfinite(samp)
    s0 = np.where(valid, samp, 0.0)[:, None, :]  # [m, 1, S]
    js = np.arange(1, max_j + 1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (qmin[:, None] / js)[:, :, None]  # [m, J, 1]: all candidate steps at once
        ks = np.rint(s0 / a)
        a = (s0 * ks).sum(axis=2, keepdims=True) / (ks * ks).sum(axis=2, keepdims=True)
        x = s0 / a
    err = np.where(valid[:, None, :], np.abs(x - np.rint(x)), 0.0).max(axis=2)  # [m, J]
    passing = (err <= 0.15) & np.isfinite(qmin)[:, None] & np.isfinite(a[:, :, 0])
    for i in np.flatnonzero(passing.any(axis=1)):
        row = flat[i].astype(np.float64)
        for jj in np.flatnonzero(passing[i]):
            ai = float(a[i, jj, 0])
            for top in (64.0, 1024.0, np.inf, np.inf):  # refine a on ever larger cells (their k need a precise a)
                k = np.rint(row / ai)
                w = k * (k < top)
                ai = float((row * w).sum() / max(float((k * w).sum()), 1e-300))
            xr = row / ai
            k = np.rint(xr)
            if np.abs(xr - k).max() > 0.49 or k.max() >= _K_MAX or k.sum() <= 0:
                continue
            kk = k.astype(np.int32).reshape(1, *P.shape[1:])
            if float(np.abs(P[i] - dequantise(kk)[0]).sum(dtype=np.float64)) * 0.5 <= max_tv[i]:
                k_out[i] = kk.ravel()
                found[i] = True
                break
    return k_out.reshape(P.shape), found


def quantise(P: np.ndarray, tv: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P float32 [m, rows, cols] → (k int32, ok bool [m]): k = round(P/a) with, per step, the largest step a
    found for which the decoded q = k/Σk (computed exactly as `decode` returns it) has TV(P, q) ≤ tv. A
    bracketing secant search (TV ≈ N·a/8 is nearly linear in a) settles most steps in one or two tries. ok is
    False where no a works; those steps are stored exactly instead."""
    m = P.shape[0]
    tv = np.broadcast_to(np.asarray(tv, dtype=np.float64), (m,))
    a = 8.0 * tv / (P.shape[1] * P.shape[2])
    lo = np.zeros(m)  # largest a known to meet tv
    hi = np.full(m, np.inf)  # smallest a known to fail
    k, found = recover_integers(P, max_tv=np.minimum(tv, 5e-4))  # float16 rounding alone costs ~2e-4
    lo[found] = 1.0
    pmax = P.max(axis=(1, 2)).astype(np.float64)
    a = np.maximum(a, pmax / (_K_MAX - 1))  # keep k below 2^24
    todo = np.flatnonzero(~found)
    flat = P.reshape(m, -1)
    for _ in range(10):
        if todo.size == 0:
            break
        # float32 throughout: kk holds exact integers (< 2^24), q is what `dequantise` returns bit for bit
        kk = np.rint(flat[todo] * (1.0 / a[todo, None]).astype(np.float32))
        total = kk.sum(axis=1, dtype=np.float64)
        d = flat[todo] - kk / np.maximum(total, 1).astype(np.float32)[:, None]
        np.abs(d, out=d)
        t = np.where(total > 0, 0.5 * d.sum(axis=1).astype(np.float64), np.inf)
        at, tvt = a[todo], tv[todo]
        good = t + _TV_SLACK <= tvt
        k.reshape(m, -1)[todo[good]] = kk[good]
        lo[todo[good]] = at[good]
        hi[todo[~good]] = np.minimum(hi[todo[~good]], at[~good])
        ratio = np.where(t > 0, 0.985 * tvt / np.where(t > 0, t, 1.0), 16.0)
        nxt = at * np.clip(ratio, 0.25, 16.0)
        h, lo_t = hi[todo], lo[todo]
        nxt = np.where((nxt > lo_t) & (nxt < h), nxt, np.where(lo_t > 0, np.sqrt(lo_t * np.minimum(h, 16 * lo_t)), nxt))
        nxt = np.maximum(nxt, pmax[todo] / (_K_MAX - 1))
        finished = (good & (t >= 0.93 * tvt)) | ((lo_t > 0) & (np.minimum(h, nxt) < 1.02 * lo_t))
        a[todo] = nxt
        todo = todo[~finished]
    return k, lo > 0


def dequantise(k: np.ndarray) -> np.ndarray:
    """k int [m, rows, cols] → float32 q = k / Σk per step, exactly what `decode` returns (float32 IEEE ops)."""
    s = k.sum(axis=(1, 2), dtype=np.int64, keepdims=True).astype(np.float32)
    return k.astype(np.float32) / np.maximum(s, np.float32(1))


# --------------------------------------------------------------------------------------------- public API
def encode(
    pointers: np.ndarray,
    p_copy: Sequence[float] | np.ndarray | None = None,
    is_copy: Sequence[bool] | np.ndarray | None = None,
    *,
    mode: str | None = None,
    tv: float = DEFAULT_TV,
    copy_threshold: float = COPY_THRESHOLD,
    copy_tv: float | None = None,
) -> bytes:
    """Encode pointers float [n, rows, cols] (non-negative, each step summing to ~1) into a v1 blob.

    Steps with `is_copy` or `p_copy` ≥ `copy_threshold` are stored as exact float16 (or, with `copy_tv`, lossily
    with TV ≤ copy_tv ≤ 1e-3); the others lossily with TV ≤ `tv` (≤ 1e-2). `mode="lossless"` stores every step
    exactly; the default mode is $V1STUDIO_POINTERS, else "compact". Raises ValueError for a wrong shape,
    NaN/inf/negative values, or out-of-range settings."""
    mode = resolve_mode(mode)
    P = np.asarray(pointers)
    if P.ndim != 3 or P.shape[1] <= 0 or P.shape[2] <= 0:
        raise ValueError(f"pointers must be [n_steps, rows, cols] with rows, cols ≥ 1, got shape {P.shape}")
    n, rows, cols = (int(v) for v in P.shape)
    if n >= 1 << 32 or rows >= 1 << 16 or cols >= 1 << 16:
        raise ValueError(f"pointer array {P.shape} is beyond the format's limits")
    if not 0 < tv <= TV_BOUND:
        raise ValueError(f"tv must be in (0, {TV_BOUND}], got {tv}")
    if copy_tv is not None and not 0 < copy_tv <= COPY_TV_BOUND:
        raise ValueError(f"copy_tv must be None (exact float16) or in (0, {COPY_TV_BOUND}], got {copy_tv}")
    P = np.ascontiguousarray(P, dtype=np.float32)
    if n and not np.isfinite(P).all():
        raise ValueError("a pointer distribution has NaN or infinite values")
    if n and (P < 0).any():
        raise ValueError("a pointer distribution has negative values; pointers are probabilities")
    keep = np.zeros(n, dtype=bool)
    for name, v in (("p_copy", p_copy), ("is_copy", is_copy)):
        if v is not None and len(v) != n:
            raise ValueError(f"{name} has {len(v)} entries for {n} steps")
    if is_copy is not None:
        keep |= np.asarray(is_copy, dtype=bool)
    if p_copy is not None:
        keep |= np.asarray(p_copy, dtype=np.float64) >= copy_threshold
    if mode == "lossless":
        exact, targets = np.ones(n, dtype=bool), np.zeros(n)
    elif copy_tv is None:
        exact, targets = keep, np.full(n, float(tv))
    else:
        exact, targets = np.zeros(n, dtype=bool), np.where(keep, float(copy_tv), float(tv))

    kinds = np.where(exact, KIND_EXACT, KIND_LOSSY).astype(np.uint8)
    per = max(1, GROUP_CELLS // (rows * cols))
    groups = []
    for a in range(0, n, per):
        b = min(n, a + per)
        body, kinds[a:b] = _encode_group(P[a:b], kinds[a:b] == KIND_LOSSY, targets[a:b])
        groups.append(body)
    flags = FLAG_LOSSLESS if mode == "lossless" else 0
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, flags, 0, n, rows, cols, per) + np.packbits(kinds).tobytes()
    off = 0
    table = []
    for g in groups:
        table.append(_GROUP.pack(off, len(g), zlib.crc32(g)))
        off += len(g)
    head += b"".join(table)
    head += _U32.pack(zlib.crc32(head))
    return head + b"".join(groups)


def _encode_group(G: np.ndarray, lossy: np.ndarray, targets: np.ndarray) -> tuple[bytes, np.ndarray]:
    """One group's body and its steps' kinds: b"\\0" + lossy field + exact field, or b"\\1" + raw float16 for
    all steps when that is not larger (tiny grids)."""
    lossy = lossy.copy()
    parts = [_GROUP_CODED]
    if lossy.any():
        k, ok = quantise(G[lossy], targets[lossy])
        if not ok.all():  # no valid step size (cannot happen for real distributions): store those exactly
            lossy[np.flatnonzero(lossy)[~ok]] = False
            k = k[ok]
        if k.shape[0]:
            parts.append(_encode_field(k, KIND_LOSSY))
    if (~lossy).any():
        parts.append(_encode_field(_float16_patterns(G[~lossy]), KIND_EXACT))
    body = b"".join(parts)
    if len(body) > 1 + 2 * G.size:
        h = _float16_patterns(G).astype(np.uint16)
        return _GROUP_RAW + h.tobytes(), np.full(len(G), KIND_EXACT, dtype=np.uint8)
    return body, np.where(lossy, KIND_LOSSY, KIND_EXACT).astype(np.uint8)


def _float16_patterns(G: np.ndarray) -> np.ndarray:
    """float16 bit patterns (as int32) of G, refusing values beyond float16's range."""
    u = to_float16(G).view(np.uint16)
    if ((u & 0x7C00) == 0x7C00).any():
        raise ValueError("a pointer distribution has values beyond float16's range")
    return u.astype(np.int32)


@dataclass(frozen=True)
class PointerBlobInfo:
    """What a stored pointer blob is: `format` "legacy-float16" or "v1"."""

    format: str
    n_steps: int
    grid: tuple[int, int]
    nbytes: int
    version: int | None = None
    lossless: bool = False
    n_exact: int = 0  # steps stored as exact float16 (all of them for legacy blobs)
    steps_per_group: int = 0


@dataclass(frozen=True)
class _Parsed:
    n: int
    rows: int
    cols: int
    per: int
    flags: int
    kinds: np.ndarray
    table: list[tuple[int, int, int]]
    payload: memoryview


def _parse(blob: bytes | memoryview, n: int, grid: Sequence[int]) -> _Parsed | None:
    """The parsed v1 header, or None for a legacy raw float16 blob. Raises ValueError for anything else."""
    rows, cols = int(grid[0]), int(grid[1])
    if n < 0 or rows <= 0 or cols <= 0:
        raise ValueError(f"bad pointer shape: {n} steps on a {rows}×{cols} grid")
    buf = memoryview(blob).cast("B") if not isinstance(blob, bytes) else memoryview(blob)
    legacy_len = n * rows * cols * 2
    if len(buf) >= _HEAD.size and bytes(buf[:4]) == MAGIC:
        _, version, flags, _, bn, br, bc, per = _HEAD.unpack(buf[:_HEAD.size])
        if version == FORMAT_VERSION:
            n_groups = -(-bn // per) if per else -1
            n_kind = -(-bn // 8)
            head_len = _HEAD.size + n_kind + n_groups * _GROUP.size
            if per > 0 and len(buf) >= head_len + 4 and \
                    _U32.unpack(buf[head_len:head_len + 4])[0] == zlib.crc32(buf[:head_len]):
                if (bn, br, bc) != (n, rows, cols):
                    raise ValueError(f"pointer blob holds {bn} steps on a {br}×{bc} grid, expected {n} on "
                                     f"{rows}×{cols}")
                kinds = np.unpackbits(np.frombuffer(buf[_HEAD.size:_HEAD.size + n_kind], dtype=np.uint8))[:bn]
                t0 = _HEAD.size + n_kind
                table = [_GROUP.unpack(buf[t0 + i * _GROUP.size:t0 + (i + 1) * _GROUP.size]) for i in range(n_groups)]
                return _Parsed(bn, br, bc, per, flags, kinds, table, buf[head_len + 4:])
            if len(buf) != legacy_len:
                raise ValueError("corrupt or truncated pointer blob (v1 header does not check out)")
        elif len(buf) != legacy_len:
            if version > FORMAT_VERSION:
                raise ValueError(f"pointer blob format version {version} is newer than this v1 Studio reads "
                                 f"(≤ {FORMAT_VERSION}); upgrade to read it")
            raise ValueError(f"corrupt pointer blob: unknown format version {version}")
    if len(buf) == legacy_len:
        return None
    raise ValueError(f"pointer blob has {len(buf)} bytes: neither a v1 pointer blob nor raw float16 "
                     f"({legacy_len} bytes for {n}×{rows}×{cols})")


def blob_info(blob: bytes | memoryview, n: int, grid: Sequence[int]) -> PointerBlobInfo:
    p = _parse(blob, n, grid)
    g = (int(grid[0]), int(grid[1]))
    if p is None:
        return PointerBlobInfo("legacy-float16", n, g, len(blob), n_exact=n)
    return PointerBlobInfo("v1", n, g, len(blob), FORMAT_VERSION, bool(p.flags & FLAG_LOSSLESS),
                           int((p.kinds == KIND_EXACT).sum()), p.per)


def _decode_group(p: _Parsed, gi: int) -> np.ndarray:
    off, length, crc = p.table[gi]
    if off + length > len(p.payload):
        raise ValueError(f"truncated pointer blob: group {gi} needs bytes {off}–{off + length}, "
                         f"payload has {len(p.payload)}")
    body = p.payload[off:off + length]
    if zlib.crc32(body) != crc:
        raise ValueError(f"corrupt pointer blob: group {gi} fails its CRC check")
    a = gi * p.per
    b = min(p.n, a + p.per)
    kinds = p.kinds[a:b]
    out = np.empty((b - a, p.rows, p.cols), dtype=np.float32)
    if body[:1] == _GROUP_RAW:
        if len(body) != 1 + out.size * 2 or (kinds != KIND_EXACT).any():
            raise ValueError(f"corrupt pointer blob: raw group {gi} has the wrong size")
        return np.frombuffer(body[1:], dtype="<f2").reshape(out.shape).astype(np.float32)
    if body[:1] != _GROUP_CODED:
        raise ValueError(f"corrupt pointer blob: group {gi} has an unknown encoding")
    rd = _Reader(body[1:], f"group {gi}")
    lossy = kinds == KIND_LOSSY
    if lossy.any():
        out[lossy] = dequantise(_decode_field(rd, int(lossy.sum()), p.rows, p.cols, KIND_LOSSY))
    if (~lossy).any():
        u = _decode_field(rd, int((~lossy).sum()), p.rows, p.cols, KIND_EXACT)
        out[~lossy] = u.astype(np.uint16).view("<f2").astype(np.float32)
    if rd.pos != len(body) - 1:
        raise ValueError(f"corrupt pointer blob: group {gi} has {len(body) - 1 - rd.pos} trailing bytes")
    return out


def decode_steps(blob: bytes | memoryview, n: int, grid: Sequence[int], start: int, stop: int) -> np.ndarray:
    """Steps [start, stop) as float32 [stop − start, rows, cols], decoding only the groups they touch."""
    rows, cols = int(grid[0]), int(grid[1])
    if not 0 <= start <= stop <= n:
        raise IndexError(f"step range [{start}, {stop}) is outside 0–{n}")
    p = _parse(blob, n, grid)
    if p is None:
        b = rows * cols * 2
        return np.frombuffer(bytes(memoryview(blob)[start * b:stop * b]), dtype="<f2") \
            .reshape(stop - start, rows, cols).astype(np.float32)
    if start == stop:
        return np.zeros((0, rows, cols), dtype=np.float32)
    g0, g1 = start // p.per, (stop - 1) // p.per
    parts = [_decode_group(p, g) for g in range(g0, g1 + 1)]
    allp = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return allp[start - g0 * p.per: stop - g0 * p.per]


def decode_step(blob: bytes | memoryview, n: int, grid: Sequence[int], index: int) -> np.ndarray:
    """One step's pointer, float32 [rows, cols]."""
    if not 0 <= index < n:
        raise IndexError(f"the blob has {n} steps; there is no step {index}")
    return decode_steps(blob, n, grid, index, index + 1)[0]


def decode(blob: bytes | memoryview, n: int, grid: Sequence[int]) -> np.ndarray:
    """All steps as float32 [n, rows, cols]; reads v1 blobs and legacy raw float16 blobs."""
    return decode_steps(blob, n, grid, 0, n)
