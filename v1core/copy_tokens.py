"""Copy tokens, the one home of the concept: `<|copy_k|>` is the token with id `copy_token_start + k`; choosing it
makes v1 copy the embedding of merged patch k (row-major over the image's merged-patch grid) back into its
context.

Kept free of torch and transformers so that storage and the app can use it without loading a model.
`V1Config.copy_token_start` defaults to `COPY_TOKEN_START`; a loaded model's own value (its config, or
`V1Processor.copy_token_start`) always wins over the constant — the demo checkpoint's copy tokens start elsewhere.
"""

from __future__ import annotations

import re

COPY_TOKEN_START = 151665  # id of <|copy_0|> in the published v1-7B checkpoint (Qwen2.5-VL's <|endoftext|> + 22)
COPY_RE = re.compile(r"<\|copy_(\d+)\|>")  # a copy token in text; group 1 is the patch index


def copy_token(k: int) -> str:
    """The text of the copy token of merged patch `k`: `<|copy_k|>`."""
    return f"<|copy_{int(k)}|>"


def copy_patch(token_id: int, copy_token_start: int) -> int | None:
    """The merged patch a token id copies, or None for a text token."""
    return int(token_id) - copy_token_start if token_id >= copy_token_start else None


__all__ = ["COPY_RE", "COPY_TOKEN_START", "copy_patch", "copy_token"]
