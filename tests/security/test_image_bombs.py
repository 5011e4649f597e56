"""Images small on disk and huge in memory cost the backend nothing.

A real ``rexlabel serve`` on loopback, FakeChat as the model and a Listener as
Label Studio holding the images: a 12 KB PNG whose pixels are 10000 x 10000
(1.7 GB once decoded and converted before the fix), the same bomb as a local
file under LOCAL_FILES_DOCUMENT_ROOT, and a large real JPEG. The bombs are
refused from their header, the JPEG is decoded at reduced scale straight to
the model's size and its regions still come back in its own pixels. The
server's peak memory (``VmHWM``) is read from /proc before and after.

The config asks for no tiling (``rex_tile="off"``): the default ``auto``
would tile a 48 MP photo, which is then held whole (docs/tiling.md); the
same photo tiled is checked last, against the decode limit.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.security.conftest import (
    FakeChat,
    Listener,
    Seen,
    bomb_png,
    png_bytes,
    serve,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status"
)

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" rex_tile="off">'
    '<Label value="shape"/></RectangleLabels></View>'
)
TILED_CONFIG = CONFIG.replace('rex_tile="off"', 'rex_tile="on"')
TOKEN = "0123456789abcdef0123456789abcdef01234567"
"""A legacy Label Studio token (40 hex characters)."""
AUTH = ("ls", "basic-secret")
BOMB_SIDE = 10_000
"""The bomb's width and height: 100 MP, above the 64 MP pixel limit."""
PHOTO_SIZE = (8000, 6000)
"""A 48 MP JPEG: under the limit, decoded at 1/4 scale (2000 x 1500)."""
GROWTH_LIMIT_MB = 100
"""Most the server's peak memory may grow over the bombs and the photo: a full
decode of either is 144 MB (photo, RGB) to 300 MB (bomb, RGB) and more."""


TILED_GROWTH_LIMIT_MB = 700
"""Tiled, the photo is held whole (144 MB as RGB, within the 64 MP limit)
with its 35 tiles cut from it (1.6x, 225 MB at overlap 0.2) until the batch
is done, and the openai engine encodes 8 tiles at a time: measured 545 MB."""


def photo_jpeg() -> bytes:
    """A real 48 MP JPEG (a gradient: compresses to a few hundred KB)."""
    small = Image.linear_gradient("L").resize((400, 300)).convert("RGB")
    buffer = io.BytesIO()
    small.resize(PHOTO_SIZE).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def peak_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_bombs_are_refused_and_a_large_photo_fits_the_model(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    bomb = bomb_png()
    assert len(bomb) < 20_000
    (files / "bomb.png").write_bytes(bomb)
    images = {
        "/data/upload/1/small.png": png_bytes(),
        "/data/upload/1/bomb.png": bomb,
        "/data/upload/1/photo.jpg": photo_jpeg(),
    }

    def reply(request: Seen) -> tuple[int, dict[str, str], bytes]:
        if request.path in images:
            return 200, {"Content-Type": "image/*"}, images[request.path]
        return 404, {}, b""

    with FakeChat() as chat, Listener(reply=reply) as ls:
        env = {
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": TOKEN,
            "LOCAL_FILES_DOCUMENT_ROOT": str(files),
            "BASIC_AUTH_USER": AUTH[0],
            "BASIC_AUTH_PASS": AUTH[1],
            "REXLABEL_IMAGE_CACHE_MB": "0",
        }
        with serve(tmp_path, env) as served:

            def predict(*refs: str, config: str = CONFIG) -> dict:
                tasks = [{"id": i, "data": {"image": r}} for i, r in enumerate(refs, 1)]
                body = {"tasks": tasks, "label_config": config}
                answer = served.post("/predict", body, auth=AUTH)
                assert answer.status_code == 200, answer.text
                return answer.json()

            warm = predict(f"{ls.url}/data/upload/1/small.png")
            assert not warm.get("errors"), warm
            before = peak_mb(served.process.pid)
            bombs = predict(
                f"{ls.url}/data/upload/1/bomb.png", "/data/local-files/?d=bomb.png"
            )
            photo = predict(f"{ls.url}/data/upload/1/photo.jpg")
            growth = peak_mb(served.process.pid) - before
            tiled = predict(f"{ls.url}/data/upload/1/photo.jpg", config=TILED_CONFIG)
            tiled_growth = peak_mb(served.process.pid) - before
    errors = {item["task"]: item["error"] for item in bombs.get("errors", [])}
    assert set(errors) == {1, 2}, bombs
    assert "REXLABEL_MAX_IMAGE_PIXELS" in errors[1]
    assert not photo.get("errors"), photo
    (result,) = photo["results"][0]["result"]
    assert (result["original_width"], result["original_height"]) == PHOTO_SIZE
    assert result["value"]["x"] == pytest.approx(100 / 999 * 100, abs=0.01)
    assert growth < GROWTH_LIMIT_MB, f"peak memory grew {growth:.0f} MB"
    assert not tiled.get("errors"), tiled
    regions = tiled["results"][0]["result"]
    assert all(
        (r["original_width"], r["original_height"]) == PHOTO_SIZE for r in regions
    )
    print(f"peak memory growth: untiled {growth:.0f} MB, tiled {tiled_growth:.0f} MB")
    assert tiled_growth < TILED_GROWTH_LIMIT_MB, f"tiled: grew {tiled_growth:.0f} MB"
