"""Evidence for "had the model looked at the right place, would it have got it right?" on the demo model.

On held-out scenes (greedy): where the first revisit mostly missed the asked-about object, force the object's
patches (replace) and count how often the answer becomes right; on all scenes, remove the first revisit and
measure the change in answer accuracy; on colour / shape questions, redirect the first revisit to another object
(whose colour / shape differs) and count how often the answer becomes *that* object's colour / shape.
Prints one JSON object; numbers go to the demo model card.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from v1core.demo.scenes import eval_seeds, make_scene
from v1core.demo.evaluation import answer_of
from v1core.generation import TraceRun
from v1core.intervene import BranchEdit, BranchRun, PromptState
from v1core.loading import load_model
from v1core.trace import DecodingSettings


def measure(n: int = 60, start: int = 200_000) -> dict:
    model, proc = load_model()
    settings = DecodingSettings(max_new_tokens=160)
    res = dict(n=n, wrong_pointer=0, fixed_by_replace=0, wrong_pointer_and_wrong_answer=0,
               fixed_answer_when_wrong=0, acc=0, acc_removed=0, redirected=0, answer_followed=0)
    for seed in eval_seeds(n, start=start):
        scene = make_scene(seed)
        trace = TraceRun(model, proc, scene.image, scene.question, settings).run()
        ok = answer_of(trace.output_text) == scene.answer.lower()
        res["acc"] += ok
        if not trace.revisits:
            res["acc_removed"] += ok
            continue
        grid = proc.grid_for(scene.image)
        target = grid.bbox_to_patches(scene.target_objects[0].box)
        state = PromptState(model, proc, scene.image, trace)
        removed = BranchRun(model, proc, scene.image, trace, BranchEdit("remove", revisit=0), state=state).run()
        res["acc_removed"] += answer_of(removed.output_text) == scene.answer.lower()
        attribute = scene.kind if scene.kind in ("colour", "shape") else None
        others = [o for i, o in enumerate(scene.objects)
                  if attribute and i not in scene.targets and getattr(o, attribute) != scene.answer]
        if others:
            other = others[0]
            edit = BranchEdit("replace", revisit=0, patches=grid.bbox_to_patches(other.box))
            moved = BranchRun(model, proc, scene.image, trace, edit, state=state).run()
            res["redirected"] += 1
            res["answer_followed"] += answer_of(moved.output_text) == getattr(other, attribute)
        rv = trace.revisits[0]
        inside = sum(p in target for p in rv.patches) / max(1, len(rv.patches))
        if inside < 0.5:
            res["wrong_pointer"] += 1
            fixed = BranchRun(model, proc, scene.image, trace, BranchEdit("replace", revisit=0, patches=target),
                              state=state).run()
            right = answer_of(fixed.output_text) == scene.answer.lower()
            res["fixed_by_replace"] += right
            if not ok:
                res["wrong_pointer_and_wrong_answer"] += 1
                res["fixed_answer_when_wrong"] += right
    out = {
        "scenes": n,
        "answer_accuracy": round(res["acc"] / n, 3),
        "answer_accuracy_first_revisit_removed": round(res["acc_removed"] / n, 3),
        "scenes_with_wrong_first_pointer": res["wrong_pointer"],
        "right_answer_after_forcing_right_patches": round(res["fixed_by_replace"] / max(1, res["wrong_pointer"]), 3),
        "wrong_answers_turned_right_by_forcing":
            f"{res['fixed_answer_when_wrong']}/{res['wrong_pointer_and_wrong_answer']}",
        "redirected_revisits": res["redirected"],
        "answer_followed_the_redirected_revisit": round(res["answer_followed"] / max(1, res["redirected"]), 3),
    }
    return out


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 60)))
