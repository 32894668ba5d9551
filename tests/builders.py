"""The test suite's trace builders, one family (no model involved; pointers are numpy):

- `make_trace`: a v1-format trace (think / detect(...) regions with copy tokens / answer) over a synthetic image,
  one step per word and per copy token, random normalised pointers peaking on copied patches;
- long traces at v1-7B scale come from `v1core.synthetic.big_trace` (the project's own generator);
- `trace_from_texts`: exactly the given (text, token id) steps, for schema tests;
- `build_synthetic_trace`: a trace over a bundled gallery scene with two revisits and untrusted markup in its
  text, saved with its image into a store (the app and browser tests' input);
- `png_bytes`: a solid-colour PNG.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from v1core.copy_tokens import COPY_TOKEN_START
from v1core.geometry import PatchGrid
from v1core.trace import DecodingSettings, Step, Trace

COPY0 = COPY_TOKEN_START
EVIL_QUERY = 'red <b>square</b> ![x](http://example.invalid/a.png) :red[alert] $x^2$'


def grid_for(size: tuple[int, int]) -> PatchGrid:
    return PatchGrid.for_image(size[0], size[1])


def region_markup(grid: PatchGrid, box: Sequence[float], key: str | None = "<obj0>") -> tuple[str, list[int]]:
    patches = grid.bbox_to_patches(box)
    return (f"{key or ''}<region>{grid.region_text(box)}", patches)


def make_trace(
    *,
    image_size: tuple[int, int] = (640, 480),
    boxes: Sequence[tuple[str, Sequence[float]]] = (("triangle", (100, 120, 220, 230)),),
    answer: str = "red",
    question: str = "What colour is the triangle?",
    pointers: bool = True,
    seed: int = 0,
    model_id: str = "v1-test",
    status: str = "complete",
    tags: Sequence[str] = (),
    image_sha256: str = "ab" * 32,
    keyed: bool = True,
    **kw: Any,
) -> Trace:
    """A v1-format trace: `<think>… detect(query=…, objects=["<objN><region>[box]<|copy_k|>…</region>"]) …</think>`
    with one step per word and one step per copy token, and random (normalised) pointers."""
    rng = np.random.default_rng(seed)
    grid = grid_for(image_size)
    rows, cols = grid.shape
    pieces: list[tuple[str, int | None]] = [("<think>", None), ("Looking", None), (" at", None), (" it.", None)]
    for k, (query, box) in enumerate(boxes):
        head, patches = region_markup(grid, box, f"<obj{k}>" if keyed else None)
        pieces.append((f' detect(query="{query}", objects=["{head}', None))
        for p in patches:
            pieces.append((f"<|copy_{p}|>", p))
        pieces.append(('</region>"])', None))
        pieces.append((" The", None))
        pieces.append((f" {query} is {answer}.", None))
    pieces += [("</think>", None), (answer, None)]
    steps = []
    for i, (txt, patch) in enumerate(pieces):
        ptr = None
        if pointers:
            logits = rng.normal(size=(rows, cols)).astype(np.float32) * 2
            if patch is not None:
                logits.flat[patch] += 6
            e = np.exp(logits - logits.max())
            ptr = (e / e.sum()).astype(np.float32)
        steps.append(Step(
            index=i, token_id=(COPY0 + patch) if patch is not None else 1000 + i, text=txt, is_copy=patch is not None,
            patch=patch, p_copy=float(rng.random()), entropy=float(rng.random() * 3),
            topk_ids=[1, 2, 3], topk_texts=["a", "b", "c"], topk_probs=[0.5, 0.25, 0.125], pointer=ptr,
        ))
    rw, rh = grid.resized
    return Trace(
        model_id=model_id, image_sha256=image_sha256, image_size=tuple(image_size), resized_size=(rw, rh),
        grid=(rows, cols), question=question, system_prompt="You are v1.", settings=DecodingSettings(seed=seed),
        steps=steps, output_text="".join(t for t, _ in pieces), timings={"prefill_s": 0.125, "decode_s": 1.5},
        status=status, prompt_tokens=321, tags=list(tags), meta={"note": "ünïcode ✓"}, **kw,
    )


def png_bytes(size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def trace_from_texts(texts_ids, grid=(4, 5), image_size=(140, 112)) -> Trace:
    """A trace of given (text, token id) steps on a small grid; ids ≥ 1000 are copies of patch id − 1000."""
    rng = np.random.default_rng(0)
    steps = []
    for i, (text, tid) in enumerate(texts_ids):
        p = rng.random(grid).astype(np.float32)
        is_copy = tid >= 1000
        steps.append(Step(index=i, token_id=tid, text=text, is_copy=is_copy, patch=tid - 1000 if is_copy else None,
                          p_copy=0.5, entropy=1.0, pointer=p / p.sum()))
    return Trace(model_id="m", image_sha256="ab" * 32, image_size=image_size, resized_size=(140, 112), grid=grid,
                 question="q?", steps=steps, output_text="".join(t for t, _ in texts_ids),
                 settings=DecodingSettings(max_new_tokens=9))


def build_synthetic_trace(store, *, key: str = "scene-0", question: str = "What colour is the square?"):
    """A Trace over a bundled scene: text, a detect() call with two copied regions, more text, a single
    copy. Pointers peak on the copied patch at copy steps. Saved (with its image) into `store`."""
    from app.gallery import load_gallery_image

    loaded = load_gallery_image(key)
    w, h = loaded.image.size
    grid = PatchGrid.for_image(w, h, min_pixels=28 * 28 * 16, max_pixels=448 * 448)
    rows, cols = grid.shape
    sha = store.put_image(loaded.data, w, h, loaded.format)
    # region 1: two separate groups of patches (top-left pair, bottom-right single)
    region1 = [0, 1, rows * cols - 1]
    region2 = [cols + 2]
    texts = ["Let", " me", " look", ": ", f'detect(query="{EVIL_QUERY}", objects=["<obj0><region>[0.1, 0.2, 0.3, 0.4]']
    texts += [f"<|copy_{k}|>" for k in region1]
    texts += ['</region>"])', " The", " square", " is", " <script>alert(1)</script>", " red", " "]
    texts += [f"<|copy_{k}|>" for k in region2]
    texts += [" done", "."]
    copies = {i: k for i, k in zip(range(5, 5 + len(region1)), region1)}
    copies[5 + len(region1) + 7] = region2[0]
    rng = np.random.default_rng(0)
    steps = []
    for i, text in enumerate(texts):
        p = rng.dirichlet(np.full(rows * cols, 0.3)).astype(np.float32)
        patch = copies.get(i)
        if patch is not None:
            p *= 0.2
            p[patch] += 0.8
        ent = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        steps.append(Step(index=i, token_id=10_000 + (patch or 0) if patch is not None else 100 + i, text=text,
                          is_copy=patch is not None, patch=patch, p_copy=0.9 if patch is not None else 0.1,
                          entropy=ent, gate=0.5, topk_ids=[1, 2, 3, 4, 5],
                          topk_texts=["<b>bold</b>", "[link](http://x)", "a", "b", "c"],
                          topk_probs=[0.5, 0.2, 0.1, 0.1, 0.05], pointer=p.reshape(rows, cols)))
    trace = Trace(model_id="synthetic", image_sha256=sha, image_size=(w, h), resized_size=grid.resized,
                  grid=(rows, cols), question=question, steps=steps, output_text="".join(texts),
                  timings={"tokens_per_s": 12.5})
    trace.trace_id = store.save_trace(trace) or trace.trace_id
    return trace
