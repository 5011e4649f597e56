"""Draw the README's picture: the trained tiny test model's predictions.

Usage::

    python scripts/make_readme_picture.py MODEL_DIR docs/images/example.png

MODEL_DIR is a model from ``rexlabel make-test-model DIR --train-steps N``.
Held-out synthetic images go through the real pipeline (prompt, transformers
engine, parser, scores); ``converters.draw`` draws the predictions on images
enlarged ``SCALE`` times so the labels are readable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.jobspec import ModelCall
from converters.draw import draw
from converters.prediction import Prediction, RegionType

SCALE = 3
"""112 px synthetic images are too small to read a label tab on."""
COLUMNS = 4
ROWS = 2


def scaled(p: Prediction, factor: float) -> Prediction:
    if p.type is RegionType.POLYGON:
        coords = [(x * factor, y * factor) for x, y in p.coords]
    else:
        coords = [v * factor for v in p.coords]
    return p.with_(coords=coords, span=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("out")
    args = parser.parse_args(argv)

    from worker.engines.registry import base_sampling
    from worker.engines.transformers_engine import TransformersEngine
    from worker.pipeline import run_batch
    from worker.training.synthetic import held_out_samples

    engine = TransformersEngine(args.model_dir, device="cpu")
    samples = held_out_samples(COLUMNS * ROWS, seed=7)
    pairs = [
        (s.image, ModelCall(task="detection", categories=[s.phrase])) for s in samples
    ]
    results = run_batch(engine, pairs, sampling=base_sampling())
    tiles = []
    for sample, result in zip(samples, results, strict=True):
        big = sample.image.resize(
            (sample.image.width * SCALE, sample.image.height * SCALE), Image.NEAREST
        )
        tiles.append(
            draw(big, [scaled(p, SCALE) for p in result.predictions], show_scores=True)
        )
    width, height = tiles[0].size
    sheet = Image.new("RGB", (width * COLUMNS, height * ROWS), "white")
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % COLUMNS) * width, (index // COLUMNS) * height))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sum(len(r.predictions) for r in results)} predictions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
