"""Rate and ETA of a bulk job, and the CLI's progress bar."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

RATE_WINDOW_S = 30.0
"""Rate = images finished over the last 30 s: spans several chunks (smooth) yet
follows a worker joining or leaving within half a minute."""


class ProgressMeter:
    """Counts finished images and derives images/s and the time left.

    ``already`` images were done before this run started (a resumed job): they
    count towards the total but not towards the rate.
    """

    def __init__(
        self,
        total: int,
        already: int = 0,
        *,
        window_s: float = RATE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.finished = already
        self.window_s = window_s
        self._clock = clock
        self._started = clock()
        self._events: deque[tuple[float, int]] = deque()
        self._in_window = 0

    def add(self, images: int) -> None:
        now = self._clock()
        self.finished += images
        self._events.append((now, images))
        self._in_window += images
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._in_window -= self._events.popleft()[1]

    @property
    def rate(self) -> float:
        """Images per second over the window (since the start while shorter)."""
        now = self._clock()
        self._trim(now)
        span = min(self.window_s, now - self._started)
        return self._in_window / span if span > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None before the first chunk."""
        remaining = max(0, self.total - self.finished)
        if remaining == 0:
            return 0.0
        rate = self.rate
        return remaining / rate if rate > 0 else None


class RichProgress:
    """A rich progress bar fed with :class:`~backend.bulk.store.JobRecord` updates."""

    def __init__(self, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} img/s"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
        )
        self._description = description
        self._task: Any = None

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, record: Any) -> None:
        finished = record.done + record.failed + record.skipped
        fields = {
            "rate": record.rate,
            "eta": format_eta(record.eta_s),
            "failed": record.failed,
        }
        if self._task is None:
            self._task = self._progress.add_task(
                self._description, total=record.total, completed=finished, **fields
            )
        else:
            self._progress.update(self._task, completed=finished, **fields)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
