"""Shared test helpers: the reference fixture model and a word-level tokenizer that fits its ids, and a free TCP
port. torch is imported only by the model helpers, so the storage tests can use `free_port` without it."""

from __future__ import annotations

import json
import socket
from functools import lru_cache
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "v1-reference" / "small"


def fixture_tokenizer(vocab_size: int = 912):
    """A WordLevel tokenizer whose ids line up with the fixture checkpoint (copy tokens start at 912)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = {900: "<|vision_start|>", 901: "<|vision_end|>", 902: "<|image_pad|>", 903: "<|video_pad|>",
                904: "<|im_start|>", 905: "<|im_end|>", 906: "<|endoftext|>", 910: "<|fim_pad|>"}
    vocab = {specials.get(i, f"w{i}"): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": list(specials.values())})
    return fast


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@lru_cache(maxsize=1)
def fixture_model():
    import torch

    from v1core.modeling_v1 import V1ForConditionalGeneration

    model = V1ForConditionalGeneration.from_pretrained(SMALL / "checkpoint", dtype=torch.float32,
                                                       attn_implementation="sdpa")
    return model.eval()


def fixture_processor():
    from v1core.processing_v1 import V1Processor

    cfg = fixture_model().config
    return V1Processor(fixture_tokenizer(), copy_token_start=cfg.copy_token_start, copy_token_num=64,
                       image_token_id=cfg.image_token_id, vision_start_token_id=cfg.vision_start_token_id,
                       vision_end_token_id=cfg.vision_end_token_id)


def fixture_inputs() -> dict:
    from safetensors.torch import load_file

    return load_file(SMALL / "inputs.safetensors")


def fixture_expected() -> dict:
    from safetensors.torch import load_file

    return load_file(SMALL / "expected.safetensors")


def fixture_meta() -> dict:
    return json.loads((SMALL / "meta.json").read_text())


def make_fixture_checkpoint(path) -> Path:
    """A loadable checkpoint dir (model + tokenizer + processor config) from the reference fixture.

    The weights are random, so its text is gibberish, but it exercises every layer end to end.
    """
    path = Path(path)
    fixture_model().save_pretrained(path)
    fixture_processor().save_pretrained(path)
    return path
