"""v1core: the v1 point-and-copy model on current transformers, and step-by-step trace capture.

No Streamlit and no SQL here. Heavy modules (torch, transformers) are imported lazily so that
`from v1core import Trace` stays cheap for storage and UI code.
"""

from __future__ import annotations

import importlib
from typing import Any

from .trace import DecodingSettings, Revisit, Step, Trace

_LAZY = {
    "V1Config": "configuration_v1",
    "V1ForConditionalGeneration": "modeling_v1",
    "V1Processor": "processing_v1",
    "build_inputs": "processing_v1",
    "PatchGrid": "geometry",
    "ImageGeometryError": "geometry",
    "smart_resize": "geometry",
    "generate_trace": "generation",
    "TraceRecorder": "generation",
    "load_model": "loading",
    "load_image": "images",
    "ImageError": "images",
}

__all__ = ["DecodingSettings", "Revisit", "Step", "Trace", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'v1core' has no attribute {name!r}")
