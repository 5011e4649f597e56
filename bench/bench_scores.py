"""Do scores rank, and does the tiny model answer ``None`` for an absent phrase?

Run::

    .venv/bin/python bench/bench_scores.py --model DIR [--count 200] [--seed 0]

``DIR`` is a trained tiny model (``rexlabel make-test-model DIR --train-steps
1300``, or the test cache ``.cache/test-models/tiny-detection-*``). On
``count`` held-out synthetic images, half of the questions about a phrase the
image does not hold, it prints (no assertions; ``worker.training.score_quality``), once
with the absent questions on images without any shape (``empty``) and once on
the sample's image asked for another colour (``other``): the ROC AUC of the
scores of right boxes (IoU >= 0.5 with the shape) against wrong ones (an
absent phrase's, or IoU < 0.5), the false-box rate (absent phrases answered
with a box), the None rate (absent phrases answered the grammar's ``None``),
the miss rate (present phrases without a box), the counts and the mean scores
of both kinds.
"""

from __future__ import annotations

import argparse
import json
import time

from worker.engines.transformers_engine import TransformersEngine
from worker.training.score_quality import Absent, score_quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="A trained tiny model's dir.")
    parser.add_argument("--count", type=int, default=200, help="Held-out images.")
    parser.add_argument("--seed", type=int, default=0, help="Held-out stream seed.")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    engine = TransformersEngine(args.model, device=args.device)
    print(f"model {args.model}")
    for absent in Absent:
        started = time.perf_counter()
        quality = score_quality(engine, count=args.count, seed=args.seed, absent=absent)
        seconds = time.perf_counter() - started
        print(json.dumps({"absent": absent.value, **quality.as_dict()}))
        print(
            f"{absent.value}: AUC {quality.auc:.3f}  false boxes "
            f"{quality.false_box_rate:.1%}  None {quality.none_rate:.1%}  misses "
            f"{quality.miss_rate:.1%}  right/wrong {quality.right}/{quality.wrong}"
            f"  mean score right {quality.mean_right_score:.3f} wrong "
            f"{quality.mean_wrong_score:.3f}  ({seconds:.0f} s)"
        )


if __name__ == "__main__":
    main()
