"""What a bulk job is (:class:`JobSpec`) and where it stands (:class:`JobRecord`).

Both are stored as JSON by :mod:`backend.bulk.store`: the spec once, in
``job.json``; the record after every few chunks, in ``status.json`` (and in
Redis when Redis is in use).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

JOB_ID_CHARS = 16
"""Hex digits of the spec digest in a job id: collisions are out of reach."""


class JobError(RuntimeError):
    """A job cannot be found, started or read; the message says which and why."""


class JobBusyError(JobError):
    """Another process is running this job right now."""


class NothingToDo(JobError):
    """Every image or task the job would cover is already done."""


class JobStatus(str, Enum):
    """Where a job stands (:attr:`JobRecord.status`); a ``str`` Enum, so it is
    stored as its value.

    ``interrupted``: the process running it stopped (Ctrl-C, crash); resume it.
    ``failed``: the run itself raised (the record's message says what), as
    opposed to images that failed in a ``done`` job.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class JobSpec:
    """What a bulk job runs; its id is a digest of all of it.

    Attributes:
        kind: ``files`` (images on disk or URLs -> COCO + JSONL) or ``project``
            (a Label Studio project -> predictions posted to it).
        total: number of images (lines of ``images.jsonl``).
        inputs_digest: sha256 of the image list, so the same command over the
            same images is the same job (and resumes it).
        chunk_size: images per chunk (fixed for the job's life: chunk ``i`` is
            always the same images).
        calls: ``ModelCall`` dicts run on every image (files jobs; project jobs
            store per-task calls in ``images.jsonl``).
        generation: sampling overrides for every call.
        model_version: the name results are recorded under (Label Studio's
            ``model_version``; also the COCO ``info``).
        outputs: files jobs: ``coco``, ``raw`` and ``draw`` paths (absolute).
        project: project jobs: ``id``, ``view``, ``url`` and the plan.
        retry_round: how many ``--retry-failed`` runs the job has had.
    """

    kind: str
    total: int
    inputs_digest: str
    chunk_size: int
    calls: list[dict[str, Any]] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)
    model_version: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    project: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    retry_round: int = 0
    id: str = ""

    def identity(self) -> dict[str, Any]:
        """The fields that define the job (not its history)."""
        data = asdict(self)
        for key in ("id", "created_at", "retry_round"):
            data.pop(key)
        return data

    def compute_id(self) -> str:
        digest = hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()
        return f"{self.kind}-{digest[:JOB_ID_CHARS]}"

    @property
    def chunk_count(self) -> int:
        return (self.total + self.chunk_size - 1) // self.chunk_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class JobRecord:
    """A job's progress as ``rexlabel jobs status`` shows it.

    Counts are images; ``rate`` is images per second over the recent past;
    ``eta_s`` is None while unknown.
    """

    id: str
    kind: str = ""
    status: JobStatus = JobStatus.PENDING
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    rate: float = 0.0
    eta_s: float | None = None
    started_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    message: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    pid: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values (``status`` as its string)."""
        data = asdict(self)
        data["status"] = JobStatus(self.status).value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """The record of :meth:`to_dict`; ValueError for an unknown status."""
        known = set(cls.__dataclass_fields__)
        record = cls(**{k: v for k, v in data.items() if k in known})
        record.status = JobStatus(record.status)
        return record
