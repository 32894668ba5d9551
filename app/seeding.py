"""First-start seed: when the store has no traces, decode a few bundled scenes so a new user sees
something at once. Plain functions (no Streamlit) so tests and the CLI can call them; the app wraps them
in a progress bar (app/resources.py: `ensure_seeded`).

`V1STUDIO_SEED_TRACES` sets how many (default 3, at most the bundled scenes; 0 turns seeding off).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from v1core.trace import DecodingSettings

from .gallery import gallery, gallery_item, load_gallery_image
from .runner import ModelHandle, prepare_run, save_run

__all__ = ["SEED_ENV", "SEED_SETTINGS", "seed_count", "seed_demo_traces", "store_is_empty"]

SEED_ENV = "V1STUDIO_SEED_TRACES"
SEED_SETTINGS = DecodingSettings(do_sample=False, max_new_tokens=192)
SEED_TAG = "seed"


def seed_count() -> int:
    raw = os.environ.get(SEED_ENV, "3").strip() or "3"
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer, got {raw!r}") from None
    scenes = [i for i in gallery() if i.kind == "scene"]
    return max(0, min(n, len(scenes)))


def store_is_empty(store: Any) -> bool:
    return not list(store.list_traces(limit=1))


def seed_demo_traces(
    store: Any,
    handle: ModelHandle,
    *,
    n: int | None = None,
    keys: Sequence[str] | None = None,
    settings: DecodingSettings | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[str]:
    """Decode `n` bundled scenes (default `seed_count()`) and save them; returns the new trace ids.

    `progress(done, total, label)` is called before each scene and once at the end.
    """
    if keys is None:
        n = seed_count() if n is None else n
        keys = [i.key for i in gallery() if i.kind == "scene"][:n]
    settings = settings or SEED_SETTINGS
    ids: list[str] = []
    for done, key in enumerate(keys):
        item = gallery_item(key)
        if progress:
            progress(done, len(keys), f"Decoding “{item.question}” on {item.title.lower()}")
        run = prepare_run(handle, store, load_gallery_image(key), item.question, settings,
                          tags=[SEED_TAG], meta={"gallery": key})
        run.run()
        ids.append(save_run(store, run.trace))
    if progress:
        progress(len(keys), len(keys), "done")
    return ids
