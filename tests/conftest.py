"""Test-wide settings and every shared fixture (nothing may reach a model hub).

Fixtures: `db_url` / `store` (a fresh store on SQLite and on PostgreSQL: every test taking them runs on both
backends), `sqlite_store`; `checkpoint_dir`, `app_env`, `synthetic_trace` (the app tests); `browser_checkpoint`,
`server`, `browser`, `page` (the browser tests: a `streamlit run` subprocess and Debian chromium). Builders and
helpers they use live in `tests/builders.py`, `tests/postgres.py`, `tests/helpers.py`, `tests/app_helpers.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")

from tests.app_helpers import CHROMIUM, DEMO_CHECKPOINT, ROOT, env_for_subprocess
from tests.builders import build_synthetic_trace
from tests.helpers import free_port, make_fixture_checkpoint
from tests.postgres import new_pg_database


# ----------------------------------------------------------------------------- storage
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A fresh store URL for each backend (the whole storage suite runs on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return new_pg_database()


@pytest.fixture
def store(db_url):
    from storage import Store

    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    from storage import Store

    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


# ----------------------------------------------------------------------------- app
@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    """The embedded demo checkpoint when it exists, else the tiny random fixture checkpoint."""
    if (DEMO_CHECKPOINT / "config.json").is_file():
        return DEMO_CHECKPOINT
    return make_fixture_checkpoint(tmp_path_factory.mktemp("v1ckpt"))


@pytest.fixture()
def app_env(tmp_path, monkeypatch, checkpoint_dir):
    """Environment for one app instance (a fresh SQLite store in tmp_path, that checkpoint as V1STUDIO_MODEL,
    seeding off); returns the Store the app will use."""
    db = tmp_path / "v1studio.db"
    monkeypatch.setenv("V1STUDIO_MODEL", str(checkpoint_dir))
    monkeypatch.setenv("V1STUDIO_DB", f"sqlite:///{db}")
    monkeypatch.setenv("V1STUDIO_SEED_TRACES", "0")
    from storage import Store

    return Store(f"sqlite:///{db}")


@pytest.fixture()
def synthetic_trace(app_env):
    """`build_synthetic_trace` saved into the app's store: deterministic input for viewer tests."""
    return build_synthetic_trace(app_env)


# ----------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser_checkpoint(tmp_path_factory):
    """The random fixture model: it decodes until max_new_tokens, so Stop is clickable mid-run (the trained
    demo model answers in about a second, too fast to stop); the UI under test does not depend on the model."""
    return make_fixture_checkpoint(tmp_path_factory.mktemp("browser_ckpt"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser_checkpoint):
    from storage import Store

    tmp = tmp_path_factory.mktemp("browser")
    db_url = f"sqlite:///{tmp / 'v1studio.db'}"
    store = Store(db_url)
    synthetic = build_synthetic_trace(store)  # a trace with known revisits, whatever the model does
    port = free_port()
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env_for_subprocess(db_url, browser_checkpoint), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    import urllib.request

    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.close()
            raise RuntimeError("streamlit did not start:\n" + (tmp / "server.log").read_text()[-3000:])
        time.sleep(0.3)
    yield {"url": url, "store": store, "synthetic": synthetic, "log": tmp / "server.log"}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1500})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors
