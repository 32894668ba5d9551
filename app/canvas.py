"""The trace canvas in Streamlit: `trace_canvas(...)` mounts the Custom Components v2 frontend of
app/frontend/ (bundle committed in app/frontend/dist/, rebuilt by `make frontend`).

The browser changes step, plays and scrubs on its own; Python only feeds it (app/canvas_data.py: the static
part once per trace, pointer windows on request) and hears back, through state values, the step it shows
(debounced, not while playing) and, in edit mode, the selected patches. Each call site gives a `key`; the
feed for that key lives in session state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from .canvas_data import CanvasFeed, CanvasSelection, selection_of, view_payload
from .figures import HeatmapStyle

__all__ = ["BUNDLE", "CanvasResult", "feed", "move_canvas", "sync_feed", "trace_canvas"]

BUNDLE = Path(__file__).resolve().parent / "frontend" / "dist" / "trace_canvas.js"
_NAME = "v1studio.trace_canvas"
_FEEDS = "_canvas_feeds"


@st.cache_resource(show_spinner=False)
def _component() -> Any:
    if not BUNDLE.exists():
        raise FileNotFoundError(f"the trace canvas bundle {BUNDLE} is missing: run `make frontend`")
    return st.components.v2.component(_NAME, js=BUNDLE.read_text(encoding="utf-8"), isolate_styles=False)


def feed(key: str) -> CanvasFeed:
    """The CanvasFeed of the canvas with this key in this session."""
    feeds = st.session_state.setdefault(_FEEDS, {})
    if key not in feeds:
        feeds[key] = CanvasFeed()
    return feeds[key]


def move_canvas(key: str, step: int) -> None:
    """Show `step` on the canvas `key` at its next render (a server-side jump: buttons, links)."""
    feed(key).move_to(step)


@dataclass(frozen=True)
class CanvasResult:
    """What the browser reported: the step it shows, and (edit mode) the selected patches."""

    step: int
    selection: CanvasSelection | None


def sync_feed(key: str) -> CanvasFeed:
    """The feed of canvas `key` with the step its browser last reported (call before drawing what depends on
    it; trace_canvas does it too)."""
    f = feed(key)
    value = st.session_state[key] if key in st.session_state else None
    if hasattr(value, "get"):
        f.reported(value.get("step"))
    return f


def _on_need(key: str) -> None:
    value = st.session_state.get(key) or {}
    feed(key).request(value.get("need") if hasattr(value, "get") else None)


def _on_step(key: str) -> None:
    value = st.session_state.get(key) or {}
    feed(key).reported(value.get("step") if hasattr(value, "get") else None)


def trace_canvas(trace: Any, revisits: list, image_uri: str | None, *, key: str,
                 style: HeatmapStyle | None = None, regions: str = "current", edit: bool = False,
                 selected: list[int] | tuple[int, ...] = (), height: int = 520,
                 sync_url: bool = False, boxes: list[dict[str, Any]] | tuple = ()) -> CanvasResult:
    """Mount the canvas for `trace` (its pointers must be loaded) and return what the browser reported."""
    style = style or HeatmapStyle()
    f = sync_feed(key)
    view = view_payload(colorscale=style.colorscale, log=style.log, opacity=style.opacity,
                        show_argmax=style.show_argmax, regions=regions, edit=edit, selected=selected, height=height,
                        sync_url=sync_url, boxes=boxes)
    data = f.data(trace, revisits, image_uri, view)
    result = _component()(key=key, data=data, default={"step": f.step},
                          on_step_change=lambda: _on_step(key), on_selection_change=lambda: None,
                          on_need_change=lambda: _on_need(key))
    f.reported(getattr(result, "step", None))
    sel = getattr(result, "selection", None)
    selection = selection_of(trace, sel.get("ids") or []) if isinstance(sel, dict) and edit else None
    return CanvasResult(f.step, selection)
