"""Target answers in v1's exact output format, and the v1g row layout they are exported / imported as.

    <think>The question asks about the triangle. detect(query="triangle", objects=["<obj0><region>[0.12, 0.30,
    0.25, 0.45]<|copy_34|><|copy_35|><|copy_50|></region>"]) The triangle is red.</think>red

A v1g row stores the same answer with bare `<objN>` placeholders and the boxes in `regions`;
`expand_v1g_assistant` turns such a row back into the trained text — for the demo's rows and for real exported
/ published v1g rows alike.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Callable, Mapping, Sequence

from ..copy_tokens import copy_token
from .scenes import Scene, SceneObject

V1G_ID_PREFIX = "v1demo"

_KEY_RE = re.compile(r"^<?(obj\d+)>?$")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _assistant(scene: Scene, region: Callable[[int, SceneObject], str]) -> str:
    """The short reasoning of the demo, with `region(k, obj)` rendering the k-th looked-at object."""
    objs = scene.target_objects
    q = scene.queries

    def detect(k: int) -> str:
        return f'detect(query="{q[k]}", objects=["{region(k, objs[k])}"])'

    if scene.kind == "compare":
        a, b = objs
        verdict = "bigger" if scene.answer == "yes" else "not bigger"
        body = (
            f"The question compares the {q[0]} and the {q[1]}. "
            f"{detect(0)} The {q[0]} is {a.size}. "
            f"{detect(1)} The {q[1]} is {b.size}. "
            f"So the {q[0]} is {verdict}."
        )
    else:
        (o,) = objs
        if scene.kind == "colour":
            fact = f"The {q[0]} is {o.colour}."
        elif scene.kind == "shape":
            fact = f"The {q[0]} is {_article(o.shape)} {o.shape}."
        elif scene.kind == "size":
            fact = f"The {q[0]} is {o.size}."
        else:
            raise ValueError(f"unknown question kind {scene.kind!r}")
        body = f"The question asks about the {q[0]}. {detect(0)} {fact}"
    return f"<think>{body}</think>{scene.answer}"


def region_markup(key: str, box: Sequence[float], grid: Any, keep_key: bool = True) -> str:
    """`<objN><region>[x0, y0, x1, y1]<|copy_i|>…</region>` for a box in original-image pixels."""
    copies = "".join(copy_token(p) for p in grid.bbox_to_patches(box))
    return f"{key if keep_key else ''}<region>{grid.region_text(box)}{copies}</region>"


def target_text(scene: Scene, grid: Any = None) -> str:
    """The assistant's answer in v1's format, copy ids from `grid.bbox_to_patches` (default: the demo grid)."""
    grid = scene.grid() if grid is None else grid
    return _assistant(scene, lambda k, o: region_markup(f"<obj{k}>", o.box, grid))


def target_v1g_row(scene: Scene, include_image: bool = False) -> dict[str, Any]:
    """The scene as a v1g row (LLaVA-NeXT layout): placeholders in the text, boxes in `regions`.

    `include_image=True` adds `image` as `{"bytes": PNG, "path": None}` (what a parquet image column holds).
    """
    boxes: dict[str, list[int]] = {}

    def placeholder(k: int, o: SceneObject) -> str:
        boxes[f"<obj{k}>"] = [int(v) for v in o.box]
        return f"<obj{k}>"

    value = _assistant(scene, placeholder)
    row: dict[str, Any] = {
        "id": f"{V1G_ID_PREFIX}-{scene.seed}",
        "conversations": [
            {"from": "human", "value": f"<image>\n{scene.question}"},
            {"from": "gpt", "value": value},
        ],
        "regions": json.dumps(boxes),
        "image_size": [scene.width, scene.height],
    }
    if include_image:
        buf = io.BytesIO()
        scene.image.save(buf, format="PNG")
        row["image"] = {"bytes": buf.getvalue(), "path": None}
    return row


def _normalise_regions(regions: str | bytes | Mapping[str, Any] | None) -> dict[str, tuple[float, ...]]:
    if regions is None or regions == "":
        return {}
    if isinstance(regions, (str, bytes)):
        regions = json.loads(regions)
    if not isinstance(regions, Mapping):
        raise ValueError(
            f"regions must be a JSON object mapping <objN> to [x1, y1, x2, y2], got {type(regions).__name__}"
        )
    out: dict[str, tuple[float, ...]] = {}
    for key, box in regions.items():
        m = _KEY_RE.match(str(key).strip())
        if not m:
            raise ValueError(f"region key {key!r} is not an object key like '<obj1>'")
        vals = list(box) if isinstance(box, (list, tuple)) else None
        if vals is None or len(vals) != 4:
            raise ValueError(f"region {key!r} must be [x1, y1, x2, y2] in image pixels, got {box!r}")
        out[f"<{m.group(1)}>"] = tuple(float(v) for v in vals)
    return out


def expand_v1g_assistant(
    value: str,
    regions: str | bytes | Mapping[str, Any] | None,
    grid: Any,
    *,
    keep_key: bool = True,
) -> str:
    """Replace every occurrence of an object key of `regions` in `value` by its region markup.

    As v1's training code does: each occurrence of a key (inside `detect(..., objects=[...])` and wherever it
    recurs in later text) becomes `<region>[normalised box]<|copy_i|>…</region>`, coordinates with 2 decimals
    from `grid.region_text`, copy ids = every merged cell the box touches (`grid.bbox_to_patches`, row-major).
    With `keep_key` (default) the key stays in front (`<obj0><region>…`), the form the reference demo's
    parser and the demo model use; `keep_key=False` gives the published data's bare `<region>…` form.

    `regions` is the row's JSON string (or a dict) mapping `<objN>` (or `objN`) to `[x1, y1, x2, y2]` in
    original-image pixels; `grid` is the `PatchGrid` of the image as the model sees it. Keys that are absent
    from `regions` are left as they are; a key already followed by `<region>` is not expanded twice.
    """
    boxes = _normalise_regions(regions)
    if not boxes:
        return value
    keys = sorted(boxes, key=len, reverse=True)
    pattern = re.compile("(" + "|".join(re.escape(k) for k in keys) + r")(?!\s*<region>)")
    cache: dict[str, str] = {}

    def repl(m: re.Match) -> str:
        key = m.group(1)
        if key not in cache:
            cache[key] = region_markup(key, boxes[key], grid, keep_key=keep_key)
        return cache[key]

    return pattern.sub(repl, value)


def expand_v1g_row(row: Mapping[str, Any], grid: Any, *, keep_key: bool = True) -> str:
    """The expanded assistant text of a v1g row (its last `gpt` turn)."""
    gpt = [t for t in row["conversations"] if t.get("from") in ("gpt", "assistant")]
    if not gpt:
        raise ValueError(f"row {row.get('id')!r} has no gpt turn")
    return expand_v1g_assistant(gpt[-1]["value"], row.get("regions"), grid, keep_key=keep_key)


def v1g_question(row: Mapping[str, Any]) -> str:
    """The human turn without the `<image>` placeholder line."""
    human = next(t for t in row["conversations"] if t.get("from") in ("human", "user"))
    text = human["value"]
    return text.replace("<image>\n", "", 1).replace("<image>", "", 1).strip()


__all__ = [
    "expand_v1g_assistant",
    "expand_v1g_row",
    "region_markup",
    "target_text",
    "target_v1g_row",
    "v1g_question",
]
