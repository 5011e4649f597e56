"""Drive a stored job to the end: chunks out, results written, progress recorded.

The loop is the same for every destination and executor:

1. chunks without a part file are sent to the executor (RQ or inline);
2. each chunk's result goes to the sink (Label Studio, or nothing for file
   jobs whose output is built from the parts at the end);
3. only then is the chunk's part file written: the done-record;
4. at the end the sink finishes (file jobs: merge parts into COCO + JSONL).

Stopping at any point (Ctrl-C, kill, crash, Redis restart) loses at most the
chunks in flight, which the next run sends again (or adopts from Redis). A
chunk handed over twice (a Redis error after its delivery makes the executor
collect it again) is delivered idempotently by the sink and replaces its own
counts, so no image is counted twice and ``done`` never exceeds ``total``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from backend.bulk.progress import ProgressMeter
from backend.bulk.records import JobRecord, JobSpec, JobStatus
from backend.bulk.store import JobDir, JobStore

log = logging.getLogger(__name__)

RECORD_INTERVAL_S = 1.0
"""Progress records are saved at most once a second (and after the last chunk)."""
CANCEL_CHECK_INTERVAL_S = 0.25
"""How often the cancel flag (a file stat and one Redis EXISTS) is read."""


class Sink(Protocol):
    """Where results go. ``deliver`` may mark lines failed (``error``) or
    ``status: skipped``; it must be idempotent for a chunk delivered again
    (or retried), and what it delivered must be durable when it returns."""

    def deliver(
        self, spec: JobSpec, chunk: int, lines: list[dict[str, Any]]
    ) -> None: ...

    def finish(self, job: JobDir, spec: JobSpec) -> dict[str, Any]: ...


class Executor(Protocol):
    def run(
        self,
        chunks: Any,
        on_result: Callable[..., None],
        should_stop: Callable[[], bool],
        *,
        job_id: str = "",
        round_: int = 0,
    ) -> bool: ...


def image_payload(spec: JobSpec, image: dict[str, Any]) -> dict[str, Any]:
    """The ImageJob dict for one line of ``images.jsonl``. Plain paths are
    read only in a files job (the command line's own images), never in a
    project job (task data from Label Studio or a request)."""
    return {
        "id": image["id"],
        "image": image["image"],
        "task_id": image.get("task_id"),
        "calls": image.get("calls") or spec.calls,
        "local_paths": spec.kind == "files",
    }


def chunk_payload(
    spec: JobSpec, index: int, images: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``worker.jobs.run_chunk`` payload of chunk ``index``.

    Images planned with a ``skip`` reason (a visual prompt without reference
    boxes of its own) do not go to the worker; ``planned`` then lists every
    image of the chunk in order, so their lines keep their place."""
    payload = {
        "job": spec.id,
        "chunk": index,
        "images": [image_payload(spec, i) for i in images if not i.get("skip")],
        "generation": dict(spec.generation),
    }
    if any(image.get("skip") for image in images):
        payload["planned"] = [
            {k: image.get(k) for k in ("id", "image", "task_id", "skip")}
            for image in images
        ]
    return payload


def name_visual_prompts(
    line: dict[str, Any], calls: list[dict[str, Any]] | None
) -> None:
    """Label a visual prompt's predictions with the call's category.

    The model names what it found after the prompt's key (``object_1``); the
    caller named the category (``--categories``): predictions of a
    visual-prompting call that has one take it, in place."""
    named = {
        call.get("key"): call["categories"][0]
        for call in calls or []
        if call.get("task") == "visual_prompting" and call.get("categories")
    }
    for call in line.get("calls") or []:
        label = named.get(call.get("key"))
        if label is not None:
            for prediction in call.get("predictions") or []:
                prediction["label"] = label


def _skipped_line(planned: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": planned["id"],
        "task_id": planned.get("task_id"),
        "status": "skipped",
        "reason": planned["skip"],
        "calls": [],
    }


def result_lines(
    payload: dict[str, Any], result: dict[str, Any] | None, error: str | None
) -> list[dict[str, Any]]:
    """One line per planned image: its result, a skip with its reason, or an
    error saying why not."""
    by_id = {r["id"]: r for r in (result or {}).get("images", [])}
    calls = {image["id"]: image.get("calls") for image in payload["images"]}
    lines = []
    for planned in payload.get("planned") or payload["images"]:
        if planned.get("skip"):
            line = _skipped_line(planned)
            line["image"] = planned["image"]
            lines.append(line)
            continue
        found = by_id.get(planned["id"])
        if found is None:
            line = {
                "id": planned["id"],
                "task_id": planned.get("task_id"),
                "error": error or "the worker returned no result for this image",
                "calls": [],
            }
        else:
            line = dict(found)
            name_visual_prompts(line, calls.get(planned["id"]))
        line["image"] = planned["image"]
        lines.append(line)
    return lines


def line_outcome(line: dict[str, Any]) -> str:
    """``failed``, ``skipped`` or ``done``."""
    if line.get("error"):
        return "failed"
    if line.get("status") == "skipped":
        return "skipped"
    return "done"


OUTCOMES = ("done", "failed", "skipped")
"""What :func:`line_outcome` says of an image, in the order counts are kept."""


class _Counts:
    """Images done, failed and skipped, kept per chunk: a chunk recorded again
    (collected twice, or retried) replaces its own counts instead of adding."""

    def __init__(self) -> None:
        self.by_chunk: dict[int, tuple[int, ...]] = {}
        self.done = self.failed = self.skipped = 0

    def set(self, chunk: int, lines: list[dict[str, Any]]) -> None:
        """The chunk's outcome is now ``lines`` (all its recorded images)."""
        tally = [0] * len(OUTCOMES)
        for line in lines:
            tally[OUTCOMES.index(line_outcome(line))] += 1
        old = self.by_chunk.get(chunk, (0,) * len(OUTCOMES))
        self.by_chunk[chunk] = tuple(tally)
        for name, new, before in zip(OUTCOMES, tally, old, strict=True):
            setattr(self, name, getattr(self, name) + new - before)

    @property
    def chunks(self) -> int:
        return len(self.by_chunk)

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped


@dataclass
class JobRun:
    """One run of a job by this process (first run, resume, or retry of failures)."""

    job: JobDir
    store: JobStore
    executor: Executor
    sink: Sink
    on_progress: Callable[[JobRecord], None] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        self.spec = self.job.read_spec()
        self.counts = _Counts()
        self.record = JobRecord(
            id=self.spec.id,
            kind=self.spec.kind,
            total=self.spec.total,
            chunks_total=self.spec.chunk_count,
            outputs=dict(self.spec.outputs),
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        self._last_saved = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False
        self._handled: set[int] = set()  # chunks this run recorded
        self._retrying = False  # this run retries failed images only
        self.meter: ProgressMeter | None = None

    # Bookkeeping -----------------------------------------------------------------
    def _scan(self) -> set[int]:
        done = self.job.done_chunks()
        for chunk in done:
            self.counts.set(chunk, self.job.read_part(chunk))
        return done

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_saved < RECORD_INTERVAL_S:
            return
        self._last_saved = now
        r = self.record
        r.done, r.failed, r.skipped = (
            self.counts.done,
            self.counts.failed,
            self.counts.skipped,
        )
        r.chunks_done = self.counts.chunks
        if self.meter is not None:
            r.rate = self.meter.rate
            r.eta_s = self.meter.eta_s if r.status == JobStatus.RUNNING else None
        self.store.save_record(self.job, r)
        if self.on_progress is not None:
            self.on_progress(r)

    def _should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL_S:
            self._last_cancel_check = now
            self._cancelled = self.store.cancel_requested(self.spec.id)
        return self._cancelled

    # Results ---------------------------------------------------------------------
    def _on_result(
        self,
        index: int,
        payload: dict[str, Any],
        result: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        """Deliver chunk ``index``'s lines, then write its part. A retry round
        ran the chunk's failed images only: they replace their lines in the
        part written before."""
        lines = result_lines(payload, result, error)
        if self._retrying:
            fresh = {line["id"]: line for line in lines}
            old = self.job.read_part(index)
            self.sink.deliver(self.spec, index, list(fresh.values()))
            recorded = [fresh.get(line["id"], line) for line in old]
            ran = len(fresh)
        else:
            self.sink.deliver(self.spec, index, lines)
            recorded, ran = lines, len(lines)
        self.job.write_part(index, recorded)  # the done-record, after the delivery
        self._recorded(index, recorded, ran)

    def _recorded(self, index: int, lines: list[dict[str, Any]], ran: int) -> None:
        """Chunk ``index`` now holds ``lines`` (``ran`` of them ran this time)."""
        self.counts.set(index, lines)
        if index not in self._handled and self.meter is not None:
            self.meter.add(ran)
        self._handled.add(index)
        self._save()

    # Runs ----------------------------------------------------------------------------
    def _pending_chunks(self, done: set[int]) -> Iterator[tuple[int, dict[str, Any]]]:
        for index, images in self.job.iter_chunks(self.spec.chunk_size, skip=done):
            yield index, chunk_payload(self.spec, index, images)

    def _failed_chunks(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Chunks holding failed images, with only those images in the payload."""
        done = self.job.done_chunks()
        for index, images in self.job.iter_chunks(self.spec.chunk_size):
            if index not in done:
                continue
            failed = {
                line["id"] for line in self.job.read_part(index) if line.get("error")
            }
            retry = [image for image in images if image["id"] in failed]
            if retry:
                yield index, chunk_payload(self.spec, index, retry)

    def run(self, *, retry_failed: bool = False) -> JobRecord:
        """Run what is left (or only the failed images); returns the final record."""
        self.job.acquire()
        try:
            return self._run(retry_failed)
        finally:
            self.job.release()

    def _run(self, retry_failed: bool) -> JobRecord:
        done = self._scan()
        self.record.started_at = time.time()
        self.record.status = JobStatus.RUNNING
        self.record.chunks_done = len(done)
        self.record.message = ""
        self._retrying = retry_failed
        if retry_failed:
            self.spec.retry_round += 1
            self.job.write_spec(self.spec)
            self.meter = ProgressMeter(self.counts.failed)
            self.meter.total = self.counts.failed
            self.meter.finished = 0
            chunks: Iterator[tuple[int, dict[str, Any]]] = self._failed_chunks()
            round_ = self.spec.retry_round
        else:
            self.meter = ProgressMeter(self.spec.total, already=self.counts.finished)
            chunks = self._pending_chunks(done)
            round_ = 0
        self._save(force=True)
        try:
            completed = self.executor.run(
                chunks,
                self._on_result,
                self._should_stop,
                job_id=self.spec.id,
                round_=round_,
            )
        except KeyboardInterrupt:
            self.record.status = JobStatus.INTERRUPTED
            self.record.message = (
                "interrupted; run the same command (or jobs resume) to go on"
            )
            self._save(force=True)
            raise
        except BaseException as exc:
            self.record.status = JobStatus.FAILED
            self.record.message = f"{type(exc).__name__}: {exc}"
            self._save(force=True)
            raise
        if not completed:
            self.record.status = JobStatus.CANCELLED
            self.record.message = "cancelled; jobs resume continues it"
            self._save(force=True)
            return self.record
        outputs = self.sink.finish(self.job, self.spec)
        self.record.outputs.update(outputs or {})
        self.record.status = JobStatus.DONE
        self.record.finished_at = time.time()
        if self.counts.failed:
            self.record.message = (
                f"{self.counts.failed} image(s) failed; --retry-failed runs them again"
            )
        self._save(force=True)
        return self.record


def failures(job: JobDir, limit: int | None = None) -> list[dict[str, Any]]:
    """``{"id", "image", "task_id", "error"}`` of failed images, in image order."""
    found = []
    for line in job.iter_results():
        if line.get("error"):
            found.append({k: line.get(k) for k in ("id", "image", "task_id", "error")})
            if limit is not None and len(found) >= limit:
                break
    return found
