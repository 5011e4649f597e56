"""``rexlabel evaluate --apply-thresholds`` against the real Label Studio 1.23.2:
the thresholds land in the connected model's extra params, every other key
stays, and Label Studio hands them to the backend's /setup at once."""

from __future__ import annotations

import pytest

from backend.evaluate.apply import Change, apply_to_project
from backend.model_version import model_version
from common.labelstudio.api import LabelStudioClient
from tests.e2e.conftest import Backend, LabelStudio

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Car"/><Label value="Person"/></RectangleLabels></View>'
)


def test_thresholds_are_merged_into_the_model_extra_params(
    label_studio: LabelStudio, rexlabel_backend: Backend
) -> None:
    ui = label_studio.client  # what a person clicks, through the REST API
    project = ui.create_project("apply thresholds", CONFIG)["id"]
    added = ui.add_ml_backend(
        project,
        rexlabel_backend.url,
        "rexlabel",
        extra_params={"other": 1, "model_score_thresholds": {"Person": 0.3}},
    )
    before = ui.ml_backend(added["id"])
    assert before["state"] == "CO", f"{before}\n{rexlabel_backend.logs()}"

    client = LabelStudioClient(label_studio.url, label_studio.legacy_token)
    thresholds = {"Car": 0.41, "Person": 0.35}
    changes = apply_to_project(client, project, thresholds)
    assert changes == [Change("Car", None, 0.41), Change("Person", 0.3, 0.35)]

    after = ui.ml_backend(added["id"])
    written = {"other": 1, "model_score_thresholds": thresholds}
    assert after["extra_params"] == written
    assert after["state"] == "CO", f"{after}\n{rexlabel_backend.logs()}"
    # The backend got them through /setup: its version is the one of these params.
    label_config = ui.get_json(f"/api/projects/{project}")["label_config"]
    assert after["model_version"] != before["model_version"]
    assert after["model_version"] == model_version(
        label_config, written, rexlabel_backend.env
    )
    assert apply_to_project(client, project, thresholds) == []
