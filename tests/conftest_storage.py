"""Shared fixtures and trace builders for the storage tests (imported by tests/test_storage*.py).

Traces are built directly (numpy pointers), no model. The PostgreSQL cluster is started once per test session
(module-level singleton, so importing these fixtures into several test modules still starts one server) in a
temp dir on 127.0.0.1 with Debian's binaries, as the `postgres` user when running as root.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from v1core.copy_tokens import COPY_TOKEN_START
from v1core.geometry import PatchGrid
from v1core.trace import DecodingSettings, Step, Trace

COPY0 = COPY_TOKEN_START


# ----------------------------------------------------------------------------- trace builders
def grid_for(size: tuple[int, int]) -> PatchGrid:
    return PatchGrid.for_image(size[0], size[1])


def region_markup(grid: PatchGrid, box: Sequence[float], key: str | None = "<obj0>") -> tuple[str, list[int]]:
    patches = grid.bbox_to_patches(box)
    return (f"{key or ''}<region>{grid.region_text(box)}", patches)


def make_trace(
    *,
    image_size: tuple[int, int] = (640, 480),
    boxes: Sequence[tuple[str, Sequence[float]]] = (("triangle", (100, 120, 220, 230)),),
    answer: str = "red",
    question: str = "What colour is the triangle?",
    pointers: bool = True,
    seed: int = 0,
    model_id: str = "v1-test",
    status: str = "complete",
    tags: Sequence[str] = (),
    image_sha256: str = "ab" * 32,
    keyed: bool = True,
    **kw: Any,
) -> Trace:
    """A v1-format trace: `<think>… detect(query=…, objects=["<objN><region>[box]<|copy_k|>…</region>"]) …</think>`
    with one step per word and one step per copy token, and random (normalised) pointers."""
    rng = np.random.default_rng(seed)
    grid = grid_for(image_size)
    rows, cols = grid.shape
    pieces: list[tuple[str, int | None]] = [("<think>", None), ("Looking", None), (" at", None), (" it.", None)]
    for k, (query, box) in enumerate(boxes):
        head, patches = region_markup(grid, box, f"<obj{k}>" if keyed else None)
        pieces.append((f' detect(query="{query}", objects=["{head}', None))
        for p in patches:
            pieces.append((f"<|copy_{p}|>", p))
        pieces.append(('</region>"])', None))
        pieces.append((" The", None))
        pieces.append((f" {query} is {answer}.", None))
    pieces += [("</think>", None), (answer, None)]
    steps = []
    for i, (txt, patch) in enumerate(pieces):
        ptr = None
        if pointers:
            logits = rng.normal(size=(rows, cols)).astype(np.float32) * 2
            if patch is not None:
                logits.flat[patch] += 6
            e = np.exp(logits - logits.max())
            ptr = (e / e.sum()).astype(np.float32)
        steps.append(Step(
            index=i, token_id=(COPY0 + patch) if patch is not None else 1000 + i, text=txt, is_copy=patch is not None,
            patch=patch, p_copy=float(rng.random()), entropy=float(rng.random() * 3),
            topk_ids=[1, 2, 3], topk_texts=["a", "b", "c"], topk_probs=[0.5, 0.25, 0.125], pointer=ptr,
        ))
    rw, rh = grid.resized
    return Trace(
        model_id=model_id, image_sha256=image_sha256, image_size=tuple(image_size), resized_size=(rw, rh),
        grid=(rows, cols), question=question, system_prompt="You are v1.", settings=DecodingSettings(seed=seed),
        steps=steps, output_text="".join(t for t, _ in pieces), timings={"prefill_s": 0.125, "decode_s": 1.5},
        status=status, prompt_tokens=321, tags=list(tags), meta={"note": "ünïcode ✓"}, **kw,
    )


def big_trace(n_steps: int = 2000, grid: tuple[int, int] = (40, 50), seed: int = 0) -> Trace:
    """A long trace on a 2,000-patch grid (benchmark-sized); every 50th step copies a patch."""
    rng = np.random.default_rng(seed)
    rows, cols = grid
    ptr = rng.random((n_steps, rows, cols), dtype=np.float32)
    ptr /= ptr.sum(axis=(1, 2), keepdims=True)
    steps = []
    for i in range(n_steps):
        copy = i % 50 == 49
        patch = int(rng.integers(rows * cols)) if copy else None
        steps.append(Step(index=i, token_id=COPY0 + patch if copy else 1000 + i % 500,
                          text=f"<|copy_{patch}|>" if copy else f" w{i}", is_copy=copy, patch=patch,
                          p_copy=float(rng.random()), entropy=float(rng.random()), topk_ids=[1, 2, 3, 4, 5],
                          topk_texts=["a", "b", "c", "d", "e"], topk_probs=[0.4, 0.2, 0.1, 0.05, 0.01],
                          pointer=ptr[i]))
    return Trace(model_id="v1-bench", image_sha256="cd" * 32, image_size=(cols * 28, rows * 28),
                 resized_size=(cols * 28, rows * 28), grid=(rows, cols), question="Long?", steps=steps,
                 output_text="".join(s.text for s in steps))


def png_bytes(size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- PostgreSQL
_PG: dict[str, Any] = {}


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    import pwd

    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--", *cmd]
        return ["su", user, "-s", "/bin/sh", "-c", " ".join(cmd)]
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


def _stop_pg() -> None:
    if not _PG.get("pgdata"):
        return
    subprocess.run(_as_user([_PG["pg_ctl"], "-D", _PG["pgdata"], "-m", "immediate", "stop"]),
                   capture_output=True, timeout=60)
    shutil.rmtree(_PG["tmp"], ignore_errors=True)
    _PG.clear()


def pg_server() -> str:
    """Base URL (no database) of a PostgreSQL server: $V1STUDIO_TEST_PG_URL, else a throwaway local cluster.
    Skips (with the reason) only when no PostgreSQL binaries exist."""
    if _PG.get("url"):
        return _PG["url"]
    env = os.environ.get("V1STUDIO_TEST_PG_URL")
    if env:
        _PG["url"] = env.rstrip("/")
        return _PG["url"]
    if _PG.get("error"):
        pytest.fail(_PG["error"])
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL binaries (initdb/pg_ctl) not found: install Debian's `postgresql` "
                    "(make install-test does) or set V1STUDIO_TEST_PG_URL")
    tmp = tempfile.mkdtemp(prefix="v1studio-pg-")
    os.chmod(tmp, 0o755)
    pgdata = os.path.join(tmp, "data")
    sock = os.path.join(tmp, "sock")
    os.makedirs(sock)
    if os.geteuid() == 0:
        import pwd

        user = "postgres"
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            pw = pwd.getpwnam("nobody")
        for p in (tmp, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    _PG.update(tmp=tmp, pgdata=pgdata, pg_ctl=pg_ctl)
    try:
        subprocess.run(_as_user([initdb, "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                 "--no-sync"]), check=True, capture_output=True, timeout=180)
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c max_connections=60"
        subprocess.run(_as_user([pg_ctl, "-D", pgdata, "-o", opts, "-l", os.path.join(tmp, "log"), "-w",
                                 "-t", "120", "start"]), check=True, capture_output=True, timeout=180)
    except subprocess.CalledProcessError as exc:
        log = Path(tmp, "log").read_text() if Path(tmp, "log").exists() else ""
        _PG["error"] = f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}\n{log}"
        _stop_pg()
        _PG["error"] = _PG.get("error") or "could not start PostgreSQL"
        pytest.fail(_PG["error"])
    atexit.register(_stop_pg)
    _PG["url"] = f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    return _PG["url"]


def new_pg_database() -> str:
    """A fresh, empty database on the test server; returns its URL."""
    import psycopg

    base = pg_server()
    name = "t_" + uuid.uuid4().hex[:12]
    dsn = re.sub(r"^postgresql\+psycopg://", "postgresql://", base) + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A fresh store URL for each backend (the whole storage suite runs on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return new_pg_database()


@pytest.fixture
def store(db_url):
    from storage import Store

    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    from storage import Store

    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


__all__ = ["COPY0", "big_trace", "db_url", "grid_for", "make_trace", "new_pg_database", "pg_server", "png_bytes",
           "sqlite_store", "store"]
