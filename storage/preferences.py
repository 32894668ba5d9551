"""Preference pairs from re-decoded branches (DPO-style JSONL).

A pair exists where an annotator marked a branch's answer correct (answer_correct=True, or verdict "correct")
and its parent's current annotation does not say the parent's answer was correct: chosen = the branch,
rejected = the original. Images are referenced as in the v1g export (`images/<sha>.<ext>` beside the file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .export import ExportReport
from .files import ImageFiles, atomic_write

if TYPE_CHECKING:
    from .store import Store


def _is_right(rec: Any) -> bool | None:
    if rec is None:
        return None
    ann = rec.annotation
    if ann.answer_correct is not None:
        return bool(ann.answer_correct)
    if ann.verdict in ("correct", "incorrect"):
        return ann.verdict == "correct"
    return None


def export_preferences(store: "Store", out: str | os.PathLike, *, images: str = "path") -> ExportReport:
    """Write one JSON line per (chosen branch, rejected parent) pair; returns the export report."""
    out = Path(out)
    report = ExportReport(path=str(out), kind="preferences")
    imgs = ImageFiles(store, images, out.parent, report)
    branches = [t for t in store.list_traces(limit=None) if t.parent_id]
    with atomic_write(out) as f:
        for summ in branches:
            if _is_right(store.get_annotation(summ.id)) is not True:
                continue
            try:
                parent_rec = store.get_annotation(summ.parent_id)
                parent = store.get_trace(summ.parent_id)
            except KeyError:
                continue
            if _is_right(parent_rec) is True:
                continue  # both right: no preference
            child = store.get_trace(summ.id)
            image: Any = imgs.relpath(child.image_sha256) if images == "path" else None
            row = {
                "id": f"{parent.trace_id}>{child.trace_id}",
                "image": image,
                "image_size": list(child.image_size),
                "prompt": [{"role": "system", "content": child.system_prompt},
                           {"role": "user", "content": "<image>\n" + child.question}],
                "chosen": child.output_text,
                "rejected": parent.output_text,
                "branch_step": child.branch_step,
                "edit": child.branch_edit,
                "parent_id": parent.trace_id,
                "branch_id": child.trace_id,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            report.rows += 1
    return report
