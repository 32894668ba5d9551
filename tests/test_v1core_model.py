"""The model computes exactly what the paper's reference computes (golden fixtures from jun297/v1)."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch
from safetensors import safe_open

from tests.helpers import SMALL, fixture_expected, fixture_inputs, fixture_meta, fixture_model, fixture_processor
from v1core import V1Config, V1ForConditionalGeneration
from v1core.generation import generate_trace, summarise_logits
from v1core.modeling_v1 import gather_image_tokens

GEN = dict(do_sample=False, repetition_penalty=1.05, max_new_tokens=48, min_new_tokens=48)


def test_config_reads_flat_legacy_json_and_every_v1_field():
    raw = json.loads((SMALL / "checkpoint" / "config.json").read_text())
    cfg = V1Config(**raw)
    assert cfg.model_type == "v1"
    assert cfg.text_config.hidden_size == raw["hidden_size"] == 64
    assert cfg.vision_config.hidden_size == raw["vision_config"]["hidden_size"] == 32  # read, not defaulted
    for key in ("region_token_id", "copy_token_start", "copy_token_num", "copy_scaler", "use_embeddings_as_keys",
                "normalize_copy_states", "tie_copy_heads", "use_cfg", "copy_hidden_size", "z_loss_weight",
                "z_loss_top_k", "use_gate", "label_smoothing", "separate_copy_loss", "do_copy"):
        assert getattr(cfg, key) == raw[key], key
    again = V1Config.from_dict(cfg.to_dict())
    assert again.copy_token_start == 912 and again.text_config.num_hidden_layers == 2


def test_published_layout_loads_with_no_missing_or_unexpected_keys():
    with safe_open(SMALL / "checkpoint" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("visual.") for k in keys) and any(k.startswith("model.layers.") for k in keys)
    _, info = V1ForConditionalGeneration.from_pretrained(SMALL / "checkpoint", output_loading_info=True)
    assert not any(info.values()), info


def test_prefill_logits_match_reference():
    out = fixture_model()(**fixture_inputs(), use_cache=False)
    expected = fixture_expected()["prefill_logits"]
    assert out.logits.shape[-1] == 912 + 64
    assert (out.logits[0] - expected).abs().max().item() <= 1e-4


def test_without_derived_mm_token_type_ids_logits_would_drift():
    """Guards the reason we derive mm_token_type_ids: 1-D positions for image tokens change the numbers."""
    model, inputs = fixture_model(), fixture_inputs()
    ids = inputs["input_ids"]
    wrong = torch.zeros_like(ids, dtype=torch.int32)  # "everything is text"
    out = model(**inputs, mm_token_type_ids=wrong, use_cache=False)
    assert (out.logits[0] - fixture_expected()["prefill_logits"]).abs().max().item() > 1e-3


def test_generate_matches_reference_ids_and_step_logits():
    model, inputs, expected = fixture_model(), fixture_inputs(), fixture_expected()
    out = model.generate(**inputs, **GEN, use_cache=True, output_logits=True, return_dict_in_generate=True)
    ids = out.sequences[0, inputs["input_ids"].shape[1]:]
    assert ids.tolist() == expected["generated_ids"].tolist() == fixture_meta()["generated_ids"]
    assert sum(i >= 912 for i in ids.tolist()) == 14
    step_logits = torch.stack([x[0] for x in out.logits])
    assert (step_logits - expected["step_logits"]).abs().max().item() <= 1e-4


def test_save_pretrained_round_trip_sharded(tmp_path):
    model = fixture_model()
    model.save_pretrained(tmp_path, max_shard_size="300KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    again, info = V1ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values())
    out = again.eval()(**fixture_inputs(), use_cache=False)
    assert (out.logits[0] - fixture_expected()["prefill_logits"]).abs().max().item() <= 1e-4


def test_auto_classes_know_v1(tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    shutil.copytree(SMALL / "checkpoint", tmp_path / "ckpt")
    assert type(AutoConfig.from_pretrained(tmp_path / "ckpt")).__name__ == "V1Config"
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path / "ckpt"), V1ForConditionalGeneration)


def test_stable_gather_keeps_row_major_order():
    feats = torch.arange(10, dtype=torch.float32).view(1, 10, 1).repeat(2, 1, 3)
    mask = torch.tensor([[0, 1, 1, 0, 1, 1, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    packed, valid = gather_image_tokens(feats, mask)
    assert packed[0, :, 0].tolist() == [1, 2, 4, 5, 6, 9]
    assert packed[1, :2, 0].tolist() == [0, 8] and valid[1].tolist() == [True, True, False, False, False, False]


def test_copy_token_beyond_image_is_a_clear_error():
    model, inputs = fixture_model(), dict(fixture_inputs())
    ids = inputs["input_ids"].clone()
    ids[0, -1] = 912 + 64  # patch 64 of a 64-patch image
    inputs["input_ids"] = ids
    with pytest.raises(ValueError, match="patch"):
        model(**inputs, use_cache=False)


def test_gate_and_tied_heads_and_cfg_padding_follow_the_config():
    raw = json.loads((SMALL / "checkpoint" / "config.json").read_text())
    raw.update(use_gate=True, tie_copy_heads=True, use_cfg=True, copy_token_num=100)
    cfg = V1Config(**raw)
    torch.manual_seed(0)
    model = V1ForConditionalGeneration(cfg).eval()
    assert hasattr(model, "_copy_head") and not hasattr(model, "_copy_q_head") and hasattr(model, "gate")
    out = model(**fixture_inputs(), use_cache=False)
    assert out.logits.shape[-1] == 1024 + 100  # vocab_size + copy_token_num
    assert out.gate is not None and ((out.gate > 0) & (out.gate < 1)).all()
    assert (out.logits[0, :, 912 + 64:] < -1e30).all()  # padding beyond the image's patches


def test_generate_trace_yields_generate_ids_and_consistent_distributions():
    model, processor, inputs, expected = fixture_model(), fixture_processor(), fixture_inputs(), fixture_expected()
    steps = list(generate_trace(model, inputs, processor, **GEN))
    assert [s.token_id for s in steps] == expected["generated_ids"].tolist()
    probs = expected["step_logits"].softmax(-1)
    for i, s in enumerate(steps):
        assert s.index == i
        assert s.is_copy == (s.token_id >= 912) and (s.patch == s.token_id - 912 if s.is_copy else s.patch is None)
        assert s.pointer.shape == (8, 8) and abs(float(s.pointer.sum()) - 1) < 1e-5
        assert abs(s.p_copy - probs[i, 912:].sum().item()) < 1e-5
        ref_pointer = expected["step_logits"][i, 912:].softmax(-1)
        assert abs(s.entropy - float(-(ref_pointer * ref_pointer.log()).sum())) < 1e-4
        assert s.topk_ids[0] == int(expected["step_logits"][i].argmax()) and len(s.topk_ids) == 5
        assert s.topk_probs == sorted(s.topk_probs, reverse=True)
        assert s.gate is None
    assert steps[0].text == "<|copy_12|>"


def test_generate_trace_streams_while_decoding_and_cancels_between_steps():
    model, processor, inputs = fixture_model(), fixture_processor(), fixture_inputs()
    cancel = threading.Event()
    got = []
    for step in generate_trace(model, inputs, processor, cancel=cancel, max_new_tokens=48, min_new_tokens=48):
        got.append(step)
        if len(got) == 3:
            cancel.set()
    assert len(got) == 3
    gen = generate_trace(model, inputs, processor, max_new_tokens=48, min_new_tokens=48)
    assert next(gen).index == 0
    gen.close()  # stopping iteration ends the worker thread too
    assert not any(t.name == "v1-generate" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("threaded", [False, True])
def test_both_drivers_stream_the_same_steps_and_clean_up(threaded):
    """The default driver decodes in the consumer's thread (a greenlet); the thread driver is kept for callers
    that want decoding to run beside them. Same steps, same cancellation, no leaked state."""
    from v1core.generation import generate_traces

    model, processor, inputs, expected = fixture_model(), fixture_processor(), fixture_inputs(), fixture_expected()
    threads_before = threading.active_count()
    modes = []
    ids = []
    for _row, step in generate_traces(model, inputs, processor, threaded=threaded, **GEN):
        modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        if not threaded:
            assert threading.active_count() == threads_before  # no second thread while decoding
        ids.append(step.token_id)
    assert ids == expected["generated_ids"].tolist()
    assert set(modes) == {(False, True)}  # the consumer never runs inside generate's inference mode
    assert (torch.is_inference_mode_enabled(), torch.is_grad_enabled()) == (False, True)
    # stopping early ends decoding; a failure inside generate reaches the consumer
    gen = generate_traces(model, inputs, processor, threaded=threaded, max_new_tokens=48, min_new_tokens=48)
    next(gen)
    gen.close()
    assert not any(t.name == "v1-generate" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError, match="temperature"):
        list(generate_traces(model, inputs, processor, threaded=threaded, do_sample=True, temperature=-1.0,
                             max_new_tokens=4))
    assert (torch.is_inference_mode_enabled(), torch.is_grad_enabled()) == (False, True)


def test_sampling_is_reproducible_by_seed():
    model, processor, inputs = fixture_model(), fixture_processor(), fixture_inputs()
    kw = dict(do_sample=True, temperature=1.3, top_p=0.9, max_new_tokens=12, min_new_tokens=12)
    a = [s.token_id for s in generate_trace(model, inputs, processor, seed=7, **kw)]
    b = [s.token_id for s in generate_trace(model, inputs, processor, seed=7, **kw)]
    torch.manual_seed(7)
    ref = model.generate(**inputs, **kw)[0, inputs["input_ids"].shape[1]:].tolist()
    assert a == b == ref


def test_summarise_logits_masks_padding_patches():
    logits = torch.tensor([[0.0, 1.0, 2.0, 2.0, torch.finfo(torch.float32).min]])
    stats = summarise_logits(logits, copy_token_start=2, n_patches=3)
    assert torch.allclose(stats.pointer[0, :2], torch.tensor([0.5, 0.5]))
    assert stats.pointer[0, 2] == 0
