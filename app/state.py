"""Per-session page state shared by every page: annotator, selected trace, current step, URL sync.

Pages never touch `st.session_state` keys of other pages directly; they use these functions, so the
annotate / library / export / review pages (issue 6) can do the same:

    from app import state
    state.select_trace(trace_id)            # selects it everywhere (+ URL ?trace=…)
    tid = state.selected_trace_id()         # session value, else ?trace= from the URL, else None
    state.request_step(12)                  # move the viewer to step 12 on its next render
    name = state.annotator()                # "" until the user types a name (sidebar widget below)
    state.annotator_input()                 # the sidebar text box bound to it
    state.open_in_viewer(trace_id, step=3)  # switch page to the viewer showing that step

URL: `?trace=<id>&step=<n>` (the viewer keeps both current), so copying the address bar shares a view.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from .safe_text import md_escape

# Session-state keys (widget keys are part of the public test surface: see tests/test_app_*.py).
TRACE_KEY = "trace_id"
STEP_KEY = "step"  # the step the viewer's canvas reports
PENDING_STEP_KEY = "_pending_step"
ANNOTATOR_KEY = "annotator"  # the sidebar text box
_ANNOTATOR_KEPT = "_annotator_name"  # survives page changes (Streamlit drops widget state of unrendered pages)
LAST_RUN_KEY = "last_run_id"

QP_TRACE = "trace"
QP_STEP = "step"
QP_TRACE_B = "trace_b"

VIEWER_PAGE = "pages/viewer.py"
RUN_PAGE = "pages/run.py"
COMPARE_PAGE = "pages/compare.py"
ANNOTATE_PAGE = "pages/annotate.py"


# ----------------------------------------------------------------------------- annotator
def annotator() -> str:
    """The annotator's name for this session ("" when not set)."""
    ss = st.session_state
    value = ss.get(ANNOTATOR_KEY)
    return str((value if value is not None else ss.get(_ANNOTATOR_KEPT)) or "").strip()


def set_annotator(name: str) -> None:
    st.session_state[ANNOTATOR_KEY] = st.session_state[_ANNOTATOR_KEPT] = (name or "").strip()[:80]


def auth_configured() -> bool:
    """True when `.streamlit/secrets.toml` has an `[auth]` section: identity then comes from Streamlit's
    OIDC login (`st.login`) instead of a typed name."""
    try:
        return bool(st.secrets.get("auth"))
    except Exception:  # noqa: BLE001 - no secrets file at all (the default; Streamlit's own error types): typed names
        return False


def _configured_reviewers() -> set[str]:
    """`[v1studio] reviewers = ["ana@lab.org", …]` in secrets.toml: logins that get the reviewer role."""
    try:
        section = st.secrets.get("v1studio") or {}
        return {str(x).strip().lower() for x in section.get("reviewers", [])}
    except Exception:  # noqa: BLE001 - no or unreadable secrets file: nobody is promoted
        return set()


def annotator_input(container: Any = None) -> str:
    """The sidebar identity block; returns the current annotator name ("" until known).

    Without `[auth]` in secrets.toml: a text box bound to the name, kept for the session. With it: a
    "Log in" button (`st.login`) and, once logged in, the account's e-mail (else name) as the annotator, with
    "Log out". Either way the name is recorded in the store (role annotator unless made reviewer) and its
    role is shown.
    """
    where = container if container is not None else st.sidebar
    if auth_configured():
        if not st.user.get("is_logged_in", False):  # absent when the [auth] section is incomplete
            where.button("Log in", key="login", icon=":material/login:", on_click=st.login,
                         help="Sign in with your organisation's account to annotate.")
            set_annotator("")
            return ""
        name = str(st.user.get("email") or st.user.get("name") or st.user.get("sub") or "").strip()[:80]
        set_annotator(name)
        where.markdown(f"Signed in as **{md_escape(name)}**")
        where.button("Log out", key="logout", icon=":material/logout:", on_click=st.logout)
    else:
        ss = st.session_state
        if _ANNOTATOR_KEPT in ss:
            # Streamlit forgets a widget's value when the page changes (widget ids are per page); the name
            # lives in a plain key and is handed to this page's box. Typing updates it first (on_change).
            ss[ANNOTATOR_KEY] = ss[_ANNOTATOR_KEPT]
        where.text_input("Annotator", key=ANNOTATOR_KEY, max_chars=80, placeholder="your name",
                         help="Stored with annotations and reviews you make in this session.",
                         on_change=_keep_typed_annotator)
        ss[_ANNOTATOR_KEPT] = annotator()
    name = annotator()
    if name:
        where.caption(f"role: {role_of(name)}")
    return name


def _keep_typed_annotator() -> None:
    st.session_state[_ANNOTATOR_KEPT] = str(st.session_state.get(ANNOTATOR_KEY) or "").strip()[:80]


def role_of(name: str) -> str:
    """The annotator's role in the store ("annotator" / "reviewer"); registers unknown names as annotators,
    and promotes logins listed under `[v1studio] reviewers` in secrets.toml."""
    from . import resources

    store = resources.get_store()
    row = store.get_annotator(name)
    if name.lower() in _configured_reviewers() and (row is None or row.role != "reviewer"):
        store.add_annotator(name, role="reviewer")
        return "reviewer"
    if row is None:
        store.add_annotator(name)
        return "annotator"
    return str(row.role)


def is_reviewer(name: str) -> bool:
    return bool(name) and role_of(name) == "reviewer"


# ----------------------------------------------------------------------------- trace selection
def selected_trace_id() -> str | None:
    """The trace this session looks at: session state first, else `?trace=` from the URL."""
    tid = st.session_state.get(TRACE_KEY)
    if tid:
        return str(tid)
    qp = st.query_params.get(QP_TRACE)
    if qp:
        st.session_state[TRACE_KEY] = str(qp)
        step = st.query_params.get(QP_STEP)
        if step is not None and str(step).isdigit():
            request_step(int(step))
        return str(qp)
    return None


def select_trace(trace_id: str | None, step: int | None = None) -> None:
    """Select a trace for every page (and the URL). `step` (default 0) is shown next in the viewer."""
    previous = st.session_state.get(TRACE_KEY)
    st.session_state[TRACE_KEY] = trace_id
    if trace_id:
        st.query_params[QP_TRACE] = trace_id
        if step is not None or trace_id != previous:
            request_step(step or 0)
    else:
        st.query_params.pop(QP_TRACE, None)
        st.query_params.pop(QP_STEP, None)


# ----------------------------------------------------------------------------- step
def request_step(index: int) -> None:
    """Ask the viewer to show step `index` on its next render (safe to call from anywhere, including
    after the step slider was drawn in this run: the value is applied before the slider is drawn)."""
    st.session_state[PENDING_STEP_KEY] = int(index)


def take_pending_step() -> int | None:
    """The requested step, consumed (the viewer calls this before drawing its slider)."""
    return st.session_state.pop(PENDING_STEP_KEY, None)


def current_step(default: int = 0) -> int:
    pending = st.session_state.get(PENDING_STEP_KEY)
    if pending is not None:
        return int(pending)
    return int(st.session_state.get(STEP_KEY, default) or 0)


def sync_url(trace_id: str | None, step: int | None) -> None:
    """Keep `?trace=&step=` equal to what is on screen (only writes when something changed)."""
    qp = st.query_params
    if trace_id and qp.get(QP_TRACE) != trace_id:
        qp[QP_TRACE] = trace_id
    if step is not None and qp.get(QP_STEP) != str(step):
        qp[QP_STEP] = str(step)


def open_in_viewer(trace_id: str, step: int = 0) -> None:
    """Select the trace and switch to the viewer page (does not return)."""
    select_trace(trace_id, step)
    st.switch_page(VIEWER_PAGE, query_params={QP_TRACE: trace_id, QP_STEP: str(step)})


# ----------------------------------------------------------------------------- navigation
def ensure_app_navigation() -> None:
    """Call first in every page's `render()`: makes sure the page runs inside streamlit_app.py.

    Streamlit treats a `pages/` folder next to the main script as its legacy multipage layout until a
    script calls `st.navigation`. On the first run after the server starts (and on every AppTest run,
    which resets that flag) a page URL such as /run therefore executes pages/run.py *alone*, without
    streamlit_app.py: no navigation list, no page config, no first-start seed. When that happens this
    switches Streamlit to `st.navigation` mode, runs streamlit_app.py in place (it opens the same page:
    URL paths equal the file names, so widget ids match later runs) and stops the outer run.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # pragma: no cover - a future Streamlit without the legacy mode
        return
    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False
    ctx = get_script_run_ctx()
    if ctx is None:
        return
    import runpy

    runpy.run_path(str(ctx.pages_manager.main_script_path), run_name="__main__")
    st.stop()
