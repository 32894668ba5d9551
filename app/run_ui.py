"""The Run page: pick or upload an image, ask, decode live (text, copy chips, heatmap, progress, tokens/s),
stop, save, open in the viewer.

Decoding runs in the script thread's `TraceRun` iterator (generation itself is in TraceRun's worker
thread). The Stop button (and leaving the page) works the Streamlit way: the click asks for a rerun, which
interrupts this script at its next UI update; the `finally` below then cancels decoding, saves the
partial trace as "cancelled", and the rerun shows it. Runs are serialised by the process-wide
`GenerationGate`; a second user sees "queued (position n)" until the model is free.

Widget keys: image_source, gallery_key, upload, question, decoding, temperature, top_p, max_new_tokens,
repetition_penalty, seed, run, stop.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from v1core.trace import DecodingSettings

from . import resources, state
from .figures import HeatmapCanvas, HeatmapStyle, encode_image, step_title
from .gallery import gallery, gallery_item, load_gallery_image
from .runner import prepare_run, save_run
from .safe_text import md_code, md_escape
from .widgets import PLOTLY_CONFIG, output_markdown

MAX_UPLOAD_MB = 20
TEXT_EVERY_S = 0.15  # UI refresh throttles while streaming (the model may produce 100+ tokens/s)
HEATMAP_EVERY_S = 0.4


def _gallery_changed() -> None:
    key = st.session_state.get("gallery_key")
    if key:
        st.session_state["question"] = gallery_item(key).question


def render() -> None:
    state.ensure_app_navigation()
    st.title("Run v1")
    try:
        handle = resources.get_model()
    except Exception as exc:  # noqa: BLE001 - ModelNotFound or a broken checkpoint: say so, keep the page
        st.error(f"The model could not be loaded: {type(exc).__name__}")
        st.code(str(exc), language=None)
        return
    st.caption(f"Model {md_code(handle.model_id)} on {md_escape(handle.device)} · "
               f"store {md_code(resources.store_label())}")

    _last_run_note()

    left, right = st.columns([2, 3], gap="large")
    with left:
        loaded = _image_input()
        items = {i.key: i for i in gallery()}
        st.session_state.setdefault("question", items[st.session_state.get("gallery_key") or "scene-0"].question)
        st.text_area("Question", key="question", height=80, max_chars=2000)
        settings = _settings_input()
        b1, b2 = st.columns(2)
        go = b1.button("Run", key="run", type="primary", width="stretch", disabled=loaded is None)
        # live only while decoding: clicking it reruns the script, which interrupts the decoding loop below
        b2.button("Stop", key="stop", disabled=not go, width="stretch",
                  help="stop decoding; the partial trace is saved" if go else "stops a running decoding")
    with right:
        live = st.container()

    if not go:
        with live:
            if loaded is not None:
                st.image(loaded.image, caption=f"{loaded.image.width}×{loaded.image.height} px · "
                         f"grid {'×'.join(map(str, _grid(handle, loaded)))} merged patches",
                         width=min(loaded.image.width * 2, 720))
        return
    with live:
        trace_id = _run_live(handle, loaded, st.session_state.get("question", ""), settings)
    if trace_id:
        state.open_in_viewer(trace_id, 0)


def _last_run_note() -> None:
    """After Stop (or leaving mid-run and coming back): what was saved, with a link to the viewer."""
    last = st.session_state.get(state.LAST_RUN_KEY)
    if not last:
        return
    # After Stop, Streamlit may start this rerun while the interrupted run is still saving its trace
    # (a fraction of a second): give it a moment.
    deadline = time.monotonic() + 5.0
    while not (rows := resources.trace_summaries(trace_ids=[last], limit=1)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not rows:
        return
    row = rows[0]
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.info(f"Last run: {row['n_steps']} tokens, {row['status']}. Saved as {last[:8]}.", icon=":material/save:")
    if c2.button("Open in viewer", key="open_last", width="stretch"):
        state.open_in_viewer(last, 0)


def _grid(handle: Any, loaded: Any) -> tuple[int, int]:
    try:
        return handle.processor.grid_for(loaded.image).shape
    except Exception:  # noqa: BLE001 - shown as an error when running
        return (0, 0)


def _image_input() -> Any:
    """Bundled image or upload → LoadedImage, or None (with the reason shown)."""
    source = st.radio("Image", ["Bundled", "Upload"], horizontal=True, key="image_source")
    if source == "Bundled":
        items = gallery()
        st.selectbox("Bundled image", [i.key for i in items], key="gallery_key",
                     format_func=lambda k: gallery_item(k).title, on_change=_gallery_changed)
        return load_gallery_image(st.session_state.get("gallery_key") or items[0].key)
    up = st.file_uploader("PNG, JPEG or WebP", type=["png", "jpg", "jpeg", "webp"], key="upload",
                          help=f"at most {MAX_UPLOAD_MB} MB and 40 megapixels; EXIF orientation is applied")
    if up is None:
        st.caption("Upload an image to ask about it.")
        return None
    return _load_upload(up.getvalue(), up.name)


def _load_upload(data: bytes, name: str) -> Any:
    from v1core.images import ImageError, load_image

    try:
        return load_image(data, max_bytes=MAX_UPLOAD_MB * 1024 * 1024, allowed_formats=("PNG", "JPEG", "WEBP"))
    except ImageError as exc:
        st.error(f"This file cannot be used: {md_escape(str(exc))}")
        return None


def _settings_input() -> DecodingSettings:
    with st.expander("Decoding settings", expanded=False):
        mode = st.radio("Decoding", ["greedy", "sampling"], horizontal=True, key="decoding")
        sampling = mode == "sampling"
        c1, c2 = st.columns(2)
        temperature = c1.slider("Temperature", 0.05, 2.0, 0.7, 0.05, key="temperature", disabled=not sampling)
        top_p = c2.slider("Top-p", 0.05, 1.0, 0.9, 0.05, key="top_p", disabled=not sampling)
        max_new = c1.number_input("Max new tokens", 1, 4096, 256, 16, key="max_new_tokens")
        rep = c2.number_input("Repetition penalty", 1.0, 2.0, 1.0, 0.05, key="repetition_penalty", format="%.2f")
        seed = c1.number_input("Seed", 0, 2**31 - 1, 0, 1, key="seed", help="used by sampling")
    return DecodingSettings(do_sample=sampling, temperature=float(temperature), top_p=float(top_p),
                            max_new_tokens=int(max_new), repetition_penalty=float(rep), seed=int(seed))


def _run_live(handle: Any, loaded: Any, question: str, settings: DecodingSettings) -> str | None:
    """Decode with live updates; returns the saved trace id (None when nothing could start)."""
    from v1core.geometry import ImageGeometryError

    status = st.empty()
    progress = st.progress(0.0, text="waiting for the model…")
    chart = st.empty()
    with st.container(height=220, border=True):
        text_box = st.empty()
    store = resources.get_store()
    gate = resources.generation_gate()

    def queued(position: int, holder: str | None) -> None:
        status.warning(f"Queued: the model is busy with {md_escape(holder or 'another run')}; "
                       f"you are number {position} in line. Stop cancels.", icon=":material/hourglass_top:")

    try:
        run = prepare_run(handle, store, loaded, question, settings)
    except (ImageGeometryError, ValueError) as exc:
        status.error(md_escape(str(exc)))
        return None
    trace = run.trace
    canvas = HeatmapCanvas(tuple(trace.image_size), tuple(trace.grid), _uri(loaded), HeatmapStyle(opacity=0.6))
    saved: str | None = None
    with gate.hold(f"“{question[:40]}”", on_wait=queued):
        st.session_state[state.LAST_RUN_KEY] = trace.trace_id  # set first: see the `finally` below
        status.info("Decoding… (Stop ends it; the partial trace is kept)", icon=":material/play_circle:")
        started = time.perf_counter()
        last_text = last_fig = 0.0
        steps = iter(run)
        failure: Exception | None = None
        try:
            for step in steps:
                now = time.perf_counter()
                n = len(trace.steps)
                if now - last_text >= TEXT_EVERY_S:
                    elapsed = max(now - started, 1e-6)
                    progress.progress(min(n / settings.max_new_tokens, 1.0),
                                      text=f"{n}/{settings.max_new_tokens} tokens · {n / elapsed:.1f} tokens/s")
                    text_box.markdown(_live_text(trace.steps))
                    last_text = now
                if now - last_fig >= HEATMAP_EVERY_S and step.pointer is not None:
                    _draw(chart, canvas, step)
                    last_fig = now
        except Exception as exc:  # noqa: BLE001 - decoding failed: TraceRun marked the trace "failed"
            failure = exc
        finally:
            # Stop / leaving the page raise inside the loop (at a UI update): cancel first so the trace is
            # marked "cancelled", then close the iterator (ends decoding), then save whatever we have.
            if trace.status == "running":
                run.cancel.set()
            steps.close()  # type: ignore[attr-defined]
            # No Streamlit call here: after a Stop/rerun request every st.* access (session state
            # included) raises again, which would skip the save.
            saved = save_run(store, trace)
    text_box.markdown(output_markdown(trace.steps))
    if trace.steps and trace.steps[-1].pointer is not None:
        _draw(chart, canvas, trace.steps[-1])
    tps = trace.timings.get("tokens_per_s", 0.0)
    progress.progress(1.0, text=f"{len(trace.steps)} tokens · {tps:g} tokens/s · {trace.status}")
    if failure is not None:
        status.error(f"Decoding failed after {len(trace.steps)} tokens (the trace is saved as failed):")
        st.code(f"{type(failure).__name__}: {failure}", language=None)
        return None
    status.success(f"Saved trace {saved[:8]} ({trace.status}). Opening it in the viewer…")
    return saved


LIVE_TOKENS = 600  # while streaming, only the newest tokens are redrawn (the viewer shows them all)


def _live_text(steps: list) -> str:
    if len(steps) <= LIVE_TOKENS:
        return output_markdown(steps)
    return "… " + output_markdown(steps[-LIVE_TOKENS:])


def _draw(chart: Any, canvas: HeatmapCanvas, step: Any) -> None:
    fig = canvas.figure(step.pointer, copied_patch=step.patch if step.is_copy else None, title=step_title(step),
                        meta={"step": step.index, "live": True})
    chart.plotly_chart(fig, theme=None, config=PLOTLY_CONFIG, width="stretch")


@st.cache_data(show_spinner=False, max_entries=16)
def _uri_cached(sha256: str, _loaded: Any) -> str:
    return encode_image(_loaded.image)


def _uri(loaded: Any) -> str:
    return _uri_cached(loaded.sha256, loaded)
