"""A PostgreSQL server for the storage tests: $V1STUDIO_TEST_PG_URL, else a throwaway local cluster started once
per test session in a temp dir on 127.0.0.1 with Debian's binaries (as the `postgres` user when running as root),
stopped at exit."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

_PG: dict[str, Any] = {}


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


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
    port = free_port()
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
