"""The embedded demo model: it trains, it loads like v1-7B, and it really points at what it talks about."""

from __future__ import annotations

import pytest
import torch

from v1core.loading import DEMO_CHECKPOINT, load_model

needs_ckpt = pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").exists(), reason="demo checkpoint not built")


def test_training_loop_learns_on_a_small_config():
    from v1core.demo.scenes import make_scene
    from v1core.demo.train_demo import new_demo_model, scene_example
    from v1core.training import TrainConfig, cycle, train

    model, proc = new_demo_model(seed=0)
    examples = cycle(lambda s: scene_example(proc, make_scene(s)), range(64))
    losses = train(model, proc, examples, TrainConfig(steps=30, batch_size=4, lr=3e-3, warmup=5), progress=False)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)


@needs_ckpt
def test_demo_checkpoint_loads_through_the_7b_path_with_no_missing_keys():
    from v1core.modeling_v1 import V1ForConditionalGeneration

    model, processor = load_model()  # no argument: the embedded demo model
    assert isinstance(model, V1ForConditionalGeneration) and model.v1_model_id == "v1studio/demo-tiny"
    _, info = V1ForConditionalGeneration.from_pretrained(DEMO_CHECKPOINT, output_loading_info=True)
    assert not any(info.values()), info
    size = sum(f.stat().st_size for f in DEMO_CHECKPOINT.glob("*.safetensors"))
    assert size <= 10 * 1024 * 1024
    assert (DEMO_CHECKPOINT / "README.md").read_text().count("pointer_precision") >= 1


@needs_ckpt
def test_demo_model_meets_the_bar_on_fresh_scenes():
    from v1core.demo.train_demo import evaluate

    model, processor = load_model()
    res = evaluate(model, processor, n=50, seed=50_000, progress=False)  # seeds never used in training
    # The targets (precision/accuracy >= 0.9) are NOT met by the committed model (see its card);
    # this guards what it does achieve: pointing far above chance (~0.1 of the grid is the target object).
    assert res["pointer_precision"] >= 0.3, res
    assert res["revisit_rate"] >= 0.9, res
    assert res["answer_accuracy"] >= 0.2, res


@needs_ckpt
def test_traces_revisit_the_asked_about_object():
    from v1core.demo.scenes import make_scene
    from v1core.generation import TraceRun
    from v1core.trace import DecodingSettings

    model, processor = load_model()
    overlaps = 0
    for seed in range(10_000_100, 10_000_106):
        scene = make_scene(seed)
        trace = TraceRun(model, processor, scene.image, scene.question, DecodingSettings(max_new_tokens=160)).run()
        assert trace.status == "complete" and trace.revisits
        target = scene.target_objects[0].box
        rv = trace.revisits[0]
        assert rv.query  # the detect(query=…) text was parsed
        x0, y0, x1, y1 = target
        overlaps += any(bx0 < x1 and x0 < bx1 and by0 < y1 and y0 < by1 for bx0, by0, bx1, by1 in rv.boxes)
    assert overlaps >= 3


@needs_ckpt
@pytest.mark.slow
def test_forcing_the_right_region_fixes_answers_on_the_demo_model():
    """Issue 8 evidence: where the demo model's first revisit missed, forcing the asked-about object's patches
    gives the right answer far more often than the model's overall accuracy (numbers in the model card)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from intervention_evidence import measure

    res = measure(20, start=200_000)
    assert res["scenes_with_wrong_first_pointer"] >= 5, res
    assert res["right_answer_after_forcing_right_patches"] >= 0.4, res
    assert res["right_answer_after_forcing_right_patches"] > res["answer_accuracy"], res
