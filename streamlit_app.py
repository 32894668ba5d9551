"""v1 Studio: `streamlit run streamlit_app.py` (or `make run` / `v1studio serve`).

Navigation is this list: adding a page is one line (a thin file in pages/ whose UI lives in app/).
Shared state and resources for pages: app/state.py, app/resources.py.
"""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `app`, `v1core`, `storage` without installing

from app import resources


# Page icons are emoji: the browser draws the active page's icon as the favicon, and Streamlit turns an emoji into
# an inline SVG but a `:material/…:` icon into a request to an outside font host (an offline tool makes none).
PAGES = [
    st.Page("pages/viewer.py", title="Viewer", icon="🔍", url_path="viewer", default=True),
    st.Page("pages/run.py", title="Run", icon="▶️", url_path="run"),
    st.Page("pages/compare.py", title="Compare", icon="🆚", url_path="compare"),
    st.Page("pages/annotate.py", title="Annotate", icon="✍️", url_path="annotate"),
    st.Page("pages/review.py", title="Review", icon="⚖️", url_path="review"),
    st.Page("pages/library.py", title="Library", icon="📚", url_path="library"),
    st.Page("pages/export.py", title="Export", icon="📦", url_path="export"),
]

st.set_page_config(page_title="v1 Studio", page_icon="🎯", layout="wide")
page = st.navigation(PAGES)
resources.ensure_seeded()
page.run()
