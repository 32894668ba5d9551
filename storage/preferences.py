"""Preference pairs from re-decoded branches, in TRL's conversational vision preference format.

A pair exists where an annotator marked a branch's answer correct (answer_correct=True, or verdict "correct")
and its parent's current annotation does not say the parent's answer was correct: chosen = the branch,
rejected = the original (its parent). Each row is what `trl.DPOTrainer` takes as it is::

    prompt    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": <the exact prompt>}]}]
    chosen    [{"role": "assistant", "content": [{"type": "text", "text": <the branch's output>}]}]
    rejected  [{"role": "assistant", "content": [{"type": "text", "text": <the parent's output>}]}]
    images    [<the image>]      one image per row, the one the prompt's image part stands for

plus v1 Studio's own columns (`id`, `parent_id`, `branch_id`, `branch_step`, `edit`, `image_size`). `prompt`,
`chosen` and `rejected` are all message lists, so `trl.data_utils.is_conversational` is true whichever key it
looks at (it picks one from a set: the answer must not depend on the hash seed). The prompt text is the user
turn the model saw (`v1core.v1g.user_text_of`: the question and the prompt suffix it was decoded with); a
system prompt, when the trace had one, is the first prompt message. Outputs are the model's own text, region
markup and `<|copy_k|>` tokens included (the tokens the policy scores), on the traces' inference grid.

Files: OUT ending in `.parquet` is a parquet file with the images embedded (`images` is a list of
`datasets.Image`); otherwise JSON lines with `images` as paths `images/<sha>.<ext>` beside the file (cast with
`datasets.Sequence(datasets.Image())` from the export folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from v1core.v1g import user_text_of

from .export import ExportReport
from .files import ImageFiles, atomic_write, check_image_mode

if TYPE_CHECKING:
    from v1core.trace import Trace

    from .store import Store

PREFERENCE_COLUMNS = ("id", "prompt", "chosen", "rejected", "images", "image_size", "parent_id", "branch_id",
                      "branch_step", "edit")


def _is_right(rec: Any) -> bool | None:
    if rec is None:
        return None
    ann = rec.annotation
    if ann.answer_correct is not None:
        return bool(ann.answer_correct)
    if ann.verdict in ("correct", "incorrect"):
        return ann.verdict == "correct"
    return None


def _text_trace(store: "Store", trace_id: str) -> "Trace | None":
    for rows in store.iter_trace_rows(batch=1, trace_ids=[trace_id]):
        return store.traces_for_rows(rows, pointers=False)[0]
    return None


def _message(role: str, text: str, image: bool = False) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image"}] if image else []
    content.append({"type": "text", "text": text})
    return {"role": role, "content": content}


def preference_row(parent: "Trace", child: "Trace", image: Any) -> dict[str, Any]:
    """One TRL conversational vision preference row: chosen = `child` (the branch), rejected = `parent`."""
    prompt = [_message("system", child.system_prompt)] if child.system_prompt else []
    prompt.append(_message("user", user_text_of(child), image=True))
    return {
        "id": f"{parent.trace_id}>{child.trace_id}",
        "prompt": prompt,
        "chosen": [_message("assistant", child.output_text)],
        "rejected": [_message("assistant", parent.output_text)],
        "images": [] if image is None else [image],
        "image_size": list(child.image_size),
        "parent_id": parent.trace_id,
        "branch_id": child.trace_id,
        "branch_step": child.branch_step,
        "edit": json.dumps(child.branch_edit) if child.branch_edit is not None else None,
    }


def _pairs(store: "Store") -> Iterator[tuple["Trace", "Trace"]]:
    """(parent, branch) of every preference pair, steps without pointers, one pair in memory at a time."""
    for rows in store.iter_trace_rows(batch=200, status="complete"):
        branches = [r for r in rows if r.parent_id]
        heads = store.current_annotations([r.id for r in branches])
        for r in branches:
            if _is_right(heads.get(r.id)) is not True:
                continue
            if _is_right(store.get_annotation(r.parent_id)) is True:
                continue  # both right: no preference
            parent = _text_trace(store, r.parent_id)
            if parent is None:
                continue
            yield parent, store.traces_for_rows([r], pointers=False)[0]


def _arrow_schema() -> Any:
    import pyarrow as pa

    text_part = pa.struct([("type", pa.string()), ("text", pa.string())])
    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.list_(text_part))]))
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"info": {"features": {
        "images": {"feature": {"_type": "Image"}, "_type": "Sequence"}}}}
    return pa.schema([
        ("id", pa.string()), ("prompt", messages), ("chosen", messages), ("rejected", messages),
        ("images", pa.list_(image)), ("image_size", pa.list_(pa.int64())), ("parent_id", pa.string()),
        ("branch_id", pa.string()), ("branch_step", pa.int64()), ("edit", pa.string()),
    ], metadata={"huggingface": json.dumps(features)})


def export_preferences(store: "Store", out: str | os.PathLike, *, images: str = "path",
                       progress: bool = False) -> ExportReport:
    """Write one TRL preference row per (chosen branch, rejected parent) pair; returns the export report.
    `images`: for JSONL 'path' (default) or 'none'; a `.parquet` OUT always embeds the images."""
    check_image_mode(images)
    out = Path(out)
    report = ExportReport(path=str(out), kind="preferences",
                          selection="pairs: a branch whose answer was marked right vs its parent not marked right")
    imgs = ImageFiles(store, images, out.parent, report)
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _arrow_schema()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        writer = pq.ParquetWriter(str(tmp), schema)
        try:
            for parent, child in _pairs(store):
                got = imgs.data(child.image_sha256)
                if got is None:
                    report.skipped.append(f"{child.trace_id}: its image is not in the store")
                    continue
                row = preference_row(parent, child, {"bytes": got[0], "path": None})
                writer.write_table(pa.Table.from_pylist([row], schema=schema))
                report.rows += 1
            writer.close()
            os.replace(tmp, out)
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        report.files.append(str(out))
        return report
    if images == "embed":
        raise ValueError("preference JSONL references images by path; write a .parquet file to embed them")
    with atomic_write(out) as f:
        for parent, child in _pairs(store):
            image = imgs.relpath(child.image_sha256) if images == "path" else None
            f.write(json.dumps(preference_row(parent, child, image), ensure_ascii=False) + "\n")
            report.rows += 1
    report.files.append(str(out))
    return report


__all__ = ["PREFERENCE_COLUMNS", "export_preferences", "preference_row"]
