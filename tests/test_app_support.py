"""Shared fixtures for the app tests (imported by tests/test_app_*.py; holds no tests itself).

- `checkpoint_dir`: the embedded demo checkpoint when it exists, else the tiny random fixture checkpoint.
- `app_env`: a fresh SQLite store in tmp_path, that checkpoint as V1STUDIO_MODEL, seeding off.
- `synthetic_trace`: a hand-built Trace with two revisits (one with two separate regions) and a detect()
  call whose query holds Markdown/HTML, saved with its image — deterministic input for viewer tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = ROOT / "v1core" / "demo" / "checkpoint"
APP = str(ROOT / "streamlit_app.py")

EVIL_QUERY = 'red <b>square</b> ![x](http://example.invalid/a.png) :red[alert] $x^2$'


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    if (DEMO_CHECKPOINT / "config.json").is_file():
        return DEMO_CHECKPOINT
    from tests.helpers import make_fixture_checkpoint

    return make_fixture_checkpoint(tmp_path_factory.mktemp("v1ckpt"))


@pytest.fixture()
def app_env(tmp_path, monkeypatch, checkpoint_dir):
    """Environment for one app instance; returns the Store the app will use."""
    db = tmp_path / "v1studio.db"
    monkeypatch.setenv("V1STUDIO_MODEL", str(checkpoint_dir))
    monkeypatch.setenv("V1STUDIO_DB", f"sqlite:///{db}")
    monkeypatch.setenv("V1STUDIO_SEED_TRACES", "0")
    from storage import Store

    return Store(f"sqlite:///{db}")


def build_synthetic_trace(store, *, key: str = "scene-0", question: str = "What colour is the square?"):
    """A Trace over a bundled scene: text, a detect() call with two copied regions, more text, a single
    copy. Pointers peak on the copied patch at copy steps. Saved (with its image) into `store`."""
    from app.gallery import load_gallery_image
    from v1core.geometry import PatchGrid
    from v1core.trace import Step, Trace

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


@pytest.fixture()
def synthetic_trace(app_env):
    return build_synthetic_trace(app_env)


def app_test(timeout: float = 300):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=timeout)


def no_exceptions(at) -> None:
    errors = [e.value for e in at.exception]
    assert not errors, errors


def open_page(page: str, name: str | None = "ana"):
    """AppTest on `page` (e.g. "pages/annotate.py"), signed in as `name` (None: nobody), after one run."""
    at = app_test()
    at.switch_page(page)
    if name:
        at.session_state["annotator"] = name
    at.run()
    no_exceptions(at)
    return at


def env_for_subprocess(db_url: str, checkpoint: Path, seed: int = 0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(V1STUDIO_MODEL=str(checkpoint), V1STUDIO_DB=db_url, V1STUDIO_SEED_TRACES=str(seed),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    return env
