"""rexlabel against a real Label Studio 1.23.2 (issue 4).

Each test drives Label Studio through its REST API the way the UI does
(create a project, import images, connect the model, press "Retrieve
Predictions", draw a smart box, type a prompt) and then reads back what Label
Studio *stored*: that is the only proof a prediction reached the user, since
Label Studio answers 200 to "Retrieve Predictions" even when it stored nothing.

Three backends serve the projects (``conftest.py``):

- ``rexlabel_backend``: ``rexlabel serve`` with the legacy API token, jobs run
  in-process (no Redis): keypoints, OCR, bulk ``prelabel``.
- ``readme_backend``: as the first, on the README model with a tiny SAM: the
  rectangles projects.
- ``rexlabel_backend_queue``: ``rexlabel serve`` with a personal access token
  and ``REDIS_URL``, plus a ``rexlabel worker`` process holding the model and
  a tiny random SAM: polygons and brush masks.

Two tiny models answer. The rectangles projects (retrieve, typed phrase,
drawn box) use the README's detection config as written, three phrases in
one prompt, on the README model (``readme_backend``; drawn people, cars,
trucks, cats and dogs: of the boxes on an object 0.94 carry its label, held
out), and each box is checked against the object drawn under it. The other
projects test the protocol, queue and job paths on the shape model
(``trained_model_dir``: single-shape *detection* with a one-phrase prompt,
held-out mean IoU 0.82), with configs of one shape label; for pointing and
OCR it was never trained, so those tests assert that the full protocol path
worked and the stored results are well-formed, whatever the model found.
SAM has random weights: masks are checked for format and size, not shape.
"""

from __future__ import annotations

import io
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from backend.planner.interactive import DRAWN_BOX_IOU
from tests.e2e.conftest import REXLABEL_EXECUTABLE, Backend, LabelStudio
from tests.e2e.lsclient import LabelStudioClient, LabelStudioHTTPError
from tests.e2e.scene_projects import (
    SceneProject,
    label_hits,
    readme_config,
    scene_project,
    scenes,
    upload_name,
)
from worker.training.synthetic import IMAGE_SIZE, ShapeSample, box_iou, render_shape

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIGS = Path(__file__).resolve().parent / "configs"

LABELS = ("red square", "green circle", "blue triangle")
"""The shape phrases the configs label (each config lists these)."""
RED, GREEN, BLUE = ((label,) for label in LABELS)
"""One-label reductions of the configs, for the projects whose boxes are
checked against the shapes (see the module docstring)."""

IMAGES_PER_PROJECT = 6
"""Enough images to tell a working detector from chance; few enough that one
synchronous "Retrieve Predictions" stays far below REXLABEL_SYNC_TASK_LIMIT
(a bigger request becomes a background job) and the module stays fast."""

MIN_DETECTION_HITS = 0.5
"""Share that must be found with the right label at IoU >= 0.5: of the images
(the shape projects: their best box; the trained tiny model scores AP50 0.94
on held-out one-phrase prompts), of the asked objects (the README detection
config; the README model finds 0.92 on three phrases) or of the typed
phrases. The bar leaves room for a handful of images served through Label
Studio (a random box rarely reaches IoU 0.5)."""

IOU_HIT = 0.5
"""A detection counts when it overlaps the drawn shape this much (COCO AP50)."""

PERCENT_SLACK = 1e-6
"""Float rounding allowed outside 0..100 %."""

PRELABEL_TIMEOUT_S = 300.0
"""``rexlabel prelabel --project`` on a handful of images, model load included."""

MAX_NEW_TOKENS = 64
"""Sent as the model's "Extra params" (``{"generation": {"max_new_tokens"}}``):
one shape's answer takes about 12 tokens, while on tasks the tiny model never
learnt (pointing, OCR, visual prompting) it may ramble to the engine's 4096
token default: minutes per image on a CPU, past Label Studio's 100 s."""
EXTRA_PARAMS = {"generation": {"max_new_tokens": MAX_NEW_TOKENS}}

MAX_SAMPLE_DRAWS = 10_000
"""Bound on random draws when collecting images of the configs' labels."""


# -- helpers -----------------------------------------------------------------
def _config(name: str, labels: Iterable[str] = LABELS) -> str:
    """The config ``name`` without the shape ``<Label>`` lines (one of
    :data:`LABELS`) that are not in ``labels``; other labels stay."""
    drop = set(LABELS) - set(labels)
    lines = (CONFIGS / f"{name}.xml").read_text().splitlines(keepends=True)
    label = re.compile(r'<Label value="([^"]+)"')
    return "".join(
        line
        for line in lines
        if (found := label.search(line)) is None or found.group(1) not in drop
    )


def shape_images(
    folder: Path, count: int, seed: int, phrases: Iterable[str] = LABELS
) -> dict[str, ShapeSample]:
    """``count`` synthetic 112x112 images (one shape each) whose phrase is one
    of ``phrases``, written as PNGs; file name -> sample (truth in pixels)."""
    wanted = set(phrases)
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples: dict[str, ShapeSample] = {}
    for _ in range(MAX_SAMPLE_DRAWS):
        if len(samples) == count:
            return samples
        sample = render_shape(rng)
        if sample.phrase not in wanted:
            continue
        name = f"shape_{seed}_{len(samples):02d}.png"
        sample.image.save(folder / name)
        samples[name] = sample
    raise AssertionError(f"no {count} images of {sorted(wanted)} in {MAX_SAMPLE_DRAWS}")


@dataclass
class Project:
    """A Label Studio project with uploaded shape images."""

    id: int
    folder: Path
    samples: dict[str, ShapeSample]
    tasks: dict[int, ShapeSample]
    """task id -> the sample its image shows."""
    labels: tuple[str, ...]
    """The config's labels (the images show only these shapes)."""


def make_project(
    client: LabelStudioClient,
    title: str,
    config_name: str,
    folder: Path,
    seed: int,
    count: int = IMAGES_PER_PROJECT,
    labels: Iterable[str] = LABELS,
) -> Project:
    """A project with config ``config_name`` reduced to ``labels`` and
    ``count`` uploaded images of those shapes."""
    labels = tuple(labels)
    samples = shape_images(folder, count, seed, labels)
    project = client.create_project(title, _config(config_name, labels))
    report = client.import_files(project["id"], [folder / n for n in samples])
    assert report["task_count"] == count, report
    tasks = {t["id"]: samples[upload_name(t)] for t in client.tasks(project["id"])}
    assert len(tasks) == count
    return Project(project["id"], folder, samples, tasks, labels)


def connect(
    client: LabelStudioClient, project: Project, backend: Backend, title: str
) -> dict[str, Any]:
    """``POST /api/ml`` as the "Connect model" dialog does; returns the model.

    Label Studio calls /health and /setup while adding it: state "CO" and a
    model_version prove both answered; the project's webhook to /webhook must
    exist (1.23.1+ silently skips it when the SSRF guard refuses the URL).
    The Extra params reach the backend through /setup."""
    ml = client.add_ml_backend(
        project.id, backend.url, title, is_interactive=True, extra_params=EXTRA_PARAMS
    )
    ml = client.ml_backend(ml["id"])
    assert ml["state"] == "CO", f"model not connected: {ml}\n{backend.logs()}"
    assert ml["model_version"], ml
    hooks = client.get_json("/api/webhooks", params={"project": project.id})
    assert [h["url"] for h in hooks] == [f"{backend.url}/webhook"], hooks
    return ml


def predictions_by_task(
    client: LabelStudioClient, project: Project
) -> dict[int, dict[str, Any]]:
    """The stored predictions; asserts exactly one per task of the project."""
    stored = client.predictions(project.id)
    counts = Counter(p["task"] for p in stored)
    assert set(counts) == set(project.tasks), (sorted(counts), sorted(project.tasks))
    assert all(n == 1 for n in counts.values()), counts
    return {p["task"]: p for p in stored}


def retrieve(
    client: LabelStudioClient, project: Project, backend: Backend, model_version: str
) -> dict[int, dict[str, Any]]:
    """Press "Retrieve Predictions" twice; check the second adds nothing.

    One prediction per task with the model's version proves the backend
    answered one result per task in order (any count mismatch makes Label
    Studio discard the batch) and that /predict's model_version equals
    /setup's (otherwise every retrieval would add duplicates)."""
    client.retrieve_predictions(project.id)
    stored = predictions_by_task(client, project)
    for prediction in stored.values():
        assert prediction["model_version"] == model_version, (
            prediction,
            backend.logs(),
        )
    client.retrieve_predictions(project.id)
    again = predictions_by_task(client, project)
    assert {p["id"] for p in again.values()} == {p["id"] for p in stored.values()}
    return stored


def _in_percent(*values: float) -> bool:
    return all(-PERCENT_SLACK <= v <= 100 + PERCENT_SLACK for v in values)


def check_region_common(region: dict[str, Any], from_name: str, kind: str) -> None:
    assert region["from_name"] == from_name, region
    assert region["to_name"] == "image", region
    assert region["type"] == kind, region
    assert region["original_width"] == IMAGE_SIZE, region
    assert region["original_height"] == IMAGE_SIZE, region
    assert region.get("id"), region


def stored_regions(
    stored: dict[int, dict[str, Any]], from_name: str, kind: str, labels
) -> Iterator[dict[str, Any]]:
    """Every region of the ``stored`` predictions, each checked by
    :func:`check_region_common` and for labels among ``labels``."""
    for prediction in stored.values():
        for region in prediction["result"]:
            check_region_common(region, from_name, kind)
            assert set(region["value"][kind]) <= set(labels), region
            yield region


def box_pixels(value: dict[str, Any]) -> tuple[float, float, float, float]:
    """A Label Studio rectangle value (percent, top-left) as xyxy pixels."""
    scale = IMAGE_SIZE / 100.0
    x0, y0 = value["x"] * scale, value["y"] * scale
    return (x0, y0, x0 + value["width"] * scale, y0 + value["height"] * scale)


def check_rectangles(
    regions: list[dict[str, Any]], from_name: str, labels: Iterable[str]
) -> None:
    for region in regions:
        check_region_common(region, from_name, "rectanglelabels")
        value = region["value"]
        assert value["rectanglelabels"] and set(value["rectanglelabels"]) <= set(
            labels
        ), value
        assert value["width"] > 0 and value["height"] > 0, value
        assert _in_percent(
            value["x"],
            value["y"],
            value["x"] + value["width"],
            value["y"] + value["height"],
        ), value


def best_box_hits(
    stored: dict[int, dict[str, Any]], project: Project, from_name: str
) -> int:
    """Images whose highest-scoring box has the shape's label and IoU >= 0.5."""
    hits = 0
    for task_id, sample in project.tasks.items():
        regions = [r for r in stored[task_id]["result"] if r["from_name"] == from_name]
        if not regions:
            continue
        best = max(regions, key=lambda r: r.get("score") or 0.0)
        label = best["value"]["rectanglelabels"][0]
        if (
            label == sample.phrase
            and box_iou(box_pixels(best["value"]), sample.box) >= IOU_HIT
        ):
            hits += 1
    return hits


def images_labelled(
    stored: dict[int, dict[str, Any]], project: Project, label_key: str
) -> int:
    """Images with at least one region carrying their shape's label."""
    return sum(
        any(
            sample.phrase in region["value"][label_key]
            for region in stored[task_id]["result"]
        )
        for task_id, sample in project.tasks.items()
    )


def backend_log_count(backend: Backend, needle: str) -> int:
    return sum(
        p.log_path.read_text(errors="replace").count(needle) for p in backend.processes
    )


INTERACTIVE_LOG_LINE = "interactive=true"
"""On the request line the backend logs for each interactive /predict."""


def interactive(
    client: LabelStudioClient,
    ml_id: int,
    task_id: int,
    context: list[dict[str, Any]],
    backend: Backend,
) -> list[dict[str, Any]]:
    """The UI's interactive call; returns the suggested regions.

    Label Studio wraps our reply as ``{"data": results[0]}``, or answers 200
    with ``{"errors": [...]}`` when the call failed. The backend's log line
    proves the request reached it (rather than being refused in Label Studio)."""
    before = backend_log_count(backend, INTERACTIVE_LOG_LINE)
    reply = client.interactive(ml_id, task_id, context)
    assert "errors" not in reply, (reply, backend.logs())
    assert backend_log_count(backend, INTERACTIVE_LOG_LINE) == before + 1, (
        backend.logs()
    )
    data = reply["data"]
    assert isinstance(data["result"], list), data
    assert data.get("model_version"), data
    return data["result"]


def _center_percent(sample: ShapeSample) -> tuple[float, float]:
    x0, y0, x1, y1 = sample.box
    return ((x0 + x1) / 2 / IMAGE_SIZE * 100, (y0 + y1) / 2 / IMAGE_SIZE * 100)


def _box_percent(box: tuple[float, ...]) -> dict[str, float]:
    """An xyxy box in pixels as a Label Studio rectangle value (percent)."""
    x0, y0, x1, y1 = box
    return {
        "x": x0 / IMAGE_SIZE * 100,
        "y": y0 / IMAGE_SIZE * 100,
        "width": (x1 - x0) / IMAGE_SIZE * 100,
        "height": (y1 - y0) / IMAGE_SIZE * 100,
        "rotation": 0,
    }


def _context_item(
    region_id: str, from_name: str, kind: str, value: dict[str, Any]
) -> dict[str, Any]:
    """One ``context.result`` item as the labeling UI sends it."""
    return {
        "id": region_id,
        "from_name": from_name,
        "to_name": "image",
        "type": kind,
        "origin": "manual",
        "original_width": IMAGE_SIZE,
        "original_height": IMAGE_SIZE,
        "image_rotation": 0,
        "value": value,
    }


# -- the harness itself --------------------------------------------------------
def test_harness_label_studio_stores_uploads_and_serves_them_to_both_token_kinds(
    label_studio: LabelStudio, tmp_path: Path
) -> None:
    """Our Label Studio makes one task per uploaded file and serves the exact
    bytes to a legacy token and to a PAT exchanged for a JWT access token (the
    two credentials the backend may be given), never without auth; a raw PAT
    is refused (it is a refresh token), which the backend must handle."""
    client = label_studio.client
    project = make_project(client, "harness", "rectangles", tmp_path, seed=100, count=3)
    access = client.exchange_personal_access_token(label_studio.personal_access_token())
    bearer = LabelStudioClient(label_studio.url, access, scheme="Bearer")
    tasks = client.tasks(project.id)
    for task in tasks:
        sample = project.tasks[task["id"]]
        for who in (client, bearer):
            image = Image.open(io.BytesIO(who.download(task["data"]["image"])))
            assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
            assert np.array_equal(
                np.asarray(image.convert("RGB")), np.asarray(sample.image)
            )
    anonymous = LabelStudioClient(label_studio.url, "not-a-token")
    with pytest.raises(LabelStudioHTTPError) as error:
        anonymous.download(tasks[0]["data"]["image"])
    assert error.value.status == 401
    raw_pat = LabelStudioClient(
        label_studio.url, label_studio.personal_access_token(), scheme="Bearer"
    )
    with pytest.raises(LabelStudioHTTPError) as error:
        raw_pat.whoami()
    assert error.value.status == 401


# -- rectangles: the README's detection config on the README model -----------
README_DETECTION = "Detection, with smart boxes and a text prompt"
README_DETECTION_LABELS = ("person", "car")
"""The README detection config's labels (``car`` also asks ``truck``)."""
LABEL_OF_WORD = {"person": "person", "car": "car", "truck": "car"}
"""Drawn word -> the label the README detection config gives it."""
README_SCENES = (
    ("person", "car", "truck"),
    ("truck", "person", "cat"),
    ("car", "dog"),
    ("person",),
    ("truck", "car"),
    ("dog", "cat"),
    ("car", "car"),
)
"""What the rectangles project's images show: mixes of the config's words,
with unasked animals beside them, one image of none of them and two
look-alike cars (the visual prompt's)."""
MIN_ON_OBJECT = 0.8
"""Of the boxes, the share on a drawn object (the README model: 0.96)."""
MIN_RIGHT_LABEL = 0.8
"""Of the boxes on a drawn object, the share with its label: the README model
scores 0.94 on held-out three-phrase prompts (bench_readme_model)."""


@pytest.fixture(scope="module")
def rectangles(
    label_studio: LabelStudio, readme_backend: Backend, tmp_path_factory
) -> tuple[SceneProject, dict[str, Any]]:
    """A project of the README's detection config as written (three phrases in
    one prompt: person, car, truck) with drawn scenes, on the README model."""
    client = label_studio.client
    project = scene_project(
        client,
        "rectangles",
        readme_config(README_DETECTION),
        tmp_path_factory.mktemp("rectangles"),
        scenes(1, README_SCENES),
    )
    ml = connect(client, project, readme_backend, "rexlabel (legacy token)")
    return project, ml


def test_rectangles_retrieve_predictions_finds_the_objects(
    label_studio: LabelStudio, readme_backend: Backend, rectangles
) -> None:
    """ "Retrieve Predictions" stores one prediction per task whose boxes carry
    config labels inside the image, nearly every box lies on a drawn object
    and carries that object's label (a truck: ``car``): the README model read the
    image Label Studio served with the legacy token, asked all three phrases
    at once; a second press adds nothing."""
    project, ml = rectangles
    client = label_studio.client
    stored = retrieve(client, project, readme_backend, ml["model_version"])
    for prediction in stored.values():
        check_rectangles(prediction["result"], "label", README_DETECTION_LABELS)
        assert all(0.0 <= (r.get("score") or 0.0) <= 1.0 for r in prediction["result"])
    hits = label_hits(stored, project, LABEL_OF_WORD)
    assert hits.on_object_share >= MIN_ON_OBJECT, hits
    assert hits.right_share >= MIN_RIGHT_LABEL, hits
    assert hits.found_share >= MIN_DETECTION_HITS, hits


def test_rectangles_typed_phrase_finds_that_object(
    label_studio: LabelStudio, readme_backend: Backend, rectangles
) -> None:
    """Typing a drawn object's word into the prompt TextArea (Auto-Annotation
    on) reaches the backend as a textarea context; it detects exactly that
    phrase and the suggestion is a box of the phrase's label on that object
    ("truck" is labelled ``car`` through ``predicted_values``)."""
    project, ml = rectangles
    asked = hits = 0
    for task_id, scene in project.scenes.items():
        wanted = [o for o in scene.objects if o.word in LABEL_OF_WORD]
        if not wanted:
            continue
        target = wanted[0]
        context = [
            _context_item("prompt-1", "prompt", "textarea", {"text": [target.word]})
        ]
        regions = interactive(
            label_studio.client, ml["id"], task_id, context, readme_backend
        )
        check_rectangles(regions, "label", README_DETECTION_LABELS)
        label = LABEL_OF_WORD[target.word]
        assert all(r["value"]["rectanglelabels"] == [label] for r in regions), regions
        asked += 1
        if any(box_iou(box_pixels(r["value"]), target.box) >= IOU_HIT for r in regions):
            hits += 1
    assert asked and hits >= MIN_DETECTION_HITS * asked, (hits, asked)


def test_rectangles_drawn_box_is_a_visual_prompt(
    label_studio: LabelStudio, readme_backend: Backend, rectangles
) -> None:
    """A box drawn with the smart RectangleLabels on one of two look-alike
    cars reaches the backend as a rectanglelabels context (visual prompting):
    the other car is suggested with the drawn box's label, and the drawn box
    itself is not suggested back (what overlaps it ``DRAWN_BOX_IOU`` or more
    is dropped as already drawn)."""
    project, ml = rectangles
    task_id, scene = next(
        (t, s)
        for t, s in project.scenes.items()
        if [o.word for o in s.objects] == ["car", "car"]
    )
    prompt_car, other_car = scene.objects
    drawn = {**_box_percent(prompt_car.box), "rectanglelabels": ["car"]}
    context = [_context_item("drawn-1", "label", "rectanglelabels", drawn)]
    regions = interactive(
        label_studio.client, ml["id"], task_id, context, readme_backend
    )
    check_rectangles(regions, "label", README_DETECTION_LABELS)
    boxes = [box_pixels(r["value"]) for r in regions]
    assert all(r["value"]["rectanglelabels"] == ["car"] for r in regions), regions
    assert any(box_iou(b, other_car.box) >= IOU_HIT for b in boxes), (boxes, scene)
    assert all(box_iou(b, prompt_car.box) < DRAWN_BOX_IOU for b in boxes), boxes


# -- keypoints and OCR: protocol path on tasks the model was not trained for ----
def test_keypoints_retrieve_predictions_are_well_formed_points(
    label_studio: LabelStudio, rexlabel_backend: Backend, tmp_path: Path
) -> None:
    """A KeyPointLabels project is served as pointing. Proves: registration,
    one stored prediction per task with the model's version (also on a second
    press), and that every point Label Studio stored is a keypointlabels
    result with a config label inside the image; the count of points is the
    untrained-for model's business and is not asserted."""
    client = label_studio.client
    project = make_project(client, "keypoints", "keypoints", tmp_path, seed=2)
    ml = connect(client, project, rexlabel_backend, "rexlabel keypoints")
    stored = retrieve(client, project, rexlabel_backend, ml["model_version"])
    for region in stored_regions(stored, "kp", "keypointlabels", project.labels):
        value = region["value"]
        assert _in_percent(value["x"], value["y"]) and value["width"] > 0, value


def test_ocr_regions_tie_text_to_their_box(
    label_studio: LabelStudio, rexlabel_backend: Backend, tmp_path: Path
) -> None:
    """Label Studio's OCR template (Rectangle + Labels + per-region TextArea) is
    served as ocr_box. Proves the protocol path as above, and that every
    region Label Studio stored is the stock OCR triple sharing one id: a
    rectangle, its label from the Labels tag, and its transcription with the
    same geometry (the id is what ties text to its box in the UI)."""
    client = label_studio.client
    project = make_project(client, "ocr", "ocr", tmp_path, seed=3)
    ml = connect(client, project, rexlabel_backend, "rexlabel ocr")
    stored = retrieve(client, project, rexlabel_backend, ml["model_version"])
    for prediction in stored.values():
        by_id: dict[str, dict[str, dict[str, Any]]] = {}
        for region in prediction["result"]:
            by_id.setdefault(region["id"], {})[region["type"]] = region
        for region_id, parts in by_id.items():
            assert set(parts) <= {"rectangle", "labels", "textarea"}, parts
            assert {"rectangle", "textarea"} <= set(parts), (region_id, parts)
            box, text = parts["rectangle"], parts["textarea"]
            check_region_common(box, "bbox", "rectangle")
            check_region_common(text, "transcription", "textarea")
            geometry = ("x", "y", "width", "height")
            assert [box["value"][k] for k in geometry] == [
                text["value"][k] for k in geometry
            ]
            assert _in_percent(box["value"]["x"], box["value"]["y"])
            assert isinstance(text["value"]["text"], list) and all(
                isinstance(t, str) for t in text["value"]["text"]
            )
            if "labels" in parts:
                check_region_common(parts["labels"], "label", "labels")
                assert set(parts["labels"]["value"]["labels"]) <= {
                    "Text",
                    "Handwriting",
                }


# -- SAM: polygons and brush masks through Redis + a worker, PAT auth -----------
def test_polygons_from_sam_through_the_queue(
    label_studio: LabelStudio, rexlabel_backend_queue: Backend, tmp_path: Path
) -> None:
    """A PolygonLabels project on the queued backend (personal access token,
    Redis, a separate worker with SAM): one prediction per task, polygons with
    config labels and at least 3 points inside the image. The labels come from
    the trained detector, so most images must carry the shape's label."""
    client = label_studio.client
    project = make_project(
        client, "polygons", "polygons", tmp_path, seed=4, labels=GREEN
    )
    ml = connect(client, project, rexlabel_backend_queue, "rexlabel polygons (PAT)")
    stored = retrieve(client, project, rexlabel_backend_queue, ml["model_version"])
    for region in stored_regions(stored, "poly", "polygonlabels", project.labels):
        value = region["value"]
        assert len(value["points"]) >= 3, value
        assert all(_in_percent(x, y) for x, y in value["points"]), value
    labelled = images_labelled(stored, project, "polygonlabels")
    assert labelled >= MIN_DETECTION_HITS * len(project.tasks), (labelled, stored)


def _decoded_mask(region: dict[str, Any]) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    flat = np.asarray(decode_rle(region["value"]["rle"]))
    assert flat.size == IMAGE_SIZE * IMAGE_SIZE * 4, flat.size
    return flat.reshape(IMAGE_SIZE, IMAGE_SIZE, 4)[:, :, 3]


def test_brush_masks_from_sam_and_clicks(
    label_studio: LabelStudio, rexlabel_backend_queue: Backend, tmp_path: Path
) -> None:
    """A BrushLabels project on the queued backend: stored brush results are
    Label Studio RLE that decodes to exactly the image's size (112x112 RGBA)
    with a non-empty mask and a config label. Then a smart keypoint click
    (KeyPointLabels smartOnly, Auto-Annotation) reaches the backend as a SAM
    point prompt, and any suggested mask goes to the brush control with the
    clicked label, decoding to the image's size."""
    client = label_studio.client
    project = make_project(client, "brush", "brush", tmp_path, seed=5, labels=BLUE)
    ml = connect(client, project, rexlabel_backend_queue, "rexlabel brush (PAT)")
    stored = retrieve(client, project, rexlabel_backend_queue, ml["model_version"])
    for region in stored_regions(stored, "brush", "brushlabels", project.labels):
        assert region["value"]["format"] == "rle"
        assert _decoded_mask(region).any(), region["id"]
    labelled = images_labelled(stored, project, "brushlabels")

    task_id, sample = next(iter(project.tasks.items()))
    x, y = _center_percent(sample)
    click = {"x": x, "y": y, "width": 0.6, "keypointlabels": [sample.phrase]}
    context = [
        {
            **_context_item("click-1", "clicks", "keypointlabels", click),
            "is_positive": True,
        }
    ]
    regions = interactive(client, ml["id"], task_id, context, rexlabel_backend_queue)
    for region in regions:
        check_region_common(region, "brush", "brushlabels")
        assert region["value"]["brushlabels"] == [sample.phrase]
        _decoded_mask(region)
    assert labelled >= MIN_DETECTION_HITS * len(project.tasks), labelled


# -- bulk pre-labeling of a project -------------------------------------------
def test_prelabel_project_gives_each_task_one_prediction_once(
    label_studio: LabelStudio, rexlabel_backend: Backend, tmp_path: Path
) -> None:
    """``rexlabel prelabel --project ID`` posts exactly one prediction to every
    task of the project (and to no other project's task); running it again
    adds none (tasks that hold this model version are skipped)."""
    client = label_studio.client
    project = make_project(
        client, "prelabel", "rectangles", tmp_path / "images", seed=6, labels=GREEN
    )
    other = make_project(
        client, "prelabel-other", "rectangles", tmp_path / "other", seed=7
    )
    env = dict(rexlabel_backend.env)
    env["REXLABEL_JOBS_DIR"] = str(tmp_path / "jobs")

    def run() -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(REXLABEL_EXECUTABLE), "prelabel", "--project", str(project.id)],
            env=env,
            capture_output=True,
            text=True,
            timeout=PRELABEL_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    run()
    stored = predictions_by_task(client, project)
    versions = {p["model_version"] for p in stored.values()}
    assert len(versions) == 1 and versions != {""}, versions
    for prediction in stored.values():
        check_rectangles(prediction["result"], "label", project.labels)
    assert client.predictions(other.id) == []
    run()
    again = predictions_by_task(client, project)
    assert {p["id"] for p in again.values()} == {p["id"] for p in stored.values()}
    hits = best_box_hits(stored, project, "label")
    assert hits >= MIN_DETECTION_HITS * len(project.tasks), hits


BACKGROUND_WAIT_S = 300.0
"""A background job posts the predictions of a large "Retrieve Predictions"
as its chunks finish: a few seconds here, bounded generously for CI."""


def test_large_retrieve_becomes_a_background_job_that_posts_predictions(
    label_studio: LabelStudio, rexlabel_backend: Backend, tmp_path: Path
) -> None:
    """More tasks than REXLABEL_SYNC_TASK_LIMIT in one "Retrieve Predictions"
    cannot be answered within Label Studio's 100 s: the backend replies at once
    and a background job posts the predictions through Label Studio's API.
    Proves: every task gets exactly one prediction, with the model version
    Label Studio knows from /setup (so a second press finds nothing to do and
    adds none)."""
    from common.settings import setting

    count = int(setting("REXLABEL_SYNC_TASK_LIMIT").default) + 1
    client = label_studio.client
    project = make_project(
        client, "background", "rectangles", tmp_path, seed=8, count=count, labels=BLUE
    )
    ml = connect(client, project, rexlabel_backend, "rexlabel (background)")
    client.retrieve_predictions(project.id)
    deadline = time.monotonic() + BACKGROUND_WAIT_S
    while len({p["task"] for p in client.predictions(project.id)}) < count:
        assert time.monotonic() < deadline, rexlabel_backend.logs()
        time.sleep(1.0)
    stored = predictions_by_task(client, project)
    for prediction in stored.values():
        assert prediction["model_version"] == ml["model_version"]
        check_rectangles(prediction["result"], "label", project.labels)
    client.retrieve_predictions(project.id)
    time.sleep(2.0)  # a wrongly started second job would post within seconds
    again = predictions_by_task(client, project)
    assert {p["id"] for p in again.values()} == {p["id"] for p in stored.values()}
    hits = best_box_hits(stored, project, "label")
    assert hits >= MIN_DETECTION_HITS * count, hits
