"""v1core's CLI commands (registered on the `v1studio` typer app by `app.cli`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("train-demo")(train_demo_cmd)
    app.command("eval-demo")(eval_demo_cmd)
    app.command("ask")(ask_cmd)


def train_demo_cmd(
    out: Path = typer.Option(None, help="checkpoint folder (default: the embedded demo checkpoint, or a fine-tune "
                                        "folder)"),
    steps: int = typer.Option(4000, help="optimiser steps (the time budget normally ends training first)"),
    batch_size: int = typer.Option(8),
    minutes: float = typer.Option(13.0, help="training wall-clock budget (the whole command, eval included, stays "
                                             "under 15 min)"),
    seed: int = typer.Option(0),
    eval_n: int = typer.Option(200, help="held-out scenes evaluated for the model card (0 to skip)"),
    from_export: Optional[Path] = typer.Option(None, help="fine-tune on exported v1g rows (JSONL or parquet)"),
    base: Optional[Path] = typer.Option(None, help="checkpoint to fine-tune with --from-export (default: demo)"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: train_demo's from scratch, 5e-4 "
                                                  "fine-tuning)"),
) -> None:
    """Train the embedded tiny v1 on synthetic scenes (or fine-tune it on an export)."""
    from .demo.finetune import finetune_from_export
    from .demo.recipe import DemoRecipe
    from .demo.train_demo import train_demo
    from .loading import DEMO_CHECKPOINT

    if from_export is not None:
        if not from_export.exists():
            raise typer.BadParameter(f"{from_export} does not exist", param_hint="--from-export")
        out = out or Path("runs/finetuned")
        res = finetune_from_export(base or DEMO_CHECKPOINT, from_export, out, steps=min(steps, 750),
                                   lr=lr or 5e-4, seed=seed)
    else:
        out = out or DEMO_CHECKPOINT
        recipe = DemoRecipe(steps=steps, batch_size=batch_size, time_budget_s=minutes * 60, seed=seed, eval_n=eval_n,
                            **({"lr": lr} if lr else {}))
        res = train_demo(out, recipe)
    typer.echo(json.dumps(res, indent=2))
    typer.echo(f"checkpoint written to {out}")


def eval_demo_cmd(
    n: int = typer.Option(200, help="number of held-out scenes"),
    seed: int = typer.Option(0, help="offset into the held-out seed range (≥ 10,000,000)"),
    model: Optional[Path] = typer.Option(None, help="checkpoint (default: $V1STUDIO_MODEL or the demo model)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    batch_size: int = typer.Option(8),
) -> None:
    """Pointer precision/recall and answer accuracy (with and without copying) on unseen scenes."""
    from .demo.evaluation import evaluate
    from .loading import load_model

    m, p = load_model(model)
    res = evaluate(m, p, n=n, seed=seed, batch_size=batch_size, progress=not as_json and sys.stderr.isatty())
    if as_json:
        typer.echo(json.dumps(res))
    else:
        for k, v in res.items():
            typer.echo(f"{k:>26}: {v}")


def ask_cmd(
    image: Path = typer.Argument(..., help="local image file"),
    question: str = typer.Argument(...),
    model: Optional[Path] = typer.Option(None, help="checkpoint (default: $V1STUDIO_MODEL or the demo model)"),
    max_new_tokens: int = typer.Option(256),
    as_json: bool = typer.Option(False, "--json", help="print the full trace as JSON (with pointers)"),
) -> None:
    """Run v1 on one image and stream its reasoning; copy tokens are shown as [patch k]."""
    from .generation import TraceRun
    from .images import ImageError, load_image
    from .loading import load_model
    from .trace import DecodingSettings

    try:
        loaded = load_image(image)
    except ImageError as exc:
        raise typer.BadParameter(str(exc), param_hint="IMAGE") from exc
    m, p = load_model(model)
    run = TraceRun(m, p, loaded.image, question, DecodingSettings(max_new_tokens=max_new_tokens),
                   image_sha256=loaded.sha256)
    for step in run:
        if not as_json:
            typer.echo(f"[patch {step.patch}]" if step.is_copy else step.text, nl=False)
    trace = run.trace
    if as_json:
        typer.echo(json.dumps(trace.to_dict()))
    else:
        typer.echo(f"\n\n{len(trace.steps)} tokens, {len(trace.revisits)} revisit(s), "
                   f"{trace.timings.get('tokens_per_s', 0)} tokens/s")
