"""The synthetic big-trace generator: real structure at v1-7B scale (what benchmarks and browser tests rely on)."""

import numpy as np
import pytest

from v1core.synthetic import big_trace, synthetic_image


@pytest.fixture(scope="module")
def trace():
    return big_trace(37, 37, 1000, seed=3)


def test_shape_and_normalisation(trace):
    assert trace.grid == (37, 37) and len(trace.steps) == 1000
    assert trace.image_size == (37 * 28, 37 * 28)
    p = trace.pointer_matrix().reshape(1000, -1)
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p >= 0).all()
    assert [s.index for s in trace.steps] == list(range(1000))


def test_text_steps_diffuse_copy_steps_peaked(trace):
    n = trace.n_patches
    is_copy = np.array([s.is_copy for s in trace.steps])
    ent = np.array([s.entropy for s in trace.steps]) / np.log(n)
    assert is_copy.sum() > 50
    assert 0.85 < ent[~is_copy].mean() < 0.99
    assert ent[is_copy].mean() < 0.4
    pmax = trace.pointer_matrix().reshape(1000, -1).max(axis=1)
    assert (pmax[is_copy] >= 0.45).all()
    assert np.array([s.p_copy for s in trace.steps])[is_copy].min() >= 0.6


def test_revisits_parse_with_detect_text(trace):
    revisits = trace.revisits
    assert len(revisits) >= 5
    for rv in revisits:
        assert rv.query and rv.object_name and rv.object_name.startswith("obj")
        assert rv.normalized_box is not None
        assert all(trace.steps[i].text == f"<|copy_{trace.steps[i].patch}|>" for i in range(rv.start_step, rv.end_step))
    assert trace.answer == "The cup."


def test_spatially_smooth(trace):
    """Neighbouring cells of a text step's pointer are far more alike than random pairs of cells."""
    p = np.log(trace.pointer_matrix()[[s.index for s in trace.steps if not s.is_copy][:50]])
    neighbour = np.abs(np.diff(p, axis=2)).mean()
    shuffled = np.abs(p.reshape(50, -1) - np.random.default_rng(0).permutation(p.reshape(50, -1), axis=1)).mean()
    assert neighbour < 0.8 * shuffled


def test_deterministic_and_any_size():
    a, b = big_trace(16, 16, 64, seed=5), big_trace(16, 16, 64, seed=5)
    assert np.array_equal(a.pointer_matrix(), b.pointer_matrix()) and a.output_text == b.output_text
    assert big_trace(4, 9, 3).grid == (4, 9)
    with pytest.raises(ValueError):
        big_trace(0, 4, 10)


def test_image_matches_grid():
    assert synthetic_image(5, 7).size == (7 * 28, 5 * 28)
