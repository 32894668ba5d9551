"""Exports: v1g JSONL (training rows), a Hugging Face parquet dataset, full traces JSONL, Label Studio JSON.

Training exports (v1g, hf) contain one row per *labelled, complete* trace, built from its current annotation:
- every region the model wrote (`<objN>?<region>[x0, y0, x1, y1]<|copy_k|>…</region>` inside `detect(...)`) becomes
  an object key `<objN>` in the text and a box in `region`/`regions` (original-image pixels);
- the box is the annotator's corrected region when the revisit is labelled `wrong_region` (their box, else the
  cells of their corrected patches), otherwise the cells the model actually copied (for imported v1g rows: the
  row's original box). Boxes made from cells are inset by one resized pixel so that the training code's
  `bbox_to_patches` gives back exactly those cells;
- added revisits are inserted as `detect(query="…", objects=["<objN>"])` before the step they were added at;
- a trace with a `wrong_region` label but no corrected region is skipped (reported), as is a correction of a
  revisit that is not inside a `detect(...)` call.
Text is never otherwise changed.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from v1core.trace import DETECT_RE, parse_detect_spans

from .annotations import AnnotationRecord
from .files import IMAGE_EXTENSIONS, IMAGE_MODES, ImageFiles, atomic_write, check_image_mode
from .records import StoredRevisit

if TYPE_CHECKING:
    from .schema import TraceRow
    from .store import Store

_OBJ_RE = re.compile(r"<obj(\d+)>")


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

    def summary(self) -> str:
        parts = [f"{self.rows} row(s) → {self.path}"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        if self.images_written:
            parts.append(f"{self.images_written} image file(s) written")
        if self.images_missing:
            parts.append(f"{self.images_missing} image(s) not in the store")
        return f"{self.kind} export: " + ", ".join(parts)


# ----------------------------------------------------------------------------- selection
def _labelled(store: "Store", *, verdict: Any = None, annotator: str | None = None, tag: str | None = None,
              only_corrected: bool = False, model: str | None = None, trace_ids: Sequence[str] | None = None,
              batch: int = 500, report: "ExportReport | None" = None
              ) -> Iterator[tuple["TraceRow", AnnotationRecord, list[StoredRevisit]]]:
    """Complete, annotated traces matching the filters, with the head the export uses (`Store.export_heads`:
    consensus, else the single annotator's, else the agreeing heads') and their revisits. Traces whose
    annotators disagree with no ruling are listed in `report.skipped` with that reason."""
    filters: dict[str, Any] = dict(annotated=True, status="complete", verdict=verdict, annotator=annotator, tag=tag,
                                   model=model, trace_ids=trace_ids)
    if only_corrected:
        filters["has_corrections"] = True
    for rows in store.iter_trace_rows(batch=batch, **filters):
        ids = [r.id for r in rows]
        heads = store.export_heads(ids)
        revs = store.revisits_by_trace(ids)
        for r in rows:
            head = heads[r.id]
            if head.record is not None:
                yield r, head.record, revs[r.id]
            elif report is not None:
                report.skipped.append(f"{r.id}: {head.reason}")


def _training_rows(store: "Store", report: "ExportReport", bar: Any, **filters: Any
                   ) -> Iterator[tuple["TraceRow", AnnotationRecord, str, dict[str, list[float]]]]:
    """Labelled rows with their training text and regions; a row that cannot become training data is
    recorded in `report.skipped` with its reason (shared by the v1g and Hugging Face exports)."""
    for row, rec, revs in _labelled(store, report=report, **filters):
        bar.update(1)
        try:
            text, regions = build_training_text(store, row, rec, revs)
        except SkipRow as exc:
            report.skipped.append(f"{row.id}: {exc}")
            continue
        yield row, rec, text, regions


def _count(store: "Store", **kw: Any) -> int:
    only = kw.pop("only_corrected", False)
    kw = {k: v for k, v in kw.items() if k in ("verdict", "annotator", "tag", "model", "trace_ids")}
    if only:
        kw["has_corrections"] = True
    return store.count_traces(annotated=True, status="complete", **kw)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="trace", disable=not enabled, dynamic_ncols=True)


# ----------------------------------------------------------------------------- v1g row construction
def cells_box(grid: Any, patches: Sequence[int]) -> tuple[float, float, float, float]:
    """Box (original px) of the cells' bounding rectangle, inset by one resized pixel, so that
    `grid.bbox_to_patches(box)` returns exactly the rectangle's cells (an exact cell-edge box can pick up a
    neighbouring row/column through float scaling). Non-rectangular sets become their bounding rectangle."""
    x0, y0, x1, y1 = grid.patches_to_box(patches)
    sx = grid.image_size[0] / grid.resized[0]
    sy = grid.image_size[1] / grid.resized[1]
    return (x0 + sx, y0 + sy, x1 - sx, y1 - sy)


def _round_box(box: Sequence[float]) -> list[float]:
    return [round(float(v), 2) for v in box]


def _orig_regions(row: "TraceRow") -> dict[str, list[float]]:
    regs = (row.meta or {}).get("v1g_regions") if row.source == "imported" else None
    if isinstance(regs, str):
        try:
            regs = json.loads(regs)
        except ValueError:
            return {}
    if not isinstance(regs, dict):
        return {}
    out = {}
    for k, v in regs.items():
        key = k if str(k).startswith("<") else f"<{k}>"
        if isinstance(v, (list, tuple)) and len(v) == 4:
            out[key] = list(v)
    return out


def build_training_text(store: "Store", row: "TraceRow", rec: AnnotationRecord,
                        revisits: Sequence[StoredRevisit]) -> tuple[str, dict[str, list[float]]]:
    """(assistant text with `<objN>` placeholders, {key: [x0, y0, x1, y1]}) for one labelled trace."""
    from v1core.geometry import PatchGrid

    ann = rec.annotation
    text = row.output_text
    grid = PatchGrid.from_resized((row.image_w, row.image_h), (row.resized_w, row.resized_h))
    spans = parse_detect_spans(text)
    orig = _orig_regions(row)
    nums = [int(n) for n in _OBJ_RE.findall(text)] + [int(n) for k in orig for n in _OBJ_RE.findall(k)]
    next_num = [max(nums) + 1 if nums else 0]

    def fresh() -> str:
        key = f"<obj{next_num[0]}>"
        next_num[0] += 1
        return key

    span_of_rev: dict[int, int] = {}
    for rv in revisits:
        for si, sp in enumerate(spans):
            if sp["span"][0] <= rv.char_start < sp["span"][1]:
                span_of_rev[si] = rv.index
                break
    linked = set(span_of_rev.values())
    for lab in ann.revisit_labels:
        if lab.label == "wrong_region" and not lab.has_correction:
            raise SkipRow(f"revisit {lab.revisit_index} is marked wrong_region without a corrected region")
        if lab.label == "wrong_region" and lab.revisit_index not in linked:
            raise SkipRow(f"revisit {lab.revisit_index} is not inside a detect(...) call; its correction cannot be "
                          "written as a region")
    rv_by_idx = {rv.index: rv for rv in revisits}
    edits: list[tuple[int, int, str]] = []
    regions: dict[str, list[float]] = {}
    for si, sp in enumerate(spans):
        name = f"<{sp['object_name']}>" if sp["object_name"] else None
        box: Any = None
        ridx = span_of_rev.get(si)
        lab = ann.label_for(ridx) if ridx is not None else None
        if lab is not None and lab.label == "wrong_region":
            box = lab.corrected_box if lab.corrected_box is not None else cells_box(grid, lab.corrected_patches or [])
        elif name and name in orig:
            box = orig[name]
        elif ridx is not None and rv_by_idx[ridx].patches:
            box = cells_box(grid, rv_by_idx[ridx].patches)
        elif sp["normalized_box"] is not None:
            w, h = row.image_w, row.image_h
            nb = sp["normalized_box"]
            box = (nb[0] * w, nb[1] * h, nb[2] * w, nb[3] * h)
        if box is None:
            continue  # a region we cannot place: leave the text as the model wrote it
        key = name if name and name not in regions else fresh()
        regions[key] = _round_box(box)
        edits.append((sp["span"][0], sp["span"][1], key))
    if ann.added_revisits:
        texts = store.step_texts(row.id)
        offsets = [0]
        for t in texts:
            offsets.append(offsets[-1] + len(t))
        calls = [(m.start(), m.end()) for m in DETECT_RE.finditer(text)]
        for ad in ann.added_revisits:
            pos = offsets[min(ad.step, len(texts))]
            for a, b in calls:  # never insert inside another detect(...) call
                if a < pos < b:
                    pos = b
            key = fresh()
            regions[key] = _round_box(ad.box if ad.box is not None else cells_box(grid, ad.patches))
            q = ad.query.replace("\\", "\\\\").replace('"', '\\"')
            edits.append((pos, pos, f'detect(query="{q}", objects=["{key}"]) '))
    for a, b, rep in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:a] + rep + text[b:]
    return text, regions


def _num_tokens(row: "TraceRow", rec: AnnotationRecord) -> int:
    n = (row.meta or {}).get("num_tokens") if row.source == "imported" else None
    if isinstance(n, int) and not rec.annotation.has_corrections:
        return n
    return int(row.prompt_tokens or 0) + int(row.n_steps or 0)


# ----------------------------------------------------------------------------- v1g JSONL
def export_v1g(store: "Store", out: str | os.PathLike, *, images: str = "path", verdict: Any = None,
               annotator: str | None = None, tag: str | None = None, only_corrected: bool = False,
               model: str | None = None, trace_ids: Sequence[str] | None = None, progress: bool = False
               ) -> ExportReport:
    """One JSON line per labelled complete trace, in the layout v1's training collate reads:
    `{"id", "conversation": [system?, user "<image>\\n…", assistant with <objN>], "region": {key: box},
    "image_size": [w, h], "image": "images/<sha>.png" | {"bytes": base64, "path": null} | null, "image_sha256",
    "verdict", "answer_correct", "annotator", "annotation_version"}`.

    `images`: 'path' (default) writes image files into `images/` next to OUT; 'embed' puts base64 bytes in the
    row; 'none' leaves them out. Filters: `verdict` (one or a list), `annotator` (of the current annotation),
    `tag`, `only_corrected`, `model`, `trace_ids`."""
    check_image_mode(images)
    out = Path(out)
    report = ExportReport(str(out), "v1g")
    imgs = ImageFiles(store, images, out.parent, report)
    total = _count(store, verdict=verdict, annotator=annotator, tag=tag, only_corrected=only_corrected, model=model,
                   trace_ids=trace_ids)
    with atomic_write(out) as f, _progress(total, "export v1g", progress) as bar:
        for row, rec, text, regions in _training_rows(store, report, bar, verdict=verdict, annotator=annotator,
                                                      tag=tag, only_corrected=only_corrected, model=model,
                                                      trace_ids=trace_ids):
            conv = []
            if row.system_prompt:
                conv.append({"role": "system", "content": row.system_prompt})
            conv.append({"role": "user", "content": "<image>\n" + row.question})
            conv.append({"role": "assistant", "content": text})
            image: Any = None
            if images == "path":
                image = imgs.relpath(row.image_sha256)
            elif images == "embed":
                got = imgs.data(row.image_sha256)
                image = None if got is None else {"bytes": base64.b64encode(got[0]).decode("ascii"), "path": None}
            rec_out = {
                "id": row.id, "conversation": conv, "region": regions, "image_size": [row.image_w, row.image_h],
                "image": image, "image_sha256": row.image_sha256, "verdict": rec.verdict,
                "answer_correct": rec.annotation.answer_correct, "annotator": rec.annotator,
                "annotation_version": rec.version,
            }
            f.write(json.dumps(rec_out, ensure_ascii=False) + "\n")
            report.rows += 1
    report.files.append(str(out))
    return report


# ----------------------------------------------------------------------------- Hugging Face parquet
def hf_features() -> Any:
    """The v1g columns as `datasets.Features`: id, image (Image), image_size, num_tokens, conversations, regions."""
    import datasets

    seq = getattr(datasets, "List", None) or datasets.Sequence
    return datasets.Features({
        "id": datasets.Value("string"),
        "image": datasets.Image(),
        "image_size": seq(datasets.Value("int64")),
        "num_tokens": datasets.Value("int64"),
        "conversations": seq({"from": datasets.Value("string"), "value": datasets.Value("string")}),
        "regions": datasets.Value("string"),
    })


def export_hf(store: "Store", out: str | os.PathLike, *, images: str = "embed", verdict: Any = None,
              annotator: str | None = None, tag: str | None = None, only_corrected: bool = False,
              model: str | None = None, trace_ids: Sequence[str] | None = None, shard_rows: int = 10_000,
              progress: bool = False) -> ExportReport:
    """A parquet dataset with exactly v1g's columns (`id`, `image` as an `Image` feature, `image_size`,
    `num_tokens`, `conversations` as ShareGPT turns with `<objN>` keys, `regions` as a JSON string) that
    `datasets.load_dataset("parquet", data_files=…)` opens. OUT ending in `.parquet` is one file; otherwise a
    folder of `train-NNNNN.parquet` shards of `shard_rows` rows. `images`: 'embed' (default: bytes in the
    file), 'path' (files in `images/`, absolute paths in the column) or 'none' (null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_image_mode(images)
    out = Path(out)
    single = out.suffix == ".parquet"
    base = out.parent if single else out
    report = ExportReport(str(out), "hf")
    imgs = ImageFiles(store, images, base, report)
    schema = hf_features().arrow_schema
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

    def open_shard() -> None:
        nonlocal writer, tmp_path, final_path, in_shard
        final_path = out if single else out / f"train-{shard:05d}.parquet"
        tmp_path = final_path.with_name(final_path.name + ".tmp")
        writer = pq.ParquetWriter(str(tmp_path), schema)
        in_shard = 0

    def flush() -> None:
        if buf:
            writer.write_table(pa.Table.from_pylist(buf, schema=schema))
            buf.clear()

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
            for row, rec, text, regions in _training_rows(store, report, bar, verdict=verdict, annotator=annotator,
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
                buf.append({
                    "id": row.id, "image": image, "image_size": [row.image_w, row.image_h],
                    "num_tokens": _num_tokens(row, rec),
                    "conversations": [{"from": "human", "value": "<image>\n" + row.question},
                                      {"from": "gpt", "value": text}],
                    "regions": json.dumps(regions),
                })
                in_shard += 1
                report.rows += 1
                if len(buf) >= 256:
                    flush()
        close_shard()
    finally:
        if writer is not None:
            writer.close()
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
    return report


# ----------------------------------------------------------------------------- full traces
def export_traces(store: "Store", out: str | os.PathLike, *, images: str = "none", annotations: bool = True,
                  status: Any = None, tag: str | None = None, model: str | None = None, annotated: bool | None = None,
                  verdict: Any = None, trace_ids: Sequence[str] | None = None, progress: bool = False) -> ExportReport:
    """Every matching trace as `Trace.to_dict()` (float16 pointers as base64) — the batch tracer's format — plus
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
                d = tr.to_dict()
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


def export_labelstudio(store: "Store", out: str | os.PathLike, *, images: str = "path", verdict: Any = None,
                       annotator: str | None = None, tag: str | None = None, only_corrected: bool = False,
                       model: str | None = None, trace_ids: Sequence[str] | None = None,
                       progress: bool = False) -> ExportReport:
    """Label Studio tasks (a JSON array) for an image + RectangleLabels (`region`) + Choices (`verdict`) config:
    the model's revisit boxes as `predictions`, the current annotation's regions and verdict as `annotations`.
    Boxes are in percent of the image. `images`: 'path' (files in `images/`, relative paths — point Label
    Studio's local storage at that folder), 'embed' (data URIs) or 'none'."""
    from v1core.geometry import PatchGrid

    check_image_mode(images)
    out = Path(out)
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
                if lab is None or lab.label == "unnecessary":
                    continue
                if lab.label == "wrong_region":
                    if lab.corrected_box is not None:
                        boxes = [lab.corrected_box]
                    elif lab.corrected_patches:
                        boxes = grid.component_boxes(lab.corrected_patches)
                    else:
                        continue
                else:
                    boxes = list(rv.boxes)
                for j, b in enumerate(boxes):
                    ann_res.append(_ls_rect(b, w, h, label, f"a{rv.index}_{j}"))
            for k, ad in enumerate(rec.annotation.added_revisits):
                boxes = [ad.box] if ad.box is not None else grid.component_boxes(ad.patches)
                for j, b in enumerate(boxes):
                    ann_res.append(_ls_rect(b, w, h, ad.query or "added", f"add{k}_{j}"))
            if rec.verdict:
                ann_res.append({"id": "verdict", "from_name": "verdict", "to_name": "image", "type": "choices",
                                "value": {"choices": [rec.verdict]}})
            image: Any = None
            if images == "path":
                image = imgs.relpath(row.image_sha256)
            elif images == "embed":
                got = imgs.data(row.image_sha256)
                if got is not None:
                    ext = IMAGE_EXTENSIONS.get(got[1].upper(), "png")
                    mime = "image/" + {"jpg": "jpeg"}.get(ext, ext)
                    image = f"data:{mime};base64," + base64.b64encode(got[0]).decode("ascii")
            tasks.append({
                "data": {"image": image, "trace_id": row.id, "question": row.question,
                         "output_text": row.output_text, "model_id": row.model_id},
                "predictions": [{"model_version": row.model_id, "result": pred}],
                "annotations": [{"result": ann_res, "created_at": rec.created_at,
                                 "meta": {"annotator": rec.annotator, "version": rec.version,
                                          "answer_correct": rec.annotation.answer_correct,
                                          "note": rec.annotation.note}}],
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
    "</View>"
)

__all__ = ["ExportReport", "IMAGE_MODES", "LABEL_STUDIO_CONFIG", "build_training_text", "cells_box", "export_hf",
           "export_labelstudio", "export_traces", "export_v1g", "hf_features"]
