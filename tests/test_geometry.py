"""Patch geometry: parity with the v1 reference processor and with transformers' Qwen2-VL image processor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from v1core.geometry import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    ImageGeometryError,
    PatchGrid,
    TrainingGeometry,
    dataset_resize,
    smart_resize,
)

GOLDEN = Path(__file__).parent / "fixtures" / "v1-reference" / "geometry.json"
_DATA = json.loads(GOLDEN.read_text())
CASES = _DATA["cases"]


def test_golden_file_shape() -> None:
    assert len(CASES) == 300
    assert _DATA["patch_size"] == 14 and _DATA["merge_size"] == 2


# ----------------------------------------------------------------------------- golden parity
@pytest.mark.parametrize("case", CASES, ids=[f"case{i:03d}" for i in range(len(CASES))])
def test_reference_parity(case: dict) -> None:
    w, h = case["image_size"]
    s = case["settings"]
    grid = PatchGrid.for_image(w, h, min_pixels=s["min_pixels"], max_pixels=s["max_pixels"])

    assert list(grid.resized) == case["resized"]
    assert list(grid.shape) == case["merged_grid"]
    rh, rw = smart_resize(h, w, 28, s["min_pixels"], s["max_pixels"])
    assert [rw, rh] == case["resized"]

    # bbox -> ids: same ids, same order
    assert grid.bbox_to_patches(case["bbox"]) == case["bbox_patch_ids"]

    # ids -> mask: same box and area
    mask = grid.patches_to_mask(case["mask_patch_ids"])
    assert mask.shape == (case["resized"][1], case["resized"][0])
    assert mask.dtype == bool
    assert int(mask.sum()) == case["mask_area_resized"]
    ys, xs = np.nonzero(mask)
    assert [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] == case["mask_bbox_resized"]

    # from_resized (stored traces) rebuilds the same grid
    assert PatchGrid.from_resized(case["image_size"], case["resized"]) == grid


# ----------------------------------------------------------------------------- transformers agreement
def test_transformers5_smart_resize_agrees_on_golden_sizes() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    for case in CASES:
        w, h = case["image_size"]
        s = case["settings"]
        assert hf_smart_resize(h, w, 28, s["min_pixels"], s["max_pixels"]) == smart_resize(
            h, w, 28, s["min_pixels"], s["max_pixels"]
        )


def test_transformers5_accepts_tiny_images_we_refuse() -> None:
    """Documented discrepancy: transformers 5 dropped 4.51's "side >= factor" check and upsamples."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    assert hf_smart_resize(20, 500) == (28, 504)
    assert hf_smart_resize(10, 10) == (56, 56)
    with pytest.raises(ImageGeometryError):
        smart_resize(20, 500)
    with pytest.raises(ImageGeometryError):
        smart_resize(10, 10)


@pytest.mark.parametrize(
    ("size", "min_pixels", "max_pixels"),
    [
        ((1782, 225), DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS),
        ((640, 480), DEFAULT_MIN_PIXELS, 1003520),
        ((300, 1000), 200704, 401408),
        ((28, 28), DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS),
        ((57, 3000), 200704, 401408),
    ],
)
def test_pil_image_processor_grid_matches(size: tuple[int, int], min_pixels: int, max_pixels: int) -> None:
    """The grid we compute is the grid transformers 5's (PIL) Qwen2-VL processor hands to the model."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    proc = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    out = proc(images=[Image.new("RGB", size, (120, 30, 200))], return_tensors="np")
    grid = PatchGrid.for_image(*size, min_pixels=min_pixels, max_pixels=max_pixels)
    rows, cols = grid.shape
    assert out["image_grid_thw"].tolist() == [[1, 2 * rows, 2 * cols]]
    assert out["pixel_values"].shape[0] == 4 * grid.n_patches


# ----------------------------------------------------------------------------- limits
@pytest.mark.parametrize(("w", "h"), [(20, 500), (500, 20), (27, 27), (1, 1), (0, 100)])
def test_too_small_images_raise(w: int, h: int) -> None:
    with pytest.raises(ImageGeometryError, match="px"):
        PatchGrid.for_image(w, h)


def test_too_small_message_is_human() -> None:
    with pytest.raises(ImageGeometryError, match=r"image is 20×500 px; v1 needs at least 28 px on each side"):
        PatchGrid.for_image(20, 500)


@pytest.mark.parametrize(("w", "h"), [(28 * 201, 28), (28, 28 * 201), (40, 8041)])
def test_extreme_aspect_ratio_raises(w: int, h: int) -> None:
    with pytest.raises(ImageGeometryError, match="aspect ratio"):
        PatchGrid.for_image(w, h)


def test_aspect_ratio_200_and_side_28_are_accepted() -> None:
    grid = PatchGrid.for_image(28 * 200, 28)
    assert grid.shape[0] >= 1 and grid.shape[1] >= 1
    assert PatchGrid.for_image(28, 28).resized == (56, 56)  # grown to min_pixels


def test_geometry_error_is_value_error() -> None:
    assert issubclass(ImageGeometryError, ValueError)


def test_bad_settings_and_resized_sizes() -> None:
    with pytest.raises(ValueError):
        smart_resize(100, 100, min_pixels=10_000, max_pixels=5_000)
    with pytest.raises(ValueError, match="multiples"):
        PatchGrid.from_resized((100, 100), (100, 100))


# ----------------------------------------------------------------------------- ids and boxes
@pytest.fixture
def grid() -> PatchGrid:
    # 560x280 resized from 1120x560: 10 rows x 20 cols, each cell 56x56 original px
    g = PatchGrid.from_resized((1120, 560), (560, 280))
    assert g.shape == (10, 20) and g.n_patches == 200 and g.cell == 28
    return g


@pytest.mark.parametrize("bad", [-1, 200, 10_000])
def test_invalid_ids_raise(grid: PatchGrid, bad: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        grid.patch_box(bad)
    with pytest.raises(ValueError, match="outside"):
        grid.patches_to_mask([0, bad])
    with pytest.raises(ValueError, match="outside"):
        grid.component_boxes([bad])
    with pytest.raises(ValueError, match="outside"):
        grid.patches_to_box([bad])


def test_patch_boxes(grid: PatchGrid) -> None:
    assert grid.patch_box_resized(0) == (0, 0, 28, 28)
    assert grid.patch_box_resized(21) == (28, 28, 56, 56)
    assert grid.patch_box(21) == (56.0, 56.0, 112.0, 112.0)
    assert grid.patch_box(199) == (1064.0, 504.0, 1120.0, 560.0)
    assert grid.patches_to_box([]) is None
    assert grid.patches_to_box([0, 199]) == (0.0, 0.0, 1120.0, 560.0)


def test_bbox_to_patches_order_and_clamp(grid: PatchGrid) -> None:
    assert grid.bbox_to_patches((60, 60, 170, 120)) == [21, 22, 23, 41, 42, 43]
    # boxes spilling outside the image are clamped to it
    assert grid.bbox_to_patches((-100, -100, 30, 30)) == [0]
    assert grid.bbox_to_patches((1100, 540, 5000, 5000)) == [199]
    # zero-area box selects nothing (as the reference)
    assert grid.bbox_to_patches((56, 56, 56, 56)) == []


def test_component_boxes_split_and_merge(grid: PatchGrid) -> None:
    assert grid.component_boxes([]) == []
    # two separate blobs: {0, 1} and {45}; returned by first id
    assert grid.component_boxes([45, 1, 0]) == [(0.0, 0.0, 112.0, 56.0), (280.0, 112.0, 336.0, 168.0)]
    # touching cells (horizontally and vertically) merge into one box
    assert grid.component_boxes([0, 1, 21]) == [(0.0, 0.0, 112.0, 112.0)]
    # diagonal neighbours are not 4-connected
    assert len(grid.component_boxes([0, 21])) == 2
    # row wrap-around is not adjacency: last cell of row 0 and first of row 1
    assert len(grid.component_boxes([19, 20])) == 2
    # an L shape is a single component
    assert len(grid.component_boxes([0, 20, 40, 41, 42])) == 1


def test_cell_of_point_round_trip() -> None:
    for w, h, kw in [(1120, 560, {}), (1782, 225, {}), (1412, 1993, {"min_pixels": 200704, "max_pixels": 401408})]:
        g = PatchGrid.for_image(w, h, **kw)
        for k in range(g.n_patches):
            x0, y0, x1, y1 = g.patch_box(k)
            assert g.cell_of_point((x0 + x1) / 2, (y0 + y1) / 2) == k
            assert g.cell_of_point(x0, y0) == k
            # a box strictly inside the cell selects exactly that cell (boxes exactly on edges can pick up
            # a neighbour through the reference's float scaling; that is reference behaviour, kept)
            assert g.bbox_to_patches((x0 + 0.01, y0 + 0.01, x1 - 0.01, y1 - 0.01)) == [k]


def test_edge_box_float_quirk_is_reference_behaviour() -> None:
    g = PatchGrid.for_image(1782, 225)
    assert g.bbox_to_patches(g.patch_box(0)) == [0, 64]


def test_cell_of_point_clamps(grid: PatchGrid) -> None:
    assert grid.cell_of_point(-5, -5) == 0
    assert grid.cell_of_point(1120, 560) == 199
    assert grid.cell_of_point(10_000, 0) == 19


def test_region_text(grid: PatchGrid) -> None:
    assert grid.normalized_box((134.4, 168, 280, 252)) == (0.12, 0.3, 0.25, 0.45)
    assert grid.region_text((134.4, 168, 280, 252)) == "[0.12, 0.30, 0.25, 0.45]"
    assert grid.region_text((0, 0, 1120, 560)) == "[0.00, 0.00, 1.00, 1.00]"
    assert grid.region_text((-10, 0, 2000, 560)) == "[0.00, 0.00, 1.00, 1.00]"


def test_mask_matches_boxes(grid: PatchGrid) -> None:
    mask = grid.patches_to_mask([0, 21])
    assert mask.shape == (280, 560) and mask.sum() == 2 * 28 * 28
    assert mask[0:28, 0:28].all() and mask[28:56, 28:56].all() and not mask[0:28, 28:56].any()


def test_grid_is_hashable_and_frozen(grid: PatchGrid) -> None:
    assert hash(grid) == hash(PatchGrid.from_resized([1120, 560], [560, 280]))
    with pytest.raises(AttributeError):
        grid.resized = (28, 28)  # type: ignore[misc]


# ----------------------------------------------------------------------------- training geometry
# Sizes, boxes and ids of the official training code are matched row by row in test_v1g_collate.py; these cover
# the rules that the published-layout rows cannot tell apart, and the cells -> box inverses.
@pytest.mark.parametrize(("size", "expected"), [
    ((672, 500), (672, 500)),  # exactly 672: not rescaled, not rounded to 28 (the processor rounds it later)
    ((640, 480), (640, 480)),
    ((673, 500), (672, 504)),  # 1 px over: 672x499 after int(), then 499 -> 504
    ((960, 700), (672, 476)),  # 700 * 0.7 = 489.99999999999994 -> int 489 -> 476 (exact 490 would give 504)
    ((1280, 720), (672, 392)),  # 378 / 28 = 13.5 -> 14 (half to even)
    ((1344, 700), (672, 336)),  # 350 / 28 = 12.5 -> 12 (half to even)
    ((10000, 300), (672, 28)),  # 672x20 -> at least 28
])
def test_dataset_resize(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert dataset_resize(*size) == expected


def test_dataset_resize_refuses_degenerate_images_with_the_reason() -> None:
    with pytest.raises(ImageGeometryError, match="becomes 672×0 px"):
        dataset_resize(100_000, 50)
    with pytest.raises(ImageGeometryError, match="aspect ratio of 224:1"):
        dataset_resize(6720, 30)
    with pytest.raises(ImageGeometryError, match="positive"):
        dataset_resize(0, 10)


def test_copy_ids_keep_the_reference_float_order() -> None:
    # 261 / 406 * 392 = 252.00000000000003 (divide first, as the reference) picks up a 10th column;
    # 261 * 392 / 406 would give exactly 252 and 9 columns.
    g = TrainingGeometry.for_image(406, 652)
    assert g.processor_size == (392, 644)
    assert g.copy_ids([0, 0, 261, 28]) == list(range(10))
    # and on the start side: 420 / 616 * 616 = 419.99999999999994 stays in column 14
    g = TrainingGeometry.for_image(616, 564)
    assert g.copy_ids([420, 0, 500, 28]) == [14, 15, 16, 17]


def test_box_text_is_not_clamped_and_uses_python_rounding() -> None:
    g = TrainingGeometry.for_image(640, 480)
    assert g.box_text([600, 400, 700, 500]) == "[0.94, 0.83, 1.09, 1.04]"
    g = TrainingGeometry.for_image(600, 400)
    assert g.box_text([9, 0, 10, 10]) == "[0.01, 0.00, 0.02, 0.03]"  # 9/600 = 0.015 -> "0.01" (binary double)


def test_dataset_box_types() -> None:
    small = TrainingGeometry.for_image(600, 400)
    assert small.dataset_box([9.7, 27.9, 100.25, 142.5]) == (9.7, 27.9, 100.25, 142.5)  # untouched, floats kept
    assert [type(v) for v in small.dataset_box([9, 27.0, 100, 142])] == [int, float, int, int]
    big = TrainingGeometry.for_image(3000, 2000)
    assert big.dataset_box([1505, 1003, 1530, 1020]) == (337, 224, 343, 229)
    assert all(type(v) is int for v in big.dataset_box([1505.5, 1003.2, 1530.1, 1020.9]))
    with pytest.raises(ValueError, match=r"\[x0, y0, x1, y1\] numbers"):
        big.copy_ids([1, 2, 3])


def test_training_grid_and_serialisation() -> None:
    g = TrainingGeometry.for_image(1024, 768)
    assert (g.dataset_size, g.processor_size, g.shape, g.image_grid_thw) == ((672, 504), (672, 504), (18, 24),
                                                                             (1, 36, 48))
    assert g.rescaled and not TrainingGeometry.for_image(640, 480).rescaled
    assert g.grid == PatchGrid.from_resized((1024, 768), (672, 504))  # drawn on the original image
    assert PatchGrid.for_image(1024, 768).shape == (27, 37)  # the inference grid of the same image
    assert TrainingGeometry.from_dict(g.to_dict()) == g
    with pytest.raises(ValueError, match="multiples of the 28-px"):
        TrainingGeometry((640, 480), (640, 480), (640, 480))
    with pytest.raises(ValueError, match="not a training geometry"):
        TrainingGeometry.from_dict({"image_size": [1, 2]})


def _random_rect(rng, rows: int, cols: int) -> list[int]:
    r0 = rng.randrange(rows)
    r1 = rng.randint(r0 + 1, rows)
    c0 = rng.randrange(cols)
    c1 = rng.randint(c0 + 1, cols)
    return [r * cols + c for r in range(r0, r1) for c in range(c0, c1)]


def _sizes(n: int, seed: int):
    import random

    rng = random.Random(seed)
    out = [(640, 480), (1024, 768), (672, 672), (406, 652), (616, 564), (3000, 2000), (320, 240), (500, 1400)]
    while len(out) < n:
        w = rng.randint(28, 4000)
        out.append((w, rng.randint(max(28, w // 150), min(4000, w * 150))))
    return rng, out


def test_cells_box_is_the_exact_inverse_of_copy_ids() -> None:
    rng, sizes = _sizes(400, 0)
    for w, h in sizes:
        g = TrainingGeometry.for_image(w, h)
        ids = _random_rect(rng, *g.shape)
        box = g.cells_box(ids)
        assert g.copy_ids(box) == ids, (w, h, ids, box)
        assert all(type(v) is int for v in box)  # whole pixels, as published rows write them
        assert g.region_for_cells(ids).copy_ids == tuple(ids)
    g = TrainingGeometry.for_image(1024, 768)
    assert g.copy_ids(g.cells_box([5, 30])) == [5, 6, 29, 30]  # not a rectangle: its bounding rectangle
    with pytest.raises(ValueError, match=r"outside the 18×24 grid \(valid ids: 0..431\)"):
        g.cells_box([432])
    with pytest.raises(ValueError, match="at least one cell"):
        g.cells_box([])


def test_cells_of_the_inference_grid_map_onto_the_training_grid() -> None:
    rng, sizes = _sizes(400, 1)
    for w, h in sizes:
        g = TrainingGeometry.for_image(w, h)
        inf = PatchGrid.for_image(w, h)
        ids = _random_rect(rng, *inf.shape)
        region = g.region_for_cells(ids, grid=inf)
        union = inf.patches_to_box(ids)
        assert union[0] <= region.box[0] < region.box[2] <= union[2], (w, h, ids)  # inside the drawn cells
        assert union[1] <= region.box[1] < region.box[3] <= union[3], (w, h, ids)
        assert list(region.copy_ids) == g.copy_ids(region.box)
        # every training cell overlapping the drawn cells by more than half a resized pixel, and no other
        rows, cols = g.shape
        c = g.cell
        sx, sy = g.processor_size[0] / w, g.processor_size[1] / h
        tol_x, tol_y = 0.5 * w / inf.resized[0] * sx, 0.5 * h / inf.resized[1] * sy
        want = [r * cols + k for r in range(rows) for k in range(cols)
                if min((k + 1) * c, union[2] * sx) - max(k * c, union[0] * sx) > tol_x
                and min((r + 1) * c, union[3] * sy) - max(r * c, union[1] * sy) > tol_y]
        assert list(region.copy_ids) == want, (w, h, ids, region)
        # the same grid through the other-grid path gives the cells back exactly
        same = _random_rect(rng, *g.shape)
        assert g.copy_ids(g.box_from_grid(g.grid, same)) == same
    with pytest.raises(ValueError, match="grid is for a"):
        TrainingGeometry.for_image(1024, 768).box_from_grid(PatchGrid.for_image(640, 480), [0])


def test_a_1024x768_correction_lands_on_the_training_cells() -> None:
    # the example of the class docstring: 27x37 inference cells, 18x24 training cells
    g, inf = TrainingGeometry.for_image(1024, 768), PatchGrid.for_image(1024, 768)
    ids = [r * 37 + c for r in range(10, 13) for c in range(20, 24)]  # 3x4 inference cells
    region = g.region_for_cells(ids, grid=inf)
    # cells span x 560..672, y 280..364 of 1036x756 -> original (553.51, 284.44, 664.22, 369.78); the nearest whole
    # pixels inside that keep the training cells: 554 (x 363.56 -> floor 363 -> column 12), 664 (435.75 -> 436 ->
    # 15.57 -> end 16), 285, 369 (242.16 -> 243 -> 8.68 -> end 9)
    assert region.box == (554, 285, 664, 369)
    assert region.dataset_box == (363, 187, 436, 243)
    assert region.box_text == "[0.54, 0.37, 0.65, 0.48]"
    assert region.copy_ids == tuple(r * 24 + c for r in range(6, 9) for c in range(12, 16))
