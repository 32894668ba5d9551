"""Inter-annotator agreement: Cohen's kappa on verdicts, patch IoU on corrected regions.

For each trace, each annotator's own *head* counts (`Store.heads_by_trace`: their latest label; a save that
conflicted with their own head in another tab does not count until they keep it). Reviewers' consensus heads
are rulings, not judgements, and are left out. Pairs of annotators are compared on the traces both labelled.

Region of a revisit according to one annotator: `wrong_region` → their corrected patches (or the patches their
corrected box touches); `correct` → the model's patches; `unnecessary` → no patches. The IoU is taken over the
revisits both labelled where at least one of them marked `wrong_region` ("corrected regions"); two empty
regions agree (IoU 1).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .annotations import VERDICTS, Annotation

if TYPE_CHECKING:
    from .store import Store


def cohen_kappa(pairs: Sequence[tuple[str, str]], categories: Sequence[str] = VERDICTS) -> float | None:
    """Cohen's kappa of two raters' labels; None without data. Perfect agreement on one category → 1.0."""
    n = len(pairs)
    if n == 0:
        return None
    po = sum(1 for a, b in pairs if a == b) / n
    ca = Counter(a for a, _ in pairs)
    cb = Counter(b for _, b in pairs)
    cats = set(categories) | set(ca) | set(cb)
    pe = sum((ca[c] / n) * (cb[c] / n) for c in cats)
    if pe >= 1.0:
        return 1.0 if po >= 1.0 else 0.0
    return (po - pe) / (1.0 - pe)


def patch_iou(a: Iterable[int], b: Iterable[int]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def _region(ann: Annotation, idx: int, model_patches: list[int], grid: Any) -> set[int] | None:
    lab = ann.label_for(idx)
    if lab is None:
        return None
    if lab.label == "correct":
        return set(model_patches)
    if lab.label == "unnecessary":
        return set()
    if lab.corrected_patches:
        return set(lab.corrected_patches)
    if lab.corrected_box is not None and grid is not None:
        return set(grid.bbox_to_patches(lab.corrected_box))
    return set()


def _latest_per_annotator(
    store: "Store", annotators: Sequence[str] | None, filters: dict[str, Any], settled: set[str] | None = None
) -> tuple[dict[str, dict[str, Annotation]], dict[str, Any]]:
    """{trace: {annotator: their head}} for traces labelled by two or more of `annotators`, and
    {trace: (grid, {revisit index: model patches})}. Traces with a consensus head are added to `settled`."""
    from v1core.geometry import PatchGrid

    filters.setdefault("annotated", True)
    wanted = set(annotators) if annotators else None
    latest: dict[str, dict[str, Annotation]] = {}  # trace → annotator → head
    geom: dict[str, Any] = {}
    for rows in store.iter_trace_rows(**filters):
        ids = [r.id for r in rows]
        heads = store.heads_by_trace(ids)
        revs = store.revisits_by_trace(ids)
        for r in rows:
            h = heads[r.id]
            per = {n: rec.annotation for n, rec in h.annotators.items() if wanted is None or n in wanted}
            if settled is not None and h.consensus is not None:
                settled.add(r.id)
            if len(per) >= 2:
                latest[r.id] = per
                try:
                    grid = PatchGrid.from_resized((r.image_w, r.image_h), (r.resized_w, r.resized_h))
                except ValueError:
                    grid = None
                geom[r.id] = (grid, {rv.index: list(rv.patches) for rv in revs[r.id]})
    return latest, geom


def find_disagreements(
    store: "Store", annotators: Sequence[str] | None = None, *, min_iou: float = 1.0, include_settled: bool = False,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Traces where two or more annotators disagree: different verdicts, different revisit labels, or a
    revisit region whose pairwise patch IoU is below `min_iou` (1.0: any difference counts). Traces a reviewer
    has adjudicated (a consensus head, `Store.save_consensus`) are left out unless `include_settled`.

    Each item: trace_id, annotators, verdicts {name: verdict}, answer_correct {name: bool|None},
    notes {name: str}, revisits [{index, model_patches, labels {name: label}, regions {name: [patch ids]},
    iou (lowest pairwise)}], verdict_disagree, lowest_iou. Worst first (verdict disagreements, then low IoU).
    """
    settled: set[str] = set()
    latest, geom = _latest_per_annotator(store, annotators, dict(filters), settled)
    out = []
    for tid, per in latest.items():
        if tid in settled and not include_settled:
            continue
        names = sorted(per)
        grid, model = geom[tid]
        verdicts = {n: per[n].verdict for n in names}
        judged = {v for v in verdicts.values() if v is not None}
        revisits = []
        indexes = sorted({lab.revisit_index for a in per.values() for lab in a.revisit_labels})
        for idx in indexes:
            labels = {n: (per[n].label_for(idx).label if per[n].label_for(idx) else None) for n in names}
            regions = {n: sorted(r) for n in names if (r := _region(per[n], idx, model.get(idx, []), grid)) is not None}
            pair_ious = [patch_iou(regions[a], regions[b]) for a, b in itertools.combinations(sorted(regions), 2)]
            iou = min(pair_ious) if pair_ious else None
            differs = len({v for v in labels.values() if v is not None}) > 1 or (iou is not None and iou < min_iou)
            revisits.append({"index": idx, "model_patches": model.get(idx, []), "labels": labels,
                             "regions": regions, "iou": iou, "disagree": differs})
        verdict_disagree = len(judged) > 1
        if not verdict_disagree and not any(r["disagree"] for r in revisits):
            continue
        ious = [r["iou"] for r in revisits if r["iou"] is not None]
        out.append({
            "trace_id": tid,
            "annotators": names,
            "verdicts": verdicts,
            "answer_correct": {n: per[n].answer_correct for n in names},
            "notes": {n: per[n].note for n in names},
            "revisits": revisits,
            "verdict_disagree": verdict_disagree,
            "lowest_iou": min(ious) if ious else None,
            "settled": tid in settled,
        })
    out.sort(key=lambda d: (not d["verdict_disagree"], 1.0 if d["lowest_iou"] is None else d["lowest_iou"],
                            d["trace_id"]))
    return out


def compute_agreement(store: "Store", annotators: Sequence[str] | None = None, **filters: Any) -> dict[str, Any]:
    latest, geom = _latest_per_annotator(store, annotators, filters)
    names = sorted({a for per in latest.values() for a in per})
    pairs_out = []
    all_kappa_pairs: list[tuple[str, str]] = []
    all_ious: list[float] = []
    for a, b in itertools.combinations(names, 2):
        vpairs: list[tuple[str, str]] = []
        ious: list[float] = []
        n_traces = 0
        for tid, per in latest.items():
            if a not in per or b not in per:
                continue
            n_traces += 1
            x, y = per[a], per[b]
            if x.verdict is not None and y.verdict is not None:
                vpairs.append((x.verdict, y.verdict))
            grid, model = geom[tid]
            labelled = {lab.revisit_index for lab in x.revisit_labels} | {lab.revisit_index for lab in y.revisit_labels}
            for idx in sorted(labelled):
                la, lb = x.label_for(idx), y.label_for(idx)
                if la is None or lb is None or "wrong_region" not in (la.label, lb.label):
                    continue
                ra = _region(x, idx, model.get(idx, []), grid)
                rb = _region(y, idx, model.get(idx, []), grid)
                ious.append(patch_iou(ra or set(), rb or set()))
        if n_traces == 0:
            continue
        kappa = cohen_kappa(vpairs)
        pairs_out.append({
            "annotators": (a, b),
            "traces": n_traces,
            "verdict_pairs": len(vpairs),
            "observed_agreement": (sum(1 for p, q in vpairs if p == q) / len(vpairs)) if vpairs else None,
            "kappa": kappa,
            "corrected_regions": len(ious),
            "mean_iou": (sum(ious) / len(ious)) if ious else None,
        })
        all_kappa_pairs.extend(vpairs)
        all_ious.extend(ious)
    return {
        "annotators": names,
        "traces": len(latest),
        "pairs": pairs_out,
        "kappa": cohen_kappa(all_kappa_pairs),  # pooled over all pairs
        "mean_iou": (sum(all_ious) / len(all_ious)) if all_ious else None,
        "corrected_regions": len(all_ious),
    }


__all__ = ["cohen_kappa", "compute_agreement", "find_disagreements", "patch_iou"]
