"""How well a model answers the README configs' questions on drawn objects.

Each score runs the real pipeline (prompt, generate, parse, scores) on
held-out scenes of ``worker.training.readme_tasks`` and compares with what
was drawn. A prediction *hits* an object when their boxes overlap by
``HIT_IOU`` or more.
"""

from __future__ import annotations

import random

from converters.tasks import Task
from worker.training.objects import OBJECT_WORDS
from worker.training.readme_tasks import (
    HELD_OUT_SEED_OFFSET,
    KEYPOINT_HEIGHTS,
    KEYPOINT_TYPE,
    ask_words,
    best_match,
    fitting_scene,
    look_alike_scene,
    render_scene,
)

HIT_IOU = 0.5
"""A prediction finds an object at this box IoU (COCO's AP50 threshold)."""
PCK_FRACTION = 0.1
"""A joint is right within this fraction of its person's box height."""
MAX_NEW_TOKENS = {Task.DETECTION: 96, Task.VISUAL_PROMPTING: 64, Task.KEYPOINT: 1024}
"""Answer budget per task: three boxes; three boxes; two people's 17 joints."""


def _run(engine, pairs):
    from worker.engines.registry import base_sampling
    from worker.pipeline import run_batch

    return run_batch(engine, pairs, sampling=base_sampling())


def _call(task: Task, **fields):
    from common.jobspec import ModelCall

    return ModelCall(
        task=task, generation={"max_new_tokens": MAX_NEW_TOKENS[task]}, **fields
    )


def phrase_binding(
    engine, *, count: int = 60, phrases: int = 3, seed: int = 0
) -> dict[str, float]:
    """Detection prompts of ``phrases`` words on images of one to three
    different objects (as many as fit) (some asked, some not, some words asked absent).

    Returns ``right_phrase`` (of the predictions that hit an object, the
    share labelled with that object's word: the binding asked for),
    ``recall`` (asked objects hit with their own word), ``stray`` (share of
    predictions hitting no object) and ``quiet_absent`` (share of asked words
    not drawn that got no box). A share with nothing to count is 0, but
    ``quiet_absent`` is 1 (no absent word asked: none was boxed).
    """
    rng = random.Random(seed + HELD_OUT_SEED_OFFSET)
    cases = []
    for _ in range(count):
        words = rng.sample(OBJECT_WORDS, rng.randint(1, 3))
        scene = fitting_scene(rng, words)
        cases.append((scene, ask_words(rng, scene, phrases)))
    results = _run(
        engine, [(s.image, _call(Task.DETECTION, categories=a)) for s, a in cases]
    )
    hits = right = stray = predictions = asked_present = found = 0
    absent_asked = absent_quiet = 0
    for (scene, asked), result in zip(cases, results, strict=True):
        boxes = [o.box for o in scene.objects]
        words = [o.word for o in scene.objects]
        for prediction in result.predictions:
            predictions += 1
            index, iou = best_match(prediction.coords, boxes)
            if index is None or iou < HIT_IOU:
                stray += 1
                continue
            hits += 1
            right += prediction.label == words[index]
        for obj in scene.objects:
            if obj.word not in asked:
                continue
            asked_present += 1
            found += any(
                p.label == obj.word and best_match(p.coords, [obj.box])[1] >= HIT_IOU
                for p in result.predictions
            )
        for word in asked:
            if word not in words:
                absent_asked += 1
                absent_quiet += not any(p.label == word for p in result.predictions)
    return {
        "prompts": float(count),
        "right_phrase": right / hits if hits else 0.0,
        "recall": found / asked_present if asked_present else 0.0,
        "stray": stray / predictions if predictions else 0.0,
        "quiet_absent": absent_quiet / absent_asked if absent_asked else 1.0,
    }


def visual_prompt_recall(engine, *, count: int = 40, seed: int = 0) -> dict[str, float]:
    """Two or three objects of one word, one of them the prompt box.

    ``recall``: of the *other* objects (the look-alikes the prompt asks
    for), the share hit; copying the prompt box back finds none of them.
    ``precision``: of the predictions, the share that hit any object (the
    prompt's own box is a right answer too; Label Studio drops it as drawn).
    """
    rng = random.Random(seed + HELD_OUT_SEED_OFFSET + 1)
    cases = []
    for _ in range(count):
        scene = look_alike_scene(rng)
        cases.append((scene, rng.choice(scene.objects).box))
    results = _run(
        engine,
        [
            (s.image, _call(Task.VISUAL_PROMPTING, visual_prompt_boxes=[list(box)]))
            for s, box in cases
        ],
    )
    others = predictions = hit_others = hit_predictions = 0
    for (scene, reference), result in zip(cases, results, strict=True):
        boxes = [o.box for o in scene.objects]
        predictions += len(result.predictions)
        hit_predictions += sum(
            best_match(p.coords, boxes)[1] >= HIT_IOU for p in result.predictions
        )
        wanted = [b for b in boxes if b != reference]
        others += len(wanted)
        hit_others += sum(
            any(best_match(p.coords, [b])[1] >= HIT_IOU for p in result.predictions)
            for b in wanted
        )
    return {
        "images": float(count),
        "recall": hit_others / others,
        "precision": hit_predictions / predictions if predictions else 0.0,
    }


def keypoint_accuracy(engine, *, count: int = 20, seed: int = 0) -> dict[str, float]:
    """One person per image: ``found`` (people whose box is hit by a keypoint
    instance), ``pck`` (of their joints, the share within PCK_FRACTION of the
    box height of the drawn joint, by name) and ``mean_error`` (joint
    distance over box height, each capped at 1; a joint not answered counts
    1). With no person found, ``pck`` is 0 and ``mean_error`` 1."""
    rng = random.Random(seed + HELD_OUT_SEED_OFFSET + 2)
    scenes = [
        render_scene(rng, ["person"], [KEYPOINT_HEIGHTS[0]]) for _ in range(count)
    ]
    call = _call(Task.KEYPOINT, categories=[KEYPOINT_TYPE], keypoint_type=KEYPOINT_TYPE)
    results = _run(engine, [(s.image, call) for s in scenes])
    found = joints = right = 0
    error = 0.0
    for scene, result in zip(scenes, results, strict=True):
        (person,) = scene.objects
        instances = [p for p in result.predictions if p.keypoints is not None]
        index, iou = best_match(person.box, [p.coords for p in instances])
        if index is None or iou < HIT_IOU:
            continue
        found += 1
        height = person.box[3] - person.box[1]
        for name, (x, y) in (person.joints or {}).items():
            joints += 1
            point = instances[index].keypoints.get(name)
            if point is None:
                error += 1.0
                continue
            distance = ((point[0] - x) ** 2 + (point[1] - y) ** 2) ** 0.5 / height
            error += min(1.0, distance)
            right += distance <= PCK_FRACTION
    return {
        "images": float(count),
        "found": found / count,
        "pck": right / joints if joints else 0.0,
        "mean_error": error / joints if joints else 1.0,
    }
