"""Where a bulk job keeps what it is and what it has done.

One directory per job under the jobs root (``REXLABEL_JOBS_DIR``)::

    <root>/<job id>/job.json           the spec (what to run, where to write)
    <root>/<job id>/images.jsonl       the images, one JSON object a line, in order
    <root>/<job id>/parts/c000012.jsonl  chunk 12's results, written atomically
    <root>/<job id>/status.json        the last progress record
    <root>/<job id>/delivered.jsonl    tasks posted to Label Studio (DeliveryLog)
    <root>/<job id>/cancel             present while a cancel is requested
    <root>/<job id>/lock               flock'ed by the process running the job

A chunk is done exactly when its part file exists: it is written (tmp +
``os.replace``) only after its results reached their destination. The progress
record is mirrored to Redis (``rexlabel:job:<id>``) when Redis is in use, so
``rexlabel jobs`` sees jobs of other processes (the backend's too). The spec
and the record themselves are :mod:`backend.bulk.records`.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from backend.bulk.records import (
    JobBusyError,
    JobError,
    JobRecord,
    JobSpec,
    JobStatus,
)
from common import settings

DEFAULT_JOBS_DIR = "~/.local/state/rexlabel/jobs"
"""XDG state directory: job records must survive reboots, unlike a cache."""
REDIS_RECORD_PREFIX = "rexlabel:job:"
"""Redis key of a job's progress record (JSON) is this prefix plus the id."""
REDIS_JOBS_SET = "rexlabel:jobs"
"""Redis set of every job id with a record."""
REDIS_CANCEL_SUFFIX = ":cancel"
"""Redis key ``<record key>:cancel`` exists while a cancel is requested."""
PART_PREFIX = "c"
"""Part files are ``c<chunk index, 6 digits>.jsonl``."""
DELIVERED_NAME = "delivered.jsonl"
"""A project job's delivery log (:class:`DeliveryLog`), beside its spec."""


def jobs_root() -> Path:
    """The jobs directory (REXLABEL_JOBS_DIR, else ``DEFAULT_JOBS_DIR``)."""
    return Path(settings.get("REXLABEL_JOBS_DIR") or DEFAULT_JOBS_DIR).expanduser()


def redis_connection(url: str | None = None) -> Any:
    """A Redis connection for REDIS_URL (or ``url``), or None when neither is set."""
    url = url if url is not None else settings.get("REDIS_URL")
    if not url:
        return None
    from common.redis_conn import redis_connection as connect

    return connect(url, purpose="bulk jobs")


def open_store(connection: Any = None, root: Path | None = None) -> JobStore:
    """The jobs under ``root`` (default :func:`jobs_root`), records mirrored to
    Redis through ``connection`` when given."""
    return JobStore(root, connection)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file,
    never a partial one (temporary file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DeliveryLog:
    """The tasks a job knows to hold its prediction in Label Studio.

    One JSON line per task, ``{"task": id, "prediction": pid}``, appended and
    flushed once Label Studio holds the task's prediction of the job's model
    version (posted, or found there), and ``{"task": id, "attempt": true}``
    before each POST, so a crash between the POST and its record makes the next
    delivery ask Label Studio first. :meth:`sync` makes the lines durable; the
    sink calls it before the runner writes a chunk's part, its done-record. A
    chunk delivered again (a crash, or a Redis error after posting) skips the
    tasks in the log. Task ids are compared as text: ``7`` and ``"7"`` are one.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stored: dict[str, Any] = {}
        self._attempted: set[str] = set()
        self._handle: Any = None
        if self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        event = json.loads(line)
                        if event.get("attempt"):
                            self._attempted.add(str(event["task"]))
                        else:
                            self._stored[str(event["task"])] = event["prediction"]
                    except (ValueError, TypeError, KeyError, AttributeError):
                        continue  # a line cut by a crash: Label Studio is asked

    def stored(self, task: Any) -> bool:
        return str(task) in self._stored

    def attempted(self, task: Any) -> bool:
        """A POST for ``task`` was sent, by this run or an earlier one."""
        return str(task) in self._attempted

    def prediction_id(self, task: Any) -> Any:
        return self._stored.get(str(task))

    def record_attempt(self, task: Any) -> None:
        """Note, before posting, that ``task``'s prediction is being posted."""
        self._attempted.add(str(task))
        self._append({"task": task, "attempt": True})

    def record_stored(self, task: Any, prediction_id: Any) -> None:
        self._stored[str(task)] = prediction_id
        self._append({"task": task, "prediction": prediction_id})

    def _append(self, event: dict[str, Any]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a+", encoding="utf-8")
            if self._handle.tell():  # end a line a crash cut, if any
                self._handle.seek(self._handle.tell() - 1)
                cut = self._handle.read(1) != "\n"
                self._handle.write("\n" if cut else "")
        self._handle.write(json.dumps(event))
        self._handle.write("\n")
        self._handle.flush()

    def sync(self) -> None:
        """Make every line written so far durable (fsync)."""
        if self._handle is not None:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class JobDir:
    """The on-disk half of a job (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.spec_path = self.root / "job.json"
        self.images_path = self.root / "images.jsonl"
        self.parts_dir = self.root / "parts"
        self.status_path = self.root / "status.json"
        self.cancel_path = self.root / "cancel"
        self.lock_path = self.root / "lock"
        self._lock_handle: Any = None

    @property
    def id(self) -> str:
        return self.root.name

    def delivery_log(self) -> DeliveryLog:
        """The job's :class:`DeliveryLog` (read now, appended to from now on)."""
        return DeliveryLog(self.root / DELIVERED_NAME)

    def exists(self) -> bool:
        return self.spec_path.is_file()

    # Spec and images ---------------------------------------------------------
    def read_spec(self) -> JobSpec:
        try:
            return JobSpec.from_dict(json.loads(self.spec_path.read_text("utf-8")))
        except FileNotFoundError:
            raise JobError(f"no job {self.id!r} in {self.root.parent}") from None
        except (ValueError, TypeError) as exc:
            raise JobError(
                f"job {self.id!r}: {self.spec_path} is unreadable: {exc}"
            ) from None

    def write_spec(self, spec: JobSpec) -> None:
        write_atomic(self.spec_path, json.dumps(spec.to_dict(), indent=1) + "\n")

    def iter_images(self) -> Iterator[dict[str, Any]]:
        """The job's images in order (streamed)."""
        with open(self.images_path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def iter_chunks(
        self, chunk_size: int, skip: set[int] | frozenset[int] = frozenset()
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(chunk index, images)`` in order, leaving out the chunks in ``skip``."""
        batch: list[dict[str, Any]] = []
        index = 0
        for image in self.iter_images():
            batch.append(image)
            if len(batch) == chunk_size:
                if index not in skip:
                    yield index, batch
                batch, index = [], index + 1
        if batch and index not in skip:
            yield index, batch

    # Parts ---------------------------------------------------------------------
    def part_path(self, chunk: int) -> Path:
        return self.parts_dir / f"{PART_PREFIX}{chunk:06d}.jsonl"

    def done_chunks(self) -> set[int]:
        """Indices of chunks whose part file exists."""
        if not self.parts_dir.is_dir():
            return set()
        done = set()
        for path in self.parts_dir.iterdir():
            name = path.name
            if name.startswith(PART_PREFIX) and name.endswith(".jsonl"):
                digits = name[len(PART_PREFIX) : -len(".jsonl")]
                if digits.isdigit():
                    done.add(int(digits))
        return done

    def write_part(self, chunk: int, lines: Iterable[dict[str, Any]]) -> None:
        """Record chunk ``chunk`` as done with these per-image lines (atomic)."""
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        write_atomic(self.part_path(chunk), text)

    def read_part(self, chunk: int) -> list[dict[str, Any]]:
        with open(self.part_path(chunk), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def iter_results(self) -> Iterator[dict[str, Any]]:
        """Every image's recorded result, in image order (one part in memory)."""
        for chunk in sorted(self.done_chunks()):
            yield from self.read_part(chunk)

    # Status, cancel, lock ----------------------------------------------------
    def read_status(self) -> JobRecord | None:
        try:
            return JobRecord.from_dict(json.loads(self.status_path.read_text("utf-8")))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def write_status(self, record: JobRecord) -> None:
        write_atomic(self.status_path, json.dumps(record.to_dict(), indent=1) + "\n")

    def acquire(self) -> None:
        """Take the job's lock; JobBusyError if another process holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise JobBusyError(
                f"job {self.id} is already running ({holder or 'another process'})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock_handle = handle

    def release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def is_running(self) -> bool:
        """Whether some process holds the job's lock now."""
        if not self.lock_path.exists():
            return False
        with open(self.lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


class JobStore:
    """All jobs: directories under ``root``, records mirrored to Redis if given."""

    def __init__(self, root: Path | None = None, connection: Any = None) -> None:
        self.root = Path(root) if root is not None else jobs_root()
        self.connection = connection

    def job_dir(self, job_id: str) -> JobDir:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise JobError(f"{job_id!r} is not a job id")
        return JobDir(self.root / job_id)

    def create(self, spec: JobSpec, images: Iterable[dict[str, Any]]) -> JobDir:
        """Store a new job (or return the existing one with the same id).

        ``images`` is consumed only when the job is new.
        """
        spec.id = spec.id or spec.compute_id()
        job = self.job_dir(spec.id)
        if job.exists():
            return job
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.id}.", dir=self.root))
        try:
            count = 0
            with open(staging / "images.jsonl", "w", encoding="utf-8") as handle:
                for image in images:
                    handle.write(json.dumps(image, ensure_ascii=False) + "\n")
                    count += 1
            if count != spec.total:
                raise JobError(
                    f"job {spec.id}: {count} images listed, spec says {spec.total}"
                )
            spec.created_at = spec.created_at or time.time()
            JobDir(staging).write_spec(spec)
            try:
                os.rename(staging, job.root)
            except OSError:
                if not job.exists():  # not a concurrent creation of the same job
                    raise
        finally:
            if staging.exists():
                for path in staging.iterdir():
                    path.unlink()
                staging.rmdir()
        return job

    def get(self, job_id: str) -> JobDir:
        job = self.job_dir(job_id)
        if not job.exists():
            raise JobError(f"no job {job_id!r} in {self.root}")
        return job

    # Records ---------------------------------------------------------------------
    def save_record(self, job: JobDir, record: JobRecord) -> None:
        record.updated_at = time.time()
        job.write_status(record)
        if self.connection is not None:
            key = REDIS_RECORD_PREFIX + record.id
            with self.connection.pipeline() as pipe:
                pipe.set(key, json.dumps(record.to_dict()))
                pipe.sadd(REDIS_JOBS_SET, record.id)
                pipe.execute()

    def record(self, job_id: str) -> JobRecord:
        """The latest record of a job (Redis or disk, whichever is newer)."""
        found: list[JobRecord] = []
        job = self.job_dir(job_id)
        on_disk = job.read_status() if job.root.exists() else None
        if on_disk is not None:
            found.append(on_disk)
        if self.connection is not None:
            raw = self.connection.get(REDIS_RECORD_PREFIX + job_id)
            try:
                if raw:
                    found.append(JobRecord.from_dict(json.loads(raw)))
            except (ValueError, TypeError):
                pass  # unreadable (e.g. an unknown status): as a missing status file
        if not found:
            if job.exists():
                spec = job.read_spec()
                return JobRecord(
                    id=job_id,
                    kind=spec.kind,
                    total=spec.total,
                    chunks_total=spec.chunk_count,
                    outputs=spec.outputs,
                )
            raise JobError(f"no job {job_id!r} (looked in {self.root} and Redis)")
        record = max(found, key=lambda r: r.updated_at)
        running = record.status == JobStatus.RUNNING
        if running and job.root.exists() and not job.is_running():
            if record.host in ("", socket.gethostname()):
                record.status = JobStatus.INTERRUPTED
        return record

    def list_records(self) -> list[JobRecord]:
        """Every known job, newest first."""
        ids: set[str] = set()
        if self.root.is_dir():
            ids.update(
                p.name
                for p in self.root.iterdir()
                if p.is_dir() and not p.name.startswith(".")
            )
        if self.connection is not None:
            ids.update(
                m.decode() if isinstance(m, bytes) else m
                for m in self.connection.smembers(REDIS_JOBS_SET)
            )
        records = []
        for job_id in ids:
            try:
                records.append(self.record(job_id))
            except JobError:
                continue
        return sorted(records, key=lambda r: r.updated_at, reverse=True)

    # Cancel ----------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        job = self.job_dir(job_id)
        if job.root.exists():
            job.cancel_path.touch()
        if self.connection is not None:
            self.connection.set(REDIS_RECORD_PREFIX + job_id + REDIS_CANCEL_SUFFIX, "1")

    def clear_cancel(self, job_id: str) -> None:
        job = self.job_dir(job_id)
        job.cancel_path.unlink(missing_ok=True)
        if self.connection is not None:
            self.connection.delete(REDIS_RECORD_PREFIX + job_id + REDIS_CANCEL_SUFFIX)

    def cancel_requested(self, job_id: str) -> bool:
        if self.job_dir(job_id).cancel_path.exists():
            return True
        if self.connection is not None:
            return bool(
                self.connection.exists(
                    REDIS_RECORD_PREFIX + job_id + REDIS_CANCEL_SUFFIX
                )
            )
        return False
