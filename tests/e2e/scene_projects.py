"""Label Studio projects of drawn scenes, for tests on the README model.

The README model (``worker.training.readme_model``) learnt the README
configs' labels on drawn stand-ins (``worker.training.objects``): a person,
a car, a truck, a cat and a dog. These helpers draw such scenes the way its
training did (``readme_tasks.render_scene``: the same sizes, background and
position code), upload them to a project of a README config, and compare
what Label Studio stored with what was drawn.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.lsclient import LabelStudioClient
from worker.training.readme_tasks import Scene, best_match, fitting_scene

README = Path(__file__).resolve().parents[2] / "README.md"

HIT_IOU = 0.5
"""A stored region finds a drawn object at this box IoU (COCO's AP50)."""


def readme_config(heading: str) -> str:
    """The README's XML block after the bold ``heading``, as written."""
    found = re.search(
        rf"\*\*{re.escape(heading)}\*\*.*?```xml\n(.*?)```", README.read_text(), re.S
    )
    assert found, f"README.md has no **{heading}** config"
    return found.group(1)


def scenes(seed: int, word_lists: Iterable[Sequence[str]]) -> list[Scene]:
    """One drawn scene per list of words (a word may repeat; words that do
    not fit are dropped from the end), seeded."""
    rng = random.Random(seed)
    return [fitting_scene(rng, list(words)) for words in word_lists]


@dataclass
class SceneProject:
    """A project whose tasks show drawn scenes (it serves where the helpers
    of ``tests.e2e.test_labelstudio_e2e`` take a ``Project``: ``id`` and
    ``tasks``)."""

    id: int
    scenes: dict[int, Scene]
    """task id -> the scene its image shows."""

    @property
    def tasks(self) -> dict[int, Scene]:
        return self.scenes


def scene_project(
    client: LabelStudioClient,
    title: str,
    config: str,
    folder: Path,
    drawn: Sequence[Scene],
) -> SceneProject:
    """A project of ``config`` with one uploaded image per scene of ``drawn``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"\W+", "_", title)
    by_name = {}
    for index, scene in enumerate(drawn):
        name = f"{stem}_{index:02d}.png"
        scene.image.save(folder / name)
        by_name[name] = scene
    project = client.create_project(title, config)
    report = client.import_files(project["id"], [folder / n for n in by_name])
    assert report["task_count"] == len(drawn), report
    tasks = {
        t["id"]: by_name[t["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]]
        for t in client.tasks(project["id"])
    }
    assert len(tasks) == len(drawn), tasks
    return SceneProject(project["id"], tasks)


def region_box(result: dict[str, Any]) -> tuple[float, float, float, float]:
    """A stored region's box, xyxy in pixels of its image (Label Studio keeps
    percent of ``original_width``/``original_height``)."""
    value = result["value"]
    width, height = result["original_width"], result["original_height"]
    x0 = value["x"] / 100 * width
    y0 = value["y"] / 100 * height
    return (
        x0,
        y0,
        x0 + value["width"] / 100 * width,
        y0 + value["height"] / 100 * height,
    )


def region_label(result: dict[str, Any]) -> str:
    """The one label a stored region carries (any ``*labels`` value)."""
    (labels,) = [v for k, v in result["value"].items() if k.endswith("labels")]
    (label,) = labels
    return label


@dataclass
class LabelHits:
    """Stored boxes against drawn objects."""

    regions: int = 0
    hits: int = 0
    """Regions on a drawn object (IoU >= HIT_IOU)."""
    right: int = 0
    """Of the hits, those labelled as the object should be."""
    objects: int = 0
    found: int = 0
    """Drawn objects with a hit that carries their label."""
    wrong: list[tuple[str, str]] | None = None
    """(expected, stored) labels of the hits that are wrong."""

    @property
    def right_share(self) -> float:
        return self.right / self.hits if self.hits else 0.0

    @property
    def found_share(self) -> float:
        return self.found / self.objects if self.objects else 0.0


def label_hits(
    stored: dict[int, dict[str, Any]],
    project: SceneProject,
    label_of: dict[str, str],
    region_type: str = "rectanglelabels",
) -> LabelHits:
    """Compare each task's stored ``region_type`` results with its scene.

    ``label_of`` maps a drawn word to the label the config should give it
    (``truck`` -> ``car`` where ``car`` has ``predicted_values="car,truck"``);
    drawn words not in it are objects nobody asked for and are not counted
    as missed."""
    tally = LabelHits(wrong=[])
    for task_id, prediction in stored.items():
        scene = project.scenes[task_id]
        boxes = [o.box for o in scene.objects]
        results = [r for r in prediction["result"] if r["type"] == region_type]
        found = set()
        for result in results:
            tally.regions += 1
            index, iou = best_match(region_box(result), boxes)
            if index is None or iou < HIT_IOU:
                continue
            tally.hits += 1
            expected = label_of.get(scene.objects[index].word)
            if region_label(result) == expected:
                tally.right += 1
                found.add(index)
            else:
                tally.wrong.append((str(expected), region_label(result)))
        asked = [i for i, o in enumerate(scene.objects) if o.word in label_of]
        tally.objects += len(asked)
        tally.found += len(found & set(asked))
    return tally


def drawn_labels(
    stored: dict[int, dict[str, Any]],
    project: SceneProject,
    region_type: str,
) -> tuple[int, int]:
    """For regions without a box (brush masks): how many stored
    ``region_type`` results there are, and how many carry a label whose word
    is drawn on their task's image."""
    regions = right = 0
    for task_id, prediction in stored.items():
        words = {o.word for o in project.scenes[task_id].objects}
        for result in prediction["result"]:
            if result["type"] == region_type:
                regions += 1
                right += region_label(result) in words
    return regions, right
