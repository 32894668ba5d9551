"""Real browser, the annotation loop end to end: two annotators in two browser contexts on one server.

ana and bo label the same trace blind, verdicts and revisit labels with keys only (ana corrects a revisit's
region by box-selecting patches on the grid); each keeps their own head and neither sees the other's label;
a second tab of ana's hits a conflict on her own head and sees a diff table; kappa counts both; the reviewer
rita adopts ana's label as the consensus on the Review page; the v1g JSONL downloaded from the Export page
carries the consensus, whose copy ids (`PatchGrid.bbox_to_patches` of the exported box) are exactly the
selected patches.
"""

from __future__ import annotations

import json

import pytest

from tests.app_helpers import button, shot, wait_idle

pytestmark = [pytest.mark.browser]

CELL_JS = """([key, cells, w, h, rows, cols]) => {
  const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
  const fl = gd._fullLayout, r = gd.getBoundingClientRect();
  return cells.map(([row, col, dx, dy]) => [
    r.left + fl.xaxis._offset + fl.xaxis.l2p((col + 0.5 + dx) * w / cols),
    r.top + fl.yaxis._offset + fl.yaxis.l2p((row + 0.5 + dy) * h / rows)]);
}"""


def new_page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1600}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    return ctx, pg, errors


def sign_in(pg, url: str, name: str) -> None:
    pg.goto(url)
    pg.wait_for_selector(".st-key-annotator input")
    wait_idle(pg)
    box = pg.locator(".st-key-annotator input")
    box.fill(name)
    box.press("Enter")
    pg.wait_for_selector(".st-key-save_annotation button")
    wait_idle(pg)


def nav(pg, title: str) -> None:
    """Follow the sidebar navigation link (same session, unlike a page load)."""
    pg.locator("[data-testid=stSidebarNav] a", has_text=title).first.click()
    wait_idle(pg)


def pick(pg, key: str, option: str) -> None:
    pg.locator(f".st-key-{key}").get_by_text(option, exact=True).click()
    wait_idle(pg)


def note_and_save(pg, note: str) -> None:
    box = pg.locator(".st-key-note textarea")
    box.fill(note)
    box.press("Tab")
    wait_idle(pg)
    button(pg, "save_annotation").click()


def box_select(pg, key: str, trace, top_left: tuple[int, int], bottom_right: tuple[int, int]) -> list[int]:
    """Drag a selection box on the patch picker from one cell to another; returns the cells it covers."""
    pg.wait_for_selector(f".st-key-{key} .js-plotly-plot")
    pg.locator(f".st-key-{key}").scroll_into_view_if_needed()
    wait_idle(pg)
    rows, cols = trace.grid
    w, h = trace.image_size
    (r0, c0), (r1, c1) = top_left, bottom_right
    (x0, y0), (x1, y1) = pg.evaluate(CELL_JS, [key, [[r0, c0, -0.35, -0.35], [r1, c1, 0.35, 0.35]], w, h, rows, cols])
    pg.mouse.move(x0, y0)
    pg.mouse.down()
    for i in range(1, 9):
        pg.mouse.move(x0 + (x1 - x0) * i / 8, y0 + (y1 - y0) * i / 8)
    pg.mouse.up()
    wait_idle(pg, settle=0.8)
    return sorted(r * cols + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1))


def keys(pg, *presses: str) -> None:
    """Press keys on the page (nothing focused: the shortcuts act on the form), waiting for each rerun."""
    pg.evaluate("() => document.activeElement && document.activeElement.blur()")
    for k in presses:
        pg.keyboard.press(k)
        wait_idle(pg)


def checked(pg, key: str) -> str | None:
    """The label of the checked option of a keyed st.radio, or None."""
    loc = pg.locator(f".st-key-{key} label:has(input:checked)")
    return loc.first.inner_text().strip() if loc.count() else None


def test_two_annotators_blind_keys_only_consensus_export(server, browser, tmp_path):
    from storage.agreement import compute_agreement

    store, trace = server["store"], server["synthetic"]
    tid = trace.trace_id
    url = f"{server['url']}/annotate?trace={tid}"
    ctx_b, bo, errors_b = new_page(browser)
    ctx_a, ana, errors_a = new_page(browser)
    ctx_a2, ana2, errors_a2 = new_page(browser)
    ctx_r, rita, errors_r = new_page(browser)
    try:
        sign_in(ana2, url, "ana")  # ana's second tab, loaded before any label
        sign_in(ana, url, "ana")
        ana.wait_for_selector("text=Keyboard shortcuts")
        # ana: verdict incorrect (2), answer no (n), R1 wrong region (w) — keys only
        keys(ana, "2", "n", "w")
        assert (checked(ana, "verdict"), checked(ana, "answer_correct"), checked(ana, "rv_label_0")) == \
            ("incorrect", "no", "wrong_region")
        wanted = box_select(ana, "rv_pick_0", trace, (4, 4), (5, 6))  # the region: drawn on the image
        caption = " ".join(f"<|copy_{k}|>" for k in wanted)
        ana.wait_for_selector(f"text=corrected region {caption}")
        keys(ana, "]", "u")  # R2: unnecessary
        assert checked(ana, "rv_label_1") == "unnecessary"
        shot(ana, "10_annotate_keys.png")
        keys(ana, "Control+Enter")
        ana.wait_for_selector("text=Saved version 1")

        # bo opens the same trace: nothing of ana's is shown; he labels it differently, keys only
        sign_in(bo, url, "bo")
        assert checked(bo, "verdict") is None and checked(bo, "rv_label_0") == "—"
        assert "wrong_region" not in bo.inner_text(".st-key-rv_label_0 label:has(input:checked)")
        keys(bo, "1", "y", "c", "]", "c", "Control+Enter")
        bo.wait_for_selector("text=Saved version 2")  # ana's save is no conflict for bo
        assert not bo.locator("text=moved to version").count()
        heads = store.heads_by_trace([tid])[tid].annotators
        assert {n: (r.version, r.annotation.verdict) for n, r in heads.items()} == {
            "ana": (1, "incorrect"), "bo": (2, "correct")}
        assert heads["ana"].annotation.label_for(0).corrected_patches == wanted
        assert [lab.label for lab in heads["bo"].annotation.revisit_labels] == ["correct", "correct"]

        # ana's stale second tab: a conflict on her own head, shown as a diff table
        keys(ana2, "3", "Control+Enter")
        ana2.wait_for_selector("text=Your own label on this trace moved to version 1")
        wait_idle(ana2)
        diff = ana2.inner_text(".st-key-ann_conflict")
        assert "verdict" in diff and "unsure" in diff and "incorrect" in diff and "{" not in diff
        shot(ana2, "11_annotate_conflict_diff.png")
        assert store.heads_by_trace([tid])[tid].annotators["ana"].version == 1  # her head did not move
        button(ana2, "take_theirs").click()
        ana2.wait_for_selector("text=Loaded version 1")
        wait_idle(ana2)
        assert checked(ana2, "verdict") == "incorrect"

        # kappa counts both annotators' own heads
        pair = next(p for p in compute_agreement(store)["pairs"] if p["annotators"] == ("ana", "bo"))
        assert pair["traces"] >= 1 and pair["verdict_pairs"] >= 1

        # the reviewer adjudicates on the Review page: ana's label becomes the consensus
        store.add_annotator("rita", role="reviewer")
        sign_in(rita, f"{server['url']}/annotate?trace={tid}", "rita")
        nav(rita, "Review")
        rita.wait_for_selector(".st-key-rev_adopt_ana button")
        wait_idle(rita)
        body = rita.inner_text("body")
        assert "verdict incorrect" in body and "verdict correct" in body
        shot(rita, "12_review_disagreement.png")
        button(rita, "rev_adopt_ana").click()
        rita.wait_for_selector("text=adopted as the consensus")
        wait_idle(rita)
        head = store.export_heads([tid])[tid]
        assert (head.rule, head.record.annotator, head.record.adopted_from) == ("consensus", "rita", 1)
        assert sorted(store.heads_by_trace([tid])[tid].annotators) == ["ana", "bo"]

        # export v1g JSONL from the browser: it carries the consensus
        nav(rita, "Export")
        rita.wait_for_selector(".st-key-export_v1g button")
        wait_idle(rita)
        shot(rita, "14_export.png")
        with rita.expect_download() as dl:
            button(rita, "export_v1g").click()
        path = tmp_path / "export.jsonl"
        dl.value.save_as(path)
    finally:
        for c in (ctx_a, ctx_a2, ctx_b, ctx_r):
            c.close()
    assert not (errors_a or errors_a2 or errors_b or errors_r), errors_a + errors_a2 + errors_b + errors_r

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    (row,) = [r for r in rows if r["trace_id"] == tid]
    assert row["annotator"] == "rita" and row["annotation_version"] == 4 and row["verdict"] == "incorrect"
    from v1core.demo.targets import expand_v1g_row
    from v1core.demo.finetune import read_v1g_rows
    from v1core.geometry import PatchGrid

    grid = PatchGrid.from_resized(tuple(trace.image_size), tuple(trace.resized_size))
    (training_row,) = [r for r in read_v1g_rows(path) if r["trace_id"] == tid]  # what train-demo --from-export reads
    text = expand_v1g_row(training_row, grid)
    assert caption.replace(" ", "") in text
    assert "<|copy_99|>" not in text  # the model's own (wrong) region is gone
    assert grid.bbox_to_patches(json.loads(row["regions"])["<obj0>"]) == wanted
