"""The annotation queue, without Streamlit: which traces an annotator labels next, and why.

Each trace gets an uncertainty score made of parts an annotator can read (`Uncertainty.parts`):

- **pointer entropy**: the mean over the trace's steps of the pointer distribution's entropy, divided by
  log(#patches) so that 1 means "spread over the whole image" whatever the grid size;
- **1 − p_copy at revisits**: one minus the mean p_copy of the copy steps (how hesitant the model was when
  it did look back); 0 when the trace has no copy step.

The score is their sum; higher = more worth a look. The queue (`build_queue`) skips what the annotator already
labelled (their own head, `Store.list_traces(not_labelled_by=…)`); mode "second" keeps only traces exactly one
other annotator labelled ("needs a second annotator"); mode "all" lists every trace, labelled or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

MODES = ("todo", "second", "all")
MODE_LABELS = {"todo": "not labelled by me", "second": "needs a second annotator", "all": "all traces"}
ORDERS = ("uncertainty", "newest")


@dataclass(frozen=True)
class Uncertainty:
    """A trace's uncertainty score and what it is made of (see the module docstring)."""

    pointer_entropy: float  # mean normalised pointer entropy over steps, 0–1
    revisit_p_copy: float | None  # mean p_copy at copy steps; None without copy steps
    n_steps: int
    n_copy_steps: int

    @property
    def hesitation(self) -> float:
        return 0.0 if self.revisit_p_copy is None else 1.0 - self.revisit_p_copy

    @property
    def score(self) -> float:
        return self.pointer_entropy + self.hesitation

    def parts(self) -> list[tuple[str, str]]:
        """(name, value) rows that add up to the score, for display."""
        pc = "—" if self.revisit_p_copy is None else f"{self.revisit_p_copy:.2f}"
        return [
            ("pointer entropy (mean over steps, ÷ log #patches)", f"{self.pointer_entropy:.3f}"),
            (f"1 − p_copy at revisits (mean p_copy {pc} over {self.n_copy_steps} copy step(s))",
             f"{self.hesitation:.3f}"),
            ("score", f"{self.score:.3f}"),
        ]

    def explain(self) -> str:
        """One line: `score 0.812 = pointer entropy 0.412 + (1 − p_copy at revisits 0.600)`."""
        pc = "no copy step" if self.revisit_p_copy is None else f"1 − p_copy at revisits {self.revisit_p_copy:.3f}"
        return f"score {self.score:.3f} = pointer entropy {self.pointer_entropy:.3f} + ({pc})"


def uncertainty(stats: Mapping[str, Any]) -> Uncertainty:
    """The score of one trace from `Store.step_stats`' entry (entropy, p_copy, is_copy per step, n_patches)."""
    n = max(int(stats.get("n_patches") or 0), 2)
    ent = [float(e) for e in stats.get("entropy") or [] if e is not None and math.isfinite(float(e))]
    mean_ent = (sum(ent) / len(ent) / math.log(n)) if ent else 0.0
    pcs = [float(p) for p, c in zip(stats.get("p_copy") or [], stats.get("is_copy") or [])
           if c and p is not None and math.isfinite(float(p))]
    return Uncertainty(pointer_entropy=mean_ent, revisit_p_copy=(sum(pcs) / len(pcs)) if pcs else None,
                       n_steps=len(stats.get("entropy") or []), n_copy_steps=len(pcs))


@dataclass(frozen=True)
class QueueItem:
    """One trace in the queue: its summary (`TraceSummary`) and uncertainty."""

    summary: Any
    uncertainty: Uncertainty

    @property
    def trace_id(self) -> str:
        return self.summary.trace_id

    def why(self) -> str:
        """Why it is where it is: the score's parts and how many people labelled it."""
        n = int(getattr(self.summary, "n_annotators", 0) or 0)
        who = "nobody labelled it yet" if n == 0 else f"{n} annotator(s) labelled it"
        return f"{self.uncertainty.explain()} · {who}"


def queue_filters(me: str, mode: str, **filters: Any) -> dict[str, Any]:
    """`Store.list_traces` filters of a queue mode for annotator `me` (complete traces only)."""
    if mode not in MODES:
        raise ValueError(f"queue mode must be one of {', '.join(MODES)}, got {mode!r}")
    out: dict[str, Any] = {"status": "complete", **{k: v for k, v in filters.items() if v}}
    if mode in ("todo", "second") and me:
        out["not_labelled_by"] = me
    if mode == "second":
        out["n_annotators"] = 1
    return out


def order_items(items: Sequence[QueueItem], order: str) -> list[QueueItem]:
    """'uncertainty': highest score first (newest first among equals); 'newest': as listed (newest first)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if order == "newest":
        return list(items)
    return sorted(items, key=lambda it: -it.uncertainty.score)  # stable: newest first among equals


def build_queue(store: Any, me: str, *, mode: str = "todo", order: str = "uncertainty", limit: int = 300,
                stats: Callable[[str], Mapping[str, Any]] | None = None, **filters: Any) -> list[QueueItem]:
    """The queue for `me`: complete traces of this mode and these filters (model, tag, verdict, …), scored and
    ordered. `stats(trace_id)` may supply each trace's `Store.step_stats` entry (the app caches them); by
    default they are read in one query."""
    rows = store.list_traces(limit=limit, **queue_filters(me, mode, **filters))
    if stats is None:
        got = store.step_stats([r.trace_id for r in rows])
        stats = lambda tid: got.get(tid, {})  # noqa: E731 - a one-line lookup
    items = [QueueItem(r, uncertainty(stats(r.trace_id))) for r in rows]
    return order_items(items, order)


__all__ = ["MODES", "MODE_LABELS", "ORDERS", "QueueItem", "Uncertainty", "build_queue", "order_items",
           "queue_filters", "uncertainty"]
