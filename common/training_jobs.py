"""Training jobs (Label Studio's "Start Training"): the payload, its options,
and the progress record both sides read.

The backend enqueues :data:`common.queues.RUN_TRAINING` on
:data:`common.queues.QUEUE_TRAIN` with ``{"project": ID, "options": {...}}``
(:func:`enqueue_training`); a ``rexlabel worker --train`` runs it
(``worker.training_job``) and keeps the job's record in Redis up to date::

    rexlabel:train-job:<id>      JSON record (:func:`new_record`), RECORD_TTL_S
    rexlabel:train-jobs          sorted set: job id -> created (unix time)
    rexlabel:train-cancel:<id>   exists while a cancel is requested

A record::

    {"id": "train-...", "kind": "train", "project": 3, "state": "running",
     "step": 12, "steps": 300, "loss": 0.41, "eta_s": 137.0,
     "out": "<models>/project-3/run-...", "run": "run-...", "metrics": {},
     "error": "", "created": 1.7e9, "updated": 1.7e9, "started": 1.7e9,
     "ended": null, "options": {"steps": 300}, "examples": {...},
     "source": "webhook"}

``state`` is one of :data:`STATES`. Every field of a payload and of a stored
record is untrusted: options pass :func:`validate_options` (a whitelist with
types and bounds) on both sides, and a record read back is checked before use.

Importable by the backend: no torch, no Flask (RQ only inside functions).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.model_store import METHODS, MODEL_CARD_NAME
from common.queues import QUEUE_TRAIN, RUN_TRAINING

KEY_PREFIX = "rexlabel:train-job:"
"""Redis key of a training job's record is this prefix plus the job id."""
INDEX_KEY = "rexlabel:train-jobs"
"""Sorted set of every training job id, scored by its creation time."""
CANCEL_PREFIX = "rexlabel:train-cancel:"
"""Redis key that asks the worker running a job (this prefix plus its id) to stop."""
START_LOCK_PREFIX = "rexlabel:train-start:"
"""Redis key held (this prefix plus the project id) while a training start is
decided, so two backend processes never both enqueue one."""
START_LOCK_TTL_S = 30
"""The start lock's lifetime: deciding takes milliseconds; a holder killed
mid-decision frees it within this."""
RECORD_TTL_S = 90 * 86_400
"""A record lives this long after its last update: long enough to compare a
quarter's runs, bounded so Redis never fills with them."""
CANCEL_TTL_S = 86_400
"""A cancel request outlives any grace period; an unanswered one expires."""
JOB_ID_PREFIX = "train-"
"""Training job ids start so (``rexlabel jobs`` tells them from bulk jobs)."""
TRAIN_JOB_TIMEOUT_S = 24 * 3600
"""RQ stops a training job running longer: a LoRA run on a project's few
hundred images takes minutes to hours; a day means something is stuck."""
TRAIN_RESULT_TTL_S = 7 * 86_400
"""A finished training job's RQ result stays a week (the record, longer)."""
TRAIN_FAILURE_TTL_S = 7 * 86_400
"""A failed training job's traceback stays a week for post-mortems."""

QUEUED = "queued"
"""Waiting for a ``--train`` worker."""
RUNNING = "running"
"""A worker runs ``rexlabel finetune`` for it."""
FINISHED = "finished"
"""The run finished and the project's ``current`` pointer names it."""
FAILED = "failed"
"""The run failed (``error`` says why); the pointer is unchanged."""
CANCELLED = "cancelled"
"""Stopped by ``rexlabel jobs cancel`` (a checkpoint may be kept)."""
STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)
"""A training job's states; the first two are active, the rest final."""
ACTIVE_STATES = (QUEUED, RUNNING)
"""States that hold a project's one training slot."""

RECORD_FIELDS = (
    "id",
    "kind",
    "project",
    "state",
    "step",
    "steps",
    "loss",
    "eta_s",
    "out",
    "run",
    "metrics",
    "error",
    "created",
    "updated",
    "started",
    "ended",
    "options",
    "examples",
    "source",
)
"""Every field of a record, in the order ``rexlabel jobs status`` shows them."""


TEXT_OPTION_MAX_CHARS = 4000
"""Longest free-text option (a list of replay phrases)."""


class TrainingRequestError(ValueError):
    """A training payload or its options are unusable; the message names the field."""


@dataclass(frozen=True)
class OptionSpec:
    """One option ``rexlabel finetune`` takes from a training job.

    ``kind`` is the JSON type (int, float or str); numbers lie in
    ``[low, high]``; a str is one of ``choices``.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    meaning: str = ""

    def describe(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.kind is str and not self.choices:
            return f"text of at most {TEXT_OPTION_MAX_CHARS} printable characters"
        if self.kind is str:
            return f"one of {', '.join(repr(c) for c in self.choices)}"
        if self.kind is int:
            return f"an integer from {self.low:.0f} to {self.high:.0f}"
        return f"a number from {self.low:g} to {self.high:g}"


TRAINING_OPTIONS: dict[str, OptionSpec] = {
    "steps": OptionSpec(
        int, 1, 1_000_000, meaning="optimizer steps (a day of GPU time is ~1e5)"
    ),
    "epochs": OptionSpec(int, 1, 1000, meaning="passes over the examples"),
    "lr": OptionSpec(float, 1e-8, 1.0, meaning="learning rate"),
    "batch_size": OptionSpec(int, 1, 1024, meaning="examples per step"),
    "method": OptionSpec(str, choices=METHODS, meaning="LoRA adapter or every weight"),
    "replay": OptionSpec(float, 0.0, 0.95, meaning="share of each batch replayed"),
    "replay_phrases": OptionSpec(
        str, meaning="comma-separated phrases the base model answers for replay"
    ),
    "lora_rank": OptionSpec(int, 1, 256, meaning="LoRA rank"),
    "replay_images": OptionSpec(
        int, 0, 1_000_000, meaning="replay questions the base model answers"
    ),
    "val_split": OptionSpec(float, 0.0, 0.9, meaning="share of tasks held out"),
    "merge": OptionSpec(
        bool, meaning="write merged weights (what the vllm engine serves)"
    ),
}
EXCLUSIVE_OPTIONS = (("steps", "epochs"),)
"""Options ``rexlabel finetune`` takes one of, not both."""
"""The only options a training job passes to ``rexlabel finetune`` (as
``--name-with-dashes VALUE``); anything else in a payload or in the project's
``finetune`` extra param is refused, naming it."""


def validate_options(raw: Any, where: str = "options") -> dict[str, Any]:
    """``raw`` checked against :data:`TRAINING_OPTIONS`: a dict of known names
    with values of the right type within bounds. ``where`` names the source in
    errors (``"finetune"`` for the extra param)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise TrainingRequestError(
            f"{where} must be an object of training options, got {_shown(raw)}"
        )
    options: dict[str, Any] = {}
    for name, value in raw.items():
        spec = TRAINING_OPTIONS.get(name) if isinstance(name, str) else None
        if spec is None:
            raise TrainingRequestError(
                f"{where}: unknown option {_shown(name)}; allowed: "
                f"{', '.join(TRAINING_OPTIONS)}"
            )
        if not _fits(spec, value):
            raise TrainingRequestError(
                f"{where}.{name} must be {spec.describe()}, got {_shown(value)}"
            )
        options[name] = float(value) if spec.kind is float else value
    for group in EXCLUSIVE_OPTIONS:
        given = [name for name in group if name in options]
        if len(given) > 1:
            raise TrainingRequestError(
                f"{where}: {' and '.join(given)} exclude each other; give one"
            )
    return options


def _fits(spec: OptionSpec, value: Any) -> bool:
    if spec.kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if spec.kind is str and not spec.choices:
        return (
            isinstance(value, str)
            and len(value) <= TEXT_OPTION_MAX_CHARS
            and value.isprintable()
        )
    if spec.kind is str:
        return isinstance(value, str) and value in spec.choices
    if spec.kind is int and not isinstance(value, int):
        return False
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return spec.low <= value <= spec.high  # type: ignore[operator]


def validate_project(raw: Any, where: str = "project") -> int:
    """A positive integer project id (not a bool, not a string)."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise TrainingRequestError(
            f"{where} must be a positive integer, got {_shown(raw)}"
        )
    return raw


@dataclass(frozen=True)
class TrainingRequest:
    """A validated training payload."""

    project: int
    options: dict[str, Any]

    def to_payload(self) -> dict[str, Any]:
        return {"project": self.project, "options": dict(self.options)}


def parse_payload(payload: Any) -> TrainingRequest:
    """A training job's payload, checked; TrainingRequestError names the bad field."""
    if not isinstance(payload, Mapping):
        raise TrainingRequestError(f"payload must be an object, got {_shown(payload)}")
    unknown = sorted(str(k) for k in payload if k not in ("project", "options"))
    if unknown:
        raise TrainingRequestError(
            f"payload: unknown field(s) {', '.join(unknown)}; a training payload "
            "has 'project' and 'options'"
        )
    return TrainingRequest(
        project=validate_project(payload.get("project")),
        options=validate_options(payload.get("options")),
    )


def option_arguments(options: Mapping[str, Any]) -> list[str]:
    """``{"batch_size": 4}`` -> ``["--batch-size=4"]`` (validated first; one
    ``--name=value`` argument each, so a value starting with ``-`` can never
    be read as another option)."""
    argv: list[str] = []
    for name, value in validate_options(options).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            argv += [flag] if value else []
            continue
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        argv.append(f"{flag}={shown}")
    return argv


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Records -------------------------------------------------------------------------
def new_job_id() -> str:
    return f"{JOB_ID_PREFIX}{uuid.uuid4().hex[:16]}"


def is_job_id(text: Any) -> bool:
    """Whether ``text`` has the shape of a training job id."""
    if not isinstance(text, str) or not text.startswith(JOB_ID_PREFIX):
        return False
    rest = text[len(JOB_ID_PREFIX) :]
    return 0 < len(rest) <= 64 and rest.isalnum()


def record_key(job_id: str) -> str:
    return KEY_PREFIX + job_id


def new_record(
    job_id: str, project: int, options: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """A queued job's record."""
    now = time.time()
    return {
        "id": job_id,
        "kind": "train",
        "project": project,
        "state": QUEUED,
        "step": 0,
        "steps": None,
        "loss": None,
        "eta_s": None,
        "out": "",
        "run": "",
        "metrics": {},
        "error": "",
        "created": now,
        "updated": now,
        "started": None,
        "ended": None,
        "options": dict(options),
        "examples": {},
        "source": source,
    }


def save_record(connection: Any, record: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``record`` (refreshing its TTL, ``updated`` set to now) and list
    it in the index; returns what was written."""
    body = {**dict(record), "updated": time.time()}
    pipe = connection.pipeline()
    pipe.set(record_key(body["id"]), json.dumps(body, default=str), ex=RECORD_TTL_S)
    pipe.zadd(INDEX_KEY, {body["id"]: float(body.get("created") or body["updated"])})
    pipe.execute()
    return body


def read_record(connection: Any, job_id: str) -> dict[str, Any] | None:
    """The stored record of ``job_id``; None when absent or unreadable."""
    if not is_job_id(job_id):
        return None
    raw = connection.get(record_key(job_id))
    return _checked(raw, job_id) if raw else None


def _checked(raw: Any, job_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("id") != job_id:
        return None
    if data.get("state") not in STATES or not isinstance(data.get("project"), int):
        return None
    record = {name: data.get(name) for name in RECORD_FIELDS}
    record["kind"] = "train"
    return record


def update_record(connection: Any, job_id: str, **fields: Any) -> dict[str, Any]:
    """Set ``fields`` on the record (one writer per job: the worker running
    it; the backend writes only a queued job's cancel). Returns the record."""
    unknown = set(fields) - set(RECORD_FIELDS)
    if unknown:
        raise KeyError(f"not record fields: {sorted(unknown)}")
    record = read_record(connection, job_id)
    if record is None:
        raise LookupError(f"no training job {job_id!r}")
    record.update(fields)
    return save_record(connection, record)


def list_records(connection: Any, project: int | None = None) -> list[dict[str, Any]]:
    """Every stored record (of ``project`` when given), newest first; ids
    whose record expired are dropped from the index."""
    ids = [
        i.decode() if isinstance(i, bytes) else str(i)
        for i in connection.zrevrange(INDEX_KEY, 0, -1)
    ]
    if not ids:
        return []
    raws = connection.mget([record_key(i) for i in ids])
    records, gone = [], []
    for job_id, raw in zip(ids, raws, strict=True):
        record = _checked(raw, job_id) if raw else None
        if record is None:
            gone.append(job_id)
        elif project is None or record["project"] == project:
            records.append(record)
    if gone:
        connection.zrem(INDEX_KEY, *gone)
    return records


def clean_abandoned(connection: Any) -> None:
    """Fail the training jobs whose worker died (their execution expired):
    only workers on :data:`QUEUE_TRAIN` clean its registry otherwise, and the
    dead one may have been the only one."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    from common.rq_jobs import clean_queue

    clean_queue(Queue(QUEUE_TRAIN, connection=connection, serializer=JSONSerializer))


def request_cancel(connection: Any, job_id: str) -> None:
    connection.set(CANCEL_PREFIX + job_id, 1, ex=CANCEL_TTL_S)


def cancel_training(connection: Any, job_id: str) -> dict[str, Any]:
    """Ask the worker running ``job_id`` to stop (it interrupts the training,
    which keeps a checkpoint); a job still queued is taken off the queue and
    marked cancelled here. Returns the record; LookupError for an unknown id."""
    record = read_record(connection, job_id)
    if record is None:
        raise LookupError(f"no training job {job_id!r}")
    if record["state"] not in ACTIVE_STATES:
        return record
    request_cancel(connection, job_id)
    if record["state"] == QUEUED:
        from rq.exceptions import InvalidJobOperation, NoSuchJobError
        from rq.job import JobStatus
        from rq.serializers import JSONSerializer

        from common.rq_jobs import RexJob

        try:
            job = RexJob.fetch(job_id, connection=connection, serializer=JSONSerializer)
            if job.get_status(refresh=False) == JobStatus.QUEUED:
                job.cancel()
        except (NoSuchJobError, InvalidJobOperation):
            pass  # gone or started meanwhile: the worker sees the cancel key
        record = read_record(connection, job_id) or record
        if record["state"] == QUEUED:
            record.update(state=CANCELLED, error="cancelled before it started")
            record["ended"] = time.time()
            save_record(connection, record)
    return record


def cancel_requested(connection: Any, job_id: str) -> bool:
    return bool(connection.exists(CANCEL_PREFIX + job_id))


# RQ --------------------------------------------------------------------------------
def enqueue_training(
    connection: Any, job_id: str, request: TrainingRequest, source: str
) -> dict[str, Any]:
    """Store the queued record, then put the job on :data:`QUEUE_TRAIN`
    (JSON payload, :data:`TRAIN_JOB_TIMEOUT_S`, no retry: a re-run would
    start the training from scratch). Returns the record."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    record = new_record(job_id, request.project, request.options, source)
    save_record(connection, record)
    Queue(QUEUE_TRAIN, connection=connection, serializer=JSONSerializer).enqueue(
        RUN_TRAINING,
        request.to_payload(),
        job_id=job_id,
        job_timeout=TRAIN_JOB_TIMEOUT_S,
        result_ttl=TRAIN_RESULT_TTL_S,
        failure_ttl=TRAIN_FAILURE_TTL_S,
        description=f"train project {request.project}",
    )
    return record


def reconciled(connection: Any, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as it stands: an active record whose RQ job ended without
    the worker saying so (killed, refused, Redis emptied) reads as failed or
    cancelled, with why. Only what is returned changes, not Redis."""
    if record.get("state") not in ACTIVE_STATES:
        return record
    from rq.exceptions import NoSuchJobError
    from rq.job import JobStatus
    from rq.serializers import JSONSerializer

    from common.rq_jobs import RexJob

    try:
        job = RexJob.fetch(
            record["id"], connection=connection, serializer=JSONSerializer
        )
        status = job.get_status(refresh=False)
    except NoSuchJobError:
        return {**record, "state": FAILED, "error": "its queue job is gone from Redis"}
    if status == JobStatus.CANCELED:
        return {
            **record,
            "state": CANCELLED,
            "error": record.get("error") or "cancelled",
        }
    if status == JobStatus.FINISHED:  # the worker's last record write was lost
        return {
            **record,
            "state": FINISHED if _published(record) else FAILED,
            "error": record.get("error")
            or ("" if _published(record) else "finished without a final record"),
        }
    if status in (JobStatus.FAILED, JobStatus.STOPPED):
        return {
            **record,
            "state": FAILED,
            "error": record.get("error") or _rq_failure(job) or "the worker stopped",
        }
    return record


def _published(record: Mapping[str, Any]) -> bool:
    """Whether the record's run has its model card (it finished and was kept)."""
    out = record.get("out")
    if not isinstance(out, str) or not out:
        return False
    return (Path(out) / MODEL_CARD_NAME).is_file()


def _rq_failure(job: Any) -> str:
    try:
        result = job.latest_result()
    except Exception:  # unreadable result: the caller says the worker stopped
        return ""
    lines = [
        ln
        for ln in (getattr(result, "exc_string", "") or "").splitlines()
        if ln.strip()
    ]
    return lines[-1].strip() if lines else ""
