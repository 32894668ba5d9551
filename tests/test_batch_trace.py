"""`v1studio trace`: JSONL/store sinks, resume after a kill, 2-process torchrun, batched = unbatched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import fixture_model, fixture_processor, make_fixture_checkpoint
from v1core.batch import JsonlShardSink, iter_items, trace_batch
from v1core.demo.scenes import make_scene
from v1core.trace import DecodingSettings

ROOT = Path(__file__).resolve().parent.parent
N = 20


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    rows = []
    for i in range(N):
        scene = make_scene(100 + i)
        scene.image.save(d / f"scene{i}.png")
        rows.append({"image": f"scene{i}.png", "question": scene.question})
    rows.append({"image": "https://example.com/cat.png", "question": "remote?"})
    rows.append({"image": "missing.png", "question": "where?"})
    (d / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_fixture_checkpoint(tmp_path_factory.mktemp("ckpt") / "fixture")


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          **kw)


def _keys(out: Path) -> list[str]:
    keys = []
    for shard in sorted(out.glob("traces-rank*.jsonl")):
        keys += [json.loads(line)["meta"]["item_key"] for line in shard.read_text().splitlines() if line.strip()]
    return keys


def test_bad_items_are_reported_with_reasons(dataset):
    items = list(iter_items(dataset / "data.jsonl"))
    errors = {it.source: it.error for it in items if it.error}
    assert len(items) == N + 3
    assert "URL" in errors["data.jsonl:21"] and "nothing is fetched" in errors["data.jsonl:21"]
    assert "data.jsonl:22" in errors and "data.jsonl:23" in errors


def test_twenty_scenes_into_jsonl_then_resume_skips_everything(dataset, ckpt, tmp_path):
    out = tmp_path / "out"
    r = _cli("trace", str(dataset / "data.jsonl"), "--out", str(out), "--model", str(ckpt), "--max-new-tokens", "6",
             "--batch-size", "4")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["done"] == N and summary["failed"] == 3 and summary["skipped"] == 0
    assert "URL" in r.stderr
    assert len(set(_keys(out))) == len(_keys(out)) == N
    from v1core.trace import Trace

    first = Trace.from_dict(json.loads((out / "traces-rank000-of-001.jsonl").read_text().splitlines()[0]))
    assert first.has_pointers and len(first.steps) == 6
    again = _cli("trace", str(dataset / "data.jsonl"), "--out", str(out), "--model", str(ckpt), "--max-new-tokens", "6")
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == N
    assert len(_keys(out)) == N


def test_killed_run_restarts_where_it_stopped(dataset, ckpt, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "trace", str(dataset / "data.jsonl"), "--out", str(out),
                             "--model", str(ckpt), "--max-new-tokens", "24"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = out / "traces-rank000-of-001.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not shard.exists() or len(shard.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(_keys(out))
    assert 3 <= n_before < N
    with open(shard, "a") as f:
        f.write('{"torn": tru')  # what a kill during a write leaves behind
    r = _cli("trace", str(dataset / "data.jsonl"), "--out", str(out), "--model", str(ckpt), "--max-new-tokens", "24")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["skipped"] == n_before
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == N


def test_two_process_torchrun_shards_union_without_duplicates(dataset, ckpt, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29517", "-m", "app.trace_cli", str(dataset / "data.jsonl"),
                        "--out", str(out), "--model", str(ckpt), "--max-new-tokens", "4"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    shards = sorted(out.glob("traces-rank*.jsonl"))
    assert [s.name for s in shards] == ["traces-rank000-of-002.jsonl", "traces-rank001-of-002.jsonl"]
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == N
    assert all(len(s.read_text().splitlines()) >= N // 2 - 2 for s in shards)  # both ranks did work
    total = json.loads((out / "summary.json").read_text())
    assert total["done"] == N and total["failed"] == 3


def test_batched_traces_equal_unbatched(dataset, tmp_path):
    model, proc = fixture_model(), fixture_processor()
    settings = DecodingSettings(max_new_tokens=10, min_new_tokens=10, repetition_penalty=1.05)
    items = [it for it in iter_items(dataset / "data.jsonl") if not it.error][:5]
    one, many = JsonlShardSink(tmp_path / "b1"), JsonlShardSink(tmp_path / "b5")
    trace_batch(model, proc, items, settings, one, batch_size=1, progress=False)
    trace_batch(model, proc, items, settings, many, batch_size=5, progress=False)
    one.close(), many.close()
    a = [json.loads(line) for line in one.path.read_text().splitlines()]
    b = [json.loads(line) for line in many.path.read_text().splitlines()]
    assert [[s["token_id"] for s in t["steps"]] for t in a] == [[s["token_id"] for s in t["steps"]] for t in b]
    assert [t["grid"] for t in a] == [t["grid"] for t in b]
    from v1core.trace import Trace
    for x, y in zip(a, b):  # each sample's pointers are its own image's (no padding leaks)
        px, py = Trace.from_dict(x).pointer_matrix(), Trace.from_dict(y).pointer_matrix()
        assert px.shape == py.shape and abs(px - py).max() < 2e-3


def test_trace_into_the_store_is_resumable(dataset, ckpt, tmp_path):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    r = _cli("trace", str(dataset / "data.jsonl"), "--db", db, "--model", str(ckpt), "--max-new-tokens", "4",
             "--limit", "6")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["done"] == 6
    again = _cli("trace", str(dataset / "data.jsonl"), "--db", db, "--model", str(ckpt), "--max-new-tokens", "4",
                 "--limit", "6")
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 6
    from storage import Store

    store = Store(db)
    traces = store.list_traces(limit=50)
    assert len(traces) == 6


def test_item_count_feeds_the_progress_bar(dataset):
    from v1core.batch import count_items

    assert count_items(dataset / "data.jsonl") == N + 3
    assert count_items(dataset) == N  # a folder of images


def test_batch_and_interactive_traces_end_alike(dataset, tmp_path, monkeypatch):
    """Whichever of the model's end-of-sequence ids `generate` stopped on, a batch trace's output_text drops it
    exactly as an interactive TraceRun's does (both go through `Trace.finish`)."""
    from v1core.generation import TraceRun

    model, proc = fixture_model(), fixture_processor()
    item = next(it for it in iter_items(dataset / "data.jsonl") if not it.error)
    settings = DecodingSettings(max_new_tokens=8)
    free = TraceRun(model, proc, item.image, item.question, settings=settings).run()
    ids = [s.token_id for s in free.steps]
    stop_at = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i])  # a token first chosen at step i
    extra_eos = ids[stop_at]
    assert extra_eos != proc.tokenizer.convert_tokens_to_ids("<|im_end|>")  # not the id batch used to strip
    monkeypatch.setattr(model.generation_config, "eos_token_id", [model.generation_config.eos_token_id, extra_eos])
    run = TraceRun(model, proc, item.image, item.question, settings=settings).run()
    sink = JsonlShardSink(tmp_path / "b")
    trace_batch(model, proc, [item], settings, sink, batch_size=1, progress=False)
    sink.close()
    batch = json.loads(sink.path.read_text().splitlines()[0])
    assert [s.token_id for s in run.steps] == [s["token_id"] for s in batch["steps"]] == ids[: stop_at + 1]
    assert run.output_text == batch["output_text"] == proc.decode(ids[:stop_at])
    assert run.status == batch["status"] == "complete"


def test_a_run_copied_elsewhere_imports_with_its_images(dataset, tmp_path, monkeypatch):
    """`v1studio trace --out` with the demo model, the folder copied to another machine, `v1studio import` of the
    copy into a fresh store: every trace has its image (the viewer draws it), the run's summaries are not read."""
    import shutil

    from storage import Store
    from storage.importer import import_path

    out = tmp_path / "gpu" / "runs"
    r = _cli("trace", str(dataset / "data.jsonl"), "--out", str(out), "--max-new-tokens", "4", "--limit", "3")
    assert r.returncode == 0, r.stderr
    assert (out / "summary-rank000.json").is_file() and len(list((out / "images").iterdir())) == 3
    laptop = tmp_path / "laptop" / "runs"
    shutil.copytree(out, laptop)
    db = f"sqlite:///{tmp_path / 'laptop' / 'v1studio.db'}"
    store = Store(db)
    try:
        rep = import_path(store, laptop)
        assert rep.ok and rep.imported == 3, rep.errors
        assert not any("summary" in f for f in rep.files)
        shas = [store.get_trace(tid).image_sha256 for tid in rep.trace_ids]
        for sha in shas:
            assert (laptop / "images" / f"{sha}.png").read_bytes() == store.get_image_bytes(sha)
    finally:
        store.close()
    from app import resources  # the viewer's image loader finds the picture

    monkeypatch.setenv("V1STUDIO_DB", db)
    assert all(resources.trace_image(sha) is not None for sha in shas)
