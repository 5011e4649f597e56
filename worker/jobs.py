"""RQ job functions: JSON in, JSON out (RQ's JSONSerializer, never pickle).

The backend enqueues :func:`run_chunk` by its dotted path (``common.queues.RUN_CHUNK``);
a worker started by :mod:`worker.process` runs it, and nothing outside
``common.queues.JOB_FUNCTIONS``. The engine (and SAM) are loaded once per process and
kept in a module-level :class:`WorkerRuntime`: ``worker.process`` installs it at
start-up, and an in-process caller (``--inline`` bulk jobs, the embedded backend) gets
it loaded lazily on first use. This module and ``worker.engines.registry`` are
where the worker reads its settings; the pipeline, engines and SAM below them
take explicit arguments.

No torch at import time: the embedded backend and ``--inline`` jobs import it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.jobspec import ImageJob, ImageResult, parse_chunk
from common.logs import route_library_logs
from common.metrics import record_chunk

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    """What a worker process loads once: the engine, and SAM when configured.

    ``process`` turns a list of :class:`ImageJob` into :class:`ImageResult` in the
    same order (loading images, generating in batches, parsing, scoring, masks);
    by default it is :func:`process_images` with this runtime's engine.
    ``lock`` serialises engine use between threads of one process; it is
    re-entrant, so the embedded backend can take it first with a timeout
    (its request's deadline, ``backend.queue.InProcessRunner``).
    """

    engine: Any
    masker: Any = None
    process: (
        Callable[[WorkerRuntime, list[ImageJob], dict[str, Any]], list[ImageResult]]
        | None
    ) = None
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def model_id(self) -> str:
        return str(getattr(self.engine, "model_id", ""))

    def run(
        self, images: list[ImageJob], generation: dict[str, Any]
    ) -> list[ImageResult]:
        process = self.process or process_images
        with self.lock:
            return process(self, images, generation)

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def install_runtime(runtime: WorkerRuntime | None) -> WorkerRuntime | None:
    """Make ``runtime`` the one :func:`run_chunk` uses; returns the previous one."""
    global _runtime
    with _runtime_lock:
        previous, _runtime = _runtime, runtime
    return previous


def load_runtime() -> WorkerRuntime:
    """Load the engine (and SAM) from the settings and install them (once)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _load_from_settings()
        return _runtime


def current_runtime() -> WorkerRuntime:
    """The installed runtime, loading it from the settings on first use."""
    runtime = _runtime
    return runtime if runtime is not None else load_runtime()


def _load_from_settings() -> WorkerRuntime:
    from worker.engines.registry import create_engine

    started = time.perf_counter()
    engine = create_engine()
    masker = _load_masker()
    route_library_logs()  # handlers the model's libraries added on import
    log.info(
        "loaded engine %s (%s) in %.1f s%s",
        getattr(engine, "name", "?"),
        getattr(engine, "model_id", "?"),
        time.perf_counter() - started,
        " with SAM" if masker is not None else "",
    )
    return WorkerRuntime(engine=engine, masker=masker)


def _load_masker() -> Any:
    """SAM when SAM_CHECKPOINT is set, else None (mask requests then fail per image).

    SAM_MODEL_TYPE names the checkpoint's size (empty: read from its file
    name); it runs on REXLABEL_DEVICE.
    """
    from common import settings

    checkpoint = settings.get("SAM_CHECKPOINT")
    if not checkpoint:
        return None
    from worker.sam import load_masker

    return load_masker(
        checkpoint,
        settings.get("SAM_MODEL_TYPE") or None,
        device=settings.get("REXLABEL_DEVICE"),
    )


def process_images(
    runtime: WorkerRuntime, images: list[ImageJob], generation: dict[str, Any]
) -> list[ImageResult]:
    """Load each image, run its calls through the engine in one batch, parse, score.

    The base sampling carries the configured caps (REXLABEL_MAX_NEW_TOKENS,
    REXLABEL_MAX_INSTANCES) and the base tiling the REXLABEL_TILE* settings,
    both read for each chunk. An image that cannot be
    loaded, or whose calls fail, gets ``error`` set; the others are unaffected.
    """
    from common.tile_options import TileOptions
    from worker.engines.registry import base_sampling
    from worker.pipeline import run_image_jobs

    return run_image_jobs(
        runtime.engine,
        images,
        sampling=base_sampling(),
        generation=generation,
        masker=runtime.masker,
        tiling=TileOptions.from_settings(),
    )


def run_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """Run a chunk: images with their calls in, canonical predictions out.

    Args:
        payload: ``{"images": [ImageJob.to_dict(), ...], "generation": {...}}``
            (see :mod:`common.jobspec`); other keys (``job``, ``chunk``) are
            echoed back so the caller can match the result.

    Returns:
        ``{"images": [ImageResult.to_dict(), ...], "timings": {...}, ...}``,
        one image result per image, in order. Per-image failures are in each
        result's ``error``; a malformed payload raises ``JobSpecError``.
    """
    started = time.perf_counter()
    images = parse_chunk(payload)
    generation = payload.get("generation") or {}
    if not isinstance(generation, dict):
        from common.jobspec import JobSpecError

        raise JobSpecError(f"chunk 'generation' must be an object, got {generation!r}")
    runtime = current_runtime()
    results = runtime.run(images, generation) if images else []
    if len(results) != len(images):
        raise RuntimeError(
            f"processing returned {len(results)} results for {len(images)} images"
        )
    for job, result in zip(images, results, strict=True):
        if result.id != job.id:
            raise RuntimeError(
                f"result for image {result.id!r} where {job.id!r} was expected"
            )
        if result.task_id is None:
            result.task_id = job.task_id
    out: dict[str, Any] = {
        key: payload[key] for key in ("job", "chunk") if key in payload
    }
    out["images"] = [r.to_dict() for r in results]
    out["model"] = runtime.model_id
    out["timings"] = {"total": time.perf_counter() - started}
    record_chunk(payload, out["images"], out["timings"]["total"], logger=log)
    return out
