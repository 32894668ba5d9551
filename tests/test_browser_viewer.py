"""Real browser: start `streamlit run`, drive Debian chromium with Playwright.

Runs a question live (and stops another run), plays the animation, jumps to a revisit, opens Compare,
measures the time from a step change to the updated heatmap on the trace canvas (target ≤ 50 ms: the step
changes in the browser, with no server round trip) and saves screenshots under
artifacts/screenshots/ (git-ignored) plus the latency numbers in artifacts/benchmarks/browser_step.json.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from tests.app_helpers import CHROMIUM, ROOT, button, shot, wait_idle

BENCH = ROOT / "artifacts" / "benchmarks"
STEP_TARGET_MS = 50.0

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent: install Debian's chromium (`apt-get install -y chromium`, "
                              "or `make browser-deps`) to run the browser tests"),
]


# the canvas marks the step whose heatmap it has drawn (data-heat; -1 while that step's pointers load)
HEATMAP_STEP_JS = """() => {
  const root = document.querySelector('.st-key-viewer_canvas .v1c-root');
  return root && root.dataset.heat !== undefined ? Number(root.dataset.heat) : null;
}"""


def heatmap_step(pg) -> int | None:
    return pg.evaluate(HEATMAP_STEP_JS)


def wait_heatmap_step(pg, step: int, timeout: float = 30_000) -> None:
    pg.wait_for_function(f"() => ({HEATMAP_STEP_JS})() === {int(step)}", timeout=timeout, polling="raf")


def control(pg, role: str):
    """A control of the viewer's trace canvas (prev, next, play, prev_revisit, next_revisit, slider)."""
    return pg.locator(f".st-key-viewer_canvas [data-role={role}]")


def open_settings(pg, max_new: int, sampling: bool) -> None:
    pg.get_by_text("Decoding settings").click()
    box = pg.locator(".st-key-max_new_tokens input")
    box.fill(str(max_new))
    box.press("Enter")
    wait_idle(pg)
    if sampling:
        pg.locator(".st-key-decoding").get_by_text("sampling").click()
        wait_idle(pg)


# ----------------------------------------------------------------------------- the test
def test_run_play_revisit_compare_and_latency(server, page):
    pg, store = page, server["store"]

    # 1. run a question live
    pg.goto(f"{server['url']}/run")
    pg.wait_for_selector(".st-key-run button")
    wait_idle(pg)
    shot(pg, "01_run_page.png")
    question = pg.locator(".st-key-question textarea")
    question.fill("Is the <b>star</b> small or large? ![x](http://example.invalid/x.png)")
    question.press("Tab")
    wait_idle(pg)
    open_settings(pg, max_new=64, sampling=True)
    before = {r.trace_id for r in store.list_traces(limit=100)}
    button(pg, "run").click()
    pg.wait_for_selector("text=tokens/s", timeout=60_000)
    shot(pg, "02_run_live.png")
    pg.wait_for_url(lambda u: "trace=" in u and "/run" not in u, timeout=180_000)
    new = [r for r in store.list_traces(limit=100) if r.trace_id not in before]
    assert len(new) == 1 and new[0].status == "complete"
    run_trace = store.get_trace(new[0].trace_id)
    wait_heatmap_step(pg, 0)
    wait_idle(pg)
    body = pg.inner_text("body")
    assert "Is the <b>star</b> small or large?" in body  # shown as text, not as HTML
    assert pg.locator("b:text('star')").count() == 0
    shot(pg, "03_viewer_after_run.png")

    # 2. step-change latency: click "next step", time until the canvas has drawn the new step
    latencies = []
    for _ in range(8):
        current = heatmap_step(pg)
        if current >= len(run_trace.steps) - 1:
            break
        t0 = time.perf_counter()
        control(pg, "next").click()
        wait_heatmap_step(pg, current + 1)
        latencies.append((time.perf_counter() - t0) * 1e3)
        wait_idle(pg, settle=0.2)
    # and by clicking a token in the (virtualised) token strip
    for _ in range(4):
        current = heatmap_step(pg)
        if current + 2 > len(run_trace.steps) - 1:
            break
        t0 = time.perf_counter()
        pg.locator(f".st-key-viewer_canvas .v1c-chip[data-i='{current + 2}']").click()
        wait_heatmap_step(pg, current + 2)
        latencies.append((time.perf_counter() - t0) * 1e3)
        wait_idle(pg, settle=0.2)
    assert latencies
    median = statistics.median(latencies)
    result = {"target_ms": STEP_TARGET_MS, "median_ms": round(median, 1), "max_ms": round(max(latencies), 1),
              "samples_ms": [round(x, 1) for x in latencies], "ratio": round(median / STEP_TARGET_MS, 3)}
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "browser_step.json").write_text(json.dumps(result, indent=2))
    print(f"\nbrowser step change → heatmap updated: median {median:.0f} ms, max {max(latencies):.0f} ms over "
          f"{len(latencies)} changes; target {STEP_TARGET_MS:.0f} ms, ratio {median / STEP_TARGET_MS:.2f}")
    assert median < 500  # a hard ceiling (the old server-rendered viewer's target); the target is reported

    # 3. play the animation
    start = heatmap_step(pg)
    control(pg, "play").click()
    time.sleep(1.0)
    shot(pg, "04_viewer_playing.png")
    playing_at = heatmap_step(pg)
    if playing_at < len(run_trace.steps) - 1:
        control(pg, "play").click()
    wait_idle(pg)
    assert playing_at >= start + 2 or playing_at == len(run_trace.steps) - 1, (start, playing_at)

    # 4. jump to a revisit (on the run's trace if it has one, else on the synthetic trace)
    target = run_trace if run_trace.revisits else server["synthetic"]
    if target is not run_trace:
        pg.goto(f"{server['url']}/?trace={target.trace_id}&step=0")  # the default page lives at /
        wait_heatmap_step(pg, 0)
    else:
        pg.locator(".st-key-viewer_canvas .v1c-chip[data-i='0']").click()
        wait_heatmap_step(pg, 0)
    wait_idle(pg)
    assert pg.locator("text=Page not found").count() == 0
    first = next(rv.start_step for rv in target.revisits if rv.start_step > 0) if any(
        rv.start_step > 0 for rv in target.revisits) else target.revisits[0].start_step
    control(pg, "next_revisit").click()
    wait_heatmap_step(pg, first)
    assert pg.locator(".st-key-viewer_canvas .v1c-rvcap").inner_text().startswith("Inside revisit R")
    pg.wait_for_url(lambda u: f"step={first}" in u, timeout=10_000)
    wait_idle(pg)
    shot(pg, "05_viewer_revisit.png")

    # 5. compare two steps of this trace
    pg.goto(f"{server['url']}/compare?trace={target.trace_id}")
    pg.wait_for_selector(".st-key-cmp_diff .js-plotly-plot")
    wait_idle(pg)
    assert "JS divergence" in pg.inner_text("body")
    shot(pg, "06_compare.png")


def test_stop_keeps_a_cancelled_trace(server, page):
    pg, store = page, server["store"]
    pg.goto(f"{server['url']}/run")
    pg.wait_for_selector(".st-key-run button")
    wait_idle(pg)
    open_settings(pg, max_new=4000, sampling=False)
    before = {r.trace_id for r in store.list_traces(limit=100)}
    button(pg, "run").click()
    pg.wait_for_selector("text=tokens/s", timeout=60_000)
    time.sleep(1.0)
    button(pg, "stop").click()
    pg.wait_for_selector("text=cancelled", timeout=60_000)
    wait_idle(pg)
    shot(pg, "07_run_stopped.png")
    new = [r for r in store.list_traces(limit=100) if r.trace_id not in before]
    assert len(new) == 1 and new[0].status == "cancelled" and 0 < new[0].n_steps < 4000
    assert "/run" in pg.url
