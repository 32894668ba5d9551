"""Fine-tune a v1 checkpoint on exported (or published) v1g rows: `v1studio train-demo --from-export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..geometry import TrainingGeometry
from ..processing_v1 import V1Processor
from ..training import Example, TrainConfig, build_example, cycle, train
from .train_demo import save_checkpoint


def v1g_examples(processor: V1Processor, rows: Iterable[dict[str, Any]], image_root: Path | None = None
                 ) -> list[Example]:
    """Examples from v1g rows (exported or published), on the official training geometry: an image over 672 px a
    side is resized to its dataset size first, and every key expands to the region the training code writes
    (`v1core.v1g`), in the demo model's keyed form (`<obj0><region>…`). The question is asked as the processor
    asks it (its prompt suffix added once)."""
    from ..images import load_image
    from ..v1g import parse_row

    out = []
    for raw in rows:
        row = parse_row(raw)
        img = row.image
        if isinstance(img, dict):
            img = img.get("bytes") or img.get("path")
        if isinstance(img, str) and image_root is not None and not Path(img).is_absolute():
            img = str(image_root / img)
        image = load_image(img).image
        geometry = TrainingGeometry.for_image(*(row.image_size or image.size), min_pixels=processor.min_pixels,
                                              max_pixels=processor.max_pixels, patch_size=processor.patch_size,
                                              merge_size=processor.merge_size)
        if geometry.rescaled or image.size != geometry.image_size:
            image = image.resize(geometry.dataset_size)  # as the official collate does
        if processor.grid_for(image).resized != geometry.processor_size:  # never expected: same smart_resize
            raise RuntimeError(f"row {row.id}: processor grid disagrees with the training geometry {geometry}")
        _, target = row.expanded(geometry, keep_key=True)
        out.append(build_example(processor, image, row.question, target))
    return out


def read_v1g_rows(path: Path) -> list[dict[str, Any]]:
    """v1g rows from JSONL or parquet (a file or a folder of shards), each in the published layout (`conversations`,
    `regions` string; v1 Studio's older `conversation` / `region` JSONL is read too) plus any extra columns."""
    from ..v1g import parse_row

    path = Path(path)
    if path.suffix == ".parquet" or path.is_dir():
        import datasets

        files = str(path / "*.parquet") if path.is_dir() else str(path)
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
        ds = ds.cast_column("image", datasets.Image(decode=False)) if "image" in ds.column_names else ds
        return [dict(r) for r in ds]
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                raw = json.loads(line)
                row = parse_row(raw)
            except ValueError as exc:  # JSONDecodeError and V1GFormatError: say where
                raise ValueError(f"{path}:{n}: {exc}") from None
            extra = {k: v for k, v in raw.items() if k not in ("conversation", "region")}
            rows.append({**extra, "id": row.id, "conversations": row.conversations(), "regions": row.regions_string()}
                        | ({"image_size": list(row.image_size)} if row.image_size else {}))
    return rows


def finetune_from_export(
    checkpoint: Path, export_file: Path, out_dir: Path, steps: int = 200, lr: float = 5e-4,
    batch_size: int = 4, progress: bool = True, seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a v1 checkpoint on exported v1g rows (corrected regions included) and save it."""
    from ..loading import load_model

    model, processor = load_model(checkpoint, device="cpu")
    rows = read_v1g_rows(export_file)
    if not rows:
        raise ValueError(f"{export_file} has no rows")
    examples = v1g_examples(processor, rows, image_root=Path(export_file).parent)
    cfg = TrainConfig(steps=steps, batch_size=min(batch_size, len(examples)), lr=lr, warmup=10, seed=seed)
    losses = train(model, processor, cycle(lambda i: examples[i], range(len(examples))), cfg, progress=progress)
    save_checkpoint(model, processor, out_dir, cfg, losses, {}, 0.0, [], base=str(checkpoint), data=str(export_file))
    return {"steps": len(losses), "first_loss": losses[0], "final_loss": losses[-1], "rows": len(rows)}

