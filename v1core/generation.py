"""Traced generation: `model.generate` itself, recording what v1 believed at every step, while it decodes.

We do not re-implement decoding. `generate` runs as a greenlet in the consumer's own thread (or, on request or
without greenlet, in a worker thread) with two small attachments:
a forward hook that reads the raw logits of each step (the tensor decoding starts from) and summarises them
on the device (p_copy, pointer, entropy, top-k, gate), and a `StoppingCriteria` that sees the chosen token,
pairs it with that summary, hands a `Step` to the consumer and checks for cancellation. Ids are therefore
exactly `generate`'s, and the cost is a softmax and a small copy per step.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .copy_tokens import copy_patch
from .processing_v1 import V1Processor
from .trace import DecodingSettings, Step, Trace

try:  # streaming without a second OS thread (see _drive_in_greenlet)
    import greenlet as _greenlet
except ImportError:  # pragma: no cover - greenlet is in requirements.txt; the thread path still works
    _greenlet = None

TOPK = 5


class GenerationCancelled(Exception):
    """Raised inside the worker when the consumer cancelled; never escapes `generate_trace`."""


@dataclass
class StepStats:
    """What one decoding step's logits say, per batch row (tensors on the logits' device)."""

    p_copy: torch.Tensor  # [B]
    entropy: torch.Tensor  # [B]
    pointer: torch.Tensor  # [B, P]
    topk_probs: torch.Tensor  # [B, k]
    topk_ids: torch.Tensor  # [B, k]
    gate: torch.Tensor | None  # [B]

    def to_host(self) -> dict[str, Any]:
        """The same values on the CPU (lists, pointers as one numpy array): one transfer per step."""
        return {
            "p_copy": self.p_copy.cpu().tolist(),
            "entropy": self.entropy.cpu().tolist(),
            "pointer": self.pointer.cpu().numpy(),
            "topk_probs": self.topk_probs.cpu().tolist(),
            "topk_ids": self.topk_ids.cpu().tolist(),
            "gate": None if self.gate is None else self.gate.cpu().tolist(),
        }


def build_step(processor: V1Processor, host: dict[str, Any], row: int, *, index: int, token_id: int, text: str,
               grid: tuple[int, int]) -> Step:
    """The `Step` of batch row `row`: the chosen `token_id` (decoded as `text`) with what the logits said
    (`host` from `StepStats.to_host()`). The pointer covers the row's own image, `grid` = (rows, cols) merged
    patches; a copy token's patch is `token_id - copy_token_start`."""
    rows, cols = grid
    patch = copy_patch(token_id, processor.copy_token_start)
    topk_ids = [int(i) for i in host["topk_ids"][row]]
    return Step(
        index=index,
        token_id=token_id,
        text=text,
        is_copy=patch is not None,
        patch=patch,
        p_copy=float(host["p_copy"][row]),
        entropy=float(host["entropy"][row]),
        gate=None if host["gate"] is None else float(host["gate"][row]),
        topk_ids=topk_ids,
        topk_texts=[processor.token_text(i) for i in topk_ids],
        topk_probs=[float(p) for p in host["topk_probs"][row]],
        pointer=np.asarray(host["pointer"][row][: rows * cols], dtype=np.float32).reshape(rows, cols),
    )


def summarise_logits(
    logits: torch.Tensor, copy_token_start: int, n_patches: int, gate: torch.Tensor | None = None, k: int = TOPK
) -> StepStats:
    """Everything a Step shows, from one row of raw logits [B, V] (float32 maths, on the logits' device)."""
    logits = logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    probs = logprobs.exp()
    copy_logits = logits[:, copy_token_start : copy_token_start + n_patches]
    p_copy = probs[:, copy_token_start : copy_token_start + n_patches].sum(dim=-1)
    pointer = torch.softmax(copy_logits, dim=-1)
    entropy = -(pointer * torch.log_softmax(copy_logits, dim=-1)).nan_to_num(0.0).sum(dim=-1)
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return StepStats(
        p_copy=p_copy,
        entropy=entropy,
        pointer=pointer,
        topk_probs=top.values,
        topk_ids=top.indices,
        gate=None if gate is None else gate.float().reshape(gate.shape[0], -1)[:, -1],
    )


class TraceRecorder(StoppingCriteria):
    """Forward hook + stopping criterion that turn each decoding step into `Step`s, one per batch row.

    `on_step(row, step)` is called from the generating thread as soon as a token is chosen.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: V1Processor,
        n_patches: Sequence[int],
        grids: Sequence[tuple[int, int]],
        on_step: Callable[[int, Step], None],
        eos_token_ids: Sequence[int] = (),
        cancel: threading.Event | None = None,
        topk: int = TOPK,
    ):
        self.model = model
        self.processor = processor
        self.copy_token_start = processor.copy_token_start
        self.n_patches = list(n_patches)
        self.grids = list(grids)
        self.on_step = on_step
        self.eos = set(int(e) for e in eos_token_ids)
        self.cancel = cancel or threading.Event()
        self.topk = topk
        self.pending: StepStats | None = None
        self.decoders = [processor.incremental_decoder() for _ in self.n_patches]
        self.finished = [False] * len(self.n_patches)
        self.counts = [0] * len(self.n_patches)
        self._handle = None

    # hook: runs after every forward inside generate
    def _hook(self, module, args, kwargs, output) -> None:
        logits = output.logits[:, -1, :]
        gate = getattr(output, "gate", None)
        self.pending = summarise_logits(
            logits, self.copy_token_start, max(self.n_patches), None if gate is None else gate[:, -1], self.topk
        )

    def __enter__(self) -> "TraceRecorder":
        self._handle = self.model.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        stats, self.pending = self.pending, None
        chosen = input_ids[:, -1].tolist()
        if stats is not None:
            host = stats.to_host()
            for row, token_id in enumerate(chosen):
                if self.finished[row]:
                    continue
                self.on_step(row, self._make_step(row, int(token_id), host))
                if token_id in self.eos:
                    self.finished[row] = True
        stop = self.cancel.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    def _make_step(self, row: int, token_id: int, host: dict[str, Any]) -> Step:
        step = build_step(self.processor, host, row, index=self.counts[row], token_id=token_id,
                          text=self.decoders[row].push(token_id), grid=self.grids[row])
        self.counts[row] += 1
        return step


def eos_token_ids(model: torch.nn.Module, generate_kwargs: dict[str, Any] | None = None) -> list[int]:
    """The end-of-sequence ids `generate` stops on: `generate_kwargs["eos_token_id"]`, else the model's
    generation config (one id or a list), else none."""
    eos = (generate_kwargs or {}).get("eos_token_id")
    if eos is None:
        eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _patch_counts(model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[list[int], list[tuple[int, int]]]:
    merge = model.config.vision_config.spatial_merge_size
    counts, grids = [], []
    for t, h, w in inputs["image_grid_thw"].tolist():
        rows, cols = h // merge, w // merge
        counts.append(int(t * rows * cols))
        grids.append((int(t * rows), int(cols)))
    return counts, grids


def generate_trace(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    processor: V1Processor | None = None,
    *,
    cancel: threading.Event | None = None,
    seed: int | None = None,
    topk: int = TOPK,
    **generate_kwargs: Any,
) -> Iterator[Step]:
    """Yield one `Step` per decoded token *while* `model.generate(**inputs, **generate_kwargs)` runs.

    Takes `generate`'s decoding arguments (do_sample, temperature, top_p, top_k, repetition_penalty,
    max_new_tokens, min_new_tokens, …) plus `seed`. Set `cancel` (a `threading.Event`) or simply stop
    iterating to end decoding after the current step. Batch size must be 1 here; see `generate_traces`.
    """
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError("generate_trace decodes one sample; use generate_traces for batches")
    for _row, step in generate_traces(
        model, inputs, processor, cancel=cancel, seed=seed, topk=topk, **generate_kwargs
    ):
        yield step


def generate_traces(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    processor: V1Processor | None = None,
    *,
    cancel: threading.Event | None = None,
    seed: int | None = None,
    topk: int = TOPK,
    continue_from: tuple[Any, int] | None = None,
    threaded: bool | None = None,
    **generate_kwargs: Any,
) -> Iterator[tuple[int, Step]]:
    """Batched form: yields `(row, step)`; each row's pointers cover only its own image's patches.

    `continue_from=(incremental_decoder, next_step_index)` resumes numbering and text decoding of an existing
    trace (batch of one) — how a re-decoded branch continues after its forced tokens.
    `threaded`: decode in a worker thread (True) or in the consumer's thread as a greenlet (False; the default
    when greenlet is installed — no thread overhead). Iterate from one thread either way.
    """
    processor = processor or getattr(model, "v1_processor", None)
    if processor is None:
        raise ValueError("generate_trace needs the V1Processor (pass processor=, or load with v1core.load_model)")
    cancel = cancel or threading.Event()
    sink: list[Callable[[int, Step], None]] = []  # set below by the driver: where a finished step goes
    n_patches, grids = _patch_counts(model, inputs) if "image_grid_thw" in inputs else \
        _patch_counts(model, {"image_grid_thw": generate_kwargs.pop("image_grid_thw")})
    recorder = TraceRecorder(
        model, processor, n_patches, grids, lambda row, step: sink[0](row, step),
        eos_token_ids=eos_token_ids(model, generate_kwargs), cancel=cancel, topk=topk,
    )
    if continue_from is not None:
        recorder.decoders, recorder.counts = [continue_from[0]], [int(continue_from[1])]
    user_criteria = generate_kwargs.pop("stopping_criteria", None) or []
    criteria = StoppingCriteriaList([recorder, *user_criteria])
    device = next(model.parameters()).device
    model_inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}

    def decode() -> None:
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode(), recorder:
            model.generate(**model_inputs, stopping_criteria=criteria, **generate_kwargs)

    use_thread = threaded if threaded is not None else _greenlet is None
    driver = _drive_in_thread if use_thread else _drive_in_greenlet
    yield from driver(decode, sink, cancel)


def _drive_in_greenlet(
    decode: Callable[[], None], sink: list, cancel: threading.Event
) -> Iterator[tuple[int, Step]]:
    """Run `decode` in the consumer's own thread, as a greenlet that switches back at every step.

    Why not a thread: on CPU, torch kernels run 25–35 % slower in a second Python thread (measured; see
    docs/BENCHMARKS.md), which alone broke the ≤ 1.05 tracing-overhead budget. A greenlet streams with no
    second OS thread: decoding pauses while the consumer handles a step and resumes on `next()`.
    """
    done = object()

    def emit(row: int, step: Step) -> None:
        # the consumer runs outside generate's inference mode (autograd state is per OS thread, shared here)
        with torch.inference_mode(False):
            _greenlet.getcurrent().parent.switch((row, step))

    def body() -> object:
        decode()
        return done

    sink[:] = [emit]
    child = _greenlet.greenlet(body)

    def resume() -> Any:
        child.parent = _greenlet.getcurrent()  # whoever iterates receives the next step
        return child.switch()

    def finish() -> None:  # after a cancel, let generate see it and return
        while not child.dead:
            resume()

    yield from _stream(resume, done, cancel, finish)


def _drive_in_thread(
    decode: Callable[[], None], sink: list, cancel: threading.Event
) -> Iterator[tuple[int, Step]]:
    """Run `decode` in a worker thread and hand steps over through a queue (the consumer may do other work,
    e.g. in another thread, while a step is being computed)."""
    out: queue.Queue = queue.Queue()
    done = object()
    sink[:] = [lambda row, step: out.put((row, step))]

    def work() -> None:
        try:
            decode()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            out.put(exc)
        finally:
            out.put(done)

    worker = threading.Thread(target=work, name="v1-generate", daemon=True)
    worker.start()
    yield from _stream(out.get, done, cancel, worker.join)


def _stream(
    receive: Callable[[], Any], done: object, cancel: threading.Event, finish: Callable[[], None]
) -> Iterator[tuple[int, Step]]:
    """Yield received steps until `done`; re-raise a failure; on an early stop, cancel and `finish`."""
    finished = False
    try:
        while True:
            item = receive()
            if item is done:
                finished = True
                break
            if isinstance(item, BaseException):
                raise item
            if cancel.is_set():  # cancelled between steps: nothing after the request is reported
                break
            yield item
    finally:
        if not finished:
            cancel.set()  # the consumer stopped early: end decoding after the current step
        finish()


@dataclass
class TraceRun:
    """One (image, question) decoding that fills a `Trace` as steps arrive — what the app and CLI use.

    Iterate it to stream steps; `trace` is `running` meanwhile and ends `complete`, `cancelled` or `failed`.
    """

    model: torch.nn.Module
    processor: V1Processor
    image: Any  # PIL.Image
    question: str
    settings: DecodingSettings = field(default_factory=DecodingSettings)
    image_sha256: str = ""
    model_id: str = ""
    system_prompt: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    trace: Trace | None = None

    def __post_init__(self) -> None:
        from .images import image_sha256

        batch, infos = self.processor(self.image, self.question, self.system_prompt, return_info=True)
        self.inputs = batch
        info = infos[0]
        self.trace = Trace(
            model_id=self.model_id or getattr(self.model, "v1_model_id", "") or self.model.config.name_or_path,
            image_sha256=self.image_sha256 or image_sha256(self.image),
            image_size=(self.image.width, self.image.height),
            resized_size=info.grid.resized,
            grid=info.grid.shape,
            question=self.question,
            system_prompt=info.system_prompt,
            settings=self.settings,
            status="running",
            prompt_tokens=info.prompt_tokens,
            meta={"prompt_suffix": info.prompt_suffix},
        )

    def __iter__(self) -> Iterator[Step]:
        trace = self.trace
        assert trace is not None
        start = time.perf_counter()
        first_token_at = None
        try:
            for step in generate_trace(
                self.model, self.inputs, self.processor, cancel=self.cancel, seed=self.settings.seed,
                **self.settings.generate_kwargs(),
            ):
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                trace.steps.append(step)
                yield step
        except Exception as exc:
            trace.status, trace.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            end = time.perf_counter()
            decode_s = end - (first_token_at or end)
            n = len(trace.steps)
            trace.finish(self.processor.decode, eos_token_ids(self.model), cancelled=self.cancel.is_set(), timings={
                "prefill_s": round((first_token_at or end) - start, 4),
                "decode_s": round(decode_s, 4),
                "total_s": round(end - start, 4),
                "tokens_per_s": round((n - 1) / decode_s, 2) if decode_s > 0 and n > 1 else 0.0,
            })

    def run(self) -> Trace:
        for _ in self:
            pass
        assert self.trace is not None
        return self.trace
