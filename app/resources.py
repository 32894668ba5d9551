"""Process-wide cached resources: the store, the model, the generation gate, decoded images, traces.

Every page gets them through these functions (never by building its own):

    store = resources.get_store()                # storage.Store for $V1STUDIO_DB (default ./data/v1studio.db)
    handle = resources.get_model()               # ModelHandle(model, processor, model_id, path, device); raises
                                                 # v1core.loading.ModelNotFound with a readable message
    gate = resources.generation_gate()           # GenerationGate: one decoding at a time, others queue
    trace = resources.load_trace(trace_id)       # cached by id; None when it does not exist
    image = resources.trace_image(sha256)        # PIL image (EXIF-corrected, as the model saw it) or None
    uri = resources.image_uri(sha256)            # the photo encoded once for figures (data URI) or None
    rows = resources.trace_summaries(limit=200)  # light dicts for pickers: id, question, model_id, status, …
    resources.forget_trace(trace_id)             # drop a cached trace after changing it in the store
    resources.ensure_seeded()                    # first start: decode a few scenes when the store is empty

Caches are keyed by store URL too, so tests (and `V1STUDIO_DB` switches) never see another store's data.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import streamlit as st

from .runner import GenerationGate, ModelHandle

__all__ = [
    "ensure_seeded",
    "forget_trace",
    "generation_gate",
    "get_model",
    "get_store",
    "image_uri",
    "load_trace",
    "model_path",
    "store_label",
    "store_url",
    "trace_image",
    "trace_revisits",
    "trace_summaries",
]

# ----------------------------------------------------------------------------- store
def store_url() -> str:
    """The store URL the app uses: $V1STUDIO_DB (a SQLAlchemy URL or a file path), else ./data/v1studio.db
    (resolved exactly as `storage.Store()` resolves it)."""
    from storage.db import resolve_url

    return resolve_url(None)


def store_label(url: str | None = None) -> str:
    """The store URL for display, with any password masked."""
    url = url or store_url()
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL: show only its scheme
        return url.split("://", 1)[0] + "://…" if "://" in url else "…"


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Any:
    from storage import Store

    return Store(url)


def get_store() -> Any:
    return _store(store_url())


# ----------------------------------------------------------------------------- model
def model_path() -> str:
    from v1core.loading import default_model_path

    return str(default_model_path())


@st.cache_resource(show_spinner="Loading the v1 model…")
def _model(path: str) -> ModelHandle:
    from v1core.loading import load_model

    model, processor = load_model(path)
    device = str(next(model.parameters()).device)
    return ModelHandle(model, processor, getattr(model, "v1_model_id", "") or Path(path).name, path, device)


def get_model() -> ModelHandle:
    """The model for $V1STUDIO_MODEL (else the embedded demo model), loaded once per process."""
    return _model(model_path())


@st.cache_resource(show_spinner=False)
def generation_gate() -> GenerationGate:
    """One gate per process: decodings are serialised, a second user sees their place in the queue."""
    return GenerationGate()


# ----------------------------------------------------------------------------- traces and images
@st.cache_resource(show_spinner=False, max_entries=48)
def _trace(url: str, trace_id: str, stamp: str) -> Any:
    """Keyed by the trace's stamp: a save by another process (a live trace growing, a batch import, a delete)
    changes the stamp, so the next page view decodes the new version instead of showing a stale one."""
    try:
        return _store(url).get_trace(trace_id)
    except (KeyError, LookupError):
        return None


def _stamp(trace_id: str) -> str | None:
    return _store(store_url()).trace_stamp(str(trace_id))


def load_trace(trace_id: str | None) -> Any:
    """The stored Trace (cached per stored version; treat it as read-only) or None when there is no such trace.
    One primary-key read per call checks the cached copy is still the stored one."""
    if not trace_id:
        return None
    stamp = _stamp(trace_id)
    if stamp is None:
        return None
    trace = _trace(store_url(), str(trace_id), stamp)
    if trace is None:
        _trace.clear(store_url(), str(trace_id), stamp)  # do not cache misses: it may be saved a moment later
    return trace


def forget_trace(trace_id: str) -> None:
    _trace.clear()
    _revisits.clear()


@st.cache_resource(show_spinner=False, max_entries=48)
def _revisits(url: str, trace_id: str, stamp: str) -> list:
    trace = _trace(url, trace_id, stamp)
    return [] if trace is None else list(trace.revisits)


def trace_revisits(trace_id: str) -> list:
    """`trace.revisits` (connected-component boxes and detect() text), computed once per stored version."""
    stamp = _stamp(trace_id)
    return [] if stamp is None else _revisits(store_url(), str(trace_id), stamp)


@st.cache_resource(show_spinner=False, max_entries=32)
def _image(url: str, sha256: str) -> Any:
    from v1core.images import ImageError, load_image

    data = _store(url).get_image_bytes(sha256)
    if not data:
        return None
    try:
        return load_image(data).image
    except ImageError:
        return None


def trace_image(sha256: str) -> Any:
    """The stored image (RGB, EXIF orientation applied: what the model saw) or None if missing."""
    try:
        return _image(store_url(), sha256)
    except KeyError:
        return None


@st.cache_data(show_spinner=False, max_entries=64)
def _image_uri(url: str, sha256: str, max_side: int) -> str | None:
    from .figures import encode_image

    image = _image(url, sha256)
    return None if image is None else encode_image(image, max_side=max_side)


def image_uri(sha256: str, max_side: int = 1024) -> str | None:
    """The photo as a data URI for figures, encoded once per image (cached by sha256)."""
    try:
        return _image_uri(store_url(), sha256, max_side)
    except KeyError:
        return None


def _get(row: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(row, dict) and name in row:
            return row[name]
        if hasattr(row, name):
            return getattr(row, name)
    return default


def trace_summaries(**filters: Any) -> list[dict[str, Any]]:
    """`store.list_traces(**filters)` as plain dicts with the fields pickers need."""
    filters.setdefault("limit", 200)
    out = []
    for row in get_store().list_traces(**filters):
        out.append(
            {
                "trace_id": str(_get(row, "trace_id", "id")),
                "question": str(_get(row, "question", default="") or ""),
                "model_id": str(_get(row, "model_id", "model", default="") or ""),
                "status": str(_get(row, "status", default="") or ""),
                "created_at": str(_get(row, "created_at", default="") or ""),
                "image_sha256": str(_get(row, "image_sha256", default="") or ""),
                "n_steps": _get(row, "n_steps", "num_steps", default=None),
                "parent_id": _get(row, "parent_id", default=None),
            }
        )
    return out


# ----------------------------------------------------------------------------- first-start seed
_seed_lock = threading.Lock()


@st.cache_resource(show_spinner=False)
def _seeded_flag(url: str) -> dict[str, bool]:
    return {"done": False}


def ensure_seeded() -> None:
    """If the store has no traces, decode a few bundled scenes (with a progress bar). Runs once per store
    per process; failures (no model, …) are shown, not raised, so the app still opens."""
    from .seeding import seed_count, seed_demo_traces, store_is_empty

    flag = _seeded_flag(store_url())
    if flag["done"]:
        return
    with _seed_lock:
        if flag["done"]:
            return
        try:
            store = get_store()
            if seed_count() == 0 or not store_is_empty(store):
                flag["done"] = True
                return
            with st.status("First start: decoding a few demo scenes so there is something to look at…",
                           expanded=True) as status:
                bar = st.progress(0.0)
                handle = get_model()
                with generation_gate().hold("the first-start demo traces"):
                    if store_is_empty(store):
                        seed_demo_traces(store, handle, progress=lambda d, n, label: bar.progress(
                            d / max(n, 1), text=f"{d}/{n} · {label}"))
                status.update(label="Demo traces ready", state="complete", expanded=False)
            flag["done"] = True
        except Exception as exc:  # noqa: BLE001 - the app must open even when seeding cannot run
            flag["done"] = True
            st.warning(f"Could not create the demo traces: {type(exc).__name__}: {exc}")
