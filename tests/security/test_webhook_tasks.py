"""A webhook's tasks are Label Studio's, never the event body's.

A real ``rexlabel serve`` on loopback, the shared fake Label Studio with two
projects (7, set up for pre-annotation on import, and 8), FakeChat as the
model. A ``TASKS_CREATED`` for project 7 (with a valid webhook token) that
names task 99 of project 8 with image data of the sender's choosing made the
backend fetch project 8's upload with its token and post a prediction to task
99. Now each task is fetched from Label Studio (``GET /api/tasks/<id>/``):
only tasks of the event's project are labelled, with Label Studio's data.
"""

from __future__ import annotations

import pytest

from tests.fake_label_studio import FakeLabelStudio
from tests.security.conftest import BOX_CONFIG, FakeChat, png_bytes, serve
from tests.security.test_auth import AUTH, TOKEN, _env
from tests.worker.rq_helpers import wait_for

PROJECT, OTHER = 7, 8
SECRET = f"{OTHER}/secret.png"
"""Project 8's upload, which no request about project 7 may read."""
OWN, FOREIGN, UNKNOWN = 1, 99, 404
JOB_WAIT_S = 120.0
"""Generous bound for a background job of one image on a fake model."""


@pytest.fixture
def ls():
    with FakeChat() as chat, FakeLabelStudio() as server:
        server.add_project(PROJECT, BOX_CONFIG)
        server.add_project(OTHER, BOX_CONFIG)
        server.files[SECRET] = png_bytes()
        server.files[f"{PROJECT}/own.png"] = png_bytes()
        server.add_task(PROJECT, OWN, {"image": f"/data/upload/{PROJECT}/own.png"})
        server.add_task(OTHER, FOREIGN, {"image": f"/data/upload/{SECRET}"})
        server.chat = chat
        yield server


def _send(backend, *tasks: dict) -> None:
    """Set up project 7 for pre-annotation on import, then send a
    TASKS_CREATED for ``tasks`` with the webhook token."""
    body = {
        "project": f"{PROJECT}.1795697856",
        "schema": BOX_CONFIG,
        "extra_params": {"prelabel_on_import": True},
    }
    assert backend.post("/setup", body, auth=AUTH).ok
    event = {"action": "TASKS_CREATED", "project": {"id": PROJECT}, "tasks": tasks}
    assert backend.post(f"/webhook?token={TOKEN}", event).status_code == 200


def _claiming(task_id: int) -> dict:
    """A task as the event body gives it: with project 8's image as data."""
    return {"id": task_id, "data": {"image": f"/data/upload/{SECRET}"}}


def test_a_task_of_another_project_is_never_read_nor_labelled(ls, tmp_path):
    with serve(tmp_path, _env(ls, tmp_path, REXLABEL_WEBHOOK_TOKEN=TOKEN)) as backend:
        _send(backend, _claiming(FOREIGN), _claiming(UNKNOWN))
        wait_for(
            lambda: "2 task(s) dropped" in backend.log or ls.predictions_of(FOREIGN),
            JOB_WAIT_S,
            "the dropped tasks' log line",
        )
        log = backend.log
    assert ls.predictions_of(FOREIGN) == []
    assert f"/data/upload/{SECRET}" not in ls.paths_requested()
    assert [s for s in ls.chat.seen if s.method == "POST"] == []  # no model call
    assert f"[{FOREIGN}, {UNKNOWN}]" in log  # which ones, for the operator


def test_an_own_task_is_labelled_with_label_studios_data(ls, tmp_path):
    with serve(tmp_path, _env(ls, tmp_path, REXLABEL_WEBHOOK_TOKEN=TOKEN)) as backend:
        _send(backend, _claiming(OWN), _claiming(FOREIGN), _claiming(OWN))
        wait_for(lambda: ls.predictions_of(OWN), JOB_WAIT_S, "task 1's prediction")
    (prediction,) = ls.predictions_of(OWN)
    assert prediction["result"], prediction
    assert ls.predictions_of(FOREIGN) == []
    requested = ls.paths_requested()
    assert f"/data/upload/{PROJECT}/own.png" in requested  # Label Studio's data
    assert f"/data/upload/{SECRET}" not in requested  # not the event's
    assert requested.count(f"/api/tasks/{OWN}/") == 1  # once per id
