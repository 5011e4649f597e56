"""rexlabel against a real Label Studio 1.23.2 (issue 4).

Each test drives Label Studio through its REST API the way the UI does, and
reads back what Label Studio stored: that is the only proof a prediction
reached the user (Label Studio answers 200 to "Retrieve Predictions" even when
it stored nothing).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import LabelStudio
from tests.e2e.lsclient import LabelStudioClient, LabelStudioHTTPError

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIGS = Path(__file__).resolve().parent / "configs"


def _config(name: str) -> str:
    return (CONFIGS / f"{name}.xml").read_text()


def _write_pngs(folder: Path, colours: list[tuple[int, int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"plain_{i:02d}.png"
        Image.new("RGB", (64, 48), colour).save(path)
        paths.append(path)
    return paths


def _upload_name(task: dict) -> str:
    """``/data/upload/3/1a2b3c4d-plain_00.png`` -> ``plain_00.png``."""
    return task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]


def test_harness_label_studio_stores_uploads_and_serves_them_to_both_token_kinds(
    label_studio: LabelStudio, tmp_path: Path
) -> None:
    """The harness itself: our Label Studio makes one task per uploaded file and
    serves the exact bytes to a legacy token and to a PAT exchanged for a JWT
    access token (the two credentials the backend may be given), never
    without auth."""
    client = label_studio.client
    project = client.create_project("harness", _config("rectangles"))
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    paths = _write_pngs(tmp_path, colours)
    report = client.import_files(project["id"], paths)
    assert report["task_count"] == len(paths)

    tasks = client.tasks(project["id"])
    by_name = {_upload_name(t): t for t in tasks}
    assert sorted(by_name) == sorted(p.name for p in paths)

    access = client.exchange_personal_access_token(
        label_studio.personal_access_token()
    )
    bearer = LabelStudioClient(label_studio.url, access, scheme="Bearer")
    for path, colour in zip(paths, colours, strict=True):
        url = by_name[path.name]["data"]["image"]
        for who in (client, bearer):
            image = Image.open(io.BytesIO(who.download(url)))
            assert image.size == (64, 48)
            assert image.convert("RGB").getpixel((10, 10)) == colour
    anonymous = LabelStudioClient(label_studio.url, "not-a-token")
    with pytest.raises(LabelStudioHTTPError) as error:
        anonymous.download(by_name[paths[0].name]["data"]["image"])
    assert error.value.status == 401
    # A raw PAT is a refresh token: Label Studio refuses it as a Bearer token.
    raw_pat = LabelStudioClient(
        label_studio.url, label_studio.personal_access_token(), scheme="Bearer"
    )
    with pytest.raises(LabelStudioHTTPError) as error:
        raw_pat.whoami()
    assert error.value.status == 401
