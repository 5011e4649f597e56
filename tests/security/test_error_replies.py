"""Replies name the bad part of a request and nothing of the backend's insides.

A real ``rexlabel serve`` on loopback (FakeChat as the model, the shared fake
Label Studio serving the images): a malformed interactive context is a 400
naming the field (``rotation`` was a 500 with the exception text), a task id
that is no integer (``true`` was task 1) fails that task by name, and errors
from the image path quote the task's own reference but no internal URL or
local path. An unexpected exception answers ``internal error`` with an id the
log also has, and no exception text.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from backend.app import create_app
from backend.queue import InProcessRunner
from backend.state import MemoryStore
from tests.fake_label_studio import FakeLabelStudio
from tests.security.conftest import MODEL_ID, FakeChat, Listener, png_bytes, serve

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="shape"/>'
    "</RectangleLabels>"
    '<TextArea name="prompt" toName="image" editable="true"/>'
    '<KeyPointLabels name="point" toName="image"><Label value="shape"/>'
    "</KeyPointLabels>"
    '<BrushLabels name="mask" toName="image"><Label value="shape"/></BrushLabels>'
    "</View>"
)
PLAIN_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="shape"/>'
    "</RectangleLabels></View>"
)
"""Detection only: every task of it is served without SAM."""
PROJECT = 7
IMAGE = f"/data/upload/{PROJECT}/a.png"


def _region(region_id: str, kind: str, control: str, value: dict) -> dict:
    """A context region drawn on a 64 x 64 image, as Label Studio sends it."""
    return {
        "id": region_id,
        "type": kind,
        "from_name": control,
        "to_name": "image",
        "original_width": 64,
        "original_height": 64,
        "value": value,
    }


def _box(**value) -> dict:
    box = {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0}
    return _region(
        "r1", "rectanglelabels", "label", {**box, "rectanglelabels": ["shape"], **value}
    )


def _point(**value) -> dict:
    point = {"x": 10, "y": 10, "keypointlabels": ["shape"]}
    return _region("k1", "keypointlabels", "point", {**point, **value})


def _interactive(region: dict) -> dict:
    return {
        "tasks": [{"id": 1, "data": {"image": IMAGE}}],
        "label_config": CONFIG,
        "project": f"{PROJECT}.1795697856",
        "params": {"context": {"result": [region]}},
    }


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    with FakeChat() as chat, FakeLabelStudio() as ls:
        ls.files[f"{PROJECT}/a.png"] = png_bytes()
        env = {
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.pat,
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
        }
        with serve(tmp_path_factory.mktemp("serve"), env) as served:
            served.ls = ls
            yield served


@pytest.mark.parametrize(
    ("region", "field"),
    [
        (_box(rotation="abc"), "value.rotation"),
        (_box(rotation=float("inf")), "value.rotation"),
        (_box(x="10"), "value.x"),
        (_box(width=None), "value.width"),
        (_box(height=[1]), "value.height"),
        ({**_box(), "original_width": True}, "original_width"),
        ({**_box(), "original_height": "64"}, "original_height"),
        (_box(rectanglelabels={"shape": 1}), "value.rectanglelabels"),
        ({**_box(), "to_name": ["image"]}, "to_name"),
        ({**_box(), "value": "10,10,20,20"}, "value"),
        (_point(x=float("nan")), "value.x"),
        (_point(y="middle"), "value.y"),
        (
            {
                "id": "t1",
                "type": "textarea",
                "from_name": "prompt",
                "to_name": "image",
                "value": {"text": {"shape": True}},
            },
            "value.text",
        ),
    ],
)
def test_a_malformed_context_field_is_400_naming_it(backend, region, field):
    # Python's json writes inf/NaN (as Infinity/NaN), which Flask reads back
    response = backend.post(
        "/predict",
        data=json.dumps(_interactive(region)),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert f"params.context.result[{region['id']!r}].{field}" in error
    assert "Error" not in error and "Traceback" not in error  # no exception text


def test_a_well_formed_rotated_box_is_served(backend):
    response = backend.post("/predict", _interactive(_box(rotation=30.5)))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["result"]


@pytest.mark.parametrize("bad_id", [True, False, "1", 1.0, [1]])
def test_a_task_id_that_is_no_integer_fails_that_task_by_name(backend, bad_id):
    tasks = [
        {"id": bad_id, "data": {"image": IMAGE}},
        {"id": 2, "data": {"image": IMAGE}},
    ]
    body = {"tasks": tasks, "label_config": PLAIN_CONFIG}
    reply = backend.post("/predict", body).json()
    first, second = reply["results"]
    assert "result" not in first and second["result"]
    assert len(reply["errors"]) == 1, reply
    (error,) = reply["errors"]
    assert f"task id {bad_id!r} is not an integer" in error["error"]


def test_errors_quote_the_task_reference_but_no_internal_address(backend):
    missing = f"/data/upload/{PROJECT}/missing.png"
    task = {"id": 1, "data": {"image": missing}}
    body = {"tasks": [task], "label_config": PLAIN_CONFIG}
    reply = backend.post("/predict", body).json()
    (error,) = reply["errors"]
    text = error["error"] + reply["results"][0].get("error", "")
    assert missing in text  # the caller's own reference, to find the task
    # Label Studio's address is internal (the error said "not found at" it)
    assert backend.ls.url.removeprefix("http://") not in text
    assert not re.search(r"https?://", text), text


@pytest.mark.parametrize(
    "extra",
    [
        {"x": ":", "y": "/", "z": "."},  # separators cut every URL apart
        {"note": "data", "port": "127.0.0.1"},  # fragments of the internal URL
    ],
)
def test_other_task_fields_do_not_shield_internal_addresses(backend, extra):
    """Only the image reference the plan read is quoted: no other field of
    ``data`` (which the caller fills at will) keeps any text in a reply."""
    missing = f"/data/upload/{PROJECT}/missing.png"
    internal = backend.ls.url + missing  # where the worker looked for it
    data = {"image": missing, "same": internal, **extra}
    body = {"tasks": [{"id": 1, "data": data}], "label_config": PLAIN_CONFIG}
    reply = backend.post("/predict", body).json()
    (error,) = reply["errors"]
    text = error["error"] + reply["results"][0].get("error", "")
    assert missing in text, text
    assert backend.ls.url.removeprefix("http://") not in text, text
    assert not re.search(r"https?://", text), text


INTERNAL_URL = b"http://10.9.8.7:8000/internal"
"""An internal service the model server's error body names."""


def _model_failing(seen):
    """A model server that lists the model and fails every generation with a
    body naming its files and an internal host."""
    if seen.method == "GET":
        models = {"data": [{"id": MODEL_ID, "object": "model"}]}
        return 200, {"Content-Type": "application/json"}, json.dumps(models).encode()
    return 500, {}, b"upstream /srv/models/secret-weights failed at " + INTERNAL_URL


@pytest.mark.parametrize("extra", [{}, {"x": ":", "y": "/"}])
def test_the_model_servers_error_body_stays_in_the_log(tmp_path, extra):
    with Listener(reply=_model_failing) as chat, Listener() as images:
        env = {
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": f"http://localhost:{chat.port}/v1",
            "REXLABEL_ALLOWED_HOSTS": f"127.0.0.1:{images.port}",
        }
        with serve(tmp_path, env) as served:
            task = {"id": 1, "data": {"image": f"{images.url}/a.png", **extra}}
            body = {"tasks": [task], "label_config": PLAIN_CONFIG}
            reply = served.post("/predict", body).json()
        log = served.log
    (error,) = reply["errors"]
    text = error["error"]
    assert "HTTP 500" in text, text
    for secret in ("secret-weights", "/srv", "10.9.8.7", f":{chat.port}"):
        assert secret not in text, text
    assert "secret-weights" in log  # the body is logged for the operator


class _FailingStore(MemoryStore):
    """A state store whose disk failed (the SQLite store raises OSError)."""

    def put(self, state):
        raise OSError("/var/lib/rexlabel/state.sqlite3: disk I/O error")


def test_an_unexpected_error_is_internal_error_with_an_id_in_the_log(caplog):
    app = create_app(
        {"REXLABEL_MODEL": "/models/test"},
        runner=InProcessRunner(function="tests.backend.jobfuncs.planned_chunk"),
        store=_FailingStore(),
    )
    caplog.set_level(logging.ERROR, logger="backend.app")
    response = app.test_client().post(
        "/setup", json={"project": "3.1795697856", "schema": CONFIG}
    )
    assert response.status_code == 500
    error = response.get_json()["error"]
    found = re.fullmatch(
        r"internal error \(id ([0-9a-f]+), in the backend's log\)", error
    )
    assert found, error
    (record,) = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert "/var/lib/rexlabel" in record.exc_text  # the details stay in the log
