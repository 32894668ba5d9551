"""Running v1 from the app: a process-wide FIFO gate (one model, one GPU) and the run/save steps.

No Streamlit here: the Run page (app/run_ui.py) drives these, and tests call them directly.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from v1core.trace import DecodingSettings, Trace

__all__ = ["GateBusy", "GenerationGate", "ModelHandle", "prepare_run", "save_run"]


@dataclass
class ModelHandle:
    """A loaded model with what the UI shows about it."""

    model: Any
    processor: Any
    model_id: str
    path: str
    device: str


class GateBusy(RuntimeError):
    """Raised by `GenerationGate.hold(timeout=…)` when the turn did not come in time."""


class GenerationGate:
    """First-come-first-served access to the model: one decoding at a time, others queue.

    `hold(label, on_wait)` waits for its turn, calling `on_wait(position, holder)` every `poll` seconds
    while queued (position 1 = next). `on_wait` may raise (Streamlit interrupts a script that way when the
    user clicks Stop or leaves the page): the ticket is then withdrawn and nobody waits for it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._next = 0
        self._busy = False
        self.holder: str | None = None
        self.since: float | None = None

    @property
    def busy(self) -> bool:
        return self._busy

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    @contextmanager
    def hold(
        self,
        label: str = "a run",
        on_wait: Callable[[int, str | None], None] | None = None,
        poll: float = 0.25,
        timeout: float | None = None,
    ) -> Iterator[None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            ticket = self._next
            self._next += 1
            self._queue.append(ticket)
        try:
            while True:
                with self._cond:
                    if not self._busy and self._queue[0] == ticket:
                        self._queue.popleft()
                        self._busy, self.holder, self.since = True, label, time.monotonic()
                        break
                    position = list(self._queue).index(ticket) + (1 if self._busy else 0)
                    holder = self.holder
                if deadline is not None and time.monotonic() > deadline:
                    raise GateBusy(f"the model is busy with {holder or 'another run'}")
                if on_wait is not None:
                    on_wait(position, holder)
                with self._cond:
                    self._cond.wait(poll)
        except BaseException:
            with self._cond:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                self._cond.notify_all()
            raise
        try:
            yield
        finally:
            with self._cond:
                self._busy, self.holder, self.since = False, None, None
                self._cond.notify_all()


def prepare_run(handle: ModelHandle, store: Any, loaded: Any, question: str, settings: DecodingSettings,
                *, tags: list[str] | None = None, meta: dict[str, Any] | None = None) -> Any:
    """Store the image (by content hash) and build the `TraceRun` (not started). `loaded` is a
    `v1core.images.LoadedImage`. Raises ImageGeometryError/ValueError with readable messages."""
    from v1core.generation import TraceRun

    question = (question or "").strip()
    if not question:
        raise ValueError("type a question first")
    sha = store.put_image(loaded.data, loaded.image.width, loaded.image.height, loaded.format)
    run = TraceRun(handle.model, handle.processor, loaded.image, question, settings,
                   image_sha256=sha or loaded.sha256, model_id=handle.model_id)
    assert run.trace is not None
    run.trace.tags = list(tags or [])
    run.trace.meta.update(meta or {})
    return run


def save_run(store: Any, trace: Trace) -> str:
    """Save a finished (complete / cancelled / failed) trace; returns its id."""
    if trace.status == "running":  # interrupted before TraceRun could set its final status
        trace.status = "cancelled"
    return str(store.save_trace(trace))


def redecode_and_save(handle: ModelHandle, store: Any, parent: Trace, image: Any, edit: Any,
                      gate: "GenerationGate | None" = None) -> tuple[str, Trace]:
    """Re-decode `parent` with `edit` (v1core.intervene.BranchEdit), store the child under its parent.

    Serialised through the generation gate like any run. Returns (child id, child trace)."""
    from contextlib import nullcontext

    from v1core.intervene import BranchRun

    with gate.hold(f"re-decoding {parent.trace_id[:8]}") if gate is not None else nullcontext():
        child = BranchRun(handle.model, handle.processor, image, parent, edit).run()
    return store.save_trace(child), child


def answer_diff(parent: Trace, child: Trace) -> dict[str, Any]:
    """What the branch changed: the two answers, whether they differ, and the first step where pointers diverge."""
    first = None
    for a, b in zip(parent.steps, child.steps):
        if a.token_id != b.token_id:
            first = a.index
            break
    return {"parent_answer": parent.answer, "branch_answer": child.answer,
            "answer_changed": parent.answer.strip() != child.answer.strip(), "first_divergent_step": first}
