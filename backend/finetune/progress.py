"""How ``rexlabel finetune`` reports: a progress bar for people, JSON lines
for the training worker (``--progress json``), or nothing.

JSON lines go to stdout, one object each with an ``event``: ``prepared``,
``loaded``, ``replay``, ``step`` (step, steps, loss, steps_per_s, eta_s),
``checkpoint``, ``metrics``, ``done`` (out, metrics) and ``error``
(message). Everything else goes to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

MODES = ("bar", "json", "none")


class Progress:
    """Receives the run's events and shows them."""

    def __init__(self, mode: str = "bar", stream: TextIO | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"--progress must be one of {', '.join(MODES)}")
        self.mode = mode
        self.stream = stream or sys.stdout
        self._bar: Any = None
        self._task: Any = None

    def event(self, name: str, fields: dict[str, Any]) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps({"event": name, **fields}, default=str) + "\n")
            self.stream.flush()
        elif self.mode == "bar":
            self._show(name, fields)

    def note(self, text: str) -> None:
        """A line for people (stderr; not in JSON mode's stdout)."""
        if self.mode != "none":
            print(text, file=sys.stderr, flush=True)

    def _show(self, name: str, fields: dict[str, Any]) -> None:
        if name == "step":
            self._step(fields)
        elif name == "checkpoint":
            self._print(f"checkpoint at step {fields['step']}: {fields['path']}")
        elif name == "loaded":
            self._print(
                f"model loaded: {fields['trainable_parameters']:,} of "
                f"{fields['total_parameters']:,} parameters trained"
            )

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def _step(self, fields: dict[str, Any]) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as Bar,
        )

        if self._bar is None:
            self._bar = Bar(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TextColumn("{task.fields[rate]:.2f} steps/s"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                "train",
                total=fields["steps"],
                completed=fields["step"] - 1,
                loss=0.0,
                rate=0.0,
            )
        self._bar.update(
            self._task,
            completed=fields["step"],
            loss=fields["loss"],
            rate=fields["steps_per_s"],
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
