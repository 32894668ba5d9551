"""storage's CLI commands, registered on the `v1studio` typer app by `app.cli`:

    v1studio db upgrade [--db URL]
    v1studio db check   [--db URL]
    v1studio export {v1g,hf,traces,labelstudio} OUT [--verdict … --annotator … --tag … --only-corrected --images …]
    v1studio import FILE_OR_FOLDER [--kind auto|traces|v1g]
    v1studio annotators list | set-role NAME {annotator,reviewer}
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from v1core.copy_tokens import COPY_TOKEN_START

db_app = typer.Typer(help="Database maintenance (Alembic migrations).", no_args_is_help=True)
annotators_app = typer.Typer(help="Annotators and their roles (reviewers may delete traces and adjudicate).",
                              no_args_is_help=True)
export_app = typer.Typer(help="Export labelled traces as training data (v1g JSONL, HF parquet), full traces, or "
                              "Label Studio tasks.", no_args_is_help=True)

DB_HELP = "store URL or SQLite path (default: $V1STUDIO_DB, else ./data/v1studio.db)"


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(export_app, name="export")
    app.command("import")(import_cmd)
    app.add_typer(annotators_app, name="annotators")


def _store(db: Optional[str]):
    from .store import Store

    return Store(db)


def _label(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ----------------------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
               revision: str = typer.Option("head", help="target revision")) -> None:
    """Apply Alembic migrations (the app and every command also do this at start-up)."""
    from .db import make_engine, resolve_url, upgrade

    url = resolve_url(db)
    engine = make_engine(url)
    try:
        rev = upgrade(engine, revision)
    finally:
        engine.dispose()
    typer.echo(f"{_label(url)}: schema at revision {rev}")


@db_app.command("check")
def db_check(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Integrity check (SQLite `PRAGMA integrity_check`) and counts."""
    store = _store(db)
    try:
        res = store.integrity_check()
        typer.echo(f"{_label(store.url)}: integrity {res}; {store.count_traces()} trace(s), "
                   f"{store.count_traces(annotated=True)} annotated")
        if res != "ok":
            raise typer.Exit(1)
    finally:
        store.close()


# ----------------------------------------------------------------------------- annotators
@annotators_app.command("list")
def annotators_list(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Everyone who saved an annotation or signed in, with their role."""
    store = _store(db)
    try:
        rows = store.list_annotators()
        for a in rows:
            typer.echo(f"{a.name}\t{a.role}\t{a.created_at}")
        if not rows:
            typer.echo("no annotators yet")
    finally:
        store.close()


@annotators_app.command("set-role")
def annotators_set_role(name: str = typer.Argument(..., help="annotator name (or login e-mail)"),
                        role: str = typer.Argument(..., help="annotator or reviewer"),
                        db: Optional[str] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Give someone a role (creates the annotator if new)."""
    store = _store(db)
    try:
        store.add_annotator(name.strip(), role=role.strip().lower())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="ROLE") from None
    finally:
        store.close()
    typer.echo(f"{name.strip()} is now a {role.strip().lower()}")


# ----------------------------------------------------------------------------- export
def _fail(exc: BaseException, code: int = 2) -> typer.Exit:
    """Print an error as one sentence on stderr; the caller raises the returned Exit."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        msg = f"{exc.strerror}{where}"
    else:
        msg = str(exc) or type(exc).__name__
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def _export(kind: str, out: Path, db: Optional[str], force: bool = False, **kw) -> None:
    from . import export
    from .errors import StorageError
    from .files import check_export_target

    try:
        store = _store(db)
    except (ValueError, StorageError, OSError) as exc:
        raise _fail(exc) from None
    try:
        try:
            check_export_target(out, force=force, folder_ok=kind == "hf")  # after the store registered its files
        except ValueError as exc:
            raise _fail(exc) from None
        fn = {"v1g": export.export_v1g, "hf": export.export_hf, "traces": export.export_traces,
              "labelstudio": export.export_labelstudio}[kind]
        kw = {k: v for k, v in kw.items() if v is not None or k == "verdict"}
        try:
            report = fn(store, out, progress=sys.stderr.isatty(), **kw)
        except (ValueError, StorageError) as exc:
            raise _fail(exc) from None
        except OSError as exc:  # a full disk, a read-only folder: nothing half-written (atomic_write)
            raise _fail(exc, 1) from None
    finally:
        store.close()
    for line in report.skipped:
        typer.echo(f"skipped {line}", err=True)
    typer.echo(report.summary())


_VERDICT = typer.Option(None, "--verdict", help="keep traces whose current verdict is this (repeatable)")
_ANNOTATOR = typer.Option(None, "--annotator", help="keep traces whose current annotation is by this person")
_TAG = typer.Option(None, "--tag", help="keep traces with this tag (trace or annotation tag)")
_ONLY = typer.Option(False, "--only-corrected", help="keep only traces with a corrected or added region")
_MODEL = typer.Option(None, "--model", help="keep traces of this model_id")
_ALL = typer.Option(False, "--all", help="every labelled trace (default: those judged correct or with a corrected "
                                         "or added region)")
_DB = typer.Option(None, "--db", help=DB_HELP)
_FORCE = typer.Option(False, "--force", help="overwrite an existing file that does not look like an export "
                                             "(never the database itself)")


def _training_verdict(verdict: Optional[List[str]], take_all: bool) -> object:
    from .export import TRAINING_DEFAULT

    return list(verdict) if verdict else (None if take_all else TRAINING_DEFAULT)


@export_app.command("v1g")
def export_v1g_cmd(out: Path = typer.Argument(..., help="output .jsonl"), verdict: Optional[List[str]] = _VERDICT,
                   annotator: Optional[str] = _ANNOTATOR, tag: Optional[str] = _TAG, only_corrected: bool = _ONLY,
                   model: Optional[str] = _MODEL, take_all: bool = _ALL,
                   images: str = typer.Option("path",
                                              help="path (files in images/ next to OUT) | embed (base64) | none"),
                   db: Optional[str] = _DB, force: bool = _FORCE) -> None:
    """The training rows (published v1g columns + v1 Studio's) as JSON lines; for the official train.py use hf."""
    _export("v1g", out, db, force, verdict=_training_verdict(verdict, take_all), annotator=annotator, tag=tag,
            only_corrected=only_corrected, model=model, images=images)


@export_app.command("hf")
def export_hf_cmd(out: Path = typer.Argument(..., help="output folder (train-NNNNN.parquet shards) or file.parquet"),
                  verdict: Optional[List[str]] = _VERDICT, annotator: Optional[str] = _ANNOTATOR,
                  tag: Optional[str] = _TAG, only_corrected: bool = _ONLY, model: Optional[str] = _MODEL,
                  take_all: bool = _ALL,
                  images: str = typer.Option("embed", help="embed (bytes in parquet) | path | none"),
                  db: Optional[str] = _DB, force: bool = _FORCE) -> None:
    """The published v1g parquet layout: the official train.py and datasets.load_dataset("parquet", …) open it."""
    _export("hf", out, db, force, verdict=_training_verdict(verdict, take_all), annotator=annotator, tag=tag,
            only_corrected=only_corrected, model=model, images=images)


@export_app.command("traces")
def export_traces_cmd(out: Path = typer.Argument(..., help="output .jsonl"),
                      verdict: Optional[List[str]] = _VERDICT, tag: Optional[str] = _TAG, model: Optional[str] = _MODEL,
                      status: Optional[List[str]] = typer.Option(None, "--status",
                                                                 help="running/complete/failed/cancelled"),
                      images: str = typer.Option("none", help="none | path | embed"),
                      db: Optional[str] = _DB, force: bool = _FORCE) -> None:
    """Full traces (float16 pointers) with annotation history; `v1studio import` reads them back."""
    _export("traces", out, db, force, verdict=verdict or None, tag=tag, model=model, status=status or None,
            images=images)


@export_app.command("labelstudio")
def export_labelstudio_cmd(out: Path = typer.Argument(..., help="output .json"),
                           verdict: Optional[List[str]] = _VERDICT, annotator: Optional[str] = _ANNOTATOR,
                           tag: Optional[str] = _TAG, only_corrected: bool = _ONLY, model: Optional[str] = _MODEL,
                           images: str = typer.Option("path", help="path | embed (data URIs) | none"),
                           db: Optional[str] = _DB, force: bool = _FORCE) -> None:
    """Label Studio tasks: model boxes as predictions, current annotation as annotations (percent boxes)."""
    _export("labelstudio", out, db, force, verdict=verdict or None, annotator=annotator, tag=tag,
            only_corrected=only_corrected, model=model, images=images)


# ----------------------------------------------------------------------------- import
def import_cmd(
    source: Path = typer.Argument(..., help="full-trace JSONL, v1g JSONL/parquet, or a folder of them"),
    kind: str = typer.Option("auto", help="auto | traces | v1g"),
    model_id: str = typer.Option("v1g-data", help="model_id recorded for imported v1g rows"),
    copy_token_start: int = typer.Option(COPY_TOKEN_START, help="id of <|copy_0|> for v1g rows"),
    images_root: Optional[Path] = typer.Option(None, "--images-root",
                                               help="folder image paths in the rows may point into (default: the "
                                                    "imported file's folder; nothing outside it is read)"),
    db: Optional[str] = _DB,
) -> None:
    """Import traces; every bad line is reported with its line number, good lines are imported."""
    from .errors import StorageError
    from .importer import import_path

    try:
        store = _store(db)
    except (ValueError, StorageError, OSError) as exc:
        raise _fail(exc) from None
    try:
        try:
            report = import_path(store, source, kind=kind, model_id=model_id, copy_token_start=copy_token_start,
                                 progress=sys.stderr.isatty(), images_root=images_root)
        except (ValueError, StorageError, OSError) as exc:
            raise _fail(exc) from None
    finally:
        store.close()
    for err in report.errors:
        typer.echo(str(err), err=True)
    typer.echo(report.summary())
    if report.errors:
        raise typer.Exit(1)


__all__ = ["register"]


@export_app.command("preferences")
def export_preferences_cmd(out: Path = typer.Argument(..., help="output .jsonl"),
                           images: str = typer.Option("path", help="path (files in images/ next to OUT) | none"),
                           db: Optional[str] = _DB) -> None:
    """DPO-style pairs: chosen = a re-decoded branch whose answer an annotator marked correct, rejected = its parent."""
    from .preferences import export_preferences

    store = _store(db)
    try:
        report = export_preferences(store, out, images=images)
    finally:
        store.close()
    typer.echo(report.summary())
