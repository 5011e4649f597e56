"""A Label Studio project's tasks -> :class:`ImagePair` s, streamed page by page.

``rexlabel evaluate --project ID`` reads the project through
:class:`common.labelstudio.api.LabelStudioClient` (``LABEL_STUDIO_URL`` and
``LABEL_STUDIO_API_KEY``): ``GET /api/tasks/?project=ID&fields=all`` one page
at a time, so memory holds one page of tasks, never the project. Per task:

- ground truth: its latest non-cancelled annotation
  (``backend.bulk.convert.pick_results``, as exports read it). A task with
  none (not annotated, or every annotation cancelled, "skipped" in the UI) is
  not scored and is counted;
- predictions: its prediction of the scored model version (the latest one if
  there are several). An annotated task without one was never pre-labelled by
  that version: nothing of that version to judge, so it is not scored either,
  and is counted (an empty prediction, a model that found nothing, is scored).

Images are in pixels of the original image, sized by the results'
``original_width/height``; annotation and prediction of one task must agree.

Which version is scored (:func:`choose_model_version`) when ``--model-version``
is not given. Label Studio 1.23 keeps ``project.model_version``, either a
prediction version string or, since a model was connected, that model's
*title* (meaning "its live predictions"), and each connected model's current
``model_version`` (refreshed from the backend's ``/setup``). In this order:

1. the project's ``model_version``, if the project holds predictions of it;
2. if it is the title of a connected model: that model's current version, if
   the project holds predictions of it;
3. the version of the most recently created prediction among rexlabel's
   (versions ``rexlabel-...``), else among all the project's predictions.

A project without predictions, or a ``--model-version`` it holds none of, is
an error listing the versions it has.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.bulk.convert import TASK_ERRORS, pick_results
from backend.evaluate.inputs import (
    EvaluateInputError,
    check_task,
    pair_images,
    reason,
    task_image,
)
from backend.evaluate.pairs import ImagePair
from backend.model_version import VERSION_PREFIX
from common.labelstudio.api import PAGE_SIZE, LabelStudioAPIError, LabelStudioClient
from converters.geometry import MAX_IMAGE_PIXELS

WARNINGS_KEPT = 50
"""Reader warnings kept by text (a project of choices-only tasks would give one
per task); the count goes on past this."""
VERSIONS_LISTED = 10
"""Model versions named in the error for a version the project does not hold."""


class ProjectError(EvaluateInputError):
    """The project cannot be evaluated as asked (no predictions, unknown
    version); the message says what it holds."""


@dataclass
class ProjectCounts:
    """What reading the project found, filled in while the pairs stream."""

    tasks: int = 0
    """Tasks read."""
    scored: int = 0
    """Tasks paired and scored."""
    without_annotation: int = 0
    """Tasks without a non-cancelled annotation: not scored."""
    only_cancelled: int = 0
    """Of ``without_annotation``, those whose every annotation was cancelled."""
    without_predictions: int = 0
    """Annotated tasks without a prediction of the scored version: not scored."""
    warnings: list[str] = field(default_factory=list)
    """Results the reader passed over, the first :data:`WARNINGS_KEPT`."""
    warning_count: int = 0

    def warn(self, message: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < WARNINGS_KEPT:
            self.warnings.append(message)


@dataclass(frozen=True)
class VersionChoice:
    """The model version scored and why (a phrase for the output)."""

    version: str
    reason: str


def _stored_counts(versions: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{version: predictions}`` from ``model-versions`` rows, newest first;
    rows without a version (predictions stored with none) are left out."""
    counts: dict[str, int] = {}
    for row in versions:
        name = row.get("model_version")
        if isinstance(name, str) and name and name not in counts:
            count = row.get("count")
            counts[name] = count if isinstance(count, int) else 0
    return counts


def _listed(counts: Mapping[str, int]) -> str:
    shown = [f"{v!r} ({n})" for v, n in list(counts.items())[:VERSIONS_LISTED]]
    more = len(counts) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def choose_model_version(
    project: Mapping[str, Any],
    ml_backends: Sequence[Mapping[str, Any]],
    versions: Sequence[Mapping[str, Any]],
    requested: str | None = None,
) -> VersionChoice:
    """The version to score (module docstring), from the project
    (``GET /api/projects/ID/``), its connected models (``GET /api/ml/``) and
    its stored versions, newest first (``model-versions?extended=true``).

    Raises:
        ProjectError: the project holds no predictions, or none of
            ``requested``.
    """
    stored = {v: n for v, n in _stored_counts(versions).items() if n > 0}
    where = f"project {project.get('id')}"
    if requested:
        if requested not in stored:
            held = _listed(stored) if stored else "none"
            raise ProjectError(
                f"{where} holds no predictions of model version {requested!r}; "
                f"its versions (predictions): {held}"
            )
        return VersionChoice(requested, "given with --model-version")
    if not stored:
        raise ProjectError(
            f"{where} holds no predictions: press Retrieve Predictions in Label "
            f"Studio or run `rexlabel prelabel --project {project.get('id')}` first"
        )
    current = project.get("model_version")
    if isinstance(current, str) and current in stored:
        return VersionChoice(current, "the project's model version")
    for ml in ml_backends:
        live = ml.get("model_version")
        if current and ml.get("title") == current and isinstance(live, str):
            if live in stored:
                return VersionChoice(
                    live, f"the current version of the connected model {current!r}"
                )
    ours = [v for v in stored if v.startswith(f"{VERSION_PREFIX}-")]
    if ours:
        return VersionChoice(ours[0], "the newest rexlabel predictions")
    return VersionChoice(next(iter(stored)), "the newest predictions")


def resolve_model_version(
    client: LabelStudioClient, project_id: int, requested: str | None = None
) -> VersionChoice:
    """:func:`choose_model_version` with what Label Studio says now."""
    project = client.get_project(project_id)
    return choose_model_version(
        project,
        client.list_ml_backends(project_id),
        client.model_versions(project_id),
        requested,
    )


def task_pair(
    task: Any,
    model_version: str,
    counts: ProjectCounts,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ImagePair | None:
    """One listed task as a pair, or None (counted) when it is not scored.

    Raises:
        EvaluateInputError: malformed results, sizes that disagree or are
            unknown, a size over ``max_pixels`` or a region out of bounds
            (``inputs.pair_images``); the message names the task.
    """
    if not isinstance(task, Mapping):
        raise EvaluateInputError(
            f"Label Studio listed a task that is not an object: {task!r:.80}"
        )
    counts.tasks += 1
    where = f"task {task.get('id')}"
    try:
        check_task(task, "annotations")
        check_task(task, "predictions")
        truth = pick_results(task, "annotations")
        if truth is None:
            counts.without_annotation += 1
            if task.get("annotations"):
                counts.only_cancelled += 1
            return None
        ours = pick_results(task, "predictions", model_version)
        if ours is None:
            counts.without_predictions += 1
            return None
        gt = task_image(task, truth, where, local_size=False)
        pred = task_image(task, ours, where, local_size=False)
    except TASK_ERRORS as exc:
        raise EvaluateInputError(f"{where}: {reason(exc)}") from None
    for side, image in (("annotation", gt), ("prediction", pred)):
        for warning in image.warnings:
            counts.warn(f"{where}: {side}: {warning}")
    pair = pair_images(
        gt, pred, "the annotation", f"the prediction {model_version!r}", max_pixels
    )
    counts.scored += 1
    return pair


def iter_project_pairs(
    client: LabelStudioClient,
    project_id: int,
    model_version: str,
    counts: ProjectCounts,
    *,
    page_size: int = PAGE_SIZE,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Iterator[ImagePair]:
    """The project's scored tasks as pairs, read ``page_size`` tasks at a
    time; ``counts`` is complete once the iterator is exhausted.

    Raises (while iterating):
        EvaluateInputError: a task that cannot be read (named).
        LabelStudioAPIError: Label Studio failed a page.
    """
    for task in client.iter_tasks(project_id, fields="all", page_size=page_size):
        pair = task_pair(task, model_version, counts, max_pixels)
        if pair is not None:
            yield pair


@dataclass
class ProjectSource:
    """One project to evaluate: which version, the pairs, what was counted."""

    client: LabelStudioClient
    project_id: int
    choice: VersionChoice
    counts: ProjectCounts = field(default_factory=ProjectCounts)
    max_pixels: int = MAX_IMAGE_PIXELS
    """The largest image size scored (``REXLABEL_MAX_IMAGE_PIXELS``)."""

    def pairs(self) -> Iterator[ImagePair]:
        """The pairs, streamed (:func:`iter_project_pairs`); once."""
        return iter_project_pairs(
            self.client,
            self.project_id,
            self.choice.version,
            self.counts,
            max_pixels=self.max_pixels,
        )

    def inputs(self) -> dict[str, Any]:
        """The report's ``inputs``: where the data came from and what was
        not scored (complete once :meth:`pairs` is exhausted)."""
        c = self.counts
        return {
            "label_studio": self.client.url,
            "project": self.project_id,
            "model_version": self.choice.version,
            "model_version_chosen_as": self.choice.reason,
            "tasks": c.tasks,
            "tasks_scored": c.scored,
            "tasks_without_annotation": c.without_annotation,
            "tasks_only_cancelled": c.only_cancelled,
            "tasks_without_predictions": c.without_predictions,
            "warnings": c.warning_count,
        }


def open_project(
    project_id: int,
    requested_version: str | None = None,
    client: LabelStudioClient | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ProjectSource:
    """The project at ``LABEL_STUDIO_URL`` (or ``client``'s), its version chosen.

    Raises:
        LabelStudioAPIError: no URL or token, unreachable, token refused (401,
            403), no such project (404); the message names which.
        TokenExchangeError: Label Studio refused the personal access token.
        ProjectError: no predictions to score (:func:`choose_model_version`).
    """
    client = client or LabelStudioClient.from_settings()
    try:
        choice = resolve_model_version(client, project_id, requested_version)
    except LabelStudioAPIError as exc:
        if exc.status in (401, 403):
            raise LabelStudioAPIError(
                f"Label Studio at {client.url} refused the token in "
                f"LABEL_STUDIO_API_KEY (HTTP {exc.status}): {exc}",
                exc.status,
            ) from None
        if exc.status == 404:
            raise LabelStudioAPIError(
                f"Label Studio at {client.url} has no project {project_id} that "
                f"this token can see: {exc}",
                exc.status,
            ) from None
        raise
    return ProjectSource(client, project_id, choice, max_pixels=max_pixels)
