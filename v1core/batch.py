"""Batch tracing of datasets: items in, Traces out, resumable, sharded across ranks (torchrun/accelerate).

Sources (`iter_items`): a JSONL of `{image, question}` rows, a folder of images with one question, a local
Hugging Face dataset (parquet / arrow / `save_to_disk` folder) with image and question columns, and v1g rows
(their questions are re-traced). Only local files are read; a URL is reported as a bad item.

Sinks decide what is "already done" (resumability) and write each finished trace atomically:
`JsonlShardSink` here (one shard per rank, append + fsync per line, a torn last line is dropped on restart);
the store sink lives with the CLI in `app/trace_cli.py` (no SQL in v1core).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import torch

from .generation import eos_token_ids, generate_traces
from .images import ImageError, load_image
from .processing_v1 import V1Processor
from .trace import DecodingSettings, Trace
from .v1g import V1GFormatError, question_of

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


@dataclass
class TraceItem:
    """One (image, question) to trace; `error` set when the item cannot be traced (reported, skipped)."""

    source: str  # where it came from, for messages ("file.jsonl:12", "folder/cat.png", "dataset[7]")
    question: str = ""
    image: Any = None  # PIL.Image once loaded
    image_sha256: str = ""
    image_bytes: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _load(item: TraceItem, ref: Any, base: Path | None) -> TraceItem:
    if isinstance(ref, dict):  # HF Image feature / v1g parquet cell
        ref = ref.get("bytes") or ref.get("path")
    if isinstance(ref, str):
        if "://" in ref:
            item.error = f"{ref!r} is a URL; nothing is fetched at run time — download it and give a local path"
            return item
        path = Path(ref)
        if base is not None and not path.is_absolute():
            path = base / path
        ref = path
    try:
        loaded = load_image(ref)
    except ImageError as exc:
        item.error = str(exc)
        return item
    item.image, item.image_sha256, item.image_bytes = loaded.image, loaded.sha256, loaded.data
    return item


def _question_of(row: dict[str, Any], question: str | None, column: str, what: str) -> tuple[str, str | None]:
    """(question, None) — the fixed question, the row's `column`, or a v1g row's question (re-traced) — or
    ("", why there is none)."""
    if question:
        return question, None
    q: Any = row.get(column) if isinstance(row, dict) else None
    if not q and isinstance(row, dict) and ("conversations" in row or "conversation" in row):
        try:
            q = question_of(row)
        except V1GFormatError as exc:
            return "", str(exc)
    return (str(q), None) if q else ("", f"no {column!r} {what}")


def iter_items(
    source: str | os.PathLike,
    question: str | None = None,
    image_column: str = "image",
    question_column: str = "question",
) -> Iterator[TraceItem]:
    """Every item of `source`, in a stable order (so ranks can shard by index)."""
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    if src.is_dir() and not any(src.glob("*.parquet")) and not any(src.glob("*.arrow")) \
            and not (src / "dataset_info.json").exists():
        if not question:
            raise ValueError("a folder of images needs --question")
        for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            yield _load(TraceItem(source=str(path.relative_to(src)), question=question), path, None)
        return
    if src.suffix == ".jsonl" or src.suffix == ".json":
        with open(src, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                item = TraceItem(source=f"{src.name}:{n}")
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    item.error = f"not JSON ({exc.msg})"
                    yield item
                    continue
                q, item.error = _question_of(row, question, question_column, "field")
                if item.error:
                    yield item
                    continue
                item.question, item.meta = q, {"row_id": row.get("id")}
                yield _load(item, row.get(image_column), src.parent)
        return
    yield from _iter_dataset(src, question, image_column, question_column)


def _iter_dataset(src: Path, question: str | None, image_column: str, question_column: str) -> Iterator[TraceItem]:
    import datasets

    if src.is_dir() and (src / "dataset_info.json").exists():
        ds = datasets.load_from_disk(str(src))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[next(iter(ds))]
    else:
        kind = "arrow" if src.suffix == ".arrow" or any(src.glob("*.arrow")) else "parquet"
        files = str(src) if src.is_file() else str(src / f"*.{kind}")
        ds = datasets.load_dataset(kind, data_files=files, split="train")
    if image_column not in ds.column_names:
        raise ValueError(f"dataset has no {image_column!r} column (columns: {', '.join(ds.column_names)})")
    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    for i, row in enumerate(ds):
        item = TraceItem(source=f"{src.name}[{i}]", meta={"row_id": row.get("id", i)})
        item.question, item.error = _question_of(row, question, question_column, "column value")
        if item.error:
            yield item
            continue
        yield _load(item, row[image_column], src.parent if src.is_file() else src)


def count_items(source: str | os.PathLike) -> int | None:
    """How many items `iter_items` will yield (for the progress bar's ETA), without loading images."""
    src = Path(source)
    try:
        if src.is_file() and src.suffix in (".jsonl", ".json"):
            with open(src, encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        if src.is_dir() and not any(src.glob("*.parquet")) and not any(src.glob("*.arrow")) \
                and not (src / "dataset_info.json").exists():
            return sum(1 for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if src.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(src).metadata.num_rows
    except OSError:
        return None
    return None


def item_key(image_sha256: str, question: str, settings: DecodingSettings, model_id: str) -> str:
    """Identity of a trace job: same image, question, settings and model → same key (resume skips it)."""
    blob = json.dumps([image_sha256, question, settings.to_dict(), model_id], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Sink(Protocol):
    def done_keys(self) -> set[str]: ...
    def write(self, trace: Trace, item: TraceItem) -> None: ...
    def close(self) -> None: ...


class JsonlShardSink:
    """`<out>/traces-rank{r}-of-{w}.jsonl`: full traces (with float16 pointers) that `v1studio import` reads, and
    their images in `<out>/images/<sha256>.<ext>` (each line's `image.path`), so a run copied to another machine
    imports with its pictures."""

    def __init__(self, out_dir: str | os.PathLike, rank: int = 0, world: int = 1):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"traces-rank{rank:03d}-of-{world:03d}.jsonl"
        self._repair()
        self.f = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        """A run killed mid-write leaves a line without its newline: cut it off (it is re-traced)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def done_keys(self) -> set[str]:
        keys: set[str] = set()
        for shard in self.dir.glob("traces-rank*.jsonl"):
            for line in shard.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        keys.add(json.loads(line)["meta"]["item_key"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
        return keys

    def write(self, trace: Trace, item: TraceItem) -> None:
        d = trace.to_dict()
        rel = self._put_image(trace.image_sha256, item.image_bytes)
        if rel is not None:
            d["image"] = {"path": rel}  # the importer reads it (and checks its sha256)
        self.f.write(json.dumps(d, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def _put_image(self, sha256: str, data: bytes | None) -> str | None:
        """`images/<sha256>.<ext>` beside the shards, written once (content-addressed; ranks may race to write the
        same file: each writes a private temporary file and renames it, so the file is always whole)."""
        if not data or not sha256:
            return None
        rel = f"images/{sha256}.{_image_ext(data)}"
        target = self.dir / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return rel

    def close(self) -> None:
        self.f.close()


def _image_ext(data: bytes) -> str:
    for magic, ext in ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp")):
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "img"


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    revisits: int = 0
    tokens: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def mean_revisits(self) -> float:
        return self.revisits / self.done if self.done else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed,
                "mean_revisits": round(self.mean_revisits, 3), "tokens": self.tokens,
                "seconds": round(self.seconds, 2), "errors": self.errors[:50]}


def distributed_rank() -> tuple[int, int]:
    """(rank, world) from torchrun / accelerate environment variables; (0, 1) when run alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def trace_batch(
    model: torch.nn.Module,
    processor: V1Processor,
    items: Iterable[TraceItem],
    settings: DecodingSettings,
    sink: Sink,
    *,
    batch_size: int = 1,
    rank: int = 0,
    world: int = 1,
    max_prompt_tokens: int = 32768,
    progress: bool = True,
    log: Any = print,
    total: int | None = None,
) -> BatchSummary:
    """Trace this rank's share of `items` (index % world == rank) into `sink`, skipping done keys."""
    from tqdm.auto import tqdm

    model_id = getattr(model, "v1_model_id", "") or str(model.config.name_or_path)
    done = sink.done_keys()
    summary = BatchSummary()
    start = time.perf_counter()
    mine = (it for i, it in enumerate(items) if i % world == rank)
    mine_total = None if total is None else len(range(rank, total, world))
    bar = tqdm(desc=f"trace[rank {rank}/{world}]", unit="item", total=mine_total, disable=not progress,
               dynamic_ncols=True)  # items/s and ETA from tqdm; tokens/s in the postfix
    pending: list[tuple[TraceItem, str]] = []

    def flush() -> None:
        if not pending:
            return
        for item, trace in _run(model, processor, pending, settings, model_id):
            if trace.status == "complete":
                sink.write(trace, item)
                summary.done += 1
                summary.revisits += len(trace.revisits)
                summary.tokens += len(trace.steps)
            else:
                summary.failed += 1
                summary.errors.append(f"{item.source}: {trace.error}")
                log(f"failed {item.source}: {trace.error}")
            bar.update(1)
            elapsed = time.perf_counter() - start
            bar.set_postfix(tok_s=f"{summary.tokens / elapsed:.1f}", done=summary.done, failed=summary.failed)
        pending.clear()

    for item in mine:
        if item.error:
            summary.failed += 1
            summary.errors.append(f"{item.source}: {item.error}")
            log(f"skipped {item.source}: {item.error}")
            bar.update(1)
            continue
        key = item_key(item.image_sha256, item.question, settings, model_id)
        item.meta["item_key"] = key
        if key in done:
            summary.skipped += 1
            bar.update(1)
            continue
        try:
            n_prompt = len(processor.prompt_ids(item.question, processor.grid_for(item.image).n_patches))
        except ValueError as exc:
            n_prompt, item.error = 0, str(exc)
        if item.error or n_prompt > max_prompt_tokens:
            reason = item.error or f"prompt of {n_prompt} tokens exceeds --max-prompt-tokens {max_prompt_tokens}"
            summary.failed += 1
            summary.errors.append(f"{item.source}: {reason}")
            log(f"skipped {item.source}: {reason}")
            bar.update(1)
            continue
        done.add(key)  # duplicates inside one run are traced once
        pending.append((item, key))
        if len(pending) >= batch_size:
            flush()
    flush()
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _run(
    model: torch.nn.Module, processor: V1Processor, pending: list[tuple[TraceItem, str]],
    settings: DecodingSettings, model_id: str,
) -> list[tuple[TraceItem, Trace]]:
    """One batched decode; each row becomes its own Trace (left padding; pointers per image)."""
    images = [it.image for it, _ in pending]
    questions = [it.question for it, _ in pending]
    traces: list[Trace] = []
    try:
        batch, infos = processor(images, questions, return_info=True)
    except ValueError as exc:
        return [(it, _failed(it, key, settings, model_id, exc)) for it, key in pending]
    for (item, key), info in zip(pending, infos):
        traces.append(Trace(
            model_id=model_id, image_sha256=item.image_sha256, image_size=(item.image.width, item.image.height),
            resized_size=info.grid.resized, grid=info.grid.shape, question=item.question,
            system_prompt=info.system_prompt, settings=settings, status="running", prompt_tokens=info.prompt_tokens,
            source="generated",
            meta={"item_key": key, "source": item.source, "prompt_suffix": info.prompt_suffix,
                  **{k: v for k, v in item.meta.items() if k != "item_key"}},
        ))
    t0 = time.perf_counter()
    try:
        for row, step in generate_traces(model, batch, processor, seed=settings.seed, **settings.generate_kwargs()):
            traces[row].steps.append(step)
    except Exception as exc:  # noqa: BLE001 - a whole batch failed (e.g. out of memory): report every row
        return [(it, _failed(it, key, settings, model_id, exc)) for it, key in pending]
    elapsed = time.perf_counter() - t0
    eos = eos_token_ids(model)  # what generate stopped on, exactly as for an interactive trace
    for tr in traces:
        tr.finish(processor.decode, eos, timings={"batch_s": round(elapsed, 4), "batch_size": len(traces)})
    return [(it, tr) for (it, _), tr in zip(pending, traces)]


def _failed(item: TraceItem, key: str, settings: DecodingSettings, model_id: str, exc: Exception) -> Trace:
    return Trace(model_id=model_id, image_sha256=item.image_sha256, image_size=(0, 0), resized_size=(0, 0),
                 grid=(1, 1), question=item.question, settings=settings, status="failed",
                 error=f"{type(exc).__name__}: {exc}", meta={"item_key": key})


def write_summary(path: Path, summary: BatchSummary) -> None:
    path.write_text(json.dumps(summary.to_dict(), indent=2))


__all__ = ["TraceItem", "iter_items", "item_key", "JsonlShardSink", "trace_batch", "BatchSummary", "distributed_rank"]
