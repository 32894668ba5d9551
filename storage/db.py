"""Engine set-up: URL resolution, SQLite pragmas (WAL, busy timeout, foreign keys), PostgreSQL via psycopg 3,
and Alembic migrations applied programmatically (works from an installed package)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from .schema import HEAD_REVISION

DB_ENV = "V1STUDIO_DB"
DEFAULT_DB = Path("data") / "v1studio.db"
BUSY_TIMEOUT_S = 60.0
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x76317374  # "v1st": advisory lock serialising concurrent migrations on PostgreSQL


def resolve_url(url: str | None = None) -> str:
    """`url`, else $V1STUDIO_DB, else ./data/v1studio.db. A plain path means a SQLite file; `postgresql://` and
    `postgres://` mean psycopg 3. The folder of a SQLite file is created."""
    raw = (url if url is not None else os.environ.get(DB_ENV, "")).strip()
    if not raw:
        raw = str(DEFAULT_DB)
    if "://" not in raw:
        path = Path(raw).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if raw.startswith("postgres://"):
        raw = "postgresql+psycopg://" + raw[len("postgres://"):]
    elif raw.startswith("postgresql://"):
        raw = "postgresql+psycopg://" + raw[len("postgresql://"):]
    u = make_url(raw)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return raw


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for `url` (see `resolve_url`).

    SQLite: WAL journal, `synchronous=FULL` (a committed annotation survives a crash or power cut), foreign keys
    on, a busy timeout, and the driver's own transaction handling switched off so that writes start with
    `BEGIN IMMEDIATE` (a writer waits for the lock up front instead of failing with "database is locked" when it
    upgrades a read transaction). Use `write_engine(engine)` for connections that will write.
    """
    url = resolve_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        connect_args = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
        memory = not u.database or u.database == ":memory:"
        if memory:
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA page_size=16384")  # only takes effect on a new file: fewer overflow pages for blobs
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            mode = "IMMEDIATE" if conn.get_execution_options().get("v1_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def write_engine(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the write lock at BEGIN on SQLite."""
    return engine.execution_options(v1_write=True)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:  # noqa: BLE001 - no table yet
            return None


def alembic_config(connection: Any = None, url: str | None = None) -> Any:
    """An Alembic Config built in code (no ini file needed): script location inside the package."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Apply migrations up to `revision`; safe when several processes start at once (the first one migrates
    under the write lock, the others find the schema current). Returns the revision now in force."""
    if revision == "head" and current_revision(engine) == HEAD_REVISION:
        return HEAD_REVISION
    from alembic import command

    with write_engine(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        command.upgrade(alembic_config(conn), revision)
    return current_revision(engine)


__all__ = ["DB_ENV", "DEFAULT_DB", "alembic_config", "current_revision", "is_sqlite", "make_engine",
           "resolve_url", "upgrade", "write_engine"]
