"""RQ job functions: JSON in, JSON out (RQ's JSONSerializer, never pickle).

The backend enqueues :func:`run_chunk` by its dotted path (``common.queues.RUN_CHUNK``);
a worker started by :mod:`worker.process` runs it, and nothing outside
``common.queues.JOB_FUNCTIONS``. The engine (and SAM) are loaded once per process and
kept in a module-level :class:`WorkerRuntime`: ``worker.process`` installs it at
start-up, and an in-process caller (``--inline`` bulk jobs, the embedded backend) gets
it loaded lazily on first use. This module and ``worker.engines.registry`` are
where the worker reads its settings; the pipeline, engines and SAM below them
take explicit arguments.

Hot reload: when REXLABEL_MODEL is a project's models directory (one with a
``current`` pointer, ``common.model_store``), the runtime reads the pointer
before each chunk (one small file) and, when it names another run (a training
job published one, or someone rolled back), closes the engine and loads that
run before the chunk runs (:meth:`WorkerRuntime.reload_if_moved`). A run that
fails to load is logged and the old model is loaded back; that run is tried
again no sooner than :data:`RELOAD_RETRY_S` later.

No torch at import time: the embedded backend and ``--inline`` jobs import it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.jobspec import ImageJob, ImageResult, parse_chunk
from common.logs import route_library_logs
from common.metrics import record_chunk
from common.model_store import (
    CURRENT_POINTER,
    ModelStoreError,
    base_chain,
    resolve_model,
)

log = logging.getLogger(__name__)

ADAPTER_ENGINES = ("transformers",)
"""Engines that load a LoRA adapter directory (base + merged adapter); the
others (vllm, openai) serve whole weights only."""
RELOAD_RETRY_S = 300.0
"""After a run failed to load, the worker serves the old model and tries that
run again no sooner than this: a broken run is not loaded (and the old model
loaded back) before every chunk, yet a fixed one is picked up within minutes."""


@dataclass
class WorkerRuntime:
    """What a worker process loads once: the engine, and SAM when configured.

    ``process`` turns a list of :class:`ImageJob` into :class:`ImageResult` in the
    same order (loading images, generating in batches, parsing, scoring, masks);
    by default it is :func:`process_images` with this runtime's engine.
    ``lock`` serialises engine use between threads of one process; it is
    re-entrant, so the embedded backend can take it first with a timeout
    (its request's deadline, ``backend.queue.InProcessRunner``).

    ``models_dir`` (a project's models directory, with a ``current`` pointer)
    and ``load_engine`` (model directory -> engine) turn on the hot reload
    that :meth:`run` does first (:meth:`reload_if_moved`).
    """

    engine: Any
    masker: Any = None
    process: (
        Callable[[WorkerRuntime, list[ImageJob], dict[str, Any]], list[ImageResult]]
        | None
    ) = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    models_dir: str | None = None
    load_engine: Callable[[str], Any] | None = None
    _retry_at: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _pointer_problem: str = field(default="", init=False, repr=False)
    _fallback: str = field(default="", init=False, repr=False)
    """The model served before a reload whose engine is not back yet."""

    @property
    def model_id(self) -> str:
        return str(getattr(self.engine, "model_id", ""))

    def run(
        self, images: list[ImageJob], generation: dict[str, Any]
    ) -> list[ImageResult]:
        process = self.process or process_images
        with self.lock:
            self.reload_if_moved()
            return process(self, images, generation)

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()

    def reload_if_moved(self) -> bool:
        """Load the run ``models_dir``'s pointer names when it is not the one
        loaded; True when the engine changed. A run that fails to load leaves
        the old model serving (loaded back) and is retried no sooner than
        :data:`RELOAD_RETRY_S`; a pointer that cannot be read is logged once."""
        if not self.models_dir or self.load_engine is None:
            return False
        try:
            target = resolve_model(self.models_dir)
        except ModelStoreError as exc:
            if str(exc) != self._pointer_problem:
                self._pointer_problem = str(exc)
                log.error("model pointer unusable, serving %s: %s", self.model_id, exc)
            return False
        self._pointer_problem = ""
        if target == self.model_id and self.engine is not None:
            return False
        with self.lock:
            if target == self.model_id and self.engine is not None:
                return False  # another thread reloaded meanwhile
            waiting = time.monotonic() < self._retry_at.get(target, 0.0)
            if waiting and self.engine is not None:
                return False
            return self._swap(target)

    def _swap(self, target: str) -> bool:
        """Close the engine, load ``target``; on failure load the old one back."""
        assert self.load_engine is not None
        old = self.model_id or self._fallback
        try:
            chain = base_chain(
                target
            )  # a bad card or base fails here, before any unload
        except ModelStoreError as exc:
            return self._reload_failed(target, old, exc)
        engine = getattr(self.engine, "name", "")
        if len(chain) > 1 and engine and engine not in ADAPTER_ENGINES:
            # never loadable by this engine: no unload, no retry until the pointer moves
            self._retry_at[target] = math.inf
            log.error(
                "cannot serve %s: it is a LoRA adapter and the %s engine serves "
                "whole weights (train with merge: true in the project's finetune "
                "extra param, or --merge); keeping %s",
                target,
                engine,
                old or "(none)",
            )
            return False
        log.info("model pointer moved: %s -> %s; reloading", old or "(none)", target)
        started = time.perf_counter()
        self.close()
        self.engine, self._fallback = None, old
        try:
            self.engine = self.load_engine(target)
        except Exception as exc:
            self._reload_failed(target, old, exc)
            if not old:
                raise
            # Raises when the old model cannot come back either: this chunk
            # fails, and the next one tries the pointer's run, then this again.
            self.engine = self.load_engine(old)
            log.info("serving %s again", old)
            return False
        self._retry_at.pop(target, None)
        self._fallback = ""
        log.info(
            "reloaded: %s -> %s in %.1f s",
            old or "(none)",
            target,
            time.perf_counter() - started,
        )
        return True

    def _reload_failed(self, target: str, old: str, exc: Exception) -> bool:
        self._retry_at[target] = time.monotonic() + RELOAD_RETRY_S
        log.error(
            "cannot load %s (%s: %s); keeping %s, next try in %.0f s",
            target,
            type(exc).__name__,
            exc,
            old or "(none)",
            RELOAD_RETRY_S,
        )
        return False


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
    from common import settings
    from worker.engines.registry import create_engine

    started = time.perf_counter()
    reference = settings.get("REXLABEL_MODEL")
    engine = create_engine(model=resolve_model(reference))
    masker = _load_masker()
    route_library_logs()  # handlers the model's libraries added on import
    log.info(
        "loaded engine %s (%s) in %.1f s%s",
        getattr(engine, "name", "?"),
        getattr(engine, "model_id", "?"),
        time.perf_counter() - started,
        " with SAM" if masker is not None else "",
    )
    models_dir = reference if is_models_dir(reference) else None
    if models_dir:
        log.info(
            "hot reload on: %s/%s is read before each chunk",
            models_dir,
            CURRENT_POINTER,
        )
    # REXLABEL_ENGINE=auto chooses once: a reloaded run keeps this engine
    name = getattr(engine, "name", None)
    return WorkerRuntime(
        engine=engine,
        masker=masker,
        models_dir=models_dir,
        load_engine=lambda model: create_engine(name, model=model),
    )


def is_models_dir(reference: str) -> bool:
    """Whether ``reference`` (REXLABEL_MODEL) is a project's models directory:
    a local directory holding a ``current`` pointer."""
    path = Path(reference).expanduser()
    return path.is_dir() and (path / CURRENT_POINTER).exists()


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
