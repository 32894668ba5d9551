"""Small Streamlit building blocks shared by pages (trace picker, headers, output text, step details).

All untrusted text (questions, model output, token texts) goes through `st.text`/`st.code`/dataframes or
`safe_text.md_escape` — never `unsafe_allow_html`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from v1core.copy_tokens import copy_token

from . import resources
from .figures import COLOURSCALES, HeatmapStyle
from .safe_text import md_code, md_escape, shorten, token_display, token_markdown

__all__ = [
    "empty_state",
    "heatmap_style_controls",
    "output_markdown",
    "step_details",
    "trace_header",
    "trace_label",
    "trace_picker",
]

PLOTLY_CONFIG = {"displaylogo": False, "scrollZoom": True,
                 "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}


def empty_state(message: str, *, link_run: bool = True) -> None:
    st.info(message, icon=":material/info:")
    if link_run:
        st.page_link("pages/run.py", label="Go to the Run page", icon=":material/play_circle:")


def trace_label(row: dict[str, Any]) -> str:
    """Plain-text label of a trace summary (selectbox options are shown as plain text)."""
    when = (row.get("created_at") or "")[:16].replace("T", " ")
    status = row.get("status") or ""
    flag = "" if status == "complete" else f" [{status}]"
    return f"{shorten(row.get('question'), 60)} · {row.get('model_id') or '?'} · {when}{flag} · {row['trace_id'][:8]}"


def trace_picker(label: str, key: str, *, selected: str | None, rows: list[dict[str, Any]] | None = None,
                 on_pick: Callable[[str], None] | None = None, image_sha256: str | None = None,
                 exclude: str | None = None) -> str | None:
    """Selectbox over stored traces (newest first) showing `selected` (the page's source of truth: session
    state or URL); a user's pick is reported through `on_pick(trace_id)`, which should update that source.
    `image_sha256` keeps only traces of that image; `exclude` drops one id."""
    rows = rows if rows is not None else resources.trace_summaries(limit=200)
    if image_sha256:
        rows = [r for r in rows if r.get("image_sha256") == image_sha256]
    if exclude:
        rows = [r for r in rows if r["trace_id"] != exclude]
    ids = [r["trace_id"] for r in rows]
    labels = {r["trace_id"]: trace_label(r) for r in rows}
    if selected and selected not in labels and selected != exclude:
        ids.insert(0, selected)
        labels[selected] = f"{selected[:8]} (not in the recent list)"
    if not ids:
        return None
    st.session_state[key] = selected if selected in ids else ids[0]

    def changed() -> None:
        if on_pick is not None and st.session_state.get(key):
            on_pick(st.session_state[key])

    return st.selectbox(label, ids, key=key, format_func=lambda t: labels.get(t, t), on_change=changed)


def trace_header(trace: Any) -> None:
    """Question, status, model, decoding settings and speed of a trace."""
    st.markdown(f"**Question:** {md_escape(trace.question)}")
    s = trace.settings
    decoding = (f"sampling T={s.temperature:g} top-p={s.top_p:g} seed={s.seed}" if s.do_sample else "greedy")
    tps = trace.timings.get("tokens_per_s")
    bits = [
        f"model {md_code(trace.model_id)}",
        f"status **{md_escape(trace.status)}**",
        f"{len(trace.steps)} steps",
        f"grid {trace.grid[0]}×{trace.grid[1]}",
        md_escape(decoding),
        f"max {s.max_new_tokens} tokens",
    ]
    if tps:
        bits.append(f"{tps:g} tokens/s")
    if trace.parent_id:
        bits.append(f"branch of {md_escape(str(trace.parent_id)[:8])} at step {trace.branch_step}")
    st.caption(" · ".join(bits))
    if trace.error:
        st.error("This run failed:")
        st.code(trace.error, language=None)


def output_markdown(steps: Any, *, limit: int | None = None) -> str:
    """The generated text as Markdown with copy tokens as chips; every token text is escaped."""
    parts = []
    for step in steps if limit is None else list(steps)[:limit]:
        if step.is_copy:
            parts.append(" " + token_markdown(None, is_copy=True, patch=step.patch) + " ")
        else:
            parts.append(md_escape(step.text))
    return "".join(parts) or "_(no text yet)_"


def heatmap_style_controls(container: Any = None, *, prefix: str = "") -> HeatmapStyle:
    """Opacity, colour scale and linear/log controls (sidebar by default)."""
    where = container if container is not None else st.sidebar
    with where:
        st.markdown("**Heatmap**")
        opacity = st.slider("Opacity", 0.0, 1.0, 0.65, 0.05, key=f"{prefix}opacity")
        colorscale = st.selectbox("Colour scale", COLOURSCALES, key=f"{prefix}colorscale")
        scale = st.radio("Scale", ["linear", "log"], horizontal=True, key=f"{prefix}scale",
                         help="log shows 4 decades below the step's most likely patch")
        argmax = st.checkbox("Outline the most likely patch", True, key=f"{prefix}show_argmax")
    return HeatmapStyle(opacity=float(opacity), colorscale=str(colorscale), log=scale == "log", show_argmax=argmax)


def step_details(step: Any, n_patches: int) -> None:
    """Token, gate, p_copy, entropy and the top-5 alternatives of one step."""
    kind = f"copy → patch {step.patch}" if step.is_copy else "text token"
    st.markdown(f"**Step {step.index}** · {kind}")
    st.code(token_display(step.text) if not step.is_copy else copy_token(step.patch), language=None)
    c1, c2, c3 = st.columns(3)
    c1.metric("p_copy", f"{step.p_copy:.3f}" if np.isfinite(step.p_copy) else "–",
              help="probability mass on all copy (patch) tokens at this step")
    c2.metric("gate", "–" if step.gate is None else f"{step.gate:.3f}")
    max_h = float(np.log(max(n_patches, 2)))
    c3.metric("entropy", f"{step.entropy:.2f}" if np.isfinite(step.entropy) else "–",
              help=f"pointer entropy in nats (uniform over {n_patches} patches = {max_h:.2f})")
    if step.topk_ids:
        rows = {
            "token": [token_display(t) for t in step.topk_texts] or [str(i) for i in step.topk_ids],
            "id": [int(i) for i in step.topk_ids],
            "p": [float(p) for p in step.topk_probs],
        }
        # a static table: cheaper to redraw on every step than an interactive dataframe
        st.table({"top-5 alternatives": rows["token"], "id": [str(i) for i in rows["id"]],
                  "p": [f"{p:.3f}" for p in rows["p"]]}, hide_index=True)


def sidebar_scope(store: Any, title: str, prefix: str) -> tuple[str, str, str]:
    """Sidebar: the identity block, then `title` with model and tag filters (keys `<prefix>_model`,
    `<prefix>_tag`). Returns (annotator, model, tag); "" means any."""
    from . import state

    me = state.annotator_input(st.sidebar)
    st.sidebar.markdown(f"**{title}**")
    models = [""] + list(store.list_models())
    model = st.sidebar.selectbox("Model", models, key=f"{prefix}_model", format_func=lambda m: m or "any")
    tag = st.sidebar.text_input("Tag", key=f"{prefix}_tag")
    return me, model, tag
