"""Synthetic traces at v1-7B scale, for benchmarks and browser tests. Not model output.

The demo model's 12×12 grids and ~70-step traces hide every cost; v1-7B's grids reach 16,384 merged patches
(128×128) and its reasoning runs 300–2,000 tokens. No such real traces can be produced on a laptop, so
:func:`big_trace` makes a `Trace` of any size whose pointers have the statistics that matter for storage
(compressibility), drawing (dynamic range) and navigation (revisit structure):

- **Image content.** A fixed per-trace *saliency* field ``S[rows, cols]``: a few Gaussian "objects" (σ of 3–12 %
  of the grid side) on a smooth low-frequency background (bilinear-upsampled 8×8 noise). Real copy keys are
  projections of patch embeddings, so every step's pointer shares the image's structure.
- **Text steps** (most steps): ``pointer = softmax((S + Q_t) / τ_t + ε_t)``, where ``Q_t`` is a query blob that
  drifts by a random walk (consecutive steps are correlated, as the hidden state changes slowly), ``τ_t`` is
  large so the distribution is *diffuse* (normalised entropy about 0.85–0.97, like v1's text-step pointers), and
  ``ε_t`` is i.i.d. patch-level noise (σ 0.25 in logit units by default, ``noise=``): the high-entropy detail that
  makes diffuse maps hard to compress. ``p_copy`` is small (log-uniform in [1e-4, 5e-2]).
- **Revisits.** About one every ``revisit_every`` steps (Poisson), the text opens
  ``detect(query="…", objects=["<objN><region>[x0, y0, x1, y1]`` and then copies 4–30 consecutive patches
  walking an object's box in row-major order, as v1 does, then closes ``</region>"])``. A copy step's pointer is
  *peaked*: a narrow Gaussian (σ ≈ 0.7 cells) on the copied patch with p_max 0.5–0.99, spilling onto the
  neighbours and the saliency field; its ``p_copy`` is 0.6–0.999.
- **Hesitations.** 2 % of text steps get ``p_copy`` in [0.3, 0.6] and a half-peaked pointer (the model nearly
  copied): steps a lossy codec must treat like copies.
- Tokens are words from a small vocabulary (ids < 151,665, the v1-7B copy-token start); copy steps have the
  copy token's id and text ``<|copy_k|>``, so ``find_revisits`` and every exporter see real structure. Top-5
  alternatives are plausible but synthetic.

Deterministic for a seed. A 2,000-step 128×128 trace takes about 2–4 s and 131 MB of float32 pointers.
"""

from __future__ import annotations

import numpy as np

from .copy_tokens import COPY_TOKEN_START, copy_token
from .trace import DecodingSettings, Step, Trace

CELL = 28  # merged-patch side in resized pixels
SIZES = {"16x16": (16, 16), "37x37": (37, 37), "64x64": (64, 64), "128x128": (128, 128)}

_WORDS = (
    "the", "image", "shows", "a", "small", "large", "red", "green", "blue", "object", "on", "left", "right", "of",
    "is", "near", "top", "bottom", "corner", "cup", "table", "person", "holding", "looks", "like", "so", "answer",
    "we", "need", "to", "check", "which", "one", "closer", "than", "there", "are", "two", "three", "and", "it",
)
_QUERIES = ("the cup", "the person on the left", "the red object", "the sign", "the dog", "the window",
            "the second car", "the text near the top")


def _smooth_noise(rng: np.random.Generator, rows: int, cols: int, coarse: int = 8) -> np.ndarray:
    """Low-frequency noise: a coarse random grid bilinearly upsampled to rows × cols."""
    c = rng.standard_normal((coarse + 1, coarse + 1))
    ys = np.linspace(0, coarse, rows)
    xs = np.linspace(0, coarse, cols)
    y0 = np.minimum(ys.astype(int), coarse - 1)
    x0 = np.minimum(xs.astype(int), coarse - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = c[y0][:, x0]
    b = c[y0][:, x0 + 1]
    d = c[y0 + 1][:, x0]
    e = c[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (d * (1 - fx) + e * fx) * fy


def _blob(rows: int, cols: int, r: float, c: float, sigma: float) -> np.ndarray:
    """Separable Gaussian bump centred on cell (r, c), σ in cells."""
    gy = np.exp(-0.5 * ((np.arange(rows) - r) / sigma) ** 2)
    gx = np.exp(-0.5 * ((np.arange(cols) - c) / sigma) ** 2)
    return np.outer(gy, gx)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return (e / e.sum()).astype(np.float32)


def big_trace(
    rows: int = 128,
    cols: int = 128,
    n_steps: int = 2000,
    *,
    seed: int = 0,
    revisit_every: int = 60,
    noise: float = 0.25,
    model_id: str = "synthetic-v1-7B",
    question: str = "Which object is closer to the camera, and what colour is it?",
) -> Trace:
    """A complete synthetic trace of `n_steps` steps on a `rows` × `cols` merged grid (see the module docstring).

    The image is (cols·28) × (rows·28) px, as the processor would resize a photo to that grid; its sha256 is a
    stand-in (no image is stored). Every step has a float32 pointer [rows, cols] summing to 1. `noise` is the σ of
    the i.i.d. patch-level logit noise (a guess; benchmarks vary it).
    """
    if rows <= 0 or cols <= 0 or n_steps <= 0:
        raise ValueError(f"rows, cols and n_steps must be positive, got {rows}, {cols}, {n_steps}")
    rng = np.random.default_rng(seed)
    n = rows * cols
    side = max(rows, cols)

    # image content: objects on a smooth background
    n_obj = int(rng.integers(3, 7))
    objects = []
    sal = 0.6 * _smooth_noise(rng, rows, cols)
    for _ in range(n_obj):
        r, c = rng.uniform(0.1, 0.9) * rows, rng.uniform(0.1, 0.9) * cols
        sigma = rng.uniform(0.03, 0.12) * side
        sal += rng.uniform(1.0, 2.5) * _blob(rows, cols, r, c, sigma)
        half = max(1, int(round(1.2 * sigma)))
        box = (max(0, int(c) - half), max(0, int(r) - half), min(cols, int(c) + half + 1), min(rows, int(r) + half + 1))
        objects.append(box)  # (c0, r0, c1, r1) in cells, end exclusive

    steps: list[Step] = []
    pointers = np.empty((n_steps, rows, cols), dtype=np.float32)
    q_r, q_c = rng.uniform(0, rows), rng.uniform(0, cols)
    texts: list[str] = []

    def push(text: str, token_id: int, is_copy: bool, patch: int | None, p_copy: float, pointer: np.ndarray) -> bool:
        i = len(steps)
        if i >= n_steps:
            return False
        pointers[i] = pointer
        p = pointers[i]
        ent = float(-(p * np.log(np.maximum(p, 1e-30))).sum())
        ids = [int(token_id)] + [int(v) for v in rng.integers(0, 150000, 4)]
        top = np.sort(rng.dirichlet(np.ones(5) * 0.5))[::-1]
        top = top * (1 - p_copy) if not is_copy else top * 0.2
        steps.append(Step(
            index=i, token_id=int(token_id), text=text, is_copy=is_copy, patch=patch, p_copy=float(p_copy),
            entropy=ent, gate=None, topk_ids=ids, topk_texts=[text] + [_WORDS[k % len(_WORDS)] for k in ids[1:]],
            topk_probs=[float(v) for v in top], pointer=p,
        ))
        texts.append(text)
        return True

    def text_pointer(hesitate: bool = False) -> np.ndarray:
        nonlocal q_r, q_c
        q_r = float(np.clip(q_r + rng.normal(0, 0.02 * rows), 0, rows - 1))
        q_c = float(np.clip(q_c + rng.normal(0, 0.02 * cols), 0, cols - 1))
        tau = rng.uniform(0.7, 1.8)
        z = (sal + 1.5 * _blob(rows, cols, q_r, q_c, 0.1 * side)) / tau + rng.normal(0, noise, (rows, cols))
        if hesitate:
            z = z + 4.0 * _blob(rows, cols, q_r, q_c, 0.7)
        return _softmax(z)

    def copy_pointer(k: int) -> np.ndarray:
        r, c = divmod(k, cols)
        p_max = rng.uniform(0.5, 0.99)
        peak = _blob(rows, cols, r, c, 0.7)
        z = sal / 2.0 + rng.normal(0, noise, (rows, cols))
        base = _softmax(z)
        spill = _softmax(np.log(np.maximum(peak, 1e-12)))
        out = (1 - p_max) * (0.5 * base + 0.5 * spill)
        out[r, c] += p_max
        return (out / out.sum()).astype(np.float32)

    def say(word: str, hesitate: bool = False) -> bool:
        token_id = int(rng.integers(1000, 150000))
        p_copy = rng.uniform(0.3, 0.6) if hesitate else float(np.exp(rng.uniform(np.log(1e-4), np.log(5e-2))))
        return push(word, token_id, False, None, p_copy, text_pointer(hesitate))

    say("<think>")
    next_revisit = int(rng.exponential(min(revisit_every, n_steps / 4))) + 5  # short traces get one too
    obj_no = 0
    while len(steps) < n_steps:
        if len(steps) >= next_revisit and n_steps - len(steps) > 12:
            c0, r0, c1, r1 = objects[int(rng.integers(0, len(objects)))]
            cells = [r * cols + c for r in range(r0, r1) for c in range(c0, c1)]
            run = int(min(len(cells), rng.integers(4, 31)))
            start = int(rng.integers(0, len(cells) - run + 1))
            box = (c0 / cols, r0 / rows, c1 / cols, r1 / rows)
            query = _QUERIES[int(rng.integers(0, len(_QUERIES)))]
            opening = [" detect", '(query="', query, '", objects=["', f"<obj{obj_no}>", "<region>",
                       "[" + ", ".join(f"{v:.2f}" for v in box) + "]"]
            for w in opening:
                say(w)
            for k in cells[start:start + run]:
                if not push(copy_token(k), COPY_TOKEN_START + k, True, k, rng.uniform(0.6, 0.999), copy_pointer(k)):
                    break
            for w in ("</region>", '"])', "."):
                say(w)
            obj_no += 1
            next_revisit = len(steps) + int(rng.exponential(revisit_every)) + 5
        else:
            say(" " + _WORDS[int(rng.integers(0, len(_WORDS)))], hesitate=bool(rng.random() < 0.02))
    if n_steps > 3:  # end like v1: the answer after the reasoning block
        for j, w in enumerate(("</think>", " The", " cup.")):
            i = n_steps - 3 + j
            if not steps[i].is_copy:
                steps[i].text = w
                texts[i] = w
    n_pix = (cols * CELL, rows * CELL)
    return Trace(
        model_id=model_id, image_sha256=f"synthetic-{rows}x{cols}-{seed}", image_size=n_pix, resized_size=n_pix,
        grid=(rows, cols), question=question, settings=DecodingSettings(max_new_tokens=n_steps), steps=steps,
        output_text="".join(texts), status="complete", prompt_tokens=n + 40,
        tags=["synthetic"], meta={"synthetic": {"rows": rows, "cols": cols, "n_steps": n_steps, "seed": seed}},
    )


def synthetic_image(rows: int, cols: int, seed: int = 0):
    """A PIL image of the synthetic trace's size (cols·28 × rows·28): smooth colour fields, so figures and the
    browser have a photo-like backdrop of the right size. Store it with `put_image` and set the trace's
    `image_sha256` to the returned sha to see the pointer over it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = rows * CELL, cols * CELL
    chans = []
    for _ in range(3):
        f = _smooth_noise(rng, max(2, h // 8), max(2, w // 8), coarse=6)
        f = (f - f.min()) / max(f.max() - f.min(), 1e-9)
        chans.append((40 + 180 * f).astype(np.uint8))
    small = Image.fromarray(np.stack(chans, axis=-1), "RGB")
    return small.resize((w, h), Image.Resampling.BILINEAR)


__all__ = ["SIZES", "big_trace", "synthetic_image"]
