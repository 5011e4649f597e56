"""SAM masks: time to embed an image and to decode masks for n boxes.

Run::

    .venv/bin/python bench/bench_sam.py                      # tiny random SAM
    .venv/bin/python bench/bench_sam.py --model vit_b        # full vit_b, random
    .venv/bin/python bench/bench_sam.py --checkpoint sam_vit_h_4b8939.pth \\
        --device cuda --size 1920x1080 --boxes 1 16 64

Figures printed (no assertions), per box count: seconds for the image
embedding (``SamPredictor.set_image``, once per image), for the batched mask
decoding of all boxes, and for turning the masks into COCO RLE; plus the
number of ``predict_torch`` calls (several only when the masks of a very
large image would not fit in one).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from PIL import Image

from worker.sam import SamMasker, build_sam, build_test_sam


def _boxes(count: int, width: int, height: int, rng) -> list[list[float]]:
    boxes = []
    for _ in range(count):
        x0, y0 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        w, h = rng.uniform(8, width * 0.2), rng.uniform(8, height * 0.2)
        boxes.append([x0, y0, min(width, x0 + w), min(height, y0 + h)])
    return boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "vit_b"), default="tiny")
    parser.add_argument(
        "--checkpoint", help="a real SAM checkpoint (overrides --model)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="640x480", help="WxH of the test image")
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from converters.masks import mask_to_rle
    from worker import sam as sam_module

    started = time.perf_counter()
    if args.checkpoint:
        model = build_sam(args.checkpoint)
    elif args.model == "vit_b":
        from segment_anything import build_sam_vit_b

        model = build_sam_vit_b(checkpoint=None)
    else:
        model = build_test_sam()
    masker = SamMasker(model, device=args.device)
    seconds = time.perf_counter() - started
    print(f"model {args.checkpoint or args.model} built in {seconds:.1f} s")

    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    calls = {"n": 0}
    original = masker.predictor.predict_torch

    def counting(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    masker.predictor.predict_torch = counting
    per_call = max(1, sam_module.MAX_MASK_PIXELS_PER_CALL // (width * height))
    print(f"image {width}x{height}, up to {per_call} boxes per predict_torch call")
    for count in args.boxes:
        embed, decode, encode = [], [], []
        for repeat in range(args.repeats):
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            boxes = _boxes(count, width, height, rng)
            t0 = time.perf_counter()
            with masker._lock:
                masker._set_image(image)
            t1 = time.perf_counter()
            calls["n"] = 0
            masks, _ = masker.box_masks(image, boxes)  # image already embedded
            t2 = time.perf_counter()
            for mask in masks:
                mask_to_rle(mask)
            t3 = time.perf_counter()
            embed.append(t1 - t0)
            decode.append(t2 - t1)
            encode.append(t3 - t2)
            del repeat
        print(
            f"{count:4d} boxes: embed {statistics.median(embed):7.3f} s  "
            f"decode {statistics.median(decode):7.3f} s ({calls['n']} call(s))  "
            f"rle {statistics.median(encode):7.3f} s"
        )


if __name__ == "__main__":
    main()
