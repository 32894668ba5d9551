"""Safe to share with a team: no file on the server is read or written by accident, and the store stops
acknowledging saves it cannot keep. Storage cases run on SQLite and PostgreSQL (the `store` fixture).

Findings covered here: 1 (import reads any file), 2 (export writes any path), 3 (a deleted or replaced
database keeps acknowledging saves).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from storage import Annotation, StoreUnavailable
from storage.files import (
    ImageSource,
    UnsafePathError,
    atomic_write,
    check_export_target,
    export_path_in,
    store_files,
)
from storage.importer import import_path
from tests.builders import make_trace, png_bytes


def _v1g_row(rid: str, image) -> dict:
    return {"id": rid, "image": image, "image_size": [640, 480],
            "conversations": [{"from": "human", "value": "<image>\nWhat is here?"}, {"from": "gpt", "value": "A"}]}


def _write_rows(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- 1: import confinement
def test_import_reads_images_only_inside_the_import_folder(store, tmp_path):
    img = png_bytes((640, 480))
    outside = tmp_path / "secret.png"
    outside.write_bytes(img)
    folder = tmp_path / "import"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "ok.png").write_bytes(img)
    (folder / "link.png").symlink_to(outside)
    (folder / "dir_link").symlink_to(tmp_path)
    rows = [
        _v1g_row("ok", "images/ok.png"),                  # 1 inside: imported
        _v1g_row("dotdot", "../secret.png"),              # 2
        _v1g_row("abs", str(outside)),                    # 3
        _v1g_row("symlink", "link.png"),                  # 4 a symlink out of the folder
        _v1g_row("dirlink", "dir_link/secret.png"),       # 5 through a symlinked folder
        _v1g_row("passwd", "../../../../../../etc/passwd"),  # 6 exists: refused like a missing one
        _v1g_row("nothing", "../../../../../../etc/no-such-file"),  # 7
        _v1g_row("zero", "/dev/zero"),                    # 8 a device outside
        _v1g_row("dict", {"path": "../secret.png", "bytes": None}),  # 9 the HF image cell layout
    ]
    _write_rows(folder / "rows.jsonl", rows)
    t0 = time.monotonic()
    rep = import_path(store, folder / "rows.jsonl")
    assert time.monotonic() - t0 < 30  # /dev/zero is not read until memory runs out
    assert rep.imported == 1, rep.errors
    errs = {e.line: e.reason for e in rep.errors}
    assert sorted(errs) == [2, 3, 4, 5, 6, 7, 8, 9]
    for line in (2, 3, 4, 5, 6, 7, 8, 9):
        assert "is outside the import folder" in errs[line], errs[line]
    # no existence probe: the message for an existing file and a missing one differ only by the name
    assert errs[6].replace("passwd", "X") == errs[7].replace("no-such-file", "X")
    assert store.count_traces() == 1


def test_import_refuses_devices_fifos_and_oversized_files_inside_the_folder(store, tmp_path):
    folder = tmp_path / "import"
    folder.mkdir()
    os.mkfifo(folder / "pipe.png")  # opening a FIFO for reading would block forever
    (folder / "sub").mkdir()
    big = folder / "big.png"
    with open(big, "wb") as f:  # sparse: 60 MB on paper, nothing on disk
        f.truncate(60 * 1024 * 1024)
    rows = [_v1g_row("pipe", "pipe.png"), _v1g_row("dir", "sub"), _v1g_row("big", "big.png")]
    _write_rows(folder / "rows.jsonl", rows)
    rep = import_path(store, folder / "rows.jsonl")
    errs = {e.line: e.reason for e in rep.errors}
    assert rep.imported == 0 and sorted(errs) == [1, 2, 3]
    assert "not a regular file" in errs[1]
    assert "not a regular file" in errs[2]
    assert "60.0 MB; the limit is 50 MB" in errs[3]


def test_image_source_checks_size_before_reading(tmp_path, monkeypatch):
    f = tmp_path / "a.png"
    f.write_bytes(b"x" * 2000)
    src = ImageSource((tmp_path.resolve(),), max_bytes=1000)
    reads = []
    real_fdopen = os.fdopen

    def spy(fd, *a, **kw):
        fobj = real_fdopen(fd, *a, **kw)
        orig = fobj.read
        fobj.read = lambda n=-1: reads.append(n) or orig(n)  # type: ignore[method-assign]
        return fobj

    monkeypatch.setattr(os, "fdopen", spy)
    with pytest.raises(UnsafePathError, match="the limit is"):
        src.read("a.png")
    assert reads == []  # refused by fstat, before a byte was read
    assert ImageSource((tmp_path.resolve(),), max_bytes=4000).read("a.png") == b"x" * 2000


def test_images_root_names_another_folder(store, tmp_path):
    shared = tmp_path / "shared_images"
    shared.mkdir()
    (shared / "a.png").write_bytes(png_bytes((640, 480)))
    rows_dir = tmp_path / "rows"
    _write_rows(rows_dir / "r.jsonl", [_v1g_row("a", str(shared / "a.png")), _v1g_row("b", "../shared_images/a.png")])
    assert import_path(store, rows_dir / "r.jsonl").imported == 0
    rep = import_path(store, rows_dir / "r.jsonl", images_root=shared)
    assert rep.imported == 2, rep.errors


def test_browser_upload_never_reads_server_paths(store, tmp_path, monkeypatch):
    """`ImageSource.for_upload()`: no file is read unless the operator set V1STUDIO_IMPORT_DIR, and then only
    inside it (an uploaded file lives in a temp folder, so "beside the file" means nothing)."""
    img = png_bytes((640, 480))
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "a.png").write_bytes(img)
    up = tmp_path / "upload" / "upload.jsonl"
    (up.parent).mkdir()
    (up.parent / "beside.png").write_bytes(img)
    import base64

    rows = [_v1g_row("beside", "beside.png"), _v1g_row("allowed", str(allowed / "a.png")),
            _v1g_row("embedded", {"bytes": base64.b64encode(img).decode(), "path": None})]
    _write_rows(up, rows)
    monkeypatch.delenv("V1STUDIO_IMPORT_DIR", raising=False)
    rep = import_path(store, up, images=ImageSource.for_upload())
    errs = {e.line: e.reason for e in rep.errors}
    assert rep.imported == 1 and sorted(errs) == [1, 2]
    assert "must embed their images" in errs[1] and "V1STUDIO_IMPORT_DIR" in errs[1]
    monkeypatch.setenv("V1STUDIO_IMPORT_DIR", str(allowed))
    rep = import_path(store, up, images=ImageSource.for_upload())
    errs = {e.line: e.reason for e in rep.errors}
    assert rep.imported == 1 and rep.skipped == 1 and sorted(errs) == [1]
    assert "outside the import folder" in errs[1]


# ----------------------------------------------------------------------------- 2: export targets
def test_no_export_writes_over_the_store_files(tmp_path):
    from storage import Store
    from storage.export import export_traces

    db = tmp_path / "v1studio.db"
    s = Store(f"sqlite:///{db}")
    try:
        s.save_trace(make_trace())
        before = db.read_bytes()
        for target in store_files(db):
            with pytest.raises(UnsafePathError, match="file of the studio's database"):
                export_traces(s, target)
            with pytest.raises(UnsafePathError, match="file of the studio's database"):
                check_export_target(target, force=True)  # not even with --force
        link = tmp_path / "innocent.jsonl"
        link.symlink_to(db)
        with pytest.raises(UnsafePathError, match="file of the studio's database"):
            export_traces(s, link)
        with pytest.raises(UnsafePathError):
            with atomic_write(db, "wb") as f:
                f.write(b"overwritten")
        assert db.read_bytes() == before and s.integrity_check() == "ok" and s.count_traces() == 1
    finally:
        s.close()


def test_export_target_refuses_non_export_files_without_force(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(UnsafePathError, match="does not look like an export.*--force"):
        check_export_target(notes)
    assert check_export_target(notes, force=True) == notes
    old = tmp_path / "old.jsonl"
    old.write_text('{"id": 1}\n')
    assert check_export_target(old) == old  # a previous export is replaced
    fake = tmp_path / "fake.jsonl"
    fake.write_bytes(b"SQLite format 3\x00")
    with pytest.raises(UnsafePathError, match="--force"):
        check_export_target(fake)
    with pytest.raises(UnsafePathError, match="is a folder"):
        check_export_target(tmp_path)
    assert check_export_target(tmp_path, folder_ok=True) == tmp_path
    with pytest.raises(UnsafePathError, match="not a regular file"):
        check_export_target("/dev/null", force=True)


def test_browser_exports_go_only_into_the_export_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("V1STUDIO_EXPORT_DIR", raising=False)
    with pytest.raises(UnsafePathError, match="V1STUDIO_EXPORT_DIR"):
        export_path_in("train.jsonl")
    out = tmp_path / "exports"
    out.mkdir()
    monkeypatch.setenv("V1STUDIO_EXPORT_DIR", str(out))
    assert export_path_in("train.jsonl") == out.resolve() / "train.jsonl"
    for bad in ("../x.jsonl", "/etc/passwd", "a/b.jsonl", ".hidden", "", "..", "a\x00b"):
        with pytest.raises(UnsafePathError):
            export_path_in(bad)


def test_cli_export_refuses_the_database_and_other_files(tmp_path):
    from typer.testing import CliRunner

    from app.cli import app
    from storage import Store

    db = tmp_path / "cli.db"
    s = Store(f"sqlite:///{db}")
    s.save_trace(make_trace())
    s.close()
    before = db.read_bytes()
    runner = CliRunner()
    res = runner.invoke(app, ["export", "traces", str(db), "--db", str(db)])
    assert res.exit_code == 2 and "file of the studio's database" in res.output
    assert "Traceback" not in res.output and db.read_bytes() == before
    res = runner.invoke(app, ["export", "traces", str(db), "--db", str(db), "--force"])
    assert res.exit_code == 2 and db.read_bytes() == before
    other = tmp_path / "report.txt"
    other.write_text("keep me")
    res = runner.invoke(app, ["export", "traces", str(other), "--db", str(db)])
    assert res.exit_code == 2 and "--force" in res.output and other.read_text() == "keep me"
    res = runner.invoke(app, ["export", "traces", str(other), "--db", str(db), "--force"])
    assert res.exit_code == 0, res.output
    assert json.loads(other.read_text().splitlines()[0])["trace_id"]


# ----------------------------------------------------------------------------- 3: durability
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_store_stops_acknowledging_when_its_file_is_gone(tmp_path, how):
    from storage import Store

    db = tmp_path / "v1studio.db"
    s = Store(f"sqlite:///{db}")
    t = make_trace()
    s.save_trace(t)
    assert s.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="correct")) == 1
    for f in store_files(db):
        f.unlink(missing_ok=True)
    if how == "replaced":
        other = Store(f"sqlite:///{db}")  # a fresh database now lives under the name
        other.close()
    try:
        with pytest.raises(StoreUnavailable, match=f"was {how}"):
            s.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="incorrect"))
        with pytest.raises(StoreUnavailable, match=f"was {how}"):
            s.save_trace(make_trace(seed=3))
    finally:
        s.close()
    if how == "deleted":
        assert not db.exists()  # the refused write did not create an empty database either


def test_store_refuses_a_save_when_the_file_vanishes_mid_transaction(tmp_path):
    from storage import Store

    db = tmp_path / "v1studio.db"
    s = Store(f"sqlite:///{db}")
    t = make_trace()
    s.save_trace(t)
    try:
        with pytest.raises(StoreUnavailable, match="was deleted"):
            with s.transaction() as tx:
                tx.put_image(png_bytes(), 640, 480, "PNG")
                db.unlink()  # between the write and the commit
    finally:
        s.close()


def test_dropped_postgres_database_is_a_clear_error(tmp_path):
    pytest.importorskip("psycopg")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from storage import Store
    from tests.postgres import new_pg_database

    url = new_pg_database()
    s = Store(url)
    t = make_trace()
    s.save_trace(t)
    s.engine.dispose()
    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE "{u.database}" WITH (FORCE)'))
    admin.dispose()
    try:
        with pytest.raises(StoreUnavailable, match="cannot be used: .*does not exist"):
            s.save_annotation(t.trace_id, Annotation(annotator="ana", verdict="correct"))
        with pytest.raises(StoreUnavailable, match="cannot be used"):
            s.get_trace(t.trace_id)
    finally:
        s.close()


# ----------------------------------------------------------------------------- 5: NUL and control characters
def test_nul_is_refused_alike_and_other_controls_are_kept(store):
    """NUL cannot live in PostgreSQL text, so both backends refuse it with the same sentence (nothing stored);
    every other control character round-trips exactly on both."""
    from storage import Annotation

    controls = "tab\there\x01\x07\x1b[31m\x7f\x85\u2028 end"
    t = make_trace(question=f"What? {controls}", tags=["ok\x01tag"])
    store.save_trace(t)
    back = store.get_trace(t.trace_id)
    assert back.question == t.question and back.tags == ["ok\x01tag"]
    v = store.save_annotation(t.trace_id, Annotation(annotator="ana\x1b", verdict="correct", note=controls,
                                                     tags=[controls.strip()]))
    rec = store.get_annotation(t.trace_id)
    assert v == 1 and rec.annotation.note == controls and rec.annotator == "ana\x1b"
    assert store.list_traces(search="\x1b[31m")[0].trace_id == t.trace_id

    messages = []
    for bad in (dict(note="a\x00b"), dict(tags=["x\x00"]), dict(annotator="a\x00")):
        kw = dict(annotator="bo", verdict="correct") | bad
        with pytest.raises(ValueError, match=r"contains a NUL character \(\\x00\) at position") as ei:
            store.save_annotation(t.trace_id, Annotation(**kw))
        messages.append(str(ei.value))
    assert messages[0] == "note contains a NUL character (\\x00) at position 1; remove it and save again " \
                          "(every other character is kept as typed)"
    for field in ("question", "system_prompt", "output_text"):
        bad_trace = make_trace(seed=7)
        setattr(bad_trace, field, getattr(bad_trace, field) + "\x00")
        with pytest.raises(ValueError, match="contains a NUL character"):
            store.save_trace(bad_trace)
    with pytest.raises(ValueError, match="NUL"):
        store.save_trace(make_trace(seed=8, tags=["a\x00"]))
    with pytest.raises(ValueError, match="NUL"):
        store.add_annotator("x\x00y")
    with pytest.raises(ValueError, match="NUL"):
        store.set_trace_tags(t.trace_id, ["a\x00"])
    assert store.count_traces() == 1 and store.annotation_history(t.trace_id)[-1].version == 1
    # lookups and searches with NUL find nothing (no raw driver error on PostgreSQL)
    assert store.list_traces(search="\x00") == [] and store.count_traces(tag="\x00") == 0
    from storage import TraceNotFound

    with pytest.raises(TraceNotFound):
        store.get_trace("ab\x00")
    with pytest.raises(TraceNotFound):
        store.get_step("ab\x00", 0)
    assert store.trace_stamp("ab\x00") is None


def test_nul_in_an_imported_line_is_that_line_error(store, tmp_path):
    good = make_trace()
    bad = make_trace(seed=2).to_dict()
    bad["question"] = "nul\x00here"
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps(good.to_dict()) + "\n" + json.dumps(bad) + "\n")
    rep = import_path(store, f)
    assert rep.imported == 1 and [(e.line, "NUL" in e.reason) for e in rep.errors] == [(2, True)]
