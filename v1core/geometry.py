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
    "ImageGeometryError",
    "PatchGrid",
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
