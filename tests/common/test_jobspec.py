import json

import pytest

from common.jobspec import (
    CallResult,
    ImageJob,
    ImageResult,
    JobSpecError,
    ModelCall,
    parse_chunk,
)
from converters.prediction import Prediction
from converters.tasks import Task


def test_chunk_payload_round_trips_through_json():
    job = ImageJob(
        id="7",
        image="/data/upload/1/a.jpg",
        task_id=7,
        calls=[
            ModelCall(task="detection", categories="car", key="label", masks="brush"),
            ModelCall(
                task=Task.KEYPOINT, categories=["person"], keypoint_type="person"
            ),
        ],
    )
    payload = json.loads(json.dumps({"images": [job.to_dict()]}))
    (back,) = parse_chunk(payload)
    assert back == job
    assert back.calls[0].categories == ["car"]


def test_result_round_trips_with_predictions():
    result = ImageResult(
        id="7",
        width=640,
        height=480,
        calls=[
            CallResult(
                key="label",
                task=Task.DETECTION,
                predictions=[Prediction("box", "car", [1, 2, 3, 4], score=0.5)],
                raw_text="<|object_ref_start|>car...",
                truncated=True,
                warnings=["x"],
            )
        ],
    )
    back = ImageResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "images"),
        ({"images": [{"id": 1, "image": "a.jpg"}]}, "calls"),
        ({"images": [{"id": 1, "image": "a.jpg", "calls": []}]}, "non-empty"),
        ({"images": [{"id": 1, "image": "a", "calls": [{"task": "segment"}]}]}, "task"),
        (
            {
                "images": [
                    {"id": 1, "image": "a", "calls": [{"task": "pointing", "x": 1}]}
                ]
            },
            "unknown field",
        ),
        (
            {
                "images": [
                    {
                        "id": 1,
                        "image": "a",
                        "calls": [{"task": "detection", "masks": "png"}],
                    }
                ]
            },
            "masks",
        ),
    ],
)
def test_malformed_chunks_name_the_bad_field(payload, message):
    with pytest.raises(JobSpecError, match=message):
        parse_chunk(payload)


def test_local_paths_default_to_off_and_must_be_a_bool():
    base = {"id": "1", "image": "/etc/passwd", "calls": [{"task": "detection"}]}
    assert ImageJob.from_dict(base).local_paths is False
    job = ImageJob.from_dict({**base, "local_paths": True})
    assert job.local_paths is True
    assert ImageJob.from_dict(job.to_dict()).local_paths is True
    with pytest.raises(JobSpecError, match="'local_paths' must be true or false"):
        ImageJob.from_dict({**base, "local_paths": "yes"})
