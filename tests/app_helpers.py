"""Helpers for the app tests: Streamlit's AppTest on a page, the environment of a `streamlit run` subprocess,
and the Playwright helpers the browser tests share."""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = ROOT / "v1core" / "demo" / "checkpoint"
APP = str(ROOT / "streamlit_app.py")
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "artifacts" / "screenshots"


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


# ----------------------------------------------------------------------------- browser (Playwright)
def wait_idle(pg, settle: float = 0.4) -> None:
    """Until Streamlit's "running" indicator is gone and stays gone for `settle` seconds."""
    running = "document.querySelector('[data-testid^=stStatusWidgetRunning]')"
    end = time.time() + 120
    while time.time() < end:
        pg.wait_for_function(f"() => !{running}", timeout=120_000)
        time.sleep(settle)
        if pg.evaluate(f"() => !{running}"):
            return
    raise TimeoutError("the app kept running")


def button(pg, key: str):
    """The visible button of a keyed st.button (a button with `help` is rendered twice, one copy hidden)."""
    return pg.locator(f".st-key-{key} button:visible").first


def shot(pg, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    pg.screenshot(path=str(path))
    return path
