"""Intervene on a revisit: re-decode a trace from step t with a region replaced, removed or inserted.

Answers "had the model looked at the right place, would it have got it right?". The prompt (image + question)
is prefilled once per trace and its KV cache (with the copy memory) is reused by every branch: a branch costs
one short forward over the kept/forced tokens plus decoding what follows.

Edits (`BranchEdit.kind`):
- "replace": the copy tokens of revisit r become `patches`; the token that closed the run is kept, so the
  model continues after the corrected region (an annotator's correction, or any selection);
- "remove": revisit r's copy tokens are skipped (ablation): the model never sees those patches;
- "insert": copy tokens of `patches` are inserted at step `step`, then decoding continues.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import torch

from .generation import build_step, eos_token_ids, generate_traces, summarise_logits
from .processing_v1 import V1Processor
from .trace import Step, Trace

EditKind = Literal["replace", "remove", "insert"]


@dataclass
class BranchEdit:
    kind: EditKind
    revisit: int | None = None  # index into trace.revisits (replace / remove)
    step: int | None = None  # insertion step (insert)
    patches: list[int] = field(default_factory=list)  # new region (replace / insert)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "revisit": self.revisit, "step": self.step, "patches": list(self.patches),
                "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BranchEdit":
        return cls(kind=d["kind"], revisit=d.get("revisit"), step=d.get("step"), patches=list(d.get("patches") or []),
                   note=d.get("note") or "")


def branch_plan(trace: Trace, edit: BranchEdit, copy_token_start: int) -> tuple[int, list[int]]:
    """(branch_step, token ids from the branch step on that are forced before free decoding resumes)."""
    ids = [s.token_id for s in trace.steps]
    n = trace.n_patches
    for p in edit.patches:
        if not 0 <= int(p) < n:
            raise ValueError(f"patch {p} is outside this image's {n} patches")
    copies = [copy_token_start + int(p) for p in edit.patches]
    if edit.kind in ("replace", "remove"):
        revisits = trace.revisits
        if edit.revisit is None or not 0 <= edit.revisit < len(revisits):
            raise ValueError(f"revisit {edit.revisit} does not exist (trace has {len(revisits)})")
        rv = revisits[edit.revisit]
        closing = ids[rv.end_step : rv.end_step + 1]  # e.g. `</region>`: keep the model out of the old run
        if edit.kind == "replace":
            if not copies:
                raise ValueError("replace needs at least one patch (use remove to skip the revisit)")
            return rv.start_step, copies + closing
        return rv.start_step, closing
    if edit.kind == "insert":
        if edit.step is None or not 0 <= edit.step <= len(ids):
            raise ValueError(f"insert step {edit.step} is outside 0..{len(ids)}")
        if not copies:
            raise ValueError("insert needs at least one patch")
        return edit.step, copies
    raise ValueError(f"unknown edit kind {edit.kind!r}")


class PromptState:
    """The prompt's prefill, done once and reused by every branch of a trace (deep-copied per branch)."""

    def __init__(self, model: torch.nn.Module, processor: V1Processor, image: Any, trace: Trace):
        self.model, self.processor, self.trace = model, processor, trace
        self.inputs = processor(image, trace.question, trace.system_prompt)
        if self.inputs["input_ids"].shape[1] != trace.prompt_tokens and trace.prompt_tokens:
            raise ValueError("this image/question does not reproduce the trace's prompt (other processor settings?)")
        device = next(model.parameters()).device
        self.inputs = {k: v.to(device) for k, v in self.inputs.items()}
        with torch.inference_mode():
            out = model(**self.inputs, use_cache=True, logits_to_keep=1)
        self.cache = out.cache
        self.rope_deltas = model.model.rope_deltas
        self.first_logits = out.logits[:, -1].clone()
        self.prompt_len = self.inputs["input_ids"].shape[1]


@dataclass
class BranchRun:
    """A re-decoded child of `trace`: iterate to stream its new steps; `.trace` is the child Trace."""

    model: torch.nn.Module
    processor: V1Processor
    image: Any
    parent: Trace
    edit: BranchEdit
    state: PromptState | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    trace: Trace | None = None

    def __post_init__(self) -> None:
        self.branch_step, self.forced = branch_plan(self.parent, self.edit, self.processor.copy_token_start)
        if self.state is None:
            self.state = PromptState(self.model, self.processor, self.image, self.parent)
        p = self.parent
        self.trace = Trace(
            model_id=p.model_id, image_sha256=p.image_sha256, image_size=p.image_size, resized_size=p.resized_size,
            grid=p.grid, question=p.question, system_prompt=p.system_prompt, settings=p.settings,
            steps=[copy.copy(s) for s in p.steps[: self.branch_step]], status="running", prompt_tokens=p.prompt_tokens,
            parent_id=p.trace_id, branch_step=self.branch_step, branch_edit=self.edit.to_dict(), tags=list(p.tags),
            meta={"prompt_suffix": self.processor.prompt_suffix},
        )

    def __iter__(self) -> Iterator[Step]:
        import time

        model, processor, state, trace = self.model, self.processor, self.state, self.trace
        assert state is not None and trace is not None
        start = time.perf_counter()
        n = trace.n_patches
        prefix = [s.token_id for s in trace.steps] + self.forced
        device = state.first_logits.device
        cache = copy.deepcopy(state.cache)
        model.model.rope_deltas = state.rope_deltas
        decoder = processor.incremental_decoder()
        for tid in prefix[: self.branch_step]:
            decoder.push(tid)
        # Distributions at the forced steps: one forward over the prefix except its last token.
        try:
            head = prefix[:-1]
            logits_rows: list[torch.Tensor] = []
            if self.branch_step == 0:
                logits_rows.append(state.first_logits[0])
            if head:
                with torch.inference_mode():
                    out = model(input_ids=torch.tensor([head], device=device), cache=cache, use_cache=True)
                cache = out.cache
                logits_rows += [out.logits[0, j] for j in range(max(0, self.branch_step - 1), len(head))]
            for k, tid in enumerate(self.forced):
                stats = summarise_logits(logits_rows[k][None], processor.copy_token_start, n)
                step = build_step(processor, stats.to_host(), 0, index=len(trace.steps), token_id=tid,
                                  text=decoder.push(tid), grid=trace.grid)
                trace.steps.append(step)
                yield step
            # Free decoding from there, with the parent's settings; the recorder numbers steps on.
            full = torch.tensor([state.inputs["input_ids"][0].tolist() + prefix], device=device)
            settings = trace.settings
            kw = settings.generate_kwargs()
            kw["max_new_tokens"] = max(1, settings.max_new_tokens - len(prefix))
            kw["min_new_tokens"] = max(0, settings.min_new_tokens - len(prefix))
            if prefix and prefix[-1] in set(eos_token_ids(model)):
                return
            inputs = {"input_ids": full, "attention_mask": torch.ones_like(full)}
            # the cached prompt + prefix are skipped by generate's prefill; positions come from rope_deltas
            for _row, step in generate_traces(
                model, inputs, processor, cancel=self.cancel, seed=settings.seed,
                continue_from=(decoder, len(trace.steps)), cache=cache,
                image_grid_thw=state.inputs["image_grid_thw"], **kw,
            ):
                trace.steps.append(step)
                yield step
        except Exception as exc:
            trace.status, trace.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            trace.finish(processor.decode, eos_token_ids(model), cancelled=self.cancel.is_set(),
                         timings={"total_s": round(time.perf_counter() - start, 4)})

    def run(self) -> Trace:
        for _ in self:
            pass
        assert self.trace is not None
        return self.trace
