"""Intervening on a revisit: re-decoding from it with the prompt's KV cache reused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers import fixture_model, fixture_processor
from v1core.generation import TraceRun
from v1core.intervene import BranchEdit, BranchRun, PromptState, branch_plan
from v1core.trace import DecodingSettings


@pytest.fixture(scope="module")
def setup():
    model, proc = fixture_model(), fixture_processor()
    model.generation_config.eos_token_id = 2
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 220, 3), dtype=np.uint8))
    trace = TraceRun(model, proc, image, "w5 w6",
                     DecodingSettings(max_new_tokens=40, min_new_tokens=40, repetition_penalty=1.05)).run()
    assert trace.revisits, "fixture should copy"
    return model, proc, image, trace


def test_replacing_a_revisit_by_its_own_patches_reproduces_the_parent(setup):
    model, proc, image, trace = setup
    rv = trace.revisits[1]
    child = BranchRun(model, proc, image, trace, BranchEdit("replace", revisit=1, patches=rv.patches)).run()
    assert [s.token_id for s in child.steps] == [s.token_id for s in trace.steps]
    for a, b in zip(trace.steps, child.steps):  # forced steps get the model's own distributions back
        assert abs(a.p_copy - b.p_copy) < 1e-4 and np.abs(a.pointer - b.pointer).max() < 1e-4
    assert child.parent_id == trace.trace_id and child.branch_step == rv.start_step
    assert child.branch_edit["kind"] == "replace" and child.status == "complete"


def test_replace_remove_insert_change_the_context(setup):
    model, proc, image, trace = setup
    state = PromptState(model, proc, image, trace)  # one prefill for all three branches
    rv = trace.revisits[0]
    other = [p for p in range(trace.n_patches) if p not in rv.patches][:2]
    replaced = BranchRun(model, proc, image, trace, BranchEdit("replace", revisit=0, patches=other), state=state).run()
    ids = [s.token_id for s in replaced.steps]
    assert ids[rv.start_step : rv.start_step + 2] == [proc.copy_token_start + p for p in other]
    removed = BranchRun(model, proc, image, trace, BranchEdit("remove", revisit=0), state=state).run()
    assert [s.token_id for s in removed.steps][: rv.start_step] == [s.token_id for s in trace.steps][: rv.start_step]
    assert removed.steps[rv.start_step].token_id == trace.steps[rv.end_step].token_id  # the run is skipped
    inserted = BranchRun(model, proc, image, trace, BranchEdit("insert", step=2, patches=[5]), state=state).run()
    assert inserted.steps[2].token_id == proc.copy_token_start + 5 and inserted.steps[2].is_copy
    assert len(inserted.steps) == 40  # the trace's max_new_tokens still bounds the branch


def test_bad_edits_are_clear_errors(setup):
    _, proc, _, trace = setup
    with pytest.raises(ValueError, match="revisit 99"):
        branch_plan(trace, BranchEdit("remove", revisit=99), proc.copy_token_start)
    with pytest.raises(ValueError, match="outside"):
        branch_plan(trace, BranchEdit("insert", step=1, patches=[10_000]), proc.copy_token_start)
    with pytest.raises(ValueError, match="at least one patch"):
        branch_plan(trace, BranchEdit("replace", revisit=0), proc.copy_token_start)
