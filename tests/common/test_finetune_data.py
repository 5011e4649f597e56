"""A fine-tuning run's data directory: records, splits and the manifest."""

from __future__ import annotations

import json

import pytest

from common.finetune_data import (
    SPLITS,
    FinetuneDataError,
    Record,
    read_manifest,
    read_split,
    split_path,
    write_manifest,
    write_split,
)

RECORD = Record(
    prompt="Detect car, dog.",
    answer="<|object_ref_start|>car<|object_ref_end|><|box_start|><1><2><3><4><|box_end|>",
    image="images/abc.jpg",
    task="detection",
    width=640,
    height=480,
    categories=("car", "dog"),
    regions=({"type": "box", "label": "car", "coords": [1.0, 2.0, 3.0, 4.0]},),
    labels=("Car",),
    task_id=12,
    source="annotation",
    held_out=False,
    keypoint_type=None,
    visual_prompt_boxes=((1.0, 2.0, 30.0, 40.0),),
)


def _line(**changes):
    raw = json.loads(RECORD.to_json())
    raw.update(changes)
    return json.dumps({k: v for k, v in raw.items() if v is not ...})


def test_a_record_survives_the_round_trip_through_json():
    assert Record.from_json(RECORD.to_json(), "here") == RECORD
    replayed = Record(
        prompt="p", answer="", image="images/x.jpg", task="detection", width=1,
        height=1, source="prediction", held_out=True,
    )  # fmt: skip
    assert Record.from_json(replayed.to_json(), "here") == replayed


def test_write_then_read_a_split_keeps_order_and_count(tmp_path):
    records = [RECORD, Record(**{**RECORD.__dict__, "task_id": 13})]
    assert write_split(tmp_path, "train", records) == 2
    assert read_split(tmp_path, "train") == records
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]  # no temp left


def test_a_missing_split_is_empty(tmp_path):
    assert all(read_split(tmp_path, split) == [] for split in SPLITS)


def test_an_unknown_split_is_refused(tmp_path):
    with pytest.raises(FinetuneDataError, match="unknown split 'test'"):
        split_path(tmp_path, "test")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "not an example"),
        ("[1, 2]", "not a JSON object"),
        (_line(prompt=...), "'prompt'"),
        (_line(answer=7), "'answer' must be a string"),
        (_line(width="wide"), "not an example"),
        (_line(height=0), "image size must be positive"),
        (_line(image="../../etc/passwd"), "must be a path inside"),
        (_line(image="images/../../x.jpg"), "must be a path inside"),
        (_line(image="/etc/passwd"), "must be a path inside"),
        (_line(visual_prompt_boxes=[["a", 1, 2, 3]]), "not an example"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line_number(tmp_path, line, says):
    good = RECORD.to_json()
    split_path(tmp_path, "val").write_text(f"{good}\n\n{good}\n{line}\n")
    with pytest.raises(FinetuneDataError, match=says) as caught:
        read_split(tmp_path, "val")
    assert "val.jsonl:4" in str(caught.value)  # blank lines still count


def test_the_manifest_round_trips_and_a_missing_one_says_to_prepare(tmp_path):
    with pytest.raises(FinetuneDataError, match="prepare the data first"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, {"counts": {"train": 3}})
    assert read_manifest(tmp_path) == {"counts": {"train": 3}}
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(FinetuneDataError, match="not a JSON object"):
        read_manifest(tmp_path)
