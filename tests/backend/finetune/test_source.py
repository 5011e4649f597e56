"""Tasks -> examples: what is used, and what is skipped and counted."""

from __future__ import annotations

from backend.finetune import ExampleStats, iter_examples
from backend.planner import plan_config
from tests.backend.finetune.helpers import rect
from tests.backend.planner.helpers import view

CONFIG = view(
    '<RectangleLabels name="label" toName="image"><Label value="Car"/>'
    '<Label value="Dog"/></RectangleLabels>'
)


def _task(task_id, annotations, data=None):
    return {
        "id": task_id,
        "data": {"image": f"/data/upload/1/{task_id}.jpg"} if data is None else data,
        "annotations": annotations,
    }


def _annotation(result, cancelled=False, updated="2026-01-01T00:00:00Z"):
    return {"result": result, "was_cancelled": cancelled, "updated_at": updated}


def test_tasks_without_annotations_or_images_are_skipped_and_counted():
    car = [rect("c", 10, 10, 50, 50, "Car")]
    tasks = [
        _task(1, [_annotation(car)]),
        _task(2, []),  # never annotated
        _task(3, [_annotation(car, cancelled=True)]),  # skipped by the annotator
        _task(4, [_annotation(car)], data={"text": "no image here"}),
        _task(5, [_annotation([])]),  # nothing drawn: size unknown, not readable
        "not a task",
        _task(
            6,
            [
                _annotation([rect("d", 1, 1, 9, 9, "Dog")], updated="2026-01-01"),
                _annotation(car, updated="2026-02-01"),  # the latest one is used
            ],
        ),
    ]
    stats = ExampleStats()
    examples = list(
        iter_examples(tasks, plan_config(CONFIG), stats, visual_prompts=False)
    )
    assert [(e.task_id, e.categories) for e in examples] == [
        (1, ("Car", "Dog")),
        (6, ("Car", "Dog")),
    ]
    assert all("Car" in e.answer and e.answer.count("None") == 1 for e in examples)
    assert (stats.tasks, stats.images) == (7, 2)
    assert (stats.skipped_no_annotation, stats.skipped_no_image, stats.failed) == (
        2,
        2,
        1,
    )
    assert dict(stats.examples) == {"detection": 2}
    assert [w.split(";")[0] for w in stats.warnings] == [
        "task 4: no image under data['image']",
        "task 5: the size of '/data/upload/1/5.jpg' is unknown (no region gives it "
        "and the image cannot be read)",
        "item 5: not a task object ('not a task')",
    ]


def test_a_size_read_from_the_image_lets_an_empty_annotation_teach_absence():
    stats = ExampleStats()
    tasks = [_task(5, [_annotation([])])]
    examples = list(
        iter_examples(tasks, plan_config(CONFIG), stats, size_of=lambda image: (64, 48))
    )
    assert len(examples) == 1 and examples[0].answer.count("None") == 2
    assert (examples[0].width, examples[0].height) == (64, 48)
    assert stats.skipped_no_image == 0


def test_an_unreadable_region_gives_no_example_of_its_control():
    """Its label is unknown: answering None for the other phrases could be wrong."""
    broken = {**rect("c", 1, 1, 9, 9, "Car"), "value": ["not", "an", "object"]}
    tasks = [
        _task(1, [_annotation([broken, rect("d", 10, 10, 50, 50, "Dog")])]),
        _task(2, [_annotation([rect("c", 10, 10, 50, 50, "Car")])]),
    ]
    stats = ExampleStats()
    examples = list(iter_examples(tasks, plan_config(CONFIG), stats))
    assert {e.task_id for e in examples} == {2}
    assert stats.regions_dropped == 1 and stats.failed == 0
    assert "task 1: 1 region(s) of 'label' could not be read" in stats.warnings[-1]
