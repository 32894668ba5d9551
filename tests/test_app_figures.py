"""app/figures.py and app/safe_text.py: pure figure builders and text escaping."""

from __future__ import annotations

import json
import time

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from PIL import Image

from app import figures
from app.safe_text import md_code, md_escape, plotly_escape, token_display, token_markdown


@pytest.fixture(scope="module")
def uri() -> str:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    return figures.encode_image(img)


def test_encode_image_is_a_small_jpeg_data_uri():
    big = Image.new("RGB", (3000, 1500), (200, 30, 30))
    uri = figures.encode_image(big, max_side=512)
    assert uri.startswith("data:image/jpeg;base64,")
    import base64
    import io

    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (512, 256)


def test_pointer_figure_layers_and_geometry(uri):
    rows, cols = 6, 8
    p = np.zeros((rows, cols), np.float32)
    p[2, 3] = 0.7
    p[0, 0] = 0.3
    fig = figures.pointer_figure(p, (400, 300), image_uri=uri, copied_patch=2 * cols + 3, title="step <b>1</b>",
                                 meta={"step": 1})
    assert isinstance(fig, go.Figure)
    heat = fig.data[0]
    assert heat.type == "heatmap"
    np.testing.assert_allclose(np.asarray(heat.z), p)
    # cells tile the image exactly: 400/8 = 50 px wide, 300/6 = 50 px high, centred
    assert heat.dx == pytest.approx(50) and heat.dy == pytest.approx(50) and heat.x0 == pytest.approx(25)
    # the photo is a layout image under the heatmap, in the same pixel coordinates
    (image,) = fig.layout.images
    assert image.source == uri and image.layer == "below" and image.sizex == 400 and image.sizey == 300
    assert list(fig.layout.yaxis.range) == [300, 0]  # y down, like the image
    # the copied patch and the argmax are outlined; the copy box is the cell's original-pixel box
    boxes = [(s.x0, s.y0, s.x1, s.y1) for s in fig.layout.shapes]
    assert (150, 100, 200, 150) in boxes
    assert fig.layout.meta == {"step": 1}
    assert "&lt;b&gt;" in fig.layout.title.text  # title text is escaped for plotly's HTML subset
    # transparent at zero so the photo shows through
    assert heat.colorscale[0][1].endswith(",0.000)")


def test_log_scale_and_colour_scales(uri):
    p = np.full((4, 4), 1e-6, np.float32)
    p[1, 1] = 0.5
    fig = figures.pointer_figure(p, (100, 100), image_uri=uri, style=figures.HeatmapStyle(log=True, log_decades=3))
    z = np.asarray(fig.data[0].z)
    assert z.max() == pytest.approx(np.log10(0.5))
    assert z.min() == pytest.approx(np.log10(0.5) - 3)  # floored at 3 decades below the max
    assert fig.data[0].zmin == pytest.approx(np.log10(0.5) - 3)
    for name in figures.COLOURSCALES:
        assert len(figures.alpha_colorscale(name)) >= 2
    with pytest.raises(ValueError, match="unknown colour scale"):
        figures.alpha_colorscale("NoSuchScale")


def test_region_boxes_are_separate_numbered_shapes(uri):
    p = np.ones((4, 4), np.float32) / 16
    boxes = [(0, 0, 50, 25), (75, 75, 100, 100)]
    fig = figures.pointer_figure(p, (100, 100), image_uri=uri, region_boxes=boxes,
                                 style=figures.HeatmapStyle(show_argmax=False))
    shapes = list(fig.layout.shapes)
    assert [(s.x0, s.y0, s.x1, s.y1) for s in shapes] == boxes
    assert [s.label.text for s in shapes] == ["R1", "R2"]


def test_canvas_reuses_static_parts_and_changes_only_z(uri):
    canvas = figures.HeatmapCanvas((400, 300), (6, 8), uri)
    rng = np.random.default_rng(0)
    f1 = canvas.figure(rng.random((6, 8)))
    f2 = canvas.figure(rng.random((6, 8)))
    assert f1.layout.images[0].source is not None
    assert f1.layout.images == f2.layout.images
    assert not np.allclose(np.asarray(f1.data[0].z), np.asarray(f2.data[0].z))
    with pytest.raises(ValueError):
        canvas.cell_box(48)


def test_step_figure_from_trace(uri):
    from v1core.trace import Step, Trace

    p = np.ones((2, 2), np.float32) / 4
    trace = Trace(model_id="m", image_sha256="x", image_size=(56, 56), resized_size=(56, 56), grid=(2, 2),
                  question="q", steps=[Step(0, 5, "<i>hi</i>", False, None, 0.1, 1.3, pointer=p),
                                       Step(1, 99, "", True, 3, 0.9, 0.2, pointer=p)])
    f0 = figures.step_figure(trace, 0, uri)
    assert "&lt;i&gt;" in f0.layout.title.text and f0.layout.meta["step"] == 0
    f1 = figures.step_figure(trace, 1, uri)
    assert any((s.x0, s.y0) == (28, 28) for s in f1.layout.shapes)  # patch 3 = row 1, col 1
    with pytest.raises(IndexError):
        figures.step_figure(trace, 2, uri)


def test_difference_and_picker_and_timeline(uri):
    d = np.zeros((3, 3), np.float32)
    d[0, 0], d[2, 2] = 0.4, -0.2
    fig = figures.difference_figure(d, (90, 90), uri)
    assert fig.data[0].zmin == pytest.approx(-0.4) and fig.data[0].zmax == pytest.approx(0.4)
    pick = figures.patch_picker_figure((90, 90), (3, 3), uri, selected=[4])
    scatter = pick.data[1]
    assert list(scatter.customdata) == list(range(9))
    assert scatter.x[4] == pytest.approx(45) and scatter.y[4] == pytest.approx(45)
    assert np.nansum(np.asarray(pick.data[0].z, dtype=float)) == 1
    tl = figures.timeline_figure([0.1, 0.9, 0.8, 0.2], [2.0, 0.5, 0.4, 1.9], is_copy=[False, True, True, False],
                                 revisits=[(1, 3)], current=2)
    names = [t.name for t in tl.data]
    assert names[:2] == ["p_copy", "entropy (nats)"] and "copy" in names
    assert any(s.type == "line" and s.x0 == 2 for s in tl.layout.shapes)
    assert any(s.type == "rect" and s.x0 == 0.5 and s.x1 == 2.5 for s in tl.layout.shapes)
    # NaN entropies (imported traces) do not break the axis
    figures.timeline_figure([float("nan")], [float("nan")])


def test_figures_serialise_like_streamlit_does(uri):
    import plotly.tools

    fig = figures.pointer_figure(np.ones((40, 50), np.float32) / 2000, (1400, 1120), image_uri=uri)
    spec = pio.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True), validate=False)
    assert json.loads(spec)["data"][0]["type"] == "heatmap"


def test_step_figure_build_time_on_2000_patch_grid(uri):
    """The bench target (≤ 50 ms) with a wide margin for a loaded CI machine."""
    canvas = figures.HeatmapCanvas((1400, 1120), (40, 50), uri)
    ps = np.random.default_rng(0).dirichlet(np.full(2000, 0.1), size=10).astype(np.float32).reshape(10, 40, 50)
    canvas.figure(ps[0])
    t = time.perf_counter()
    for p in ps:
        canvas.figure(p, copied_patch=7, region_boxes=[(0, 0, 10, 10)], title="x", meta={"step": 0})
    assert (time.perf_counter() - t) / len(ps) < 0.2


# ----------------------------------------------------------------------------- safe text
def test_md_escape_neutralises_markdown():
    evil = "**b** [l](http://x) ![i](http://x/i.png) :red[r] $x$ <b>h</b> `c` # h"
    out = md_escape(evil)
    for ch in "*[]()!:$<>`#":
        assert f"\\{ch}" in out
    # every punctuation char is escaped, so no unescaped special char remains
    stripped = out.replace("\\\\", "")
    for i, ch in enumerate(stripped):
        if ch in "*[]()!:$<>`#_~|":
            assert stripped[i - 1] == "\\", (ch, stripped)
    assert md_escape("a\nb") == "a  \nb"
    assert md_escape(None) == ""


def test_token_helpers():
    assert token_display("\n") == "↵"
    assert token_display("") == "∅"
    assert token_display("  ") == "␣␣"
    assert token_markdown("<b>x</b>") == md_escape("<b>x</b>")
    chip = token_markdown(None, is_copy=True, patch=37)
    assert "37" in chip and chip.startswith(":blue-background[")
    assert plotly_escape("<a href='x'>") == "&lt;a href=&#x27;x&#x27;&gt;"
    assert md_code("a`b") == "`aˋb`"


def test_md_escape_breaks_autolinks():
    out = md_escape("see https://example.invalid/x.png, www.example.invalid or me@example.invalid")
    assert "https://" not in out.replace("\\", "") and "://" not in out.replace("\\", "")
    assert "www." not in out.replace("\\", "")
    assert "@example" not in out.replace("\\", "")
    expected = "see https://example.invalid/x.png, www.example.invalid or me@example.invalid"
    assert out.replace("\\", "").replace("\u200b", "") == expected
