"""Creating bulk jobs: from image files (a files job) or Label Studio tasks (a
project job).

A job's id is derived from its inputs, so running the same command again
finds the same job and continues it. The images are streamed to a spool file
while they are hashed, so memory stays flat for any number of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.bulk.records import JobError, JobSpec, JobStatus, NothingToDo
from backend.bulk.references import ReferenceBoxes
from backend.bulk.sources import expand_inputs
from backend.bulk.store import JobDir, JobStore, open_store

log = logging.getLogger(__name__)

CHUNK_SIZE = 32
"""Images per chunk: "a few dozen". Big enough that queue and bookkeeping
costs vanish beside the model and the engine gets full batches; small enough
that a worker killed mid-chunk costs seconds of GPU time, and progress moves."""


def default_raw_path(coco_path: str | Path) -> Path:
    """``labels.coco.json`` -> ``labels.coco.jsonl`` beside it (raw text + parsed)."""
    path = Path(coco_path)
    name = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(name + ".jsonl")


class _Digest:
    """Streams references into ``images.jsonl`` lines while hashing them."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.count = 0

    def lines(self, refs: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in refs:
            self.sha.update(json.dumps(item, sort_keys=True).encode() + b"\n")
            self.count += 1
            yield dict(item)


def _spool(items: Iterable[dict[str, Any]], store: JobStore) -> tuple[Path, _Digest]:
    """Write ``items`` to a temporary JSONL in the jobs root (memory stays flat)."""
    import tempfile

    store.root.mkdir(parents=True, exist_ok=True)
    digest = _Digest()
    handle = tempfile.NamedTemporaryFile(
        "w",
        dir=store.root,
        prefix=".images-",
        suffix=".jsonl",
        delete=False,
        encoding="utf-8",
    )
    try:
        with handle:
            for item in digest.lines(items):
                handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    except BaseException:  # an input named nothing usable: no stray spool
        Path(handle.name).unlink(missing_ok=True)
        raise
    return Path(handle.name), digest


def _read_spool(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _create(store: JobStore, spec: JobSpec, spool: Path) -> JobDir:
    try:
        return store.create(spec, _read_spool(spool))
    finally:
        spool.unlink(missing_ok=True)


# Files jobs ------------------------------------------------------------------------


class _Skips:
    """Images left out of a files job: how many, and the first few by name."""

    SHOWN = 5
    """Skipped images a message names; the rest are counted."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []

    def add(self, image: str) -> None:
        self.count += 1
        if len(self.first) < self.SHOWN:
            self.first.append(image)

    def message(self, total: int, reason: str) -> str:
        named = ", ".join(self.first)
        if self.count > len(self.first):
            named += f", ... {self.count - len(self.first)} more"
        return f"{self.count} of {total} image(s) {reason}: skipped ({named})"


def visual_prompt_calls(
    template: Mapping[str, Any], boxes: Mapping[str, list[list[float]]]
) -> list[dict[str, Any]]:
    """One visual-prompting call per label drawn on an image, with its boxes
    (xyxy pixels of that image) and the label as its category."""
    key = template.get("key") or "visual_prompting"
    return [
        {
            **template,
            "categories": [label],
            "visual_prompt_boxes": label_boxes,
            "key": f"{key}:{label}",
        }
        for label, label_boxes in boxes.items()
    ]


def _reference_template(
    calls: list[dict[str, Any]], references: Any
) -> list[dict[str, Any]]:
    """The job's one visual-prompting call, without boxes, naming every label
    of ``references`` (the COCO categories); JobError for other calls."""
    if (
        len(calls) != 1
        or calls[0]["task"] != "visual_prompting"
        or calls[0].get("visual_prompt_boxes")
    ):
        raise JobError(
            "reference boxes go with one visual_prompting call and no boxes of its own"
        )
    return [{**calls[0], "categories": list(references.labels)}]


def _files_lines(
    refs: Iterable[str],
    calls: list[dict[str, Any]],
    references: Any,
    skips: _Skips,
) -> Iterator[dict[str, Any]]:
    """``images.jsonl`` lines of a files job: with per-image visual prompts
    when ``references`` is given, an image without boxes of its own is
    planned as skipped (never prompted with another image's boxes)."""
    for index, ref in enumerate(refs):
        line: dict[str, Any] = {"id": str(index), "image": ref}
        if references is not None:
            boxes = references.boxes_for(ref)
            if boxes:
                line["calls"] = visual_prompt_calls(calls[0], boxes)
            else:
                line["skip"] = f"no reference boxes in {references.path}"
                skips.add(ref)
        yield line


def _one_image_prompts(calls: list[dict[str, Any]], count: int) -> None:
    """Boxes given on a call are pixels of one image: JobError for several."""
    if count > 1 and any(call.get("visual_prompt_boxes") for call in calls):
        raise JobError(
            f"visual prompt boxes are pixels of one image, and {count} images "
            "are named: Rex-Omni finds things like the boxed ones in the same "
            "image, so give each image its own boxes (--reference-boxes FILE)"
        )


def create_files_job(
    inputs: Iterable[str],
    calls: list[dict[str, Any]],
    *,
    out: str | Path,
    raw_out: str | Path | None = None,
    draw_dir: str | Path | None = None,
    manifests: Iterable[str] = (),
    generation: Mapping[str, Any] | None = None,
    model_version: str = "",
    chunk_size: int = CHUNK_SIZE,
    store: JobStore | None = None,
    references: ReferenceBoxes | None = None,
    on_skipped: Callable[[str], None] | None = None,
) -> JobDir:
    """The job for these images and calls (new, or the existing one to resume).

    ``calls`` are ``ModelCall`` dicts asked of every image; ``out`` is the COCO
    file, ``raw_out`` the JSONL of raw text and parsed predictions (default
    beside ``out``), ``draw_dir`` a folder for annotated previews.
    ``references`` (``backend.bulk.references``) gives each image its own
    visual-prompt boxes; ``calls`` is then one visual_prompting call without
    boxes. Images without boxes are skipped (counted in the job's record) and
    ``on_skipped`` gets a message naming them.

    Raises:
        SourceError: an input names no image, or a reference entry matches
        two images. JobError: no image at all, none with reference boxes, or
        one call's boxes for several images.
    """
    from common.jobspec import ModelCall

    store = store or open_store()
    calls = [ModelCall.from_dict(c).to_dict() for c in calls]  # validate early
    if references is not None:
        calls = _reference_template(calls, references)
    skips = _Skips()
    lines = _files_lines(expand_inputs(inputs, manifests), calls, references, skips)
    spool, digest = _spool(lines, store)
    try:
        if digest.count == 0:
            raise JobError("no images to label: the inputs name none")
        _one_image_prompts(calls, digest.count)
        if skips.count == digest.count:
            raise JobError(
                f"none of the {digest.count} image(s) has reference boxes in "
                f"{references.path}"
            )
    except JobError:
        spool.unlink(missing_ok=True)
        raise
    if skips.count and on_skipped is not None:
        on_skipped(skips.message(digest.count, f"have no boxes in {references.path}"))
    out = Path(out).expanduser().resolve()
    outputs = {
        "coco": str(out),
        "raw": str(
            Path(raw_out).expanduser().resolve() if raw_out else default_raw_path(out)
        ),
        "draw": str(Path(draw_dir).expanduser().resolve()) if draw_dir else None,
    }
    if not model_version:
        from backend.model_version import model_version as version_of

        asked: Any = calls
        if references is not None:  # the boxes change what is found
            asked = {"calls": calls, "references": references.digest}
        model_version = version_of(json.dumps(asked, sort_keys=True))
    spec = JobSpec(
        kind="files",
        total=digest.count,
        inputs_digest=digest.sha.hexdigest(),
        chunk_size=int(chunk_size),
        calls=calls,
        generation=dict(generation or {}),
        model_version=model_version,
        outputs=outputs,
    )
    return _create(store, spec, spool)


# Label Studio project jobs ---------------------------------------------------------


def _task_lines(
    plan: Any, tasks: Iterable[Mapping[str, Any]]
) -> Iterator[dict[str, Any]]:
    """``images.jsonl`` lines of the tasks; a task the plan cannot serve (no
    image under the config's data key) is logged and left out."""
    from backend.planner import PlanError

    for task in tasks:
        try:
            image_jobs = plan.image_jobs(task)
        except PlanError as exc:
            log.warning("left out: %s", exc)
            continue
        for image_job in image_jobs:
            yield image_job.to_dict()


@dataclass(frozen=True)
class ProjectTarget:
    """The Label Studio project a project job labels, and how: the part of its
    spec that is not the images."""

    project: Any
    label_config: str
    extra_params: dict[str, Any]
    model_version: str
    url: str
    view: Any = None

    def family(self) -> dict[str, Any]:
        """What a job must match to be this target's (resumed, not replaced)."""
        return {
            "project": str(self.project),
            "view": self.view,
            "model_version": self.model_version,
            "url": self.url,
        }

    def spec(self, digest: _Digest, chunk_size: int, **marks: Any) -> JobSpec:
        """The spec of a job over the images ``digest`` counted; ``marks`` are
        added to its ``project`` part (and so to its identity)."""
        return JobSpec(
            kind="project",
            total=digest.count,
            inputs_digest=digest.sha.hexdigest(),
            chunk_size=int(chunk_size),
            calls=[],
            generation={},  # each planned call carries its own overrides
            model_version=self.model_version,
            project={
                "id": str(self.project),
                "view": self.view,
                "url": self.url,
                "label_config": self.label_config,
                "extra_params": dict(self.extra_params),
                **marks,
            },
        )


def create_project_job(
    client: Any,
    project: int,
    *,
    view: str | int | None = None,
    extra_params: Mapping[str, Any] | None = None,
    model_version: str = "",
    chunk_size: int = CHUNK_SIZE,
    store: JobStore | None = None,
    latest: bool = False,
) -> tuple[JobDir, int]:
    """The job pre-labeling a Label Studio project (all tasks, or a view).

    ``extra_params`` None takes those of the model connected to the project
    (:func:`connected_extra_params`), as its ``/predict`` gets them.

    Tasks that already hold a prediction of this ``model_version`` are left
    out (Label Studio would show them twice). The plan comes from the
    project's labeling config exactly as the backend's ``/predict`` makes it.
    Returns the job and the number of tasks left out. An unfinished job for
    the same project, view and model version is resumed rather than replaced;
    ``latest`` returns the newest such job even when done (to retry failures).
    """
    from backend.model_version import model_version as version_of
    from backend.planner import plan_config
    from common.labelstudio.api import prediction_model_versions

    store = store or open_store()
    info = client.get_project(project)
    label_config = info.get("label_config") or ""
    if extra_params is None:
        extra_params = connected_extra_params(client, project)
    extra = dict(extra_params)
    plan = plan_config(label_config, extra)
    model_version = model_version or version_of(label_config, extra)
    view_id = client.find_view(project, view) if view not in (None, "") else None
    target = ProjectTarget(
        project, label_config, extra, model_version, client.url, view_id
    )
    existing = _project_job(store, target.family(), unfinished_only=not latest)
    if existing is not None:
        return existing, 0
    skipped = 0

    def pending() -> Iterator[Mapping[str, Any]]:
        nonlocal skipped
        for task in client.iter_tasks(project, view=view_id, fields="all"):
            if model_version in prediction_model_versions(task):
                skipped += 1
                continue
            yield task

    spool, digest = _spool(_task_lines(plan, pending()), store)
    if digest.count == 0:
        spool.unlink(missing_ok=True)
        raise NothingToDo(
            f"nothing to pre-label in project {project}: every task already has a "
            f"prediction of {model_version} ({skipped} task(s))"
        )
    # Tasks holding this model version were left out above: a first delivery
    # need not ask Label Studio again (LabelStudioSink).
    spec = target.spec(digest, chunk_size, filtered=True)
    return _create(store, spec, spool), skipped


def connected_extra_params(client: Any, project: int) -> dict[str, Any]:
    """The "Extra params" of the model connected to ``project`` in Label
    Studio: its rex_* defaults and score thresholds (``rexlabel evaluate
    --apply-thresholds`` writes them there), so a bulk job plans and files its
    predictions under the model version ``/predict`` uses. {} when no model is
    connected; JobError when several are (which one is meant is unknown).
    """
    from common.labelstudio.api import ExtraParamsError, ml_backend_extra_params

    backends = client.list_ml_backends(project)
    if not backends:
        return {}
    if len(backends) > 1:
        ids = ", ".join(str(b.get("id")) for b in backends)
        raise JobError(
            f"project {project} has {len(backends)} models connected (ML backends "
            f"{ids}): pass that model's --extra-params (or '{{}}')"
        )
    try:
        return ml_backend_extra_params(backends[0])
    except ExtraParamsError as exc:
        raise JobError(str(exc)) from None


def _project_job(
    store: JobStore, family: Mapping[str, Any], *, unfinished_only: bool
) -> JobDir | None:
    """The newest job of this project/view/model version (unfinished only, or any)."""
    if not store.root.is_dir():
        return None
    found: list[tuple[float, JobDir]] = []
    for path in store.root.glob("project-*"):
        job = JobDir(path)
        try:
            spec = job.read_spec()
        except JobError:
            continue
        mine = {
            "project": spec.project.get("id"),
            "view": spec.project.get("view"),
            "model_version": spec.model_version,
            "url": spec.project.get("url"),
        }
        if mine != dict(family):
            continue
        record = job.read_status()
        done = record is not None and record.status == JobStatus.DONE
        if unfinished_only and done:
            continue
        found.append((spec.created_at, job))
    return max(found, key=lambda item: item[0])[1] if found else None


def create_tasks_job(
    store: JobStore,
    target: ProjectTarget,
    tasks: Iterable[Mapping[str, Any]],
    *,
    source: str,
) -> JobDir:
    """The job pre-labeling these tasks of ``target`` (new, or the same one
    when the same tasks come again from the same ``source``)."""
    from backend.planner import plan_config

    plan = plan_config(target.label_config, target.extra_params)
    spool, digest = _spool(_task_lines(plan, tasks), store)
    return _create(store, target.spec(digest, CHUNK_SIZE, source=source), spool)
