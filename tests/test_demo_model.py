"""The embedded demo model: it trains, it loads like v1-7B, and it really points at what it talks about."""

from __future__ import annotations

import pytest
import torch

from v1core.loading import DEMO_CHECKPOINT, load_model

needs_ckpt = pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").exists(), reason="demo checkpoint not built")


def test_training_loop_learns_on_a_small_config():
    from v1core.demo.scenes import make_scene
    from v1core.demo.data import scene_example
    from v1core.demo.model import new_demo_model
    from v1core.training import TrainConfig, cycle, train

    model, proc = new_demo_model(seed=0)
    examples = cycle(lambda s: scene_example(proc, make_scene(s)), range(64))
    losses = train(model, proc, examples, TrainConfig(steps=30, batch_size=4, lr=3e-3, warmup=5), progress=False)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)


def test_linear_patch_embedding_is_the_conv_it_replaces_and_is_undone():
    from v1core.demo.scenes import make_scene
    from v1core.demo.data import scene_example
    from v1core.demo.model import new_demo_model
    from v1core.training import collate, linear_patch_embedding

    model, proc = new_demo_model(seed=1)
    batch = collate([scene_example(proc, make_scene(3))], proc.tokenizer.pad_token_id)
    embed = model.model.visual.patch_embed
    with torch.no_grad():
        conv = model(**batch, use_cache=False).logits
        with linear_patch_embedding(model):
            assert "forward" in vars(embed)
            linear = model(**batch, use_cache=False).logits
    assert "forward" not in vars(embed)  # the module's own Conv3d forward is back
    assert torch.allclose(conv, linear, atol=1e-5), (conv - linear).abs().max()


def test_training_inputs_randomise_box_decimals_but_keep_the_labels():
    from v1core.demo.scenes import make_scene
    from v1core.demo.data import scene_example, with_input_noise
    from v1core.demo.model import new_demo_model

    _, proc = new_demo_model(seed=0)
    clean = scene_example(proc, make_scene(1))
    noisy = next(with_input_noise(iter([clean]), proc.tokenizer))
    assert clean.labels == noisy.labels and len(clean.input_ids) == len(noisy.input_ids)
    changed = [i for i, (a, b) in enumerate(zip(clean.input_ids, noisy.input_ids)) if a != b]
    assert changed, "no box decimal was randomised"
    text = proc.tokenizer.decode(noisy.input_ids[min(changed) - 4: max(changed) + 2])
    assert "<region>[" in proc.tokenizer.decode(noisy.input_ids) and text.count("0.") >= 1
    digits = {proc.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    assert all(noisy.input_ids[i] in digits for i in changed)  # only digits inside boxes change
    assert noisy.input_ids[: noisy.labels.index(next(x for x in noisy.labels if x != -100))] == \
        clean.input_ids[: clean.labels.index(next(x for x in clean.labels if x != -100))]  # prompt untouched


def test_cell_labels_name_what_covers_each_patch_and_where_it_is():
    from v1core.demo.scenes import COLOURS, SHAPES, make_scene
    from v1core.demo.data import OBJECT_COLUMN, cell_labels
    from v1core.demo.model import new_demo_model

    _, proc = new_demo_model(seed=0)
    scene = make_scene(500_000)
    grid = proc.grid_for(scene.image)
    labels = cell_labels(scene, grid)
    rows, cols = grid.shape
    assert labels.shape == (rows * cols, 8) and OBJECT_COLUMN == 7
    assert labels[:, 3].tolist() == [k // cols for k in range(rows * cols)]
    assert labels[:, 4].tolist() == [k % cols for k in range(rows * cols)]
    for obj in scene.objects:
        ids = grid.bbox_to_patches(obj.box)
        assert set(labels[ids, 0].tolist()) == {SHAPES.index(obj.shape) + 1}
        assert set(labels[ids, 1].tolist()) == {list(COLOURS).index(obj.colour) + 1}
        assert set(labels[ids, OBJECT_COLUMN].tolist()) == {scene.objects.index(obj) + 1}
        # the box's top-left patch (where a region's first copy goes) also carries the corner facts
        assert labels[ids[0], 5:7].tolist() == labels[ids[0], 0:2].tolist()
        assert set(labels[ids[1:], 5].tolist()) == {0}
    outside = set(range(rows * cols)) - {i for o in scene.objects for i in grid.bbox_to_patches(o.box)}
    assert set(labels[sorted(outside), 0].tolist()) == {0}
    assert int((labels[:, 5] > 0).sum()) == len(scene.objects)


def test_object_probes_pool_each_objects_patches_and_label_them():
    """The per-object probe sees the mean of exactly one object's patches (what copying them brings back)."""
    from v1core.demo.scenes import COLOURS, SHAPES, SIZES, make_scene
    from v1core.demo.data import scene_example
    from v1core.demo.losses import CellProbes
    from v1core.demo.model import new_demo_model
    from v1core.training import collate

    model, proc = new_demo_model(seed=0)
    scenes = [make_scene(s) for s in (11, 12, 13)]
    examples = [scene_example(proc, s) for s in scenes]
    batch = collate(examples, proc.tokenizer.pad_token_id)
    image = batch["input_ids"] == model.config.image_token_id
    states = torch.randn(int(image.sum()), 8)
    labels = torch.cat([e.cell_labels for e in examples])
    means, facts = CellProbes.object_means(states, labels, examples)

    objects = [o for s in scenes for o in s.objects]
    assert facts.tolist() == [[SHAPES.index(o.shape), list(COLOURS).index(o.colour), SIZES.index(o.size)]
                              for o in objects]
    start, k = 0, 0
    for scene, e in zip(scenes, examples):
        grid = proc.grid_for(scene.image)
        for obj in scene.objects:
            ids = torch.tensor(grid.bbox_to_patches(obj.box)) + start
            assert torch.allclose(means[k], states[ids].mean(0), atol=1e-6)
            k += 1
        start += len(e.cell_labels)

    probes = CellProbes(model.config.text_config.hidden_size, model.config.image_token_id)
    out = model(**batch, use_cache=False, output_hidden_states=True)
    loss = probes(out, batch, examples)
    loss.backward()
    assert loss.item() > 0 and all(h.weight.grad is not None for h in probes.pooled_vision)
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0  # it trains the vision tower


def test_shape_weight_also_weights_the_corner_shape_fact_that_shape_named_pointing_needs():
    from v1core.demo.data import CELL_FACTS, CORNER_FACTS
    from v1core.demo.losses import CellProbes

    probes = CellProbes(128, image_token_id=0, shape_weight=2.0, corner_weight=2.0)
    names = [name for name, _ in CELL_FACTS]
    weights = dict(zip(names, probes.fact_weights))
    assert (weights["shape"], weights["corner_shape"], weights["corner_colour"], weights["colour"]) == \
        (2.0, 4.0, 2.0, 1.0)
    assert names[CORNER_FACTS[0]] == "corner_shape"


def test_object_pointer_loss_scores_the_mass_on_the_first_copys_whole_object():
    """Mass on any patch of the right object is cheap; mass on another object is what costs."""
    from types import SimpleNamespace

    from v1core.demo.scenes import make_scene
    from v1core.demo.data import OBJECT_COLUMN, scene_example
    from v1core.demo.losses import ObjectPointerLoss
    from v1core.demo.model import new_demo_model
    from v1core.training import collate

    model, proc = new_demo_model(seed=0)
    scene = next(s for s in (make_scene(k) for k in range(50)) if s.kind == "colour" and len(s.objects) >= 2)
    example = scene_example(proc, scene)
    batch = collate([example], proc.tokenizer.pad_token_id)
    start = model.config.copy_token_start
    labels = batch["labels"][0]
    first = next(t for t in range(1, len(labels)) if labels[t] >= start and labels[t - 1] < start)
    owner = example.cell_labels[:, OBJECT_COLUMN]
    target = owner[int(labels[first]) - start]
    right = (owner == target).nonzero().flatten()
    wrong = ((owner != target) & (owner > 0)).nonzero().flatten()
    loss = ObjectPointerLoss(start)

    def with_mass_on(patches: torch.Tensor) -> float:
        logits = torch.full((1, len(labels), start + len(owner)), -20.0)
        logits[0, first - 1, start + patches] = 10.0  # the logits that predict the first copy
        return loss(SimpleNamespace(logits=logits), batch, [example]).item()

    assert with_mass_on(right[-1:]) < 1e-3  # not the exact patch v1's cross-entropy wants, but the right object
    assert with_mass_on(wrong) > 25
    log2 = torch.log(torch.tensor(2.0)).item()
    assert with_mass_on(torch.cat([right[-1:], wrong[:1]])) == pytest.approx(log2, abs=1e-3)


def test_first_copy_loss_scores_only_each_regions_first_copy_against_its_exact_patch():
    from types import SimpleNamespace

    from v1core.demo.scenes import make_scene
    from v1core.demo.data import scene_example
    from v1core.demo.losses import first_copies, FirstCopyLoss
    from v1core.demo.model import new_demo_model
    from v1core.training import collate

    model, proc = new_demo_model(seed=0)
    scenes = [make_scene(k) for k in range(8)]
    examples = [scene_example(proc, s) for s in scenes]
    batch = collate(examples, proc.tokenizer.pad_token_id)
    start = model.config.copy_token_start
    rows, cols = first_copies(batch["labels"], start)
    assert sorted(rows.tolist()) == sorted(i for i, s in enumerate(scenes) for _ in s.target_objects)  # one per region
    targets = batch["labels"][rows, cols + 1]
    for _row, target, scene in zip(rows.tolist(), targets.tolist(), [scenes[r] for r in rows.tolist()]):
        corners = {proc.grid_for(scene.image).bbox_to_patches(o.box)[0] for o in scene.target_objects}
        assert target - start in corners  # the box's top-left patch

    width = start + max(len(e.cell_labels) for e in examples)
    logits = torch.full((*batch["labels"].shape, width), -20.0)
    logits[rows, cols, targets] = 10.0
    loss = FirstCopyLoss(start, weight=0.5)
    assert loss(SimpleNamespace(logits=logits), batch, examples).item() < 1e-3
    logits[rows, cols, targets] = -20.0
    logits[rows, cols, targets + 1] = 10.0  # the next patch of the row instead: the whole first-copy loss
    assert loss(SimpleNamespace(logits=logits), batch, examples).item() == pytest.approx(0.5 * 30, abs=1e-2)
    logits = torch.full((*batch["labels"].shape, width), -20.0)
    logits[rows, cols, targets] = 10.0
    logits[0, 0, 0] = 50.0  # any other position does not count
    assert loss(SimpleNamespace(logits=logits), batch, examples).item() < 1e-3


def test_fact_word_loss_scores_the_words_read_from_the_copies_and_the_answer():
    from types import SimpleNamespace

    from v1core.demo.scenes import make_scene
    from v1core.demo.data import scene_example
    from v1core.demo.losses import fact_trigger_ids, FactWordLoss
    from v1core.demo.model import new_demo_model
    from v1core.training import collate

    model, proc = new_demo_model(seed=0)
    tok = proc.tokenizer
    scenes = [make_scene(k) for k in range(3, 9)]
    examples = [scene_example(proc, s) for s in scenes]
    batch = collate(examples, tok.pad_token_id)
    labels = batch["labels"]
    loss = FactWordLoss(fact_trigger_ids(tok), weight=0.5)
    rows, cols = (torch.isin(labels[:, :-1], loss.trigger_ids) & (labels[:, 1:] != -100)).nonzero(as_tuple=True)
    for i, scene in enumerate(scenes):
        words = [tok.convert_ids_to_tokens(int(labels[i, c + 1])).lstrip("Ġ") for c in cols[rows == i].tolist()]
        facts = [getattr(o, "size" if scene.kind in ("size", "compare") else scene.kind) for o in scene.target_objects]
        if scene.kind == "shape":
            facts = ["an" if facts[0][0] in "aeiou" else "a", facts[0]]  # "The green object is a star."
        assert words[: len(facts)] == facts and words[-1] == scene.answer, (scene.question, words)

    width = model.config.copy_token_start + 144
    logits = torch.full((*labels.shape, width), -20.0)
    logits[rows, cols, labels[rows, cols + 1]] = 10.0
    assert loss(SimpleNamespace(logits=logits), batch, examples).item() < 1e-3
    logits[0, 0, 0] = 50.0  # a position that states no fact does not count
    assert loss(SimpleNamespace(logits=logits), batch, examples).item() < 1e-3
    logits[rows, cols, labels[rows, cols + 1]] = -20.0
    logits[rows, cols, 0] = 10.0  # every fact word wrong, confidently: the whole loss
    assert loss(SimpleNamespace(logits=logits), batch, examples).item() == pytest.approx(0.5 * 30, abs=1e-2)


def test_first_copies_are_scored_per_named_object_by_how_the_question_names_it():
    from v1core.demo.scenes import make_scene
    from v1core.demo.evaluation import first_copies_on_objects

    scene = next(make_scene(s) for s in range(100) if make_scene(s).kind == "compare")  # two colour-named objects
    grid = scene.grid()
    a, b = (grid.bbox_to_patches(o.box) for o in scene.target_objects)
    start, text = 1000, 7
    right = [text, start + a[0], start + a[1], text, text, start + b[0], text]
    assert first_copies_on_objects(scene, grid, right, start) == [("colour", True), ("colour", True)]
    swapped = [text, start + b[0], text, start + b[0], start + a[0]]  # region 1 starts on the other object
    assert first_copies_on_objects(scene, grid, swapped, start) == [("colour", False), ("colour", True)]
    assert first_copies_on_objects(scene, grid, [text, start + a[0]], start) == [("colour", True), ("colour", False)]
    size_q = next(make_scene(s) for s in range(100) if make_scene(s).kind == "size")  # "Is the cross small or large?"
    corner = size_q.grid().bbox_to_patches(size_q.target_objects[0].box)[0]
    assert first_copies_on_objects(size_q, size_q.grid(), [start + corner], start) == [("shape", True)]


def test_replayed_yields_every_example_the_asked_number_of_times_spread_out():
    from v1core.training import replayed

    stream = replayed(iter(range(10_000)), times=2, pool=64, seed=0)
    got = [next(stream) for _ in range(256)]
    assert sorted(got) == sorted(list(range(128)) * 2)  # two windows of 64 fresh examples, each seen twice
    first, second = got[:128], got[128:]
    assert set(first) == set(range(64)) and set(second) == set(range(64, 128))
    assert first != sorted(first), "repeats should be shuffled, not back to back"


def test_asked_examples_share_one_image_and_match_building_each_question_from_scratch():
    import numpy as np

    from v1core.demo.scenes import ask_again, make_scene
    from v1core.demo.targets import target_text
    from v1core.demo.data import asked_examples
    from v1core.demo.model import new_demo_model
    from v1core.training import build_example

    _, proc = new_demo_model(seed=0)
    scene = make_scene(3)
    first, second = asked_examples(proc, scene, asks=2, seed=7)
    other = ask_again(scene, np.random.default_rng([7, scene.seed]))
    ref = build_example(proc, scene.image, other.question, target_text(other, proc.grid_for(scene.image)))
    assert (second.input_ids, second.labels) == (ref.input_ids, ref.labels) and second.input_ids != first.input_ids
    assert second.pixel_values is first.pixel_values and torch.equal(second.pixel_values, ref.pixel_values)
    assert second.cell_labels is first.cell_labels
    assert len(asked_examples(proc, scene, asks=1)) == 1


def test_noisy_boxes_draw_fresh_digits_for_a_replayed_example_and_leave_it_untouched():
    from v1core.demo.scenes import make_scene
    from v1core.demo.data import scene_example, with_input_noise
    from v1core.demo.model import new_demo_model

    _, proc = new_demo_model(seed=0)
    clean = scene_example(proc, make_scene(1))
    original = list(clean.input_ids)
    a, b = with_input_noise(iter([clean, clean]), proc.tokenizer, seed=0)
    assert clean.input_ids == original and a.labels == b.labels == clean.labels
    assert a.input_ids != original and a.input_ids != b.input_ids


def test_jitter_copies_moves_some_input_copies_to_a_neighbour_but_never_a_regions_first_or_the_labels():
    import random
    from dataclasses import replace

    from v1core.demo.scenes import make_scene
    from v1core.demo.data import jitter_copies, scene_example
    from v1core.demo.model import new_demo_model

    _, proc = new_demo_model(seed=0)
    clean = scene_example(proc, make_scene(1))
    start, cols = proc.copy_token_start, int(clean.image_grid_thw[0][2]) // 2
    noisy = replace(clean, input_ids=list(clean.input_ids))
    jitter_copies(noisy, start, random.Random(0), p=0.5)
    assert noisy.labels == clean.labels
    moved = [(i, a - start, b - start) for i, (a, b) in enumerate(zip(clean.input_ids, noisy.input_ids)) if a != b]
    n_copies = sum(t >= start for t in clean.labels)
    assert 0.2 * n_copies < len(moved) < 0.8 * n_copies
    for i, a, b in moved:
        assert clean.input_ids[i - 1] >= start, "a region's first copy is never moved"
        assert abs(a // cols - b // cols) + abs(a % cols - b % cols) == 1, "moved to a 4-neighbour"


def test_train_demo_writes_a_loadable_checkpoint_whose_card_states_the_recipe(tmp_path):
    import json

    from v1core.demo.recipe import DemoRecipe
    from v1core.demo.train_demo import train_demo

    recipe = DemoRecipe(steps=3, batch_size=2, time_budget_s=None, eval_n=2, fact_weight=0.3, replay=2, asks=2,
                        copy_noise=0.2)
    res = train_demo(tmp_path, recipe, progress=False)
    assert res["steps"] == 3 and res["eval"]["n"] == 2
    model, proc = load_model(tmp_path, device="cpu")
    assert model.config.model_type == "v1" and proc.copy_token_num == model.config.copy_token_num
    info = json.loads((tmp_path / "training_info.json").read_text())
    assert info["fact_weight"] == 0.3 and info["replay"] == 2 and info["asks"] == 2 and info["first_copy_weight"] == 0.3
    assert info["copy_noise"] == 0.2 and info["shape_weight"] == 2.0
    card = (tmp_path / "README.md").read_text()
    assert "Fact-word loss (×0.3)" in card and "trained on 2 times" in card and "First-copy loss (×0.3)" in card
    assert "asked 2 questions" in card and "Copy noise (0.2)" in card and "first_copy_on_object" in card


def test_length_bucketed_batches_similar_lengths_and_keeps_every_example():
    from v1core.training import length_bucketed

    class E:
        def __init__(self, n):
            self.input_ids = [0] * n

    lengths = [(7 * i) % 50 + 1 for i in range(64)]
    stream = length_bucketed(iter([E(n) for n in lengths]), batch_size=4, pool_batches=8)
    got = [len(next(stream).input_ids) for _ in range(64)]
    assert sorted(got) == sorted(lengths)
    batches = [got[i : i + 4] for i in range(0, 64, 4)]
    spread = sum(max(b) - min(b) for b in batches) / len(batches)
    assert spread < 10, batches  # random batches of these lengths spread ~30
    assert batches != sorted(batches), "batches should come in shuffled order, not by length"


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
    from v1core.demo.evaluation import evaluate

    model, processor = load_model()
    res = evaluate(model, processor, n=50, seed=50_000, progress=False)  # seeds never used in training
    # The demo's targets are precision and accuracy >= 0.9 on unseen seeds; the committed model measures 0.939 / 0.92
    # on seeds 0–199, 0.938 / 0.93 on 5,000+, 0.909 / 0.93 on 20,000+ and 0.969 / 0.96 on these 50 (its card). The
    # bar sits a little lower, on purpose, for robustness: a retrained model (another seed) lands within
    # ~0.05. Answers must come from the copies (with copies banned, accuracy falls to 0.06 on these 50), and
    # objects named by their shape must be found (the previous checkpoint's first copy found them 0.69 of the time).
    assert res["pointer_precision"] >= 0.88, res  # measured 0.969
    assert res["revisit_rate"] >= 0.9, res
    assert res["answer_accuracy"] >= 0.88, res  # measured 0.96
    assert res["answer_accuracy"] >= res["answer_accuracy_no_copy"] + 0.6, res  # measured 0.96 vs 0.06
    assert res["first_copy_on_object_by_name"]["shape"] >= 0.85, res  # measured 0.9375


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
    """Evidence that the answers depend on the revisits (numbers in the model card): removing the first
    one costs most of the accuracy, a revisit redirected to another object carries the answer with it, and where
    the first revisit missed, forcing the asked-about object's patches gives the right answer."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from intervention_evidence import measure

    res = measure(40, start=200_000)  # 40 scenes: the model's first pointer misses in only 2 of them
    assert res["scenes_with_wrong_first_pointer"] >= 1, res
    assert res["right_answer_after_forcing_right_patches"] >= 0.8, res  # measured 1.0 (2/2)
    assert res["answer_accuracy_first_revisit_removed"] < res["answer_accuracy"] - 0.5, res  # 0.175 vs 0.95
    assert res["answer_followed_the_redirected_revisit"] >= 0.8, res  # measured 21/21
    assert res["right_answer_after_forcing_right_patches"] > res["answer_accuracy"], res
