"""storage.pointer_codec: fidelity bounds, exactness, legacy blobs, corruption, partial decoding."""

from __future__ import annotations

import numpy as np
import pytest

from storage import pointer_codec as pc
from storage.codec import to_float16
from v1core.synthetic import big_trace
from v1core.trace import pointers_from_bytes


def tv(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Independent of the codec's own accounting: ½·Σ|p − q/Σq| per step, float64."""
    p = p.astype(np.float64)
    q = q.astype(np.float64)
    q = q / q.sum(axis=(1, 2), keepdims=True)
    return 0.5 * np.abs(p - q).sum(axis=(1, 2))


def trace_arrays(rows: int, cols: int, n: int, seed: int = 0):
    tr = big_trace(rows, cols, n, seed=seed)
    P = tr.pointer_matrix()
    is_copy = np.array([s.is_copy for s in tr.steps])
    p_copy = np.array([s.p_copy for s in tr.steps])
    return P, is_copy, p_copy


def f16(P: np.ndarray) -> np.ndarray:
    return to_float16(P).astype(np.float32)


@pytest.mark.parametrize("rows,cols,n", [(12, 12, 70), (37, 37, 150), (64, 64, 40), (128, 128, 20)])
def test_round_trip_meets_the_bounds(rows, cols, n):
    P, is_copy, p_copy = trace_arrays(rows, cols, n, seed=rows)
    blob = pc.encode(P, p_copy, is_copy)
    Q = pc.decode(blob, n, (rows, cols))
    assert Q.dtype == np.float32 and Q.shape == P.shape
    kept = is_copy | (p_copy >= pc.COPY_THRESHOLD)
    assert kept.any() and (~kept).any()
    t = tv(P, Q)
    assert t[~kept].max() <= pc.TV_BOUND
    assert t[~kept].min() >= 0.8 * pc.DEFAULT_TV  # the budget is used: these steps really are lossy
    # copy steps and near-copies are float16, bit for bit, so far inside the copy bound
    assert np.array_equal(Q[kept].view(np.uint32), f16(P[kept]).view(np.uint32))
    assert t[kept].max() <= 1e-3
    assert (Q >= 0).all()
    assert np.abs(Q[~kept].sum(axis=(1, 2), dtype=np.float64) - 1).max() <= 1e-6
    assert pc.blob_info(blob, n, (rows, cols)).n_exact == int(kept.sum())


def test_text_steps_compress_far_below_float16():
    P, is_copy, p_copy = trace_arrays(64, 64, 80, seed=3)
    text = P[~(is_copy | (p_copy >= pc.COPY_THRESHOLD))]
    blob = pc.encode(text)
    assert len(blob) <= 0.3 * text.size * 2  # measured ≈ 0.24 of raw float16 at σ 0.25
    assert tv(text, pc.decode(blob, len(text), (64, 64))).max() <= pc.TV_BOUND


def test_a_looser_tv_makes_smaller_blobs_and_is_honoured():
    P, _, _ = trace_arrays(37, 37, 40, seed=4)
    sizes = []
    for target in (0.002, 0.005, 0.01):
        blob = pc.encode(P, mode="compact", tv=target)
        assert tv(P, pc.decode(blob, len(P), (37, 37))).max() <= target
        sizes.append(len(blob))
    assert sizes[0] > sizes[1] > sizes[2]


def test_copy_tv_stores_kept_steps_lossily_within_their_bound():
    P, is_copy, p_copy = trace_arrays(37, 37, 120, seed=5)
    kept = is_copy | (p_copy >= pc.COPY_THRESHOLD)
    exact = pc.encode(P, p_copy, is_copy)
    lossy = pc.encode(P, p_copy, is_copy, copy_tv=9e-4)
    Q = pc.decode(lossy, len(P), (37, 37))
    assert tv(P[kept], Q[kept]).max() <= 9e-4
    assert len(lossy) < len(exact)
    with pytest.raises(ValueError, match="copy_tv"):
        pc.encode(P, copy_tv=0.01)


def _check_edge(P: np.ndarray) -> np.ndarray:
    n, rows, cols = P.shape
    blob = pc.encode(P)
    Q = pc.decode(blob, n, (rows, cols))
    assert Q.shape == P.shape and (Q >= 0).all()
    if n:
        assert tv(P, Q).max() <= pc.TV_BOUND
    return Q


def test_one_hot_uniform_and_zeros():
    rows, cols = 40, 41
    one_hot = np.zeros((1, rows, cols), np.float32)
    one_hot[0, 7, 30] = 1
    uniform = np.full((1, rows, cols), 1 / (rows * cols), np.float32)
    half = np.zeros((1, rows, cols), np.float32)
    half[0, :, :20] = np.random.default_rng(0).random((rows, 20))
    half /= half.sum()
    Q = _check_edge(np.concatenate([one_hot, uniform, half]))
    assert np.array_equal(Q[0], one_hot[0])
    assert np.allclose(Q[1], uniform[0], rtol=1e-6)
    assert (Q[2][:, 20:] == 0).all()


@pytest.mark.parametrize("shape", [(3, 1, 1), (4, 1, 9), (4, 9, 1), (2, 2, 3), (1, 5, 5), (0, 6, 6), (1, 1, 300)])
def test_tiny_grids_and_short_chunks(shape):
    n, rows, cols = shape
    rng = np.random.default_rng(sum(shape))
    P = rng.random(shape).astype(np.float32) ** 3
    if n:
        P /= P.sum(axis=(1, 2), keepdims=True)
    Q = _check_edge(P)
    if n:
        assert np.array_equal(pc.decode_step(pc.encode(P), n, (rows, cols), n - 1), Q[-1])


def test_lossless_mode_is_exact_and_selectable_by_environment(monkeypatch):
    P, is_copy, p_copy = trace_arrays(37, 37, 60, seed=6)
    want = f16(P)
    blob = pc.encode(P, p_copy, is_copy, mode="lossless")
    assert np.array_equal(pc.decode(blob, 60, (37, 37)).view(np.uint32), want.view(np.uint32))
    info = pc.blob_info(blob, 60, (37, 37))
    assert info.lossless and info.n_exact == 60 and len(blob) < want.size * 2
    monkeypatch.setenv(pc.MODE_ENV, "lossless")
    assert pc.encode(P, p_copy, is_copy) == blob
    monkeypatch.setenv(pc.MODE_ENV, "tiny")
    with pytest.raises(ValueError, match="V1STUDIO_POINTERS must be one of compact, lossless"):
        pc.encode(P)
    monkeypatch.delenv(pc.MODE_ENV)
    assert not pc.blob_info(pc.encode(P), 60, (37, 37)).lossless


def test_legacy_raw_float16_blobs_decode_bit_exactly_as_before():
    P, _, _ = trace_arrays(20, 30, 25, seed=7)
    blob = to_float16(P).tobytes()
    before = pointers_from_bytes(blob, 25, (20, 30))
    assert np.array_equal(pc.decode(blob, 25, (20, 30)).view(np.uint32), before.view(np.uint32))
    assert np.array_equal(pc.decode_step(blob, 25, (20, 30), 13), before[13])
    assert np.array_equal(pc.decode_steps(memoryview(blob), 25, (20, 30), 3, 9), before[3:9])
    assert pc.blob_info(blob, 25, (20, 30)).format == "legacy-float16"
    assert pc.decode(b"", 0, (20, 30)).shape == (0, 20, 30)


def test_a_legacy_blob_that_starts_with_the_magic_is_still_legacy():
    raw = bytearray(to_float16(np.full((2, 8, 8), 1 / 64, np.float32)).tobytes())
    raw[:4] = pc.MAGIC  # first value becomes float16 0x5689 (104.6): never a probability, but still raw data
    raw[4] = pc.FORMAT_VERSION
    out = pc.decode(bytes(raw), 2, (8, 8))
    assert np.array_equal(out, pointers_from_bytes(bytes(raw), 2, (8, 8)))


def test_partial_decode_equals_full_decode_and_reads_only_its_groups():
    P, is_copy, p_copy = trace_arrays(64, 64, 100, seed=8)
    blob = pc.encode(P, p_copy, is_copy)
    info = pc.blob_info(blob, 100, (64, 64))
    per = info.steps_per_group
    assert per == pc.GROUP_CELLS // (64 * 64) and 100 // per >= 3
    full = pc.decode(blob, 100, (64, 64))
    for i in (0, per - 1, per, 57, 99):
        assert np.array_equal(pc.decode_step(blob, 100, (64, 64), i), full[i])
    for a, b in ((0, 100), (5, 5), (per - 2, per + 3), (31, 99)):
        assert np.array_equal(pc.decode_steps(blob, 100, (64, 64), a, b), full[a:b])
    # damage the last group: earlier steps still decode, the damaged ones are refused
    broken = bytearray(blob)
    broken[-3] ^= 0xFF
    assert np.array_equal(pc.decode_step(bytes(broken), 100, (64, 64), 0), full[0])
    with pytest.raises(ValueError, match="CRC"):
        pc.decode_step(bytes(broken), 100, (64, 64), 99)
    with pytest.raises(IndexError):
        pc.decode_step(blob, 100, (64, 64), 100)


def test_corrupt_or_truncated_blobs_raise_a_clear_value_error():
    P, is_copy, p_copy = trace_arrays(37, 37, 30, seed=9)
    blob = pc.encode(P, p_copy, is_copy)
    assert len(blob) != P.size * 2
    for cut in (0, 3, 10, 40, len(blob) // 2, len(blob) - 1):
        with pytest.raises(ValueError, match="pointer blob"):
            pc.decode(blob[:cut], 30, (37, 37))
    for pos in (5, 12, 40, len(blob) // 3, len(blob) - 20):
        bad = bytearray(blob)
        bad[pos] ^= 0x5A
        with pytest.raises(ValueError, match="pointer blob"):
            pc.decode(bytes(bad), 30, (37, 37))
    with pytest.raises(ValueError, match="expected 31 on 37×37"):
        pc.decode(blob, 31, (37, 37))
    newer = bytearray(blob)
    newer[4] = pc.FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="newer than this v1 Studio reads"):
        pc.decode(bytes(newer), 30, (37, 37))
    newer[4] = 0
    with pytest.raises(ValueError, match="unknown format version 0"):
        pc.decode(bytes(newer), 30, (37, 37))


def test_bad_input_is_refused():
    good = np.full((2, 3, 3), 1 / 9, np.float32)
    for bad, msg in ((good[0], "shape"), (good * np.nan, "NaN"), (-good, "negative")):
        with pytest.raises(ValueError, match=msg):
            pc.encode(bad)
    with pytest.raises(ValueError, match="p_copy has 1 entries for 2 steps"):
        pc.encode(good, p_copy=[0.1])
    with pytest.raises(ValueError, match="tv must be"):
        pc.encode(good, tv=0.05)


def test_encoding_is_deterministic():
    P, is_copy, p_copy = trace_arrays(37, 37, 40, seed=10)
    assert pc.encode(P, p_copy, is_copy) == pc.encode(P.copy(), p_copy, is_copy)


def test_saving_decoded_pointers_again_loses_nothing_more():
    """Re-encoding what `decode` returned (a trace loaded and saved again) reproduces it exactly; after a float16
    export and import it stays within the bound of the original instead of drifting by another 1e-2."""
    P, is_copy, p_copy = trace_arrays(64, 64, 60, seed=11)
    kept = is_copy | (p_copy >= pc.COPY_THRESHOLD)
    Q1 = pc.decode(pc.encode(P, p_copy, is_copy), 60, (64, 64))
    Q2 = pc.decode(pc.encode(Q1, p_copy, is_copy), 60, (64, 64))
    assert np.array_equal(Q1.view(np.uint32), Q2.view(np.uint32))
    Q = Q1
    for _ in range(3):  # export (float16) → import, three times
        Q = pc.decode(pc.encode(f16(Q), p_copy, is_copy), 60, (64, 64))
    assert tv(P, Q)[~kept].max() <= pc.TV_BOUND
    assert np.array_equal(Q, Q1)  # float16 rounding undone: the same integers come back


def test_continuous_pointers_are_not_mistaken_for_decoded_ones():
    P, _, _ = trace_arrays(37, 37, 30, seed=12)
    _, found = pc.recover_integers(P)
    assert not found.any()
    k, ok = pc.quantise(P, pc.DEFAULT_TV)
    _, found = pc.recover_integers(pc.dequantise(k))
    assert found.all()
