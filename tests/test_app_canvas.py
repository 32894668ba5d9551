"""The trace canvas: display quantisation, windows, the feed's once-per-trace static part, colour tables, the
selection read back from the browser, the committed frontend bundle (fresh vs its sources) and the bundle's
region text against v1core.geometry (run in Node when it is installed)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from app import canvas_data as cd
from v1core.geometry import PatchGrid
from v1core.synthetic import big_trace

FRONTEND = Path(__file__).resolve().parent.parent / "app" / "frontend"


def test_quantisation_keeps_every_patch_above_the_floor_within_the_log_step():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(400, 0.3), size=6).astype(np.float32)
    p[1] = 0.0  # an all-zero step
    q, pmax = cd.quantise_pointers(p)
    assert q.dtype == np.uint8 and q.shape == (6, 400) and pmax[1] == 0 and not q[1].any()
    back = cd.dequantise_pointers(q, pmax)
    above = p > pmax[:, None] * 10.0 ** -cd.LOG_DECADES
    ratio = back[above] / p[above]
    bound = 10.0 ** (cd.LOG_DECADES / 508) * (1 + 1e-5)
    assert ratio.max() <= bound and ratio.min() >= 1 / bound
    assert (q[~above] == 0).all() and (q[above] >= 1).all()
    assert (np.argmax(back, axis=1) == np.argmax(p, axis=1))[[0, 2, 3, 4, 5]].all()
    with pytest.raises(ValueError, match="n_steps"):
        cd.quantise_pointers(np.zeros(5))


def test_windows_cover_the_trace_once_and_fit_the_budget():
    assert cd.steps_per_window(16384) == 64 and cd.steps_per_window(144) == 7281 and cd.steps_per_window(10**7) == 8
    t = big_trace(8, 8, 50, seed=1)
    size = 16
    got = [cd.window_payload(t, k, size) for k in range(5)]
    assert got[4] is None and cd.window_payload(t, -1, size) is None
    spans = [(w["start"], w["stop"]) for w in got[:4]]
    assert spans == [(0, 16), (16, 32), (32, 48), (48, 50)]
    q = np.frombuffer(base64.b64decode(got[3]["q"]), dtype=np.uint8).reshape(2, 64)
    expect, _ = cd.quantise_pointers(np.stack([t.steps[48].pointer, t.steps[49].pointer]))
    assert (q == expect).all()
    assert cd.window_of(47, 16) == 2


def test_feed_sends_the_static_part_once_and_windows_on_request():
    t = big_trace(64, 64, 1000, seed=2)  # 4,096 patches: 256-step windows
    f = cd.CanvasFeed()
    f.move_to(300)
    view = cd.view_payload()
    first = f.data(t, t.revisits, "data:image/jpeg;base64,AAAA", view)
    assert first["static"]["window"] == 256 and first["static"]["image"] == "data:image/jpeg;base64,AAAA"
    assert [w["k"] for w in first["windows"]] == [1, 2]  # the window of step 300 and the next
    assert first["view"]["goto"] == 300 and first["view"]["nonce"] == 1
    again = f.data(t, t.revisits, "data:image/jpeg;base64,AAAA", view)
    assert again["static"] is None and again["windows"] == []
    f.request({"trace_id": t.trace_id, "windows": [3, 3, True, "0", -1, 0]})
    f.request({"trace_id": "another trace", "windows": [0]})  # a stale request is ignored
    asked = f.data(t, t.revisits, None, view)
    assert [w["k"] for w in asked["windows"]] == [3, 0] and asked["static"] is None
    f.reported(512)
    moved = f.data(t, t.revisits, None, view)
    assert moved["view"]["goto"] == 512 and moved["view"]["nonce"] == 1  # a report is not a server move
    f.request({"trace_id": t.trace_id, "windows": [], "base": True})  # the browser lost it
    assert f.data(t, t.revisits, None, view)["static"] is not None
    size = len(json.dumps(asked["windows"][1]))  # window 0: 256 full steps
    assert 4096 * 256 * 4 / 3 <= size <= 4096 * 256 * 4 / 3 + 8000  # base64 of one byte per patch and step


def test_revisit_boxes_one_per_group_labelled_as_the_viewer_draws_them():
    t = big_trace(10, 10, 40, seed=3, revisit_every=12)
    rv = t.revisits[0]
    rv.patches = [0, 1, 99]  # two groups: top-left pair, bottom-right cell
    (out, *_) = cd.revisit_boxes(t, [rv])
    assert [b["label"] for b in out["boxes"]] == ["R1·1", "R1·2"]
    assert out["boxes"][0]["box"] == [0.0, 0.0, 0.2, 0.1] and out["boxes"][1]["box"] == [0.9, 0.9, 1.0, 1.0]
    rv.patches = [5]
    assert [b["label"] for b in cd.revisit_boxes(t, [rv])[0]["boxes"]] == ["R1"]


def test_colour_lut_is_transparent_at_zero_and_follows_the_scale():
    for log in (False, True):
        lut = np.frombuffer(base64.b64decode(cd.colour_lut("Inferno", log=log)), dtype=np.uint8).reshape(256, 4)
        assert lut[0, 3] == 0 and lut[255, 3] == 255
        assert (np.diff(lut[:, 3].astype(int)) >= 0).all()
    lin = np.frombuffer(base64.b64decode(cd.colour_lut("Viridis", log=False)), dtype=np.uint8).reshape(256, 4)
    lg = np.frombuffer(base64.b64decode(cd.colour_lut("Viridis", log=True)), dtype=np.uint8).reshape(256, 4)
    assert lin[128, 3] < lg[128, 3]  # half-way in decades is a small linear value: fainter on the linear display
    with pytest.raises(ValueError, match="colour scale"):
        cd.colour_lut("NoSuchScale", log=False)
    with pytest.raises(ValueError, match="regions"):
        cd.view_payload(regions="some")


def test_selection_from_the_browser_is_validated_and_described_by_geometry():
    t = big_trace(8, 12, 20, seed=4)
    grid = PatchGrid.from_resized(t.image_size, t.resized_size)
    sel = cd.selection_of(t, [13, 14, "7", True, 2.5, -1, 96, 14.0, None])
    assert sel.patches == (13, 14)
    assert sel.box_text == grid.region_text(grid.patches_to_box([13, 14]))
    assert cd.selection_of(t, []).box_text == "" and cd.selection_of(t, None).box is None


# ----------------------------------------------------------------------------- the frontend bundle
def _sources_hash() -> str:
    """The hash build.mjs records: sha256 over path, NUL, content, NUL of each hashed file, sorted by path."""
    files = ["build.mjs", "package.json", "package-lock.json", "tsconfig.json"]
    files += [f"src/{p.name}" for p in (FRONTEND / "src").glob("*.ts")]
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0")
        h.update((FRONTEND / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def test_committed_bundle_is_built_from_the_current_sources():
    bundle = FRONTEND / "dist" / "trace_canvas.js"
    assert bundle.is_file(), "app/frontend/dist/trace_canvas.js is missing: run `make frontend`"
    recorded = (FRONTEND / "dist" / "SOURCES.sha256").read_text().strip()
    assert recorded == _sources_hash(), "the canvas bundle is stale: run `make frontend` and commit app/frontend/dist"
    assert "export{" in bundle.read_text().replace(" ", "")  # an ES module with the renderer as default export


@pytest.mark.skipif(shutil.which("node") is None,
                    reason="node is not installed (`make test` installs Debian nodejs; the test needs Node ≥ 18)")
def test_bundle_region_text_matches_v1core_geometry():
    cases = []
    rng = np.random.default_rng(7)
    for rows, cols, w, h in [(8, 8, 224, 224), (37, 37, 4000, 3000), (128, 128, 3584, 3584), (5, 40, 1782, 225),
                             (12, 9, 333, 449), (64, 64, 1000, 1000)]:
        for _ in range(12):
            ids = sorted({int(k) for k in rng.integers(0, rows * cols, size=int(rng.integers(1, 6)))})
            cases.append({"rows": rows, "cols": cols, "w": w, "h": h, "ids": ids})
        cases.append({"rows": rows, "cols": cols, "w": w, "h": h, "ids": [0, rows * cols - 1]})
    script = (
        "import { regionText, cellOfPoint } from './dist/trace_canvas.js';"
        "const cases = JSON.parse(process.argv[1]);"
        "const g = c => ({rows: c.rows, cols: c.cols, imageW: c.w, imageH: c.h});"
        "const one = c => [regionText(c.ids, g(c)), cellOfPoint(c.w * 0.37, c.h * 0.81, g(c))];"
        "console.log(JSON.stringify(cases.map(one)));"
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script, json.dumps(cases)], cwd=FRONTEND,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    got = json.loads(out)
    for case, (text, cell) in zip(cases, got):
        grid = PatchGrid((case["w"], case["h"]), (case["cols"] * 28, case["rows"] * 28))
        assert text == grid.region_text(grid.patches_to_box(case["ids"])), case
        assert cell == grid.cell_of_point(case["w"] * 0.37, case["h"] * 0.81), case
