"""app/compare.py: pointer metrics (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app import compare


def onehot(k: int, shape=(4, 5)) -> np.ndarray:
    p = np.zeros(shape, dtype=np.float32)
    p.flat[k] = 1.0
    return p


def test_entropy_bounds():
    assert compare.entropy(onehot(3)) == pytest.approx(0.0)
    assert compare.entropy(np.ones((4, 5))) == pytest.approx(math.log(20))
    # unnormalised input is renormalised
    assert compare.entropy(np.full((2, 2), 7.0)) == pytest.approx(math.log(4))


def test_js_divergence_properties():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(20)), rng.dirichlet(np.ones(20))
    assert compare.js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert compare.js_divergence(p, q) == pytest.approx(compare.js_divergence(q, p))
    assert 0 < compare.js_divergence(p, q) < 1
    # disjoint supports: exactly 1 bit
    assert compare.js_divergence(onehot(0), onehot(7)) == pytest.approx(1.0)
    # half overlap: JS = 0.5 bits for [1,0,0] vs [0.5,0.5,0]? compute reference by hand
    a, b = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    m = (a + b) / 2
    ref = 0.5 * (1 * math.log2(1 / m[0])) + 0.5 * (0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1]))
    assert compare.js_divergence(a, b) == pytest.approx(ref)


def test_js_rejects_other_grids_and_bad_input():
    with pytest.raises(ValueError, match="different grids"):
        compare.js_divergence(np.ones(4), np.ones(6))
    with pytest.raises(ValueError, match="no probability mass"):
        compare.entropy(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        compare.entropy(np.array([0.5, np.nan]))


def test_argmax_distance_in_patches():
    assert compare.argmax_cell(onehot(7)) == (1, 2)
    assert compare.argmax_distance(onehot(0), onehot(19)) == pytest.approx(math.hypot(3, 4))
    assert compare.argmax_distance(onehot(6).ravel(), onehot(6).ravel(), (4, 5)) == 0.0
    with pytest.raises(ValueError, match="needs shape"):
        compare.argmax_distance(onehot(0).ravel(), onehot(1).ravel())


def test_mass_inside_and_region_mask():
    p = np.ones((4, 5)) / 20
    assert compare.mass_inside(p, [0, 1, 2, 3]) == pytest.approx(0.2)
    assert compare.mass_inside(p, []) == 0.0
    assert compare.mass_inside(onehot(5), [5]) == pytest.approx(1.0)
    mask = compare.region_mask([0, 6], (4, 5))
    assert mask[0, 0] and mask[1, 1] and mask.sum() == 2
    with pytest.raises(ValueError, match="outside"):
        compare.region_mask([20], (4, 5))


def test_region_iou():
    assert compare.region_iou([1, 2, 3], [2, 3, 4]) == pytest.approx(2 / 4)
    assert compare.region_iou([], []) == 1.0
    assert compare.region_iou([1], []) == 0.0
    assert compare.region_iou([1, 1, 2], [2, 1]) == 1.0  # sets, duplicates ignored


def test_difference_map():
    d = compare.difference_map(onehot(0), np.ones((4, 5)))
    assert d.shape == (4, 5)
    assert d.sum() == pytest.approx(0.0, abs=1e-12)
    assert d[0, 0] == pytest.approx(1 - 1 / 20)


def test_compare_pointers_bundle():
    m = compare.compare_pointers(onehot(0), onehot(19), region=[0, 1])
    assert m.js_bits == pytest.approx(1.0)
    assert m.argmax_distance == pytest.approx(5.0)
    assert (m.mass_a, m.mass_b) == (pytest.approx(1.0), pytest.approx(0.0))
    assert set(m.to_dict()) >= {"JS divergence (bits)", "mass A in region"}


def test_series_matches_scalar_functions():
    rng = np.random.default_rng(3)
    a = rng.dirichlet(np.full(20, 0.5), size=7).reshape(7, 4, 5)
    b = rng.dirichlet(np.full(20, 0.5), size=5).reshape(5, 4, 5)
    s = compare.compare_pointer_series(a, b, region=[1, 2, 3])
    assert len(s["step"]) == 5  # shorter trace wins
    for i in range(5):
        assert s["js_bits"][i] == pytest.approx(compare.js_divergence(a[i], b[i]))
        assert s["entropy_a"][i] == pytest.approx(compare.entropy(a[i]))
        assert s["entropy_b"][i] == pytest.approx(compare.entropy(b[i]))
        assert s["argmax_distance"][i] == pytest.approx(compare.argmax_distance(a[i], b[i]))
        assert s["mass_a"][i] == pytest.approx(compare.mass_inside(a[i], [1, 2, 3]))
    with pytest.raises(ValueError, match="different grids"):
        compare.compare_pointer_series(a, np.ones((3, 5, 4)))


def test_series_is_fast_enough_for_long_traces():
    import time

    rng = np.random.default_rng(0)
    a = rng.random((300, 40, 50)).astype(np.float32)
    t = time.perf_counter()
    compare.compare_pointer_series(a, a[::-1].copy(), region=range(100))
    assert time.perf_counter() - t < 2.0


def test_revisit_iou_table_pairs_by_order():
    rows = compare.revisit_iou_table([[1, 2], [5]], [[2, 3]])
    assert rows[0]["IoU (k-th)"] == pytest.approx(1 / 3)
    assert rows[1]["IoU (k-th)"] == 0.0 and rows[1]["patches B"] == 0
    assert rows[0]["best IoU"] == pytest.approx(1 / 3)


def test_parse_patch_ids():
    assert compare.parse_patch_ids("3, 4, 10-12") == [3, 4, 10, 11, 12]
    assert compare.parse_patch_ids(" 7 7;8 ") == [7, 8]
    assert compare.parse_patch_ids("") == []
    with pytest.raises(ValueError, match="cannot read"):
        compare.parse_patch_ids("a, 2")
    with pytest.raises(ValueError, match="cannot read"):
        compare.parse_patch_ids("5-2")
    with pytest.raises(ValueError, match="outside the grid"):
        compare.parse_patch_ids("0, 99", n_patches=20)
