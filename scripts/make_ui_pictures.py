"""Screenshots of Label Studio's labeling UI showing rexlabel's predictions,
for the README.

Usage::

    python scripts/make_ui_pictures.py MODEL_DIR [--out docs/images]

MODEL_DIR is the README model (``rexlabel make-test-model DIR --recipe
readme``, or the tests' cache ``.cache/test-models/readme-model-*``). The
script starts what the browser tests start (tests/e2e/conftest.py,
tests/ui): a Label Studio 1.23.2 from ``.venv-ls`` on a free port with a
throw-away data dir, and ``rexlabel serve`` twice: on MODEL_DIR with a tiny
random SAM (detection and masks), and on the scripted Rex-Omni of
tests/ui/scripted_rexomni.py (OCR: no tiny model reads text). For each it
makes a project with the README's config as written, on drawn scenes the
README model knows, presses "Retrieve Predictions" in the Data Manager,
opens the first task with a prediction in Debian's chromium and saves the
labeling page:

- ``labelstudio-detection.png``: the README model's boxes on a person, a car
  and a truck (labelled ``car``), labels and scores;
- ``labelstudio-ocr.png``: the README's OCR config, each line's text in its
  region's text box;
- ``labelstudio-masks.png``: brush masks of a cat and a dog (the tiny SAM's
  random weights make their shapes meaningless: the picture shows where a
  mask appears, not a good one).

Nothing is downloaded; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser import launch_chromium, missing_reason
from tests.e2e.conftest import (
    LS_DATA_TEMPLATE,
    LS_DATA_TEMPLATE_STAMP,
    LS_EXECUTABLE,
    LS_PASSWORD,
    LS_USERNAME,
    Backend,
    LabelStudio,
    start_backend,
    start_label_studio,
)
from tests.e2e.scene_projects import SceneProject, readme_config, scene_project, scenes
from tests.e2e.test_labelstudio_e2e import Project, connect, predictions_by_task
from tests.ui.labelstudio_ui import LabelStudioUI, expected_rows
from tests.ui.projects import picture_project, sign_image
from tests.ui.scripted_rexomni import MODEL_ID, ScriptedRexOmni

VIEWPORT = {"width": 1280, "height": 760}
"""The labeling page with its image, label buttons and regions panel."""

SCENES = {
    "detection": (("person", "car", "truck"),),
    "masks": (("cat", "dog"),),
}
"""What each picture's image shows (drawn as the README model learnt them)."""
SCENE_SEED = 7

MAX_BYTES = 200_000
"""Each picture stays under this size in the repository; colours are reduced
until it does."""


def shrink(path: Path) -> None:
    """Fewer colours until the PNG is under :data:`MAX_BYTES`."""
    for colours in (None, 256, 128, 64):
        if colours is not None:
            picture = Image.open(path).convert("RGB")
            picture.quantize(colours, dither=Image.Dither.NONE).save(
                path, optimize=True
            )
        if path.stat().st_size <= MAX_BYTES:
            return
    raise SystemExit(f"{path}: still {path.stat().st_size} bytes")


def picture(
    ui: LabelStudioUI, ls: LabelStudio, project: Project | SceneProject, out: Path
) -> None:
    """Retrieve Predictions in the UI, open the first task with regions, save
    the page as ``out``."""
    ui.retrieve_predictions(project.id, len(project.tasks))
    stored = predictions_by_task(ls.client, project)
    for task_id, prediction in stored.items():
        if prediction["result"]:
            rows = expected_rows(prediction["result"])
            ui.open_task(project.id, task_id, regions=len(rows))
            ui.page.screenshot(path=str(out))
            shrink(out)
            size = Image.open(out).size
            print(f"{out}: {size[0]}x{size[1]}, {out.stat().st_size:,} bytes")
            return
    raise SystemExit(f"{out.name}: no task of project {project.id} has a region")


def make_pictures(model_dir: Path, out_dir: Path, work: Path) -> None:
    data_dir = work / "label-studio"
    if LS_DATA_TEMPLATE_STAMP.exists():
        shutil.copytree(LS_DATA_TEMPLATE, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (work / "files").mkdir()
    ls = start_label_studio(data_dir, work / "files", work / "logs")
    backends: list[Backend] = []
    try:
        with ScriptedRexOmni() as scripted, launch_chromium() as browser:
            detector = start_backend(
                ls, model_dir, work / "logs", name="README model", tiny_sam=True
            )
            backends.append(detector)
            reader = start_backend(
                ls,
                MODEL_ID,
                work / "logs",
                extra_env={
                    "REXLABEL_ENGINE": "openai",
                    "REXLABEL_OPENAI_URL": scripted.url,
                },
                name="scripted",
            )
            backends.append(reader)
            context = browser.new_context(viewport=VIEWPORT)
            ui = LabelStudioUI(context.new_page(), ls.url, work)
            ui.login(LS_USERNAME, LS_PASSWORD)
            client = ls.client
            jobs = (
                ("detection", "Detection, with smart boxes and a text prompt"),
                ("masks", "Masks"),
            )
            for name, heading in jobs:
                project = scene_project(
                    client,
                    name,
                    readme_config(heading),
                    work / name,
                    scenes(SCENE_SEED, SCENES[name]),
                )
                connect(client, project, detector, "rexlabel")
                picture(ui, ls, project, out_dir / f"labelstudio-{name}.png")
            project = picture_project(
                client,
                "ocr",
                readme_config("OCR with per-region text"),
                sign_image(),
                work / "ocr",
                1,
            )
            connect(client, project, reader, "rexlabel")
            picture(ui, ls, project, out_dir / "labelstudio-ocr.png")
            assert ui.unexpected_errors() == [], ui.unexpected_errors()
            context.close()
    finally:
        for backend in backends:
            backend.stop()
        ls.process.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="the README model")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    if not LS_EXECUTABLE.exists():
        raise SystemExit(
            f"{LS_EXECUTABLE} missing: run scripts/setup-labelstudio-venv.sh"
        )
    if not (args.model_dir / "config.json").exists():
        raise SystemExit(f"{args.model_dir} is not a model directory (no config.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rexlabel-ui-pictures-") as work:
        make_pictures(args.model_dir.resolve(), args.out, Path(work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
