"""storage import/export: v1g JSONL, Hugging Face parquet, full traces JSONL, Label Studio, and the CLI.

Runs on SQLite and PostgreSQL (the `store` fixture).
"""

from __future__ import annotations

import base64
import json

import pytest
import sqlalchemy as sa

from storage import AddedRevisit, Annotation, AnnotationConflict, AnnotationRecord, IncompleteAnnotation, RevisitLabel
from storage.schema import TraceRow
from storage.export import export_hf, export_labelstudio, export_traces, export_v1g
from storage.importer import import_path
from tests.builders import COPY0, grid_for, make_trace, png_bytes
from v1core import v1g
from v1core.trace import COPY_RE, parse_detect_spans

TWO = (("triangle", (100, 120, 220, 230)), ("circle", (300, 300, 400, 420)))


def _labelled(store, n=1, **kw):
    sha = store.put_image(png_bytes(), 640, 480, "PNG")
    out = []
    for i in range(n):
        t = make_trace(boxes=TWO, image_sha256=sha, seed=i, created_at=f"2026-01-01T00:00:{i:02d}+00:00", **kw)
        store.save_trace(t)
        out.append(t)
    return out


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- full traces
def test_traces_export_import_export_is_byte_identical(store, tmp_path):
    traces = _labelled(store, 3, tags=["t"])
    store.save_trace(make_trace(pointers=False, status="failed"))
    store.save_annotation(traces[0].trace_id, Annotation(annotator="ana", verdict="correct"))
    store.save_annotation(traces[0].trace_id, Annotation(annotator="bo", verdict="incorrect", revisit_labels=[
        RevisitLabel(1, "wrong_region", corrected_box=(10.5, 20, 30, 40.25))]), expected_version=0)
    with pytest.raises(AnnotationConflict):  # bo's second tab, loaded before his first save
        store.save_annotation(traces[0].trace_id, Annotation(annotator="bo", verdict="unsure"), expected_version=0)
    first = tmp_path / "a" / "traces.jsonl"
    rep = export_traces(store, first, images="path")
    assert rep.rows == 4 and rep.images_written == 1 and (tmp_path / "a" / "images").is_dir()

    from storage import Store

    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        imp = import_path(other, first)
        assert imp.ok and imp.imported == 4, imp.errors
        hist = other.annotation_history(traces[0].trace_id)
        assert [(h.version, h.annotator, h.conflict) for h in hist] == [(1, "ana", False), (2, "bo", False),
                                                                        (3, "bo", True)]
        heads = other.heads_by_trace([traces[0].trace_id])[traces[0].trace_id].annotators
        assert {n: r.version for n, r in heads.items()} == {"ana": 1, "bo": 2}  # the conflict is no head
        assert other.get_image_bytes(traces[0].image_sha256) == png_bytes()
        second = tmp_path / "a" / "traces2.jsonl"
        export_traces(other, second, images="path")
        assert first.read_bytes() == second.read_bytes()
        again = import_path(other, first)  # idempotent
        assert again.imported == 0 and again.skipped == 4
    finally:
        other.close()


def test_import_reports_bad_lines_and_keeps_good_ones(store, tmp_path):
    good = make_trace()
    good2 = make_trace(seed=2)
    bad_grid = make_trace().to_dict()
    bad_grid["grid"] = [0, 3]
    bad_ptr = make_trace().to_dict()
    bad_ptr["pointers_f16"] = base64.b64encode(b"\x00" * 10).decode()
    bad_status = make_trace().to_dict()
    bad_status["status"] = "exploded"
    bad_ann = make_trace().to_dict()
    bad_ann["annotations"] = [{"version": 1, "created_at": "x", "annotator": "a", "verdict": "maybe"}]
    lines = [
        json.dumps(good.to_dict()),
        "",
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"hello": "world"}),
        json.dumps(bad_grid),
        json.dumps(bad_ptr),
        json.dumps(bad_status),
        json.dumps(bad_ann),
        json.dumps({"model_id": "m", "grid": [2, 2]}),
        json.dumps(good2.to_dict())[:-20],  # torn last line
    ]
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(lines[:-1]) + "\n" + json.dumps(good2.to_dict()) + "\n" + lines[-1])
    rep = import_path(store, f)
    assert rep.imported == 2 and set(rep.trace_ids) == {good.trace_id, good2.trace_id}
    errs = {e.line: e.reason for e in rep.errors}
    assert sorted(errs) == [3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert "not valid JSON" in errs[3]
    assert "must be a JSON object" in errs[4]
    assert "neither a full trace" in errs[5]
    assert "bad grid" in errs[6]
    assert "pointer blob has 10 bytes" in errs[7]
    assert "status must be one of" in errs[8]
    assert "verdict must be one of" in errs[9]
    assert "missing field" in errs[10]
    assert "truncated last line" in errs[12]
    assert str(rep.errors[0]).startswith(f"{f}:3: ")
    assert store.count_traces() == 2
    assert store.get_trace(good.trace_id).to_dict() == good.to_dict()


# ----------------------------------------------------------------------------- v1g JSONL
def test_v1g_export_layout_and_corrected_regions(store, tmp_path):
    t, u, w = _labelled(store, 3)
    grid = grid_for((640, 480))
    corrected = [0, 1, 23, 24]  # a 2×2 block at the top-left (23 columns)
    assert grid.shape[1] == 23
    store.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="correct", answer_correct=True,
                                                 revisit_labels=[RevisitLabel(0, "wrong_region",
                                                                              corrected_patches=corrected),
                                                                 RevisitLabel(1, "correct")]))
    store.save_annotation(u.trace_id, Annotation(annotator="bo", verdict="incorrect", tags=["hard"], revisit_labels=[
        RevisitLabel(1, "wrong_region", corrected_box=(500, 50, 600, 150))]))
    store.save_annotation(w.trace_id, Annotation(annotator="ana", verdict="correct", added_revisits=[
        AddedRevisit(step=2, patches=[100, 101], query='the "red" sun')]))
    out = tmp_path / "exp" / "train.jsonl"
    rep = export_v1g(store, out, verdict=None)
    assert rep.rows == 3 and not rep.skipped and rep.images_written == 1
    rows = {r["trace_id"]: r for r in _rows(out)}
    r = rows[t.trace_id]
    assert list(r)[:6] == ["id", "image", "conversations", "regions", "image_size", "num_tokens"]
    assert int(r["id"]) >= 0 and r["id"] == v1g.numeric_id(t.trace_id)  # prepare_data.py's int(idx) works
    assert [m["from"] for m in r["conversations"]] == ["human", "gpt"]
    # the exact prompt the model saw: the question and the paper's reasoning suffix
    assert r["conversations"][0]["value"] == "<image>\n" + t.question + v1g.PAPER_PROMPT_SUFFIX
    assert r["image_size"] == [640, 480] and (out.parent / r["image"]["path"]).read_bytes() == png_bytes()
    text = r["conversations"][1]["value"]
    assert "<region>" not in text and not COPY_RE.search(text)
    assert 'detect(query="triangle", objects=["<obj0>"])' in text
    regions = json.loads(r["regions"])
    assert set(regions) == {"<obj0>", "<obj1>"}
    # what the training collate makes of it: the corrected cells replace the model's pointers exactly,
    # the uncorrected revisit keeps exactly the cells the model copied
    _, expanded = v1g.parse_row(r).expanded()
    spans = parse_detect_spans(expanded)
    assert spans[0]["copies"] == corrected
    assert spans[1]["copies"] == t.revisits[1].patches
    # the rest of the text is untouched
    model_text = t.output_text
    for sp in reversed(parse_detect_spans(model_text)):
        model_text = model_text[:sp["span"][0]] + "<obj?>" + model_text[sp["span"][1]:]
    assert text.replace("<obj0>", "<obj?>").replace("<obj1>", "<obj?>") == model_text

    ru = rows[u.trace_id]
    assert json.loads(ru["regions"])["<obj1>"] == [500.0, 50.0, 600.0, 150.0] and ru["verdict"] == "incorrect"
    rw = rows[w.trace_id]["conversations"][1]["value"]
    # inserted before step 2 (" at"), one space on each side
    assert 'Looking detect(query="the \\"red\\" sun", objects=["<obj2>"]) at' in rw
    assert rw.index("<obj2>") < rw.index("<obj0>")
    _, rw_expanded = v1g.parse_row(rows[w.trace_id]).expanded()
    assert rw_expanded.count("<|copy_100|><|copy_101|>") == 1

    # filters
    def ids(**kw):
        p = tmp_path / "f.jsonl"
        export_v1g(store, p, images="none", **kw)
        return {r["trace_id"] for r in _rows(p)}

    assert ids() == {t.trace_id, u.trace_id, w.trace_id}  # default: correct, or corrected (u)
    assert ids(verdict="correct") == {t.trace_id, w.trace_id}
    assert ids(verdict=["correct", "incorrect"]) == {t.trace_id, u.trace_id, w.trace_id}
    assert ids(annotator="bo") == {u.trace_id}
    assert ids(tag="hard") == {u.trace_id}
    assert ids(only_corrected=True) == {t.trace_id, u.trace_id, w.trace_id}
    store.save_annotation(w.trace_id, Annotation(annotator="ana", verdict="correct"))
    assert ids(only_corrected=True) == {t.trace_id, u.trace_id}
    emb = tmp_path / "emb.jsonl"
    export_v1g(store, emb, images="embed")
    assert base64.b64decode(_rows(emb)[0]["image"]["bytes"]) == png_bytes()


def test_v1g_export_skips_unfixable_and_unfinished(store, tmp_path):
    t, u = _labelled(store, 2)
    running = make_trace(status="running")
    store.save_trace(running)
    store.save_annotation(running.trace_id, Annotation(annotator="ana", verdict="correct"))
    # a wrong_region label without a correction can no longer be saved, but older databases and imported
    # histories hold such versions: write one the way the importer does
    with pytest.raises(IncompleteAnnotation, match="corrected region for R1"):
        store.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="incorrect",
                                                     revisit_labels=[RevisitLabel(0, "wrong_region")]))
    prepared = store.prepare_trace(store.get_trace(t.trace_id))
    prepared.annotations = [AnnotationRecord(
        trace_id=t.trace_id, version=1, created_at="2026-01-01T00:00:00+00:00",
        annotation=Annotation(annotator="ana", verdict="incorrect",
                              revisit_labels=[RevisitLabel(0, "wrong_region")]).validate())]
    # the stored trace has no annotation yet: replace it by the same trace carrying that history
    with store.transaction() as tx:
        tx.session.execute(sa.delete(TraceRow).where(TraceRow.id == t.trace_id))
        tx.write_trace(prepared)
    store.save_annotation(u.trace_id, Annotation(annotator="ana", verdict="correct",
                                                 revisit_labels=[RevisitLabel(0, "unnecessary")]))
    rep = export_v1g(store, tmp_path / "x.jsonl", verdict=None)
    assert rep.rows == 1 and len(rep.skipped) == 1
    assert rep.skipped[0].startswith(t.trace_id) and "without a corrected region" in rep.skipped[0]
    assert [r["trace_id"] for r in _rows(tmp_path / "x.jsonl")] == [u.trace_id]  # a running trace never is


def test_v1g_export_is_read_by_the_training_code(sqlite_store, tmp_path):
    """The exported JSONL goes through v1core's own v1g reader (the fine-tune path) unchanged."""
    from v1core.demo.finetune import read_v1g_rows
    from v1core.demo.targets import expand_v1g_row

    (t,) = _labelled(sqlite_store, 1)
    sqlite_store.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="correct", revisit_labels=[
        RevisitLabel(0, "wrong_region", corrected_patches=[50, 51])]))
    out = tmp_path / "e.jsonl"
    export_v1g(sqlite_store, out)
    (row,) = read_v1g_rows(out)
    assert v1g.question_of(row) == t.question
    assert parse_detect_spans(expand_v1g_row(row, grid_for((640, 480))))[0]["copies"] == [50, 51]


# ----------------------------------------------------------------------------- v1g import
def test_v1g_import_builds_text_only_traces(store, tmp_path):
    img = png_bytes((640, 480))
    (tmp_path / "img.png").write_bytes(img)
    rows = [
        {"id": "r1", "image": "img.png", "image_size": [640, 480], "num_tokens": 99, "conversations": [
            {"from": "human", "value": "<image>\nWhere is the cat?"},
            {"from": "gpt", "value": 'Look. detect(query="cat", objects=["<obj1>"]) The <obj1> is left.'}],
         "regions": json.dumps({"<obj1>": [10, 20, 100, 120]})},
        {"id": "r2", "conversation": [{"role": "user", "content": "<image>\nQ2"},
                                      {"role": "assistant", "content": "no regions here"}],
         "region": {}, "image_size": [640, 480]},
        {"id": "r3", "conversations": [{"from": "human", "value": "Q"}]},
        {"id": "r4", "image_size": [10, 10], "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                               {"from": "gpt", "value": "A"}]},
        {"id": "r5", "image_size": [640, 480], "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                                 {"from": "gpt", "value": "<obj1>"}],
         "regions": json.dumps({"bogus": [1, 2, 3, 4]})},
        {"id": "r6", "image": "missing.png", "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                               {"from": "gpt", "value": "A"}]},
        {"id": "r7", "image": "https://example.com/x.png",
         "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]},
    ]
    f = tmp_path / "v1g.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rep = import_path(store, f)
    assert rep.imported == 2, rep.errors
    errs = {e.line: e.reason for e in rep.errors}
    assert sorted(errs) == [3, 4, 5, 6, 7]
    assert "needs exactly a human turn then a gpt turn" in errs[3]
    assert "at least 28 px" in errs[4]
    assert "not an object key" in errs[5]
    assert "cannot read image 'missing.png'" in errs[6]
    assert "URL" in errs[7]
    (s1,) = store.list_traces(search="cat")
    tr = store.get_trace(s1.trace_id)
    assert tr.source == "imported" and tr.model_id == "v1g-data" and not tr.has_pointers
    assert tr.question == "Where is the cat?" and tr.image_size == (640, 480)
    assert store.get_image_bytes(tr.image_sha256) == img
    grid = grid_for((640, 480))
    copies = grid.bbox_to_patches([10, 20, 100, 120])
    assert "".join(s.text for s in tr.steps) == tr.output_text
    assert [s.patch for s in tr.steps if s.is_copy] == copies * 2  # the key recurs: both occurrences expand
    assert all(s.token_id == COPY0 + s.patch for s in tr.steps if s.is_copy)
    revs = tr.revisits
    assert len(revs) == 2 and revs[0].query == "cat" and revs[0].object_name == "obj1"
    assert tr.meta["num_tokens"] == 99 and tr.meta["v1g_id"] == "r1"
    # exporting an imported, unannotated-then-labelled row gives back the original box
    store.save_annotation(tr.trace_id, Annotation(annotator="ana", verdict="correct"))
    out = tmp_path / "back.jsonl"
    export_v1g(store, out, images="none")
    (back,) = _rows(out)
    assert back["id"] == "r1" and back["regions"] == json.dumps({"<obj1>": [10, 20, 100, 120]})
    assert back["conversations"] == rows[0]["conversations"] and back["num_tokens"] == 99


# ----------------------------------------------------------------------------- Hugging Face
def test_hf_export_opens_with_datasets_and_reimports(store, tmp_path):
    import datasets

    t, u = _labelled(store, 2)
    store.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="correct", revisit_labels=[
        RevisitLabel(0, "wrong_region", corrected_patches=[0, 1])]))
    store.save_annotation(u.trace_id, Annotation(annotator="ana", verdict="incorrect"))
    out = tmp_path / "hf"
    rep = export_hf(store, out, shard_rows=1, verdict=None)
    assert rep.rows == 2 and len(rep.files) == 2
    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.column_names == ["id", "image", "conversations", "regions", "image_size", "num_tokens"]
    assert isinstance(ds.features["image"], datasets.Image)
    row = ds[0]
    assert row["image"].size == (640, 480)
    assert row["image_size"] == [640, 480] and isinstance(row["num_tokens"], int)
    assert [c["from"] for c in row["conversations"]] == ["human", "gpt"]
    assert row["id"] == v1g.numeric_id(t.trace_id)
    assert row["conversations"][0]["value"] == "<image>\n" + t.question + v1g.PAPER_PROMPT_SUFFIX
    regions = json.loads(row["regions"])
    assert isinstance(row["regions"], str) and set(regions) == {"<obj0>", "<obj1>"}
    _, exp = v1g.parse_row(row).expanded()
    assert parse_detect_spans(exp)[0]["copies"] == [0, 1]
    single = tmp_path / "one.parquet"
    export_hf(store, single, images="none", verdict="incorrect")
    ds1 = datasets.load_dataset("parquet", data_files=str(single), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds1["id"] == [v1g.numeric_id(u.trace_id)] and ds1[0]["image"] is None

    from storage import Store

    other = Store(f"sqlite:///{tmp_path / 'o.db'}")
    try:
        rep = import_path(other, out)
        assert rep.imported == 2 and rep.ok, rep.errors
        import hashlib

        tr = other.get_trace(hashlib.sha256(f"v1g:{v1g.numeric_id(t.trace_id)}".encode()).hexdigest()[:32])
        assert tr.image_sha256 == t.image_sha256 and other.get_image_bytes(tr.image_sha256) == png_bytes()
        assert [s.patch for s in tr.steps if s.is_copy][:2] == [0, 1]
    finally:
        other.close()


# ----------------------------------------------------------------------------- Label Studio
def test_labelstudio_export_percent_boxes(store, tmp_path):
    (t,) = _labelled(store, 1)
    store.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="incorrect", revisit_labels=[
        RevisitLabel(0, "wrong_region", corrected_box=(64, 48, 320, 240)), RevisitLabel(1, "correct")]))
    out = tmp_path / "ls.json"
    rep = export_labelstudio(store, out, images="embed")
    assert rep.rows == 1
    (task,) = json.loads(out.read_text())
    assert task["data"]["image"].startswith("data:image/png;base64,")
    assert task["data"]["trace_id"] == t.trace_id
    res = task["annotations"][0]["result"]
    first = res[0]["value"]
    assert (first["x"], first["y"], first["width"], first["height"]) == pytest.approx((10, 10, 40, 40))
    assert res[0]["original_width"] == 640 and res[0]["value"]["rectanglelabels"] == ["triangle"]
    assert res[-1] == {"id": "verdict", "from_name": "verdict", "to_name": "image", "type": "choices",
                       "value": {"choices": ["incorrect"]}}
    preds = task["predictions"][0]["result"]
    assert len(preds) == 2 and all(0 <= p["value"]["x"] <= 100 for p in preds)
    assert task["annotations"][0]["meta"]["annotator"] == "ana"


# ----------------------------------------------------------------------------- CLI
def test_cli_db_upgrade_export_import(tmp_path):
    import typer
    from typer.testing import CliRunner

    from storage import Store
    from storage.commands import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    res = runner.invoke(app, ["db", "upgrade", "--db", db])
    assert res.exit_code == 0 and "revision 0002" in res.output
    s = Store(db)
    (t,) = _labelled(s, 1)
    s.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="correct"))
    s.close()
    for kind, name in [("v1g", "o.jsonl"), ("hf", "hfdir"), ("traces", "t.jsonl"), ("labelstudio", "ls.json")]:
        res = runner.invoke(app, ["export", kind, str(tmp_path / name), "--db", db])
        assert res.exit_code == 0, res.output
        assert "1 row(s)" in res.output
    res = runner.invoke(app, ["export", "v1g", str(tmp_path / "none.jsonl"), "--verdict", "incorrect", "--db", db])
    assert "0 row(s)" in res.output
    res = runner.invoke(app, ["export", "v1g", str(tmp_path / "bad.jsonl"), "--images", "inline", "--db", db])
    assert res.exit_code == 2 and "images must be one of" in res.output
    bad = tmp_path / "in.jsonl"
    bad.write_text((tmp_path / "t.jsonl").read_text() + "{oops\n")
    db2 = f"sqlite:///{tmp_path / 'cli2.db'}"
    res = runner.invoke(app, ["import", str(bad), "--db", db2])
    assert res.exit_code == 1
    assert f"{bad}:2: not valid JSON" in res.output and "imported 1 trace(s)" in res.output
    res = runner.invoke(app, ["db", "check", "--db", db2])
    assert res.exit_code == 0 and "integrity ok; 1 trace(s)" in res.output
    res = runner.invoke(app, ["import", str(tmp_path / "nope.jsonl"), "--db", db2])
    assert res.exit_code == 2 and "does not exist" in res.output
