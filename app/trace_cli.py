"""`v1studio trace`: batch tracing into the store or JSONL shards, on one or many processes/GPUs.

Lives beside the CLI root because it joins two layers: v1core (model → Trace) and storage (Trace → rows).

    v1studio trace data.jsonl --out runs/traces                 # 1 process → JSONL shard(s)
    v1studio trace images/ --question "What is shown?" --db     # into $V1STUDIO_DB
    torchrun --nproc_per_node 8 -m app.trace_cli data.jsonl --out runs/traces --batch-size 8
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from v1core.batch import (JsonlShardSink, TraceItem, count_items, distributed_rank, iter_items, trace_batch,
                          write_summary)
from v1core.trace import DecodingSettings, Trace


class StoreSink:
    """Writes each trace to the store in its own transaction; done keys come from the store itself."""

    def __init__(self, url: str | None, image_bytes: bool = True):
        from storage import Store

        self.store = Store(url)
        self.image_bytes = image_bytes

    def done_keys(self) -> set[str]:
        return set(self.store.item_keys())

    def write(self, trace: Trace, item: TraceItem) -> None:
        if item.image_bytes is not None:
            self.store.put_image(item.image_bytes, trace.image_size[0], trace.image_size[1],
                                 (item.meta.get("format") or "PNG"))
        self.store.save_trace(trace)

    def close(self) -> None:
        pass


def trace_cmd(
    source: Path = typer.Argument(..., help="JSONL of {image, question}, a folder of images, a parquet/arrow "
                                            "dataset, or v1g rows"),
    out: Optional[Path] = typer.Option(None, help="write JSONL shards into this folder (default: the store)"),
    db: Optional[str] = typer.Option(None, help="store URL (default $V1STUDIO_DB or ./data/v1studio.db)"),
    question: Optional[str] = typer.Option(None, help="one question for every image (folders; overrides rows)"),
    image_column: str = typer.Option("image"),
    question_column: str = typer.Option("question"),
    model: Optional[Path] = typer.Option(None, help="checkpoint (default $V1STUDIO_MODEL or the demo model)"),
    batch_size: int = typer.Option(1, help="samples decoded together (left padding)"),
    max_new_tokens: int = typer.Option(512),
    do_sample: bool = typer.Option(False),
    temperature: float = typer.Option(1.0),
    top_p: float = typer.Option(1.0),
    repetition_penalty: float = typer.Option(1.05),
    seed: int = typer.Option(0),
    max_prompt_tokens: int = typer.Option(16384, help="items whose prompt is longer are skipped and reported"),
    limit: Optional[int] = typer.Option(None, help="only the first N items"),
) -> None:
    """Trace a dataset, resumably: an item already traced with the same image, question, settings and model is
    skipped."""
    from itertools import islice

    from v1core.loading import load_model

    rank, world = distributed_rank()
    if world > 1 and os.environ.get("LOCAL_RANK") is not None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    settings = DecodingSettings(do_sample=do_sample, temperature=temperature, top_p=top_p,
                                repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed)
    try:
        items = iter_items(source, question, image_column, question_column)
        if limit:
            items = islice(items, limit)
        m, p = load_model(model)
        sink = JsonlShardSink(out, rank, world) if out else StoreSink(db)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def log(msg: str) -> None:
        typer.echo(msg, err=True)

    try:
        n = count_items(source)
        total = min(limit, n) if limit and n else (limit or n)
        summary = trace_batch(m, p, items, settings, sink, batch_size=batch_size, rank=rank, world=world,
                              max_prompt_tokens=max_prompt_tokens, progress=sys.stderr.isatty(), log=log,
                              total=total)
    finally:
        sink.close()
    if out:
        write_summary(out / f"summary-rank{rank:03d}.json", summary)
    typer.echo(json.dumps({"rank": rank, "world": world, **summary.to_dict()}))
    if world > 1:
        _gather_summary(summary.to_dict(), rank, world, out)


def _gather_summary(mine: dict, rank: int, world: int, out: Optional[Path]) -> None:
    """torchrun/accelerate: rank 0 prints (and writes) the totals once every rank has finished."""
    import torch.distributed as dist

    if not dist.is_available():
        return
    owns = not dist.is_initialized()
    if owns:
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    parts: list = [None] * world
    dist.all_gather_object(parts, mine)
    if rank == 0:
        total = {k: sum(p[k] for p in parts) for k in ("done", "skipped", "failed", "tokens")}
        total["mean_revisits"] = round(
            sum(p["mean_revisits"] * p["done"] for p in parts) / max(1, total["done"]), 3)
        typer.echo(json.dumps({"all_ranks": total}))
        if out:
            (out / "summary.json").write_text(json.dumps(total, indent=2))
    if owns:
        dist.destroy_process_group()


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_cmd)


if __name__ == "__main__":  # torchrun -m app.trace_cli …
    cli = typer.Typer()
    cli.command()(trace_cmd)
    cli()
