"""``rexlabel predict``: run Rex-Omni on images from the command line.

Usage::

    rexlabel predict a.jpg b.jpg --task detection --categories "person,car"
    rexlabel predict a.jpg --task keypoint --categories person --keypoint-type person
    rexlabel predict a.jpg --task visual_prompting --box 10,20,110,140 --categories cup
    rexlabel predict a.jpg --task ocr_box --categories word --json
    rexlabel predict a.jpg --task pointing --categories cat --draw out/
    rexlabel predict aerial.tif --task detection --categories car --tile on \
        --tile-size 1024 --draw out/

Images are local paths or URLs (``common.images.loader.load_image``). All images go to
the engine in one batch. ``--json`` prints one JSON object with the canonical
predictions per image; ``--draw DIR`` saves each image with its predictions
drawn (and the tile grid, thin grey, when the image was tiled). ``--tile``,
``--tile-size`` and ``--tile-overlap`` set tiled inference (default: the
REXLABEL_TILE* settings; docs/tiling.md). The model, engine and device
default to ``REXLABEL_MODEL``, ``REXLABEL_ENGINE`` and ``REXLABEL_DEVICE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from backend.commands.tile_args import add_tile_arguments, tile_from_args
from common.settings import setting
from converters.tasks import Task

EXIT_BAD_INPUT = 2
"""Exit code for bad arguments or unreadable images (like a usage error)."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="Run the model on images and print (or draw) its predictions.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="Paths or URLs.")
    parser.add_argument(
        "--task",
        required=True,
        choices=[t.value for t in Task],
        help="The Rex-Omni task.",
    )
    parser.add_argument(
        "--categories",
        default="",
        help='Comma-separated phrases, e.g. "person,car" (OCR: "word" or "text line").',
    )
    parser.add_argument(
        "--keypoint-type", help="keypoint task: person, animal or hand."
    )
    parser.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="X0,Y0,X1,Y1",
        help="visual_prompting: a reference box in pixels of the one image named "
        "(repeatable); --categories names what it shows (the results' label).",
    )
    parser.add_argument("--model", help="Hub id or local directory (REXLABEL_MODEL).")
    parser.add_argument(
        "--engine",
        choices=setting("REXLABEL_ENGINE").choices,
        help="Engine (REXLABEL_ENGINE).",
    )
    parser.add_argument("--device", help="auto, cpu, cuda ... (REXLABEL_DEVICE).")
    parser.add_argument(
        "--max-new-tokens", type=int, help="Output token cap (REXLABEL_MAX_NEW_TOKENS)."
    )
    parser.add_argument(
        "--score-threshold", type=float, help="Drop predictions scoring below this."
    )
    add_tile_arguments(parser)
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument(
        "--draw",
        metavar="DIR",
        help="Save each image with its predictions (and tile grid) drawn.",
    )
    parser.set_defaults(func=run)


def parse_single_boxes(values: list[str]) -> list[list[float]]:
    """``--box`` values, one box each: ``["10,20,110,140"]`` ->
    ``[[10.0, 20.0, 110.0, 140.0]]``; ValueError names a value that is not
    four numbers (the corners' order is not checked)."""
    boxes = []
    for value in values:
        parts = [p.strip() for p in value.split(",")]
        try:
            box = [float(p) for p in parts]
        except ValueError:
            box = []
        if len(box) != 4:
            raise ValueError(f"--box {value!r} must be four numbers X0,Y0,X1,Y1")
        boxes.append(box)
    return boxes


def build_call(args: argparse.Namespace):
    """The ModelCall the arguments describe (JobSpecError/ValueError if bad)."""
    from common.jobspec import ModelCall

    generation = {}
    if args.max_new_tokens is not None:
        generation["max_new_tokens"] = args.max_new_tokens
    return ModelCall(
        task=args.task,
        categories=[c.strip() for c in args.categories.split(",") if c.strip()],
        keypoint_type=args.keypoint_type,
        visual_prompt_boxes=parse_single_boxes(args.box) or None,
        score_threshold=args.score_threshold,
        generation=generation,
        key="cli",
        tile=tile_from_args(args),
    )


def run(args: argparse.Namespace) -> int:
    from common import settings
    from common.images.errors import ImageLoadError
    from common.images.loader import load_image
    from common.tile_options import TileOptions
    from worker.pipeline import PipelineError, fit_rule, run_batch

    try:
        call = build_call(args)
        if call.task is Task.VISUAL_PROMPTING and len(call.categories) > 1:
            raise ValueError(
                "--task visual_prompting labels every result with one name: give "
                f"one --categories name, not {len(call.categories)}"
            )
        if call.visual_prompt_boxes and len(args.images) > 1:
            raise ValueError(
                "--box is pixels of one image: Rex-Omni finds things like the boxed "
                "ones in the same image, so name one image (prelabel "
                "--reference-boxes gives each of many images its own boxes)"
            )
        tiling = TileOptions.from_settings()
        # the worker's decode rule, so --tile gives /predict's tiles
        fit = fit_rule([call], tiling, settings.get("REXLABEL_MAX_PIXELS"))
        images = [
            load_image(ref, local_paths=True, fit_pixels=fit) for ref in args.images
        ]
    except (ValueError, ImageLoadError) as exc:
        print(f"rexlabel predict: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    from worker.engines.registry import base_sampling, create_engine

    engine = create_engine(args.engine, args.model, args.device)
    try:
        pairs = [(image, call) for image in images]
        results = run_batch(
            engine,
            pairs,
            sampling=base_sampling(),
            tiling=tiling,
        )
    except PipelineError as exc:
        print(f"rexlabel predict: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        engine.close()
    if call.task is Task.VISUAL_PROMPTING and call.categories:
        for result in results:  # the model names them object_1
            for prediction in result.predictions:
                prediction.label = call.categories[0]

    if args.draw:
        _draw_all(Path(args.draw), args.images, images, results)
    if args.json:
        print(json.dumps(_report(engine.model_id, args.images, images, results)))
    else:
        _print_table(args.images, results)
    return 0


def _report(model_id: str, refs, images, results) -> dict[str, Any]:
    from common.images.decode import original_size

    return {
        "model": model_id,
        "images": [
            {
                "image": ref,
                "width": original_size(image)[0],
                "height": original_size(image)[1],
                **result.to_dict(),
            }
            for ref, image, result in zip(refs, images, results, strict=True)
        ],
    }


def _print_table(refs, results) -> None:
    for ref, result in zip(refs, results, strict=True):
        seconds = sum(
            result.timings.get(k, 0.0)
            for k in ("preprocess", "generate", "postprocess")
        )
        tiled = f"{len(result.tiles)} tiles, " if result.tiles else ""
        print(
            f"{ref}: {len(result.predictions)} prediction(s), {tiled}"
            f"{result.output_tokens} tokens, {result.finish_reason}, {seconds:.2f} s"
        )
        for p in result.predictions:
            score = "  -  " if p.score is None else f"{p.score:.3f}"
            text = f" {p.text!r}" if p.text else ""
            coords = json.dumps(p.to_dict().get("coords") or p.to_dict().get("bbox"))
            print(f"  {score} {p.type.value:8} {p.label}{text} {coords}")
        for warning in result.warnings:
            print(f"  warning: {warning}")


def _draw_all(out_dir: Path, refs, images, results) -> None:
    from common.images.decode import original_size
    from converters.draw import draw, draw_tiles

    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for index, (ref, image, result) in enumerate(
        zip(refs, images, results, strict=True)
    ):
        stem = Path(str(ref).split("?")[0]).stem or f"image{index}"
        name = f"{stem}.png" if f"{stem}.png" not in used else f"{stem}-{index}.png"
        used.add(name)
        full = original_size(image)  # regions are in its pixels
        if image.size != full:  # decoded smaller (the worker's rule)
            image = image.resize(full)
        drawn = draw(image, result.predictions, show_scores=True)
        if result.tiles:
            drawn = draw_tiles(drawn, result.tiles)
        drawn.save(out_dir / name)
        print(f"drew {out_dir / name}", file=sys.stderr)
