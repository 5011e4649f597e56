"""A project's tasks -> a run's data directory: splits by task, focus and
replay, the questions for the base model, images stored once at the model's
size, and the manifest."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from backend.finetune.prepare import PrepareOptions, prepare_data
from backend.finetune.replay import DEFAULT_REPLAY_PHRASES
from backend.planner import plan_config
from common.finetune_data import read_manifest, read_split
from common.images.errors import ImageLoadError
from converters.geometry import smart_resize
from converters.tasks import Task
from tests.backend.finetune.helpers import H, W, rect
from tests.backend.planner.helpers import view

CONFIG = view(
    '<RectangleLabels name="label" toName="image"><Label value="Car"/>'
    '<Label value="Dog"/></RectangleLabels>'
)
ALIASED = view(
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Vehicle" predicted_values="car,truck"/><Label value="Dog"/>'
    "</RectangleLabels>"
)
PHRASES = ("cat", "bird")
"""Replay phrases of most tests (the default is COCO's 80)."""


def _ref(task_id: int) -> str:
    return f"/data/upload/1/{task_id}.jpg"


def _picture(task_id: int) -> Image.Image:
    """A plain image whose colour tells the task (different tasks differ)."""
    return Image.new("RGB", (W, H), (task_id * 37 % 256, task_id * 11 % 256, 90))


class Images:
    """The load function: in-memory images by reference, with a log."""

    def __init__(self, pictures=None):
        self.pictures = dict(pictures or {})
        self.loaded: list[str] = []

    def add(self, task_id, picture=None):
        self.pictures[_ref(task_id)] = picture or _picture(task_id)

    def __call__(self, ref, task_id):
        self.loaded.append(ref)
        if ref not in self.pictures:
            raise ImageLoadError(f"{ref} not found")
        return self.pictures[ref]


def _task(task_id, *labels, annotation_id=None, cancelled=False):
    """A task with one box per label (none: no annotation at all)."""
    results = [
        rect(f"r{n}", 20 + 60 * n, 20, 70 + 60 * n, 90, label)
        for n, label in enumerate(labels)
    ]
    annotations = (
        [
            {
                "id": annotation_id if annotation_id is not None else 1000 + task_id,
                "result": results,
                "was_cancelled": cancelled,
            }
        ]
        if labels
        else []
    )
    return {"id": task_id, "data": {"image": _ref(task_id)}, "annotations": annotations}


def _prepare(tmp_path, tasks, images=None, config=CONFIG, **options):
    if images is None:
        images = Images()
        for task in tasks:
            images.add(task["id"])
    options.setdefault("visual_prompt_share", 0.0)
    options.setdefault("replay_phrases", PHRASES)
    prepared = prepare_data(
        tasks, plan_config(config), images, tmp_path, PrepareOptions(**options)
    )
    splits = {s: read_split(tmp_path, s) for s in ("train", "replay", "val")}
    return prepared, splits


def _task_ids(records):
    return {r.task_id for r in records}


# --- held-out split ----------------------------------------------------------


def test_a_tasks_examples_never_land_in_two_splits(tmp_path):
    tasks = [_task(t, "Car", "Dog") for t in range(1, 11)]
    prepared, splits = _prepare(tmp_path, tasks, val_split=0.3, visual_prompt_share=1.0)
    train, val = _task_ids(splits["train"]), _task_ids(splits["val"])
    assert len(val) == 3 and len(train) == 7  # ceil(0.3 * 10)
    assert not train & val
    assert set(prepared.val_tasks) == val and set(prepared.train_tasks) == train
    # each task gave a detection and two visual-prompting examples, all together
    assert len(splits["val"]) == 3 * 3 and len(splits["train"]) == 7 * 3
    assert read_manifest(tmp_path)["val_tasks"] == sorted(val)


@pytest.mark.parametrize(
    ("tasks", "share", "held"),
    [(10, 0.01, 1), (2, 0.1, 1), (2, 0.9, 1), (1, 0.5, 0), (10, 0.0, 0)],
)
def test_at_least_one_task_is_held_out_never_all(tmp_path, tasks, share, held):
    prepared, splits = _prepare(
        tmp_path, [_task(t, "Car") for t in range(1, tasks + 1)], val_split=share
    )
    assert len(prepared.val_tasks) == held
    assert len(splits["train"]) == tasks - held


def test_the_split_is_seeded(tmp_path):
    tasks = [_task(t, "Car") for t in range(1, 21)]
    picked = {
        seed: _prepare(tmp_path / str(seed), tasks, val_split=0.2, seed=seed)[
            0
        ].val_tasks
        for seed in (0, 0, 1)
    }
    again, _ = _prepare(tmp_path / "again", tasks, val_split=0.2, seed=0)
    assert again.val_tasks == picked[0]
    assert picked[1] != picked[0]


# --- focus -------------------------------------------------------------------


def test_focus_labels_keep_their_examples_and_replay_the_rest(tmp_path):
    tasks = [_task(1, "Car"), _task(2, "Dog"), _task(3, "Car", "Dog"), _task(4)]
    _, splits = _prepare(tmp_path, tasks, val_split=0.0, focus=("car",))
    assert _task_ids(splits["train"]) == {1, 3}
    assert _task_ids(splits["replay"]) == {2}
    assert all(r.source == "annotation" for r in splits["replay"])


def test_focus_names_the_label_studio_label_not_its_model_phrase(tmp_path):
    """``--focus Vehicle`` is about the label annotators see, whatever phrase
    (``predicted_values``) the model is asked; visual-prompting examples of a
    focus label's boxes are learnt too."""
    tasks = [_task(1, "Vehicle"), _task(2, "Dog"), _task(3, "Vehicle")]
    _, splits = _prepare(
        tmp_path,
        tasks,
        config=ALIASED,
        val_split=0.0,
        focus=("Vehicle",),
        visual_prompt_share=1.0,
    )
    assert _task_ids(splits["train"]) == {1, 3}
    assert {r.task for r in splits["train"]} == {"detection", "visual_prompting"}
    assert all(r.labels == ("Vehicle",) for r in splits["train"])
    assert _task_ids(splits["replay"]) == {2}
    assert all(r.labels == ("Dog",) for r in splits["replay"])


# --- replay requests ----------------------------------------------------------


def test_replay_requests_ask_unannotated_images_first_then_training_images(
    tmp_path,
):
    """Unannotated images only, while the project has any: the held-out one
    is never asked in a trained request, the others are asked again (other
    phrases) until there are enough."""
    annotated = [_task(t, "Car") for t in range(1, 9)]
    unannotated = [_task(t) for t in (101, 102, 103)]
    _prepare(
        tmp_path,
        [*annotated[:4], *unannotated, *annotated[4:]],
        val_split=0.25,
        replay_images=6,
    )
    requests = read_split(tmp_path, "replay_requests")
    held = [r for r in requests if r.held_out]
    trained = [r for r in requests if not r.held_out]
    assert len(trained) == 6 and len(held) == 1  # ceil(6 * 0.25) = 2, kept <= 3 // 2
    assert _task_ids(requests) == {101, 102, 103}
    assert not {r.image for r in held} & {r.image for r in trained}
    assert len({r.image for r in trained}) == 2  # two images, asked three times each
    for request in requests:
        assert request.answer == "" and request.source == "prediction"
        assert request.task == Task.DETECTION.value
        assert len(request.categories) == 1 and request.categories[0] in PHRASES
        assert request.categories[0] in request.prompt
        assert (request.width, request.height) == (W, H)
        assert (tmp_path / request.image).is_file()


def test_replay_requests_default_to_one_per_training_example(tmp_path):
    tasks = [_task(t, "Car") for t in range(1, 7)] + [_task(50)]
    prepared, splits = _prepare(tmp_path, tasks, val_split=0.0)
    requests = read_split(tmp_path, "replay_requests")
    assert len(requests) == len(splits["train"]) == 6  # no val split: none held
    assert not any(r.held_out for r in requests)
    assert prepared.counts["replay_requests"] == 6


def test_replay_requests_that_cannot_spare_a_held_out_one_train_them_all(tmp_path):
    tasks = [_task(1, "Car"), _task(2, "Car")]
    _prepare(tmp_path, tasks, val_split=0.5, replay_images=3)
    requests = read_split(tmp_path, "replay_requests")
    # no unannotated task: the one training image, asked three times, none
    # held out (holding it out would leave nothing to replay)
    assert len(requests) == 3 and len({r.image for r in requests}) == 1
    assert not any(r.held_out for r in requests)


def test_no_replay_phrases_no_requests(tmp_path):
    _prepare(tmp_path, [_task(1, "Car"), _task(2)], replay_phrases=())
    assert read_split(tmp_path, "replay_requests") == []


def test_default_replay_phrases_leave_out_the_projects_own(tmp_path):
    config = view(
        '<RectangleLabels name="label" toName="image"><Label value="Cat"/>'
        '<Label value="Vehicle" predicted_values="car"/></RectangleLabels>'
    )
    prepared, _ = _prepare(
        tmp_path, [_task(1, "Cat")], config=config, replay_phrases=None
    )
    assert "cat" not in prepared.replay_phrases and "car" not in prepared.replay_phrases
    assert len(prepared.replay_phrases) == len(DEFAULT_REPLAY_PHRASES) - 2


# --- images --------------------------------------------------------------------


def test_an_unreadable_image_is_skipped_and_counted(tmp_path):
    images = Images()
    for task_id in (1, 3):
        images.add(task_id)
    tasks = [_task(1, "Car"), _task(2, "Car"), _task(3, "Dog")]
    _, splits = _prepare(tmp_path, tasks, images=images, val_split=0.0)
    assert _task_ids(splits["train"]) == {1, 3}
    manifest = read_manifest(tmp_path)
    assert manifest["skipped_no_image"] == 1
    assert any("task 2" in w and "not found" in w for w in manifest["warnings"])


def test_images_are_stored_at_the_models_size_once_per_content(tmp_path):
    big = Image.new("RGB", (1000, 700), (10, 200, 30))
    images = Images({_ref(1): big, _ref(2): big.copy(), _ref(3): _picture(3)})
    tasks = [_task(1, "Car"), _task(2, "Car"), _task(3, "Dog")]
    prepared, splits = _prepare(tmp_path, tasks, images=images, val_split=0.0)
    stored = sorted((tmp_path / "images").iterdir())
    assert prepared.images_stored == len(stored) == 2  # tasks 1 and 2 share one
    by_task = {r.task_id: r for r in splits["train"]}
    assert by_task[1].image == by_task[2].image != by_task[3].image
    with Image.open(tmp_path / by_task[1].image) as one:
        assert one.size == tuple(reversed(smart_resize(700, 1000)))
    with Image.open(tmp_path / by_task[3].image) as three:
        assert three.size == tuple(reversed(smart_resize(H, W)))
    # the answers' bins are fractions of the original: its size is what is kept
    assert (by_task[1].width, by_task[1].height) == (W, H)  # as the results say
    assert {r.image for r in splits["train"]} == {f"images/{p.name}" for p in stored}
    assert not list(tmp_path.glob("images/*.partial"))


# --- manifest and selection ----------------------------------------------------


def test_the_manifest_counts_what_was_written_and_hashes_annotation_ids(tmp_path):
    tasks = [
        _task(1, "Car", annotation_id=31),
        _task(2, "Dog", annotation_id=7),
        _task(3, "Car", annotation_id=12),
        _task(4, "Car", annotation_id=99, cancelled=True),
        _task(5),
    ]
    _prepare(tmp_path, tasks, val_split=0.4, replay_images=1)
    manifest = read_manifest(tmp_path)
    for split, count in manifest["counts"].items():
        assert len(read_split(tmp_path, split)) == count
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == 3
    assert manifest["annotations"] == 3  # the cancelled one does not count
    assert manifest["annotation_ids_sha256"] == hashlib.sha256(b"7,12,31").hexdigest()
    assert manifest["skipped_no_annotation"] == 2
    assert manifest["replay_phrases"] == list(PHRASES)


def test_tasks_outside_the_selection_are_counted_not_read(tmp_path):
    images = Images()
    for task_id in range(1, 7):
        images.add(task_id)
    tasks = [_task(t, "Car") for t in range(1, 7)]
    prepared, splits = _prepare(
        tmp_path, tasks, images=images, val_split=0.0, task_ids=frozenset({2, 5, 99})
    )
    assert prepared.tasks_not_selected == 4
    assert read_manifest(tmp_path)["tasks_not_selected"] == 4
    assert _task_ids(splits["train"]) == {2, 5}
    assert set(images.loaded) == {_ref(2), _ref(5)}


def test_the_visual_prompt_share_picks_a_seeded_subset_of_tasks(tmp_path):
    tasks = [_task(t, "Car") for t in range(1, 21)]

    def picked(name, **options):
        _, splits = _prepare(tmp_path / name, tasks, val_split=0.0, **options)
        return {
            r.task_id for r in splits["train"] if r.task == Task.VISUAL_PROMPTING.value
        }

    half = picked("a", visual_prompt_share=0.5)
    assert 0 < len(half) < 20
    assert picked("b", visual_prompt_share=0.5) == half
    assert picked("c", visual_prompt_share=0.5, seed=1) != half
    assert picked("none", visual_prompt_share=0.0) == set()
    assert picked("all", visual_prompt_share=1.0) == set(range(1, 21))


def test_bad_options_are_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--val-split"):
        PrepareOptions(val_split=1.0)
    with pytest.raises(ValueError, match="--replay-images"):
        PrepareOptions(replay_images=-1)
