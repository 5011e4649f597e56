"""What ``rexlabel finetune`` costs: data preparation, the base model's replay
answers, and training steps, LoRA against a full fine-tune.

Run::

    .venv/bin/python bench/bench_finetune.py              # trained tiny model, CPU
    .venv/bin/python bench/bench_finetune.py --json       # the same, one JSON line
    .venv/bin/python bench/bench_finetune.py --gpu-3b     # Qwen2.5-VL-3B, one GPU
    .venv/bin/python bench/bench_finetune.py --gpu-3b --smoke   # its script, on a CPU

**CPU (default).** A synthetic Label Studio project like the one the
fine-tuning proof uses: ``--annotated`` 112 px images of a new class (a
purple square, one box each) and as many unannotated images of the tiny
model's old classes, with a label config and an export, in a temporary
directory. Each phase runs in a fresh process, so its peak RSS
(``ru_maxrss``: torch's memory is outside tracemalloc's view) is its own:

- ``prepare``: ``backend.finetune.prepare.prepare_data`` through the
  ``--from --images`` loader (read, split, resize, store); images/s counts
  every image read (annotated, and unannotated ones asked for replay);
- ``replay``: the base model answers the replay questions, as the command
  does before step 1 (answers/s);
- ``lora`` and ``full``: ``worker.training.finetune.run_finetune`` for
  ``--steps`` steps of ``--batch-size`` on the trained tiny model (the test
  cache, ``.cache/test-models/tiny-detection-*``). Steps/s and examples/s
  (steps x batch / seconds) are over the steps after the first (one-off
  allocations), with the median step; the train seconds include them all
  (and writing the result).

**GPU (``--gpu-3b``).** Qwen2.5-VL-3B's architecture (``bench/bench_gpu.py``'s
config, from Qwen2.5-VL-3B-Instruct's config.json) with random weights in
bf16, the tiny model's processor (Rex-Omni's tokens), LoRA rank 16 through
``run_finetune``, batch 8 of 640x480 images (476x644 after smart_resize, 391
visual tokens) with one-box answers: seconds per step and
``torch.cuda.max_memory_allocated``. Without CUDA it prints that it skipped
and why. ``--smoke`` runs the same code on bench_gpu's small config on the
CPU, to check the script where no GPU is lent.

Figures only; nothing is asserted. Budget: under 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

NEW_PHRASE = "purple square"
NEW_COLOUR = (140, 40, 190)
"""The new class: a colour the tiny model never saw, far from its four."""
DEFAULT_ANNOTATED = 40
"""Annotated images of the new class (and as many unannotated old-class ones)."""
DEFAULT_STEPS = 200
DEFAULT_BATCH = 8
LR = {"lora": 2e-3, "full": 1e-4}
"""The proof run's LoRA rate (the tiny model needs more than a 3B's 2e-4) and
a full fine-tune's smaller one: the rate does not change the step's cost."""
DEFAULT_THREADS = 1
"""torch threads of the model phases: the 2 cores of the machine this was
written on are shared, and torch's 2 OpenMP threads stall whenever another
process holds a core (measured, 150 LoRA steps: median step 0.047 s but mean
0.26 s, a tenth of the steps over 0.6 s; on one thread 0.058 s and 0.058 s).
``--threads 0`` keeps torch's own choice."""
WARMUP_STEPS = 1
"""Steps left out of the rates: the first one allocates and warms kernels."""
GPU_STEPS = 12
GPU_WARMUP_STEPS = 2
GPU_BATCH = 8
GPU_LORA_RANK = 16
GPU_IMAGE_SIZE = (640, 480)
GPU_IMAGES = 16
"""Distinct images of the GPU run (each batch reads 8 of them)."""
SMOKE_STEPS = 3
SMOKE_BATCH = 2
SEED = 11


# --- the synthetic project -------------------------------------------------------


def write_project(root: Path, annotated: int) -> dict[str, Path]:
    """Images, a Label Studio export and its label config under ``root``."""
    from PIL import ImageDraw

    from worker.training.synthetic import (
        IMAGE_SIZE,
        MAX_SHAPE,
        MIN_SHAPE,
        render_background,
        render_shape,
    )

    images = root / "images"
    images.mkdir(parents=True)
    rng = random.Random(SEED)
    tasks = []
    for n in range(annotated):
        image = render_background(rng)
        side = rng.randint(MIN_SHAPE, MAX_SHAPE)
        x0, y0 = rng.randint(0, IMAGE_SIZE - side), rng.randint(0, IMAGE_SIZE - side)
        ImageDraw.Draw(image).rectangle(
            (x0, y0, x0 + side - 1, y0 + side - 1), fill=NEW_COLOUR
        )
        image.save(images / f"p{n}.png")
        pct = 100 / IMAGE_SIZE
        result = {
            "id": f"r{n}",
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": IMAGE_SIZE,
            "original_height": IMAGE_SIZE,
            "value": {
                "x": x0 * pct, "y": y0 * pct, "width": side * pct,
                "height": side * pct, "rotation": 0, "rectanglelabels": [NEW_PHRASE],
            },
        }  # fmt: skip
        tasks.append(
            {
                "id": n + 1,
                "data": {"image": f"/data/upload/1/p{n}.png"},
                "annotations": [
                    {"id": 1000 + n, "was_cancelled": False, "result": [result]}
                ],
            }
        )
    for n in range(annotated):
        render_shape(rng).image.save(images / f"o{n}.png")
        tasks.append(
            {
                "id": 5000 + n,
                "data": {"image": f"/data/upload/1/o{n}.png"},
                "annotations": [],
            }
        )
    export = root / "export.json"
    export.write_text(json.dumps(tasks))
    config = root / "config.xml"
    config.write_text(
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" '
        f'toName="image"><Label value="{NEW_PHRASE}"/></RectangleLabels></View>'
    )
    return {"images": images, "export": export, "config": config}


def trained_model() -> Path:
    found = sorted((REPO_ROOT / ".cache" / "test-models").glob("tiny-detection-*"))
    found = [p for p in found if (p / "config.json").is_file()]
    if not found:
        raise SystemExit(
            "no trained tiny model in .cache/test-models: run the tests once, or "
            "rexlabel make-test-model DIR --train-steps 1300"
        )
    return found[-1]


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- phases (each in its own process) --------------------------------------------


def phase_prepare(work: Path, annotated: int) -> dict:
    from backend.bulk.convert import iter_json_list
    from backend.finetune.inputs import local_loader
    from backend.finetune.prepare import PrepareOptions, prepare_data
    from backend.planner import plan_config
    from common.finetune_data import data_dir
    from worker.training.synthetic import PHRASES

    project = write_project(work / "project", annotated)
    load = local_loader(project["images"])
    reads = []

    def counted(ref, task_id):
        reads.append(ref)
        return load(ref, task_id)

    data = data_dir(work / "prepared")
    data.mkdir(parents=True)
    started = time.perf_counter()
    prepared = prepare_data(
        iter_json_list(project["export"]),
        plan_config(project["config"].read_text()),
        counted,
        data,
        PrepareOptions(replay_phrases=PHRASES, seed=0),
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "images_read": len(reads),
        "images_per_s": len(reads) / seconds,
        "images_stored": prepared.images_stored,
        "counts": prepared.counts,
        "peak_rss_mib": _peak_rss_mib(),
    }


def phase_replay(work: Path, model: Path) -> dict:
    from backend.commands.finetune import _answer_replay
    from backend.finetune.progress import Progress
    from common.finetune_data import data_dir, read_split
    from worker.engines.transformers_engine import TransformersEngine
    from worker.training.finetune import ImageCache
    from worker.training.finetune_predict import predict_records

    data = data_dir(work / "prepared")
    started = time.perf_counter()
    engine = TransformersEngine(str(model), device="cpu")
    loaded = time.perf_counter() - started
    requests = len(read_split(data, "replay_requests"))
    started = time.perf_counter()
    kept = _answer_replay(
        engine, data, ImageCache(data), Progress("none"), predict_records
    )
    seconds = time.perf_counter() - started
    return {
        "load_seconds": loaded,
        "seconds": seconds,
        "requests": requests,
        "answered": len(kept),
        "answers_per_s": requests / seconds,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _step_rates(stamps: list[float], batch: int, warmup: int) -> dict:
    """Rates over the steps after ``warmup`` (``stamps``: when each step
    ended): steps x batch / their seconds, and the median step."""
    gaps = [b - a for a, b in itertools.pairwise(stamps)][warmup - 1 :]
    if not gaps:
        return {"timed_steps": 0}
    seconds = sum(gaps)
    return {
        "timed_steps": len(gaps),
        "step_seconds_median": statistics.median(gaps),
        "steps_per_s": len(gaps) / seconds,
        "examples_per_s": len(gaps) * batch / seconds,
    }


def phase_train(work: Path, model: Path, method: str, steps: int, batch: int) -> dict:
    import torch

    from common.finetune_data import data_dir
    from worker.training.finetune import FinetuneSettings, load_base, run_finetune

    torch.manual_seed(0)
    out = work / f"run-{method}"
    shutil.copytree(data_dir(work / "prepared"), data_dir(out))
    settings = FinetuneSettings(
        base=str(model),
        steps=steps,
        method=method,
        batch_size=batch,
        learning_rate=LR[method],
        device="cpu",
    )
    started = time.perf_counter()
    loaded = load_base(str(model), "cpu")
    load_seconds = time.perf_counter() - started
    stamps: list[float] = []
    fields: dict = {}

    def on_event(name, values):
        if name == "step":
            stamps.append(time.perf_counter())
        elif name == "loaded":
            fields.update(values)

    result, _, _ = run_finetune(out, settings, on_event=on_event, loaded=loaded)
    return {
        "method": method,
        "steps": steps,
        "batch_size": batch,
        "load_seconds": load_seconds,
        "train_seconds": result.seconds,
        **_step_rates(stamps, batch, WARMUP_STEPS),
        "first_loss": result.losses[0][1],
        "final_loss": result.final_loss,
        "trainable_parameters": fields["trainable_parameters"],
        "total_parameters": fields["total_parameters"],
        "peak_rss_mib": _peak_rss_mib(),
    }


PHASES = ("prepare", "replay", "lora", "full")


def _child(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    if args.threads and args.phase != "prepare":
        import torch

        torch.set_num_threads(args.threads)
    if args.phase == "prepare":
        return phase_prepare(work, args.annotated)
    if args.phase == "replay":
        return phase_replay(work, trained_model())
    return phase_train(work, trained_model(), args.phase, args.steps, args.batch_size)


def _run_phase(name: str, work: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--phase", name, "--work", str(work),
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--annotated", str(args.annotated), "--threads", str(args.threads),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"phase {name} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_cpu(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        phases = {}
        for name in PHASES:
            phases[name] = _run_phase(name, Path(tmp), args)
            if not args.json:
                print(f"  {name} done", file=sys.stderr, flush=True)
    return {
        "device": "cpu",
        "model": trained_model().name,
        "annotated_images": args.annotated,
        "torch_threads": args.threads or "default",
        "phases": phases,
        "wall_seconds": time.perf_counter() - started,
    }


def print_cpu(report: dict) -> None:
    phases = report["phases"]
    prep, replay = phases["prepare"], phases["replay"]
    print(
        f"trained tiny model ({report['model']}), CPU ({report['torch_threads']} "
        "torch threads), "
        f"{report['annotated_images']} annotated + {report['annotated_images']} "
        "unannotated 112 px images"
    )
    print(
        f"prepare : {prep['images_read']} images read in {prep['seconds']:.2f} s = "
        f"{prep['images_per_s']:.0f} images/s ({prep['images_stored']} stored; "
        f"examples {prep['counts']}), peak RSS {prep['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"replay  : {replay['requests']} questions answered in "
        f"{replay['seconds']:.2f} s = {replay['answers_per_s']:.1f} answers/s "
        f"({replay['answered']} kept), peak RSS {replay['peak_rss_mib']:.0f} MiB"
    )
    head = (
        "method", "steps", "batch", "trained", "s/step", "steps/s",
        "examples/s", "train s", "loss", "peak RSS",
    )  # fmt: skip
    rows = [
        (
            t["method"],
            str(t["steps"]),
            str(t["batch_size"]),
            f"{t['trainable_parameters']:,} of {t['total_parameters']:,}",
            f"{t['step_seconds_median']:.3f}",
            f"{t['steps_per_s']:.2f}",
            f"{t['examples_per_s']:.1f}",
            f"{t['train_seconds']:.1f}",
            f"{t['first_loss']:.2f} -> {t['final_loss']:.2f}",
            f"{t['peak_rss_mib']:.0f} MiB",
        )
        for t in (phases["lora"], phases["full"])
    ]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    for row in (head, *rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"(whole bench {report['wall_seconds']:.0f} s)")


# --- the 3B architecture on a GPU -------------------------------------------------


def _gpu_data(out: Path, count: int, size: tuple[int, int]) -> None:
    """``count`` images of one box each, stored as ``prepare`` stores them."""
    from PIL import Image, ImageDraw

    from backend.finetune.prepare import ImageStore
    from common.finetune_data import Record, data_dir, write_split
    from converters.answer import format_answer
    from converters.prediction import Prediction, RegionType
    from converters.prompts import build_prompt
    from converters.tasks import Task

    data = data_dir(out)
    store = ImageStore(data)
    rng = random.Random(SEED)
    width, height = size
    records = []
    for n in range(count):
        image = Image.new("RGB", size, (rng.randint(40, 200),) * 3)
        w, h = rng.randint(40, 300), rng.randint(40, 200)
        x0, y0 = rng.randint(0, width - w), rng.randint(0, height - h)
        box = (float(x0), float(y0), float(x0 + w), float(y0 + h))
        ImageDraw.Draw(image).rectangle(box, fill=(200, 30, 30))
        region = Prediction(RegionType.BOX, "red box", box)
        records.append(
            Record(
                prompt=build_prompt(Task.DETECTION, ["red box"]),
                answer=format_answer(
                    Task.DETECTION, [region], width, height, categories=["red box"]
                ),
                image=store.put(image),
                task=Task.DETECTION.value,
                width=width,
                height=height,
                categories=("red box",),
                task_id=n + 1,
            )
        )
    write_split(data, "train", records)


def run_gpu_3b(args: argparse.Namespace) -> dict:
    import torch

    if not args.smoke and not torch.cuda.is_available():
        reason = (
            f"CUDA is not available (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda or 'none'}, no GPU visible)"
        )
        return {"skipped": reason}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_gpu

    from worker.training.finetune import FinetuneSettings, run_finetune
    from worker.training.lora import LoraSettings

    device = "cpu" if args.smoke else "cuda"
    steps = SMOKE_STEPS if args.smoke else GPU_STEPS
    batch = SMOKE_BATCH if args.smoke else GPU_BATCH
    warmup = 1 if args.smoke else GPU_WARMUP_STEPS
    with tempfile.TemporaryDirectory(prefix="bench-finetune-3b-") as tmp:
        started = time.perf_counter()
        model, processor, attention = bench_gpu.build(args.smoke, device, Path(tmp))
        build_seconds = time.perf_counter() - started
        model.train()
        _gpu_data(Path(tmp) / "run", GPU_IMAGES, GPU_IMAGE_SIZE)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        settings = FinetuneSettings(
            base="random-qwen2.5-vl-3b",
            steps=steps,
            batch_size=batch,
            replay_share=0.0,
            lora=LoraSettings(rank=GPU_LORA_RANK),
            device=device,
        )
        stamps: list[float] = []
        fields: dict = {}

        def on_event(name, values):
            if name == "step":
                if device == "cuda":
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())
            elif name == "loaded":
                fields.update(values)

        result, _, _ = run_finetune(
            Path(tmp) / "run",
            settings,
            on_event=on_event,
            loaded=(model, processor),
        )
    rates = _step_rates(stamps, batch, warmup)
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
        "smoke": args.smoke,
        "dtype": str(model.dtype).removeprefix("torch."),
        "attention": attention,
        "lora_rank": GPU_LORA_RANK,
        "batch_size": batch,
        "steps": steps,
        "image_size": list(GPU_IMAGE_SIZE),
        "build_seconds": build_seconds,
        "train_seconds": result.seconds,
        **rates,
        "trainable_parameters": fields["trainable_parameters"],
        "total_parameters": fields["total_parameters"],
        "final_loss": result.final_loss,
        "torch": torch.__version__,
    }
    if device == "cuda":
        report["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return report


def print_gpu(report: dict) -> None:
    if "skipped" in report:
        print(f"--gpu-3b skipped: {report['skipped']}")
        return
    memory = report.get("max_memory_allocated_gib")
    print(
        f"Qwen2.5-VL-3B architecture{' (smoke config)' if report['smoke'] else ''}, "
        f"random {report['dtype']} weights, {report['device']}, attention "
        f"{report['attention']}; LoRA rank {report['lora_rank']} "
        f"({report['trainable_parameters']:,} of {report['total_parameters']:,} "
        "parameters trained)"
    )
    print(
        f"batch {report['batch_size']} of {report['image_size'][0]}x"
        f"{report['image_size'][1]} images: {report['step_seconds_median']:.3f} s/step "
        f"(median of {report['timed_steps']} steps after the warm-up), "
        f"{report['examples_per_s']:.1f} examples/s"
        + (f", max memory allocated {memory:.1f} GiB" if memory is not None else "")
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--annotated", type=int, default=DEFAULT_ANNOTATED)
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="torch threads on the CPU (0: torch's default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--gpu-3b", action="store_true", help="the 3B run on a GPU")
    parser.add_argument(
        "--smoke", action="store_true", help="with --gpu-3b: a small config on the CPU"
    )
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.phase:
        print(json.dumps(_child(args)))
        return 0
    if args.gpu_3b:
        report = {"bench": "finetune", "gpu_3b": run_gpu_3b(args)}
        print(json.dumps(report)) if args.json else print_gpu(report["gpu_3b"])
        return 0
    report = {"bench": "finetune", "cpu": run_cpu(args)}
    print(json.dumps(report)) if args.json else print_cpu(report["cpu"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
