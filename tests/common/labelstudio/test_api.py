"""common.labelstudio.api against a local fake of Label Studio's REST API."""

from __future__ import annotations

import json

import pytest

from common.labelstudio.api import (
    LabelStudioAPIError,
    LabelStudioClient,
    health,
    prediction_model_versions,
)
from tests.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="car"/>'
    "</RectangleLabels></View>"
)


@pytest.fixture
def ls():
    with FakeLabelStudio() as server:
        server.add_project(7, CONFIG, title="cars")
        for task_id in range(1, 251):
            server.add_task(7, task_id, {"image": f"/data/upload/7/{task_id}.jpg"})
        server.add_task(8, 999, {"image": "/data/upload/8/x.jpg"})
        server.add_view(7, 3, "Night shots", [5, 6, 200])
        yield server


@pytest.mark.parametrize("token_kind", ["legacy", "pat"])
def test_project_and_tasks_paginate_with_either_token(ls, token_kind):
    token = LEGACY_TOKEN if token_kind == "legacy" else ls.pat
    client = LabelStudioClient(ls.url, token)
    assert client.get_project(7)["label_config"] == CONFIG
    ids = [t["id"] for t in client.iter_tasks(7, page_size=100)]
    assert ids == list(range(1, 251))  # 3 pages, the last one partial
    pages = [p for m, p, _ in ls.requests if m == "GET" and p.startswith("/api/tasks/")]
    assert len(pages) == 3
    if token_kind == "pat":
        refreshes = [p for m, p, _ in ls.requests if p == "/api/token/refresh/"]
        assert len(refreshes) == 1  # the access token is cached across requests


def test_health_needs_no_token_and_whoami_names_the_tokens_user(ls):
    answer = health(ls.url + "/")
    assert answer.status_code == 200 and answer.json() == {"status": "UP"}
    assert ls.requests[-1] == ("GET", "/health", "")
    client = LabelStudioClient(ls.url, ls.pat)
    assert client.whoami()["email"] == "admin@example.com"


def test_list_projects_reads_one_page(ls):
    ls.add_project(9, CONFIG, title="vans")
    client = LabelStudioClient(ls.url, LEGACY_TOKEN)
    assert [p["id"] for p in client.list_projects(page_size=1)] == [7]
    assert [p["title"] for p in client.list_projects()] == ["cars", "vans"]


def test_project_tasks_are_label_studios_and_of_that_project_only(ls):
    client = LabelStudioClient(ls.url, ls.pat)
    found, refused = client.project_tasks(7, [2, 999, 404, 5])
    assert [t["id"] for t in found] == [2, 5]
    assert found[0]["data"] == {"image": "/data/upload/7/2.jpg"}  # Label Studio's
    assert refused == [999, 404]  # project 8's task, and an unknown one


def test_last_full_page_stops_on_total_or_404(ls):
    client = LabelStudioClient(ls.url, LEGACY_TOKEN)
    ids = [t["id"] for t in client.iter_tasks(7, page_size=125)]
    assert ids == list(range(1, 251))


def test_view_by_title_or_id_restricts_tasks(ls):
    client = LabelStudioClient(ls.url, LEGACY_TOKEN)
    assert client.find_view(7, "night SHOTS") == 3
    assert client.find_view(7, 3) == 3
    assert [t["id"] for t in client.iter_tasks(7, view=3)] == [5, 6, 200]
    with pytest.raises(LabelStudioAPIError, match=r"no view 'Day'.*3:Night shots"):
        client.find_view(7, "Day")


def test_predictions_posted_listed_and_seen_on_tasks(ls):
    client = LabelStudioClient(ls.url, ls.pat)
    result = [
        {
            "id": "a",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "value": {
                "x": 1,
                "y": 2,
                "width": 3,
                "height": 4,
                "rectanglelabels": ["car"],
            },
        }
    ]
    created = client.create_prediction(5, result, score=0.5, model_version="rex-1")
    assert created["task"] == 5 and created["model_version"] == "rex-1"
    assert ls.predictions_of(5)[0]["score"] == 0.5
    assert client.has_prediction(5, "rex-1")
    assert not client.has_prediction(5, "rex-2")
    assert not client.has_prediction(6, "rex-1")
    task = next(t for t in client.iter_tasks(7, view=3) if t["id"] == 5)
    assert prediction_model_versions(task) == {"rex-1"}


def test_transient_errors_are_retried_then_reported(ls):
    client = LabelStudioClient(ls.url, LEGACY_TOKEN)
    ls.fail_next = 2  # two 503s, then success on the third attempt
    assert client.get_project(7)["id"] == 7
    ls.fail_next = 5
    with pytest.raises(LabelStudioAPIError, match="HTTP 503") as caught:
        client.get_project(7)
    assert caught.value.status == 503


def test_errors_name_the_request_and_the_reason(ls):
    client = LabelStudioClient(ls.url, LEGACY_TOKEN)
    with pytest.raises(LabelStudioAPIError, match=r"GET /api/projects/42/.*404"):
        client.get_project(42)
    with pytest.raises(LabelStudioAPIError, match=r"model_version"):
        client.create_prediction(5, [], score=None, model_version="")
    bad = LabelStudioClient(ls.url, "not-a-valid-token")
    with pytest.raises(LabelStudioAPIError, match="401") as caught:
        bad.get_project(7)
    assert caught.value.status == 401


def test_missing_url_or_token_is_a_clear_error():
    with pytest.raises(LabelStudioAPIError, match="LABEL_STUDIO_URL"):
        LabelStudioClient("", "x")
    with pytest.raises(LabelStudioAPIError, match="LABEL_STUDIO_API_KEY"):
        LabelStudioClient("http://127.0.0.1:1", "")


def test_from_settings_reads_the_label_studio_variables(ls, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_HOST", ls.url)  # the alias users know
    monkeypatch.setenv("LABEL_STUDIO_ACCESS_TOKEN", LEGACY_TOKEN)
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert LabelStudioClient.from_settings().get_project(7)["title"] == "cars"


def test_export_streams_the_json_to_disk(ls, tmp_path):
    ls.add_prediction(1, [], "rex-1")
    client = LabelStudioClient(ls.url, LEGACY_TOKEN)
    path = client.export_json(7, tmp_path / "export.json")
    tasks = json.loads(path.read_text())
    assert [t["id"] for t in tasks] == list(range(1, 251))
    assert tasks[0]["predictions"][0]["model_version"] == "rex-1"
    assert not (tmp_path / "export.json.part").exists()
