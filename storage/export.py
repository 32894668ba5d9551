"""Exports: training data (v1g rows as HF parquet or JSONL), full traces JSONL, Label Studio JSON.

Training exports (`export_hf`, `export_v1g`) write one row per *labelled, complete* trace in the published v1g
layout (`v1core.v1g`, the one home of the format; what the official `train.py` loads):
- the rows are built by `v1core.v1g.row_from_trace`: every region occurrence in the output text (inside
  `detect(...)` and wherever an object recurs) becomes its `<objN>` key, `regions` holds the boxes in
  original-image pixels. An imported published row re-exports with its `id`, `regions` (numbers and their
  int/float types) and text unchanged unless an annotator changed something;
- a revisit labelled `wrong_region` gets the annotator's corrected region (their box, else their cells mapped
  onto the training geometry), for every occurrence of its key; added revisits are inserted as
  `detect(query="…", objects=["<objN>"])` before the step they were added at, spaced from the text around;
- the human turn is the exact prompt the model saw (`v1core.v1g.user_text_of`: an imported row's user text, a
  live trace's question with the prompt suffix it was decoded with);
- a trace with a `wrong_region` label but no corrected region, a correction of a revisit outside a region, or a
  region with no box to give it is skipped (reported with the reason).

**Which traces.** By default (`verdict=TRAINING_DEFAULT`) the traces judged correct or carrying a corrected or
added region, since those are the rows a researcher fine-tunes on; pass `verdict=` one or a list of verdicts, or
`verdict=None` for every labelled trace. The report's `selection` says which was used.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from v1core import v1g
from v1core.copy_tokens import COPY_RE

from .annotations import AnnotationRecord
from .codec import trace_to_json
from .files import IMAGE_EXTENSIONS, IMAGE_MODES, ImageFiles, atomic_write, check_image_mode
from .records import StoredRevisit

if TYPE_CHECKING:
    from v1core.trace import Trace

    from .schema import TraceRow
    from .store import Store

TRAINING_DEFAULT = "correct-or-corrected"
"""The default `verdict` of training exports: traces judged correct, or with a corrected / added region."""


class SkipRow(Exception):
    """This trace cannot become a training row (the message says why)."""


@dataclass
class ExportReport:
    path: str
    kind: str
    rows: int = 0
    skipped: list[str] = field(default_factory=list)  # "trace_id: reason"
    images_written: int = 0
    images_missing: int = 0
    files: list[str] = field(default_factory=list)
    selection: str = ""  # which traces were taken, in words

    def summary(self) -> str:
        parts = [f"{self.rows} row(s) → {self.path}"]
        if self.selection:
            parts.append(self.selection)
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        if self.images_written:
            parts.append(f"{self.images_written} image file(s) written")
        if self.images_missing:
            parts.append(f"{self.images_missing} image(s) not in the store")
        return f"{self.kind} export: " + ", ".join(parts)


# ----------------------------------------------------------------------------- selection
def describe_selection(verdict: Any = TRAINING_DEFAULT, only_corrected: bool = False) -> str:
    """The selection of a training export in words (the report and the Export page show it)."""
    if only_corrected:
        what = "traces with a corrected or added region"
    elif verdict == TRAINING_DEFAULT:
        what = "traces judged correct or with a corrected/added region (the default)"
    elif verdict is None or verdict == []:
        what = "every labelled trace"
    else:
        vs = [verdict] if isinstance(verdict, str) else list(verdict)
        what = "traces judged " + " or ".join(vs)
    return "selected: complete " + what


def _is_default(verdict: Any) -> bool:
    return isinstance(verdict, str) and verdict == TRAINING_DEFAULT


def _labelled(store: "Store", *, verdict: Any = TRAINING_DEFAULT, annotator: str | None = None,
              tag: str | None = None, only_corrected: bool = False, model: str | None = None,
              trace_ids: Sequence[str] | None = None, batch: int = 500, report: "ExportReport | None" = None
              ) -> Iterator[tuple["TraceRow", AnnotationRecord, list[StoredRevisit]]]:
    """Complete, annotated traces matching the filters, with the head the export uses (`Store.export_heads`:
    consensus, else the single annotator's, else the agreeing heads') and their revisits. Traces whose
    annotators disagree with no ruling are listed in `report.skipped` with that reason. The default selection
    (`TRAINING_DEFAULT`) keeps the traces whose export head is judged correct or has a corrected/added region."""
    default = _is_default(verdict) and not only_corrected
    filters: dict[str, Any] = dict(annotated=True, status="complete", verdict=None if _is_default(verdict) else verdict,
                                   annotator=annotator, tag=tag, model=model, trace_ids=trace_ids)
    if only_corrected:
        filters["has_corrections"] = True
    for rows in store.iter_trace_rows(batch=batch, **filters):
        ids = [r.id for r in rows]
        heads = store.export_heads(ids)
        revs = store.revisits_by_trace(ids)
        for r in rows:
            head = heads[r.id]
            if head.record is not None:
                rec = head.record
                if default and not (rec.verdict == "correct" or rec.annotation.has_corrections):
                    continue
                yield r, rec, revs[r.id]
            elif report is not None:
                report.skipped.append(f"{r.id}: {head.reason}")


def _count(store: "Store", **kw: Any) -> int:
    only = kw.pop("only_corrected", False)
    kw = {k: v for k, v in kw.items() if k in ("verdict", "annotator", "tag", "model", "trace_ids")}
    base = dict(annotated=True, status="complete", **kw)
    if only:
        base["has_corrections"] = True
    if _is_default(kw.get("verdict")):
        if only:
            base["verdict"] = None
            return store.count_traces(**base)
        base.pop("verdict")
        return (store.count_traces(verdict="correct", **base) + store.count_traces(has_corrections=True, **base)
                - store.count_traces(verdict="correct", has_corrections=True, **base))
    return store.count_traces(**base)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="trace", disable=not enabled, dynamic_ncols=True)


# ----------------------------------------------------------------------------- v1g row construction
def training_row(trace: "Trace", rec: AnnotationRecord) -> v1g.V1GRow:
    """The v1g row (published layout, `v1core.v1g.V1GRow`) of one labelled trace: its current annotation's
    corrected and added regions applied by `v1core.v1g.row_from_trace`. Raises `SkipRow` with the reason when
    the trace cannot become a training row."""
    ann = rec.annotation
    corrections: dict[int, v1g.RegionEdit] = {}
    for lab in ann.revisit_labels:
        if lab.label != "wrong_region":
            continue
        if not lab.has_correction:
            raise SkipRow(f"revisit {lab.revisit_index} is marked wrong_region without a corrected region")
        corrections[lab.revisit_index] = v1g.RegionEdit(box=lab.corrected_box,
                                                        patches=tuple(lab.corrected_patches or ()))
    added = [v1g.AddedRegion(box=a.box, patches=tuple(a.patches or ()), step=a.step, query=a.query)
             for a in ann.added_revisits]
    try:
        row = v1g.row_from_trace(trace, corrections=corrections, added=added)
    except ValueError as exc:
        raise SkipRow(str(exc)) from None
    if COPY_RE.search(row.gpt_text):  # copies outside any region (or a region without a box) stay as written:
        geometry = v1g.training_geometry_of(trace)  # right only where training sees the trace's own grid
        if trace.patch_grid() != geometry.grid:
            raise SkipRow(f"copy tokens outside a region refer to the {trace.grid[0]}×{trace.grid[1]} inference "
                          f"grid, training uses {geometry.shape[0]}×{geometry.shape[1]}; they cannot be written")
    return row


def _training_rows(store: "Store", report: "ExportReport", bar: Any, **filters: Any
                   ) -> Iterator[tuple["TraceRow", AnnotationRecord, v1g.V1GRow]]:
    """Labelled rows with their v1g row; a row that cannot become training data is recorded in
    `report.skipped` with its reason (shared by the v1g JSONL and Hugging Face exports). Steps are read without
    pointers, one trace at a time."""
    report.selection = describe_selection(filters.get("verdict", TRAINING_DEFAULT),
                                          filters.get("only_corrected", False))
    for row, rec, _revs in _labelled(store, report=report, **filters):
        bar.update(1)
        (trace,) = store.traces_for_rows([row], pointers=False)
        try:
            out = training_row(trace, rec)
        except SkipRow as exc:
            report.skipped.append(f"{row.id}: {exc}")
            continue
        yield row, rec, out


# ----------------------------------------------------------------------------- v1g JSONL
def export_v1g(store: "Store", out: str | os.PathLike, *, images: str = "path", verdict: Any = TRAINING_DEFAULT,
               annotator: str | None = None, tag: str | None = None, only_corrected: bool = False,
               model: str | None = None, trace_ids: Sequence[str] | None = None, progress: bool = False
               ) -> ExportReport:
    """The training rows as JSON lines: the published v1g columns (`id`, `image`, `conversations`, `regions` as
    a JSON string, `image_size`, `num_tokens`), then v1 Studio's own (`trace_id`, `image_sha256`, `verdict`,
    `answer_correct`, `annotator`, `annotation_version`).

    `datasets.load_dataset("json", data_files=OUT)` opens it (cast `image` to `datasets.Image()` from inside the
    export folder for the pictures); v1 Studio's importer and the demo trainer read it. For the official
    `train.py` use `export_hf` (parquet with embedded images), which has the same columns.

    `images`: 'path' (default) writes image files into `images/` next to OUT (`{"bytes": null, "path":
    "images/<sha>.<ext>"}`); 'embed' puts base64 bytes in the row (`{"bytes": "<base64>", "path": null}`, read
    by v1 Studio only); 'none' leaves them out. Filters: `verdict` (default: correct or corrected; one, a list,
    or None for every labelled trace), `annotator` (of the current annotation), `tag`, `only_corrected`,
    `model`, `trace_ids`."""
    check_image_mode(images)
    out = Path(out)
    report = ExportReport(str(out), "v1g")
    imgs = ImageFiles(store, images, out.parent, report)
    total = _count(store, verdict=verdict, annotator=annotator, tag=tag, only_corrected=only_corrected, model=model,
                   trace_ids=trace_ids)
    with atomic_write(out) as f, _progress(total, "export v1g", progress) as bar:
        for row, rec, vrow in _training_rows(store, report, bar, verdict=verdict, annotator=annotator,
                                             tag=tag, only_corrected=only_corrected, model=model,
                                             trace_ids=trace_ids):
            image: Any = None
            if images == "path":
                rel = imgs.relpath(row.image_sha256)
                image = None if rel is None else {"bytes": None, "path": rel}
            elif images == "embed":
                got = imgs.data(row.image_sha256)
                image = None if got is None else {"bytes": base64.b64encode(got[0]).decode("ascii"), "path": None}
            rec_out = vrow.to_dict(image=image)
            rec_out.update({
                "trace_id": row.id, "image_sha256": row.image_sha256, "verdict": rec.verdict,
                "answer_correct": rec.annotation.answer_correct, "annotator": rec.annotator,
                "annotation_version": rec.version,
            })
            f.write(json.dumps(rec_out, ensure_ascii=False) + "\n")
            report.rows += 1
    report.files.append(str(out))
    return report


# ----------------------------------------------------------------------------- Hugging Face parquet
def hf_features() -> Any:
    """The published v1g columns as `datasets.Features` (from `v1core.v1g.arrow_schema`)."""
    import datasets

    return datasets.Features.from_arrow_schema(v1g.arrow_schema())


def export_hf(store: "Store", out: str | os.PathLike, *, images: str = "embed", verdict: Any = TRAINING_DEFAULT,
              annotator: str | None = None, tag: str | None = None, only_corrected: bool = False,
              model: str | None = None, trace_ids: Sequence[str] | None = None, shard_rows: int = 10_000,
              progress: bool = False) -> ExportReport:
    """A parquet dataset in the published v1g layout (`v1core.v1g.arrow_schema`: `id`, `image` as an `Image`
    feature, `conversations` as ShareGPT turns with `<objN>` keys, `regions` as a JSON string, `image_size`,
    `num_tokens`) that `datasets.load_dataset("parquet", data_files=…)` and the official `train.py`
    (`load_dataset(folder, split="train")`) open. Ids: an imported row's own, else a numeric string
    (`v1core.v1g.numeric_id`, what `int()` accepts). OUT ending in `.parquet` is one file; otherwise a folder
    of `train-NNNNN.parquet` shards of `shard_rows` rows. `images`: 'embed' (default: bytes in the file),
    'path' (files in `images/`, absolute paths in the column) or 'none' (null). Selection as `export_v1g`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_image_mode(images)
    out = Path(out)
    single = out.suffix == ".parquet"
    base = out.parent if single else out
    report = ExportReport(str(out), "hf")
    imgs = ImageFiles(store, images, base, report)
    schema = v1g.arrow_schema()
    total = _count(store, verdict=verdict, annotator=annotator, tag=tag, only_corrected=only_corrected, model=model,
                   trace_ids=trace_ids)
    if not single:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("train-*.parquet"):
            old.unlink()
    shard = 0
    writer: Any = None
    tmp_path: Path | None = None
    final_path: Path | None = None
    in_shard = 0
    buf: list[dict[str, Any]] = []
    buf_bytes = 0

    def open_shard() -> None:
        nonlocal writer, tmp_path, final_path, in_shard
        final_path = out if single else out / f"train-{shard:05d}.parquet"
        tmp_path = final_path.with_name(final_path.name + ".tmp")
        writer = pq.ParquetWriter(str(tmp_path), schema)
        in_shard = 0

    def flush() -> None:
        nonlocal buf_bytes
        if buf:
            writer.write_table(pa.Table.from_pylist(buf, schema=schema))
            buf.clear()
            buf_bytes = 0

    def close_shard() -> None:
        nonlocal writer
        flush()
        writer.close()
        os.replace(tmp_path, final_path)  # type: ignore[arg-type]
        report.files.append(str(final_path))
        writer = None

    try:
        open_shard()
        with _progress(total, "export hf", progress) as bar:
            for row, _rec, vrow in _training_rows(store, report, bar, verdict=verdict, annotator=annotator,
                                                  tag=tag, only_corrected=only_corrected, model=model,
                                                  trace_ids=trace_ids):
                image: Any = None
                if images == "embed":
                    got = imgs.data(row.image_sha256)
                    image = None if got is None else {"bytes": got[0], "path": None}
                elif images == "path":
                    rel = imgs.relpath(row.image_sha256)
                    image = None if rel is None else {"bytes": None, "path": str((base / rel).resolve())}
                if not single and in_shard >= shard_rows:
                    close_shard()
                    shard += 1
                    open_shard()
                d = vrow.to_dict(image=image)
                buf.append(d)
                buf_bytes += len(d["conversations"][1]["value"]) + len((image or {}).get("bytes") or b"")
                in_shard += 1
                report.rows += 1
                if len(buf) >= 256 or buf_bytes >= BUFFER_BYTES:
                    flush()
        close_shard()
    finally:
        if writer is not None:
            writer.close()
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
    return report


BUFFER_BYTES = 32 * 2**20
"""Rows are written out once their text and images reach this many bytes (or 256 rows): memory stays bounded by
bytes whatever the size of a row."""


# ----------------------------------------------------------------------------- full traces
def export_traces(store: "Store", out: str | os.PathLike, *, images: str = "none", annotations: bool = True,
                  status: Any = None, tag: str | None = None, model: str | None = None, annotated: bool | None = None,
                  verdict: Any = None, trace_ids: Sequence[str] | None = None, progress: bool = False) -> ExportReport:
    """Every matching trace as `storage.codec.trace_to_json` (`Trace.to_dict()` with the pointers as one codec
    blob; the importer also reads the batch tracer's float16 `pointers_f16`) plus
    its annotation history under `"annotations"` (when it has one) and, with `images`, its image
    (`"image": {"path": "images/<sha>.png"}` or `{"bytes": base64}`). Export → import → export is byte-identical."""
    check_image_mode(images)
    out = Path(out)
    report = ExportReport(str(out), "traces")
    imgs = ImageFiles(store, images, out.parent, report)
    filters = dict(status=status, tag=tag, model=model, annotated=annotated, verdict=verdict, trace_ids=trace_ids)
    total = store.count_traces(**filters)
    with atomic_write(out) as f, _progress(total, "export traces", progress) as bar:
        for rows in store.iter_trace_rows(batch=50, **filters):
            ids = [r.id for r in rows]
            hist = store.history_by_trace(ids) if annotations else {}
            for tr in store.traces_for_rows(rows):
                d = trace_to_json(tr)
                if images == "path":
                    rel = imgs.relpath(tr.image_sha256)
                    if rel:
                        d["image"] = {"path": rel}
                elif images == "embed":
                    got = imgs.data(tr.image_sha256)
                    if got:
                        d["image"] = {"bytes": base64.b64encode(got[0]).decode("ascii"), "format": got[1]}
                if hist.get(tr.trace_id):
                    d["annotations"] = [r.to_dict() for r in hist[tr.trace_id]]
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                report.rows += 1
                bar.update(1)
    report.files.append(str(out))
    return report


# ----------------------------------------------------------------------------- Label Studio
def _ls_rect(box: Sequence[float], w: int, h: int, label: str, rid: str) -> dict[str, Any]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return {
        "id": rid, "from_name": "region", "to_name": "image", "type": "rectanglelabels",
        "original_width": w, "original_height": h, "image_rotation": 0,
        "value": {"x": 100.0 * x0 / w, "y": 100.0 * y0 / h, "width": 100.0 * (x1 - x0) / w,
                  "height": 100.0 * (y1 - y0) / h, "rotation": 0, "rectanglelabels": [label]},
    }


LS_LOCAL_FILES = "/data/local-files/?d="
"""Label Studio serves local files only under this URL, from a Local Storage inside
`LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT` (docs/EXPORT.md has the setup)."""


def export_labelstudio(store: "Store", out: str | os.PathLike, *, images: str = "path", verdict: Any = None,
                       annotator: str | None = None, tag: str | None = None, only_corrected: bool = False,
                       model: str | None = None, trace_ids: Sequence[str] | None = None,
                       document_root: str | os.PathLike | None = None, progress: bool = False) -> ExportReport:
    """Label Studio tasks (a JSON array) for `LABEL_STUDIO_CONFIG` (image + RectangleLabels `region` + Choices
    `verdict` + TextArea `note`): the model's revisit boxes as `predictions`, the annotation the export uses
    (`Store.export_heads`) as `annotations`. Boxes are in percent of the image.

    Every task has an integer `id` (`v1core.v1g.numeric_id` of the trace: the SDK's converter needs one), and
    `meta` = {trace_id, annotator, annotation_version, verdict, answer_correct, note} (Label Studio keeps a
    task's meta). Region ids say what each box is, so `v1studio import` reads an export back
    (`storage.importer.import_labelstudio`): `r<revisit>_<j>` a revisit's region (the model's boxes when the
    label is correct or unnecessary, the correction for wrong_region; region meta text "unnecessary" or
    "cells" when the label is unnecessary or the correction was given as cells), `add<k>_s<step>_<j>` an added
    revisit before step `step`.

    `images`: 'path' (default) writes `images/<sha>.<ext>` beside OUT and refers to it as
    `/data/local-files/?d=<path relative to document_root>` (default document root: OUT's folder) — start Label
    Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<that
    folder> and add a Local Storage for `<that folder>/images`; 'embed' puts data URIs in the tasks; 'none'
    leaves the image out."""
    from urllib.parse import quote

    from v1core.geometry import PatchGrid

    check_image_mode(images)
    out = Path(out)
    root = Path(document_root) if document_root is not None else out.parent
    report = ExportReport(str(out), "labelstudio")
    imgs = ImageFiles(store, images, out.parent, report)
    total = _count(store, verdict=verdict, annotator=annotator, tag=tag, only_corrected=only_corrected, model=model,
                   trace_ids=trace_ids)
    tasks = []
    with _progress(total, "export labelstudio", progress) as bar:
        for row, rec, revs in _labelled(store, verdict=verdict, annotator=annotator, tag=tag,
                                        only_corrected=only_corrected, model=model, trace_ids=trace_ids,
                                        report=report):
            bar.update(1)
            w, h = row.image_w, row.image_h
            grid = PatchGrid.from_resized((w, h), (row.resized_w, row.resized_h))
            pred, ann_res = [], []
            for rv in revs:
                label = rv.query or f"revisit {rv.index}"
                for j, b in enumerate(rv.boxes):
                    pred.append(_ls_rect(b, w, h, label, f"m{rv.index}_{j}"))
                lab = rec.annotation.label_for(rv.index)
                if lab is None:
                    continue
                marker = None
                if lab.label == "wrong_region":
                    if lab.corrected_box is not None:
                        boxes = [lab.corrected_box]
                    elif lab.corrected_patches:
                        boxes, marker = grid.component_boxes(lab.corrected_patches), "cells"
                    else:
                        continue
                else:
                    boxes = list(rv.boxes)
                    marker = "unnecessary" if lab.label == "unnecessary" else None
                for j, b in enumerate(boxes):
                    r = _ls_rect(b, w, h, label, f"r{rv.index}_{j}")
                    if marker:
                        r["meta"] = {"text": [marker]}
                    ann_res.append(r)
            for k, ad in enumerate(rec.annotation.added_revisits):
                boxes = [ad.box] if ad.box is not None else grid.component_boxes(ad.patches)
                for j, b in enumerate(boxes):
                    r = _ls_rect(b, w, h, ad.query or "added", f"add{k}_s{ad.step}_{j}")
                    if ad.box is None:
                        r["meta"] = {"text": ["cells"]}
                    ann_res.append(r)
            if rec.verdict:
                ann_res.append({"id": "verdict", "from_name": "verdict", "to_name": "image", "type": "choices",
                                "value": {"choices": [rec.verdict]}})
            if rec.annotation.note:
                ann_res.append({"id": "note", "from_name": "note", "to_name": "image", "type": "textarea",
                                "value": {"text": [rec.annotation.note]}})
            image: Any = None
            if images == "path":
                rel = imgs.relpath(row.image_sha256)
                if rel is not None:
                    target = (out.parent / rel).resolve()
                    try:
                        d = target.relative_to(root.resolve()).as_posix()
                    except ValueError:
                        raise ValueError(f"the images folder {target.parent} is not inside the document root "
                                         f"{root}; Label Studio serves local files only under its document root"
                                         ) from None
                    image = LS_LOCAL_FILES + quote(d)
            elif images == "embed":
                got = imgs.data(row.image_sha256)
                if got is not None:
                    ext = IMAGE_EXTENSIONS.get(got[1].upper(), "png")
                    mime = "image/" + {"jpg": "jpeg"}.get(ext, ext)
                    image = f"data:{mime};base64," + base64.b64encode(got[0]).decode("ascii")
            meta = {"trace_id": row.id, "annotator": rec.annotator, "annotation_version": rec.version,
                    "verdict": rec.verdict, "answer_correct": rec.annotation.answer_correct,
                    "note": rec.annotation.note}
            tid = int(v1g.numeric_id(row.id))
            tasks.append({
                "id": tid,
                "data": {"image": image, "trace_id": row.id, "question": row.question,
                         "output_text": row.output_text, "model_id": row.model_id},
                "meta": meta,
                "predictions": [{"model_version": row.model_id, "result": pred}],
                "annotations": [{"id": tid, "result": ann_res, "created_at": rec.created_at,
                                 "completed_by": {"email": rec.annotator}, "meta": dict(meta)}],
            })
            report.rows += 1
    with atomic_write(out) as f:
        json.dump(tasks, f, ensure_ascii=False)
    report.files.append(str(out))
    return report


LABEL_STUDIO_CONFIG = (
    "<View>\n"
    '  <Image name="image" value="$image"/>\n'
    '  <RectangleLabels name="region" toName="image"/>\n'
    '  <Choices name="verdict" toName="image">'
    '<Choice value="correct"/><Choice value="incorrect"/><Choice value="unsure"/></Choices>\n'
    '  <TextArea name="note" toName="image"/>\n'
    "</View>"
)

__all__ = ["BUFFER_BYTES", "ExportReport", "IMAGE_MODES", "LABEL_STUDIO_CONFIG", "LS_LOCAL_FILES", "SkipRow",
           "TRAINING_DEFAULT", "describe_selection", "export_hf", "export_labelstudio", "export_traces", "export_v1g",
           "hf_features", "training_row"]
