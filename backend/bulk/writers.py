"""Where finished chunks go, and the outputs built from them.

- :class:`FilesSink`: file jobs. Nothing to send per chunk (the part file is
  the result); at the end the parts are merged, streaming, into the COCO file
  (:class:`CocoStreamWriter`), the raw JSONL and optional previews.
- :class:`LabelStudioSink`: project jobs. Each task's prediction is posted to
  Label Studio as its chunk finishes, once per task and ``model_version``: a
  chunk delivered twice (a crash or a Redis error between posting and
  recording) or retried never posts a task twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backend.bulk.records import JobSpec
from backend.bulk.store import DeliveryLog, JobDir
from converters.coco import CocoCategory, CocoImage, fill_keypoints, to_coco
from converters.prediction import Prediction, predictions_from_dicts

log = logging.getLogger(__name__)

COPY_BUFFER_BYTES = 1 << 20
"""Block size when stitching the COCO file together from its temporary pieces."""


def _category_from_json(entry: Mapping[str, Any]) -> CocoCategory:
    joints = entry.get("keypoints")
    if joints is None:
        return CocoCategory(entry["name"], supercategory=entry.get("supercategory", ""))
    skeleton = tuple(
        (joints[a - 1], joints[b - 1]) for a, b in entry.get("skeleton") or []
    )
    return CocoCategory(
        entry["name"], tuple(joints), skeleton, entry.get("supercategory", "")
    )


class CocoStreamWriter:
    """Writes a COCO file image by image: memory stays flat with the image count.

    Images and annotations go to two temporary files as they come; ``close``
    joins them with the categories into ``path`` (temporary name, then rename).
    Category ids are 1-based in the order of ``categories``; labels that are
    not among them are appended as they appear. Ids of images and annotations
    run from 1.
    """

    def __init__(
        self,
        path: str | Path,
        categories: Iterable[Any] = (),
        *,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.info = dict(info or {})
        self._categories: list[Any] = list(categories)
        self._dir = Path(tempfile.mkdtemp(prefix=".coco-", dir=self.path.parent))
        self._images = open(self._dir / "images", "w", encoding="utf-8")
        self._annotations = open(self._dir / "annotations", "w", encoding="utf-8")
        self.image_count = 0
        self.annotation_count = 0

    def add(
        self,
        file_name: str,
        width: int,
        height: int,
        predictions: list[Prediction],
        **extra: Any,
    ) -> int:
        """Add one image and its predictions; returns its COCO id. ``extra``
        keys (``task_id``...) are kept on the image entry."""
        image_id = self.image_count + 1
        dataset = to_coco(
            [CocoImage(file_name, int(width), int(height), predictions, id=image_id)],
            self._categories,
            add_unknown=True,
        )
        self._categories = [_category_from_json(c) for c in dataset["categories"]]
        image = dataset["images"][0]
        image.update({k: v for k, v in extra.items() if v is not None})
        self._write(self._images, image, self.image_count)
        for ann in dataset["annotations"]:
            ann["id"] = self.annotation_count + 1
            # one a line: close() completes those a later image's category changed
            self._annotations.write(json.dumps(ann, ensure_ascii=False) + "\n")
            self.annotation_count += 1
        self.image_count += 1
        return image_id

    @staticmethod
    def _write(handle: Any, item: dict[str, Any], count: int) -> None:
        handle.write(("," if count else "") + json.dumps(item, ensure_ascii=False))

    def categories_json(self) -> list[dict[str, Any]]:
        return to_coco([], self._categories)["categories"]

    def close(self) -> Path:
        """Write the file; returns its path."""
        self._images.close()
        self._annotations.close()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                out.write('{"info": ' + json.dumps(self.info, ensure_ascii=False))
                out.write(', "images": [')
                with open(self._dir / "images", encoding="utf-8") as part:
                    shutil.copyfileobj(part, out, COPY_BUFFER_BYTES)
                out.write('], "annotations": [')
                categories = self.categories_json()
                self._copy_annotations(out, categories)
                out.write('], "categories": ')
                out.write(json.dumps(categories, ensure_ascii=False))
                out.write("}\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(self._dir, ignore_errors=True)
        return self.path

    def _copy_annotations(self, out: Any, categories: list[dict[str, Any]]) -> None:
        """The annotations, one at a time, each completed for the final
        categories: a person box written before any person instance named its
        joints still gets ``keypoints`` and ``num_keypoints`` (COCOeval reads
        them from every annotation of a keypoint category)."""
        with open(self._dir / "annotations", encoding="utf-8") as part:
            if not any("keypoints" in c for c in categories):  # nothing to fill
                for count, line in enumerate(part):
                    out.write(("," if count else "") + line.rstrip("\n"))
                return
            for count, line in enumerate(part):
                ann = json.loads(line)
                fill_keypoints([ann], categories)
                self._write(out, ann, count)

    def abort(self) -> None:
        self._images.close()
        self._annotations.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def line_predictions(line: Mapping[str, Any]) -> list[Prediction]:
    """Every prediction of one recorded image (all its calls), in call order."""
    found: list[Prediction] = []
    for call in line.get("calls") or []:
        found.extend(predictions_from_dicts(call.get("predictions") or []))
    return found


def categories_of_calls(calls: Iterable[Mapping[str, Any]]) -> list[str]:
    """COCO categories to list first: the phrases asked, in order, once each."""
    seen: list[str] = []
    for call in calls:
        for name in call.get("categories") or []:
            if name not in seen:
                seen.append(name)
    return seen


class FilesSink:
    """File jobs: outputs are built from the part files at the end."""

    def deliver(self, spec: JobSpec, chunk: int, lines: list[dict[str, Any]]) -> None:
        return None  # nothing to send per chunk: the part file is the result

    def finish(self, job: JobDir, spec: JobSpec) -> dict[str, Any]:
        return write_file_outputs(job, spec)


def write_file_outputs(job: JobDir, spec: JobSpec) -> dict[str, Any]:
    """Merge the parts into the COCO file, the raw JSONL and the previews.

    Failed and skipped images are left out of the COCO file (they are listed
    in the JSONL with their ``error`` or ``reason``). Streaming: one part in
    memory at a time.
    """
    outputs = spec.outputs
    written: dict[str, Any] = {}
    coco = (
        CocoStreamWriter(
            outputs["coco"],
            categories_of_calls(spec.calls),
            info={
                "description": f"rexlabel job {spec.id}",
                "model_version": spec.model_version,
            },
        )
        if outputs.get("coco")
        else None
    )
    raw_path = Path(outputs["raw"]) if outputs.get("raw") else None
    raw_tmp = raw_path.with_name(f".{raw_path.name}.tmp") if raw_path else None
    raw = open(raw_tmp, "w", encoding="utf-8") if raw_tmp else None
    drawer = _Previews(outputs["draw"]) if outputs.get("draw") else None
    try:
        for line in job.iter_results():
            if raw is not None:
                raw.write(json.dumps(line, ensure_ascii=False) + "\n")
            if line.get("error") or line.get("status") == "skipped":
                continue  # not labeled: no COCO image (listed in the JSONL)
            predictions = line_predictions(line)
            if coco is not None:
                coco.add(
                    line["image"],
                    line["width"],
                    line["height"],
                    predictions,
                    task_id=line.get("task_id"),
                )
            if drawer is not None:
                drawer.draw(line, predictions)
    except BaseException:
        if coco is not None:
            coco.abort()
        if raw is not None:
            raw.close()
            raw_tmp.unlink(missing_ok=True)
        raise
    if coco is not None:
        written["coco"] = str(coco.close())
    if raw is not None:
        raw.close()
        os.replace(raw_tmp, raw_path)
        written["raw"] = str(raw_path)
    if drawer is not None:
        written["draw"] = str(drawer.folder)
        written["drawn"] = drawer.count
    return written


class _Previews:
    """Annotated copies of the images (``converters.draw``) in one folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def draw(self, line: Mapping[str, Any], predictions: list[Prediction]) -> None:
        from common.images.loader import load_image
        from converters.draw import draw

        # previews exist only for files jobs: the command line's own images
        image = load_image(line["image"], task_id=line.get("task_id"), local_paths=True)
        drawn = draw(image, predictions)
        name = f"{int(line['id']) if str(line['id']).isdigit() else line['id']}"
        stem = Path(str(line["image"]).split("?", 1)[0]).stem or "image"
        target = self.folder / f"{name}_{stem}.jpg".replace("/", "_")
        drawn.convert("RGB").save(target, quality=90)
        self.count += 1


# Label Studio ---------------------------------------------------------------------


class LabelStudioSink:
    """Posts one prediction per task to Label Studio as chunks finish.

    Idempotent per task and model version, across runs, retries and jobs:

    - a task in the job's :class:`~backend.bulk.store.DeliveryLog` is not
      posted again (a chunk delivered twice: the run stopped, or Redis failed,
      after posting); the log is synced before the runner writes the part;
    - any other task is first looked up in Label Studio and skipped when it
      holds a prediction of this model version already (another job, a
      ``--retry-failed`` round, a POST stored after its answer was lost);
    - :meth:`LabelStudioClient.create_prediction` never repeats a POST blindly.
    """

    def __init__(self, client: Any, job: JobDir) -> None:
        self.client = client
        self.job = job
        self._plan: Any = None
        self._log: DeliveryLog | None = None

    def plan(self, spec: JobSpec) -> Any:
        if self._plan is None:
            from backend.planner import plan_config

            self._plan = plan_config(
                spec.project["label_config"], spec.project.get("extra_params") or {}
            )
        return self._plan

    @property
    def deliveries(self) -> DeliveryLog:
        if self._log is None:
            self._log = self.job.delivery_log()
        return self._log

    def deliver(self, spec: JobSpec, chunk: int, lines: list[dict[str, Any]]) -> None:
        """Post the prediction of each task of the chunk that has none yet."""
        by_task: dict[Any, list[dict[str, Any]]] = {}
        for line in lines:
            by_task.setdefault(line.get("task_id"), []).append(line)
        try:
            for task_id, task_lines in by_task.items():
                if task_id is None:
                    _fail(task_lines, "line has no task id")
                elif any(line.get("error") for line in task_lines):
                    continue  # not posted: --retry-failed runs it again
                elif self.deliveries.stored(task_id):
                    _mark(task_lines, "posted", self.deliveries.prediction_id(task_id))
                else:
                    self._deliver_task(spec, task_id, task_lines)
        finally:
            self.deliveries.sync()

    def _deliver_task(
        self, spec: JobSpec, task_id: Any, lines: list[dict[str, Any]]
    ) -> None:
        from backend.predictions import RegionIds, task_prediction
        from common.jobspec import ImageResult
        from common.labelstudio.api import LabelStudioAPIError

        mv = spec.model_version
        # Ask Label Studio first unless the job planned this task as lacking
        # our prediction and nothing has been posted for it since: a retry
        # round, tasks that came unfiltered (/predict, webhooks), or an earlier
        # POST of this task whose outcome the log does not hold.
        check = (
            spec.retry_round > 0
            or not spec.project.get("filtered")
            or self.deliveries.attempted(task_id)
        )
        try:
            existing = self.client.find_prediction(task_id, mv) if check else None
            if existing is not None:
                self.deliveries.record_stored(task_id, existing.get("id"))
                _mark(lines, "skipped", existing.get("id"))
                return
            outcome = task_prediction(
                self.plan(spec),
                [ImageResult.from_dict(x) for x in lines],
                mv,
                RegionIds.for_task({"id": task_id}, mv),
            )
            if outcome.failed:  # never an empty prediction: retried
                _fail(lines, "; ".join(outcome.errors))
                return
            body = outcome.prediction
            self.deliveries.record_attempt(task_id)
            created = self.client.create_prediction(
                task_id, body["result"], score=body["score"], model_version=mv
            )
        except LabelStudioAPIError as exc:
            _fail(lines, f"Label Studio: {exc}")
            return
        self.deliveries.record_stored(task_id, created.get("id"))
        for line in lines:
            line["warnings"] = outcome.warnings
        _mark(lines, "posted", created.get("id"))

    def finish(self, job: JobDir, spec: JobSpec) -> dict[str, Any]:
        if self._log is not None:
            self._log.close()
            self._log = None
        return {"project": spec.project.get("id"), "model_version": spec.model_version}


def _mark(lines: list[dict[str, Any]], status: str, prediction_id: Any = None) -> None:
    for line in lines:
        line["status"] = status
        if prediction_id is not None:
            line["prediction_id"] = prediction_id


def _fail(lines: list[dict[str, Any]], reason: str) -> None:
    for line in lines:
        line["error"] = reason
