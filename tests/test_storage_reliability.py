"""storage reliability: concurrent annotators (8 processes × 200 saves), writers killed with SIGKILL mid-transaction,
concurrent start-up migrations, and migrations that match the ORM metadata. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storage import Annotation, Store, TraceNotFound
from tests.builders import make_trace
from tests.postgres import new_pg_database

ROOT = Path(__file__).resolve().parent.parent

SAVER = textwrap.dedent("""
    import json, sys, time
    from storage import Annotation, AnnotationConflict, Store
    url, worker, n, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    ids = json.loads(sys.argv[5])
    store = Store(url)
    while time.time() < start_at:
        time.sleep(0.005)
    saved, conflicts, failures = 0, 0, []
    for i in range(n):
        tid = ids[(worker + i) % len(ids)]
        ann = Annotation(annotator=f"w{worker}", verdict=("correct", "incorrect", "unsure")[i % 3],
                         note=f"{worker}:{i}", tags=[f"w{worker}"])
        try:
            if i % 2:  # optimistic: the own head this worker just loaded
                view = store.annotation_view(tid, ann.annotator)
                store.save_annotation(tid, ann, expected_version=view.own_version)
            else:
                store.save_annotation(tid, ann)
            saved += 1
        except AnnotationConflict:
            conflicts += 1  # stored as a conflict version: still a save
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    store.close()
    print(json.dumps({"saved": saved, "conflicts": conflicts, "failures": failures[:5], "n_failures": len(failures)}))
""")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _concurrent_saves(url: str, workers: int, per_worker: int, n_traces: int = 4) -> None:
    s = Store(url)
    ids = []
    for i in range(n_traces):
        t = make_trace(seed=i)
        s.save_trace(t)
        ids.append(t.trace_id)
    s.close()
    start_at = time.time() + 4.0  # every worker imported and connected before the first save
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, url, str(k), str(per_worker), str(start_at),
                               json.dumps(ids)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for k in range(workers)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    failures = [f for r in results for f in r["failures"]]
    assert sum(r["n_failures"] for r in results) == 0, failures
    assert sum(r["saved"] + r["conflicts"] for r in results) == workers * per_worker

    s = Store(url)
    try:
        notes = set()
        total = 0
        for tid in ids:
            hist = s.annotation_history(tid)
            total += len(hist)
            assert [h.version for h in hist] == list(range(1, len(hist) + 1))  # no gaps, no duplicates
            notes |= {h.annotation.note for h in hist}
            heads = s.heads_by_trace([tid])[tid].annotators  # each worker's own head is its newest save
            names = {h.annotator for h in hist}
            assert {n: r.version for n, r in heads.items()} == {
                n: max(h.version for h in hist if h.annotator == n and not h.conflict) for n in names}
        assert total == workers * per_worker
        assert notes == {f"{k}:{i}" for k in range(workers) for i in range(per_worker)}  # every save is stored
        assert s.integrity_check() == "ok"
    finally:
        s.close()


def test_8_processes_x_200_saves_on_sqlite(tmp_path):
    _concurrent_saves(f"sqlite:///{tmp_path / 'busy.db'}", workers=8, per_worker=200)


@pytest.mark.postgres
def test_concurrent_saves_on_postgresql():
    _concurrent_saves(new_pg_database(), workers=8, per_worker=50)


KILLED = textwrap.dedent("""
    import sys, time
    import storage.store as st
    from v1core.synthetic import big_trace
    url, trace_id = sys.argv[1], sys.argv[2]
    store = st.Store(url)
    original = st.Transaction.write_trace
    def stalled(self, prepared, **kw):
        out = original(self, prepared, **kw)
        self.session.flush()
        print("INSIDE", flush=True)  # every row of the trace is written, the transaction is still open
        time.sleep(300)
        return out
    st.Transaction.write_trace = stalled
    t = big_trace(20, 30, 400)
    t.trace_id = trace_id
    store.save_trace(t)
""")


def test_writer_killed_mid_transaction_leaves_no_partial_trace(db_url):
    s = Store(db_url)
    kept = make_trace()
    s.save_trace(kept)
    s.close()
    victim = "f" * 32
    p = subprocess.Popen([sys.executable, "-c", KILLED, db_url, victim], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "INSIDE", p.stderr.read()[-3000:]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    s = Store(db_url)
    try:
        assert s.integrity_check() == "ok"
        assert [t.trace_id for t in s.list_traces(include_deleted=True)] == [kept.trace_id]
        with pytest.raises(TraceNotFound):
            s.get_trace(victim)
        with s.engine.connect() as conn:  # not a single orphan row of the killed transaction
            for table in ("trace_chunks", "revisits", "trace_tags"):
                n = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table} WHERE trace_id = '{victim}'").scalar()
                assert n == 0, table
        t = make_trace()
        t.trace_id = victim
        s.save_trace(t)  # the lock died with the writer
        assert s.save_annotation(victim, Annotation(annotator="ana", verdict="correct")) == 1
        assert s.get_trace(victim).to_dict(include_pointers=False) == t.to_dict(include_pointers=False)
    finally:
        s.close()


LOOPER = textwrap.dedent("""
    import sys
    from storage import Annotation, Store
    from v1core.synthetic import big_trace
    store = Store(sys.argv[1])
    print("READY", flush=True)
    i = 0
    while True:
        t = big_trace(20, 30, 150, seed=i)
        store.save_trace(t)
        store.save_annotation(t.trace_id, Annotation(annotator="loop", verdict="correct", note=str(i)))
        i += 1
""")


def test_writer_killed_at_random_moments_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    Store(url).close()
    for delay in (0.7, 1.3, 2.1):
        p = subprocess.Popen([sys.executable, "-c", LOOPER, url], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "READY", p.stderr.read()[-3000:]
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    s = Store(url)
    try:
        assert s.integrity_check() == "ok"
        rows = s.list_traces(limit=None)
        assert rows, "the writer never committed anything"
        for r in rows:
            t = s.get_trace(r.trace_id)  # every visible trace is whole
            assert len(t.steps) == r.n_steps == 150 and t.has_pointers
    finally:
        s.close()


def test_concurrent_startup_migrates_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = "import sys, time; from storage import Store; time.sleep(max(0, float(sys.argv[2]) - time.time())); " \
           "s = Store(sys.argv[1]); print(s.count_traces())"
    start_at = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", code, url, start_at], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        assert out.strip() == "0"


def test_migrations_match_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config, current_revision, make_engine, upgrade
    from storage.schema import HEAD_REVISION, metadata

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == HEAD_REVISION
        assert upgrade(engine) == HEAD_REVISION  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_migrations_downgrade_and_upgrade_again(sqlite_store):
    from alembic import command

    from storage.db import alembic_config, current_revision, write_engine

    with write_engine(sqlite_store.engine).begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert current_revision(sqlite_store.engine) is None
    from storage.db import upgrade

    upgrade(sqlite_store.engine)
    sqlite_store.save_trace(make_trace())
    assert sqlite_store.count_traces() == 1
