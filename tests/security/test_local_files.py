"""Over HTTP, local files are read only under LOCAL_FILES_DOCUMENT_ROOT.

A real ``rexlabel serve`` on loopback with FakeChat as the model. A /predict
naming a plain path or ``file://`` is refused whether or not the file exists,
in words that do not depend on it; a ``/data/local-files/?d=`` path is read
under the root, and every way it can fail (missing, directory, not an image,
a link out of the root) gets one and the same answer. Paths that leave the
root as text (``..``, absolute, percent-encoded, ``d=`` repeated) are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import (
    BASIC_AUTH,
    BOX_CONFIG,
    FakeChat,
    Served,
    basic_auth_env,
    png_bytes,
    serve,
)

LS_URL = "http://ls.invalid:8080"
"""Label Studio's address: never contacted (the absolute local-files form)."""


def _predict(served: Served, *images: str) -> tuple[list[dict], dict[int, str]]:
    """The results and ``{task id: error}`` of one task per image (ids from 1)."""
    tasks = [{"id": i, "data": {"image": ref}} for i, ref in enumerate(images, 1)]
    reply = served.post(
        "/predict", {"tasks": tasks, "label_config": BOX_CONFIG}, auth=BASIC_AUTH
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    errors = {item["task"]: item["error"] for item in body.get("errors", [])}
    return body["results"], errors


def _one_answer(errors: dict[int, str], images: tuple[str, ...]) -> str:
    """The one error text every task got, with its own reference and image id
    taken out (fails if the texts differ)."""
    answers = {
        errors[i].replace(ref, "REF").replace(f"image {i}: ", "")
        for i, ref in enumerate(images, 1)
    }
    assert len(answers) == 1, answers
    return answers.pop()


@pytest.fixture
def root(tmp_path) -> Path:
    """A document root with an image, a text file, a folder and a link to /etc;
    ``outside.png`` (an image) lies beside it."""
    root = tmp_path / "root"
    (root / "folder").mkdir(parents=True)
    (root / "ok.png").write_bytes(png_bytes())
    (root / "notes.txt").write_text("not an image")
    (root / "etc").symlink_to("/etc")
    (tmp_path / "outside.png").write_bytes(png_bytes())
    return root


@pytest.fixture
def served(tmp_path, root) -> Iterator[Served]:
    with FakeChat() as chat:
        env = {
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
            "LOCAL_FILES_DOCUMENT_ROOT": str(root),
            "LABEL_STUDIO_URL": LS_URL,
            **basic_auth_env(),
        }
        with serve(tmp_path, env) as server:
            yield server


def test_plain_paths_get_one_answer_whether_or_not_they_exist(served, root):
    images = (
        "/etc/passwd",
        "file:///etc/hostname",
        str(root / "folder"),
        str(root / "missing.png"),
        str(root / "notes.txt"),
        str(root / "ok.png"),
        "ok.png",
    )
    results, errors = _predict(served, *images)
    assert sorted(errors) == list(range(1, len(images) + 1))
    answer = _one_answer(errors, images)
    assert "LOCAL_FILES_DOCUMENT_ROOT" in answer
    assert all("result" not in r for r in results)


def test_local_files_under_the_root_are_read_and_failures_look_alike(served):
    failing = (
        "/data/local-files/?d=folder",
        "/data/local-files/?d=missing.png",
        "/data/local-files/?d=notes.txt",
        "/data/local-files/?d=etc/passwd",
        "/data/local-files/?d=etc/hostname",
        f"{LS_URL}/data/local-files/?d=missing.png",
    )
    images = (
        *failing,
        "/data/local-files/?d=ok.png",
        f"{LS_URL}/data/local-files/?d=ok.png",
    )
    results, errors = _predict(served, *images)
    assert sorted(errors) == list(range(1, len(failing) + 1))
    answer = _one_answer(errors, failing)
    assert "no readable image" in answer
    for result in results[len(failing) :]:
        assert result["result"], result  # FakeChat's box, on the real image


@pytest.mark.parametrize(
    ("d", "why"),
    [
        ("../outside.png", "may not contain '..'"),
        ("%2e%2e/outside.png", "may not contain '..'"),
        ("folder/%2E%2E/%2e%2e/outside.png", "may not contain '..'"),
        ("/etc/passwd", "must be relative"),
        ("%2Fetc%2Fpasswd", "must be relative"),
        ("ok.png&d=../outside.png", "exactly one"),
    ],
)
def test_paths_leaving_the_root_are_refused(served, d, why):
    images = (f"/data/local-files/?d={d}", f"{LS_URL}/data/local-files/?d={d}")
    _results, errors = _predict(served, *images)
    assert why in errors[1] and why in errors[2]
