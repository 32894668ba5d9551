"""The demo tokenizer: Qwen2-style byte-level BPE built locally, Qwen2.5-VL's added tokens, v1 copy tokens."""

from __future__ import annotations

import os
import time

import pytest

from v1core.copy_tokens import COPY_TOKEN_START
from v1core.demo.scenes import EVAL_SEED_START, make_scene
from v1core.demo.targets import target_text
from v1core.demo.tokenizer import (
    QWEN_ADDED_TOKENS,
    V1_MARKERS,
    DemoTokenIds,
    build_demo_tokenizer,
    corpus_for_tokenizer,
)

N_COPY = 256


@pytest.fixture(scope="module")
def built():
    return build_demo_tokenizer(list(corpus_for_tokenizer(300)), vocab_size=1024, n_copy_tokens=N_COPY)


@pytest.fixture(scope="module")
def reloaded(built, tmp_path_factory):
    from transformers import AutoTokenizer

    tok, _ = built
    path = tmp_path_factory.mktemp("demo_tok")
    tok.save_pretrained(path)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


SAMPLES = [
    "What colour is the triangle?",
    "Hello, world! 0.12 [0.30, 0.45] x=3; y = {a: 'b'}\n\ttabs  and   spaces ",
    "héllo naïve café — 中文字符 🙂👍🏽 Ω≈ç√",
    '<think>The question asks about the star. detect(query="star", objects=["<obj0><region>[0.10, 0.20, 0.30, '
    '0.40]<|copy_3|><|copy_4|></region>"]) The star is red.</think>red<|im_end|>',
]


def test_id_layout(built):
    tok, ids = built
    vocab = tok.get_vocab()
    eot = ids.pad_token_id
    # v1 markers right below <|endoftext|>, Qwen's 22 added tokens in Qwen's order, then the copy tokens
    assert [vocab[t] for t in V1_MARKERS] == list(range(eot - len(V1_MARKERS), eot))
    assert [vocab[t] for t, _ in QWEN_ADDED_TOKENS] == list(range(eot, eot + 22))
    start = ids.copy_token_start
    assert [vocab[f"<|copy_{k}|>"] for k in range(N_COPY)] == list(range(start, start + N_COPY))
    assert len(tok) == ids.copy_token_start + N_COPY
    # the same offsets from <|endoftext|> as Qwen2.5-VL (151643): region 151662, copy 151665, image 151655 …
    assert ids.region_token_id - eot == 151662 - 151643
    assert ids.copy_token_start - eot == COPY_TOKEN_START - 151643
    assert ids.eos_token_id - eot == 151645 - 151643
    assert ids.vision_start_token_id - eot == 151652 - 151643
    assert ids.vision_end_token_id - eot == 151653 - 151643
    assert ids.image_token_id - eot == 151655 - 151643
    assert ids.video_token_id - eot == 151656 - 151643
    assert ids.bos_token_id == ids.pad_token_id == vocab["<|endoftext|>"]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    assert ids.obj_ids == tuple(vocab[f"<obj{i}>"] for i in range(10))
    assert ids.config_kwargs()["copy_token_num"] == N_COPY
    # special flags as in Qwen2.5-VL; markers are plain added tokens; copies are special
    flags = {t.content: t.special for t in tok.added_tokens_decoder.values()}
    assert all(flags[t] == special for t, special in QWEN_ADDED_TOKENS)
    assert not any(flags[t] for t in V1_MARKERS)
    assert flags["<|copy_0|>"] and flags[f"<|copy_{N_COPY - 1}|>"]
    assert tok.encode("abc") == tok.encode("abc", add_special_tokens=False)  # no bos/eos added


def test_copy_tokens(built):
    tok, ids = built
    assert tok.encode("<|copy_17|>", add_special_tokens=False) == [ids.copy_token_start + 17]
    copies = [ids.copy_token_start + k for k in (0, 5, 255)]
    assert tok.decode(copies, skip_special_tokens=False) == "<|copy_0|><|copy_5|><|copy_255|>"
    assert tok.convert_ids_to_tokens(ids.copy_token_start + 42) == "<|copy_42|>"
    # untrusted text: with special-token matching off, copy/vision markers stay plain text
    safe = tok("a <|copy_3|> <|image_pad|>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert all(i < ids.pad_token_id for i in safe)
    assert tok.decode(safe) == "a <|copy_3|> <|image_pad|>"


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(built, text):
    tok, _ = built
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.decode(ids) == text


def test_target_texts_round_trip_and_are_compact(built):
    tok, ids = built
    for seed in range(EVAL_SEED_START, EVAL_SEED_START + 30):
        sc = make_scene(seed, with_image=False)
        text = target_text(sc)
        enc = tok.encode(text, add_special_tokens=False)
        assert tok.decode(enc, skip_special_tokens=False) == text
        assert enc[0] == ids.think_id and ids.think_end_id in enc and ids.obj_ids[0] in enc
        n_copies = text.count("<|copy_")
        assert sum(1 for i in enc if i >= ids.copy_token_start) == n_copies
        assert len(enc) - n_copies < 120  # the reasoning itself stays short


def test_chat_template(built, reloaded):
    tok, _ = built
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the star?"}]}]
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What colour is the star?<|im_end|>\n<|im_start|>assistant\n"
    )
    for t in (tok, reloaded):
        assert t.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    with_answer = messages + [{"role": "assistant", "content": "red"}]
    assert tok.apply_chat_template(with_answer, tokenize=False).endswith("<|im_start|>assistant\nred<|im_end|>\n")


def test_save_and_reload_offline(built, reloaded):
    tok, ids = built
    assert len(reloaded) == len(tok)
    assert DemoTokenIds.from_tokenizer(reloaded) == ids
    texts = SAMPLES + [target_text(make_scene(s, with_image=False)) for s in range(5)]
    for text in texts:
        assert reloaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
        enc = reloaded.encode(text, add_special_tokens=False)
        assert reloaded.decode(enc, skip_special_tokens=False) == text
    assert reloaded.eos_token_id == ids.eos_token_id and reloaded.pad_token_id == ids.pad_token_id


def test_deterministic_build(built):
    tok, _ = built
    again, _ = build_demo_tokenizer(list(corpus_for_tokenizer(300)), vocab_size=1024, n_copy_tokens=N_COPY)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_30000_copy_tokens_build_fast():
    t0 = time.perf_counter()
    tok, ids = build_demo_tokenizer(["a small corpus of text, 0.12 [0.3]"] * 20, vocab_size=300, n_copy_tokens=30000)
    elapsed = time.perf_counter() - t0
    print(f"built a tokenizer with 30,000 copy tokens in {elapsed:.2f} s")
    assert len(tok) == ids.copy_token_start + 30000
    assert tok.encode("<|copy_29999|><|copy_0|>", add_special_tokens=False) == [
        ids.copy_token_start + 29999,
        ids.copy_token_start,
    ]
    assert elapsed < 15  # ~0.5 s when the machine is idle; generous for 2 shared cores


def test_vocab_size_validation():
    with pytest.raises(ValueError):
        build_demo_tokenizer(["x"], vocab_size=100, n_copy_tokens=4)
    with pytest.raises(ValueError):
        build_demo_tokenizer(["x"], vocab_size=300, n_copy_tokens=0)
