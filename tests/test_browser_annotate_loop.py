"""Real browser, the annotation loop end to end: two annotators in two browser contexts on one server.

ana corrects a revisit by box-selecting patches on the grid and saves; bo, who loaded the trace before that
save, saves too and hits the conflict; bo takes ana's version, adds a note, saves; the Review page shows the
disagreement that remains; the v1g JSONL downloaded from the Export page carries the corrected region, whose
copy ids (`PatchGrid.bbox_to_patches` of the exported box) are exactly the selected patches.
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


def test_annotate_correct_conflict_resolve_review_export(server, browser, tmp_path):
    store, trace = server["store"], server["synthetic"]
    tid = trace.trace_id
    url = f"{server['url']}/annotate?trace={tid}"
    ctx_b, bo, errors_b = new_page(browser)
    ctx_a, ana, errors_a = new_page(browser)
    try:
        # bo opens the trace first (his form is based on "no annotation yet")
        sign_in(bo, url, "bo")
        # ana labels it: verdict, the first revisit looked at the wrong place → select the right patches
        sign_in(ana, url, "ana")
        pick(ana, "verdict", "incorrect")
        pick(ana, "rv_label_0", "wrong_region")
        wanted = box_select(ana, "rv_pick_0", trace, (4, 4), (5, 6))
        caption = " ".join(f"<|copy_{k}|>" for k in wanted)
        ana.wait_for_selector(f"text=corrected region {caption}")
        shot(ana, "10_annotate_corrected_region.png")
        button(ana, "save_annotation").click()
        ana.wait_for_selector("text=Saved version 1")
        wait_idle(ana)
        head = store.get_annotation(tid)
        assert head.version == 1 and head.annotation.annotator == "ana"
        assert head.annotation.label_for(0).corrected_patches == wanted

        # bo saves on top of a version he never saw → conflict, nothing lost
        pick(bo, "verdict", "unsure")
        note_and_save(bo, "bo: not sure about R1")
        bo.wait_for_selector("text=Someone else (ana) saved version 1")
        wait_idle(bo)
        shot(bo, "11_annotate_conflict.png")
        hist = store.annotation_history(tid)
        assert [(r.version, r.annotation.annotator, r.conflict) for r in hist] == [(1, "ana", False), (2, "bo", True)]
        assert store.get_annotation(tid).version == 1

        # meanwhile the review page (reached through the app's navigation: ana stays signed in) shows both
        nav(ana, "Review")
        ana.wait_for_selector(".st-key-rev_adopt_ana button")
        wait_idle(ana)
        body = ana.inner_text("body")
        assert "Disagreements (1)" in body and "verdict incorrect" in body and "verdict unsure" in body
        assert "bo: not sure about R1" in body
        assert ana.locator(".st-key-rev_adopt_ana button").is_disabled()  # ana is not a reviewer
        shot(ana, "12_review_disagreement.png")

        # bo resolves: take ana's version (her region), add his note, save on top of it
        button(bo, "take_theirs").click()
        bo.wait_for_selector("text=Loaded version 1")
        wait_idle(bo)
        assert bo.locator(".st-key-verdict input[type=radio]:checked").count() == 1
        bo.wait_for_selector(f"text=corrected region {caption}")
        note_and_save(bo, "bo: agree with ana's region")
        bo.wait_for_selector("text=Saved version 3")
        wait_idle(bo)
        head = store.get_annotation(tid)
        assert (head.version, head.annotation.annotator, head.annotation.verdict) == (3, "bo", "incorrect")
        assert head.annotation.label_for(0).corrected_patches == wanted
        assert head.annotation.note == "bo: agree with ana's region"

        # now they agree on the verdict and the region
        nav(ana, "Annotate")
        nav(ana, "Review")
        ana.wait_for_selector("text=No trace has disagreeing annotators")
        assert ana.locator(".st-key-annotator input").input_value() == "ana"
        shot(ana, "13_review_agreed.png")

        # export v1g JSONL from the browser and check the corrected copy ids
        nav(ana, "Export")
        ana.wait_for_selector(".st-key-export_v1g button")
        wait_idle(ana)
        shot(ana, "14_export.png")
        with ana.expect_download() as dl:
            button(ana, "export_v1g").click()
        path = tmp_path / "export.jsonl"
        dl.value.save_as(path)
    finally:
        ctx_a.close()
        ctx_b.close()
    assert not errors_a and not errors_b, errors_a + errors_b

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    (row,) = [r for r in rows if r["id"] == tid]
    assert row["annotator"] == "bo" and row["annotation_version"] == 3 and row["verdict"] == "incorrect"
    from v1core.demo.targets import expand_v1g_row
    from v1core.demo.finetune import read_v1g_rows
    from v1core.geometry import PatchGrid

    grid = PatchGrid.from_resized(tuple(trace.image_size), tuple(trace.resized_size))
    (training_row,) = [r for r in read_v1g_rows(path) if r["id"] == tid]  # what train-demo --from-export reads
    text = expand_v1g_row(training_row, grid)
    assert caption.replace(" ", "") in text
    assert "<|copy_99|>" not in text  # the model's own (wrong) region is gone
    assert grid.bbox_to_patches(row["region"]["<obj0>"]) == wanted
