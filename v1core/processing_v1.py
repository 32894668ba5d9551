"""V1Processor: Qwen2.5-VL's image processor + tokenizer, plus copy tokens, the paper's prompt and safe text.

Why not just `Qwen2_5_VLProcessor.__call__`? It tokenises the whole prompt string, so a user who types
`<|image_pad|>` or `<|copy_12|>` would inject real special tokens (the first breaks the image/feature count,
the second makes the model believe it already looked at patch 12). We assemble ids piecewise instead: the
template's special tokens are ids we place, the user's text is tokenised with special-token matching off.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .copy_tokens import copy_token
from .geometry import PatchGrid
from .v1g import PAPER_PROMPT_SUFFIX, user_text


DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
DEFAULT_MIN_PIXELS = 3136
DEFAULT_MAX_PIXELS = 12845056
V1_PROCESSOR_CONFIG = "v1_processor_config.json"


def add_copy_tokens(tokenizer: PreTrainedTokenizerBase, count: int, start_id: int) -> None:
    """Append `<|copy_0|>`…`<|copy_{count-1}|>` as special tokens so that `<|copy_0|>` gets `start_id`.

    One call on the Rust tokenizer: `add_tokens` in a Python loop takes minutes for v1's 30,000 tokens.
    """
    probe = tokenizer.convert_tokens_to_ids(copy_token(0))
    if probe is not None and probe != tokenizer.unk_token_id and probe == start_id:
        return
    if len(tokenizer) != start_id:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens; copy tokens must start at id {start_id} "
            "(copy_token_start) — is this the tokenizer of the checkpoint?"
        )
    tokenizer.add_tokens([copy_token(k) for k in range(count)], special_tokens=True)
    got = tokenizer.convert_tokens_to_ids(copy_token(0))
    if got != start_id:
        raise ValueError(f"<|copy_0|> got id {got}, expected copy_token_start {start_id}")


@dataclass
class PromptInfo:
    """What the trace needs to know about one encoded prompt."""

    grid: PatchGrid
    prompt_tokens: int
    system_prompt: str
    question: str
    prompt_suffix: str = PAPER_PROMPT_SUFFIX  # appended to the question (`v1g.user_text`); traces record it


class V1Processor:
    """Turns (image, question) into v1 model inputs, and ids back into text.

    `min_pixels` / `max_pixels` come from the checkpoint's preprocessor config (v1-7B: 3136 / 12845056).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        copy_token_start: int,
        copy_token_num: int,
        image_token_id: int,
        vision_start_token_id: int,
        vision_end_token_id: int,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        patch_size: int = 14,
        merge_size: int = 2,
        temporal_patch_size: int = 2,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        prompt_suffix: str = PAPER_PROMPT_SUFFIX,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ):
        self.tokenizer = tokenizer
        self.copy_token_start = copy_token_start
        self.copy_token_num = copy_token_num
        self.image_token_id = image_token_id
        self.vision_start_token_id = vision_start_token_id
        self.vision_end_token_id = vision_end_token_id
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        self.patch_size, self.merge_size = patch_size, merge_size
        self.system_prompt = system_prompt
        self.prompt_suffix = prompt_suffix
        ip_kwargs: dict[str, Any] = dict(
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
        )
        if image_mean is not None:
            ip_kwargs.update(image_mean=list(image_mean), image_std=list(image_std))
        self.image_processor = Qwen2VLImageProcessorPil(**ip_kwargs)
        add_copy_tokens(tokenizer, copy_token_num, copy_token_start)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = "<|endoftext|>"
        added = {t for t in tokenizer.get_added_vocab() if not t.startswith("<|copy_")}
        self._guarded_ids = {tokenizer.convert_tokens_to_ids(t) for t in added} | set(tokenizer.all_special_ids)
        self._guarded_ids.discard(tokenizer.unk_token_id)
        longest_first = sorted(added, key=len, reverse=True)
        self._added_re = re.compile("|".join(re.escape(t) for t in longest_first)) if added else None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: Any) -> "V1Processor":
        """Tokenizer and pixel limits from a checkpoint directory; ids from the model config."""
        path = Path(path)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        settings: dict[str, Any] = {}
        for name in ("preprocessor_config.json", V1_PROCESSOR_CONFIG):
            f = path / name
            if f.exists():
                settings.update(json.loads(f.read_text()))
        size = settings.get("size") or {}
        vc = config.vision_config
        return cls(
            tokenizer,
            copy_token_start=config.copy_token_start,
            copy_token_num=config.copy_token_num,
            image_token_id=config.image_token_id,
            vision_start_token_id=config.vision_start_token_id,
            vision_end_token_id=config.vision_end_token_id,
            min_pixels=settings.get("min_pixels", size.get("shortest_edge", DEFAULT_MIN_PIXELS)),
            max_pixels=settings.get("max_pixels", size.get("longest_edge", DEFAULT_MAX_PIXELS)),
            patch_size=vc.patch_size,
            merge_size=vc.spatial_merge_size,
            temporal_patch_size=vc.temporal_patch_size,
            system_prompt=settings.get("system_prompt", DEFAULT_SYSTEM_PROMPT),
            prompt_suffix=settings.get("prompt_suffix", PAPER_PROMPT_SUFFIX),
            image_mean=settings.get("image_mean"),
            image_std=settings.get("image_std"),
        )

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        (path / V1_PROCESSOR_CONFIG).write_text(
            json.dumps(
                {
                    "min_pixels": self.min_pixels,
                    "max_pixels": self.max_pixels,
                    "system_prompt": self.system_prompt,
                    "prompt_suffix": self.prompt_suffix,
                },
                indent=2,
            )
        )

    # ------------------------------------------------------------------ geometry
    def grid_for(self, image: Image.Image) -> PatchGrid:
        return PatchGrid.for_image(
            image.width, image.height, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
            patch_size=self.patch_size, merge_size=self.merge_size,
        )

    # ------------------------------------------------------------------ text
    def encode_user_text(self, text: str) -> list[int]:
        """Tokenise untrusted text so that no added, special or copy token can come out of it.

        `split_special_tokens` covers special tokens; *non-special* added tokens (Qwen's `<|fim_pad|>`, which v1
        uses as its region token, or `<think>`) would still match, so each occurrence is cut after its first
        character and the two halves are tokenised apart: the text survives, the token does not.
        """
        ids: list[int] = []
        pos = 0
        for m in self._added_re.finditer(text) if self._added_re else ():
            ids += self._encode_plain(text[pos : m.start()] + m.group(0)[0])
            pos = m.start() + 1
        ids += self._encode_plain(text[pos:])
        bad = [i for i in ids if i in self._guarded_ids or i >= self.copy_token_start]
        if bad:  # never expected: split_special_tokens failed for this tokenizer
            raise ValueError(f"user text produced special token ids {bad[:5]}; refusing to build the prompt")
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _special(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer lacks {token}")
        return tid

    def prompt_ids(self, question: str, n_image_tokens: int, system_prompt: str | None = None) -> list[int]:
        """Qwen2.5-VL chat layout with the image first and the paper's reasoning instruction after the question."""
        system = self.system_prompt if system_prompt is None else system_prompt
        im_start, im_end = self._special("<|im_start|>"), self._special("<|im_end|>")
        plain = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731 - tokenises template text
        ids: list[int] = []
        if system:
            ids += [im_start, *plain("system\n"), *self.encode_user_text(system), im_end, *plain("\n")]
        ids += [im_start, *plain("user\n"), self.vision_start_token_id]
        ids += [self.image_token_id] * n_image_tokens
        ids += [self.vision_end_token_id]
        ids += self.encode_user_text(user_text(question, self.prompt_suffix))
        ids += [im_end, *plain("\n"), im_start, *plain("assistant\n")]
        return ids

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image],
        questions: str | Sequence[str],
        system_prompt: str | None = None,
        return_info: bool = False,
    ) -> BatchFeature | tuple[BatchFeature, list[PromptInfo]]:
        """Batch of (image, question) → left-padded input_ids, attention_mask, pixel_values, image_grid_thw."""
        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(questions, str):
            questions = [questions]
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        grids = [self.grid_for(img) for img in images]  # raises a clear ImageGeometryError first
        pixels = self.image_processor(images=[img.convert("RGB") for img in images], return_tensors="pt")
        seqs, infos = [], []
        for grid, thw, question in zip(grids, pixels["image_grid_thw"], questions):
            rows, cols = grid.shape
            if int(thw[1]) != rows * self.merge_size or int(thw[2]) != cols * self.merge_size:
                raise RuntimeError(f"image processor grid {thw.tolist()} disagrees with PatchGrid {grid.shape}")
            ids = self.prompt_ids(question, rows * cols, system_prompt)
            seqs.append(ids)
            system = self.system_prompt if system_prompt is None else system_prompt
            infos.append(PromptInfo(grid, len(ids), system, question, self.prompt_suffix))
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], dtype=torch.long)
        attention_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
        batch = BatchFeature(
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "pixel_values": pixels["pixel_values"],
                "image_grid_thw": pixels["image_grid_thw"],
            }
        )
        return (batch, infos) if return_info else batch

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_text(self, token_id: int) -> str:
        """Display text of one id (copy tokens as `<|copy_k|>`)."""
        if token_id >= self.copy_token_start:
            return copy_token(token_id - self.copy_token_start)
        return self.decode([token_id])

    def incremental_decoder(self) -> "IncrementalDecoder":
        return IncrementalDecoder(self)


class IncrementalDecoder:
    """Text per new token such that the pieces concatenate to the full decode, multi-byte safe.

    A token that ends inside a UTF-8 character yields "" and the token completing it yields the character.
    """

    def __init__(self, processor: V1Processor):
        self.processor = processor
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        decode = self.processor.decode
        prefix_text = decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = decode(self.ids[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character is emitted as U+FFFD)."""
        decode = self.processor.decode
        prefix_text = decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]
