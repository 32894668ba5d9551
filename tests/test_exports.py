"""Training exports read by their real consumers: the published v1g layout (`datasets`), TRL preference rows,
Label Studio tasks (label-studio-sdk's converter), with the shared v1g-collate fixture as the golden reference.

Every fixture row imports, gets a corrected region through the Store annotation API, and re-exports to exactly
the official text and copy ids (`tests/fixtures/v1g-collate/expected.json`, made by the official training code).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage import Annotation, RevisitLabel, Store
from storage.export import TRAINING_DEFAULT, export_hf, export_v1g
from storage.importer import import_path
from v1core import v1g
from v1core.copy_tokens import copy_token

FIXTURE = Path(__file__).parent / "fixtures" / "v1g-collate"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
ROWS = pq.read_table(FIXTURE / "rows.parquet").to_pylist()
BY_ID = {e["id"]: e for e in EXPECTED["rows"]}


def _markup(obj: dict) -> str:
    return "<region>" + obj["box_text"] + "".join(copy_token(k) for k in obj["copy_ids"]) + "</region>"


@pytest.fixture
def imported(store, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pq.read_table(FIXTURE / "rows.parquet"), src / "rows.parquet")
    rep = import_path(store, src)
    assert rep.ok and rep.imported == len(ROWS) == 12, rep.errors
    return {store.get_trace(t).meta["v1g_id"]: t for t in rep.trace_ids}


def _hf_rows(out: Path, cache: Path) -> dict[str, dict]:
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train", cache_dir=str(cache))
    assert ds.column_names == ["id", "image", "conversations", "regions", "image_size", "num_tokens"]
    assert isinstance(ds.features["image"], datasets.Image)
    return {r["id"]: r for r in ds}


def test_published_rows_round_trip_unchanged(store, imported, tmp_path):
    """Imported published rows judged correct re-export with id, regions string (ints stay ints) and text as
    published, and the official expansion of each gives the reference's assistant text."""
    for tid in imported.values():
        store.save_annotation(tid, Annotation(annotator="ana", verdict="correct"))
    out = tmp_path / "hf"
    rep = export_hf(store, out)
    assert rep.rows == 12 and not rep.skipped and "judged correct" in rep.selection
    got = _hf_rows(out, tmp_path / "cache")
    for src in ROWS:
        row = got[src["id"]]
        assert row["conversations"] == src["conversations"]
        assert row["regions"] == src["regions"]  # the source string, byte for byte
        assert row["image_size"] == src["image_size"] and row["num_tokens"] == src["num_tokens"]
        assert row["image"].size == tuple(src["image_size"])
        exp = BY_ID[src["id"]]
        _, assistant = v1g.parse_row(row).expanded()
        assert assistant == exp["assistant_text"]
    # the raw parquet cells equal the published ones (image bytes included)
    table = pq.read_table(out).to_pylist()
    by_id = {r["id"]: r for r in table}
    for src in ROWS:
        assert by_id[src["id"]]["image"]["bytes"] == src["image"]["bytes"]


@pytest.mark.parametrize("form", ["box", "cells"])
def test_corrected_region_re_exports_to_the_official_text_and_copy_ids(store, imported, tmp_path, form):
    """For every row: the first object's revisit is corrected (through save_annotation) to the second object's
    region, as a box in original pixels or as cells of the trace's (training) grid. The export's official
    expansion must equal the reference assistant text with every occurrence of obj1's region replaced by
    obj2's, box text and copy ids exactly as the official code made them for obj2."""
    for src in ROWS:
        exp = BY_ID[src["id"]]
        tid = imported[src["id"]]
        keys = list(exp["objects"])
        second = exp["objects"][keys[1]]
        revs = store.get_revisits(tid)
        ri = next(r.index for r in revs if r.object_name == keys[0][1:-1])
        label = (RevisitLabel(ri, "wrong_region", corrected_box=tuple(second["box_original"])) if form == "box" else
                 RevisitLabel(ri, "wrong_region", corrected_patches=list(second["copy_ids"])))
        store.save_annotation(tid, Annotation(annotator="ana", verdict="incorrect", revisit_labels=[label]))
    out = tmp_path / "hf"
    rep = export_hf(store, out)  # the default takes corrected traces even when judged incorrect
    assert rep.rows == 12 and not rep.skipped, rep.skipped
    got = _hf_rows(out, tmp_path / "cache")
    for src in ROWS:
        exp = BY_ID[src["id"]]
        keys = list(exp["objects"])
        row = got[src["id"]]
        assert row["conversations"][0] == src["conversations"][0]
        gpt = row["conversations"][1]["value"]
        assert gpt == src["conversations"][1]["value"]  # keys unchanged, every occurrence still the key
        regions = json.loads(row["regions"])
        assert list(regions) == keys
        _, assistant = v1g.parse_row(row).expanded()
        geometry = v1g.parse_row(row).training_geometry()
        target = dict(exp["objects"][keys[1]])
        if form == "cells":  # the cells' rectangle: obj2's copy ids exactly, the box text of that rectangle
            target["box_text"] = geometry.box_text(regions[keys[0]])
        else:
            assert regions[keys[0]] == exp["objects"][keys[1]]["box_original"]
        want = exp["assistant_text"].replace(_markup(exp["objects"][keys[0]]), _markup(target))
        assert want != exp["assistant_text"]
        assert assistant == want, src["id"]
        assert geometry.copy_ids(regions[keys[0]]) == exp["objects"][keys[1]]["copy_ids"]


def test_v1g_jsonl_has_the_published_columns_and_loads_with_datasets(store, imported, tmp_path):
    import datasets

    for tid in imported.values():
        store.save_annotation(tid, Annotation(annotator="ana", verdict="correct"))
    out = tmp_path / "j" / "train.jsonl"
    rep = export_v1g(store, out)
    assert rep.rows == 12 and rep.images_written == 12
    ds = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.column_names[:6] == ["id", "image", "conversations", "regions", "image_size", "num_tokens"]
    for r in ds:
        src = next(s for s in ROWS if s["id"] == r["id"])
        assert r["conversations"] == src["conversations"] and r["regions"] == src["regions"]
        assert (out.parent / r["image"]["path"]).read_bytes() == src["image"]["bytes"]
    # and v1 Studio reads it back into a fresh store, same rows
    other = Store(f"sqlite:///{tmp_path / 'o.db'}")
    try:
        back = import_path(other, out)
        assert back.ok and back.imported == 12, back.errors
    finally:
        other.close()


def test_training_exports_default_to_correct_or_corrected(store, imported, tmp_path):
    ids = list(imported.values())
    store.save_annotation(ids[0], Annotation(annotator="ana", verdict="correct"))
    store.save_annotation(ids[1], Annotation(annotator="ana", verdict="incorrect"))
    store.save_annotation(ids[2], Annotation(annotator="ana", verdict="unsure"))
    ri = store.get_revisits(ids[3])[0].index
    store.save_annotation(ids[3], Annotation(annotator="ana", verdict="incorrect", revisit_labels=[
        RevisitLabel(ri, "wrong_region", corrected_box=(1, 1, 30, 30))]))

    def exported(**kw):
        p = tmp_path / "x.jsonl"
        rep = export_v1g(store, p, images="none", **kw)
        return rep, {json.loads(line)["trace_id"] for line in p.read_text().splitlines()}

    rep, got = exported()
    assert got == {ids[0], ids[3]} and rep.rows == 2
    assert "judged correct or with a corrected/added region (the default)" in rep.summary()
    assert exported(verdict=TRAINING_DEFAULT)[1] == {ids[0], ids[3]}
    assert exported(verdict=None)[1] == set(ids[:4])
    assert exported(verdict="incorrect")[1] == {ids[1], ids[3]}
    assert exported(only_corrected=True)[1] == {ids[3]}


def test_cli_training_exports_say_their_selection(tmp_path):
    import typer
    from typer.testing import CliRunner

    from storage.commands import register
    from tests.builders import make_trace

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    s = Store(db)
    good, bad = make_trace(seed=1), make_trace(seed=2)
    for t, verdict in ((good, "correct"), (bad, "incorrect")):
        s.save_trace(t)
        s.save_annotation(t.trace_id, Annotation(annotator="ana", verdict=verdict))
    s.close()
    runner = CliRunner()
    res = runner.invoke(app, ["export", "hf", str(tmp_path / "d.parquet"), "--db", db])
    assert res.exit_code == 0 and "1 row(s)" in res.output and "(the default)" in res.output, res.output
    res = runner.invoke(app, ["export", "v1g", str(tmp_path / "a.jsonl"), "--all", "--images", "none", "--db", db])
    assert res.exit_code == 0 and "2 row(s)" in res.output and "every labelled trace" in res.output, res.output
    res = runner.invoke(app, ["export", "v1g", str(tmp_path / "i.jsonl"), "--verdict", "incorrect", "--db", db])
    assert "1 row(s)" in res.output and "judged incorrect" in res.output


# ----------------------------------------------------------------------------- Label Studio
def _ls_store(tmp_path):
    from storage import AddedRevisit
    from tests.builders import make_trace, png_bytes

    store = Store(f"sqlite:///{tmp_path / 'ls.db'}")
    sha = store.put_image(png_bytes(), 640, 480, "PNG")
    t = make_trace(boxes=(("triangle", (100, 120, 220, 230)), ("circle", (300, 300, 400, 420)),
                          ("sun", (20, 20, 90, 80))), image_sha256=sha)
    store.save_trace(t)
    ann = Annotation(annotator="ana", verdict="incorrect", answer_correct=False, note="looked at the <b>cup</b>",
                     revisit_labels=[RevisitLabel(0, "wrong_region", corrected_box=(64, 48, 320, 240)),
                                     RevisitLabel(1, "correct"), RevisitLabel(2, "unnecessary")],
                     added_revisits=[AddedRevisit(step=3, box=(500, 50, 600, 150), query="handle"),
                                     AddedRevisit(step=5, patches=[0, 1, 23, 24], query="corner")])
    store.save_annotation(t.trace_id, ann)
    return store, t


def _fresh_copy(store, t, tmp_path):
    """A second store holding the same trace (no annotation), as on another machine."""
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    other.put_image(store.get_image_bytes(t.image_sha256), 640, 480, "PNG")
    other.save_trace(store.get_trace(t.trace_id))
    return other


def test_labelstudio_tasks_read_by_the_sdk_converter_and_back(tmp_path):
    from label_studio_sdk.converter import Converter

    from storage.export import LABEL_STUDIO_CONFIG, export_labelstudio

    store, t = _ls_store(tmp_path)
    out = tmp_path / "ls" / "tasks.json"
    rep = export_labelstudio(store, out)
    assert rep.rows == 1 and rep.images_written == 1
    (task,) = json.loads(out.read_text())
    assert isinstance(task["id"], int) and task["id"] == int(v1g.numeric_id(t.trace_id))
    img = task["data"]["image"]
    assert img.startswith("/data/local-files/?d=images/") and (out.parent / img.split("?d=")[1]).is_file()
    assert task["meta"] == {"trace_id": t.trace_id, "annotator": "ana", "annotation_version": 1,
                            "verdict": "incorrect", "answer_correct": False, "note": "looked at the <b>cup</b>"}
    # the SDK's converter (JSON_MIN and CSV) reads the tasks with the project's labelling config
    conv = Converter(config=LABEL_STUDIO_CONFIG, project_dir=str(tmp_path), download_resources=False)
    conv.convert(str(out), str(tmp_path / "min"), "JSON_MIN", is_dir=False)
    (rec,) = json.loads((tmp_path / "min" / "result.json").read_text())
    assert rec["id"] == task["id"] and rec["verdict"] == "incorrect" and rec["note"] == "looked at the <b>cup</b>"
    boxes = rec["region"]
    n_rects = sum(1 for r in task["annotations"][0]["result"] if r["type"] == "rectanglelabels")
    assert len(boxes) == n_rects and {"triangle", "circle", "sun", "handle", "corner"} == {
        b["rectanglelabels"][0] for b in boxes}
    first = next(b for b in boxes if b["rectanglelabels"] == ["triangle"])
    assert (first["x"], first["y"], first["width"], first["height"]) == pytest.approx((10, 10, 40, 40))
    # two-way: the export read back into another store keeps every box and label
    other = _fresh_copy(store, t, tmp_path)
    try:
        back = import_path(other, out)
        assert back.ok and back.imported == 1, back.errors
        got = other.get_annotation(t.trace_id).annotation
        want = store.get_annotation(t.trace_id).annotation
        assert got.to_dict() == want.to_dict()
        assert import_path(other, out).skipped == 1  # nothing new: no second version
    finally:
        other.close()


def test_labelstudio_edits_come_back_as_a_new_version(tmp_path):
    from storage.export import export_labelstudio

    store, t = _ls_store(tmp_path)
    out = tmp_path / "tasks.json"
    export_labelstudio(store, out, images="embed")
    tasks = json.loads(out.read_text())
    assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")
    res = tasks[0]["annotations"][0]["result"]
    circle = next(r for r in res if r["id"].startswith("r1_"))
    circle["value"].update(x=50.0, y=50.0, width=10.0, height=10.0)  # the annotator moved the circle's box
    res.append({"id": "Xy12ab", "from_name": "region", "to_name": "image", "type": "rectanglelabels",
                "original_width": 640, "original_height": 480,
                "value": {"x": 0, "y": 50, "width": 25, "height": 25, "rotation": 0, "rectanglelabels": ["moon"]}})
    next(r for r in res if r["id"] == "verdict")["value"]["choices"] = ["correct"]
    tasks[0]["annotations"][0]["completed_by"] = {"email": "rita@example.org"}
    out.write_text(json.dumps(tasks))
    rep = import_path(store, out)
    assert rep.ok and rep.imported == 1, rep.errors
    history = store.annotation_history(t.trace_id)
    new = history[-1].annotation
    assert new.annotator == "rita@example.org" and new.verdict == "correct"
    assert new.label_for(1).label == "wrong_region" and new.label_for(1).corrected_box == (320.0, 240.0, 384.0, 288.0)
    assert new.label_for(0).corrected_box == (64.0, 48.0, 320.0, 240.0) and new.label_for(2).label == "unnecessary"
    moon = next(a for a in new.added_revisits if a.query == "moon")
    assert moon.box == (0.0, 240.0, 160.0, 360.0)
