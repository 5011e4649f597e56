"""Peak memory of decoding images that are small on disk and huge in memory.

Run::

    .venv/bin/python bench/bench_image_memory.py

Each case runs in a fresh Python process, which reports how much its peak
resident memory (``VmHWM`` in /proc/self/status, Linux; ``ru_maxrss`` would
carry the parent's peak) grew over the decode alone (imports and the encoded
bytes are in the baseline). Cases:

- ``png-bomb``: a 1-bit 10000 x 10000 PNG of zeros (about 12 KB on disk);
- ``jpeg-48mp``: an 8000 x 6000 JPEG (a gradient, a few hundred KB).

Each is decoded the way the backend did before (``Image.open``, ``load``,
``exif_transpose``, ``convert("RGB")``, then ``resize_for_model``) and the way
it does now (``decode_image(..., fit_pixels=MAX_PIXELS)``, the pipeline's
call), with the default pixel limit and, for the bomb, with the old 100 MP
limit (to show what a decode that is allowed costs now).

Figures printed (no assertions): MB of peak growth, the size handed to the
model, or the error when the image is refused.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.security.conftest import bomb_png  # noqa: E402 - after the path fix

OLD_LIMIT = 100_000_000
"""REXLABEL_MAX_IMAGE_PIXELS before the fix (the bomb was exactly at it)."""


def jpeg_48mp() -> bytes:
    from PIL import Image

    small = Image.linear_gradient("L").resize((400, 300)).convert("RGB")
    buffer = io.BytesIO()
    small.resize((8000, 6000)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


CHILD = r"""
import sys, warnings
from pathlib import Path
from PIL import Image, ImageOps
from converters.geometry import MAX_PIXELS
from common.images.decode import decode_image, original_size, resize_for_model
from common.images.errors import ImageLoadError

data = Path(sys.argv[1]).read_bytes()
how, limit = sys.argv[2], int(sys.argv[3])
def peak_kb():
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])

base = peak_kb()
try:
    if how == "before":
        Image.MAX_IMAGE_PIXELS = None  # the old code caught only the 179 MP bomb
        import io
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
        image.load()
        image = ImageOps.exif_transpose(image).convert("RGB")
        shown = image.size
        model = resize_for_model(image)
    else:
        model = decode_image(data, source="x", max_pixels=limit, fit_pixels=MAX_PIXELS)
        shown = original_size(model)
    result = f"model gets {model.size[0]}x{model.size[1]} of {shown[0]}x{shown[1]}"
except ImageLoadError as exc:
    result = f"refused: {exc}"
peak = peak_kb()
print(f"{(peak - base) / 1024:8.0f} MB  {result}")
"""


def run(case: str, path: Path, how: str, limit: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), how, str(limit)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    line = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
    print(f"{case:10} {how:6} limit {limit / 1e6:5.1f} MP: {line}")


def main() -> None:
    from common.images.decode import DEFAULT_MAX_IMAGE_PIXELS

    cases = {"png-bomb": bomb_png(), "jpeg-48mp": jpeg_48mp()}
    with tempfile.TemporaryDirectory(prefix="rexlabel-bench-") as folder:
        for case, data in cases.items():
            path = Path(folder) / case
            path.write_bytes(data)
            print(f"{case}: {len(data) / 1024:.0f} KB on disk")
            run(case, path, "before", OLD_LIMIT)
            run(case, path, "now", DEFAULT_MAX_IMAGE_PIXELS)
            run(case, path, "now", OLD_LIMIT)


if __name__ == "__main__":
    main()
