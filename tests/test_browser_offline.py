"""Real browser: every page of the app makes requests to the app's own host only (fonts, icons and the favicon
included), so v1 Studio works offline and tells no outside host who uses it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.app_helpers import CHROMIUM, wait_idle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent: install Debian's chromium (`make browser-deps`)"),
]

PAGES = ["viewer", "run", "compare", "annotate", "review", "library", "export"]


def test_every_page_requests_only_the_apps_own_host(server, page):
    pg = page
    own = urlparse(server["url"]).netloc
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    for name in PAGES:
        pg.goto(f"{server['url']}/{name}")
        pg.wait_for_selector("[data-testid=stSidebarNav]")
        wait_idle(pg)
        favicon = pg.evaluate("() => (document.querySelector(\"link[rel='shortcut icon']\") || {}).href || ''")
        assert not favicon.startswith("http") or urlparse(favicon).netloc == own, (name, favicon)
    outside = sorted({u for u in requests
                      if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).netloc != own})
    assert requests and not outside, outside
