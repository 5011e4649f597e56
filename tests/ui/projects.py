"""Projects and pictures for the browser tests (and scripts/make_ui_pictures.py).

The pictures match the scripted Rex-Omni's answers
(tests/ui/scripted_rexomni.py): its text lines are written where it reads
them, its people drawn where it finds them, so a
screenshot makes sense to a reader.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tests.e2e.lsclient import LabelStudioClient
from tests.e2e.test_labelstudio_e2e import Project
from tests.ui.scripted_rexomni import KEYPOINT_PEOPLE, OCR_LINES

PICTURE_SIZE = (320, 240)
"""Width, height of the pictures (any size works: the scripted answers are in
bins of the image's sides)."""

SIGN_FONT_PX = 18
"""Letters of the sign picture: readable at the labeling page's zoom."""

BIN_MAX = 999
"""Rex-Omni's coordinate bins run 0..999 over each side."""


def bins_to_pixels(box: tuple[int, ...]) -> tuple[float, ...]:
    """A box in bins as x0, y0, x1, y1 pixels of a :data:`PICTURE_SIZE` image."""
    width, height = PICTURE_SIZE
    x0, y0, x1, y1 = box
    return (
        x0 / BIN_MAX * width,
        y0 / BIN_MAX * height,
        x1 / BIN_MAX * width,
        y1 / BIN_MAX * height,
    )


def sign_image() -> Image.Image:
    """White signs on a dark wall, the scripted OCR answer's lines written on
    them in black where the answer reads them."""
    image = Image.new("RGB", PICTURE_SIZE, (70, 80, 90))
    draw = ImageDraw.Draw(image)
    for text, box in OCR_LINES.items():
        x0, y0, x1, y1 = bins_to_pixels(box)
        draw.rectangle((x0 - 4, y0 - 4, x1 + 4, y1 + 4), fill=(245, 245, 240))
        font = ImageFont.load_default(size=SIGN_FONT_PX)
        draw.text(
            ((x0 + x1) / 2, (y0 + y1) / 2), text, fill="black", font=font, anchor="mm"
        )
    return image


def people_image() -> Image.Image:
    """Two figures where the scripted keypoint answer puts its two people."""
    image = Image.new("RGB", PICTURE_SIZE, (210, 210, 210))
    draw = ImageDraw.Draw(image)
    for box, colour in zip(
        KEYPOINT_PEOPLE, ((80, 110, 190), (190, 110, 80)), strict=True
    ):
        draw.rectangle(bins_to_pixels(box), fill=colour)
    return image


def picture_project(
    client: LabelStudioClient,
    title: str,
    config: str,
    image: Image.Image,
    folder: Path,
    count: int,
) -> Project:
    """A project of ``config`` with ``count`` copies of ``image`` uploaded."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"\W+", "_", title)
    paths = []
    for index in range(count):
        paths.append(folder / f"{stem}_{index}.png")
        image.save(paths[-1])
    project = client.create_project(title, config)
    report = client.import_files(project["id"], paths)
    assert report["task_count"] == count, report
    tasks = {t["id"]: None for t in client.tasks(project["id"])}
    return Project(project["id"], folder, {}, tasks, ())


def without_preannotation(client: LabelStudioClient, project_id: int) -> None:
    """Settings -> Annotation: "Use predictions to prelabel tasks" off. Label
    Studio then neither shows predictions nor asks the model for them when a
    task opens: the interactive tests start from an empty task, so the
    context holds only what the test drew or typed."""
    client.request(
        "PATCH", f"/api/projects/{project_id}", json={"show_collab_predictions": False}
    )
