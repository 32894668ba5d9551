"""Patch geometry of Qwen2.5-VL / v1: which merged patch covers which pixels.

v1 points by *copying* merged image patches: copy index ``k`` names the k-th merged patch of the image in
row-major order. Everything that turns a pointer into pixels (drawing, masks, evaluation) or pixels into
pointers (click-to-select, building training targets from boxes) must therefore agree exactly with the
paper's reference processor (``jun297/v1`` ``v1/processor.py`` on transformers 4.51). This module is an
independent implementation of that maths and is checked against 300 golden reference cases
(``tests/fixtures/v1-reference/geometry.json``).

Geometry in one paragraph: the image (w, h) is resized by :func:`smart_resize` to (W, H), both multiples of
``cell = patch_size * merge_size`` (28) with W*H kept inside [min_pixels, max_pixels]. The merged grid has
``H // 28`` rows and ``W // 28`` columns; patch ``k`` is cell ``(k // cols, k % cols)`` and covers resized
pixels ``[col*28, (col+1)*28) x [row*28, (row+1)*28)``.

Two geometries of one image. :class:`PatchGrid` is the **inference** geometry: the grid the model sees when it
reads the full image (live traces record it). :class:`TrainingGeometry` is the **training** geometry of the
official v1 training code: images over 672 px a side are first rescaled (:func:`dataset_resize`), so a 1024x768
image trains on 18x24 cells where inference uses 27x37. Imported v1g rows, their annotation grid and every
training export use the training geometry; :meth:`TrainingGeometry.region_for_cells` maps a region drawn on a
live trace's inference grid onto it (how, step by step, in its docstring).

Limits (a deliberate decision): images smaller than 28 px on either side, or with an aspect ratio above
200:1, raise :class:`ImageGeometryError` with a message a user can act on. The reference (transformers
4.51's ``smart_resize``) refused both. Note the discrepancy with **transformers 5**: its ``smart_resize``
dropped the "at least ``factor`` px" check and silently upsamples tiny images (e.g. 20x500 -> 28x504,
10x10 -> 56x56) instead of raising. For every image the reference accepts the two agree (tested), so the
grid we compute is the grid the model sees; we simply keep refusing the images the paper's code refused,
because their patches are mostly interpolation and pointing into them is meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "MAX_ASPECT_RATIO",
    "TRAINING_MAX_SIDE",
    "ImageGeometryError",
    "PatchGrid",
    "TrainingGeometry",
    "TrainingRegion",
    "dataset_resize",
    "smart_resize",
]

DEFAULT_MIN_PIXELS = 3136  # 56 * 56, Qwen2.5-VL preprocessor default
DEFAULT_MAX_PIXELS = 12845056  # 28 * 28 * 16384, Qwen2.5-VL preprocessor default
MAX_ASPECT_RATIO = 200

Box = tuple[float, float, float, float]


class ImageGeometryError(ValueError):
    """The image cannot be fed to v1 (too small or too elongated); the message says why in plain words."""


def _check_image_size(height: int, width: int, factor: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageGeometryError(f"image is {width}×{height} px; an image needs a positive width and height")
    if height < factor or width < factor:
        raise ImageGeometryError(
            f"image is {width}×{height} px; v1 needs at least {factor} px on each side "
            f"(one {factor}×{factor} merged patch). Use a larger image or upscale it first."
        )
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageGeometryError(
            f"image is {width}×{height} px, an aspect ratio of {ratio:.0f}:1; v1 accepts at most "
            f"{MAX_ASPECT_RATIO}:1. Crop it into less elongated pieces."
        )


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """Size (h, w) the vision encoder resizes an image to: multiples of ``factor``, area in [min, max] pixels.

    Same arithmetic (and the same floating-point operation order, so the same rounding) as the reference:
    round each side to the nearest multiple of ``factor``; if the area is too large shrink both sides by
    ``sqrt(h*w/max_pixels)`` and floor, if too small grow them by ``sqrt(min_pixels/(h*w))`` and ceil.
    Raises :class:`ImageGeometryError` for images under ``factor`` px on a side or more elongated than 200:1.
    """
    height, width = int(height), int(width)
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    _check_image_size(height, width, factor)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / shrink / factor) * factor)
        w_bar = max(factor, math.floor(width / shrink / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * grow / factor) * factor
        w_bar = math.ceil(width * grow / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class PatchGrid:
    """The merged-patch grid of one image, and conversions between patch ids and pixel boxes.

    ``image_size`` and ``resized`` are (w, h). Boxes are (x0, y0, x1, y1) with an exclusive end; "original"
    boxes are floats in the uploaded image's pixels (for drawing), "resized" boxes are ints in the pixels
    the model saw.
    """

    image_size: tuple[int, int]
    resized: tuple[int, int]
    patch_size: int = 14
    merge_size: int = 2

    def __post_init__(self) -> None:
        # Normalise lists (e.g. from JSON) to tuples so the frozen dataclass stays hashable.
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        object.__setattr__(self, "resized", (int(self.resized[0]), int(self.resized[1])))
        w, h = self.image_size
        rw, rh = self.resized
        if w <= 0 or h <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if rw <= 0 or rh <= 0 or rw % self.cell or rh % self.cell:
            raise ValueError(
                f"resized size {self.resized} must be positive multiples of the {self.cell}-px merged patch"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_image(
        cls,
        width: int,
        height: int,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        patch_size: int = 14,
        merge_size: int = 2,
    ) -> PatchGrid:
        """Grid the model will use for an image of ``width`` x ``height`` under these pixel limits."""
        rh, rw = smart_resize(height, width, patch_size * merge_size, min_pixels, max_pixels)
        return cls((width, height), (rw, rh), patch_size, merge_size)

    @classmethod
    def from_resized(
        cls,
        image_size: Sequence[int],
        resized_size: Sequence[int],
        patch_size: int = 14,
        merge_size: int = 2,
    ) -> PatchGrid:
        """Grid from a resized size recorded earlier (stored traces), so old traces keep their geometry
        even if the default pixel limits change."""
        return cls(
            (int(image_size[0]), int(image_size[1])),
            (int(resized_size[0]), int(resized_size[1])),
            patch_size,
            merge_size,
        )

    # ------------------------------------------------------------------ shape
    @property
    def cell(self) -> int:
        """Side of one merged patch in resized pixels (28 for Qwen2.5-VL)."""
        return self.patch_size * self.merge_size

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the merged grid."""
        return self.resized[1] // self.cell, self.resized[0] // self.cell

    @property
    def n_patches(self) -> int:
        rows, cols = self.shape
        return rows * cols

    @property
    def _scale(self) -> tuple[float, float]:
        """Original pixels per resized pixel (x, y)."""
        return self.image_size[0] / self.resized[0], self.image_size[1] / self.resized[1]

    def _check_id(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"patch id must be an integer, got {k!r}")
        k = int(k)
        if not 0 <= k < self.n_patches:
            rows, cols = self.shape
            raise ValueError(
                f"patch id {k} is outside this image's {rows}×{cols} grid (valid ids: 0..{self.n_patches - 1})"
            )
        return k

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        return [self._check_id(k) for k in ids]

    # ------------------------------------------------------------------ box -> patches
    def bbox_to_patches(self, bbox: Sequence[float]) -> list[int]:
        """Patch ids a box (original px) touches, in the reference's order (row-major).

        As the reference: scale to resized px, clamp into the image, floor the start and ceil the end in
        cell units. A reversed or zero-area box (x1 <= x0 after scaling) selects nothing, as in the reference.
        Because of the reference's float scaling, a box lying exactly on cell edges can pick up the neighbouring
        row/column (e.g. on a 1782x225 image ``bbox_to_patches(patch_box(0)) == [0, 64]``); use
        :meth:`cell_of_point` to map a click to exactly one cell.
        """
        x0, y0, x1, y1 = (float(v) for v in bbox)
        rw, rh = self.resized
        w, h = self.image_size
        c = self.cell

        def to_resized(v: float, size: int, rsize: int) -> float:
            return min(max(v * rsize / size, 0.0), float(rsize))

        c0 = math.floor(to_resized(x0, w, rw) / c)
        r0 = math.floor(to_resized(y0, h, rh) / c)
        c1 = math.ceil(to_resized(x1, w, rw) / c)
        r1 = math.ceil(to_resized(y1, h, rh) / c)
        cols = self.shape[1]
        return [r * cols + col for r in range(r0, r1) for col in range(c0, c1)]

    # ------------------------------------------------------------------ patches -> pixels
    def patch_box_resized(self, k: int) -> tuple[int, int, int, int]:
        """Box (x0, y0, x1, y1) of patch ``k`` in resized pixels, exclusive end."""
        k = self._check_id(k)
        cols = self.shape[1]
        row, col = divmod(k, cols)
        c = self.cell
        rw, rh = self.resized
        return col * c, row * c, min((col + 1) * c, rw), min((row + 1) * c, rh)

    def patch_box(self, k: int) -> Box:
        """Box of patch ``k`` in original-image pixels (floats), for drawing on the uploaded image."""
        return self._to_original(self.patch_box_resized(k))

    def _to_original(self, box: Sequence[int]) -> Box:
        sx, sy = self._scale
        return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy

    def patches_to_mask(self, ids: Iterable[int]) -> np.ndarray:
        """Boolean mask [resized_h, resized_w] of the pixels the given patches cover."""
        rw, rh = self.resized
        mask = np.zeros((rh, rw), dtype=bool)
        for k in self._check_ids(ids):
            x0, y0, x1, y1 = self.patch_box_resized(k)
            mask[y0:y1, x0:x1] = True
        return mask

    def _union_resized(self, ids: Iterable[int]) -> tuple[int, int, int, int] | None:
        boxes = [self.patch_box_resized(k) for k in ids]
        if not boxes:
            return None
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )

    def patches_to_box(self, ids: Iterable[int]) -> Box | None:
        """Union box of the patches in original pixels; ``None`` when no patch is given."""
        union = self._union_resized(self._check_ids(ids))
        return None if union is None else self._to_original(union)

    def component_boxes(self, ids: Iterable[int]) -> list[Box]:
        """One original-px box per 4-connected group of selected cells, ordered by each group's first id.

        Pointers often land on two separate objects; one union box would then cover the gap between them.
        """
        selected = set(self._check_ids(ids))
        rows, cols = self.shape
        boxes: list[Box] = []
        seen: set[int] = set()
        for start in sorted(selected):
            if start in seen:
                continue
            seen.add(start)
            stack, group = [start], []
            while stack:
                k = stack.pop()
                group.append(k)
                r, c = divmod(k, cols)
                for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                    if 0 <= nr < rows and 0 <= nc < cols:
                        n = nr * cols + nc
                        if n in selected and n not in seen:
                            seen.add(n)
                            stack.append(n)
            union = self._union_resized(group)
            assert union is not None
            boxes.append(self._to_original(union))
        return boxes

    # ------------------------------------------------------------------ text and clicks
    def normalized_box(self, bbox: Sequence[float]) -> Box:
        """Box divided by the original width/height, clamped to [0, 1] and rounded to 2 decimals
        (the resolution v1's training data uses for region coordinates)."""
        w, h = self.image_size
        x0, y0, x1, y1 = (float(v) for v in bbox)
        return tuple(  # type: ignore[return-value]
            round(min(max(v / s, 0.0), 1.0), 2) for v, s in ((x0, w), (y0, h), (x1, w), (y1, h))
        )

    def region_text(self, bbox: Sequence[float]) -> str:
        """The box as v1 writes it in text: ``"[0.12, 0.30, 0.25, 0.45]"``."""
        return "[" + ", ".join(f"{v:.2f}" for v in self.normalized_box(bbox)) + "]"

    def cell_of_point(self, x: float, y: float) -> int:
        """Patch id under a point in original pixels (click-to-select); points outside snap to the edge."""
        w, h = self.image_size
        rw, rh = self.resized
        rows, cols = self.shape
        # The small tolerance keeps a point exactly on a cell's left/top edge (e.g. a patch_box corner,
        # after a float round trip through original px) in that cell rather than the previous one.
        col = math.floor(float(x) * rw / w / self.cell + 1e-9)
        row = math.floor(float(y) * rh / h / self.cell + 1e-9)
        col = min(max(col, 0), cols - 1)
        row = min(max(row, 0), rows - 1)
        return row * cols + col


# ============================================================================= training geometry
TRAINING_MAX_SIDE = 672  # V1GDataset(max_image_size=672) in the official train.py
_DATASET_FACTOR = 28
_DATASET_MIN_PIXELS = 4 * 28 * 28
_DATASET_MAX_PIXELS = 16384 * 28 * 28

Number = int | float


def dataset_resize(width: int, height: int, max_side: int = TRAINING_MAX_SIDE) -> tuple[int, int]:
    """Size (w, h) the official training dataset gives an image of ``width`` x ``height`` original pixels.

    Images whose width or height exceeds ``max_side`` are scaled by ``s = min(max_side / w, max_side / h)``,
    each side through ``int()`` (truncation of the float product: 960x700 gives 672x489, not 490), then rounded
    to multiples of 28 with Python's ``round`` (half to even: 378 -> 392 but 350 -> 336), at least 28, the area
    kept in [3136, 16384 * 28 * 28]. Images within ``max_side`` keep their size, even when it is not a multiple
    of 28 (the processor rounds it later, see :class:`TrainingGeometry`). Raises :class:`ImageGeometryError`
    where the scaled image degenerates (a side scales to 0 px, or the aspect ratio exceeds 200:1).
    """
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ImageGeometryError(f"image is {width}×{height} px; an image needs a positive width and height")
    if width <= max_side and height <= max_side:
        return width, height
    scale = min(max_side / width, max_side / height)
    w1, h1 = int(width * scale), int(height * scale)
    if w1 == 0 or h1 == 0:
        raise ImageGeometryError(
            f"image is {width}×{height} px; scaled to at most {max_side} px a side it becomes {w1}×{h1} px, "
            "which the training code cannot use. Crop it into less elongated pieces."
        )
    ratio = max(w1, h1) / min(w1, h1)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageGeometryError(
            f"image is {width}×{height} px, {w1}×{h1} px after the {max_side}-px training rescale: an aspect ratio "
            f"of {ratio:.0f}:1; the training code accepts at most {MAX_ASPECT_RATIO}:1. Crop it first."
        )
    f = _DATASET_FACTOR
    h_bar = max(f, round(h1 / f) * f)
    w_bar = max(f, round(w1 / f) * f)
    if h_bar * w_bar > _DATASET_MAX_PIXELS:
        beta = math.sqrt(h1 * w1 / _DATASET_MAX_PIXELS)
        h_bar = math.floor(h1 / beta / f) * f
        w_bar = math.floor(w1 / beta / f) * f
    elif h_bar * w_bar < _DATASET_MIN_PIXELS:
        beta = math.sqrt(_DATASET_MIN_PIXELS / (h1 * w1))
        h_bar = math.ceil(h1 * beta / f) * f
        w_bar = math.ceil(w1 * beta / f) * f
    if h_bar <= 0 or w_bar <= 0:  # only reachable with a max_side far below 672
        raise ImageGeometryError(f"image is {width}×{height} px; the training rescale leaves no pixels")
    return w_bar, h_bar


def _clean(v: float) -> Number:
    """A box coordinate as a training row writes it: an int when whole, else 2 decimals."""
    r = round(float(v), 2)
    return int(r) if r == int(r) else r


@dataclass(frozen=True)
class TrainingRegion:
    """One region as the official training code turns it into text.

    ``box`` is in original-image pixels (what a v1g row's ``regions`` holds), ``dataset_box`` in dataset pixels
    (after the 672-px rescale), ``box_text`` the ``[x0, y0, x1, y1]`` text and ``copy_ids`` the merged cells of
    the training grid, row-major.
    """

    box: tuple[Number, Number, Number, Number]
    dataset_box: tuple[Number, Number, Number, Number]
    box_text: str
    copy_ids: tuple[int, ...]


@dataclass(frozen=True)
class TrainingGeometry:
    """How the official v1 training code (``jun297/v1`` ``dataset.py`` + ``v1/processor.py``) sees one image.

    Three sizes, each (w, h), and three coordinate spaces named after them:

    - ``image_size``: **original** pixels, the v1g row's ``image_size`` column. ``regions`` boxes live here.
    - ``dataset_size``: **dataset** pixels, after :func:`dataset_resize` (the 672-px rescale). The collate resizes
      the image to it, box text is computed here. Equal to ``image_size`` for images within 672 px.
    - ``processor_size``: **processor** pixels, ``smart_resize(dataset_size)`` with the processor's limits (the
      Qwen2.5-VL image processor). Multiples of 28; the merged grid, ``image_grid_thw`` and copy ids live here.

    The rules, in the reference's own operation order (tested against ``tests/fixtures/v1g-collate``):

    - box original -> dataset (:meth:`dataset_box`): only when the size changed,
      ``[floor(x0*W/w), floor(y0*H/h), ceil(x1*W/w), ceil(y1*H/h)]`` (product first, ints out); otherwise the box
      passes through untouched, floats stay floats.
    - box text (:meth:`box_text`): each dataset coordinate over the dataset size, ``{:.2f}``, not clamped.
    - copy ids (:meth:`copy_ids`): ``x0 = max(b0 / W * RW, 0)``, ``x1 = min(b2 / W * RW, RW)`` (same for y), each
      ``/ 14 / 2``; columns ``floor(x0) .. ceil(x1) - 1``, rows likewise: every merged cell the box touches,
      row-major. Because the box only grows (floor / ceil twice), a box can pick up a cell it barely touches.

    **A correction drawn on another grid.** A live trace records the *inference* grid (the full-resolution image,
    e.g. 1024x768 -> 27x37 cells) while training sees another (672x504 -> 18x24). A region given as cells of the
    trace's grid becomes training data in four steps, :meth:`region_for_cells` with ``grid=trace.patch_grid()``:

    1. patch ids -> box in original pixels: the cells' bounding rectangle (``PatchGrid.patches_to_box``);
    2. that rectangle -> the training cells it overlaps by more than half a resized pixel of the inference grid
       (so an inference edge lying on a training edge does not pull in the neighbouring training cell), and a box
       in original pixels inside the rectangle whose training copy ids are exactly those cells, whole pixels where
       possible (:meth:`box_from_grid`): this is the box the exported row's ``regions`` holds;
    3. box in original pixels -> dataset box (:meth:`dataset_box`);
    4. dataset box -> training copy ids (:meth:`copy_ids`) and box text (:meth:`box_text`).

    Cells of the training grid itself (an imported row's annotation grid; ``grid`` None or equal to :attr:`grid`)
    map back exactly: :meth:`cells_box` returns a whole-pixel box whose copy ids are the cells' bounding
    rectangle. Non-rectangular cell sets become their bounding rectangle in both cases (a region is one box).
    """

    image_size: tuple[int, int]
    dataset_size: tuple[int, int]
    processor_size: tuple[int, int]
    patch_size: int = 14
    merge_size: int = 2

    def __post_init__(self) -> None:
        for name in ("image_size", "dataset_size", "processor_size"):
            v = getattr(self, name)
            if len(v) != 2:
                raise ValueError(f"{name} must be (width, height), got {v!r}")
            object.__setattr__(self, name, (int(v[0]), int(v[1])))
            if min(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {v!r}")
        rw, rh = self.processor_size
        if rw % self.cell or rh % self.cell:
            raise ValueError(
                f"processor size {self.processor_size} must be multiples of the {self.cell}-px merged patch"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_image(
        cls,
        width: int,
        height: int,
        *,
        max_side: int = TRAINING_MAX_SIDE,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        patch_size: int = 14,
        merge_size: int = 2,
    ) -> TrainingGeometry:
        """Geometry of an image of ``width`` x ``height`` original pixels under the official training settings
        (``max_side`` 672; the processor limits of Qwen2.5-VL-7B: 3136 / 12845056 pixels)."""
        dw, dh = dataset_resize(width, height, max_side)
        rh, rw = smart_resize(dh, dw, patch_size * merge_size, min_pixels, max_pixels)
        return cls((width, height), (dw, dh), (rw, rh), patch_size, merge_size)

    def to_dict(self) -> dict[str, list[int] | int]:
        """Plain form for a trace's ``meta`` (the sizes, so a trace keeps its geometry if defaults change)."""
        return {"image_size": list(self.image_size), "dataset_size": list(self.dataset_size),
                "processor_size": list(self.processor_size), "patch_size": self.patch_size,
                "merge_size": self.merge_size}

    @classmethod
    def from_dict(cls, d: dict) -> TrainingGeometry:
        try:
            return cls(tuple(d["image_size"]), tuple(d["dataset_size"]), tuple(d["processor_size"]),
                       int(d.get("patch_size", 14)), int(d.get("merge_size", 2)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a training geometry: {d!r} ({exc})") from None

    # ------------------------------------------------------------------ shape
    @property
    def cell(self) -> int:
        """Side of one merged patch in processor pixels (28)."""
        return self.patch_size * self.merge_size

    @property
    def rescaled(self) -> bool:
        """Whether the 672-px rule changed the size (then boxes are floored / ceiled into dataset pixels)."""
        return self.dataset_size != self.image_size

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the training grid."""
        return self.processor_size[1] // self.cell, self.processor_size[0] // self.cell

    @property
    def n_patches(self) -> int:
        rows, cols = self.shape
        return rows * cols

    @property
    def image_grid_thw(self) -> tuple[int, int, int]:
        """(t, h, w) in 14-px patches, as the image processor reports it."""
        return 1, self.processor_size[1] // self.patch_size, self.processor_size[0] // self.patch_size

    @property
    def grid(self) -> PatchGrid:
        """The training grid as a :class:`PatchGrid` over the original image (for drawing cells, clicks, masks).

        Original -> dataset -> processor pixels is one linear map per axis, so cell boxes drawn through this
        grid are exact; copy ids must still come from :meth:`copy_ids` (the reference's float order)."""
        return PatchGrid(self.image_size, self.processor_size, self.patch_size, self.merge_size)

    # ------------------------------------------------------------------ boxes
    @staticmethod
    def _check_box(box: Sequence[Number]) -> list[Number]:
        vals = list(box)
        if len(vals) != 4 or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                                     for v in vals):
            raise ValueError(f"a box must be [x0, y0, x1, y1] numbers, got {box!r}")
        return [v.item() if isinstance(v, np.generic) else v for v in vals]

    def dataset_box(self, box: Sequence[Number]) -> tuple[Number, Number, Number, Number]:
        """Box in **original** pixels -> **dataset** pixels (the reference's ``resize_bbox``)."""
        x0, y0, x1, y1 = self._check_box(box)
        if not self.rescaled:
            return x0, y0, x1, y1
        (w, h), (dw, dh) = self.image_size, self.dataset_size
        return (math.floor(x0 * dw / w), math.floor(y0 * dh / h), math.ceil(x1 * dw / w), math.ceil(y1 * dh / h))

    def box_text(self, box: Sequence[Number]) -> str:
        """``"[0.31, 0.86, 0.63, 0.95]"``: the **original**-pixel box in dataset pixels over the dataset size,
        ``{:.2f}`` each (Python's rounding of the binary double), not clamped."""
        x0, y0, x1, y1 = self.dataset_box(box)
        dw, dh = self.dataset_size
        return "[" + ", ".join(f"{v:.2f}" for v in (x0 / dw, y0 / dh, x1 / dw, y1 / dh)) + "]"

    def _copy_bounds(self, dbox: Sequence[Number]) -> tuple[int, int, int, int]:
        """(c0, r0, c1, r1) training cells of a **dataset**-pixel box, end exclusive (reference float order)."""
        dw, dh = self.dataset_size
        rw, rh = self.processor_size
        x0 = max(dbox[0] / dw * rw, 0)
        y0 = max(dbox[1] / dh * rh, 0)
        x1 = min(dbox[2] / dw * rw, rw)
        y1 = min(dbox[3] / dh * rh, rh)
        p, m = self.patch_size, self.merge_size
        return math.floor(x0 / p / m), math.floor(y0 / p / m), math.ceil(x1 / p / m), math.ceil(y1 / p / m)

    def copy_ids(self, box: Sequence[Number]) -> list[int]:
        """Copy ids of an **original**-pixel box: every training cell it touches, row-major (empty when the box
        has no area after scaling, as in the reference)."""
        c0, r0, c1, r1 = self._copy_bounds(self.dataset_box(box))
        cols = self.shape[1]
        return [r * cols + c for r in range(r0, r1) for c in range(c0, c1)]

    def region(self, box: Sequence[Number]) -> TrainingRegion:
        """Everything the training code derives from one **original**-pixel box."""
        vals = self._check_box(box)
        return TrainingRegion(tuple(vals), self.dataset_box(vals), self.box_text(vals),  # type: ignore[arg-type]
                              tuple(self.copy_ids(vals)))

    # ------------------------------------------------------------------ cells -> boxes
    def _rect(self, ids: Iterable[int], rows: int, cols: int) -> tuple[int, int, int, int]:
        ids = list(ids)
        if not ids:
            raise ValueError("no cells given; a region needs at least one cell")
        bad = [k for k in ids
               if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < rows * cols]
        if bad:
            raise ValueError(f"cell id {bad[0]!r} is outside the {rows}×{cols} grid (valid ids: 0..{rows * cols - 1})")
        rs = [int(k) // cols for k in ids]
        cs = [int(k) % cols for k in ids]
        return min(cs), min(rs), max(cs) + 1, max(rs) + 1

    def _bound(self, axis: int, side: int, v: Number) -> int:
        """Training cell bound that coordinate ``v`` (original px) gives on ``axis`` (0: x, 1: y) and ``side``
        (0: start, inclusive; 1: end, exclusive). Each coordinate decides its own bound."""
        box: list[Number] = [0, 0, 0, 0]
        box[axis + 2 * side] = v
        return self._copy_bounds(self.dataset_box(box))[axis + 2 * side]

    def _snap(self, axis: int, side: int, target: int, lo: float, hi: float, fallback: float) -> Number:
        """A coordinate in [lo, hi] (original px) whose training bound is ``target``: the whole pixel nearest
        the region's outside (lowest for a start, highest for an end) if one works, else ``fallback`` with 2
        decimals, else ``fallback`` itself (the caller guarantees that one works)."""
        step = 1 if side == 0 else -1
        v = math.ceil(lo) if side == 0 else math.floor(hi)
        while lo <= v <= hi:
            if self._bound(axis, side, v) == target:
                return int(v)
            v += step
        for cand in (_clean(fallback), float(fallback)):
            if self._bound(axis, side, cand) == target:
                return cand
        raise RuntimeError(f"no coordinate in [{lo}, {hi}] reaches training cell bound {target}")  # never expected

    def _fit(self, bounds: tuple[int, int, int, int], within: Sequence[float] | None = None
             ) -> tuple[Number, Number, Number, Number]:
        """A box in **original** pixels, inside ``within`` (default: the image), with these training cell
        bounds (c0, r0, c1, r1): each coordinate a whole pixel where one works, checked against :meth:`copy_ids`'s
        own float arithmetic (an end exactly on a cell edge can pick up the next cell there)."""
        (w, h), (rw, rh), c = self.image_size, self.processor_size, self.cell
        ux0, uy0, ux1, uy1 = within if within is not None else (0, 0, w, h)

        def edge(axis: int, side: int, target: int) -> Number:
            scale, size = (w / rw, w) if axis == 0 else (h / rh, h)
            ulo, uhi = (ux0, ux1) if axis == 0 else (uy0, uy1)
            first = target if side == 0 else target - 1  # the training cell the coordinate lies in
            lo, hi = max(first * c * scale, ulo), min((first + 1) * c * scale, size, uhi)
            return self._snap(axis, side, target, lo, hi, (lo + hi) / 2)

        c0, r0, c1, r1 = bounds
        box = (edge(0, 0, c0), edge(1, 0, r0), edge(0, 1, c1), edge(1, 1, r1))
        got = self._copy_bounds(self.dataset_box(box))
        if got != bounds:  # never expected: _snap checked each bound
            raise RuntimeError(f"box {box} gives training cell bounds {got}, expected {bounds}")
        return box

    def cells_box(self, ids: Iterable[int]) -> tuple[Number, Number, Number, Number]:
        """A box in **original** pixels whose :meth:`copy_ids` are exactly the bounding rectangle of these
        **training** cells (whole pixels where possible). The inverse of :meth:`copy_ids` for cell rectangles."""
        rows, cols = self.shape
        return self._fit(self._rect(ids, rows, cols))

    def box_from_grid(self, grid: PatchGrid, ids: Iterable[int]) -> tuple[Number, Number, Number, Number]:
        """Box in **original** pixels for cells of *another* grid of the same image (a live trace's inference
        grid): inside the cells' bounding rectangle, touching exactly the training cells that overlap it by more
        than half a resized pixel of ``grid`` (steps 1-2 of the class docstring)."""
        if tuple(grid.image_size) != self.image_size:
            raise ValueError(f"grid is for a {grid.image_size} image, this geometry for {self.image_size}")
        union = grid.patches_to_box(list(ids))
        if union is None:
            raise ValueError("no cells given; a region needs at least one cell")
        (w, h), (rw, rh), c = self.image_size, self.processor_size, self.cell
        tx, ty = 0.5 * w / grid.resized[0], 0.5 * h / grid.resized[1]
        rows, cols = self.shape
        bounds = (
            max(0, math.floor((union[0] + tx) * rw / w / c)),
            max(0, math.floor((union[1] + ty) * rh / h / c)),
            min(cols, math.ceil((union[2] - tx) * rw / w / c)),
            min(rows, math.ceil((union[3] - ty) * rh / h / c)),
        )
        return self._fit(bounds, union)

    def region_for_cells(self, ids: Iterable[int], grid: PatchGrid | None = None) -> TrainingRegion:
        """The training region of a set of cells: of this training grid (``grid`` None or equal to
        :attr:`grid`: exact, :meth:`cells_box`) or of another grid of the image (a live trace's inference grid:
        :meth:`box_from_grid`, documented in the class docstring)."""
        ids = list(ids)
        if grid is None or grid == self.grid:
            return self.region(self.cells_box(ids))
        return self.region(self.box_from_grid(grid, ids))
