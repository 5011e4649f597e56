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
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.lsclient import LabelStudioClient
from worker.training.readme_tasks import Scene, best_match, render_scene

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


SCENE_DRAWS = 100
"""Tries at drawing a scene's words apart before a test's scene list is
called wrong (a 112 px image holds three objects with room to spare)."""


def scenes(seed: int, word_lists: Iterable[Sequence[str]]) -> list[Scene]:
    """One drawn scene per list of words (a word may repeat), seeded; every
    word is drawn (ValueError when a list does not fit in SCENE_DRAWS tries)."""
    rng = random.Random(seed)
    drawn = []
    for words in word_lists:
        for _ in range(SCENE_DRAWS):
            try:
                drawn.append(render_scene(rng, list(words)))
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"{list(words)} do not fit on one image")
    return drawn


def upload_name(task: dict[str, Any]) -> str:
    """The file name a task's image was uploaded as:
    ``/data/upload/3/1a2b3c4d-scene_00.png`` -> ``scene_00.png``."""
    return task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]


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
    tasks = {t["id"]: by_name[upload_name(t)] for t in client.tasks(project["id"])}
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
    def on_object_share(self) -> float:
        """Of the regions, the share on a drawn object (the rest: stray)."""
        return self.hits / self.regions if self.regions else 0.0

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


@dataclass
class MaskLabels:
    """Stored regions without a box (brush masks) against what is drawn."""

    regions: int = 0
    excess: int = 0
    """Regions beyond one per drawn object of their label (a label not drawn
    on the image: all of its regions)."""
    details: list[str] | None = None

    @property
    def right(self) -> int:
        """Regions that an object of their label on their image accounts for."""
        return self.regions - self.excess


def mask_labels(
    stored: dict[int, dict[str, Any]], project: SceneProject, region_type: str
) -> MaskLabels:
    """Count the stored ``region_type`` results per task and label against
    the objects of that word drawn on the task's image."""
    tally = MaskLabels(details=[])
    for task_id, prediction in stored.items():
        drawn = Counter(o.word for o in project.scenes[task_id].objects)
        labels = Counter(
            region_label(r) for r in prediction["result"] if r["type"] == region_type
        )
        tally.regions += sum(labels.values())
        for label, count in labels.items():
            if count > drawn[label]:
                tally.excess += count - drawn[label]
                tally.details.append(
                    f"task {task_id}: {count} {label} (drawn: {drawn[label]})"
                )
    return tally
