"""One tiled image, four ways in, one answer: ``rexlabel predict --tile on``,
``/predict`` with ``rex_tile`` attributes, ``rexlabel prelabel`` on files with
``--tile`` flags, and ``rexlabel prelabel --project`` with the flags on top of
the connected model's extra params. All run the trained tiny model on the
same 448 px scene in 112 px tiles, so their regions must be the same boxes."""

from __future__ import annotations

import io
import json
import random

import pytest

from backend.app import create_app
from backend.cli import main
from backend.model_version import model_version
from backend.queue import InProcessRunner
from backend.state import MemoryStore
from common.images import loader as image_loader
from tests.fake_label_studio import FakeLabelStudio
from worker import jobs
from worker.jobs import WorkerRuntime
from worker.training.scenes import render_scene

FLAGS = ["--tile", "on", "--tile-size", "112", "--tile-overlap", "0.5"]
ATTRIBUTES = 'rex_tile="on" rex_tile_size="112" rex_tile_overlap="0.5"'
TOLERANCE_PX = 0.01
"""Label Studio gets percentages and COCO gets xywh: the same float boxes
come back within rounding."""
PROJECT = 5


def _config(phrase: str, attributes: str = "") -> str:
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="label" toName="image" {attributes}>'
        f'<Label value="{phrase}"/></RectangleLabels></View>'
    )


def _from_percent(results: list[dict], width: int, height: int) -> list[tuple]:
    boxes = []
    for region in results:
        v = region["value"]
        x0, y0 = v["x"] * width / 100, v["y"] * height / 100
        boxes.append(
            (x0, y0, x0 + v["width"] * width / 100, y0 + v["height"] * height / 100)
        )
    return sorted(boxes)


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        abs(u - v) <= TOLERANCE_PX for p, q in zip(a, b) for u, v in zip(p, q)
    )


@pytest.fixture
def scene(tmp_path, monkeypatch, trained_engine):
    """The scene as a file under LOCAL_FILES_DOCUMENT_ROOT, the trained model
    as this process's worker, short answers and no whole-image pass."""
    scene = render_scene(random.Random(0))
    scene.image.save(tmp_path / "scene.png")
    for name, value in {
        "LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path),
        "REXLABEL_JOBS_DIR": str(tmp_path / "jobs"),
        "REXLABEL_MAX_NEW_TOKENS": "64",
        "REXLABEL_TILE_WHOLE_IMAGE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("REDIS_URL", "SAM_CHECKPOINT", "REXLABEL_TILE"):
        monkeypatch.delenv(name, raising=False)
    image_loader.default_loader.cache_clear()
    previous = jobs.install_runtime(WorkerRuntime(engine=trained_engine))
    yield scene
    jobs.install_runtime(previous)
    image_loader.default_loader.cache_clear()


@pytest.mark.slow
def test_predict_cli_backend_and_prelabel_give_the_same_tiled_regions(
    scene, tmp_path, trained_model_dir, capsys
):
    path = str(tmp_path / "scene.png")
    args = ["--task", "detection", "--categories", scene.phrase, *FLAGS]
    assert (
        main(
            [
                "predict",
                path,
                *args,
                "--model",
                str(trained_model_dir),
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    (image,) = json.loads(capsys.readouterr().out)["images"]
    assert len(image["tiles"]) == 49
    cli = sorted(tuple(p["coords"]) for p in image["predictions"])
    assert len(cli) >= 4, "the scene's shapes are found at all"

    app = create_app({}, runner=InProcessRunner(), store=MemoryStore())
    body = {
        "tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=scene.png"}}],
        "label_config": _config(scene.phrase, ATTRIBUTES),
        "project": "1.1",
    }
    reply = app.test_client().post("/predict", json=body).get_json()
    assert "errors" not in reply, reply
    backend = _from_percent(reply["results"][0]["result"], 448, 448)
    assert _same(backend, cli), (backend, cli)

    out = tmp_path / "files.json"
    assert (
        main(["prelabel", path, *args, "--out", str(out), "--inline", "--quiet"]) == 0
    )
    coco = json.loads(out.read_text())
    files = sorted(
        (x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in coco["annotations"])
    )
    assert _same(files, cli), (files, cli)

    with FakeLabelStudio() as server:
        buffer = io.BytesIO()
        scene.image.save(buffer, format="PNG")
        server.files[f"{PROJECT}/scene.png"] = buffer.getvalue()
        server.add_project(PROJECT, _config(scene.phrase))  # tiling from the flags
        server.add_task(PROJECT, 1, {"image": f"/data/upload/{PROJECT}/scene.png"})
        connected = {"rex_max_instances": 50, "rex_tile": "off"}  # the flags win
        server.add_ml_backend(PROJECT, 1, "http://rexlabel:9090", connected)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LABEL_STUDIO_URL", server.url)
            patch.setenv("LABEL_STUDIO_API_KEY", server.pat)
            image_loader.default_loader.cache_clear()
            code = main(
                ["prelabel", "--project", str(PROJECT), *FLAGS, "--inline", "--quiet"]
            )
            image_loader.default_loader.cache_clear()
        assert code == 0
        (posted,) = server.predictions_of(1)
    project = _from_percent(posted["result"], 448, 448)
    assert _same(project, cli), (project, cli)
    flags = {"rex_tile": "on", "rex_tile_size": 112, "rex_tile_overlap": 0.5}
    extra = {**connected, **flags}
    assert posted["model_version"] == model_version(_config(scene.phrase), extra)
