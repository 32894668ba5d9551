"""A Qwen2-style byte-level BPE tokenizer for the embedded demo model, built locally (no download).

Id layout (what `build_demo_tokenizer` produces; `DemoTokenIds` carries the numbers)::

    [0, B)            byte-level BPE: the 256 byte symbols, then learned merges (B <= vocab_size)
    [B, B+14)         v1 text markers as plain (non-special) added tokens, in this order:
                      <think> </think> <region> </region> <obj0> … <obj9>
    [E, E+22)         Qwen2.5-VL's added tokens, in Qwen's order and with Qwen's `special` flags, E = B+14:
                      <|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|>
                      <|box_start|> <|box_end|> <|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|>
                      <|vision_pad|> <|image_pad|> <|video_pad|> <tool_call> </tool_call> <|fim_prefix|>
                      <|fim_middle|> <|fim_suffix|> <|fim_pad|> <|repo_name|> <|file_sep|>
    [E+22, E+22+n)    <|copy_0|> … <|copy_{n-1}|> (special), contiguous: copy_token_start = E + 22

The offsets from `<|endoftext|>` are exactly Qwen2.5-VL's (151643 → region 151662 = +19, copy start
151665 = +22), so the demo and the 7B differ only by the constant E. `<tool_call>` / `</tool_call>` are
in Qwen's vocabulary between `<|video_pad|>` and `<|fim_prefix|>`; they are kept for that reason.

The v1 markers are plain BPE text in the real Qwen tokenizer; here they are single tokens so the tiny model
learns the output format quickly. They sit *below* `<|endoftext|>` so the Qwen block keeps its shape.
No Unicode normaliser (Qwen2 applies NFC): every string round-trips byte-exactly through encode → decode.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ..copy_tokens import copy_token

# Qwen2's pre-tokenisation pattern (single digits, letters with an optional leading non-letter, …).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

N_OBJ_MARKERS = 10
V1_MARKERS: tuple[str, ...] = ("<think>", "</think>", "<region>", "</region>") + tuple(
    f"<obj{i}>" for i in range(N_OBJ_MARKERS)
)

# (content, special) exactly as in Qwen2.5-VL's tokenizer_config.json, ids 151643…151664.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),  # v1's region token
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
QWEN_ADDITIONAL_SPECIAL = [t for t, special in QWEN_ADDED_TOKENS if special and t != "<|endoftext|>"]

DEMO_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2.5-VL's chat template, trimmed to what the demo needs (images, videos, text; string or list content).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# Everything that becomes an added token is cut out of the BPE training text.
_ADDED_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>|</?think>|</?region>|<obj\d+>|</?tool_call>")


@dataclass(frozen=True)
class DemoTokenIds:
    """The ids the model config and the processor need."""

    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    region_token_id: int
    copy_token_start: int
    copy_token_num: int
    eos_token_id: int  # <|im_end|>
    pad_token_id: int  # <|endoftext|>
    bos_token_id: int  # <|endoftext|>, as in Qwen2.5-VL's config
    im_start_id: int
    think_id: int
    think_end_id: int
    region_start_id: int
    region_end_id: int
    obj_ids: tuple[int, ...]

    @property
    def text_vocab_size(self) -> int:
        """Ids below the copy tokens (the generation head's size)."""
        return self.copy_token_start

    def config_kwargs(self) -> dict[str, int]:
        """Keyword arguments for `V1Config` (top level)."""
        return dict(
            image_token_id=self.image_token_id,
            video_token_id=self.video_token_id,
            vision_start_token_id=self.vision_start_token_id,
            vision_end_token_id=self.vision_end_token_id,
            region_token_id=self.region_token_id,
            copy_token_start=self.copy_token_start,
            copy_token_num=self.copy_token_num,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["obj_ids"] = list(self.obj_ids)
        return d

    @classmethod
    def from_tokenizer(cls, tokenizer, copy_token_num: int | None = None) -> "DemoTokenIds":
        """Read the ids back from a (reloaded) demo tokenizer."""
        tid = tokenizer.convert_tokens_to_ids
        start = tid(copy_token(0))
        if copy_token_num is None:
            copy_token_num = len(tokenizer) - start
        endoftext = tid("<|endoftext|>")
        return cls(
            image_token_id=tid("<|image_pad|>"),
            video_token_id=tid("<|video_pad|>"),
            vision_start_token_id=tid("<|vision_start|>"),
            vision_end_token_id=tid("<|vision_end|>"),
            region_token_id=tid("<|fim_pad|>"),
            copy_token_start=start,
            copy_token_num=int(copy_token_num),
            eos_token_id=tid("<|im_end|>"),
            pad_token_id=endoftext,
            bos_token_id=endoftext,
            im_start_id=tid("<|im_start|>"),
            think_id=tid("<think>"),
            think_end_id=tid("</think>"),
            region_start_id=tid("<region>"),
            region_end_id=tid("</region>"),
            obj_ids=tuple(tid(f"<obj{i}>") for i in range(N_OBJ_MARKERS)),
        )


# ----------------------------------------------------------------------------- corpus
_BASE_TEXTS = (
    "0123456789 0 1 2 3 4 5 6 7 8 9 0.00 0.05 0.10 0.25 0.50 0.75 1.00 [0.12, 0.30, 0.25, 0.45]",
    "! \" # $ % & ' ( ) * + , - . / : ; < = > ? @ [ \\ ] ^ _ ` { | } ~",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "system\nuser\nassistant\n",
    DEMO_SYSTEM_PROMPT,
    "\nPlease answer the question using a long-chain reasoning style and think step by step.",
    'detect(query="object", objects=[""])',
    "What is shown in the image? Describe the picture. Which one is larger? How many are there?",
    "The answer is yes. The answer is no. left right top bottom above below next to between",
)


def corpus_for_tokenizer(n_scenes: int = 2000, seed: int = 0) -> Iterator[str]:
    """Texts the demo tokenizer's BPE is trained on: targets and questions of training scenes plus templates.

    Scene seeds are taken from the training range, starting at `seed`.
    """
    from .scenes import KIND_TEMPLATES, make_scene
    from .targets import target_text

    yield from _BASE_TEXTS
    yield from KIND_TEMPLATES.values()
    for s in range(seed, seed + n_scenes):
        scene = make_scene(s, with_image=False)
        yield scene.question
        yield target_text(scene)


# ----------------------------------------------------------------------------- building
def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _train_bpe(corpus: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list]:
    """Byte-level BPE vocab (256 byte symbols first) and merges from the corpus, added tokens cut out."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet):
        raise ValueError(f"vocab_size must be at least {len(alphabet)} (the byte alphabet), got {vocab_size}")

    def pieces() -> Iterator[str]:
        for text in corpus:
            for part in _ADDED_RE.split(text):
                if part:
                    yield part

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False, initial_alphabet=alphabet, special_tokens=[]
    )
    tok.train_from_iterator(pieces(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], model["merges"]


def build_demo_tokenizer(
    corpus: Iterable[str] | None = None,
    vocab_size: int = 1024,
    n_copy_tokens: int = 256,
    *,
    return_ids: bool = True,
):
    """Train byte-level BPE on `corpus`, add the v1 markers, Qwen2.5-VL's added tokens and the copy tokens.

    Returns `(tokenizer, DemoTokenIds)` (just the tokenizer with `return_ids=False`). `corpus=None` uses
    `corpus_for_tokenizer()`. All added tokens go in with one call on the Rust tokenizer, so 30,000 copy tokens
    take about a second (transformers' `add_tokens` loop takes minutes).
    """
    from transformers import PreTrainedTokenizerFast

    if n_copy_tokens < 1:
        raise ValueError("n_copy_tokens must be >= 1")
    if corpus is None:
        corpus = corpus_for_tokenizer()
    vocab, merges = _train_bpe(corpus, vocab_size)
    base = len(vocab)
    if sorted(vocab.values()) != list(range(base)):
        raise RuntimeError("trained BPE vocab is not contiguous")

    pairs = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)

    added = [AddedToken(t, special=False, normalized=False) for t in V1_MARKERS]
    added += [AddedToken(t, special=s, normalized=False) for t, s in QWEN_ADDED_TOKENS]
    added += [AddedToken(copy_token(k), special=True, normalized=False) for k in range(n_copy_tokens)]
    n_added = tok.add_tokens(added)
    if n_added != len(added):
        raise RuntimeError(f"only {n_added} of {len(added)} added tokens were new")

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=QWEN_ADDITIONAL_SPECIAL,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=32768,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE

    ids = DemoTokenIds.from_tokenizer(fast, n_copy_tokens)
    endoftext = base + len(V1_MARKERS)
    expected = {
        "pad": (ids.pad_token_id, endoftext),
        "region": (ids.region_token_id, endoftext + 19),
        "copy_start": (ids.copy_token_start, endoftext + 22),
        "len": (len(fast), endoftext + 22 + n_copy_tokens),
    }
    bad = {k: v for k, v in expected.items() if v[0] != v[1]}
    if bad:
        raise RuntimeError(f"unexpected id layout: {bad}")
    return (fast, ids) if return_ids else fast


__all__ = [
    "CHAT_TEMPLATE",
    "DEMO_SYSTEM_PROMPT",
    "DemoTokenIds",
    "QWEN_ADDED_TOKENS",
    "V1_MARKERS",
    "build_demo_tokenizer",
    "corpus_for_tokenizer",
]
