"""What a project job posts: the plan of its spec, per-label thresholds included."""

from __future__ import annotations

from backend.bulk.records import JobSpec
from backend.bulk.store import JobDir
from backend.bulk.writers import LabelStudioSink
from common.jobspec import CallResult, ImageResult
from common.labelstudio.api import LabelStudioClient
from converters.prediction import Prediction, RegionType
from converters.tasks import Task
from tests.backend.planner.helpers import RECT, view
from tests.fake_label_studio import FakeLabelStudio

PROJECT = 4
TASK = 11
VERSION = "rexlabel-test-bulk"


def box(phrase: str, score: float, x: float = 0.0) -> Prediction:
    return Prediction(
        type=RegionType.BOX, label=phrase, coords=(x, 0.0, x + 10, 10.0), score=score
    )


def test_a_project_job_posts_regions_past_their_label_threshold(tmp_path) -> None:
    config = view(RECT)
    spec = JobSpec(
        kind="project",
        total=1,
        inputs_digest="0" * 64,
        chunk_size=1,
        model_version=VERSION,
        project={
            "id": str(PROJECT),
            "label_config": config,
            "extra_params": {
                "model_score_threshold": 0.3,
                "model_score_thresholds": {"Person": 0.7},
            },
        },
    )
    found = [box("car", 0.4), box("Person", 0.6, 20), box("Person", 0.75, 40)]
    line = ImageResult(
        id=str(TASK),
        task_id=TASK,
        width=100,
        height=50,
        calls=[CallResult(key="label", task=Task.DETECTION, predictions=found)],
    ).to_dict()
    with FakeLabelStudio() as ls:
        ls.add_project(PROJECT, config)
        ls.add_task(PROJECT, TASK, {"image": "/data/upload/4/a.png"})
        sink = LabelStudioSink(LabelStudioClient(ls.url, ls.pat), JobDir(tmp_path))
        sink.deliver(spec, 0, [line])
        (posted,) = ls.predictions_of(TASK)
    assert line["status"] == "posted"
    assert posted["model_version"] == VERSION
    # car 0.4 passes the project's 0.3; Person needs 0.7: only 0.75 passes
    kept = [(r["value"]["rectanglelabels"], r["score"]) for r in posted["result"]]
    assert kept == [(["Car"], 0.4), (["Person"], 0.75)]
