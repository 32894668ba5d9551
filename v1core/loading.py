"""One entry point for every caller: `load_model(path=None) -> (model, processor)`.

`None` means `$V1STUDIO_MODEL` if set, else the tiny demo model shipped inside the package, so the app,
the CLI and the tests all load through the same path as the real v1-7B. Nothing is downloaded: the path
must be a local directory.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from .modeling_v1 import V1ForConditionalGeneration
from .processing_v1 import V1Processor

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "demo" / "checkpoint"
MODEL_ENV = "V1STUDIO_MODEL"


class ModelNotFound(FileNotFoundError):
    pass


def default_model_path() -> Path:
    env = os.environ.get(MODEL_ENV)
    return Path(env).expanduser() if env else DEMO_CHECKPOINT


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """bf16 on CUDA (how v1-7B was trained), fp32 on CPU (bf16 matmuls are slow and lossy there)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None:
        return dtype
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def pick_attention(device: torch.device, attn_implementation: str | None = None) -> str:
    """flash-attn 2 when it imports and a GPU is present, else PyTorch SDPA."""
    if attn_implementation:
        return attn_implementation
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
) -> tuple[V1ForConditionalGeneration, V1Processor]:
    """Load a v1 checkpoint directory (published layout or our own save) and its processor."""
    path = Path(path).expanduser() if path is not None else default_model_path()
    if not (path / "config.json").is_file():
        hint = f" (from ${MODEL_ENV})" if os.environ.get(MODEL_ENV) and path == default_model_path() else ""
        raise ModelNotFound(
            f"no v1 checkpoint at {path}{hint}: expected a local directory with config.json and *.safetensors. "
            "Download kjunh/v1-7B yourself and point V1STUDIO_MODEL at it; nothing is fetched at run time."
        )
    dev = pick_device(device)
    model = V1ForConditionalGeneration.from_pretrained(
        path, dtype=pick_dtype(dev, dtype), attn_implementation=pick_attention(dev, attn_implementation),
        local_files_only=True,
    )
    model.to(dev).eval()
    processor = V1Processor.from_pretrained(path, model.config)
    model.v1_processor = processor
    model.v1_model_id = _model_id(path)
    if model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model, processor


def _model_id(path: Path) -> str:
    if path.resolve() == DEMO_CHECKPOINT.resolve():
        return "v1studio/demo-tiny"
    return path.name or str(path)
