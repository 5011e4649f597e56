"""A small real program with ``rexlabel finetune``'s command-line contract,
for the training job's tests (the real trainer needs a Label Studio project).

    python tests/worker/finetune_child.py MODE --project ID --out DIR \\
        --progress json [--steps N] [--batch-size B] ...

It prints the JSON progress events on stdout (with a non-JSON line among
them), writes ``DIR/argv.json`` (the arguments it got) and ``DIR/pid``, and
ends by MODE:

- ``ok``: ``DIR/rexlabel-model.json`` (a full-model card), ``done``, exit 0;
- ``fail``: stderr lines and an ``error`` event, exit 1;
- ``quiet-fail``: stderr lines only, exit 2;
- ``oom``: a CUDA out-of-memory line on stderr, exit 3;
- ``nocard``: ``done`` but no card, exit 0;
- ``slow``: a step every 50 ms until SIGINT, which writes
  ``DIR/checkpoint`` and exits 130;
- ``stubborn``: like ``slow`` but ignores SIGINT (only SIGKILL ends it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.model_store import write_card

SLOW_STEP_S = 0.05


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--progress", choices=["json"], required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--method", default="full")
    parser.add_argument("--base")
    args = parser.parse_args()
    args.out.mkdir(parents=True)
    (args.out / "argv.json").write_text(json.dumps(sys.argv[2:]))
    (args.out / "pid").write_text(str(os.getpid()))
    print("loading the project's annotations", flush=True)  # not JSON: ignored
    emit(
        event="prepared",
        train=40,
        val=4,
        replay=0,
        replay_requests=44,
        skipped={"skipped_no_annotation": 40, "skipped_no_image": 0},
    )
    if args.mode in ("slow", "stubborn"):
        return run_until_interrupted(args)
    for step in range(1, args.steps + 1):
        emit(
            event="step",
            step=step,
            steps=args.steps,
            loss=1.0 / step,
            steps_per_s=20.0,
            eta_s=(args.steps - step) / 20.0,
        )
    if args.mode == "fail":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ValueError: project 7 has no annotations", file=sys.stderr)
        emit(event="error", message="project 7 has no annotations")
        return 1
    if args.mode == "quiet-fail":
        print("warming up", file=sys.stderr)
        print("RuntimeError: the data loader died", file=sys.stderr)
        return 2
    if args.mode == "oom":
        print("torch.OutOfMemoryError: CUDA out of memory", file=sys.stderr)
        return 3
    if args.mode == "ok":
        (args.out / "config.json").write_text("{}")
        write_card(
            args.out,
            {"method": "full", "weights_sha256": f"sha-{args.out.name}"},
        )
    emit(event="done", out=str(args.out), metrics={"val_loss": 0.25})
    return 0


def run_until_interrupted(args: argparse.Namespace) -> int:
    interrupted = []
    if args.mode == "slow":
        signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    step = 0
    while not interrupted:
        step += 1
        emit(event="step", step=step, steps=10_000, loss=0.5, eta_s=100.0)
        time.sleep(SLOW_STEP_S)
    (args.out / "checkpoint").mkdir()
    emit(event="checkpoint", step=step, path=str(args.out / "checkpoint"))
    return 130


if __name__ == "__main__":
    sys.exit(main())
