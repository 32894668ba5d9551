"""Bundled images for the Run page and the first-start seed: demo scenes and scikit-image's photographs.

Nothing is downloaded: scenes are drawn from their seed (`v1core.demo.scenes`), the photographs ship
inside scikit-image. Each item becomes PNG bytes and goes through `v1core.images.load_image` like an
upload, so its sha256 identifies it in the store.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from PIL import Image

__all__ = ["GalleryItem", "SEED_KEYS", "gallery", "gallery_item", "load_gallery_image"]

N_SCENES = 6


@dataclass(frozen=True)
class GalleryItem:
    key: str
    title: str
    question: str
    kind: str  # "scene" / "photo"
    make: Callable[[], Image.Image]


def _scene(i: int) -> tuple[Image.Image, str]:
    from v1core.demo.scenes import EVAL_SEED_START, make_scene

    scene = make_scene(EVAL_SEED_START + i)
    assert scene.image is not None
    return scene.image, scene.question


def _photo(name: str) -> Callable[[], Image.Image]:
    def make() -> Image.Image:
        from skimage import data

        return Image.fromarray(getattr(data, name)()).convert("RGB")

    return make


@lru_cache(maxsize=1)
def gallery() -> tuple[GalleryItem, ...]:
    """Demo scenes (held-out evaluation seeds: the demo model never trained on them) + three photos."""
    items = []
    for i in range(N_SCENES):
        _, question = _scene(i)
        items.append(GalleryItem(f"scene-{i}", f"Demo scene {i + 1}", question, "scene",
                                 (lambda i=i: _scene(i)[0])))
    items += [
        GalleryItem("astronaut", "Astronaut (scikit-image photo)", "What is the astronaut holding?", "photo",
                    _photo("astronaut")),
        GalleryItem("coffee", "Coffee (scikit-image photo)", "What is on the saucer next to the cup?", "photo",
                    _photo("coffee")),
        GalleryItem("chelsea", "Chelsea the cat (scikit-image photo)", "What colour are the cat's eyes?", "photo",
                    _photo("chelsea")),
    ]
    return tuple(items)


SEED_KEYS: tuple[str, ...] = ("scene-0", "scene-1", "scene-2")


def gallery_item(key: str) -> GalleryItem:
    for item in gallery():
        if item.key == key:
            return item
    raise KeyError(f"no bundled image {key!r}")


@lru_cache(maxsize=16)
def _png(key: str) -> bytes:
    buf = io.BytesIO()
    gallery_item(key).make().save(buf, format="PNG")
    return buf.getvalue()


def load_gallery_image(key: str):
    """The bundled image as a `v1core.images.LoadedImage` (PNG bytes, sha256 of those bytes)."""
    from v1core.images import load_image

    return load_image(_png(key))
