"""``rexlabel finetune``: teach the model a project's own annotations.

Usage::

    rexlabel finetune --project 3 --out models/run-1
    rexlabel finetune --from export.json --label-config config.xml \\
        --images imgs/ --out run
    rexlabel finetune --from coco.json --images imgs/ --out run --method full
    rexlabel finetune --project 3 --out models/run-1 --resume   # after Ctrl-C

The run: the project's annotations become examples (``backend.finetune``),
stored with their images in ``OUT/data``; the base model answers the replay
questions; the model trains (``worker.training.finetune``: LoRA through PEFT
by default) with a checkpoint every few steps and on Ctrl-C; held-out
examples are scored before and after (``rexlabel evaluate``'s report); the
result lands in ``OUT`` with its card, ``rexlabel-model.json``.
``REXLABEL_MODEL=OUT`` serves it. ``docs/finetune.md`` has the whole loop.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_INTERRUPTED = 130


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from backend.finetune.prepare import DEFAULT_VAL_SPLIT, VISUAL_PROMPT_SHARE

    p = subparsers.add_parser(
        "finetune",
        help="fine-tune the model on a project's annotations (LoRA by default)",
        description="Fine-tune Rex-Omni on a Label Studio project's submitted "
        "annotations and write a model directory REXLABEL_MODEL can serve.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--project", type=int, help="Label Studio project id")
    source.add_argument(
        "--from", dest="from_file", help="a Label Studio JSON export or a COCO file"
    )
    p.add_argument("--images", help="with --from: the directory holding the images")
    p.add_argument(
        "--label-config",
        help="with --from and an export: the project's label config (XML)",
    )
    p.add_argument("--out", required=True, help="the model directory to write")
    p.add_argument("--base", help="the model to start from (default: REXLABEL_MODEL)")
    p.add_argument(
        "--method",
        choices=("lora", "full"),
        default="lora",
        help="a LoRA adapter through PEFT (default), or every language-model weight",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument(
        "--epochs", type=float, help="passes over the new examples (default 3)"
    )
    p.add_argument(
        "--lr", type=float, help="learning rate (default: 2e-4 lora, 1e-5 full)"
    )
    p.add_argument("--batch-size", type=int, help="examples per step (default 8)")
    p.add_argument(
        "--val-split",
        type=float,
        default=DEFAULT_VAL_SPLIT,
        help="share of annotated tasks held out (default %(default)s)",
    )
    p.add_argument("--tasks", help="only these task ids: 1,2,10-20")
    p.add_argument(
        "--focus", help="labels the run is about; other labels' examples are replayed"
    )
    p.add_argument(
        "--replay",
        type=float,
        help="share of each batch replayed (default 0.5; 0 turns it off)",
    )
    p.add_argument(
        "--replay-phrases",
        help="comma-separated phrases the base model answers on the project's images "
        "for replay (default: COCO's 80 categories less the project's labels; "
        "'' turns it off)",
    )
    p.add_argument(
        "--visual-prompts",
        type=float,
        default=VISUAL_PROMPT_SHARE,
        help="share of annotated images whose boxes also give visual-prompting "
        "examples (default %(default)s; 0 for none)",
    )
    p.add_argument(
        "--replay-images",
        type=int,
        help="replay questions the base model answers (default: one per "
        "training example)",
    )
    p.add_argument("--lora-rank", type=int, help="LoRA rank (default 16)")
    p.add_argument(
        "--bin-sigma", type=float, help="soft coordinate targets, in bins (default 0)"
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="lora: write merged weights instead of the adapter",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--extra-params", help="plan with these Extra params (JSON)")
    p.add_argument("--resume", action="store_true", help="continue OUT's checkpoint")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    p.set_defaults(func=run)


def parse_task_ids(text: str | None) -> frozenset[int] | None:
    """``1,2,10-20`` -> ids; ValueError naming the bad part."""
    if text is None:
        return None
    ids: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                if last < first or last - first > 1_000_000:
                    raise ValueError
                ids.update(range(first, last + 1))
            else:
                ids.add(int(part))
        except ValueError:
            raise ValueError(f"--tasks: {part!r} is not an id or a range a-b") from None
    if not ids:
        raise ValueError("--tasks names no task")
    return frozenset(ids)


def _phrases(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(p.strip() for p in text.split(",") if p.strip())


def run(args: argparse.Namespace) -> int:
    from backend.finetune.progress import Progress

    progress = Progress(args.progress)
    try:
        return _run(args, progress)
    except _Usage as exc:
        _fail(progress, str(exc))
        return EXIT_USAGE
    except _Interrupted as exc:
        _fail(progress, str(exc))
        return EXIT_INTERRUPTED
    finally:
        progress.close()


class _Usage(ValueError):
    """A bad option or input: exit 2 with the message."""


class _Interrupted(RuntimeError):
    """Ctrl-C before training started: exit 130 with the message."""


def _fail(progress: Any, message: str) -> None:
    print(f"rexlabel finetune: {message}", file=sys.stderr)
    progress.event("error", {"message": message})


def _run(args: argparse.Namespace, progress: Any) -> int:
    from common import settings
    from common.model_store import (
        MAX_BASE_DEPTH,
        MODEL_CARD_NAME,
        ModelStoreError,
        base_chain,
        resolve_model,
    )

    out = Path(args.out).expanduser()
    try:  # a project's models directory trains from the run it serves now
        base = resolve_model(args.base or settings.get("REXLABEL_MODEL"))
        chain = base_chain(base)
    except ModelStoreError as exc:
        raise _Usage(f"--base: {exc}") from None
    if len(chain) >= MAX_BASE_DEPTH and args.method == "lora" and not args.merge:
        raise _Usage(
            f"--base {base} already stacks {len(chain) - 1} adapters (at most "
            f"{MAX_BASE_DEPTH}): train from its original base, or with --merge"
        )
    _settings(args, base, train_count=1)  # bad flags stop before any work
    if out.exists() and not out.is_dir():
        raise _Usage(f"--out {out} is a file, not a directory")
    if (out / MODEL_CARD_NAME).exists():
        raise _Usage(
            f"--out {out} is a finished model ({MODEL_CARD_NAME}); nothing to "
            "resume or overwrite: choose a new directory"
        )
    if args.resume:
        manifest = _resumed_manifest(out)
        _report_prepared(manifest, progress)
    else:
        _check_out_is_new(out, progress)
        created = not out.exists()
        try:
            manifest = _prepare(args, out, progress)
            _report_prepared(manifest, progress)
        except KeyboardInterrupt:
            _remove_prepared(out, created)
            raise _Interrupted(
                "interrupted while reading the project; nothing was kept: run the "
                "same command again"
            ) from None
        except BaseException:
            _remove_prepared(out, created)
            raise
    return _train(args, out, base, manifest, progress)


def _resumed_manifest(out: Path) -> dict[str, Any]:
    from common.finetune_data import FinetuneDataError, data_dir, read_manifest

    if not data_dir(out).is_dir():
        raise _Usage(f"--resume: {out} holds no prepared data; start without --resume")
    try:
        return read_manifest(data_dir(out))
    except FinetuneDataError as exc:
        raise _Usage(
            f"--resume: {exc} (its preparation never finished): remove {out} and "
            "start without --resume"
        ) from None


def _check_out_is_new(out: Path, progress: Any) -> None:
    """``out`` is absent or empty; the data of a preparation that stopped
    before its manifest (a crash) is cleared first."""
    from common.finetune_data import MANIFEST_NAME, data_dir

    if not out.exists() or not any(out.iterdir()):
        return
    names = {p.name for p in out.iterdir()}
    if names == {data_dir(out).name} and not (data_dir(out) / MANIFEST_NAME).exists():
        progress.note(f"{out}: removing the data of a preparation that never finished")
        shutil.rmtree(data_dir(out))
        return
    raise _Usage(
        f"--out {out} is not empty: choose a new directory, or --resume to "
        "continue its run"
    )


def _remove_prepared(out: Path, created: bool) -> None:
    """Undo a preparation that did not finish (or found nothing to train), so
    the same command can run again: ``--out`` was empty or absent before."""
    from common.finetune_data import data_dir

    shutil.rmtree(data_dir(out), ignore_errors=True)
    if created:
        try:
            out.rmdir()
        except OSError:
            pass


def _report_prepared(manifest: dict[str, Any], progress: Any) -> None:
    """Show what the data holds; a usage error when nothing can be trained."""
    progress.event("prepared", manifest["counts"] | {"skipped": _skips(manifest)})
    for warning in manifest.get("warnings", []):
        progress.note(f"warning: {warning}")
    if not manifest["counts"].get("train"):
        raise _Usage(
            "no training examples: the project has no submitted annotation with an "
            f"image that could be read ({json.dumps(_skips(manifest))})"
        )


def _skips(manifest: dict[str, Any]) -> dict[str, int]:
    keys = ("skipped_no_annotation", "skipped_no_image", "failed", "regions_dropped")
    return {k: manifest.get(k, 0) for k in keys}


def _prepare(args: argparse.Namespace, out: Path, progress: Any) -> dict[str, Any]:
    from backend.bulk.convert import ConvertError
    from backend.bulk.records import JobError
    from backend.commands.extra_params_arg import parse_extra_params
    from backend.finetune.inputs import FinetuneInputError
    from backend.finetune.prepare import PrepareOptions, plan_labels, prepare_data
    from backend.planner import PlanError, plan_config
    from common.finetune_data import data_dir, write_manifest
    from common.labelstudio.api import LabelStudioAPIError

    try:
        options = PrepareOptions(
            val_split=args.val_split,
            focus=_phrases(args.focus) or (),
            replay_phrases=_phrases(args.replay_phrases),
            replay_images=args.replay_images,
            visual_prompt_share=args.visual_prompts,
            task_ids=parse_task_ids(args.tasks),
            seed=args.seed,
        )
        extra = parse_extra_params(args.extra_params)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    data = data_dir(out)
    try:
        with tempfile.TemporaryDirectory(prefix="rexlabel-finetune-") as tmp:
            if args.project is not None:
                source = _project_source(args.project, extra, Path(tmp) / "export.json")
            else:
                source = _file_source(args, extra)
            plan = plan_config(source.label_config, source.extra_params)
            _check_focus(options.focus, plan_labels(plan))
            data.mkdir(parents=True, exist_ok=True)
            progress.note("reading annotations and images ...")
            prepared = prepare_data(
                source.tasks, plan, source.load_image, data, options
            )
    except (
        FinetuneInputError,
        PlanError,
        ConvertError,
        JobError,
        LabelStudioAPIError,
        OSError,
        ValueError,
    ) as exc:
        raise _Usage(str(exc)) from None
    manifest = prepared.manifest() | {"source": source.description}
    write_manifest(data, manifest)
    return manifest


def _file_source(args: argparse.Namespace, extra: dict[str, Any] | None):
    """``--from FILE --images DIR`` (and ``--label-config`` for an export),
    each checked before anything is written."""
    from backend.bulk.convert import iter_json_list
    from backend.finetune.inputs import Source, coco_source, is_coco, local_loader

    path = Path(args.from_file).expanduser()
    if not path.is_file():
        raise _Usage(f"--from {path}: no such file")
    if not args.images:
        raise _Usage("--from needs --images DIR (where the images are)")
    images = Path(args.images).expanduser()
    if is_coco(path):
        source = coco_source(path, images)
    else:
        if not args.label_config:
            raise _Usage("--from with a Label Studio export needs --label-config FILE")
        config_path = Path(args.label_config).expanduser()
        try:
            config = config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _Usage(f"--label-config {config_path}: {exc}") from None
        source = Source(
            iter_json_list(path),
            config,
            local_loader(images),
            {"from": str(path), "format": "labelstudio"},
        )
    source.extra_params = extra or {}
    return source


def _check_focus(focus: tuple[str, ...], labels: list[str]) -> None:
    """Every ``--focus`` label is one of the config's (case-insensitive): a
    misspelt one would replay every example and train nothing."""
    known = {label.lower() for label in labels}
    unknown = [f for f in focus if f.lower() not in known]
    if unknown:
        raise _Usage(
            f"--focus: {', '.join(map(repr, unknown))} is not a label of the label "
            f"config (its labels: {', '.join(labels)})"
        )


def _project_source(project: int, extra: dict[str, Any] | None, export: Path):
    from backend.bulk.convert import iter_json_list
    from backend.bulk.creation import connected_extra_params
    from backend.finetune.inputs import Source
    from common.images.loader import ImageLoader
    from common.labelstudio.api import LabelStudioClient

    client = LabelStudioClient.from_settings()
    label_config = client.get_project(project).get("label_config") or ""
    if extra is None:
        extra = connected_extra_params(client, project)
    client.export_json(project, export)
    loader = ImageLoader.from_settings(cache_bytes=0)  # each image is read once
    tasks = list(iter_json_list(export))  # the temporary export goes away
    return Source(
        iter(tasks),
        label_config,
        lambda ref, task_id: loader.load(ref, task_id=task_id),
        {"project": project},
        extra_params=extra,
    )


def _check_flags(args: argparse.Namespace) -> None:
    """Numeric flags in range, named (argparse's float also takes nan and inf)."""
    for flag, value in (
        ("--steps", args.steps),
        ("--batch-size", args.batch_size),
        ("--lora-rank", args.lora_rank),
    ):
        if value is not None and value < 1:
            raise _Usage(f"{flag} must be >= 1, got {value}")
    for flag, value in (("--epochs", args.epochs), ("--lr", args.lr)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise _Usage(f"{flag} must be a number > 0, got {value}")
    if args.replay is not None and not 0 <= args.replay < 1:
        raise _Usage(f"--replay must be in [0, 1), got {args.replay}")
    if args.bin_sigma is not None and not (
        args.bin_sigma >= 0 and math.isfinite(args.bin_sigma)
    ):
        raise _Usage(f"--bin-sigma must be a number >= 0, got {args.bin_sigma}")


def _settings(args: argparse.Namespace, base: str, train_count: int):
    from worker.training.finetune import (
        DEFAULT_BIN_SIGMA,
        DEFAULT_EPOCHS,
        DEFAULT_FINETUNE_BATCH_SIZE,
        DEFAULT_REPLAY_SHARE,
        FinetuneSettings,
        steps_for,
    )
    from worker.training.lora import LoraSettings

    _check_flags(args)
    batch = DEFAULT_FINETUNE_BATCH_SIZE if args.batch_size is None else args.batch_size
    replay = DEFAULT_REPLAY_SHARE if args.replay is None else args.replay
    try:
        steps = (
            args.steps
            if args.steps is not None
            else steps_for(train_count, batch, replay, args.epochs or DEFAULT_EPOCHS)
        )
        return FinetuneSettings(
            base=base,
            steps=steps,
            method=args.method,
            batch_size=batch,
            learning_rate=args.lr,
            replay_share=replay,
            bin_sigma=DEFAULT_BIN_SIGMA if args.bin_sigma is None else args.bin_sigma,
            lora=LoraSettings()
            if args.lora_rank is None
            else LoraSettings(rank=args.lora_rank),
            seed=args.seed,
            device=args.device,
            merge=args.merge,
        )
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _train(args, out: Path, base: str, manifest: dict[str, Any], progress) -> int:
    """Replay answers, figures before, training, then the card (before the
    checkpoint goes) and the figures after (a failure there keeps the model)."""
    from backend.finetune.metrics import heldout_figures
    from common.finetune_data import data_dir, read_split
    from common.model_store import write_card
    from worker.engines.transformers_engine import TransformersEngine
    from worker.training.finetune import (
        FinetuneError,
        FinetuneInterrupted,
        FinetuneOutOfMemory,
        ImageCache,
        drop_checkpoint,
        is_out_of_memory,
        load_base,
        run_finetune,
    )
    from worker.training.finetune_predict import predict_records

    data = data_dir(out)
    settings = _settings(args, base, manifest["counts"]["train"])
    if settings.replay_share == 0:
        progress.note(
            "replay is off: the model may forget what the project does not show"
        )
    started = time.perf_counter()
    images = ImageCache(data)

    def figures(engine, records):
        return heldout_figures(records, predict_records(engine, records, images))

    try:
        model, processor = load_base(base, settings.device)
        engine = TransformersEngine(
            base, device=settings.device, loaded=(model, processor)
        )
        replayed = _answer_replay(engine, data, images, progress, predict_records)
        val = read_split(data, "val")
        kept_val = [r for r in replayed if r.held_out]
        before = _stored_figures(data, lambda: figures(engine, val))
        result, model, processor = run_finetune(
            out,
            settings,
            resume=args.resume,
            on_event=progress.event,
            loaded=(model, processor),
        )
    except FinetuneInterrupted as exc:
        _fail(progress, str(exc))
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _fail(
            progress,
            "interrupted before the first step; the prepared data is kept: run the "
            "same command with --resume",
        )
        return EXIT_INTERRUPTED
    except FinetuneOutOfMemory as exc:
        _fail(progress, str(exc))
        return EXIT_OUT_OF_MEMORY
    except (FinetuneError, ValueError, OSError) as exc:
        _fail(progress, str(exc))
        return EXIT_FAILED
    except RuntimeError as exc:  # out of memory while the base answers
        if not is_out_of_memory(exc):
            raise
        _fail(
            progress,
            f"out of memory before training ({exc}); the prepared data is kept: "
            "--resume on a GPU with more memory free",
        )
        return EXIT_OUT_OF_MEMORY
    metrics: dict[str, Any] = {"new": {"before": before, "after": None}, "kept": None}
    card = _card(
        args, base, settings, manifest, result, metrics, time.perf_counter() - started
    )
    write_card(out, card)  # the model is complete from here on
    drop_checkpoint(out)
    engine = TransformersEngine(
        str(out), device=settings.device, loaded=(model, processor)
    )
    code = EXIT_OK
    try:
        metrics["new"]["after"] = figures(engine, val)
        metrics["kept"] = figures(engine, kept_val)
    except KeyboardInterrupt:
        metrics["error"] = "interrupted while scoring the held-out examples"
        code = EXIT_INTERRUPTED
    except (FinetuneError, ValueError, OSError, RuntimeError) as exc:
        metrics["error"] = f"scoring the held-out examples failed: {exc}"
    card["metrics"] = metrics
    write_card(out, card)
    if "error" in metrics:
        progress.note(f"warning: {metrics['error']}; the model in {out} is complete")
    progress.event("metrics", metrics)
    if code == EXIT_INTERRUPTED:
        _fail(progress, f"{metrics['error']}; the model in {out} is complete")
        return code
    progress.event("done", {"out": str(out), "metrics": metrics, "steps": result.steps})
    progress.note(_summary(out, metrics, result))
    return EXIT_OK


BEFORE_FIGURES = "before.json"
"""The base model's held-out figures, kept in the data directory so a resumed
run reports them without asking the base again."""


def _stored_figures(data: Path, compute) -> dict[str, Any]:
    path = data / BEFORE_FIGURES
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    figures = compute()
    path.write_text(json.dumps(figures, default=str), encoding="utf-8")
    return figures


def _answer_replay(engine, data: Path, images, progress, predict_records) -> list:
    """The base model's answers to the replay questions (once per data dir)."""
    from dataclasses import replace

    from common.finetune_data import read_split, split_path, write_split

    if split_path(data, "replay_answers").exists():
        return read_split(data, "replay_answers")
    requests = read_split(data, "replay_requests")
    if not requests:
        return []
    progress.note(f"the base model answers {len(requests)} replay questions ...")
    answers = predict_records(engine, requests, images)
    kept = [
        replace(
            request,
            answer=answer.text,
            regions=tuple(answer.regions),
            labels=tuple(
                dict.fromkeys(str(r.get("label", "")) for r in answer.regions)
            ),
        )
        for request, answer in zip(requests, answers, strict=True)
        if answer.error is None and not answer.truncated
    ]
    write_split(data, "replay_answers", kept)
    progress.event(
        "replay", {"answered": len(kept), "dropped": len(requests) - len(kept)}
    )
    return kept


def _card(args, base, settings, manifest, result, metrics, seconds) -> dict[str, Any]:
    from pathlib import Path as _Path

    from backend.model_version import package_version

    base_ref = (
        str(_Path(base).expanduser().resolve())
        if _Path(base).expanduser().is_dir()
        else base
    )
    method = "full" if settings.method == "full" or settings.merge else "lora"
    return {
        "method": method,
        "trained_with": settings.method,
        "base": base_ref,
        "rexlabel": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "weights_sha256": result.weights_sha256,
        "data": {
            "source": manifest.get("source"),
            "train_tasks": manifest.get("train_tasks"),
            "val_tasks": manifest.get("val_tasks"),
            "annotations": manifest.get("annotations"),
            "annotation_ids_sha256": manifest.get("annotation_ids_sha256"),
            "examples": manifest.get("counts"),
            "skipped": _skips(manifest),
            "replay_phrases": manifest.get("replay_phrases"),
        },
        "training": {
            "steps": result.steps,
            "batch_size": settings.batch_size,
            "learning_rate": settings.lr,
            "replay_share": settings.replay_share,
            "lora_rank": settings.lora.rank if settings.method == "lora" else None,
            "bin_sigma": settings.bin_sigma,
            "seed": settings.seed,
            "final_loss": result.final_loss,
            "losses": result.losses,
            "resumed_from": result.resumed_from,
            "train_seconds": result.seconds,
            "seconds": seconds,
            "trainable_parameters": result.trainable_parameters,
        },
        "metrics": metrics,
    }


def _summary(out: Path, metrics: dict[str, Any], result) -> str:
    def iou(figures):
        value = (figures or {}).get("mean_iou")
        return "n/a" if value is None else f"{value:.3f}"

    new = metrics["new"]
    return (
        f"{out}: {result.steps} steps, final loss {result.final_loss:.4f}; "
        f"held-out mean IoU {iou(new['before'])} -> {iou(new['after'])}; "
        "base model's own answers kept: "
        f"{iou(metrics['kept'])}. Serve it with REXLABEL_MODEL={out}"
    )
